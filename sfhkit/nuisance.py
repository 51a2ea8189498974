"""Nuisance parameters inferred with the history (beyond the paper): Calzetti A_V and the stellar
velocity dispersion sigma_v.

The paper fixes A_V; a wrong A_V or velocity dispersion biases the history.  Here they are estimated
by alternating with the diffusion sampler, in `rounds` rounds:

1. A_V by profile likelihood: for each A_V on a grid (0-2 mag in steps of 0.25 in the first round,
   steps of 0.05 around the previous estimate after that), sample `round_draws` histories and take
   the median chi^2 of the draws; a parabola through the lowest point and its neighbours gives the
   estimate, and its 1-sigma error combines Delta chi^2 = 1 with the sampling noise of the medians
   (propagated through the parabola).  Changing A_V rebuilds nothing.
2. sigma_v given those draws: for every draw h_i at the estimated A_V, the likelihood over a grid
   of sigma_v (flat prior) and one sigma_v drawn from that conditional; the estimate is their
   median, the spread their 16-84 % range.
3. After the last round, the history posterior is sampled once more at the estimates.

Why not a Gibbs step for A_V too: given a history fitted at some A_V, the conditional of A_V is so
narrow (the history has already absorbed the reddening) that alternating conditionals never leave
the starting value (measured: 0.2 stays 0.2 when the truth is 0.5); the profile compares whole
posteriors at each A_V instead.  Both steps condition on fixed values of the other parameter, so
this is an empirical-Bayes estimate, not a joint posterior; `experiments.nuisance_experiment`
measures it on mocks.

sigma_v is applied as a Gaussian in velocity on the observed pixels to spectra of a model built
without it (instrument and library resolution only): convolutions compose in quadrature, so the
extra sigma is sqrt(sigma_v^2 - d^2), where d^2 = max(sigma_library^2 - sigma_instrument^2, 0) is
what the instrument-only model could not subtract.  This is exact up to pixel sampling (69 km/s for
SDSS), which is why the grid starts at 80 km/s.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .dispersion import DispersionLikelihood
from .lsf import resolution_deficit_kms

DEFAULT_AV_GRID = tuple(np.round(np.arange(0.0, 2.01, 0.1), 2))
DEFAULT_VDISP_GRID_KMS = (80.0, 110.0, 140.0, 170.0, 200.0, 230.0, 260.0, 290.0, 320.0, 350.0)


def conditional_grid_draws(observation, histories, instrument_model, grid, *, av_grid=DEFAULT_AV_GRID,
                           vdisp_grid_kms=DEFAULT_VDISP_GRID_KMS, seed: int | None = None) -> dict:
    """For each history (n, 2, n_bins): log-likelihood of the observation over the (A_V, sigma_v)
    grid, using `instrument_model` (a ForwardModel of the observation built with the instrument's
    line spread but sigma_v = 0), and one (A_V, sigma_v) drawn from each history's conditional.

    Returns av (n,), vdisp_kms (n,), and log_likelihood (n, n_av, n_vdisp)."""
    av_grid = np.asarray(av_grid, dtype=float)
    vdisp_grid = np.asarray(vdisp_grid_kms, dtype=float)
    deficit = resolution_deficit_kms(observation.wavelength, observation.redshift,
                                     observation.instrument_sigma_kms, grid)
    if (vdisp_grid[:, None] < deficit[None, :]).any():
        raise ValueError(f"velocity dispersions below {deficit.max():.0f} km/s cannot be reached on this spectrum "
                         "(the library's resolution is coarser there); raise the grid's lower end")
    log_like = np.stack([DispersionLikelihood(replace(observation, av=float(av), metadata=dict(observation.metadata)),
                                              instrument_model, grid, vdisp_grid).log_likelihood(histories)
                         for av in av_grid], axis=1)                                       # (n, n_av, n_vdisp)
    n = log_like.shape[0]
    flat = log_like.reshape(n, -1)
    probability = np.exp(flat - flat.max(axis=1, keepdims=True))
    probability /= probability.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    picks = np.array([rng.choice(flat.shape[1], p=p) for p in probability])
    a_index, v_index = np.unravel_index(picks, (av_grid.size, vdisp_grid.size))
    return {"av": av_grid[a_index], "vdisp_kms": vdisp_grid[v_index], "log_likelihood": log_like}


def _parabola_minimum(x, y, i, y_error=None):
    """Vertex of the parabola through points i-1, i, i+1 and its 1-sigma error: the curvature's
    Delta y = 1 half-width combined in quadrature with the vertex's uncertainty from the errors
    `y_error` of the y values (propagated through the fit), at most the bracket's width.  At the
    ends of the grid: the grid point and half a grid step."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if i == 0 or i == len(x) - 1:
        return float(x[i]), float(abs(x[1] - x[0]) / 2)
    a, b, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    if a <= 0:
        return float(x[i]), float(abs(x[1] - x[0]) / 2)
    vertex, error = -b / (2 * a), 1 / np.sqrt(a)
    if y_error is not None:
        # d vertex / d y_k by finite differences of the (linear in y) fit: exact for a quadratic.
        base = y[i - 1:i + 2]
        gradient = []
        for k in range(3):
            bumped = base.copy()
            bumped[k] += 1e-3
            a_k, b_k, _ = np.polyfit(x[i - 1:i + 2], bumped, 2)
            gradient.append((-b_k / (2 * a_k) - vertex) / 1e-3)
        error = np.hypot(error, np.sqrt(np.sum((np.array(gradient) * np.asarray(y_error)[i - 1:i + 2]) ** 2)))
    return float(vertex), float(min(error, x[i + 1] - x[i - 1]))   # never wider than the bracket


