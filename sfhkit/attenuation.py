"""Calzetti A_V inferred from the shape of the flux-calibration polynomial (beyond the paper).

With a free multiplicative polynomial P (sfhkit.fluxcal) a spectrum cannot tell dust from
calibration: the attenuation curve T(lambda) = 10^(-0.4 A_V k(lambda)) is smooth, so a model at any
A_V and one at A_V = 0 fit equally well, the polynomial taking T's shape and the history's mass its
grey part.  What tells them apart is how far a survey's calibration can be off.  Write the data's
polynomial as P = P_cal T / lam, with lam = tau_0 and tau the Legendre coefficients of T over the
pixels (`attenuation_coefficients`): with a prior N(0, sd^2) on each coefficient of the
calibration part P_cal (SDSS: a few per cent), the polynomial a fit at A_V = 0 needs is
N(mu(A_V), sd^2), mu_k = tau_k / tau_0.  So (`infer_av`):

1. the history is sampled at A_V = 0 with the free polynomial (the real-spectrum default); each
   draw j has its polynomial p_j, which the data fix far better than sd (the continuum of 3800
   pixels);
2. each draw gets an A_V from p(A_V | draw) ~ prior(A_V) N(p_j; mu(A_V), sd^2), on a fine grid;
3. its intrinsic history is its SFRs / lam(A_V_j): the light is dimmed by lam; the metallicities,
   ages and the model spectrum are unchanged, the masses grow by -log10 lam.

Steps 2-3 are exact composition sampling where the history prior does not change when all SFRs
are scaled by a common factor over the range lam spans (flat in log mass, shapes independent of
mass); sfhkit's prior is not exactly that (shapes and metallicities change with mass), and the
mock calibration (`sfhkit calibrate --infer-av`) measures what that costs.  The polynomial's
shape is exact where P_cal T is a polynomial of the fitted degree; Calzetti's curve changes formula
at 0.63 micron, so it is one only to rms 3.4e-4 of the flux at A_V = 0.5 and 1.5e-3 at A_V = 2
(degree 8, SDSS wavelengths at z = 0.05-0.1), which moves chi^2 by 0.2 and 3.6 at S/N 20.

Why not sample A_V with the history in the reverse diffusion: tried (A_V as one more diffused
coordinate, with the polynomial's prior inside the Gauss-Newton steps); along the ridge where A_V
and the mass trade off, the draws did not settle: on a mock with A_V = 0.03 they spread over
0.07-2.0 mag, where the posterior density falls by e^-17 by 0.7 mag.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ._grid_draws import inverse_cdf_draws
from .dust import calzetti_a_over_av

# The A_V prior: uniform on [0, AV_PRIOR_MAX_MAG] mag (the range of bagpipes' examples and of
# sfhkit's nuisance mode).
AV_PRIOR_MAX_MAG = 2.0
AV_GRID_STEP_MAG = 0.005
# The prior's standard deviation on each Legendre coefficient of the calibration part: SDSS's
# spectrophotometry is good to about 4 per cent between the blue and the red end
# (Adelman-McCarthy et al. 2008).
DEFAULT_CALIBRATION_SD = 0.05


def attenuation_coefficients(wavelength, redshift: float, av, degree: int) -> np.ndarray:
    """(n_av, degree + 1): the least-squares Legendre coefficients (sfhkit.fluxcal's basis over the
    observed `wavelength`) of the Calzetti attenuation curve 10^(-0.4 A_V k) at each A_V (mag)."""
    from .fluxcal import legendre_basis

    basis = legendre_basis(wavelength, degree).numpy()                                   # (d + 1, P)
    k = calzetti_a_over_av(np.asarray(wavelength, dtype=float) / (1 + redshift))
    curves = 10.0 ** (-0.4 * np.atleast_1d(np.asarray(av, dtype=float))[:, None] * k)    # (n_av, P)
    return np.linalg.solve(basis @ basis.T, basis @ curves.T).T


def av_log_likelihood(coefficients: np.ndarray, tau: np.ndarray, calibration_sd: float) -> np.ndarray:
    """log N(p_j; mu(A_V), sd^2) up to a constant, (draws, n_av), for polynomial coefficients p
    (draws, degree) of fits at A_V = 0 and the attenuation's Legendre coefficients tau (n_av, d + 1)."""
    mean = tau[:, 1:] / tau[:, :1]                                                       # mu, (n_av, d)
    return -0.5 * ((coefficients[:, None, :] - mean[None]) ** 2).sum(-1) / calibration_sd ** 2


def should_infer_av(observation, calibration_degree: int) -> bool:
    """Whether a fit infers A_V by default: a real spectrum without a catalogue A_V (none given, no
    FIREFLY fit: sfhkit.galaxies) fitted with the calibration polynomial."""
    from .galaxies import AV_NOT_GIVEN

    return bool(calibration_degree) and observation.metadata.get("av_source") == AV_NOT_GIVEN


def infer_av(posterior, calibration_sd: float = DEFAULT_CALIBRATION_SD, av_max: float = AV_PRIOR_MAX_MAG,
             seed: int = 0):
    """The posterior with A_V inferred (module docstring): a copy whose draws carry A_V (`av`, mag)
    and the intrinsic histories and masses.  `posterior` must be a fit at A_V = 0 with a
    flux-calibration polynomial."""
    if posterior.calibration is None:
        raise ValueError("inferring A_V needs a fit with the flux-calibration polynomial (calibration_degree > 0)")
    if posterior.observation.av != 0:
        raise ValueError(f"inferring A_V needs a fit at A_V = 0 (the polynomial then carries the attenuation's "
                         f"shape), this one is at A_V = {posterior.observation.av}")
    if not (np.isfinite(calibration_sd) and calibration_sd > 0):
        raise ValueError(f"calibration_sd must be finite and > 0, got {calibration_sd!r}")
    if not (np.isfinite(av_max) and av_max > 0):
        raise ValueError(f"av_max must be finite and > 0, got {av_max!r}")
    obs = posterior.observation
    grid = np.arange(0.0, av_max + AV_GRID_STEP_MAG / 2, AV_GRID_STEP_MAG)
    tau = attenuation_coefficients(obs.wavelength, obs.redshift, grid, posterior.calibration.shape[1])
    log_like = av_log_likelihood(posterior.calibration, tau, calibration_sd)
    av = inverse_cdf_draws(grid, log_like, np.random.default_rng(seed))
    grey = attenuation_coefficients(obs.wavelength, obs.redshift, av, posterior.calibration.shape[1])[:, 0]  # lam
    histories = posterior.histories.copy()
    histories[:, 0] /= grey[:, None]
    config = {**posterior.config, "av_inference": {
        "prior": f"uniform 0-{av_max} mag (Calzetti A_V)", "calibration_sd": float(calibration_sd), "seed": seed,
        "method": "from the calibration polynomial's shape (sfhkit.attenuation); the fit's polynomial carries the "
                  "attenuation curve's shape, the histories are intrinsic (SFR / grey factor)"}}
    kept = av[posterior.kept]
    source = (f"inferred from the calibration polynomial's shape: {kept.mean():.3f} +- {kept.std():.3f} "
              f"(prior uniform 0-{av_max} mag, calibration sd {calibration_sd}; sfhkit.attenuation)")
    observation = replace(obs, metadata={**obs.metadata, "av_source": source})
    return replace(posterior, observation=observation, histories=histories,
                   surviving_mass_msun=posterior.surviving_mass_msun / grey, config=config, av=av)
