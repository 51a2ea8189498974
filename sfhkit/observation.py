"""An observed spectrum: what the likelihood compares the forward model with.

`Observation` holds observed-frame vacuum wavelengths (Angstrom), flux and its 1-sigma noise in
1e-17 erg/s/cm2/A (the SDSS unit), a pixel mask (True = use the pixel), the redshift, the Calzetti
A_V assumed for the fit and free-form metadata.  It checks its input once, so everything
downstream can trust it: a NaN in an unmasked pixel, sigma <= 0 there, or too few usable pixels
raise a ValueError that says which.

A real spectrum also carries what the line-spread function needs: the stellar velocity dispersion
(km/s) and the instrument's Gaussian sigma per pixel (km/s); `line_spread()` turns them into the
forward model's `LineSpread`.  Readers for survey files live in `sfhkit.surveys`
(`sfhkit.surveys.read_observation(path)`); this module imports none of them.

`mock_observation` makes the paper's mock data: noiseless model flux plus Gaussian noise with
sigma = mean(noiseless flux) / SNR in every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from astropy import units as u

from .wavelength import check_wavelengths

FLUX_UNIT = "1e-17 erg/s/cm2/Angstrom"
MIN_USED_PIXELS = 100  # fewer unmasked pixels than this cannot constrain 128 history parameters
FLUX_QUANTITY = u.Unit("1e-17 erg / (s cm2 Angstrom)")
# A median |flux| below this (in FLUX_UNIT, i.e. 1e-23 erg/s/cm2/A) means the numbers are in another unit.
PLAUSIBLE_FLUX_FLOOR = 1e-6
# Per-pixel arrays an Observation's metadata may carry and a posterior file keeps: units, meaning.
PER_PIXEL_METADATA = {
    "noiseless_flux": (FLUX_UNIT, "the mock's flux before noise"),
    "pipeline_model": (FLUX_UNIT, "the survey pipeline's best-fit model spectrum"),
    "sky_flux": (FLUX_UNIT, "sky flux subtracted by the pipeline"),
}


def sdss_wavelength(min_angstrom: float = 3800.0, n_pixels: int = 3800, dlog10: float = 1e-4) -> np.ndarray:
    """An SDSS-like observed vacuum wavelength grid: log10 spacing 1e-4 (69 km/s per pixel) from
    `min_angstrom`; the default 3800 pixels reach 9206 A."""
    return min_angstrom * 10 ** (dlog10 * np.arange(n_pixels))


@dataclass
class Observation:
    """One observed spectrum.

    wavelength : observed-frame vacuum wavelengths, Angstrom (or an astropy Quantity), increasing
    flux, sigma : flux density and its 1-sigma noise, 1e-17 erg/s/cm2/A (or astropy Quantities of any
        flux-density unit, per Angstrom or per Hz)
    mask : True where the pixel is used (default: every pixel with finite flux and 0 < sigma < inf)
    redshift : > 0
    av : Calzetti A_V (mag) assumed in the fit
    metadata : anything worth keeping with the result (identifiers, the true history of a mock, ...)
    velocity_dispersion_kms : stellar line-of-sight velocity dispersion (None: unknown)
    instrument_sigma_kms : the spectrograph's Gaussian line-spread sigma per pixel (None: unknown)
    """

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    redshift: float
    av: float = 0.0
    mask: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    velocity_dispersion_kms: float | None = None
    instrument_sigma_kms: np.ndarray | None = None

    def __post_init__(self):
        if isinstance(self.wavelength, u.Quantity):
            try:
                self.wavelength = self.wavelength.to_value(u.AA, equivalencies=u.spectral())
            except u.UnitConversionError as err:
                raise ValueError(f"wavelength must be a length (or frequency/energy): {err}") from None
        self.wavelength = check_wavelengths(self.wavelength, "wavelength")
        n = self.wavelength.size
        for name in ("flux", "sigma"):
            value = getattr(self, name)
            if isinstance(value, u.Quantity):
                try:
                    value = value.to_value(FLUX_QUANTITY, equivalencies=u.spectral_density(self.wavelength * u.AA))
                except u.UnitConversionError as err:
                    raise ValueError(f"{name} must be a flux density (per Angstrom or per Hz): {err}") from None
            setattr(self, name, np.asarray(value, dtype=float))
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
        typical = np.median(np.abs(self.flux[used]))
        if 0 < typical < PLAUSIBLE_FLUX_FLOOR:
            raise ValueError(f"the median |flux| is {typical:.3g}: this looks like erg/s/cm2/A, but plain arrays are "
                             f"read as {FLUX_UNIT}; multiply flux and sigma by 1e17 or pass astropy Quantities")
        if used.sum() < MIN_USED_PIXELS:
            raise ValueError(f"only {int(used.sum())} unmasked pixels; at least {MIN_USED_PIXELS} are needed")
        if self.velocity_dispersion_kms is not None:
            self.velocity_dispersion_kms = float(self.velocity_dispersion_kms)
            if not np.isfinite(self.velocity_dispersion_kms) or self.velocity_dispersion_kms < 0:
                raise ValueError(f"velocity_dispersion_kms must be finite and >= 0, got {self.velocity_dispersion_kms!r}")
        if self.instrument_sigma_kms is not None:
            sig = np.broadcast_to(np.asarray(self.instrument_sigma_kms, dtype=float), (n,)).copy()
            if not (np.isfinite(sig) & (sig >= 0)).all():
                raise ValueError("instrument_sigma_kms must be finite and >= 0 in every pixel")
            self.instrument_sigma_kms = sig

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

    def line_spread(self, velocity_dispersion_kms: float | None = None):
        """The `LineSpread` of this spectrum (its velocity dispersion unless one is given, and its
        instrument sigma), or None when neither is known."""
        from .lsf import LineSpread

        vdisp = self.velocity_dispersion_kms if velocity_dispersion_kms is None else velocity_dispersion_kms
        if vdisp is None and self.instrument_sigma_kms is None:
            return None
        if self.instrument_sigma_kms is None:
            return LineSpread(vdisp)
        return LineSpread(vdisp or 0.0, self.instrument_sigma_kms, self.wavelength)

    def forward_model(self, grid=None, *, line_spread="auto", **kwargs):
        """The forward model on this observation's wavelengths, redshift and A_V (default grid);
        `line_spread="auto"` broadens with this spectrum's own `line_spread()`, None not at all."""
        from .forward import ForwardModel
        from .ssp import SSPGrid

        if isinstance(line_spread, str):
            if line_spread != "auto":
                raise ValueError(f"line_spread must be 'auto', None or a LineSpread, not {line_spread!r}")
            line_spread = self.line_spread()
        return ForwardModel(grid or SSPGrid.default(), self.wavelength, self.redshift, self.av,
                            line_spread=line_spread, **kwargs)

    def with_model_error(self, fraction: float) -> "Observation":
        """A copy whose noise includes a model error of `fraction` of the flux, in quadrature:
        sigma^2 + (fraction * |flux|)^2.  The SSP models, flux calibration and sky subtraction are
        good to a few per cent, so spectra with S/N well above ~30 per pixel cannot be fitted to their
        formal noise (a MaNGA spaxel at S/N 116 gives chi^2 17 per pixel without it)."""
        if not np.isfinite(fraction) or fraction < 0:
            raise ValueError(f"the model-error fraction must be finite and >= 0, got {fraction!r}")
        sigma = np.where(self.mask, np.sqrt(self.sigma ** 2 + (fraction * np.abs(self.flux)) ** 2), self.sigma)
        return replace(self, sigma=sigma, metadata={**self.metadata, "model_error_fraction": float(fraction)})

    def with_mask(self, mask) -> "Observation":
        """A copy that also leaves out the pixels where `mask` is False."""
        return replace(self, mask=self.mask & np.asarray(mask, dtype=bool), metadata=dict(self.metadata))


