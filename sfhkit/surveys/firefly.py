"""FIREFLY full-spectrum fits (Wilkinson et al. 2017; Neumann et al. 2022), for comparison overlays.

Two sources, one result type (`FireflyFit`):

- `read_spfly(path, hdu=1)`: FIREFLY's per-spectrum output (spFly-*.fits; FireflySpectra/firefly_release,
  python/firefly_models.py).  Each model HDU is a table (wavelength, original_data, flux_error,
  firefly_model) whose header holds the global results and, for i < ssp_number, the SSP components:
  log_age_ssp_i (log10 age/Gyr), metal_ssp_i ([Z/H]), total_mass_ssp_i (log10 Msun formed; older
  versions lack it, and formed = stellar_mass_ssp_i + mass_of_ejecta_ssp_i), stellar_mass_ssp_i
  (log10 Msun in stars and remnants), weightMass_ssp_i, weightLight_ssp_i; EBV.
  Files with several HDUs hold several IMF x library fits (IMF and MODEL in each header).
- `read_firefly_catalogue(path, plateifu=...)`: the DR17 MaNGA FIREFLY value-added catalogue
  (manga-firefly-v3_1_1-{miles,mastar}.fits; Neumann et al. 2022).  HDUs are found by name:
  GALAXY_INFO (table with PLATEIFU, MANGAID), STELLAR_MASS_VORONOI (galaxy, cell, 4:
  log10 Msun per spaxel, its error, log10 Msun of the whole cell, its error),
  STAR_FORMATION_HISTORY (galaxy, cell, SSP slot, channel: log10 age/Gyr, [Z/H], mass weight, ...),
  E(B_V)_VORONOI (galaxy, cell); -9999 (anything below -999) marks missing values.  As the paper
  does, the galaxy's history is the sum over its Voronoi cells: every cell's SSPs, weighted by the
  cell's total stellar mass.  The catalogue stores stellar (surviving) mass, not formed mass, so its
  SFHs are in surviving mass per bin and lie below a formed-mass SFH for old populations.

`FireflyFit.history(time_bins, age_at_z_gyr)` puts the components on sfhkit's time bins: a component
of age a formed at cosmic time t(z) - a, in the bin that holds that time; its mass over the bin width
is the bin's SFR (Msun/yr), and the bin's log10 Z/Zsun is the mass-weighted [Z/H] of its components
(NaN where FIREFLY put no mass).  A_V = 4.05 E(B-V) (Calzetti R_V).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dust import R_V_CALZETTI
from ._fits import open_fits, require_hdus

MISSING_BELOW = -999.0  # FIREFLY writes -9999 for undefined values


@dataclass
class FireflyFit:
    """FIREFLY's answer for one spectrum (or one MaNGA galaxy summed over its cells).

    components : dict of equal-length arrays: log_age_gyr (log10 age/Gyr), metallicity_zh ([Z/H]),
        mass_msun (formed mass for spFly files, surviving stellar mass for the catalogue),
        mass_weight, light_weight (NaN where not given)
    mass_kind : "formed" or "surviving", what `mass_msun` holds
    ebv : E(B-V) of FIREFLY's Calzetti dust (mag)
    summary : the global numbers (log10 stellar mass, mass- and light-weighted age and [Z/H], ...)
    spectrum : dict of wavelength, flux, sigma, model arrays (spFly files only)
    """

    components: dict
    mass_kind: str
    ebv: float
    redshift: float
    summary: dict = field(default_factory=dict)
    spectrum: dict | None = None
    source: str = ""

    @property
    def av(self) -> float:
        """Calzetti A_V = R_V E(B-V) with R_V = 4.05."""
        return R_V_CALZETTI * self.ebv

    def history(self, time_bins, age_at_z_gyr: float) -> np.ndarray:
        """(2, n_bins): SFR in Msun/yr of `mass_kind` mass, and mass-weighted log10 Z/Zsun (NaN in
        bins without components)."""
        age = 10 ** np.asarray(self.components["log_age_gyr"], dtype=float)
        mass = np.asarray(self.components["mass_msun"], dtype=float)
        zh = np.asarray(self.components["metallicity_zh"], dtype=float)
        good = np.isfinite(age) & np.isfinite(mass) & (mass > 0) & np.isfinite(zh)
        formed_at = np.clip(age_at_z_gyr - age[good], 0.0, age_at_z_gyr)
        index = np.clip(np.searchsorted(time_bins.edges, formed_at, side="right") - 1, 0, time_bins.n_bins - 1)
        mass_per_bin = np.bincount(index, weights=mass[good], minlength=time_bins.n_bins)
        zh_mass = np.bincount(index, weights=mass[good] * zh[good], minlength=time_bins.n_bins)
        sfr = mass_per_bin / time_bins.widths                     # widths in yr
        with np.errstate(invalid="ignore", divide="ignore"):
            logz = np.where(mass_per_bin > 0, zh_mass / mass_per_bin, np.nan)
        return np.stack([sfr, logz])


def _value(header, key):
    value = header.get(key)
    if value is None:
        return np.nan
    try:
        value = float(value)
    except (TypeError, ValueError):
        return np.nan
    return value if value > MISSING_BELOW else np.nan


def read_spfly(path, hdu: int = 1) -> FireflyFit:
    """One model HDU of a FIREFLY spFly file (see module docstring)."""
    path = Path(path)
    with open_fits(path, "FIREFLY file") as hdul:
        if not 1 <= hdu < len(hdul):
            raise ValueError(f"{path} has model HDUs 1..{len(hdul) - 1}, not {hdu}")
        header, table = hdul[hdu].header, hdul[hdu].data
        if "ssp_number" not in header or table is None or "firefly_model" not in getattr(table, "names", ()):
            raise ValueError(f"{path} HDU {hdu} is not a FIREFLY model HDU (no ssp_number / firefly_model)")
        if str(header.get("converged", "True")).strip() == "False":
            raise ValueError(f"{path} HDU {hdu}: FIREFLY's fit did not converge")
        n = int(header["ssp_number"])
        keys = {"log_age_gyr": "log_age_ssp_{}", "metallicity_zh": "metal_ssp_{}", "mass_weight": "weightMass_ssp_{}",
                "light_weight": "weightLight_ssp_{}", "total": "total_mass_ssp_{}", "stellar": "stellar_mass_ssp_{}",
                "ejecta": "mass_of_ejecta_ssp_{}"}
        components = {name: np.array([_value(header, key.format(i)) for i in range(n)]) for name, key in keys.items()}
        total, stellar, ejecta = (10 ** components.pop(name) for name in ("total", "stellar", "ejecta"))
        # Formed mass: total_mass_ssp_i; older FIREFLY versions lack it, and formed = stellar + ejecta.
        if np.isfinite(total).all():
            components["mass_msun"], mass_kind = total, "formed"
        elif np.isfinite(stellar + ejecta).all():
            components["mass_msun"], mass_kind = stellar + ejecta, "formed"
        else:
            components["mass_msun"], mass_kind = stellar, "surviving"
        summary = {key: _value(header, key) for key in
                   ("stellar_mass", "total_mass", "age_massW", "age_lightW", "metallicity_massW", "metallicity_lightW")}
        summary = {"log10_stellar_mass": summary["stellar_mass"], "log10_formed_mass": summary["total_mass"],
                   "mass_weighted_age_gyr": 10 ** summary["age_massW"], "light_weighted_age_gyr": 10 ** summary["age_lightW"],
                   "mass_weighted_zh": summary["metallicity_massW"], "light_weighted_zh": summary["metallicity_lightW"],
                   "imf": str(header.get("IMF", "")), "library": str(header.get("MODEL", ""))}
        spectrum = {"wavelength": np.asarray(table["wavelength"], dtype=float),
                    "flux": np.asarray(table["original_data"], dtype=float),
                    "sigma": np.asarray(table["flux_error"], dtype=float),
                    "model": np.asarray(table["firefly_model"], dtype=float)}
        redshift = _value(header, "redshift")
        if not np.isfinite(redshift):
            redshift = _value(hdul[0].header, "REDSHIFT")
        return FireflyFit(components, mass_kind, _value(header, "EBV"), redshift, summary, spectrum,
                          f"{path.name}[{hdu}]")


def find_spfly(spec_id: str, folder) -> Path | None:
    """The spFly file of PLATE-MJD-FIBER in `folder`, or None."""
    from .sdss import parse_spec_id

    plate, mjd, fiber = parse_spec_id(spec_id)
    path = Path(folder) / f"spFly-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"
    return path if path.exists() else None


CATALOGUE_HDUS = ("GALAXY_INFO", "STELLAR_MASS_VORONOI", "STAR_FORMATION_HISTORY", "E(B_V)_VORONOI")


def read_firefly_catalogue(path, *, plateifu: str | None = None, mangaid: str | None = None) -> FireflyFit:
    """One galaxy of the DR17 MaNGA FIREFLY catalogue, summed over its Voronoi cells (see module
    docstring).  Reads only that galaxy's rows (memory-mapped), so the 6 GB file is fine."""
    if (plateifu is None) == (mangaid is None):
        raise ValueError("give exactly one of plateifu= or mangaid=")
    path = Path(path)
    with open_fits(path, "FIREFLY catalogue", memmap=True) as hdul:
        require_hdus(hdul, CATALOGUE_HDUS, path, "the MaNGA FIREFLY catalogue")
        info = hdul["GALAXY_INFO"].data
        column, wanted = ("PLATEIFU", plateifu) if plateifu is not None else ("MANGAID", mangaid)
        ids = np.char.strip(np.asarray(info[column]).astype(str))
        rows = np.nonzero(ids == wanted.strip())[0]
        if rows.size == 0:
            raise LookupError(f"{wanted} is not in {path.name} ({column})")
        row = int(rows[0])
        cell_mass_log = np.asarray(hdul["STELLAR_MASS_VORONOI"].section[row], dtype=float)[:, 2]
        ssp = np.asarray(hdul["STAR_FORMATION_HISTORY"].section[row], dtype=float)   # (cell, slot, channel)
        ebv = np.asarray(hdul["E(B_V)_VORONOI"].section[row], dtype=float)
        redshift = float(info["REDSHIFT"][row]) if "REDSHIFT" in info.columns.names else np.nan
    cells = cell_mass_log > MISSING_BELOW
    if not cells.any():
        raise ValueError(f"{wanted}: the catalogue has no fitted cells for this galaxy")
    ssp = ssp[cells]
    valid = (ssp[..., 0] > MISSING_BELOW) & (ssp[..., 1] > MISSING_BELOW) & (ssp[..., 2] > 0)
    mass = np.where(valid, ssp[..., 2] * 10 ** cell_mass_log[cells][:, None], 0.0)
    components = {"log_age_gyr": ssp[..., 0][valid], "metallicity_zh": ssp[..., 1][valid],
                  "mass_msun": mass[valid], "mass_weight": ssp[..., 2][valid],
                  "light_weight": np.full(int(valid.sum()), np.nan)}
    good_ebv = ebv[cells][ebv[cells] > MISSING_BELOW]
    summary = {"log10_stellar_mass": float(np.log10((10 ** cell_mass_log[cells]).sum())),
               "n_cells": int(cells.sum()), column.lower(): wanted}
    return FireflyFit(components, "surviving", float(np.median(good_ebv)) if good_ebv.size else np.nan, redshift,
                      summary, None, f"{path.name}[{wanted}]")
