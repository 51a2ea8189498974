"""A second family of histories that the prior never saw, for out-of-distribution calibration
(`sfhkit calibrate --truths parametric`): parametric star-formation histories with stochastic
bursts and a closed-box-like enrichment.  Not a galaxy-formation model, and not meant to be
realistic in detail: its histories differ from the TNG-calibrated stand-in in shape (smooth
delayed-tau rise, sharp quenching, isolated single-bin bursts) and in how metallicity follows
mass, so that a posterior's coverage on them shows what a wrong prior costs.

Per history (all draws independent, from one seeded numpy generator):

* log10 formed mass uniform in [8, 11.5] (Msun);
* a delayed-tau SFR, SFR(t) ~ (t - t0) exp(-(t - t0) / tau), starting at t0 ~ U(0.2, 3) Gyr,
  tau log-uniform in [0.3, 10] Gyr;
* with probability 1/2, quenching at t_q ~ U(t0 + 1 Gyr, today): the SFR falls by exp(-(t - t_q) / tau_q)
  after it, tau_q log-uniform in [0.1, 1] Gyr;
* a Poisson number (mean 3) of bursts, each adding a mass fraction log-uniform in [0.01, 0.3] of
  the smooth history to one time bin drawn uniformly after t0;
* metallicity Z(t) = Z_final F(t)^gamma (F the fraction of the mass formed by the bin's centre,
  gamma ~ U(0.3, 1): enrichment that tracks the mass formed, as in a leaky closed box), with
  log10 Z_final/Zsun = clip(-0.3 + 0.3 (log M - 10), -1.5, 0.3) + N(0, 0.15) (a stellar
  mass-metallicity relation of about the shape of Gallazzi et al. 2005's, independent of the
  stand-in's Zahid et al. 2014 prescription), clipped to [-2.5, 0.45]; empty bins get the store's
  empty-bin value (Z = 1e-11).
"""

from __future__ import annotations

import numpy as np

from ..cosmology import TimeBins
from .store import EMPTY_BIN_LOGZ

LOG_MASS_RANGE = (8.0, 11.5)         # log10 Msun formed
BURSTS_PER_HISTORY = 3.0             # Poisson mean
QUENCHED_FRACTION = 0.5


def parametric_histories(n: int, seed: int = 0, time_bins: TimeBins | None = None) -> np.ndarray:
    """`n` histories (n, 2, n_bins): SFR (Msun/yr) and log10 Z/Zsun (module docstring)."""
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    bins = time_bins or TimeBins()
    rng = np.random.default_rng(seed)
    today = bins.age_of_universe_gyr
    t = bins.centers                                                            # Gyr
    out = np.empty((int(n), 2, bins.n_bins))
    for k in range(int(n)):
        log_mass = rng.uniform(*LOG_MASS_RANGE)
        t0 = rng.uniform(0.2, 3.0)
        tau = np.exp(rng.uniform(np.log(0.3), np.log(10.0)))
        age = np.clip(t - t0, 0.0, None)
        sfr = age * np.exp(-age / tau)
        if rng.random() < QUENCHED_FRACTION:
            t_q = rng.uniform(t0 + 1.0, today)
            tau_q = np.exp(rng.uniform(np.log(0.1), np.log(1.0)))
            sfr = sfr * np.exp(-np.clip(t - t_q, 0.0, None) / tau_q)
        mass = sfr * bins.widths
        after_start = np.flatnonzero(t > t0)
        for _ in range(rng.poisson(BURSTS_PER_HISTORY)):
            mass[rng.choice(after_start)] += np.exp(rng.uniform(np.log(0.01), np.log(0.3))) * mass.sum()
        mass *= 10.0 ** log_mass / mass.sum()
        fraction_at_centre = (np.cumsum(mass) - 0.5 * mass) / mass.sum()
        log_z_final = np.clip(-0.3 + 0.3 * (log_mass - 10.0), -1.5, 0.3) + rng.normal(0.0, 0.15)
        with np.errstate(divide="ignore"):
            log_z = np.clip(log_z_final + rng.uniform(0.3, 1.0) * np.log10(fraction_at_centre), -2.5, 0.45)
        out[k, 0] = mass / bins.widths
        out[k, 1] = np.where(mass > 0, log_z, EMPTY_BIN_LOGZ)
    return out
