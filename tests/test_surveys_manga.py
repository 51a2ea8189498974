"""MaNGA readers: the real spectra table in ../shared/data/manga, and a small LOGCUBE made here in
the DRP datamodel's layout (FLUX/IVAR/MASK cubes (wavelength, y, x), WAVE, SPECRES, LSFPRE)."""

import numpy as np
import pytest
from astropy.io import fits

from sfhkit.surveys import manga, read_observation

TABLE = "manga/MaNGA_test_spectra.fits.gz"


def test_reads_the_real_spectra_table(shared_data):
    path = shared_data / TABLE
    with fits.open(path) as hdul:
        z, wave = hdul["Z"].data, hdul["WAVE"].data
        sres = hdul["SRES"].data
    obs = manga.read_manga_spectra(path, 0)
    assert obs.redshift == pytest.approx(z[0])
    np.testing.assert_array_equal(obs.wavelength, wave)
    # sigma_v = c / (R * 2.3548): R ~ 2000 gives ~ 64 km/s.
    np.testing.assert_allclose(obs.instrument_sigma_kms[100], 299792.458 / (sres[0, 100] * 2.35482), rtol=1e-4)
    assert obs.n_used > 4500
    assert read_observation(path, index=3).redshift == pytest.approx(z[3])


def test_spectra_table_errors(shared_data):
    path = shared_data / TABLE
    with pytest.raises(ValueError, match="spectrum 5: every pixel is masked"):   # DONOTUSE everywhere
        manga.read_manga_spectra(path, 5)
    with pytest.raises(IndexError, match="8 spectra"):
        manga.read_manga_spectra(path, 8)
    with pytest.raises(ValueError, match="index="):
        read_observation(path)


def _logcube(path, n_wave=400, ny=7, nx=7, seed=0):
    """A LOGCUBE with the DRP's HDU names, shapes, dtypes and header keys; every spaxel has the same
    flat spectrum (2 flux units) and ivar 4 (sigma 0.5), spaxel (0, 0) is NOCOV."""
    rng = np.random.default_rng(seed)
    wave = 3622.0 * 10 ** (1e-4 * np.arange(n_wave))
    flux = np.full((n_wave, ny, nx), 2.0, dtype=np.float32) + 0 * rng.random((n_wave, ny, nx)).astype(np.float32)
    ivar = np.full((n_wave, ny, nx), 4.0, dtype=np.float32)
    mask = np.zeros((n_wave, ny, nx), dtype=np.int32)
    mask[:, 0, 0] = 1 << 0 | 1 << 10                              # NOCOV + DONOTUSE
    ivar[:, 0, 0] = 0
    mask[50, 3, 3] = 1 << 3                                       # one FORESTAR pixel in the centre
    lsf = np.broadcast_to((wave / 2000 / 2.35482)[:, None, None], (n_wave, ny, nx)).astype(np.float32)
    primary = fits.PrimaryHDU()
    primary.header.update(PLATEIFU="8485-1901", MANGAID="1-209232", OBJRA=232.5447, OBJDEC=48.6902, EBVGAL=0.0185)
    hdus = [primary, fits.ImageHDU(flux, name="FLUX"), fits.ImageHDU(ivar, name="IVAR"),
            fits.ImageHDU(mask, name="MASK"), fits.ImageHDU(lsf, name="LSFPOST"), fits.ImageHDU(lsf, name="LSFPRE"),
            fits.ImageHDU(wave, name="WAVE"), fits.ImageHDU(np.full(n_wave, 2000.0), name="SPECRES"),
            fits.ImageHDU(np.full(n_wave, 50.0), name="SPECRESD")]
    hdus[1].header["BUNIT"] = "1E-17 erg/s/cm^2/Ang/spaxel"
    fits.HDUList(hdus).writeto(path)
    return path


def test_logcube_spaxel_and_aperture(tmp_path):
    path = _logcube(tmp_path / "manga-8485-1901-LOGCUBE.fits")
    one = manga.read_logcube(path, redshift=0.0234, spaxel=(2, 3))
    np.testing.assert_allclose(one.flux, 2.0)
    np.testing.assert_allclose(one.sigma, 0.5)
    np.testing.assert_allclose(one.instrument_sigma_kms, 299792.458 / 2000 / 2.35482, rtol=1e-5)
    assert one.metadata["plateifu"] == "8485-1901"
    assert read_observation(path, redshift=0.0234, spaxel=(2, 3)).n_used == one.n_used

    ring = manga.read_logcube(path, redshift=0.0234, radius_arcsec=1.0)        # 13 spaxels within 2 spaxels
    n = ring.metadata["n_spaxels"]
    assert n == 13
    np.testing.assert_allclose(ring.flux[ring.mask], 2.0 * n)
    expected_sigma = np.sqrt(n * 0.25) * (1 + 1.62 * np.log10(n))               # Law et al. 2016 covariance
    np.testing.assert_allclose(ring.sigma[ring.mask], expected_sigma, rtol=1e-6)
    assert not ring.mask[50]                                                   # FORESTAR pixel in one spaxel
    # The whole cube: the NOCOV corner spaxel is left out, not summed as zeros.
    full = manga.read_logcube(path, redshift=0.0234, radius_arcsec=10.0)
    assert full.metadata["n_spaxels"] == 48


def test_logcube_errors(tmp_path):
    path = _logcube(tmp_path / "cube.fits")
    with pytest.raises(ValueError, match="redshift"):
        manga.read_logcube(path, redshift=None, spaxel=(2, 2))
    with pytest.raises(ValueError, match="exactly one"):
        manga.read_logcube(path, redshift=0.02)
    with pytest.raises(IndexError, match="outside"):
        manga.read_logcube(path, redshift=0.02, spaxel=(9, 9))
    with pytest.raises(ValueError, match="every pixel"):
        manga.read_logcube(path, redshift=0.02, spaxel=(0, 0))
    assert manga.covariance_noise_factor(1) == 1.0 and manga.covariance_noise_factor(500) == 4.2


def test_offline_logcube_fetch_is_a_clear_error(monkeypatch):
    import astropy.utils.data

    def refuse(url, **kwargs):
        raise OSError(f"Network is unreachable: {url}")

    monkeypatch.setattr(astropy.utils.data, "download_file", refuse)
    with pytest.raises(ConnectionError, match=r"v3_1_1/8485/stack/manga-8485-1901-LOGCUBE.fits.gz .*Offline"):
        manga.fetch_logcube("8485-1901")
