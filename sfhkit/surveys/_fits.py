"""Opening survey FITS files with the same clear errors everywhere (the readers in sfhkit.data)."""

from __future__ import annotations

from pathlib import Path


def open_fits(path, what: str = "file", *, memmap: bool = False):
    """astropy HDUList of `path`; FileNotFoundError if it is missing, ValueError if it is not FITS."""
    from astropy.io import fits

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return fits.open(path, memmap=memmap)
    except OSError as err:
        raise ValueError(f"{path} is not a FITS file ({err})") from None


def require_hdus(hdul, needed, source, what: str, hint: str = "") -> None:
    """ValueError naming the HDUs of `needed` that `hdul` lacks (and the ones it has)."""
    names = [hdu.name for hdu in hdul]
    missing = [name for name in needed if name not in names]
    if missing:
        raise ValueError(f"{source} is not {what}: HDU(s) {missing} missing (it has {names}){hint}")
