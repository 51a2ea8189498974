"""Writers for small survey files in the exact upstream data models, used by the tests:

* a BOSS/eBOSS spec-PLATE-MJD-FIBER.fits, full or lite
  (https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/spectra/PLATE4/spec.html):
  PRIMARY, COADD (flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model), SPALL (the object's
  spAll row), SPZLINE (emission-line fits), and for a full file one table per exposure;
* a DESI coadd-SURVEY-PROGRAM-PIXNUM.fits (desidatamodel): PRIMARY with the HEALPix keywords,
  FIBERMAP, EXP_FIBERMAP, B/R/Z_WAVELENGTH, _FLUX, _IVAR, _MASK, _RESOLUTION, SCORES;
* a DESI redrock-SURVEY-PROGRAM-PIXNUM.fits (REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2) and a
  zpix redshift catalogue (ZCATALOG with ZCAT_PRIMARY).

Columns, dtypes, HDU names and units are the surveys'; values are what a test needs.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

# BOSS: 3600-10400 A in log10 steps of 1e-4.
BOSS_LOGLAM = np.round(np.arange(3.5563, 4.0170, 1e-4), 4)
# DESI's common grid: 0.8 A steps; the cameras overlap (B/R 5760-5800, R/Z 7520-7620 A).
DESI_CAMERAS = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}
DESI_STEP = 0.8
DESI_NDIAG = 11


def desi_wavelength(camera: str) -> np.ndarray:
    lo, hi = DESI_CAMERAS[camera]
    return lo + DESI_STEP * np.arange(int(round((hi - lo) / DESI_STEP)) + 1)


def write_boss_spec(path, flux, ivar, *, wdisp=None, and_mask=None, z=0.05, vdisp=200.0, cls="GALAXY",
                    subclass="", plate=7512, mjd=56777, fiber=396, lite=False, program="boss"):
    """A BOSS spec file with COADD on BOSS_LOGLAM (flux, ivar in 1e-17 erg/s/cm2/A units)."""
    n = BOSS_LOGLAM.size
    flux, ivar = np.asarray(flux, np.float32), np.asarray(ivar, np.float32)
    wdisp = np.full(n, 1.0, np.float32) if wdisp is None else np.asarray(wdisp, np.float32)
    and_mask = np.zeros(n, np.int32) if and_mask is None else np.asarray(and_mask, np.int32)
    primary = fits.PrimaryHDU()
    for key, value in (("TELESCOP", "SDSS 2.5-M"), ("PLATEID", plate), ("MJD", mjd), ("RUN2D", "v5_13_2"),
                       ("NEXP", 2), ("EXPID01", "b1-00123456-00123450-00123452"),
                       ("EXPID02", "r1-00123456-00123450-00123452")):
        primary.header[key] = value
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=flux), fits.Column("loglam", "E", array=BOSS_LOGLAM.astype(np.float32)),
        fits.Column("ivar", "E", array=ivar), fits.Column("and_mask", "J", array=and_mask),
        fits.Column("or_mask", "J", array=and_mask), fits.Column("wdisp", "E", array=wdisp),
        fits.Column("sky", "E", array=np.full(n, 3.0, np.float32)), fits.Column("model", "E", array=flux),
    ], name="COADD")
    spall = fits.BinTableHDU.from_columns([
        fits.Column("PROGRAMNAME", "16A", array=[program]), fits.Column("CHUNK", "16A", array=["boss21"]),
        fits.Column("PLATEQUALITY", "8A", array=["good"]), fits.Column("PLATE", "J", array=[plate]),
        fits.Column("TILE", "J", array=[11000]), fits.Column("MJD", "J", array=[mjd]),
        fits.Column("FIBERID", "J", array=[fiber]), fits.Column("RUN2D", "16A", array=["v5_13_2"]),
        fits.Column("RUN1D", "16A", array=["v5_13_2"]), fits.Column("OBJTYPE", "16A", array=["GALAXY"]),
        fits.Column("PLUG_RA", "D", array=[150.1]), fits.Column("PLUG_DEC", "D", array=[2.2]),
        fits.Column("CLASS", "6A", array=[cls]), fits.Column("SUBCLASS", "21A", array=[subclass]),
        fits.Column("Z", "E", array=[z]), fits.Column("Z_ERR", "E", array=[1e-5]),
        fits.Column("RCHI2", "E", array=[1.05]), fits.Column("DOF", "J", array=[4000]),
        fits.Column("ZWARNING", "J", array=[0]), fits.Column("SN_MEDIAN_ALL", "E", array=[12.0]),
        fits.Column("VDISP", "E", array=[vdisp]), fits.Column("VDISP_ERR", "E", array=[9.0]),
        fits.Column("SPECOBJID", "19A", array=["8458326405484322816"]),
    ], name="SPALL")
    spzline = fits.BinTableHDU.from_columns([
        fits.Column("PLATE", "J", array=[plate] * 2), fits.Column("MJD", "J", array=[mjd] * 2),
        fits.Column("FIBERID", "J", array=[fiber] * 2), fits.Column("LINENAME", "13A", array=["H_alpha", "[O_III] 5007"]),
        fits.Column("LINEWAVE", "D", array=[6564.61, 5008.24]), fits.Column("LINEZ", "E", array=[z, z]),
        fits.Column("LINEAREA", "E", array=[10.0, 3.0]), fits.Column("LINEEW", "E", array=[2.0, 0.5]),
    ], name="SPZLINE")
    hdus = [primary, coadd, spall, spzline]
    if not lite:
        for name in ("B1-00123456-00123450-00123452", "R1-00123456-00123450-00123452"):
            hdus.append(fits.BinTableHDU.from_columns([
                fits.Column("flux", "E", array=flux), fits.Column("loglam", "E", array=BOSS_LOGLAM.astype(np.float32)),
                fits.Column("ivar", "E", array=ivar / 2), fits.Column("mask", "J", array=and_mask),
                fits.Column("wdisp", "E", array=wdisp), fits.Column("sky", "E", array=np.full(n, 3.0, np.float32)),
            ], name=name))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def gaussian_resolution(n_wave: int, sigma_pixels) -> np.ndarray:
    """(DESI_NDIAG, n_wave) diagonals of a resolution matrix whose row i is a unit-sum Gaussian of
    sigma_pixels[i] in scipy's dia_matrix convention (R[i, i + k] = data[ndiag//2 - k, i + k])."""
    sigma = np.broadcast_to(np.asarray(sigma_pixels, float), (n_wave,))
    offsets = DESI_NDIAG // 2 - np.arange(DESI_NDIAG)
    rows = np.arange(n_wave)
    kernel = np.exp(-0.5 * (offsets[:, None] / sigma[None, :]) ** 2)           # (ndiag, row)
    kernel /= kernel.sum(axis=0)
    data = np.zeros((DESI_NDIAG, n_wave))
    for d, k in enumerate(offsets):
        columns = rows + k
        inside = (columns >= 0) & (columns < n_wave)
        data[d, columns[inside]] = kernel[d, inside]
    return data.astype(np.float32)


