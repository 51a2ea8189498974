"""Nuisance parameters inferred with the history (beyond the paper): Calzetti A_V and the stellar
velocity dispersion sigma_v.

The paper fixes A_V; a wrong A_V or velocity dispersion biases the history.  Here they are updated
by alternating with the diffusion sampler:

1. sample the history posterior at the current (A_V, sigma_v);
2. for every kept draw h_i, evaluate the likelihood p(y | h_i, A_V, sigma_v) on a grid (flat prior
   over the grid) and draw one (A_V, sigma_v) from that conditional: a Gibbs step for the nuisance
   parameters given each history draw;
3. move (A_V, sigma_v) to the median of those draws and repeat; after `rounds` rounds, sample the
   history once more at the final values.

The (A_V, sigma_v) draws of the last round are the reported nuisance posterior.  It is conditional
on history draws made at the previous values, so it is an approximation (an alternating, Gibbs-like
scheme, not a joint sampler); `experiments.nuisance_experiment` measures what it buys on mocks.

Cheap grids: A_V enters the forward model as a per-pixel attenuation, so every grid value costs one
model call.  sigma_v is applied as a Gaussian in velocity on the observed pixels to spectra of a
model built without it (instrument and library resolution only): convolutions compose in quadrature,
so the extra sigma is sqrt(sigma_v^2 - d^2), where d^2 = max(sigma_library^2 - sigma_instrument^2, 0)
is what the instrument-only model could not subtract.  This is exact up to pixel sampling (69 km/s
for SDSS), which is why the grid starts at 80 km/s.
"""

from __future__ import annotations

import numpy as np
import torch

from .lsf import FWHM_PER_SIGMA, SPEED_OF_LIGHT_KMS, broadening_matrix

DEFAULT_AV_GRID = tuple(np.round(np.arange(0.0, 2.01, 0.1), 2))
DEFAULT_VDISP_GRID_KMS = (80.0, 110.0, 140.0, 170.0, 200.0, 230.0, 260.0, 290.0, 320.0, 350.0)


def _resolution_deficit_kms(observation, grid) -> np.ndarray:
    """d per observed pixel (km/s): library resolution the instrument-only model left unsubtracted."""
    rest = observation.wavelength / (1 + observation.redshift)
    library_fwhm = np.interp(rest, grid.vacuum_wavelength, grid.dataset["library_fwhm"].values,
                             left=np.nan, right=np.nan)
    sigma_library = np.where(np.isfinite(library_fwhm), SPEED_OF_LIGHT_KMS * library_fwhm / FWHM_PER_SIGMA / rest, 0.0)
    sigma_instrument = observation.instrument_sigma_kms if observation.instrument_sigma_kms is not None else 0.0
    return np.sqrt(np.clip(sigma_library ** 2 - sigma_instrument ** 2, 0.0, None))


def conditional_grid_draws(observation, histories, instrument_model, grid, *, av_grid=DEFAULT_AV_GRID,
                           vdisp_grid_kms=DEFAULT_VDISP_GRID_KMS, seed: int | None = None) -> dict:
    """For each history (n, 2, n_bins): log-likelihood of the observation over the (A_V, sigma_v)
    grid, using `instrument_model` (a ForwardModel of the observation built with the instrument's
    line spread but sigma_v = 0), and one (A_V, sigma_v) drawn from each history's conditional.

    Returns av (n,), vdisp_kms (n,), and log_likelihood (n, n_av, n_vdisp)."""
    av_grid = np.asarray(av_grid, dtype=float)
    vdisp_grid = np.asarray(vdisp_grid_kms, dtype=float)
    deficit = _resolution_deficit_kms(observation, grid)
    if (vdisp_grid[:, None] < deficit[None, :]).any():
        raise ValueError(f"velocity dispersions below {deficit.max():.0f} km/s cannot be reached on this spectrum "
                         "(the library's resolution is coarser there); raise the grid's lower end")
    used = observation.mask
    weight = 1.0 / observation.sigma[used] ** 2
    flux = observation.flux[used]
    histories = torch.as_tensor(np.asarray(histories), dtype=instrument_model.dtype_, device=instrument_model.device_)
    n = histories.shape[0]
    log_like = np.empty((n, av_grid.size, vdisp_grid.size))
    operators = [broadening_matrix(observation.wavelength, np.sqrt(v ** 2 - deficit ** 2)) for v in vdisp_grid]
    with torch.no_grad():
        for a, av in enumerate(av_grid):
            spectra = instrument_model(histories, av=float(av), validate=False).double().cpu().numpy()  # (n, P)
            for v, operator in enumerate(operators):
                broadened = (operator @ spectra.T).T[:, used]
                log_like[:, a, v] = -0.5 * ((flux - broadened) ** 2 * weight).sum(axis=1)
    flat = log_like.reshape(n, -1)
    probability = np.exp(flat - flat.max(axis=1, keepdims=True))
    probability /= probability.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    picks = np.array([rng.choice(flat.shape[1], p=p) for p in probability])
    a_index, v_index = np.unravel_index(picks, (av_grid.size, vdisp_grid.size))
    return {"av": av_grid[a_index], "vdisp_kms": vdisp_grid[v_index], "log_likelihood": log_like}


