"""Line-spread function: Gaussian broadening by velocity dispersion and instrumental resolution,
less the resolution the stellar library already has.

Per library pixel the broadening is a Gaussian in velocity with

    sigma^2 = sigma_v^2 + sigma_instrument^2 - sigma_library^2      (km/s, clipped at 0)

where sigma_instrument is given at observed wavelengths and sigma_library comes from the grid's
`library_fwhm` (Angstrom FWHM, NaN where the library's resolution is unknown or coarser than any
spectrograph: no broadening there).  The paper has none of this; issue 6 uses it on real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

SPEED_OF_LIGHT_KMS = 299792.458
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def library_sigma_kms(rest_wavelength, library_fwhm_angstrom, unknown: float = np.inf) -> np.ndarray:
    """The library's own Gaussian sigma (km/s) at rest-frame wavelengths from its FWHM in Angstrom;
    `unknown` where the FWHM is NaN (inf: never broaden there)."""
    rest = np.asarray(rest_wavelength, dtype=float)
    fwhm = np.asarray(library_fwhm_angstrom, dtype=float)
    return np.where(np.isfinite(fwhm), SPEED_OF_LIGHT_KMS * fwhm / FWHM_PER_SIGMA / rest, unknown)


@dataclass(frozen=True)
class LineSpread:
    """Velocity dispersion (km/s) and instrumental sigma (km/s; a scalar, or an array given at
    `instrument_wavelength` observed-frame Angstrom) for `ForwardModel(..., line_spread=...)`."""

    velocity_dispersion_kms: float = 0.0
    instrument_sigma_kms: float | np.ndarray = 0.0
    instrument_wavelength: np.ndarray | None = None

    def __post_init__(self):
        if not np.isfinite(self.velocity_dispersion_kms) or self.velocity_dispersion_kms < 0:
            raise ValueError("velocity_dispersion_kms must be finite and >= 0, got "
                             f"{self.velocity_dispersion_kms!r}")
        sig = np.asarray(self.instrument_sigma_kms, dtype=float)
        if not np.all(np.isfinite(sig)) or np.any(sig < 0):
            raise ValueError("instrument_sigma_kms must be finite and >= 0")
        if sig.ndim == 1 and (self.instrument_wavelength is None
                              or np.shape(self.instrument_wavelength) != sig.shape):
            raise ValueError("an array instrument_sigma_kms needs instrument_wavelength of the same shape")

    def sigma_kms(self, rest_wavelength, redshift: float, library_fwhm_angstrom) -> np.ndarray:
        """Net Gaussian sigma (km/s) to apply at each rest-frame library wavelength."""
        rest = np.asarray(rest_wavelength, dtype=float)
        sig_inst = np.asarray(self.instrument_sigma_kms, dtype=float)
        if sig_inst.ndim == 1:
            sig_inst = np.interp(rest * (1 + redshift), self.instrument_wavelength, sig_inst)
        net2 = self.velocity_dispersion_kms ** 2 + sig_inst ** 2 - library_sigma_kms(rest, library_fwhm_angstrom) ** 2
        return np.sqrt(np.clip(net2, 0.0, None))


def resolution_deficit_kms(observed_wavelength, redshift: float, instrument_sigma_kms, grid) -> np.ndarray:
    """d (km/s) per observed wavelength: the library resolution that a model built with the
    instrument's line spread alone (sigma_v = 0) could not subtract, max(sigma_lib^2 - sigma_inst^2,
    0)^(1/2).  A further Gaussian of sqrt(sigma_v^2 - d^2) on such a model gives sigma_v exactly
    (convolutions add in quadrature)."""
    rest = np.asarray(observed_wavelength, dtype=float) / (1 + redshift)
    library_fwhm = np.interp(rest, grid.vacuum_wavelength, grid.dataset["library_fwhm"].values,
                             left=np.nan, right=np.nan)
    sigma_library = library_sigma_kms(rest, library_fwhm, unknown=0.0)
    sigma_instrument = 0.0 if instrument_sigma_kms is None else np.asarray(instrument_sigma_kms, dtype=float)
    return np.sqrt(np.clip(sigma_library ** 2 - sigma_instrument ** 2, 0.0, None))


def broadening_matrix(wavelength, sigma_kms, n_sigma: float = 5.0) -> sp.csr_matrix:
    """Sparse (n, n) operator that convolves a flux density on the (possibly non-uniform) grid
    `wavelength` with a Gaussian of velocity sigma `sigma_kms` (per output pixel).  Rows are
    normalised so that a flat spectrum stays flat; pixels with sigma below a tenth of their
    width are left untouched."""
    lam = np.asarray(wavelength, dtype=float)
    sig_a = lam * np.asarray(sigma_kms, dtype=float) / SPEED_OF_LIGHT_KMS * np.ones_like(lam)
    width = np.gradient(lam)
    lo = np.searchsorted(lam, lam - n_sigma * sig_a, side="left")
    hi = np.searchsorted(lam, lam + n_sigma * sig_a, side="right")
    untouched = sig_a < 0.1 * width
    lo, hi = np.where(untouched, np.arange(lam.size), lo), np.where(untouched, np.arange(lam.size) + 1, hi)
    # Each row's window lo..hi-1, padded to the widest row (vectorised: a loop over pixels took 35 ms).
    columns = lo[:, None] + np.arange((hi - lo).max())[None, :]
    inside = columns < hi[:, None]
    columns = np.minimum(columns, lam.size - 1)
    safe_sigma = np.where(untouched, 1.0, sig_a)[:, None]
    kernel = np.where(inside, np.exp(-0.5 * ((lam[columns] - lam[:, None]) / safe_sigma) ** 2) * width[columns], 0.0)
    kernel /= kernel.sum(axis=1, keepdims=True)
    rows = np.broadcast_to(np.arange(lam.size)[:, None], columns.shape)
    return sp.csr_matrix((kernel[inside], (rows[inside], columns[inside])), shape=(lam.size, lam.size))