def mock_observation(history, forward_model, snr: float = 50.0, seed: int | None = None,
                     metadata: dict | None = None, *, av: float | None = None,
                     calibration=None) -> Observation:
    """The paper's mock: the forward model's noiseless spectrum of `history` (2, n_bins) plus
    Gaussian noise of sigma = mean(noiseless flux) / snr in every pixel.  The true history, SNR
    and seed are kept in the metadata.

    For mocks of real-spectrum fits (`sfhkit calibrate --infer-av`): `av` makes the spectrum at that
    A_V (mag) instead of the model's (kept as metadata "true_av"; the observation keeps the model's
    A_V, the one a fit uses), and `calibration` (p_1, p_2, ...) multiplies it by a flux-calibration
    error P = 1 + sum_k p_k L_k (sfhkit.fluxcal's Legendre basis)."""
    if not np.isfinite(snr) or snr <= 0:
        raise ValueError(f"snr must be finite and > 0, got {snr!r}")
    history = torch.as_tensor(np.asarray(history), dtype=forward_model.dtype_)
    extra = {}
    with torch.no_grad():
        noiseless = forward_model(history, av=av).double().cpu().numpy()
    if av is not None:
        extra["true_av"] = float(av)
    if calibration is not None:
        from .fluxcal import legendre_basis

        terms = np.asarray(calibration, dtype=float)
        noiseless = noiseless * (1.0 + terms @ legendre_basis(forward_model.wavelength, terms.size).numpy()[1:])
        extra["true_calibration"] = terms.tolist()
    sigma = np.full_like(noiseless, noiseless.mean() / snr)
    rng = np.random.default_rng(seed)
    flux = noiseless + sigma * rng.standard_normal(noiseless.shape)
    meta = {"kind": "mock", "snr": float(snr), "seed": seed, "true_history": history.cpu().numpy().astype(float),
            "noiseless_flux": noiseless, **extra, **(metadata or {})}
    return Observation(forward_model.wavelength, flux, sigma, forward_model.redshift, forward_model.av, metadata=meta)
