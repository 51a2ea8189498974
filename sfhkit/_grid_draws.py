"""One draw per row from densities tabulated on a grid (A_V: sfhkit.attenuation, sigma_v:
sfhkit.dispersion)."""

from __future__ import annotations

import numpy as np


def inverse_cdf_draws(values: np.ndarray, log_density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(rows,) one draw per row of `log_density` (rows, n_values), a density known up to a constant
    on the evenly spaced `values`: the inverse CDF of the grid at one uniform number per row, spread
    uniformly within the grid cell and kept inside [values[0], values[-1]]."""
    values = np.asarray(values, dtype=float)
    step = values[1] - values[0]
    probability = np.exp(log_density - log_density.max(axis=1, keepdims=True))
    probability /= probability.sum(axis=1, keepdims=True)
    u = rng.random(probability.shape[0])
    cdf = np.cumsum(probability, axis=1)
    index = np.minimum((cdf < u[:, None]).sum(axis=1), values.size - 1)
    jitter = step * (rng.random(probability.shape[0]) - 0.5)
    return np.clip(values[index] + jitter, values[0], values[-1])
