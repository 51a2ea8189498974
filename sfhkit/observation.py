"""An observed spectrum: what the likelihood compares the forward model with.

`Observation` holds observed-frame vacuum wavelengths (Angstrom), flux and its 1-sigma noise in
1e-17 erg/s/cm2/A (the SDSS unit), a pixel mask (True = use the pixel), the redshift, the Calzetti
A_V assumed for the fit and free-form metadata.  It checks its input once, so everything
downstream can trust it: a NaN in an unmasked pixel, sigma <= 0 there, or too few usable pixels
raise a ValueError that says which.

`mock_observation` makes the paper's mock data: noiseless model flux plus Gaussian noise with
sigma = mean(noiseless flux) / SNR in every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .wavelength import check_wavelengths

FLUX_UNIT = "1e-17 erg/s/cm2/Angstrom"
MIN_USED_PIXELS = 100  # fewer unmasked pixels than this cannot constrain 128 history parameters


def sdss_wavelength(min_angstrom: float = 3800.0, n_pixels: int = 3800, dlog10: float = 1e-4) -> np.ndarray:
    """An SDSS-like observed vacuum wavelength grid: log10 spacing 1e-4 (69 km/s per pixel) from
    `min_angstrom`; the default 3800 pixels reach 9206 A."""
    return min_angstrom * 10 ** (dlog10 * np.arange(n_pixels))


@dataclass
class Observation:
    """One observed spectrum.

    wavelength : observed-frame vacuum wavelengths, Angstrom, increasing
    flux, sigma : flux density and its 1-sigma noise, 1e-17 erg/s/cm2/A
    mask : True where the pixel is used (default: every pixel with finite flux and 0 < sigma < inf)
    redshift : > 0
    av : Calzetti A_V (mag) assumed in the fit
    metadata : anything worth keeping with the result (identifiers, the true history of a mock, ...)
    """

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    redshift: float
    av: float = 0.0
    mask: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.wavelength = check_wavelengths(self.wavelength, "wavelength")
        n = self.wavelength.size
        self.flux = np.asarray(self.flux, dtype=float)
        self.sigma = np.asarray(self.sigma, dtype=float)
        for name, value in (("flux", self.flux), ("sigma", self.sigma)):
            if value.shape != (n,):
                raise ValueError(f"{name} must have the wavelength's shape ({n},), got {value.shape}")
        if self.mask is None:
            self.mask = np.isfinite(self.flux) & np.isfinite(self.sigma) & (self.sigma > 0)
        self.mask = np.asarray(self.mask)
        if self.mask.shape != (n,) or self.mask.dtype != bool:
            raise ValueError(f"mask must be a boolean array of shape ({n},), got {self.mask.dtype} {self.mask.shape}")
        self.redshift = float(self.redshift)
        if not np.isfinite(self.redshift) or self.redshift <= 0:
            raise ValueError(f"redshift must be finite and > 0, got {self.redshift!r}")
        self.av = float(self.av)
        if not np.isfinite(self.av) or self.av < 0:
            raise ValueError(f"av must be finite and >= 0 (mag), got {self.av!r}")
        used = self.mask
        if not used.any():
            raise ValueError("every pixel is masked: nothing to fit")
        if not np.isfinite(self.flux[used]).all():
            raise ValueError(f"flux is NaN or infinite in {int((~np.isfinite(self.flux[used])).sum())} unmasked "
                             "pixels; mask them (mask=...) or fix the spectrum")
        bad_sigma = ~np.isfinite(self.sigma[used]) | (self.sigma[used] <= 0)
        if bad_sigma.any():
            raise ValueError(f"sigma must be finite and > 0 in unmasked pixels; {int(bad_sigma.sum())} are not "
                             "(an inverse variance of 0 means: mask the pixel)")
        if used.sum() < MIN_USED_PIXELS:
            raise ValueError(f"only {int(used.sum())} unmasked pixels; at least {MIN_USED_PIXELS} are needed")

    @classmethod
    def from_ivar(cls, wavelength, flux, ivar, redshift: float, **kwargs) -> "Observation":
        """From an inverse variance (SDSS convention): ivar <= 0 or non-finite masks the pixel."""
        ivar = np.asarray(ivar, dtype=float)
        good = np.isfinite(ivar) & (ivar > 0)
        sigma = np.where(good, 1.0 / np.sqrt(np.where(good, ivar, 1.0)), np.inf)
        mask = good & np.isfinite(np.asarray(flux, dtype=float))
        if "mask" in kwargs:
            mask &= np.asarray(kwargs.pop("mask"), dtype=bool)
        return cls(wavelength, flux, sigma, redshift, mask=mask, **kwargs)

    @property
    def n_used(self) -> int:
        return int(self.mask.sum())

    def forward_model(self, grid=None, **kwargs):
        """The forward model on this observation's wavelengths and redshift (default grid)."""
        from .forward import ForwardModel
        from .ssp import SSPGrid

        return ForwardModel(grid or SSPGrid.default(), self.wavelength, self.redshift, self.av, **kwargs)


def mock_observation(history, forward_model, snr: float = 50.0, seed: int | None = None,
                     metadata: dict | None = None) -> Observation:
    """The paper's mock: the forward model's noiseless spectrum of `history` (2, n_bins) plus
    Gaussian noise of sigma = mean(noiseless flux) / snr in every pixel.  The true history, SNR
    and seed are kept in the metadata."""
    if not np.isfinite(snr) or snr <= 0:
        raise ValueError(f"snr must be finite and > 0, got {snr!r}")
    history = torch.as_tensor(np.asarray(history), dtype=forward_model.dtype_)
    with torch.no_grad():
        noiseless = forward_model(history).double().cpu().numpy()
    sigma = np.full_like(noiseless, noiseless.mean() / snr)
    rng = np.random.default_rng(seed)
    flux = noiseless + sigma * rng.standard_normal(noiseless.shape)
    meta = {"kind": "mock", "snr": float(snr), "seed": seed, "true_history": history.cpu().numpy().astype(float),
            "noiseless_flux": noiseless, **(metadata or {})}
    return Observation(forward_model.wavelength, flux, sigma, forward_model.redshift, forward_model.av, metadata=meta)
