"""SDSS spec-file reader, on the real files in ../shared/data/sdss."""

import numpy as np
import pytest
from astropy.io import fits

from sfhkit.surveys import read_observation, sdss

# From ../shared/data/README.md: z, VDISP (km/s) of each file.
EXPECTED = {"spec-0266-51602-0614.fits": (0.0620, 254), "spec-0266-51630-0461.fits": (0.0362, 224),
            "spec-0266-51602-0526.fits": (0.0268, 202), "spec-0266-51602-0001.fits": (0.0213, 136),
            "spec-1045-52725-0628.fits": (0.0320, 77), "spec-0266-51602-0573.fits": (0.2619, 283)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reads_every_shared_spectrum(shared_data, name):
    obs = sdss.read_spec(shared_data / "sdss" / name)
    z, vdisp = EXPECTED[name]
    assert obs.redshift == pytest.approx(z, abs=1e-4)
    assert obs.velocity_dispersion_kms == pytest.approx(vdisp, abs=1)
    with fits.open(shared_data / "sdss" / name) as hdul:
        coadd = hdul["COADD"].data
        # Vacuum wavelengths straight from loglam; flux in the file's unit (1e-17 erg/s/cm2/A).
        np.testing.assert_allclose(obs.wavelength, 10 ** coadd["loglam"].astype(float), rtol=1e-12)
        np.testing.assert_array_equal(obs.flux, coadd["flux"].astype(float))
        good = coadd["ivar"] > 0
        np.testing.assert_allclose(obs.sigma[good], 1 / np.sqrt(coadd["ivar"][good].astype(float)), rtol=1e-6)
        assert not obs.mask[~good].any()                      # ivar 0 is always masked
        brightsky = (coadd["and_mask"] & (1 << sdss.SPPIXMASK["BRIGHTSKY"])) != 0
        assert not obs.mask[brightsky].any()
        # wdisp is in pixels of 1e-4 dex = c ln(10) 1e-4 = 69.03 km/s.
        wdisp = coadd["wdisp"].astype(float)
        np.testing.assert_allclose(obs.instrument_sigma_kms[wdisp > 0], wdisp[wdisp > 0] * 69.0297, rtol=1e-5)
    assert 55 < np.median(obs.instrument_sigma_kms) < 75    # SDSS: R ~ 2000, sigma ~ 65 km/s
    assert obs.metadata["spec_id"] == "-".join(str(int(p)) for p in name[5:-5].split("-"))
    assert obs.metadata["pipeline_model"].shape == obs.wavelength.shape
    assert obs.n_used > 3500


def test_advisory_flags_are_not_masked_by_default(shared_data):
    """Half of 0526 carries MANYBADCOLUMNS; masking it (as 'all' does) would throw away half the spectrum."""
    path = shared_data / "sdss" / "spec-0266-51602-0526.fits"
    default, strict = sdss.read_spec(path), sdss.read_spec(path, masked_flags="all")
    assert default.n_used > 3700
    assert strict.n_used < 2100


def test_read_observation_dispatches(shared_data):
    obs = read_observation(shared_data / "sdss" / "spec-0266-51602-0614.fits", av=0.3)
    assert obs.metadata["kind"] == "sdss" and obs.metadata["survey"] == "SDSS-I/II" and obs.av == 0.3
    line_spread = obs.line_spread()
    assert line_spread.velocity_dispersion_kms == pytest.approx(253.6, abs=0.1)


def test_identifiers():
    assert sdss.parse_spec_id("266-51602-614") == (266, 51602, 614)
    assert sdss.parse_spec_id("/x/spec-0266-51602-0614.fits") == (266, 51602, 614)
    assert sdss.spec_name(266, 51602, 614) == "spec-0266-51602-0614"
    with pytest.raises(ValueError, match="PLATE-MJD-FIBER"):
        sdss.parse_spec_id("nonsense")
    with pytest.raises(ValueError, match="unknown SPPIXMASK"):
        sdss.mask_bits(["NOT_A_FLAG"])


def test_bad_files(shared_data, tmp_path):
    with pytest.raises(FileNotFoundError):
        sdss.read_spec(tmp_path / "missing.fits")
    text = tmp_path / "text.fits"
    text.write_text("not a fits file")
    with pytest.raises(ValueError, match="not a FITS file"):
        sdss.read_spec(text)
    with pytest.raises(ValueError, match="not an SDSS, BOSS or eBOSS spec"):    # FIREFLY output is not a spectrum
        sdss.read_spec(shared_data / "firefly" / "spFly-0266-51602-0614.fits")
    with pytest.raises(ValueError, match=r"is a FIREFLY fit \(spFly\).*Expected an SDSS/BOSS/eBOSS spec file"):
        read_observation(shared_data / "firefly" / "spFly-0266-51602-0614.fits")
    with fits.open(shared_data / "sdss" / "spec-0266-51602-0614.fits") as hdul:
        hdul["COADD"].data["ivar"][:] = 0
        with pytest.raises(ValueError, match="ivar is 0 in every pixel"):
            sdss.read_spec(hdul)
    with fits.open(shared_data / "sdss" / "spec-0266-51602-0614.fits") as hdul:
        del hdul["SPECOBJ"]
        with pytest.raises(ValueError, match=r"HDU\(s\) \['SPECOBJ or SPALL'\] missing"):
            sdss.read_spec(hdul)


def test_redshift_outside_the_library(shared_data, grid):
    """A redshift that pushes the spectrum's blue end below Lyman alpha in the rest frame."""
    obs = sdss.read_spec(shared_data / "sdss" / "spec-0266-51602-0614.fits")
    obs.redshift = 3.5
    with pytest.raises(ValueError, match="min_rest_wavelength"):
        obs.forward_model(grid)


def test_offline_fetch_is_a_clear_error(monkeypatch):
    from astroquery.sdss import SDSS

    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(SDSS, "get_spectra", refuse)
    with pytest.raises(ConnectionError, match="Offline"):
        sdss.from_sdss(266, 51602, 614)


# -- BOSS and eBOSS (SPALL instead of SPECOBJ), full and lite, in the upstream data model -----------
@pytest.fixture(scope="module")
def boss_model(grid):
    """The forward model of the example history on BOSS's 3600-10400 A, broadened as the file says
    (VDISP 200 km/s, wdisp 1.2 -> 0.8 pixels blue to red), and its noiseless flux."""
    from sfhkit import ForwardModel, LineSpread
    from sfhkit.histories import example_history
    from survey_files import BOSS_LOGLAM

    wavelength = 10 ** BOSS_LOGLAM.astype(np.float32).astype(float)
    wdisp = np.linspace(1.2, 0.8, wavelength.size).astype(np.float32)
    line_spread = LineSpread(200.0, wdisp.astype(float) * sdss.PIXEL_KMS, wavelength)
    model = ForwardModel(grid, wavelength, 0.05, 0.0, line_spread=line_spread)
    flux = model(example_history()).double().numpy()
    return wdisp, flux


@pytest.mark.parametrize("lite", [False, True])
def test_reads_boss_spec_files(tmp_path, grid, boss_model, lite):
    from sfhkit.histories import example_history
    from survey_files import BOSS_LOGLAM, write_boss_spec

    wdisp, flux = boss_model
    and_mask = np.zeros(flux.size, np.int32)
    and_mask[100:110] = 1 << sdss.SPPIXMASK["BRIGHTSKY"]
    and_mask[200:300] = 1 << sdss.SPPIXMASK["MANYBADCOLUMNS"]        # advisory: kept
    ivar = np.full(flux.size, (30.0 / flux.mean()) ** 2)
    path = write_boss_spec(tmp_path / "spec-7512-56777-0396.fits", flux, ivar, wdisp=wdisp, and_mask=and_mask,
                           z=0.05, vdisp=200.0, lite=lite, program="eboss", subclass="BROADLINE")
    obs = read_observation(path)
    assert obs.metadata["survey"] == "BOSS/eBOSS" and obs.metadata["program"] == "eboss"
    assert obs.metadata["spec_id"] == "7512-56777-396" and obs.metadata["subclass"] == "BROADLINE"
    assert obs.metadata["class"] == "GALAXY" and obs.metadata["zwarning"] == 0
    assert obs.redshift == pytest.approx(0.05) and obs.velocity_dispersion_kms == pytest.approx(200.0)
    assert obs.wavelength[0] == pytest.approx(3600.0, abs=0.2) and obs.wavelength[-1] == pytest.approx(10399, abs=3)
    assert obs.wavelength.size == BOSS_LOGLAM.size
    assert not obs.mask[100:110].any() and obs.mask[200:300].all() and obs.n_used == flux.size - 10
    np.testing.assert_allclose(obs.instrument_sigma_kms, wdisp * 69.0297, rtol=1e-5)
    # What the reader hands on rebuilds the model the file was written from, over BOSS's whole range.
    rebuilt = obs.forward_model(grid)(example_history()).double().numpy()
    np.testing.assert_allclose(rebuilt, flux, rtol=2e-5)


def test_boss_spec_without_its_catalogue_row(tmp_path, boss_model):
    from survey_files import write_boss_spec

    wdisp, flux = boss_model
    path = write_boss_spec(tmp_path / "spec.fits", flux, np.ones(flux.size), wdisp=wdisp, lite=True)
    with fits.open(path) as hdul:
        del hdul["SPALL"]
        hdul.writeto(tmp_path / "no_spall.fits")
    with pytest.raises(ValueError, match="without its SPECOBJ or SPALL catalogue row"):
        read_observation(tmp_path / "no_spall.fits")
    with pytest.raises(ValueError, match=r"\['SPECOBJ or SPALL'\] missing"):
        sdss.read_spec(tmp_path / "no_spall.fits")
