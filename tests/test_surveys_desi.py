"""DESI coadd reader, on files the tests write in desidatamodel's layout (tests/survey_files.py):
cameras joined by inverse variance where they overlap, the line spread from the resolution
matrices (checked against scipy's own dia_matrix), the redshift from redrock or a zcatalog."""

import numpy as np
import pytest
import scipy.sparse

from sfhkit.surveys import desi, identify, read_observation
from survey_files import (DESI_CAMERAS, DESI_NDIAG, DESI_STEP, desi_wavelength, gaussian_resolution,
                          write_desi_coadd, write_redrock, write_zcatalog)

TARGETS = (39627640566453451, 39627640566453452)
SIGMA_PIXELS = {"B": 1.1, "R": 0.95, "Z": 0.85}


def _spectra(seed=0):
    """Per camera (flux, ivar) for two targets: a smooth spectrum with a break, and the same x 2;
    the cameras' noise differs, so the overlaps' weighted means are not trivial."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, camera in enumerate(DESI_CAMERAS):
        wave = desi_wavelength(camera)
        base = 5.0 + 2.0 * np.tanh((wave - 4000.0) / 100.0) + 1e-4 * (wave - 6000.0)
        ivar = np.full((2, wave.size), [4.0, 9.0, 2.0][k])
        flux = np.stack([base, 2 * base]) + rng.normal(size=(2, wave.size)) / np.sqrt(ivar)
        out[camera] = (flux, ivar)
    return out


@pytest.fixture()
def coadd(tmp_path):
    spectra = _spectra()
    masks = {c: np.zeros(spectra[c][0].shape, np.uint32) for c in DESI_CAMERAS}
    masks["B"][0, 100:120] = 1                                      # bad in B only: gone
    masks["B"][0, -10:] = 1                                         # bad in B's overlap with R: R's pixels remain
    path = write_desi_coadd(tmp_path / "coadd-main-dark-10016.fits", spectra, targetids=TARGETS,
                            sigma_pixels=SIGMA_PIXELS, masks=masks)
    write_redrock(tmp_path / "redrock-main-dark-10016.fits", TARGETS, [0.0812, 0.1502],
                  subtype=["", "BROADLINE"], spectype=["GALAXY", "QSO"])
    return path, spectra, masks


def test_cameras_are_joined_by_inverse_variance(coadd):
    path, spectra, masks = coadd
    obs = read_observation(path, targetid=TARGETS[0])
    assert identify(path) == "desi"
    waves = {c: desi_wavelength(c) for c in DESI_CAMERAS}
    n_overlap = sum(np.isin(np.round(waves[a], 3), np.round(waves[b], 3)).sum() for a, b in (("B", "R"), ("R", "Z")))
    assert n_overlap == 51 + 126
    assert obs.wavelength.size == sum(w.size for w in waves.values()) - n_overlap
    np.testing.assert_allclose(np.diff(obs.wavelength), DESI_STEP, atol=1e-6)
    assert obs.wavelength[0] == 3600.0 and obs.wavelength[-1] == pytest.approx(9824.0)
    # An overlap pixel of R and Z: the ivar-weighted mean of the two, with the summed ivar.
    (fr, ir), (fz, iz) = spectra["R"], spectra["Z"]
    at = 7600.0
    r, z = np.argmin(abs(waves["R"] - at)), np.argmin(abs(waves["Z"] - at))
    j = np.argmin(abs(obs.wavelength - at))
    expected = (ir[0, r] * fr[0, r] + iz[0, z] * fz[0, z]) / (ir[0, r] + iz[0, z])
    assert obs.flux[j] == pytest.approx(expected, rel=1e-6)
    assert obs.sigma[j] == pytest.approx(1 / np.sqrt(ir[0, r] + iz[0, z]), rel=1e-6)
    # A pixel masked in B alone, outside the overlap, is not used; in the overlap R's value stands.
    b_bad = np.round(waves["B"][100:120], 3)
    assert not obs.mask[np.isin(np.round(obs.wavelength, 3), b_bad)].any()
    j = np.argmin(abs(obs.wavelength - waves["B"][-1]))
    r = np.argmin(abs(waves["R"] - waves["B"][-1]))
    assert obs.mask[j] and obs.flux[j] == pytest.approx(fr[0, r], rel=1e-6)
    assert obs.sigma[j] == pytest.approx(1 / np.sqrt(ir[0, r]), rel=1e-6)
    assert obs.metadata["n_flagged_pixels"] == 30 and obs.metadata["cameras"] == "brz"
    assert obs.metadata["milky_way_ebv"] == pytest.approx(0.02)


def test_line_spread_from_the_resolution_matrices(coadd):
    """Row i's second moment of R, independently from scipy's dense matrix, times 0.8 A, in km/s."""
    path, _, _ = coadd
    obs = read_observation(path, targetid=TARGETS[0])
    data = gaussian_resolution(desi_wavelength("R").size, SIGMA_PIXELS["R"])
    offsets = DESI_NDIAG // 2 - np.arange(DESI_NDIAG)
    dense = scipy.sparse.dia_matrix((data, offsets), shape=(data.shape[1],) * 2).toarray()
    i = 1000
    row, k = dense[i], np.arange(data.shape[1]) - i
    mean = (row * k).sum() / row.sum()
    sigma_pixels = np.sqrt((row * (k - mean) ** 2).sum() / row.sum())
    assert sigma_pixels == pytest.approx(SIGMA_PIXELS["R"], rel=0.02)      # a sampled Gaussian, 11 diagonals
    np.testing.assert_allclose(desi.resolution_sigma_pixels(data)[i], sigma_pixels, rtol=1e-6)
    wave = desi_wavelength("R")[i]
    j = np.argmin(abs(obs.wavelength - wave))
    assert obs.instrument_sigma_kms[j] == pytest.approx(299792.458 * sigma_pixels * DESI_STEP / wave, rel=1e-5)
    # These widths give R = c / (2.355 sigma) of 1700 (3600 A) to 6200 (9824 A), about DESI's.
    assert obs.instrument_sigma_kms[0] == pytest.approx(299792.458 * 1.1 * DESI_STEP / 3600.0, rel=0.02)
    assert obs.instrument_sigma_kms[-1] == pytest.approx(299792.458 * 0.85 * DESI_STEP / 9824.0, rel=0.02)
    assert obs.line_spread() is not None


def test_redshift_sources_and_target_choice(coadd, tmp_path):
    path, _, _ = coadd
    second = read_observation(path, targetid=TARGETS[1])             # redrock beside the coadd
    assert second.redshift == pytest.approx(0.1502)
    assert second.metadata["class"] == "QSO" and second.metadata["subclass"] == "BROADLINE"
    assert second.metadata["redshift_source"].startswith("redrock-main-dark-10016.fits")
    first = read_observation(path, index=0)                            # target 2's flux is twice target 1's
    assert np.median(second.flux) == pytest.approx(2 * np.median(first.flux), rel=0.01)
    zcat = write_zcatalog(tmp_path / "zpix-main-dark.fits", [TARGETS[0], TARGETS[0]], [0.5, 0.0813], [False, True])
    assert read_observation(path, targetid=TARGETS[0], redrock=zcat).redshift == pytest.approx(0.0813)
    assert read_observation(path, targetid=TARGETS[0], redshift=0.2).metadata["redshift_source"] == "given"
    with pytest.raises(ValueError, match="holds 2 targets: say which with targetid="):
        read_observation(path)
    with pytest.raises(ValueError, match="no TARGETID 7 in FIBERMAP"):
        read_observation(path, targetid=7)
    with pytest.raises(ValueError, match="no ZCATALOG rows for TARGETID"):
        read_observation(path, targetid=TARGETS[1], redrock=zcat)
    (tmp_path / "redrock-main-dark-10016.fits").unlink()
    with pytest.raises(ValueError, match="has no redshift; give redrock="):
        read_observation(path, targetid=TARGETS[0])


def test_bad_desi_files(coadd, tmp_path):
    from astropy.io import fits

    path, spectra, _ = coadd
    with pytest.raises(ValueError, match="a DESI redshift file: give it as redrock="):
        read_observation(tmp_path / "redrock-main-dark-10016.fits")
    with fits.open(path) as hdul:                                   # a spectra file: per exposure, no EXP_FIBERMAP
        del hdul["EXP_FIBERMAP"]
        fibermap = hdul["FIBERMAP"]
        hdul["FIBERMAP"] = fits.BinTableHDU.from_columns(
            fibermap.columns + fits.ColDefs([fits.Column("NIGHT", "J", array=np.full(2, 20220101))]), name="FIBERMAP")
        hdul.writeto(tmp_path / "spectra-main-dark-10016.fits")
    with pytest.raises(ValueError, match="is a DESI spectra file"):
        read_observation(tmp_path / "spectra-main-dark-10016.fits", targetid=TARGETS[0], redshift=0.1)
    with fits.open(path) as hdul:
        del hdul["R_IVAR"]
        hdul.writeto(tmp_path / "broken.fits")
    with pytest.raises(ValueError, match=r"R_IVAR.*missing"):
        read_observation(tmp_path / "broken.fits", targetid=TARGETS[0], redshift=0.1)
    no_res = write_desi_coadd(tmp_path / "coadd-nores.fits", spectra, targetids=TARGETS, resolution=False)
    obs = read_observation(no_res, targetid=TARGETS[0], redshift=0.1)
    assert obs.instrument_sigma_kms is None and "no resolution matrix" in obs.metadata["note"]
    zero = {c: (f, np.zeros_like(i)) for c, (f, i) in spectra.items()}
    empty = write_desi_coadd(tmp_path / "coadd-empty.fits", zero, targetids=TARGETS)
    with pytest.raises(ValueError, match="no pixel with ivar > 0"):
        read_observation(empty, targetid=TARGETS[0], redshift=0.1)


def test_a_desi_target_fits_end_to_end(coadd, grid):
    """The forward model builds on the joined spectrum (3600-9824 A) with its line spread."""
    path, _, _ = coadd
    obs = read_observation(path, targetid=TARGETS[0])
    model = obs.forward_model(grid)
    assert model.wavelength.shape == obs.wavelength.shape
