"""Stellar velocity dispersion sigma_v inferred with the history (beyond the paper), for spectra
without a catalogue value (DESI, a specutils spectrum, MaNGA; SDSS and BOSS files carry VDISP).

A model is built once with the instrument's line spread alone (sigma_v = 0).  A Gaussian of
sqrt(sigma_v^2 - d^2) in velocity on the observed pixels then gives the model at any sigma_v,
d^2 = max(sigma_library^2 - sigma_instrument^2, 0) being what the instrument-only model could not
subtract (sfhkit.lsf.resolution_deficit_kms): convolutions add in quadrature.  Where sigma_v < d
the pixel is left at the library's resolution, as a model built at sigma_v does.  On SDSS pixels
(69 km/s) this matches a model built at sigma_v to chi^2 < 1.1 over 3800 pixels at S/N 20 for
sigma_v = 40-350 km/s (tests/test_dispersion.py holds the check at 80 and 250 km/s).

`sample_with_vdisp` samples in two stages:

1. short passes (FIRST_PASS_DRAWS draws, FIRST_PASS_STEPS steps), the first with the
   instrument-only model: for each draw h_j the likelihood over a grid of sigma_v
   (`DispersionLikelihood`; the calibration polynomial solved again at every sigma_v) gives the
   conditional p(sigma_v | h_j, data), flat prior on VDISP_PRIOR_KMS; one sigma_v per draw; their
   median s_k; the next pass at s_k (the instrument-only model broadened: `ForwardModel.broadened`),
   until s_k moves by at most SETTLED_KMS (MAX_SHORT_PASSES at most).  One pass is not enough:
   histories fitted with lines too narrow take weaker lines, whose conditionals then ask for less
   broadening (on spec-0266-51602-0614: 208, 264, 268, 268 km/s over four passes; SDSS's VDISP 254 +- 7);
2. the full fit at the last s_k, and one sigma_v per draw from its conditional, as in 1.

With `av_from_short_passes` (A_V inferred as well, sfhkit.attenuation) the same short passes give
the A_V the full fit runs at: the first at A_V = 0, each next one at the median A_V a_k of the last
pass's draws (their conditionals, sfhkit.attenuation.infer_av) as well as at s_k, so A_V needs no
short fit of its own (`first_pass_av`), which saves one of the three or four short passes a fit
with both inferred ran before.  The A_V of a pass at the instrument's line spread alone is off
(the history takes other lines; on `sfhkit bench vdisp` 0.96 mag for a true 0.6); later passes,
at s_k, correct it.

Stage 2 is composition sampling: exact where the history posterior does not change over the range
of sigma_v the data allow, which holds well because broadening keeps a line's equivalent width
(the history sets the line strengths, sigma_v their widths).  The mock calibration
(`sfhkit calibrate --infer-vdisp`) measures what the approximation costs.  The conditionals are
evaluated every VDISP_GRID_STEP_KMS and interpolated (cubic spline of the log-likelihood) onto
VDISP_DRAW_STEP_KMS for the draws.

Why not one fit at a default sigma_v: a 300 km/s galaxy fitted at 150 km/s gets its history from
lines of the wrong width; the full fit runs at the data's own width.  Why not diffuse
sigma_v with the history: the same reason as A_V's (sfhkit.attenuation): draws along a ridge that
does not settle.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ._grid_draws import inverse_cdf_draws
from .lsf import broadening_matrix, resolution_deficit_kms

# The sigma_v prior: uniform on this range (km/s).  Below ~40 km/s SDSS's 69 km/s pixels no longer
# resolve the broadening; 450 km/s is above the largest galaxy dispersions (brightest cluster galaxies).
VDISP_PRIOR_KMS = (40.0, 450.0)
VDISP_GRID_STEP_KMS = 5.0
VDISP_DRAW_STEP_KMS = 0.5
FIRST_PASS_DRAWS = 32
FIRST_PASS_STEPS = 100
MAX_SHORT_PASSES = 3       # short passes at most before the full fit
SETTLED_KMS = 5.0          # sigma_v has settled when a short pass moves it by no more than this


def should_infer_vdisp(observation, line_spread: bool = True) -> bool:
    """Whether a fit infers sigma_v by default: the spectrum has no catalogue velocity dispersion,
    its instrumental resolution is known, and the fit broadens the model at all."""
    return bool(line_spread) and observation.velocity_dispersion_kms is None \
        and observation.instrument_sigma_kms is not None


def vdisp_grid_kms(low: float = VDISP_PRIOR_KMS[0], high: float = VDISP_PRIOR_KMS[1],
                   step: float = VDISP_GRID_STEP_KMS) -> np.ndarray:
    """The sigma_v values (km/s) where the conditionals are evaluated."""
    return np.arange(low, high + step / 2, step)


class DispersionLikelihood:
    """The likelihood of sigma_v given histories, for one observation (module docstring).

    `instrument_model` is a ForwardModel of the observation with the instrument's line spread and
    sigma_v = 0; `vdisp_kms` the evenly spaced grid where the likelihood is evaluated (default
    `vdisp_grid_kms()`).  With `calibration_degree` the polynomial (sfhkit.fluxcal) is solved anew
    per draw and sigma_v: the profile likelihood, as the sampler's."""

    def __init__(self, observation, instrument_model, grid, vdisp_kms=None, calibration_degree: int = 0):
        self.observation, self.instrument_model = observation, instrument_model
        self.vdisp_kms = vdisp_grid_kms() if vdisp_kms is None else np.asarray(vdisp_kms, dtype=float)
        self.calibration_degree = int(calibration_degree)
        self.deficit_kms = resolution_deficit_kms(observation.wavelength, observation.redshift,
                                                  observation.instrument_sigma_kms, grid)
        self._operators = [broadening_matrix(observation.wavelength, self.extra_sigma_kms(v)) for v in self.vdisp_kms]

    def extra_sigma_kms(self, vdisp_kms: float) -> np.ndarray:
        """Per pixel, the Gaussian sigma (km/s) that takes the instrument-only model to `vdisp_kms`."""
        return np.sqrt(np.clip(vdisp_kms ** 2 - self.deficit_kms ** 2, 0.0, None))

    def model_at(self, vdisp_kms: float):
        """The observation's forward model at sigma_v = `vdisp_kms` (ForwardModel.broadened)."""
        return self.instrument_model.broadened(self.extra_sigma_kms(vdisp_kms),
                                               self.observation.line_spread(float(vdisp_kms)))

    def log_likelihood(self, histories, av: float | None = None) -> np.ndarray:
        """(n, n_vdisp): log-likelihood (up to a constant) of each history (n, 2, n_bins) at each
        sigma_v of the grid, at `av` (mag; default the observation's A_V)."""
        from .fluxcal import legendre_basis, polynomial, solve_coefficients

        obs, model = self.observation, self.instrument_model
        histories = torch.as_tensor(np.asarray(histories), dtype=model.dtype_, device=model.device_)
        with torch.no_grad():
            spectra = model(histories, av=float(obs.av if av is None else av), validate=False).double().cpu().numpy()
        weight = np.where(obs.mask, 1.0 / obs.sigma ** 2, 0.0)
        flux = np.where(obs.mask, obs.flux, 0.0)
        if self.calibration_degree:
            basis = legendre_basis(obs.wavelength, self.calibration_degree)
            flux_t, weight_t = torch.as_tensor(flux)[None], torch.as_tensor(weight)[None]
        log_like = np.empty((spectra.shape[0], self.vdisp_kms.size))
        for v, operator in enumerate(self._operators):
            broadened = np.asarray((operator @ spectra.T).T)
            if self.calibration_degree:
                broadened = torch.as_tensor(broadened)
                broadened = (broadened * polynomial(solve_coefficients(broadened, flux_t, weight_t, basis),
                                                    basis)).numpy()
            log_like[:, v] = -0.5 * (((flux - broadened) ** 2) * weight).sum(axis=1)
        return log_like

    def draws(self, histories, rng: np.random.Generator, av: float | None = None) -> np.ndarray:
        """(n,) one sigma_v (km/s) per history from its conditional at `av` (mag; default the
        observation's A_V): the log-likelihood's cubic spline on a VDISP_DRAW_STEP_KMS grid (flat
        prior over the grid's range), then its inverse CDF."""
        from scipy.interpolate import CubicSpline

        grid = self.vdisp_kms
        fine = np.arange(grid[0], grid[-1] + VDISP_DRAW_STEP_KMS / 2, VDISP_DRAW_STEP_KMS)
        return inverse_cdf_draws(fine, CubicSpline(grid, self.log_likelihood(histories, av), axis=1)(fine), rng)


