"""The paper's experiments as functions, shared by the command line and the notebooks."""

from __future__ import annotations

import numpy as np


def mock_experiment(index: int = 2122, *, redshift: float = 0.05, av: float = 0.2, snr: float = 50.0,
                    n: int = 120, keep: int = 100, steps: int | None = None, likelihood: str = "cla",
                    cla: str = "jacobian", seed: int = 0, device: str = "cpu", progress: bool = True):
    """The paper's mock experiment: test-set history `index` observed at `redshift`, `av` and `snr`
    on SDSS-like wavelengths (noise sigma = mean flux / SNR) -> posterior with the embedded prior.

    Returns (posterior, report): report holds the run time, the median chi^2 per pixel of the kept
    draws and every derived quantity's posterior mean and std beside its true value."""
    from .data import load_histories
    from .forward import ForwardModel
    from .observation import mock_observation, sdss_wavelength
    from .posterior import true_quantities
    from .prior import Prior
    from .sampler import DEFAULT_STEPS, sample_posterior
    from .ssp import SSPGrid

    test = load_histories("test")
    if not 0 <= index < test.sizes["galaxy"]:
        raise ValueError(f"index must be in [0, {test.sizes['galaxy']}), got {index}")
    truth = test.histories.values[index]
    model = ForwardModel(SSPGrid.default(progress=progress), sdss_wavelength(), redshift=redshift, av=av, device=device)
    obs = mock_observation(truth, model, snr=snr, seed=seed,
                           metadata={"test_index": index, "galaxy_id": int(test.galaxy_id.values[index])})
    posterior = sample_posterior(obs, Prior.default(device), model, n=n, keep=keep, likelihood=likelihood, cla=cla,
                                 steps=steps or DEFAULT_STEPS, seed=seed, progress=progress)
    true_values = true_quantities(truth, model)
    report = {"seconds": posterior.config["seconds"], "median_chi2_per_pixel": posterior.median_chi2_per_pixel(),
              "derived": {name: {**value, "truth": float(true_values[name])}
                          for name, value in posterior.summary().items()}}
    return posterior, report


def real_experiment(observation, *, mask_lines: bool = True, mask_sky: bool = True, ranges=(), rest_ranges=(),
                    line_spread: bool = True, velocity_dispersion_kms: float | None = None, n: int = 120,
                    keep: int = 100, steps: int | None = None, likelihood: str = "cla", cla: str = "jacobian",
                    seed: int = 0, device: str = "cpu", prior=None, grid=None, progress: bool = True):
    """A real spectrum -> posterior with the embedded prior: emission-line, sky and user masks
    (sfhkit.lines.apply_masks), the line-spread function of the spectrum's velocity dispersion
    (or `velocity_dispersion_kms`) and instrument unless `line_spread` is False, A_V as the
    observation holds it.

    Returns (posterior, report): report holds the run time, the median chi^2 per pixel, the
    skewness of the posterior-median residuals, the masks and the derived quantities."""
    from scipy.stats import skew

    from .lines import apply_masks
    from .prior import Prior
    from .sampler import DEFAULT_STEPS, sample_posterior
    from .ssp import SSPGrid

    obs = apply_masks(observation, lines=mask_lines, sky=mask_sky, ranges=ranges, rest_ranges=rest_ranges)
    spread = obs.line_spread(velocity_dispersion_kms) if line_spread else None
    model = obs.forward_model(grid or SSPGrid.default(progress=progress), line_spread=spread, device=device)
    posterior = sample_posterior(obs, prior or Prior.default(device), model, n=n, keep=keep, likelihood=likelihood,
                                 cla=cla, steps=steps or DEFAULT_STEPS, seed=seed, progress=progress)
    posterior.config["line_spread"] = None if spread is None else {
        "velocity_dispersion_kms": spread.velocity_dispersion_kms,
        "median_instrument_sigma_kms": float(np.median(spread.instrument_sigma_kms))}
    median_residual = np.nanmedian(posterior.residuals(), axis=0)[obs.mask]
    report = {"source": obs.metadata.get("source"), "redshift": obs.redshift, "av": obs.av,
              "seconds": posterior.config["seconds"], "n_used_pixels": obs.n_used,
              "median_chi2_per_pixel": posterior.median_chi2_per_pixel(),
              "residual_skewness": float(skew(median_residual)),
              "line_spread": posterior.config["line_spread"], "masks": obs.metadata["masks"],
              "derived": posterior.summary()}
    return posterior, report
