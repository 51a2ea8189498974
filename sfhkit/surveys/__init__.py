"""Observed spectra from surveys, and the fits others made of them: one module per survey's data
model (the simulation histories the prior learns from are in sfhkit.data).

* `sdss`: SDSS-I/II, BOSS and eBOSS spec-PLATE-MJD-FIBER files (full and lite), and fetching them;
* `desi`: DESI coadd files with their redrock redshifts;
* `manga`: MaNGA spectra tables and DRP LOGCUBEs;
* `spectrum1d`: a specutils Spectrum a user already holds;
* `firefly`: FIREFLY's fits (spFly files, the MaNGA FIREFLY catalogue), to compare with.

`read_observation` is the one entry point: it recognises a file by its HDUs, not by its name.

    >>> from sfhkit.surveys import read_observation
    >>> obs = read_observation("spec-0266-51602-0614.fits")
    >>> obs = read_observation("coadd-main-dark-10016.fits", targetid=39627640566453451)
    >>> obs = read_observation(spectrum, redshift=0.05)            # a specutils Spectrum
"""

from __future__ import annotations

from ._fits import open_fits
from .desi import is_desi_coadd
from .spectrum1d import is_spectrum

# What each kind of file needs besides its path (keyword arguments of its reader).
READERS = {
    "sdss": "sfhkit.surveys.sdss.read_spec (SDSS-I/II, BOSS, eBOSS spec files)",
    "desi": "sfhkit.surveys.desi.read_coadd (targetid= or index=, redrock= or redshift=)",
    "manga-table": "sfhkit.surveys.manga.read_manga_spectra (index=)",
    "manga-cube": "sfhkit.surveys.manga.read_logcube (redshift=, spaxel= or radius_arcsec=)",
}


def identify(path) -> str:
    """The kind of survey file at `path` (a key of READERS), from its HDUs; a ValueError that says
    what the file is, and what was expected, when sfhkit cannot fit it."""
    with open_fits(path, "spectrum file") as hdul:
        names = [hdu.name for hdu in hdul]
        flux_ndim = hdul["FLUX"].header.get("NAXIS") if "FLUX" in names else None
        first_columns = getattr(hdul[1], "columns", None) if len(hdul) > 1 else None
    found = set(names)
    if "COADD" in found and found & {"SPECOBJ", "SPALL"}:
        return "sdss"
    if is_desi_coadd(found):
        return "desi"
    if {"WAVE", "FLUX", "IVAR", "SRES", "Z"} <= found and flux_ndim == 2:
        return "manga-table"
    if {"WAVE", "FLUX", "IVAR", "MASK"} <= found and flux_ndim == 3:
        return "manga-cube"
    what = "a file sfhkit does not read"
    if found & {"REDSHIFTS", "ZCATALOG"}:
        what = "a DESI redshift file: give it as redrock= with the coadd file"
    elif first_columns is not None and {"wavelength", "firefly_model"} <= set(first_columns.names):
        what = "a FIREFLY fit (spFly): read it with sfhkit.surveys.firefly.read_spfly"
    elif "COADD" in found:
        what = "an SDSS spec file without its SPECOBJ or SPALL catalogue row"
    raise ValueError(f"{path} is {what}. Expected an SDSS/BOSS/eBOSS spec file (COADD + SPECOBJ or SPALL), "
                     "a DESI coadd file (FIBERMAP + B/R/Z_FLUX ...), a MaNGA spectra table or LOGCUBE "
                     f"(WAVE, FLUX, IVAR, ...); its HDUs are {names}")


def read_observation(source, **kwargs):
    """An `Observation` from a survey file (recognised by `identify`) or a specutils Spectrum;
    kwargs go to the reader (READERS says which it takes)."""
    if is_spectrum(source):
        from .spectrum1d import from_spectrum1d

        return from_spectrum1d(source, **kwargs)
    kind = identify(source)
    if kind == "sdss":
        from .sdss import read_spec

        return read_spec(source, **kwargs)
    if kind == "desi":
        from .desi import read_coadd

        return read_coadd(source, **kwargs)
    from . import manga

    if kind == "manga-table":
        if "index" not in kwargs:
            raise ValueError(f"{source} is a MaNGA spectra table: say which spectrum with index=")
        return manga.read_manga_spectra(source, **kwargs)
    return manga.read_logcube(source, **kwargs)


__all__ = ["READERS", "identify", "read_observation"]
