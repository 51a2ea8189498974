"""Line-strength indices of model or observed spectra: Lick/IDS equivalent widths and the
4000 A break, the classical age and metallicity diagnostics (used by the teaching sandbox).

Lick indices (Worthey et al. 1994; H delta_A and H gamma_A from Worthey & Ottaviani 1997) are
defined by a central band and blue and red pseudo-continuum bands in *air* Angstrom; they are
converted here to vacuum (sfhkit.wavelength.air_to_vacuum), because sfhkit's spectra are in
vacuum.  The index is the equivalent width in Angstrom,

    EW = integral over the band of (1 - F / F_c) d lambda,

with F_c the straight line through the mean flux of each pseudo-continuum at its centre.
Dn4000 (Balogh et al. 1999) is the ratio of mean F_nu in 4000-4100 A to 3850-3950 A.
Spectra must be on rest-frame wavelengths at the resolution they have (no broadening to the
Lick resolution is done: these are for comparing spectra with each other, not with Lick tables).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import trapezoid

from .wavelength import air_to_vacuum, interpolate

# name: (central band, blue pseudo-continuum, red pseudo-continuum), air Angstrom
LICK_BANDS_AIR = {
    "H delta_A": ((4083.500, 4122.250), (4041.600, 4079.750), (4128.500, 4161.000)),
    "H gamma_A": ((4319.750, 4363.500), (4283.500, 4319.750), (4367.250, 4419.750)),
    "H beta": ((4847.875, 4876.625), (4827.875, 4847.875), (4876.625, 4891.625)),
    "Mg b": ((5160.125, 5192.625), (5142.625, 5161.375), (5191.375, 5206.375)),
    "Fe 5270": ((5245.650, 5285.650), (5233.150, 5248.150), (5285.650, 5318.150)),
    "Fe 5335": ((5312.125, 5352.125), (5304.625, 5315.875), (5353.375, 5363.375)),
    "Na D": ((5876.875, 5909.375), (5860.625, 5875.625), (5922.125, 5948.125)),
}
DN4000_BANDS_AIR = ((3850.0, 3950.0), (4000.0, 4100.0))


def _vacuum(band):
    return tuple(float(x) for x in air_to_vacuum(np.asarray(band)))


def _band_mean(wavelength, flux, band):
    """Mean flux density over `band` (trapezoid over the pixels inside it and the band's ends,
    interpolated linearly), and the x, y it integrated."""
    lo, hi = band
    inside = (wavelength > lo) & (wavelength < hi)
    ends = interpolate([lo, hi], wavelength, flux)
    x = np.concatenate([[lo], wavelength[inside], [hi]])
    y = np.concatenate([ends[..., :1], flux[..., inside], ends[..., 1:]], axis=-1)
    return trapezoid(y, x, axis=-1) / (hi - lo), x, y


def _check(wavelength, flux, bands):
    wavelength = np.asarray(wavelength, dtype=float)
    flux = np.asarray(flux, dtype=float)
    if flux.shape[-1] != wavelength.size:
        raise ValueError("flux must have the wavelength's length in its last axis")
    lo, hi = min(b[0] for b in bands), max(b[1] for b in bands)
    if wavelength[0] > lo or wavelength[-1] < hi:
        raise ValueError(f"the index needs rest-frame wavelengths {lo:.0f}-{hi:.0f} A; the spectrum covers "
                         f"{wavelength[0]:.0f}-{wavelength[-1]:.0f} A")
    return wavelength, flux


def lick_index(rest_wavelength, flux, name: str):
    """Equivalent width (Angstrom; positive for absorption) of Lick index `name` (LICK_BANDS_AIR)
    of a spectrum (..., n_pixels) on rest-frame vacuum wavelengths."""
    if name not in LICK_BANDS_AIR:
        raise ValueError(f"unknown index {name!r}; known: {sorted(LICK_BANDS_AIR)}")
    central, blue, red = (_vacuum(b) for b in LICK_BANDS_AIR[name])
    wavelength, flux = _check(rest_wavelength, flux, (central, blue, red))
    f_blue, _, _ = _band_mean(wavelength, flux, blue)
    f_red, _, _ = _band_mean(wavelength, flux, red)
    x_blue, x_red = np.mean(blue), np.mean(red)
    _, x, y = _band_mean(wavelength, flux, central)
    continuum = f_blue[..., None] + (f_red - f_blue)[..., None] * (x - x_blue) / (x_red - x_blue)
    return trapezoid(1.0 - y / continuum, x, axis=-1)


def dn4000(rest_wavelength, flux):
    """Narrow 4000 A break: mean F_nu over 4000-4100 A over mean F_nu over 3850-3950 A (air bands),
    of F_lambda spectra (..., n_pixels) on rest-frame vacuum wavelengths."""
    blue, red = (_vacuum(b) for b in DN4000_BANDS_AIR)
    wavelength, flux = _check(rest_wavelength, flux, (blue, red))
    f_nu = flux * wavelength ** 2                       # F_nu is proportional to lambda^2 F_lambda
    return _band_mean(wavelength, f_nu, red)[0] / _band_mean(wavelength, f_nu, blue)[0]


def all_indices(rest_wavelength, flux) -> dict[str, np.ndarray]:
    """Every index of LICK_BANDS_AIR and Dn4000 that the spectrum covers."""
    out = {}
    for name in LICK_BANDS_AIR:
        try:
            out[name] = lick_index(rest_wavelength, flux, name)
        except ValueError:
            continue
    try:
        out["Dn4000"] = dn4000(rest_wavelength, flux)
    except ValueError:
        pass
    return out
