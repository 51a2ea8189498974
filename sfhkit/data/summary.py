"""Distribution summaries of a set of histories (the numbers of the comparison tables in the README):
formed mass, t50, t90, mass-weighted metallicity, burstiness and quenched fraction, in bins of
formed mass and, for the comparison with published TNG relations, of surviving stellar mass."""

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
SURVIVING_MASS_BINS_LOG_MSUN = ((8.5, 9.0), (9.0, 9.5), (9.5, 10.0), (10.0, 10.5), (10.5, 11.0), (11.0, 11.5))


def _percentiles(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {f"p{p}": None for p in PERCENTILES}
    return {f"p{p}": round(float(np.percentile(v, p)), 3) for p in PERCENTILES}


def by_surviving_mass(histories: np.ndarray, surviving_mass_msun: np.ndarray, is_satellite=None,
                      time_bins: TimeBins | None = None) -> dict:
    """The quantities published for TNG, in bins of log10 surviving stellar mass today (Msun):
    quenched fraction (sSFR = last bin's SFR / surviving mass < 1e-11 /yr), for centrals and
    satellites apart when `is_satellite` is given; median mass-weighted log Z/Zsun; median lookback
    t50 and t90 (Gyr); the star-forming main sequence (median and standard deviation of log sSFR
    of the galaxies not quenched, dex); median burstiness (dex)."""
    bins = time_bins or TimeBins()
    h = np.asarray(histories, dtype=np.float64)
    q = hist.summary_statistics(h, bins)
    log_mass = np.log10(np.asarray(surviving_mass_msun, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ssfr = np.log10(h[:, hist.SFR, -1]) - log_mass
    quenched = ~(log_ssfr >= np.log10(hist.QUENCHED_SSFR_PER_YR))
    satellite = None if is_satellite is None else np.asarray(is_satellite, dtype=bool)
    today = bins.age_of_universe_gyr
    out = {}
    for lo, hi in SURVIVING_MASS_BINS_LOG_MSUN:
        sel = (log_mass >= lo) & (log_mass < hi)
        sf = sel & ~quenched
        row = {"n": int(sel.sum()),
               "quenched_fraction": round(float(quenched[sel].mean()), 3) if sel.any() else None}
        if satellite is not None:
            for name, part in (("centrals", sel & ~satellite), ("satellites", sel & satellite)):
                row[f"quenched_fraction_{name}"] = round(float(quenched[part].mean()), 3) if part.any() else None
        row.update({"mass_weighted_logz_solar": _percentiles(q["mass_weighted_logz"][sel])["p50"],
                    "lookback_t50_gyr": _percentiles(today - q["t50_gyr"][sel])["p50"],
                    "lookback_t90_gyr": _percentiles(today - q["t90_gyr"][sel])["p50"],
                    "main_sequence_log_ssfr_per_yr": _percentiles(log_ssfr[sf])["p50"],
                    "main_sequence_scatter_dex": round(float(np.std(log_ssfr[sf])), 3) if sf.sum() > 2 else None,
                    "burstiness_dex": _percentiles(q["burstiness_dex"][sel])["p50"]})
        out[f"{lo}-{hi}"] = row
    return out


def surviving_mass_today_msun(histories: np.ndarray) -> np.ndarray:
    """Stellar mass alive today (Msun) with the default SSP grid's living fraction."""
    import torch

    from ..forward import ForwardModel
    from ..ssp import SSPGrid

    # Any wavelengths do: only the living-mass table is used.  z = 1e-3 is 1.4 Myr before today.
    model = ForwardModel(SSPGrid.default(progress=False), np.linspace(4000.0, 6000.0, 8), 1e-3)
    return model.surviving_mass_msun(torch.as_tensor(np.asarray(histories, dtype=np.float64))).numpy()


def summarise(ds: xr.Dataset, surviving_mass_msun: np.ndarray | None = None) -> dict:
    """Percentiles (16/50/84) of each quantity over the set, overall and in bins of formed mass,
    and the quenched fraction (sSFR of the last bin < 1e-11 /yr, formed mass) in the same bins;
    with `surviving_mass_msun` (per history, today) also `by_surviving_mass`."""
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
    if surviving_mass_msun is not None:
        satellite = ds["is_satellite"].values if "is_satellite" in ds else None
        out["by_log10_surviving_mass"] = by_surviving_mass(h, surviving_mass_msun, satellite, bins)
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
    print(json.dumps([summarise(ds, surviving_mass_today_msun(ds["histories"].values)) for ds in datasets], indent=1))
    return 0
