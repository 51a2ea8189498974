"""Calzetti A_V inferred from the shape of the flux-calibration polynomial (beyond the paper).

With a free multiplicative polynomial P (sfhkit.fluxcal) a spectrum cannot tell dust from
calibration: the attenuation curve T(lambda) = 10^(-0.4 A_V k(lambda)) is smooth, so a model at any
A_V and one at another fit equally well, the polynomial taking the ratio's shape and the history's
mass its grey part.  What tells them apart is how far a survey's calibration can be off.  For a fit
at A_V = a write the data's polynomial as P = P_cal T(A_V - a) / lam (Calzetti's curve is an
exponential in A_V, so T(A_V) / T(a) = T(A_V - a)), with lam = tau_0 and tau the Legendre
coefficients of T(A_V - a) over the pixels (`attenuation_coefficients`): with a prior N(0, sd^2)
on each coefficient of the calibration part P_cal (SDSS: a few per cent), the polynomial the fit
needs is N(mu(A_V), sd^2), mu_k = tau_k / tau_0.  So (`first_pass_av`, then `infer_av`):

1. a short fit (FIRST_PASS_DRAWS draws, FIRST_PASS_STEPS steps) at A_V = 0 with the free
   polynomial (the real-spectrum default), steps 3-4 on its draws, and a = their median A_V
   (where sigma_v is inferred too, its short passes give a instead: sfhkit.dispersion);
2. the history is sampled at A_V = a with the free polynomial; each draw j has its polynomial p_j,
   which the data fix far better than sd (the continuum of 3800 pixels);
3. each draw gets an A_V from p(A_V | draw) ~ prior(A_V) N(p_j; mu(A_V), sd^2), on a fine grid;
4. its intrinsic history is its SFRs / lam(A_V_j - a): the light is scaled by lam; the
   metallicities, ages and the model spectrum are unchanged, the masses grow by -log10 lam.

Why step 1: the prior's histories are not independent of their mass (the mass-metallicity
relation), so a history sampled at A_V = 0 is the galaxy dimmed by its dust, whose lower mass the
prior ties to lower metallicities.  On 40 mocks fitted at A_V = 0 (stop 30, README) the mean log Z
bias ran +0.006 / -0.033 / -0.047 / -0.075 dex for true A_V 0-0.5 / 0.5-1 / 1-1.5 / 1.5-2 mag.  At
A_V = a the lam of step 4 is near 1, and the prior sees the galaxy's own mass.

Steps 3-4 are exact composition sampling where the history prior does not change when all SFRs
are scaled by a common factor over the range lam spans (flat in log mass, shapes independent of
mass); sfhkit's prior is not exactly that (shapes and metallicities change with mass), step 1
keeps that range small, and the mock calibration (`sfhkit calibrate --infer-av`) measures what is
left.  The polynomial's shape is exact where P_cal T is a polynomial of the fitted degree; Calzetti's curve changes formula
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
# The short fit that gives the A_V the full fit runs at (module docstring, step 1): as sigma_v's
# short passes (sfhkit.dispersion), never more draws or steps than the full fit's own.
FIRST_PASS_DRAWS = 32
FIRST_PASS_STEPS = 100


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
    (draws, degree) of fits at A_V = a and the Legendre coefficients tau (n_av, d + 1) of the
    attenuation relative to a, T(A_V - a)."""
    mean = tau[:, 1:] / tau[:, :1]                                                       # mu, (n_av, d)
    return -0.5 * ((coefficients[:, None, :] - mean[None]) ** 2).sum(-1) / calibration_sd ** 2


def should_infer_av(observation, calibration_degree: int) -> bool:
    """Whether a fit infers A_V by default: a real spectrum without a catalogue A_V (none given, no
    FIREFLY fit: sfhkit.galaxies) fitted with the calibration polynomial."""
    from .galaxies import AV_NOT_GIVEN

    return bool(calibration_degree) and observation.metadata.get("av_source") == AV_NOT_GIVEN


