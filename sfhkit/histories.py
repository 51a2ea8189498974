"""Star-formation and metallicity histories: (2, n_bins) arrays, channel 0 the SFR of each time
bin in Msun/yr (mass formed in the bin / bin width), channel 1 log10 Z/Zsun.

Parametric histories averaged over the paper's time bins (for the demo, tests and benchmarks),
and the derived quantities used to describe a set of histories: formed mass, formation times
(t50, t90), mass-weighted metallicity, burstiness and the quenched flag.  The derived quantities
take numpy arrays of shape (..., 2, n_bins) and return arrays of shape (...).
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


def formed_mass_per_bin_msun(histories, time_bins: TimeBins | None = None) -> np.ndarray:
    """Stellar mass formed in each bin (SFR x bin width), Msun, shape (..., n_bins)."""
    bins = time_bins or TimeBins()
    return np.asarray(histories)[..., SFR, :] * bins.widths


def formed_mass_msun(histories, time_bins: TimeBins | None = None) -> np.ndarray:
    """Total stellar mass formed from the Big Bang to today (not the surviving mass), Msun."""
    return formed_mass_per_bin_msun(histories, time_bins).sum(axis=-1)


def formation_time_gyr(histories, fraction: float, time_bins: TimeBins | None = None) -> np.ndarray:
    """Cosmic time (Gyr) by which `fraction` of the formed mass had formed (t50 for 0.5, t90 for 0.9).

    The SFR is constant within a bin, so the cumulative mass is linear there and the time is
    interpolated exactly.  NaN for histories that formed no mass.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    bins = time_bins or TimeBins()
    mass = formed_mass_per_bin_msun(histories, bins)
    total = mass.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cumulative = np.concatenate([np.zeros_like(total), np.cumsum(mass, axis=-1)], axis=-1) / total
    edges = bins.edges
    # First edge at which the cumulative fraction reaches `fraction`; the crossing lies in the bin before.
    k = np.argmax(cumulative >= fraction * (1 - 1e-12), axis=-1).clip(1, len(edges) - 1)
    lo = np.take_along_axis(cumulative, (k - 1)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(cumulative, k[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        step = np.clip(np.where(hi > lo, (fraction - lo) / (hi - lo), 0.0), 0.0, 1.0)
    t = edges[k - 1] + step * (edges[k] - edges[k - 1])
    return np.where(np.isfinite(cumulative).all(axis=-1) & (total[..., 0] > 0), t, np.nan)


def mass_weighted_logz(histories, time_bins: TimeBins | None = None) -> np.ndarray:
    """Formed-mass-weighted mean of log10 Z/Zsun over all bins (NaN if no mass formed)."""
    h = np.asarray(histories)
    mass = formed_mass_per_bin_msun(h, time_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (mass * h[..., LOGZ, :]).sum(axis=-1) / mass.sum(axis=-1)


def burstiness_dex(histories, min_pairs: int = 3) -> np.ndarray:
    """Scatter (standard deviation, dex) of log10 SFR between neighbouring bins:
    std over k of log10(SFR[k+1] / SFR[k]), using only pairs where both bins formed stars.
    NaN where fewer than `min_pairs` such pairs exist."""
    sfr = np.asarray(histories, dtype=float)[..., SFR, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.diff(np.log10(sfr), axis=-1)
    valid = np.isfinite(step)
    n = valid.sum(axis=-1)
    step = np.where(valid, step, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = step.sum(axis=-1) / n
        var = (np.where(valid, step - mean[..., None], 0.0) ** 2).sum(axis=-1) / (n - 1)
    return np.where(n >= min_pairs, np.sqrt(var), np.nan)


# The usual quenched cut: specific SFR of the last bin below 1e-11 /yr.
QUENCHED_SSFR_PER_YR = 1e-11


def is_quenched(histories, time_bins: TimeBins | None = None,
                ssfr_threshold_per_yr: float = QUENCHED_SSFR_PER_YR) -> np.ndarray:
    """True where the SFR of the last bin (the last ~215 Myr) divided by the total formed mass is
    below `ssfr_threshold_per_yr` (the usual log sSFR < -11 cut, with formed rather than surviving mass)."""
    h = np.asarray(histories)
    with np.errstate(invalid="ignore", divide="ignore"):
        return h[..., SFR, -1] / formed_mass_msun(h, time_bins) < ssfr_threshold_per_yr


def summary_statistics(histories, time_bins: TimeBins | None = None) -> dict[str, np.ndarray]:
    """The quantities that describe a set of histories, one value per history: log10 formed mass
    (Msun), t50 and t90 (cosmic time, Gyr), mass-weighted log10 Z/Zsun (all over the whole history,
    i.e. `observable_quantities` today) and burstiness (dex)."""
    bins = time_bins or TimeBins()
    today = observable_quantities(histories, bins.age_of_universe_gyr, bins)
    names = ("log10_formed_mass", "t50_gyr", "t90_gyr", "mass_weighted_logz")
    return {**{name: today[name] for name in names}, "burstiness_dex": burstiness_dex(np.asarray(histories, dtype=float))}


def observable_quantities(histories, age_at_z_gyr: float, time_bins: TimeBins | None = None) -> dict[str, np.ndarray]:
    """What a spectrum observed at cosmic time `age_at_z_gyr` can tell: quantities of the part of each
    history formed before then (the rest is a prediction).  Per history: log10 formed mass (Msun),
    t50 and t90 (cosmic time, Gyr), mass-weighted age at t(z) (Gyr) and mass-weighted log10 Z/Zsun.
    (The surviving stellar mass needs the SSP grid: `ForwardModel.surviving_mass_msun`.)"""
    bins = time_bins or TimeBins()
    h = np.array(histories, dtype=np.float64)
    fraction = bins.fraction_formed_before(age_at_z_gyr)
    h[..., SFR, :] *= fraction                   # mass formed before t(z), spread over each bin
    mass = formed_mass_per_bin_msun(h, bins)
    total = mass.sum(axis=-1)
    # Mean formation time of the stars of each bin formed before t(z) (the bin holding t(z) in part).
    edges = bins.edges
    formed_until = np.minimum(edges[1:], age_at_z_gyr)
    mean_time = 0.5 * (edges[:-1] + np.maximum(formed_until, edges[:-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        age = age_at_z_gyr - (mass * mean_time).sum(axis=-1) / total
        log_mass = np.log10(total)
    # (In the bin holding t(z) the interpolation spreads its formed part over the whole bin: clip.)
    return {"log10_formed_mass": log_mass,
            "t50_gyr": np.minimum(formation_time_gyr(h, 0.5, bins), age_at_z_gyr),
            "t90_gyr": np.minimum(formation_time_gyr(h, 0.9, bins), age_at_z_gyr), "mass_weighted_age_gyr": age,
            "mass_weighted_logz": mass_weighted_logz(h, bins)}
