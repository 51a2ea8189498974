"""Distribution summaries of a set of histories (the numbers of the comparison table in the README):
formed mass, t50, t90, mass-weighted metallicity, burstiness and quenched fraction."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .. import histories as hist
from ..cosmology import TimeBins

PERCENTILES = (16, 50, 84)
# The summary's keys say their units in full.
UNIT_NAMES = {"log10_formed_mass": "log10_formed_mass_msun", "mass_weighted_logz": "mass_weighted_logz_solar"}
MASS_BINS_LOG_MSUN = ((5.0, 8.0), (8.0, 9.0), (9.0, 10.0), (10.0, 10.5), (10.5, 11.0), (11.0, 13.0))


def _percentiles(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {f"p{p}": None for p in PERCENTILES}
    return {f"p{p}": round(float(np.percentile(v, p)), 3) for p in PERCENTILES}


def summarise(ds: xr.Dataset) -> dict:
    """Percentiles (16/50/84) of each quantity over the set, overall and in bins of formed mass,
    and the quenched fraction (sSFR of the last bin < 1e-11 /yr, formed mass) in the same bins."""
    h = ds["histories"].values.astype(np.float64)
    bins = TimeBins(n_bins=h.shape[-1])
    quantities = {UNIT_NAMES.get(k, k): v for k, v in hist.summary_statistics(h, bins).items()}
    quenched = hist.is_quenched(h, bins)
    log_mass = quantities["log10_formed_mass_msun"]
    out = {"file_source": ds.attrs.get("source", ""), "split": ds.attrs.get("split", ""),
           "n_galaxies": int(h.shape[0]),
           "all": {**{k: _percentiles(v) for k, v in quantities.items()},
                   "quenched_fraction": round(float(quenched.mean()), 3),
                   "fraction_of_bins_empty": round(float((h[:, 0] == 0).mean()), 3)},
           "by_log10_formed_mass": {}}
    for lo, hi in MASS_BINS_LOG_MSUN:
        sel = (log_mass >= lo) & (log_mass < hi)
        out["by_log10_formed_mass"][f"{lo}-{hi}"] = {
            "n": int(sel.sum()),
            **{k: _percentiles(v[sel])["p50"] for k, v in quantities.items() if k != "log10_formed_mass_msun"},
            "quenched_fraction": round(float(quenched[sel].mean()), 3) if sel.any() else None,
        }
    if "is_satellite" in ds:  # for the comparison with Joshi et al. (2021), TNG50 dwarfs 1e7-1e10 Msun
        dwarfs = (log_mass >= 7) & (log_mass < 10)
        lookback_t90 = bins.age_of_universe_gyr - quantities["t90_gyr"]
        satellite = ds["is_satellite"].values.astype(bool)
        out["dwarfs_1e7_1e10_lookback_t90_gyr"] = {
            "centrals": _percentiles(lookback_t90[dwarfs & ~satellite]),
            "satellites": _percentiles(lookback_t90[dwarfs & satellite])}
    return out


def main(args) -> int:
    """`sfhkit data summary FILE...`: print the summaries as JSON."""
    from .embedded import load_histories
    from .store import read_histories

    datasets = [read_histories(p) for p in args.files] if args.files else [load_histories("test")]
    print(json.dumps([summarise(ds) for ds in datasets], indent=1))
    return 0