def first_pass_av(observation, prior, forward_model, *, n: int, steps: int, seed=0, calibration_degree: int,
                  likelihood: str = "cla", cla: str = "jacobian", calibration_sd: float = DEFAULT_CALIBRATION_SD,
                  draws: int = FIRST_PASS_DRAWS, first_steps: int = FIRST_PASS_STEPS, cancel=None):
    """Step 1 of the module docstring: the observation (or list of them, sampled in one batch, with
    `seed` one per observation) at the A_V where the full fit of `n` draws and `steps` steps runs,
    the median A_V of a short fit at A_V = 0 (`draws` draws, `first_steps` steps, never more than
    the full fit's); metadata["av_first_pass_mag"] holds it."""
    from .sampler import sample_posterior

    observations = list(observation) if isinstance(observation, (list, tuple)) else [observation]
    if any(o.av != 0 for o in observations):
        raise ValueError("the first pass of A_V inference starts from A_V = 0 (the polynomial then carries the "
                         f"attenuation's shape), got A_V = {[o.av for o in observations]}")
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(observations)
    short = sample_posterior(observations, prior, forward_model, n=min(draws, n), steps=min(first_steps, steps),
                             seed=seeds, progress=False, likelihood=likelihood, cla=cla,
                             calibration_degree=calibration_degree, cancel=cancel)
    at = []
    for o, fit, s in zip(observations, short, seeds):
        av = float(np.round(np.median(infer_av(fit, calibration_sd, seed=s).av), 3))
        at.append(replace(o, av=av, metadata={**o.metadata, "av_first_pass_mag": av}))
    return at if isinstance(observation, (list, tuple)) else at[0]


def infer_av(posterior, calibration_sd: float = DEFAULT_CALIBRATION_SD, av_max: float = AV_PRIOR_MAX_MAG,
             seed: int = 0):
    """The posterior with A_V inferred (module docstring, steps 3-4): a copy whose draws carry A_V
    (`av`, mag) and the intrinsic histories and masses.  `posterior` must be a fit with a
    flux-calibration polynomial, at A_V = a (its observation's A_V; `first_pass_av` gives a)."""
    if posterior.calibration is None:
        raise ValueError("inferring A_V needs a fit with the flux-calibration polynomial (calibration_degree > 0)")
    if not (np.isfinite(calibration_sd) and calibration_sd > 0):
        raise ValueError(f"calibration_sd must be finite and > 0, got {calibration_sd!r}")
    if not (np.isfinite(av_max) and av_max > 0):
        raise ValueError(f"av_max must be finite and > 0, got {av_max!r}")
    obs = posterior.observation
    fit_av = float(obs.av)
    if not 0 <= fit_av <= av_max:
        raise ValueError(f"the fit's A_V ({fit_av}) lies outside the prior's 0-{av_max} mag")
    grid = np.arange(0.0, av_max + AV_GRID_STEP_MAG / 2, AV_GRID_STEP_MAG)
    degree = posterior.calibration.shape[1]
    tau = attenuation_coefficients(obs.wavelength, obs.redshift, grid - fit_av, degree)
    av = inverse_cdf_draws(grid, av_log_likelihood(posterior.calibration, tau, calibration_sd),
                           np.random.default_rng(seed))
    grey = attenuation_coefficients(obs.wavelength, obs.redshift, av - fit_av, degree)[:, 0]      # lam
    histories = posterior.histories.copy()
    histories[:, 0] /= grey[:, None]
    config = {**posterior.config, "av_inference": {
        "prior": f"uniform 0-{av_max} mag (Calzetti A_V)", "calibration_sd": float(calibration_sd), "seed": seed,
        "fit_av_mag": fit_av,
        "method": "from the calibration polynomial's shape (sfhkit.attenuation); the fit at fit_av_mag (a short "
                  "first pass's median) with the polynomial carrying the shape of the attenuation relative to it, "
                  "the histories intrinsic (SFR / grey factor)"}}
    kept = av[posterior.kept]
    source = (f"inferred from the calibration polynomial's shape: {kept.mean():.3f} +- {kept.std():.3f} "
              f"(prior uniform 0-{av_max} mag, calibration sd {calibration_sd}; sfhkit.attenuation); "
              f"the histories sampled at A_V = {fit_av:.3f}")
    observation = replace(obs, metadata={**obs.metadata, "av_source": source})
    return replace(posterior, observation=observation, histories=histories,
                   surviving_mass_msun=posterior.surviving_mass_msun / grey, config=config, av=av)