def sample_with_nuisance(observation, prior, grid, *, av_start: float | None = None, vdisp_start_kms: float | None = None,
                         rounds: int = 2, av_grid=DEFAULT_AV_GRID, vdisp_grid_kms=DEFAULT_VDISP_GRID_KMS,
                         n: int = 120, keep: int = 100, steps: int | None = None, round_draws: int = 40,
                         round_steps: int = 100, seed: int = 0, progress: bool = True):
    """The alternating scheme of the module docstring.  Starts from `av_start` / `vdisp_start_kms`
    (default: the observation's A_V and velocity dispersion, else 0.3 mag and 150 km/s); each
    round samples `round_draws` histories with `round_steps` steps; the final sampling uses `n`,
    `keep`, `steps`.  Returns (posterior, nuisance): nuisance holds the last round's (A_V, sigma_v)
    draws with their median and 16-84 % range, and the path of values round by round."""
    from dataclasses import replace

    from .lsf import LineSpread
    from .sampler import DEFAULT_STEPS, sample_posterior

    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    if observation.instrument_sigma_kms is None:
        raise ValueError("the nuisance mode needs the spectrum's instrumental resolution (instrument_sigma_kms)")
    av = float(observation.av if av_start is None else av_start)
    vdisp = vdisp_start_kms if vdisp_start_kms is not None else (observation.velocity_dispersion_kms or 150.0)
    instrument = LineSpread(0.0, observation.instrument_sigma_kms, observation.wavelength)
    instrument_model = observation.forward_model(grid, line_spread=instrument, device=prior.device)
    path = [{"av": av, "vdisp_kms": float(vdisp)}]
    draws = None
    for k in range(rounds):
        current = replace(observation, av=av, metadata=dict(observation.metadata))
        model = current.forward_model(grid, line_spread=current.line_spread(vdisp), device=prior.device)
        posterior = sample_posterior(current, prior, model, n=round_draws, keep=max(1, round_draws * 3 // 4),
                                     steps=round_steps, seed=seed + 1000 * (k + 1), progress=progress)
        draws = conditional_grid_draws(current, posterior.samples(), instrument_model, grid, av_grid=av_grid,
                                       vdisp_grid_kms=vdisp_grid_kms, seed=seed + k)
        av, vdisp = float(np.median(draws["av"])), float(np.median(draws["vdisp_kms"]))
        path.append({"av": av, "vdisp_kms": vdisp})
    final = replace(observation, av=av, velocity_dispersion_kms=vdisp, metadata=dict(observation.metadata))
    model = final.forward_model(grid, line_spread=final.line_spread(), device=prior.device)
    posterior = sample_posterior(final, prior, model, n=n, keep=keep, steps=steps or DEFAULT_STEPS, seed=seed,
                                 progress=progress)
    summary = {name: {"median": float(np.median(values)), "p16": float(np.percentile(values, 16)),
                      "p84": float(np.percentile(values, 84))}
               for name, values in (("av", draws["av"]), ("vdisp_kms", draws["vdisp_kms"]))}
    posterior.config["nuisance"] = {**summary, "path": path}
    return posterior, {**summary, "path": path, "av_draws": draws["av"].tolist(),
                       "vdisp_kms_draws": draws["vdisp_kms"].tolist()}