def write_desi_coadd(path, spectra: dict, *, targetids=(39627640566453451,), sigma_pixels=None, masks=None,
                     resolution=True, healpix=10016):
    """A coadd file; `spectra[camera] = (flux, ivar)` arrays of shape (n_targets, n_wave(camera))."""
    n_targets = len(targetids)
    primary = fits.PrimaryHDU()
    primary.header["HPXNSIDE"], primary.header["HPXPIXEL"], primary.header["HPXNEST"] = 64, healpix, True
    fibermap = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=np.asarray(targetids, np.int64)),
        fits.Column("COADD_FIBERSTATUS", "J", array=np.zeros(n_targets, np.int32)),
        fits.Column("TARGET_RA", "D", array=150.0 + np.arange(n_targets)),
        fits.Column("TARGET_DEC", "D", array=2.0 + np.arange(n_targets)),
        fits.Column("OBJTYPE", "3A", array=["TGT"] * n_targets),
        fits.Column("DESI_TARGET", "K", array=np.ones(n_targets, np.int64)),
        fits.Column("EBV", "E", array=np.full(n_targets, 0.02, np.float32)),
        fits.Column("COADD_NUMEXP", "I", array=np.full(n_targets, 2, np.int16)),
        fits.Column("COADD_EXPTIME", "E", array=np.full(n_targets, 1800.0, np.float32)),
    ], name="FIBERMAP")
    exp_fibermap = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=np.repeat(np.asarray(targetids, np.int64), 2)),
        fits.Column("NIGHT", "J", array=np.full(2 * n_targets, 20220101, np.int32)),
        fits.Column("EXPID", "J", array=np.tile([1001, 1002], n_targets).astype(np.int32)),
        fits.Column("FIBERSTATUS", "J", array=np.zeros(2 * n_targets, np.int32)),
    ], name="EXP_FIBERMAP")
    hdus = [primary, fibermap, exp_fibermap]
    for camera in DESI_CAMERAS:
        wave = desi_wavelength(camera)
        flux, ivar = spectra[camera]
        mask = np.zeros(flux.shape, np.uint32) if masks is None else masks[camera].astype(np.uint32)
        wave_hdu = fits.ImageHDU(wave, name=f"{camera}_WAVELENGTH")
        wave_hdu.header["BUNIT"] = "Angstrom"
        flux_hdu = fits.ImageHDU(np.asarray(flux, np.float32), name=f"{camera}_FLUX")
        flux_hdu.header["BUNIT"] = "10**-17 erg/(s cm2 Angstrom)"
        ivar_hdu = fits.ImageHDU(np.asarray(ivar, np.float32), name=f"{camera}_IVAR")
        ivar_hdu.header["BUNIT"] = "10**+34 (s2 cm4 Angstrom2) / erg2"
        hdus += [wave_hdu, flux_hdu, ivar_hdu, fits.ImageHDU(mask, name=f"{camera}_MASK")]
        if resolution:
            sigma = 0.9 if sigma_pixels is None else sigma_pixels[camera]
            res = np.stack([gaussian_resolution(wave.size, sigma) for _ in range(n_targets)])
            hdus.append(fits.ImageHDU(res, name=f"{camera}_RESOLUTION"))
    hdus.append(fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=np.asarray(targetids, np.int64)),
        fits.Column("TSNR2_BGS", "E", array=np.full(n_targets, 900.0, np.float32))], name="SCORES"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def _redshift_columns(targetids, z, spectype, subtype):
    n = len(targetids)
    return [
        fits.Column("TARGETID", "K", array=np.asarray(targetids, np.int64)),
        fits.Column("CHI2", "D", array=np.full(n, 7000.0)),
        fits.Column("COEFF", "10D", array=np.zeros((n, 10))),
        fits.Column("Z", "D", array=np.asarray(z, float)), fits.Column("ZERR", "D", array=np.full(n, 2e-5)),
        fits.Column("ZWARN", "K", array=np.zeros(n, np.int64)), fits.Column("NPIXELS", "K", array=np.full(n, 7800)),
        fits.Column("SPECTYPE", "6A", array=list(spectype)), fits.Column("SUBTYPE", "20A", array=list(subtype)),
        fits.Column("NCOEFF", "K", array=np.full(n, 10)), fits.Column("DELTACHI2", "D", array=np.full(n, 500.0)),
    ]