def sample_with_nuisance(observation, prior, grid, *, av_start: float | None = None, vdisp_start_kms: float | None = None,
                         rounds: int = 2, av_coarse_step: float = 0.25, av_max: float = 2.0,
                         vdisp_grid_kms=DEFAULT_VDISP_GRID_KMS, n: int = 120, keep: int | None = None,
                         steps: int | None = None, round_draws: int = 30, round_steps: int = 100, seed: int = 0,
                         progress: bool = True, calibration_degree: int = 0):
    """The scheme of the module docstring.  sigma_v starts at `vdisp_start_kms` (default: the
    observation's, else 150 km/s); `av_start` is only recorded as the path's start (the first
    round's A_V grid spans 0-`av_max` regardless).  Returns (posterior, nuisance): nuisance holds the
    A_V estimate and error, the sigma_v median and 16-84 % range, the A_V profile of every round and
    the path of the estimates."""
    from .lsf import LineSpread
    from .sampler import DEFAULT_STEPS, sample_posterior

    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    if observation.instrument_sigma_kms is None:
        raise ValueError("the nuisance mode needs the spectrum's instrumental resolution (instrument_sigma_kms)")
    av = float(observation.av if av_start is None else av_start)
    vdisp = float(vdisp_start_kms if vdisp_start_kms is not None else (observation.velocity_dispersion_kms or 150.0))
    instrument = LineSpread(0.0, observation.instrument_sigma_kms, observation.wavelength)
    instrument_model = observation.forward_model(grid, line_spread=instrument, device=prior.device)
    models = {}     # sigma_v -> forward model: rounds often keep sigma_v, and a build takes seconds

    def model_at(sigma_v):
        if sigma_v not in models:
            models[sigma_v] = observation.forward_model(grid, line_spread=observation.line_spread(sigma_v),
                                                        device=prior.device)
        return models[sigma_v]

    path, profiles = [{"av": av, "vdisp_kms": vdisp}], []
    av_error, vdisp_draws = np.nan, np.array([vdisp])
    for k in range(rounds):
        if k == 0:
            av_grid = np.arange(0.0, av_max + 1e-9, av_coarse_step)
        else:
            fine = av_coarse_step / 5
            av_grid = np.clip(av + fine * np.arange(-2, 3), 0.0, av_max)
            av_grid = np.unique(av_grid)
        model = model_at(vdisp)
        chi2, chi2_error, draws_at = [], [], []
        for a in av_grid:
            current = replace(observation, av=float(a), metadata=dict(observation.metadata))
            post = sample_posterior(current, prior, model, n=round_draws, keep=round_draws, steps=round_steps,
                                    seed=seed + 1000 * (k + 1), progress=False, calibration_degree=calibration_degree)
            chi2.append(float(np.median(post.chi2)))
            # Standard error of a median, sqrt(pi/2) sigma / sqrt(N), with sigma from the MAD: a few
            # diverged draws have chi^2 many orders of magnitude above the rest.
            mad_sigma = 1.4826 * np.median(np.abs(post.chi2 - np.median(post.chi2)))
            chi2_error.append(float(1.2533 * mad_sigma / np.sqrt(post.chi2.size)))
            draws_at.append(post.samples())
        chi2 = np.array(chi2)
        best = int(np.argmin(chi2))
        av, av_error = _parabola_minimum(av_grid, chi2, best, chi2_error)
        av = float(np.clip(av, 0.0, av_max))
        profiles.append({"av": av_grid.round(4).tolist(), "median_chi2": chi2.round(2).tolist()})
        at_av = replace(observation, av=av, metadata=dict(observation.metadata))
        conditional = conditional_grid_draws(at_av, draws_at[best], instrument_model, grid, av_grid=[av],
                                             vdisp_grid_kms=vdisp_grid_kms, seed=seed + k)
        vdisp_draws = conditional["vdisp_kms"]
        vdisp = float(np.median(vdisp_draws))
        path.append({"av": av, "vdisp_kms": vdisp})
        if progress:
            print(f"nuisance round {k + 1}/{rounds}: A_V = {av:.3f} +- {av_error:.3f}, sigma_v = {vdisp:.0f} km/s",
                  flush=True)
    final = replace(observation, av=av, velocity_dispersion_kms=vdisp, metadata=dict(observation.metadata))
    posterior = sample_posterior(final, prior, model_at(vdisp), n=n, keep=keep, steps=steps or DEFAULT_STEPS, seed=seed,
                                 progress=progress, calibration_degree=calibration_degree)
    summary = {"av": {"estimate": av, "error": av_error},
               "vdisp_kms": {"median": vdisp, "p16": float(np.percentile(vdisp_draws, 16)),
                             "p84": float(np.percentile(vdisp_draws, 84))},
               "path": path, "av_profiles": profiles}
    posterior.config["nuisance"] = summary
    return posterior, summary
