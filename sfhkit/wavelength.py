"""The wavelength axis: air-to-vacuum conversion, pixel edges, flux-conserving resampling.

Resampling is done by an explicit sparse matrix rather than by calling `spectres`, because the
forward model composes it with the line-spread operator once and then applies it to thousands of
template spectra (and to torch tensors).  It reproduces `spectres` (tested in
tests/test_wavelength.py): each new pixel's flux density is the overlap-weighted mean of the old
pixels' flux densities, with pixel edges halfway between centres.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def air_to_vacuum(wavelength_air_angstrom):
    """Vacuum wavelength (A) of an air wavelength (A), IAU standard (Morton 2000; the inversion of
    Piskunov, as used by VALD).  Valid above 2000 A; shorter wavelengths are returned unchanged
    (air and vacuum coincide there by convention)."""
    lam = np.asarray(wavelength_air_angstrom, dtype=float)
    s2 = (1e4 / np.where(lam > 0, lam, 1.0)) ** 2
    n = (1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2)
         + 1.599740894897e-4 / (38.92568793293 - s2))
    return np.where(lam >= 2000.0, lam * n, lam)


def interpolate(new_x, x, y) -> np.ndarray:
    """Linear interpolation of `y` (..., n), sampled at increasing `x` (n,), onto `new_x` (m,) for
    every leading index at once (np.interp takes one row); `new_x` is clamped to [x[0], x[-1]]."""
    x = np.asarray(x, dtype=float)
    new_x = np.clip(np.asarray(new_x, dtype=float), x[0], x[-1])
    j = np.clip(np.searchsorted(x, new_x) - 1, 0, x.size - 2)
    w = (new_x - x[j]) / (x[j + 1] - x[j])
    y = np.asarray(y)
    return y[..., j] * (1 - w) + y[..., j + 1] * w


def pixel_edges(centres) -> np.ndarray:
    """Edges of pixels with the given centres: halfway between neighbours, the outer edges
    half a pixel beyond the first and last centre (the convention of `spectres`)."""
    c = np.asarray(centres, dtype=float)
    if c.ndim != 1 or c.size < 2:
        raise ValueError("need a 1-D array of at least two wavelengths")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (c[1] - c[0]) / 2], mid, [c[-1] + (c[-1] - c[-2]) / 2]])


def check_wavelengths(wavelength, name: str = "wavelength") -> np.ndarray:
    """A 1-D, finite, positive, strictly increasing float array, or a ValueError naming `name`."""
    w = np.asarray(wavelength, dtype=float)
    if w.ndim != 1 or w.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least two values, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(w <= 0):
        raise ValueError(f"{name} must be positive (Angstrom)")
    if np.any(np.diff(w) <= 0):
        raise ValueError(f"{name} must be strictly increasing")
    return w


def resampling_matrix(old_centres, new_centres) -> sp.csr_matrix:
    """Sparse (n_new, n_old) matrix R such that R @ flux_old is the flux-conserving resampling
    of a flux density sampled at `old_centres` onto pixels centred at `new_centres`.

    Raises ValueError when a new pixel reaches outside the old pixels' coverage."""
    old_e = pixel_edges(check_wavelengths(old_centres, "old wavelengths"))
    new_e = pixel_edges(check_wavelengths(new_centres, "new wavelengths"))
    if new_e[0] < old_e[0] or new_e[-1] > old_e[-1]:
        raise ValueError(
            f"target pixels span {new_e[0]:.1f}-{new_e[-1]:.1f} A but the source covers only "
            f"{old_e[0]:.1f}-{old_e[-1]:.1f} A")
    n_new = new_e.size - 1
    first = np.searchsorted(old_e, new_e[:-1], side="right") - 1
    last = np.searchsorted(old_e, new_e[1:], side="left") - 1
    counts = last - first + 1
    rows = np.repeat(np.arange(n_new), counts)
    offsets = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = first[rows] + offsets
    lo = np.maximum(old_e[cols], new_e[:-1][rows])
    hi = np.minimum(old_e[cols + 1], new_e[1:][rows])
    weights = (hi - lo) / (new_e[1:] - new_e[:-1])[rows]
    keep = weights > 0
    return sp.csr_matrix((weights[keep], (rows[keep], cols[keep])),
                         shape=(n_new, old_e.size - 1))
