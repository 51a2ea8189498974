"""Star-formation and metallicity histories: (2, n_bins) arrays, channel 0 the SFR of each time
bin in Msun/yr (mass formed in the bin / bin width), channel 1 log10 Z/Zsun.

For now: parametric histories averaged over the paper's time bins, used by the demo, the tests
and the benchmarks.  Issue 3 adds the container with derived quantities.
"""

from __future__ import annotations

import numpy as np
import torch

from .cosmology import TimeBins

SFR, LOGZ = 0, 1


def sfr_shape(kind: str, t_gyr: np.ndarray, tstart_gyr: float = 0.0, tau_gyr: float = 2.0) -> np.ndarray:
    """Unnormalised SFR at cosmic times `t_gyr` for bagpipes' parametric forms:
    'constant', 'exponential' (exp(-(t - tstart)/tau)), 'delayed' ((t - tstart) exp(-(t - tstart)/tau)),
    all zero before tstart."""
    dt = np.asarray(t_gyr, dtype=float) - tstart_gyr
    on = dt >= 0
    if kind == "constant":
        shape = np.ones_like(dt)
    elif kind == "exponential":
        shape = np.exp(-np.clip(dt, 0, None) / tau_gyr)
    elif kind == "delayed":
        shape = np.clip(dt, 0, None) * np.exp(-np.clip(dt, 0, None) / tau_gyr)
    else:
        raise ValueError(f"kind must be 'constant', 'exponential' or 'delayed', got {kind!r}")
    return np.where(on, shape, 0.0)


def parametric_history(kind: str = "delayed", *, mass_formed_msun: float = 1e10, tstart_gyr: float = 1.0,
                       tau_gyr: float = 2.0, logz=0.0, time_bins: TimeBins | None = None,
                       subsamples: int = 256) -> np.ndarray:
    """(2, n_bins) history: the parametric SFR averaged over each time bin, scaled so that
    `mass_formed_msun` forms between the Big Bang and today; `logz` a scalar or per-bin array."""
    bins = time_bins or TimeBins()
    edges = bins.edges
    # Midpoint-rule average over each bin (subsamples per bin; exact for constant SFRs).
    frac = (np.arange(subsamples) + 0.5) / subsamples
    t = edges[:-1, None] + np.diff(edges)[:, None] * frac[None, :]
    sfr = sfr_shape(kind, t, tstart_gyr, tau_gyr).mean(axis=1)
    sfr *= mass_formed_msun / np.sum(sfr * bins.widths)
    return np.stack([sfr, np.broadcast_to(np.asarray(logz, dtype=float), sfr.shape)])


def example_history(time_bins: TimeBins | None = None) -> torch.Tensor:
    """A built-in example: delayed-tau SFH (tau 2 Gyr from t = 1 Gyr, 3e10 Msun formed by today)
    with metallicity rising from log Z/Zsun = -1.0 to +0.15."""
    bins = time_bins or TimeBins()
    centres = bins.centers
    logz = -1.0 + 1.15 * (1 - np.exp(-centres / 3.0)) / (1 - np.exp(-centres[-1] / 3.0))
    return torch.as_tensor(parametric_history("delayed", mass_formed_msun=3e10, logz=logz, time_bins=bins))
