"""Posterior draws of one observation: histories, their spectra and residuals, derived quantities,
NetCDF round trip.

`Posterior` holds all n draws and flags the kept subset: all of them by default, or the best `keep`
by mean |residual| / sigma, as the paper (`sfhkit.sampler.kept_draws`).  Derived quantities
(`derived()`, `summary()`) are those of the part of each history formed before the observed
epoch t(z):

    log10_formed_mass       log10 Msun   stellar mass formed up to t(z)
    log10_surviving_mass    log10 Msun   of which still alive at t(z) (SSP living fraction)
    t50_gyr, t90_gyr        Gyr          cosmic time when 50 / 90 % of it had formed
    mass_weighted_age_gyr   Gyr          formed-mass-weighted age at t(z)
    mass_weighted_logz      dex          formed-mass-weighted log10 Z/Zsun

On disk (`save`/`load`) a posterior is one NetCDF-4 file with ArviZ-style groups and dimension
names (chain, draw); units are in each variable's attrs:

    /posterior               sfr (chain, draw, time_bin), log_z, the derived quantities, the
                             flux-calibration polynomial's coefficients where one was fitted, and
                             each draw's A_V (av) and velocity dispersion (vdisp, km/s) where
                             they were inferred
    /posterior_predictive    flux (chain, draw, wavelength)
    /observed_data           flux, sigma, mask (wavelength); a mock's noiseless flux, a survey's
                             pipeline model and sky, the instrument's sigma where known
    /sample_stats            chi2, mean_abs_residual, kept (chain, draw)
    /constant_data           time-bin edges, and the true history of a mock
    root attrs               redshift, av, t(z), the sampler's config (JSON), the fit's warnings
                             (JSON, sfhkit.health), sfhkit version
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ._io import atomic_path
from ._version import __version__
from .cosmology import TimeBins
from .histories import observable_quantities
from .observation import FLUX_UNIT, PER_PIXEL_METADATA, Observation

DERIVED_UNITS = {"log10_formed_mass": "log10 Msun", "log10_surviving_mass": "log10 Msun", "t50_gyr": "Gyr",
                 "t90_gyr": "Gyr", "mass_weighted_age_gyr": "Gyr", "mass_weighted_logz": "log10 Z/Zsun"}
def _json_ready(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


FORMAT = "sfhkit posterior"
FORMAT_VERSION = 1


def _numpy(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def derived_quantities(histories, age_at_z_gyr: float, time_bins: TimeBins, surviving_mass_msun) -> dict:
    """The derived quantities (names and units: DERIVED_UNITS) of physical histories (n, 2, n_bins)
    observed at cosmic time `age_at_z_gyr`, given their surviving stellar masses (n,)."""
    out = observable_quantities(histories, age_at_z_gyr, time_bins)
    with np.errstate(divide="ignore"):
        out["log10_surviving_mass"] = np.log10(np.asarray(surviving_mass_msun, dtype=float))
    return {name: out[name] for name in DERIVED_UNITS}


def true_quantities(histories, forward_model) -> dict:
    """`derived_quantities` of known histories (a mock's truth) as seen through `forward_model`."""
    import torch

    surviving = _numpy(forward_model.surviving_mass_msun(torch.as_tensor(np.asarray(histories))))
    return derived_quantities(histories, forward_model.age_at_z_gyr, forward_model.time_bins, surviving)


@dataclass
class Posterior:
    """Draws of the posterior of one observation (see module docstring)."""

    observation: Observation
    histories: np.ndarray            # (n, 2, n_bins): SFR Msun/yr, log10 Z/Zsun
    spectra: np.ndarray              # (n, n_pixels) model flux, 1e-17 erg/s/cm2/A
    chi2: np.ndarray                 # (n,) over unmasked pixels
    mean_abs_residual: np.ndarray    # (n,) mean |flux - model| / sigma over unmasked pixels
    surviving_mass_msun: np.ndarray  # (n,)
    kept: np.ndarray                 # (n,) bool
    age_at_z_gyr: float
    time_bins: TimeBins = field(default_factory=TimeBins)
    config: dict = field(default_factory=dict)
    calibration: np.ndarray | None = None  # (n, degree) flux-calibration polynomial coefficients (sfhkit.fluxcal)
    av: np.ndarray | None = None           # (n,) Calzetti A_V (mag) of each draw, where A_V was inferred
    vdisp_kms: np.ndarray | None = None    # (n,) stellar velocity dispersion (km/s) of each draw, where inferred

    @classmethod
    def from_draws(cls, observation, histories, spectra, chi2, mean_abs_residual, surviving_mass_msun, *,
                   keep: int, age_at_z_gyr: float, time_bins: TimeBins, config: dict,
                   calibration=None, av=None) -> "Posterior":
        mean_abs = _numpy(mean_abs_residual).astype(float)
        kept = np.zeros(mean_abs.size, dtype=bool)
        kept[np.argsort(mean_abs, kind="stable")[:keep]] = True
        return cls(observation, _numpy(histories).astype(float), _numpy(spectra).astype(float),
                   _numpy(chi2).astype(float), mean_abs, _numpy(surviving_mass_msun).astype(float), kept,
                   float(age_at_z_gyr), time_bins, dict(config),
                   None if calibration is None else _numpy(calibration).astype(float),
                   None if av is None else _numpy(av).astype(float))

    # -- views ----------------------------------------------------------------------------------
    @property
    def n_draws(self) -> int:
        return self.histories.shape[0]

    def samples(self, kept_only: bool = True) -> np.ndarray:
        """Histories (n, 2, n_bins) of the kept draws (or all)."""
        return self.histories[self.kept] if kept_only else self.histories

    def residuals(self, kept_only: bool = True, normalised: bool = True) -> np.ndarray:
        """(flux - model) per draw and pixel, divided by sigma when `normalised`; NaN where masked."""
        obs = self.observation
        r = obs.flux[None, :] - (self.spectra[self.kept] if kept_only else self.spectra)
        if normalised:
            r = r / obs.sigma[None, :]
        return np.where(obs.mask[None, :], r, np.nan)

    def derived(self, kept_only: bool = True) -> dict[str, np.ndarray]:
        """Derived quantities per draw (see module docstring for names and units)."""
        select = self.kept if kept_only else slice(None)
        return derived_quantities(self.histories[select], self.age_at_z_gyr, self.time_bins,
                                  self.surviving_mass_msun[select])

    def median_chi2_per_pixel(self) -> float:
        """Median over the kept draws of chi^2 / number of used pixels (1 is a fit to the noise)."""
        return float(np.median(self.chi2[self.kept]) / self.observation.n_used)

    def summary(self, kept_only: bool = True) -> dict[str, dict]:
        """Mean and standard deviation of each derived quantity, with its unit; and of A_V ("av",
        mag) and sigma_v ("vdisp_kms", km/s) where they were inferred."""
        out = {name: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "unit": DERIVED_UNITS[name]}
               for name, v in self.derived(kept_only).items()}
        if self.av is not None:
            av = self.av[self.kept] if kept_only else self.av
            out["av"] = {"mean": float(av.mean()), "std": float(av.std()), "unit": "mag"}
        if self.vdisp_kms is not None:
            vdisp = self.vdisp_kms[self.kept] if kept_only else self.vdisp_kms
            out["vdisp_kms"] = {"mean": float(vdisp.mean()), "std": float(vdisp.std()), "unit": "km/s"}
        return out

    def calibration_polynomial(self, kept_only: bool = True) -> np.ndarray | None:
        """The flux-calibration polynomial P(lambda) of each draw (n, pixels; the model spectra
        include it), or None for a fit without one."""
        if self.calibration is None:
            return None
        import torch

        from .fluxcal import legendre_basis, polynomial

        basis = legendre_basis(self.observation.wavelength, self.calibration.shape[1])
        coefficients = self.calibration[self.kept] if kept_only else self.calibration
        return polynomial(torch.as_tensor(coefficients), basis).numpy()

    def warnings(self) -> list[dict]:
        """Named warnings about this fit's health (sfhkit.health): high chi^2, masked pixels, a
        non-galaxy or active nucleus, metallicity at the library's edge, draws at the SFR cap."""
        from .health import fit_warnings

        return fit_warnings(self)

    def true_history(self) -> np.ndarray | None:
        """The true history of a mock observation, else None."""
        truth = self.observation.metadata.get("true_history")
        return None if truth is None else np.asarray(truth, dtype=float)

    # -- NetCDF ---------------------------------------------------------------------------------
    def to_datatree(self) -> xr.DataTree:
        obs = self.observation
        n, _, n_bins = self.histories.shape
        draw = {"chain": [0], "draw": np.arange(n)}
        centres = self.time_bins.centers
        bins_coord = {"time_bin": ("time_bin", centres, {"units": "Gyr", "long_name": "bin centre, cosmic time"})}
        wave_coord = {"wavelength": ("wavelength", obs.wavelength,
                                     {"units": "Angstrom", "long_name": "observed-frame vacuum wavelength"})}
        cd = ("chain", "draw")
        derived_all = self.derived(kept_only=False)
        posterior = xr.Dataset(
            {"sfr": (cd + ("time_bin",), self.histories[None, :, 0], {"units": "Msun/yr"}),
             "log_z": (cd + ("time_bin",), self.histories[None, :, 1], {"units": "log10 Z/Zsun"}),
             **{name: (cd, v[None], {"units": DERIVED_UNITS[name]}) for name, v in derived_all.items()}},
            coords={**draw, **bins_coord})
        if self.calibration is not None:
            posterior["calibration_coefficients"] = (cd + ("calibration_term",), self.calibration[None], {
                "long_name": "flux-calibration polynomial P = 1 + sum_k c_k L_k(u), Legendre L_k, u = 2 (lambda - "
                             "lambda_min) / (lambda_max - lambda_min) - 1 over observed_data's wavelengths; "
                             "term k = 1..degree (sfhkit.fluxcal)"})
        if self.av is not None:
            prior = self.config.get("av_inference", {}).get("prior", "prior not recorded")
            posterior["av"] = (cd, self.av[None], {"units": "mag", "long_name": "Calzetti A_V, inferred from the "
                                                   f"calibration polynomial's shape (sfhkit.attenuation; {prior})"})
        if self.vdisp_kms is not None:
            prior = self.config.get("vdisp_inference", {}).get("prior", "prior not recorded")
            posterior["vdisp"] = (cd, self.vdisp_kms[None], {"units": "km/s", "long_name": "stellar line-of-sight "
                                                             f"velocity dispersion, inferred (sfhkit.dispersion; {prior})"})
        predictive = xr.Dataset({"flux": (cd + ("wavelength",), self.spectra[None], {"units": FLUX_UNIT})},
                                coords={**draw, **wave_coord})
        observed = xr.Dataset({"flux": ("wavelength", obs.flux, {"units": FLUX_UNIT}),
                               "sigma": ("wavelength", obs.sigma, {"units": FLUX_UNIT}),
                               "mask": ("wavelength", obs.mask.astype(np.int8),
                                        {"long_name": "1 where the pixel was used in the fit"})},
                              coords=wave_coord)
        for name, (units, meaning) in PER_PIXEL_METADATA.items():
            if name in obs.metadata:
                observed[name] = ("wavelength", np.asarray(obs.metadata[name], dtype=float),
                                  {"units": units, "long_name": meaning})
        if obs.instrument_sigma_kms is not None:
            observed["instrument_sigma"] = ("wavelength", obs.instrument_sigma_kms,
                                            {"units": "km/s", "long_name": "instrumental line-spread sigma"})
        if obs.velocity_dispersion_kms is not None:
            observed.attrs["velocity_dispersion_kms"] = obs.velocity_dispersion_kms
        stats = xr.Dataset({"chi2": (cd, self.chi2[None], {"long_name": "chi^2 over unmasked pixels"}),
                            "mean_abs_residual": (cd, self.mean_abs_residual[None], {"units": "sigma"}),
                            "kept": (cd, self.kept[None].astype(np.int8), {"long_name": "1 for the kept draws"})},
                           coords=draw)
        constant = xr.Dataset({"time_bin_edges": ("time_bin_edge", self.time_bins.edges, {"units": "Gyr"})})
        truth = self.true_history()
        if truth is not None:
            constant["true_sfr"] = ("time_bin", truth[0], {"units": "Msun/yr"})
            constant["true_log_z"] = ("time_bin", truth[1], {"units": "log10 Z/Zsun"})
            constant = constant.assign_coords(bins_coord)
        scalars = {k: v for k, v in obs.metadata.items() if _json_ready(v)}   # arrays go in the groups above
        attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "sfhkit_version": __version__,
                 "redshift": obs.redshift, "av": obs.av, "age_at_z_gyr": self.age_at_z_gyr,
                 "cosmology": self.time_bins.cosmology.name or "", "n_time_bins": n_bins,
                 "ssp_library": str(self.config.get("ssp_library", "")),
                 "config": json.dumps(self.config), "metadata": json.dumps(scalars),
                 "warnings": json.dumps(self.warnings())}
        return xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), "posterior": posterior,
                                      "posterior_predictive": predictive, "observed_data": observed,
                                      "sample_stats": stats, "constant_data": constant})

    def save(self, path) -> Path:
        """Write the NetCDF file atomically (temporary file, then rename)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self.to_datatree().to_netcdf(tmp, engine="h5netcdf")
        return path

    @classmethod
    def load(cls, path) -> "Posterior":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no posterior file at {path}")
        try:
            tree = xr.open_datatree(path, engine="h5netcdf").load()
        except Exception as err:  # noqa: BLE001 - any reader failure means: not a posterior file
            raise ValueError(f"{path} is not a readable NetCDF-4 file ({err})") from None
        attrs = tree.attrs
        if attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not an sfhkit posterior file (format={attrs.get('format')!r})")
        if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise ValueError(f"{path} has posterior format version {attrs.get('format_version')}, this sfhkit "
                             f"reads version {FORMAT_VERSION}")
        post, obs_ds = tree["posterior"].to_dataset(), tree["observed_data"].to_dataset()
        metadata = json.loads(attrs["metadata"])
        constant = tree["constant_data"].to_dataset()
        if "true_sfr" in constant:
            metadata["true_history"] = np.stack([constant["true_sfr"].values, constant["true_log_z"].values])
        metadata.update({name: obs_ds[name].values for name in PER_PIXEL_METADATA if name in obs_ds})
        obs = Observation(obs_ds["wavelength"].values, obs_ds["flux"].values, obs_ds["sigma"].values,
                          float(attrs["redshift"]), float(attrs["av"]), mask=obs_ds["mask"].values.astype(bool),
                          metadata=metadata, velocity_dispersion_kms=obs_ds.attrs.get("velocity_dispersion_kms"),
                          instrument_sigma_kms=obs_ds["instrument_sigma"].values if "instrument_sigma" in obs_ds
                          else None)
        stats = tree["sample_stats"].to_dataset()
        histories = np.stack([post["sfr"].values[0], post["log_z"].values[0]], axis=1)
        time_bins = TimeBins(n_bins=int(attrs["n_time_bins"]))
        if not np.allclose(time_bins.edges, constant["time_bin_edges"].values):
            raise ValueError(f"{path} uses time bins that differ from this sfhkit's (cosmology "
                             f"{attrs.get('cosmology')!r})")
        return cls(obs, histories, tree["posterior_predictive"]["flux"].values[0], stats["chi2"].values[0],
                   stats["mean_abs_residual"].values[0], 10 ** post["log10_surviving_mass"].values[0],
                   stats["kept"].values[0].astype(bool), float(attrs["age_at_z_gyr"]), time_bins,
                   json.loads(attrs["config"]),
                   post["calibration_coefficients"].values[0] if "calibration_coefficients" in post else None,
                   post["av"].values[0] if "av" in post else None,
                   post["vdisp"].values[0] if "vdisp" in post else None)