def sample_with_vdisp(observation, prior, grid, *, n: int = 120, keep: int | None = None, steps: int | None = None,
                      seed: int = 0, calibration_degree: int = 0, likelihood: str = "cla", cla: str = "jacobian",
                      first_pass_draws: int = FIRST_PASS_DRAWS, first_pass_steps: int = FIRST_PASS_STEPS,
                      instrument_model=None, av_from_short_passes: bool = False,
                      calibration_sd: float | None = None, callback=None, cancel=None, progress: bool = True):
    """The two stages of the module docstring.  Returns the posterior of the full fit, whose
    draws carry sigma_v (`vdisp_kms`, km/s); its observation holds the last s_k, the value the histories
    were sampled at, and says so in metadata["velocity_dispersion_source"].  With
    `av_from_short_passes` (the observation at A_V = 0, `calibration_degree` > 0) the short passes
    also give the A_V the full fit runs at (module docstring), held in the observation's A_V and
    metadata["av_first_pass_mag"]; A_V is then inferred from the returned fit by
    sfhkit.attenuation.infer_av, with `calibration_sd` (default its DEFAULT_CALIBRATION_SD).  `instrument_model`: the
    observation's ForwardModel with the instrument's line spread alone, where one is at hand (a
    build takes seconds); default: built here.  `callback` and `cancel` go to the full fit's
    sample_posterior (`cancel` to the short passes' too)."""
    from .attenuation import DEFAULT_CALIBRATION_SD, infer_av
    from .sampler import DEFAULT_STEPS, sample_posterior

    if observation.instrument_sigma_kms is None:
        raise ValueError("inferring sigma_v needs the spectrum's instrumental resolution (instrument_sigma_kms): "
                         "without it the line widths cannot be split into the instrument's and the stars'")
    if observation.velocity_dispersion_kms is not None:
        raise ValueError(f"the observation has a velocity dispersion ({observation.velocity_dispersion_kms} km/s); "
                         "set it to None to infer one")
    if av_from_short_passes and (observation.av != 0 or not calibration_degree):
        raise ValueError("A_V from the short passes needs the observation at A_V = 0 and the calibration polynomial "
                         f"(got A_V = {observation.av}, calibration_degree = {calibration_degree})")
    rng = np.random.default_rng([seed, 17])
    if instrument_model is None:
        instrument_model = observation.forward_model(grid, line_spread=observation.line_spread(0.0),
                                                     device=prior.device)
    dispersion = DispersionLikelihood(observation, instrument_model, grid, calibration_degree=calibration_degree)

    def fit(obs, model, draws, n_steps, kept, show, report=None):
        return sample_posterior(obs, prior, model, n=draws, keep=kept, steps=n_steps, seed=seed, progress=show,
                                likelihood=likelihood, cla=cla, calibration_degree=calibration_degree,
                                callback=report, cancel=cancel)

    steps = steps or DEFAULT_STEPS
    calibration_sd = DEFAULT_CALIBRATION_SD if calibration_sd is None else calibration_sd
    first_pass_draws, first_pass_steps = min(first_pass_draws, n), min(first_pass_steps, steps)   # never above the fit
    path_kms, path_av, model = [], [float(observation.av)], instrument_model    # short passes until sigma_v settles
    for _ in range(MAX_SHORT_PASSES):
        at = replace(observation, av=path_av[-1], velocity_dispersion_kms=path_kms[-1] if path_kms else None,
                     metadata=dict(observation.metadata))
        short = fit(at, model, first_pass_draws, first_pass_steps, None, False)
        path_kms.append(float(np.round(np.median(dispersion.draws(short.histories, rng, av=at.av)))))
        if av_from_short_passes:
            path_av.append(float(np.round(np.median(infer_av(short, calibration_sd, seed=seed).av), 3)))
        if len(path_kms) > 1 and abs(path_kms[-1] - path_kms[-2]) <= SETTLED_KMS:
            break
        model = dispersion.model_at(path_kms[-1])
    first_kms, fit_av = path_kms[-1], path_av[-1]
    if progress:
        print(f"sigma_v, short passes ({first_pass_draws} draws): {' -> '.join(f'{v:.0f}' for v in path_kms)} km/s"
              + (f"; A_V {' -> '.join(f'{a:.2f}' for a in path_av)} mag" if av_from_short_passes else "")
              + "; the full fit at the last", flush=True)
    metadata = dict(observation.metadata, **({"av_first_pass_mag": fit_av} if av_from_short_passes else {}))
    at_first = replace(observation, av=fit_av, velocity_dispersion_kms=first_kms, metadata=metadata)
    posterior = fit(at_first, dispersion.model_at(first_kms), n, steps, keep, progress, callback)
    vdisp = dispersion.draws(posterior.histories, rng, av=fit_av)
    kept = vdisp[posterior.kept]
    low, high = VDISP_PRIOR_KMS
    posterior.observation.metadata["velocity_dispersion_source"] = (
        f"inferred: {kept.mean():.0f} +- {kept.std():.0f} km/s (prior uniform {low:.0f}-{high:.0f} km/s; "
        f"sfhkit.dispersion); the histories sampled at {first_kms:.0f} km/s")
    config = {**posterior.config, "vdisp_inference": {
        "prior": f"uniform {low:.0f}-{high:.0f} km/s",
        "short_passes": {"draws": first_pass_draws, "steps": first_pass_steps, "medians_kms": path_kms,
                         **({"av_medians_mag": path_av} if av_from_short_passes else {})},
        "grid_step_kms": VDISP_GRID_STEP_KMS,
        "method": "short passes until sigma_v settles, then the full fit; per draw the conditional of sigma_v given its history (sfhkit.dispersion)"}}
    return replace(posterior, config=config, vdisp_kms=vdisp)
