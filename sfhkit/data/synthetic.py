"""An embedded, TNG-calibrated **stand-in** for the TNG50 training set.  It is not TNG50.

Each history is made in five stated steps, reproducibly from a seed:

1. Halo: log10 M_halo(z=0) / Msun flat in [10, 12], then falling as M_halo**-0.9 up to 14 (the
   slope of the halo mass function near 1e12 Msun; flat in log M_halo below, so that dwarfs and
   SDSS-mass galaxies are both well represented: the stellar masses span about 1e6-1e11 Msun).
   30 % are satellites.  Mass assembly histories from diffmah's population model (diffmahpop:
   centrals or satellites).  (Before issue 16 the whole range was flat: half the halos were above
   1e12 Msun, and diffstar's flat stellar-to-halo relation there piled quenched galaxies of
   massive halos up at 1e10-1e11 Msun of stars.)
2. Smooth SFH: diffstar's population model with the parameters fitted to IllustrisTNG
   (diffstar.diffstarpop.SIMULATION_FIT_PARAMS["tng"]), which gives main-sequence and quenched
   diffstar histories given the halo (satellites quench with diffstarpop's satellite model:
   infall at the halo's peak-mass time, log10 M_sub/M_host at infall uniform in [-2.5, -0.5]).
   Which of the two a galaxy takes is drawn here, not by diffstarpop, whose 'tng' draw quenched
   half the centrals of 1e10-1e10.5 Msun of stars, where TNG quenches few (Donnari et al. 2021):
   centrals are quenched with probability 0.95 / (1 + exp(-(log10 M_halo - 12.5) / 0.2)),
   satellites with that plus 25 % of the rest (environmental quenching).  The two numbers 12.5
   and 0.2 are tuned so that the quenched fraction by surviving stellar mass follows TNG's (the
   README's table).  The SFR is averaged over each of the 64 Planck15 time bins.
3. Short-timescale variability: the SFR of each bin is multiplied by 10**delta / <10**delta>,
   delta an AR(1) sequence over bins (an Ornstein-Uhlenbeck process sampled every bin) with
   stationary standard deviation 0.3 dex and correlation time 200 Myr.  0.3 dex is the scatter of
   TNG's star-forming main sequence at z ~ 0 (Donnari et al. 2019); the correlation time is one
   215 Myr bin.  The mean mass formed is unchanged.
4. Star particles: the mass formed in a bin becomes N x 8.5e4 Msun with N Poisson-distributed
   (8.5e4 Msun is TNG50-1's baryonic mass resolution, Pillepich et al. 2019), so small galaxies
   have empty and shot-noise-dominated bins as TNG50 histories do.
5. Metallicity: stars formed at cosmic time t get the gas-phase metallicity of the evolving
   mass-metallicity relation of Zahid et al. (2014),
       12 + log(O/H) = Z0 + log10(1 - exp(-(M*/M0(z))**0.513)),  log10 M0 = 9.138 + 2.64 log10(1+z),
   with solar 12 + log(O/H) = 8.69 (Asplund et al. 2009), evaluated at the galaxy's own formed
   stellar mass M*(t) up to that bin, plus a per-galaxy offset (0.1 dex scatter, Zahid's intrinsic
   scatter) and a per-bin term of 0.2 dex / sqrt(N particles).  Z0 = 8.78, 0.32 dex below Zahid's
   9.100 (absolute O/H calibrations differ by more than that): with 9.0 the median mass-weighted
   stellar log Z/Zsun was 0.15-0.25 dex above TNG's at every mass from 1e8.5 to 1e11.5 Msun
   (issue 16's comparison with a TNG table); 8.78, with the new quenching, lowers it by
   0.18-0.21 dex in every bin (README).  With 9.100, 17 % of histories crossed the paper's +0.5
   cap; with 8.78, 66 of 125,000 do.  Empty bins get
   Z = 1e-11 and histories with any bin above log Z/Zsun = 0.5 are dropped, the paper's rules,
   applied by the same code as for TNG.

Generation needs the optional extra `sfhkit[synthetic]` (diffstar, diffmah, jax).  The embedded
test split lives in data/; the training split is regenerated from the seed (`sfhkit data synthetic`).
Randomness is keyed by (seed, chunk of 1000 galaxies), so any chunk can be regenerated alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..cosmology import TimeBins, redshift_at_age_gyr
from ..histories import formed_mass_msun
from ..ssp import ZSUN
from .store import MIN_STELLAR_MASS_MSUN, metallicity_channel, passes_metallicity_cap, split_and_write

STANDIN_NOTE = ("A TNG-calibrated synthetic stand-in for TNG50-1 histories, NOT TNG50: diffstarpop 'tng' "
                "SFHs on diffmah halos, with stated burstiness, star-particle shot noise and an evolving "
                "mass-metallicity relation. Build the real set with `sfhkit data tng`.")
PREFIX = "synthetic_tng50_standin"
CHUNK = 1000
# data/ ships the test galaxies of the first 24 chunks (about 4600, 2 MB); the full test split
# (about 24,000) and the training split are regenerated from the seed (`sfhkit data synthetic`).
EMBEDDED_TEST_GALAXY_ID_LIMIT = 24 * CHUNK


@dataclass(frozen=True)
class SyntheticConfig:
    """Every number that defines the stand-in set (recorded in the files' attrs)."""

    n_galaxies: int = 125000
    seed: int = 20261126
    log_halo_mass_min: float = 10.0
    log_halo_mass_max: float = 14.0
    log_halo_mass_break: float = 12.0
    halo_mass_slope_above_break: float = 0.9
    satellite_fraction: float = 0.3
    log_mass_ratio_at_infall_min: float = -2.5
    log_mass_ratio_at_infall_max: float = -0.5
    diffstarpop_params: str = "tng"
    quenched_branch: str = "sfhkit"     # "diffstarpop": its own draw (the set before issue 16)
    central_quenched_fraction_max: float = 0.95
    central_quenching_log_halo_mass: float = 12.5
    central_quenching_width_dex: float = 0.2
    satellite_environmental_quenched_fraction: float = 0.25
    subsamples_per_bin: int = 16
    burst_amplitude_dex: float = 0.3
    burst_timescale_gyr: float = 0.2
    star_particle_mass_msun: float = 8.5e4
    mzr_oh_saturation: float = 8.78
    mzr_log_m0_at_z0: float = 9.138
    mzr_log_m0_slope: float = 2.64
    mzr_gamma: float = 0.513
    solar_oh: float = 8.69
    galaxy_metallicity_scatter_dex: float = 0.1
    particle_metallicity_scatter_dex: float = 0.2
    min_stellar_mass_msun: float = MIN_STELLAR_MASS_MSUN

    def __post_init__(self):
        if self.quenched_branch not in ("sfhkit", "diffstarpop"):
            raise ValueError(f"quenched_branch must be 'sfhkit' or 'diffstarpop', got {self.quenched_branch!r}")
        if not self.log_halo_mass_min < self.log_halo_mass_max:
            raise ValueError("log_halo_mass_min must be below log_halo_mass_max")


def mzr_logz_solar(stellar_mass_msun, redshift, config: SyntheticConfig = SyntheticConfig()) -> np.ndarray:
    """log10 Z/Zsun of the Zahid et al. (2014) mass-metallicity relation at the given stellar mass and redshift."""
    m = np.asarray(stellar_mass_msun, dtype=float)
    log_m0 = config.mzr_log_m0_at_z0 + config.mzr_log_m0_slope * np.log10(1 + np.asarray(redshift, dtype=float))
    x = np.power(np.maximum(m, 1.0) / 10**log_m0, config.mzr_gamma)
    return config.mzr_oh_saturation - config.solar_oh + np.log10(-np.expm1(-x))


def sample_log_halo_mass(uniform, config: SyntheticConfig = SyntheticConfig()) -> np.ndarray:
    """log10 M_halo / Msun from uniform deviates (inverse CDF): flat in log M_halo from the minimum
    to the break, then falling as M_halo**-slope up to the maximum (slope 0: flat throughout)."""
    lo, hi = config.log_halo_mass_min, config.log_halo_mass_max
    brk, slope = min(max(config.log_halo_mass_break, lo), hi), config.halo_mass_slope_above_break
    u = np.asarray(uniform, dtype=float)
    a = slope * np.log(10.0)                         # density exp(-a (x - brk)) above the break
    tail = (hi - brk) if a == 0 else -np.expm1(-a * (hi - brk)) / a
    total = (brk - lo) + tail
    v = u * total                                    # position along the cumulative density
    above = v - (brk - lo)
    tail_x = brk + (above if a == 0 else -np.log1p(-a * np.maximum(above, 0.0)) / a)
    return np.where(above <= 0, lo + v, np.minimum(tail_x, hi))


def quenched_probability(log_halo_mass, satellite, config: SyntheticConfig = SyntheticConfig()) -> np.ndarray:
    """Probability that a galaxy takes diffstarpop's quenched branch (step 2 of the module docstring):
    a logistic in log10 M_halo for centrals, and for satellites the central value plus an
    environmental share of the rest."""
    x = (np.asarray(log_halo_mass, dtype=float) - config.central_quenching_log_halo_mass) / config.central_quenching_width_dex
    central = config.central_quenched_fraction_max / (1.0 + np.exp(-x))
    return np.where(satellite, central + (1.0 - central) * config.satellite_environmental_quenched_fraction, central)


def _require_generators():
    try:
        import diffmah  # noqa: F401
        import diffstar  # noqa: F401
        import jax  # noqa: F401
    except ImportError as err:
        raise RuntimeError("generating the synthetic set needs the optional extra: "
                           "pip install 'sfhkit[synthetic]' (diffstar, diffmah, jax)") from err


def _smooth_sfh_chunk(config: SyntheticConfig, chunk: int, n: int, time_bins: TimeBins):
    """Halo properties and bin-averaged diffstar SFRs (Msun/yr) for one chunk of galaxies."""
    import jax.numpy as jnp
    from diffmah import logmh_at_t_obs
    from diffmah.diffmahpop_kernels import DEFAULT_DIFFMAHPOP_PARAMS, mc_diffmah_cenpop, mc_diffmah_satpop
    from diffstar.diffstarpop import SIMULATION_FIT_PARAMS, mc_diffstar_sfh_galpop
    from jax import random as jran

    cosmo = time_bins.cosmology
    t0 = time_bins.age_of_universe_gyr
    lgt0, fb = np.log10(t0), float(cosmo.Ob0 / cosmo.Om0)
    rng = np.random.default_rng([config.seed, chunk, 0])
    log_halo_mass = sample_log_halo_mass(rng.uniform(size=n), config)
    satellite = rng.uniform(size=n) < config.satellite_fraction
    log_mass_ratio = rng.uniform(config.log_mass_ratio_at_infall_min, config.log_mass_ratio_at_infall_max, n)

    key_cen, key_sat, key_sfh = jran.split(jran.PRNGKey(config.seed * 1000 + chunk), 3)
    t_obs = jnp.full(n, t0)
    lgm = jnp.asarray(log_halo_mass)
    cen = mc_diffmah_cenpop(DEFAULT_DIFFMAHPOP_PARAMS, lgm, t_obs, key_cen, lgt0).mah_params
    sat = mc_diffmah_satpop(DEFAULT_DIFFMAHPOP_PARAMS, lgm, t_obs, key_sat, lgt0).mah_params
    mah = cen._make([jnp.where(jnp.asarray(satellite), s, c) for c, s in zip(cen, sat)])
    logmp0 = logmh_at_t_obs(mah, t_obs, lgt0)
    t_peak = np.asarray(mah.t_peak)
    upid = np.where(satellite, 1, -1)
    gyr_since_infall = np.where(satellite, t0 - t_peak, -100.0)
    lgmu_infall = np.where(satellite, log_mass_ratio, 0.0)
    logmhost_infall = np.where(satellite, np.asarray(logmp0) - log_mass_ratio, 0.0)

    edges = time_bins.edges
    frac = (np.arange(config.subsamples_per_bin) + 0.5) / config.subsamples_per_bin
    tarr = (edges[:-1, None] + np.diff(edges)[:, None] * frac[None, :]).ravel()
    res = mc_diffstar_sfh_galpop(SIMULATION_FIT_PARAMS[config.diffstarpop_params], mah, logmp0,
                                 jnp.asarray(upid), jnp.asarray(lgmu_infall), jnp.asarray(logmhost_infall),
                                 jnp.asarray(gyr_since_infall), key_sfh, jnp.asarray(tarr), lgt0=lgt0, fb=fb)
    if config.quenched_branch == "diffstarpop":
        quenched = np.asarray(res.mc_is_q)
    else:
        quenched = rng.uniform(size=n) < quenched_probability(log_halo_mass, satellite, config)
    sfr = np.where(quenched[:, None], np.asarray(res.sfh_q), np.asarray(res.sfh_ms)).astype(np.float64)
    sfr_bins = sfr.reshape(n, time_bins.n_bins, config.subsamples_per_bin).mean(axis=-1)
    return log_halo_mass, satellite, quenched, sfr_bins


def _add_burstiness_particles_metallicity(config: SyntheticConfig, chunk: int, sfr_smooth: np.ndarray,
                                          time_bins: TimeBins, bin_redshift: np.ndarray) -> np.ndarray:
    """Steps 3-5 of the module docstring on (n, n_bins) smooth SFRs; returns (n, 2, n_bins) histories."""
    rng = np.random.default_rng([config.seed, chunk, 1])
    n, n_bins = sfr_smooth.shape
    width_gyr = time_bins.widths[0] / 1e9
    rho = np.exp(-width_gyr / config.burst_timescale_gyr)
    sigma = config.burst_amplitude_dex
    delta = np.empty((n, n_bins))
    delta[:, 0] = rng.normal(0.0, sigma, n)
    for k in range(1, n_bins):
        delta[:, k] = rho * delta[:, k - 1] + np.sqrt(1 - rho**2) * rng.normal(0.0, sigma, n)
    mean_boost = np.exp(0.5 * (sigma * np.log(10)) ** 2)  # <10**delta> for Gaussian delta
    expected_mass = sfr_smooth * 10**delta / mean_boost * time_bins.widths

    n_particles = rng.poisson(expected_mass / config.star_particle_mass_msun)
    mass = n_particles * config.star_particle_mass_msun

    stellar_mass_so_far = np.cumsum(mass, axis=1)
    logz = (mzr_logz_solar(stellar_mass_so_far, bin_redshift[None, :], config)
            + rng.normal(0.0, config.galaxy_metallicity_scatter_dex, (n, 1))
            + rng.normal(0.0, 1.0, (n, n_bins)) * config.particle_metallicity_scatter_dex
            / np.sqrt(np.maximum(n_particles, 1)))
    metal_mass = mass * ZSUN * 10**logz
    return np.stack([mass / time_bins.widths, metallicity_channel(mass, metal_mass)], axis=1)


def generate_chunk(config: SyntheticConfig, chunk: int, time_bins: TimeBins | None = None,
                   bin_redshift: np.ndarray | None = None) -> dict:
    """Chunk `chunk` (galaxies chunk*1000 ...) of the set, before the cuts: ids, histories and extras.
    `bin_redshift` (the redshift of each bin centre) is computed when not given; it costs about a
    second, so `generate` computes it once for all chunks."""
    _require_generators()
    bins = time_bins or TimeBins()
    if bin_redshift is None:
        bin_redshift = redshift_at_age_gyr(bins.centers, bins.cosmology)
    start = chunk * CHUNK
    n = min(CHUNK, config.n_galaxies - start)
    if n <= 0:
        raise ValueError(f"chunk {chunk} is beyond n_galaxies={config.n_galaxies}")
    log_halo_mass, satellite, quenched, sfr = _smooth_sfh_chunk(config, chunk, n, bins)
    histories = _add_burstiness_particles_metallicity(config, chunk, sfr, bins, bin_redshift)
    return {"galaxy_id": np.arange(start, start + n, dtype=np.int64), "histories": histories,
            "log_halo_mass": log_halo_mass, "is_satellite": satellite, "diffstar_quenched": quenched}


def generate(config: SyntheticConfig = SyntheticConfig(), time_bins: TimeBins | None = None,
             progress: bool = True) -> dict:
    """The whole set after the paper's cuts: a dict of per-galaxy arrays and the drop counts."""
    from tqdm.auto import tqdm

    bins = time_bins or TimeBins()
    bin_redshift = redshift_at_age_gyr(bins.centers, bins.cosmology)
    chunks = [generate_chunk(config, c, bins, bin_redshift)
              for c in tqdm(range(-(-config.n_galaxies // CHUNK)), desc="synthetic chunks", disable=not progress)]
    out = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    h = out["histories"]
    enough_mass = formed_mass_msun(h, bins) > config.min_stellar_mass_msun
    capped = passes_metallicity_cap(h)
    keep = enough_mass & capped
    result = {key: value[keep] for key, value in out.items()}
    result["n_dropped_low_mass"] = int((~enough_mass).sum())
    result["n_dropped_metallicity_cap"] = int((enough_mass & ~capped).sum())
    return result


def build_synthetic_dataset(out_dir, config: SyntheticConfig = SyntheticConfig(),
                            time_bins: TimeBins | None = None, progress: bool = True) -> dict[str, Path]:
    """Generate the stand-in set and write `synthetic_tng50_standin_{train,test}.nc` to `out_dir`."""
    import diffmah
    import diffstar
    import jax

    bins = time_bins or TimeBins()
    result = generate(config, bins, progress)
    attrs = {
        "source": "synthetic",
        "description": STANDIN_NOTE,
        "is_tng50": 0,
        "generator": "sfhkit.data.synthetic (see its module docstring for every choice)",
        "config": asdict(config),
        "generator_versions": {"sfhkit": __version__, "diffstar": diffstar.__version__,
                               "diffmah": diffmah.__version__, "jax": jax.__version__},
        "n_generated": config.n_galaxies,
        "n_dropped_low_mass": result["n_dropped_low_mass"],
        "n_dropped_metallicity_cap": result["n_dropped_metallicity_cap"],
        "references": "diffstarpop: Alarcon et al. 2025 (arXiv:2510.27604); diffstar: Alarcon et al. 2023; "
                      "diffmah: Hearin et al. 2021; MZR: Zahid et al. 2014 (ApJ 791, 130); "
                      "TNG50 resolution: Pillepich et al. 2019; main-sequence scatter: Donnari et al. 2019",
    }
    extra = {
        "log_halo_mass": (result["log_halo_mass"], {"units": "log10(Msun)", "long_name": "halo mass at z=0"}),
        "is_satellite": (result["is_satellite"].astype(np.int8), {"long_name": "satellite (1) or central (0)"}),
        "diffstar_quenched": (result["diffstar_quenched"].astype(np.int8),
                              {"long_name": "diffstarpop drew the quenched branch"}),
    }
    return split_and_write(result["histories"], result["galaxy_id"], out_dir, prefix=PREFIX, attrs=attrs,
                           time_bins=bins, extra=extra)


def embedded_test_subset(test):
    """The part of a test split (xarray.Dataset) that ships in data/: galaxy_id below
    EMBEDDED_TEST_GALAXY_ID_LIMIT.  Its normalisation is still the full training split's."""
    keep = test.galaxy_id.values < EMBEDDED_TEST_GALAXY_ID_LIMIT
    return test.isel(galaxy=keep).assign_attrs(
        embedded_subset=f"the {int(keep.sum())} test galaxies with galaxy_id < {EMBEDDED_TEST_GALAXY_ID_LIMIT} "
                        f"of the {keep.size} of the full test split")


# What the settings added in issue 16 were before it: a file that does not record them was made so.
SETTINGS_BEFORE_ISSUE_16 = {"quenched_branch": "diffstarpop", "halo_mass_slope_above_break": 0.0}


def config_from_file(path) -> SyntheticConfig:
    """The generator configuration recorded in a synthetic histories file."""
    from .store import read_histories

    ds = read_histories(path)
    if ds.attrs.get("source") != "synthetic":
        raise ValueError(f"{path} is not a synthetic stand-in file")
    return SyntheticConfig(**{**SETTINGS_BEFORE_ISSUE_16, **json.loads(ds.attrs["config"])})
