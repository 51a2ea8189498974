"""A specutils `Spectrum` (1-D; `Spectrum1D` in specutils < 2) into an `Observation`, for users who
already hold their data that way (specutils' own loaders, their pipeline, a notebook).

What is taken from the spectrum:

* spectral_axis: observed-frame wavelengths (any spectral unit; frequency or energy axes are turned
  into increasing wavelength).  sfhkit models vacuum wavelengths: pass `air_wavelengths=True` for
  an air axis (converted with sfhkit.wavelength.air_to_vacuum);
* flux and uncertainty: any flux-density unit (per Angstrom or per Hz); the uncertainty may be a
  StdDevUncertainty, VarianceUncertainty or InverseVariance.  A spectrum without one is refused:
  the likelihood needs the noise;
* mask: astropy's NDData convention, True = bad pixel (sfhkit's Observation.mask is the opposite:
  True = use);
* redshift: `spectrum.redshift` when it is > 0, unless `redshift=` is given.

The spectrum carries no line spread: pass `velocity_dispersion_kms=` and `instrument_sigma_kms=`
(a scalar or one value per pixel) when they are known.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u

from ..observation import Observation
from ..wavelength import air_to_vacuum


def is_spectrum(obj) -> bool:
    """Whether `obj` is a specutils spectrum (without importing specutils when it is not loaded)."""
    import sys

    specutils = sys.modules.get("specutils")
    if specutils is None:
        return False
    classes = tuple(getattr(specutils, name) for name in ("Spectrum", "Spectrum1D") if hasattr(specutils, name))
    return isinstance(obj, classes)


def from_spectrum1d(spectrum, *, redshift: float | None = None, av: float = 0.0, air_wavelengths: bool = False,
                    velocity_dispersion_kms: float | None = None, instrument_sigma_kms=None,
                    metadata: dict | None = None) -> Observation:
    """An `Observation` of a 1-D specutils spectrum (module docstring)."""
    from astropy.nddata import StdDevUncertainty

    flux = u.Quantity(spectrum.flux)
    if flux.ndim != 1:
        raise ValueError(f"a 1-D spectrum is needed, this one has flux of shape {flux.shape}; "
                         "fit one row at a time (spectrum[i])")
    if spectrum.uncertainty is None:
        raise ValueError("the spectrum has no uncertainty: the likelihood needs the noise (set "
                         "spectrum.uncertainty to a StdDevUncertainty, VarianceUncertainty or InverseVariance)")
    try:
        with np.errstate(divide="ignore"):                   # an inverse variance of 0: an infinite sigma
            stddev = spectrum.uncertainty.represent_as(StdDevUncertainty)
    except (TypeError, ValueError, u.UnitsError) as err:
        raise ValueError(f"cannot turn the spectrum's {type(spectrum.uncertainty).__name__} into a standard "
                         f"deviation ({err})") from None
    sigma = np.asarray(stddev.array, dtype=float) * (stddev.unit or flux.unit)
    wavelength = u.Quantity(spectrum.spectral_axis).to(u.AA, equivalencies=u.spectral())
    use = np.ones(flux.shape, dtype=bool) if spectrum.mask is None else ~np.asarray(spectrum.mask, dtype=bool)
    wavelength_values = wavelength.value
    if air_wavelengths:
        wavelength_values = air_to_vacuum(wavelength_values)
    order = np.argsort(wavelength_values)                     # a frequency axis runs backwards in wavelength
    if redshift is None:
        spectrum_z = getattr(spectrum, "redshift", None)
        spectrum_z = 0.0 if spectrum_z is None else float(u.Quantity(spectrum_z).to_value(u.dimensionless_unscaled))
        if not spectrum_z > 0:
            raise ValueError("the spectrum's redshift is 0 (specutils' default): give redshift=")
        redshift = spectrum_z
    instrument = instrument_sigma_kms
    if instrument is not None and np.ndim(instrument) == 1:
        instrument = np.asarray(instrument, dtype=float)[order]
    meta = {"kind": "spectrum1d", "source": "specutils spectrum", **(metadata or {})}
    use &= np.isfinite(sigma.value) & (sigma.value > 0)
    return Observation(wavelength_values[order] * u.AA, flux[order], np.where(use, sigma.value, np.inf)[order]
                       * sigma.unit, float(redshift), av=av, mask=use[order] & np.isfinite(flux.value[order]),
                       metadata=meta, velocity_dispersion_kms=velocity_dispersion_kms,
                       instrument_sigma_kms=instrument)
