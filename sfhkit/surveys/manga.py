"""MaNGA spectra into an `Observation`: DRP LOGCUBE spaxels or apertures, and the spectra-table layout.

LOGCUBE (manga-PLATE-IFU-LOGCUBE.fits.gz, DRP datamodel): FLUX, IVAR, MASK cubes (wavelength, y, x)
in 1e-17 erg/s/cm2/A/spaxel, WAVE (vacuum Angstrom), LSFPRE (the line-spread sigma in Angstrom per
spaxel and wavelength; DR17) and SPECRES (the median resolving power R = lambda/FWHM, 1-D); the
primary header holds PLATEIFU, MANGAID, OBJRA, OBJDEC, EBVGAL.  The redshift is not in the cube: pass
it (drpall NSA_Z, or the DAP's stellar redshift).  MASK bits (MANGA_DRP3PIXMASK): 0 NOCOV,
1 LOWCOV, 2 DEADFIBER, 3 FORESTAR, 10 DONOTUSE; all five are masked by default.

An aperture sums spaxels; adjacent MaNGA spaxels are correlated (the cube is built from overlapping
fibres), so the noise of the sum exceeds the quadrature sum of the spaxels' noise by
1 + 1.62 log10(N) for N <= 100 spaxels and 4.2 beyond (Law et al. 2016, AJ 152, 83; the DRP
caveats page), which `read_logcube` applies.

Spectra table (e.g. the sdss-mangadap test file): HDUs WAVE (n_wave), FLUX, IVAR, MASK, SRES
(n_spectra, n_wave) and Z (n_spectra); `read_manga_spectra(path, index)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..lsf import FWHM_PER_SIGMA, SPEED_OF_LIGHT_KMS
from ..observation import Observation
from ._fits import open_fits, require_hdus

DRP3PIXMASK = {"NOCOV": 0, "LOWCOV": 1, "DEADFIBER": 2, "FORESTAR": 3, "DONOTUSE": 10}
DEFAULT_MASKED_FLAGS = tuple(DRP3PIXMASK)
SPAXEL_ARCSEC = 0.5
SAS_URL = "https://data.sdss.org/sas/dr17/manga/spectro/redux/{drpver}/{plate}/stack/manga-{plateifu}-LOGCUBE.fits.gz"


def _bits(flags) -> int:
    unknown = set(flags) - set(DRP3PIXMASK)
    if unknown:
        raise ValueError(f"unknown MANGA_DRP3PIXMASK flags {sorted(unknown)}; known: {sorted(DRP3PIXMASK)}")
    return sum(1 << DRP3PIXMASK[name] for name in set(flags))


def covariance_noise_factor(n_spaxels: int) -> float:
    """How much the noise of a sum of `n_spaxels` adjacent spaxels exceeds the naive quadrature sum
    (Law et al. 2016)."""
    if n_spaxels < 1:
        raise ValueError("an aperture needs at least one spaxel")
    return 1.0 + 1.62 * np.log10(n_spaxels) if n_spaxels <= 100 else 4.2


def _sigma_kms_from_resolution(wavelength, resolving_power):
    """Gaussian sigma (km/s) of a resolving power R = lambda/FWHM."""
    return SPEED_OF_LIGHT_KMS / (np.asarray(resolving_power, dtype=float) * FWHM_PER_SIGMA) * np.ones_like(wavelength)


def _filled_resolution(sigma_kms, mask):
    """Instrument sigma defined everywhere: bad values (<= 0, NaN) take the median of the good ones
    and their pixels are masked."""
    good = np.isfinite(sigma_kms) & (sigma_kms > 0)
    if not good.any():
        raise ValueError("the spectral resolution is undefined in every pixel")
    return np.where(good, sigma_kms, np.median(sigma_kms[good])), mask & good


def read_manga_spectra(path, index: int, *, av: float = 0.0, masked_flags=DEFAULT_MASKED_FLAGS) -> Observation:
    """Spectrum `index` of a MaNGA spectra table (WAVE, FLUX, IVAR, MASK, SRES, Z; module docstring)."""
    with open_fits(path, "MaNGA file") as hdul:
        require_hdus(hdul, ("WAVE", "FLUX", "IVAR", "MASK", "SRES", "Z"), path, "a MaNGA spectra table")
        flux_all = hdul["FLUX"].data
        if flux_all.ndim != 2:
            raise ValueError(f"{path}: FLUX must be (spectra, wavelength), got shape {flux_all.shape}")
        n = flux_all.shape[0]
        if not -n <= index < n:
            raise IndexError(f"{path} has {n} spectra, no index {index}")
        wavelength = np.asarray(hdul["WAVE"].data, dtype=float)
        flux = np.asarray(flux_all[index], dtype=float)
        ivar = np.asarray(hdul["IVAR"].data[index], dtype=float)
        flags = np.asarray(hdul["MASK"].data[index]).astype(np.int64)
        resolution = np.asarray(hdul["SRES"].data[index], dtype=float)
        redshift = float(hdul["Z"].data[index])
        drpver = str(hdul[0].header.get("DRPVER", ""))
    if not (ivar > 0).any():
        raise ValueError(f"{path} spectrum {index}: ivar is 0 in every pixel, no usable data")
    usable = (flags & _bits(masked_flags)) == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_kms, usable = _filled_resolution(_sigma_kms_from_resolution(wavelength, resolution), usable)
    metadata = {"kind": "manga", "source": f"{Path(path).name}[{index}]", "index": index, "drpver": drpver}
    try:
        return Observation.from_ivar(wavelength, flux, ivar, redshift, av=av, mask=usable, metadata=metadata,
                                     instrument_sigma_kms=sigma_kms)
    except ValueError as err:
        raise ValueError(f"{path} spectrum {index}: {err}") from None


def read_logcube(path, *, redshift: float, spaxel: tuple[int, int] | None = None, radius_arcsec: float | None = None,
                 centre: tuple[float, float] | None = None, av: float = 0.0, velocity_dispersion_kms=None,
                 masked_flags=DEFAULT_MASKED_FLAGS) -> Observation:
    """One spaxel (`spaxel=(x, y)`, numpy column and row) or the sum over a circular aperture
    (`radius_arcsec` around `centre`, default the cube's centre) of a DRP LOGCUBE.

    In an aperture, spaxels that are unusable in more than half of their pixels are left out, a
    wavelength pixel is masked when any remaining spaxel is bad there, and the noise of the sum
    carries the covariance factor (module docstring)."""
    if (spaxel is None) == (radius_arcsec is None):
        raise ValueError("give exactly one of spaxel=(x, y) or radius_arcsec=")
    if redshift is None or not np.isfinite(redshift) or redshift <= 0:
        raise ValueError("a LOGCUBE has no redshift: pass redshift= (drpall NSA_Z, or the DAP's stellar z)")
    with open_fits(path, "MaNGA file", memmap=True) as hdul:
        require_hdus(hdul, ("FLUX", "IVAR", "MASK", "WAVE"), path, "a MaNGA DRP LOGCUBE")
        cube = hdul["FLUX"].data
        if cube.ndim != 3:
            raise ValueError(f"{path}: FLUX must be a (wavelength, y, x) cube, got shape {cube.shape}")
        n_wave, ny, nx = cube.shape
        header = hdul[0].header
        wavelength = np.asarray(hdul["WAVE"].data, dtype=float)
        if spaxel is not None:
            x, y = (int(v) for v in spaxel)
            if not (0 <= x < nx and 0 <= y < ny):
                raise IndexError(f"spaxel {spaxel} is outside the {nx} x {ny} cube")
            ys, xs = np.array([y]), np.array([x])
        else:
            cx, cy = centre if centre is not None else ((nx - 1) / 2, (ny - 1) / 2)
            yy, xx = np.mgrid[:ny, :nx]
            inside = np.hypot(xx - cx, yy - cy) * SPAXEL_ARCSEC <= radius_arcsec
            ys, xs = np.nonzero(inside)
            if ys.size == 0:
                raise ValueError(f"no spaxel lies within {radius_arcsec} arcsec of {centre}")
        flux = np.asarray(cube[:, ys, xs], dtype=float)                          # (wave, spaxels)
        ivar = np.asarray(hdul["IVAR"].data[:, ys, xs], dtype=float)
        bad = ((np.asarray(hdul["MASK"].data[:, ys, xs]).astype(np.int64) & _bits(masked_flags)) != 0) | (ivar <= 0)
        if "LSFPRE" in hdul:
            lsf_angstrom = np.asarray(hdul["LSFPRE"].data[:, ys, xs], dtype=float)
            good_lsf = np.where(bad, 0.0, lsf_angstrom)
            n_good = (~bad).sum(axis=1)
            sigma_kms = SPEED_OF_LIGHT_KMS * good_lsf.sum(axis=1) / np.maximum(n_good, 1) / wavelength
            sigma_kms[n_good == 0] = np.nan           # no usable spaxel here: filled and masked below
        elif "SPECRES" in hdul:
            sigma_kms = _sigma_kms_from_resolution(wavelength, hdul["SPECRES"].data)
        else:
            sigma_kms = np.full(n_wave, np.nan)
        metadata = {"kind": "manga", "source": Path(path).name, "plateifu": str(header.get("PLATEIFU", "")).strip(),
                    "mangaid": str(header.get("MANGAID", "")).strip(), "ra_deg": header.get("OBJRA"),
                    "dec_deg": header.get("OBJDEC"), "ebv_galactic": header.get("EBVGAL")}
    if spaxel is None:
        keep = bad.mean(axis=0) <= 0.5
        if not keep.any():
            raise ValueError("every spaxel in the aperture is unusable")
        flux, ivar, bad = flux[:, keep], ivar[:, keep], bad[:, keep]
        metadata.update(aperture_radius_arcsec=float(radius_arcsec), n_spaxels=int(keep.sum()))
    n_spaxels = flux.shape[1]
    usable = ~bad.any(axis=1)
    variance = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, ivar)).sum(axis=1) * covariance_noise_factor(n_spaxels) ** 2
    total_flux = flux.sum(axis=1)
    if not usable.any():
        raise ValueError(f"{path}: every pixel of the selected spaxel(s) is masked or has ivar 0")
    with np.errstate(invalid="ignore"):
        sigma_kms, usable = _filled_resolution(sigma_kms, usable)
    sigma = np.where(usable, np.sqrt(variance), np.inf)
    metadata = {k: v for k, v in metadata.items() if v not in (None, "")}
    return Observation(wavelength, total_flux, sigma, redshift, av=av, mask=usable, metadata=metadata,
                       velocity_dispersion_kms=velocity_dispersion_kms, instrument_sigma_kms=sigma_kms)


def fetch_logcube(plateifu: str, *, drpver: str = "v3_1_1") -> Path:
    """Download (once; astropy's cache) the LOGCUBE of PLATE-IFU from the SDSS Science Archive
    Server; offline this raises ConnectionError with what to do instead."""
    from astropy.utils.data import download_file

    plate = plateifu.split("-")[0]
    url = SAS_URL.format(drpver=drpver, plate=plate, plateifu=plateifu)
    try:
        return Path(download_file(url, cache=True, show_progress=True))
    except Exception as err:  # noqa: BLE001 - urllib/socket raise many kinds
        raise ConnectionError(f"could not download {url} ({type(err).__name__}: {err}). Offline? Fetch the "
                              "file elsewhere and use sfhkit.surveys.manga.read_logcube(PATH, redshift=...)") from None