def write_redrock(path, targetids, z, spectype=None, subtype=None):
    n = len(targetids)
    spectype = spectype or ["GALAXY"] * n
    subtype = subtype or [""] * n
    primary = fits.PrimaryHDU()
    primary.header["RRVER"] = "0.15.0"
    hdus = [primary, fits.BinTableHDU.from_columns(_redshift_columns(targetids, z, spectype, subtype), name="REDSHIFTS"),
            fits.BinTableHDU.from_columns([fits.Column("TARGETID", "K", array=np.asarray(targetids, np.int64))],
                                          name="FIBERMAP"),
            fits.BinTableHDU.from_columns([fits.Column("TARGETID", "K", array=np.asarray(targetids, np.int64))],
                                          name="EXP_FIBERMAP"),
            fits.BinTableHDU.from_columns([fits.Column("TARGETID", "K", array=np.asarray(targetids, np.int64))],
                                          name="TSNR2")]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_zcatalog(path, targetids, z, primary):
    """A zpix catalogue: a target may appear more than once (other surveys/programs); ZCAT_PRIMARY
    marks the row to use."""
    n = len(targetids)
    columns = _redshift_columns(targetids, z, ["GALAXY"] * n, [""] * n) + [
        fits.Column("SURVEY", "7A", array=["main"] * n), fits.Column("PROGRAM", "6A", array=["dark"] * n),
        fits.Column("ZCAT_PRIMARY", "L", array=np.asarray(primary, bool))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="ZCATALOG")]).writeto(path, overwrite=True)
    return path
