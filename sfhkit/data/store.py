"""The on-disk format of a set of training or test histories, shared by every source (TNG50 via the
web API, TNG50 from local simulation files, the synthetic stand-in), and the rules the paper applies
to every history whatever its source.

One NetCDF file per split, written with xarray:

    histories      (galaxy, channel, time_bin) float32   channel "sfr" in Msun/yr, "logz" in log10 Z/Zsun
    galaxy_id      (galaxy) int64                        subhalo ID (TNG) or generator index (synthetic)
    norm_mean      (channel, time_bin) float64           z-score statistics of the *training* split
    norm_std       (channel, time_bin) float64
    time_bin_lower_gyr, time_bin_upper_gyr, time_bin_center_gyr (time_bin)   cosmic time

Attributes record the source, the cuts, the split rule and the sfhkit version.  Files are written
to a temporary name and renamed, so a file with the final name is always complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import numpy as np
import xarray as xr

from .._io import atomic_path
from .._version import __version__
from ..cosmology import TimeBins
from ..ssp import ZSUN

FORMAT_VERSION = 1
CHANNELS = ("sfr", "logz")
CHANNEL_UNITS = ("Msun/yr", "log10(Z/Zsun)")

# The paper's rules (DESIGN.md, "Training data").
EMPTY_BIN_METALLICITY = 1e-11          # Z (mass fraction) given to bins in which no star formed
EMPTY_BIN_LOGZ = float(np.log10(EMPTY_BIN_METALLICITY / ZSUN))
MAX_LOGZ_SOLAR = 0.5                   # drop histories with any bin above this log10 Z/Zsun
MIN_STELLAR_MASS_MSUN = 1e5            # keep subhalos whose stellar mass is above this
TEST_FRACTION = 0.2                    # the paper's split: 94372 train / 23596 test (20.0 %)
SPLIT_SALT = "sfhkit-split-v1"


def metallicity_channel(mass_formed_msun: np.ndarray, metal_mass_msun: np.ndarray) -> np.ndarray:
    """log10 Z/Zsun per bin from the mass formed and the metal mass formed (sum of m_i Z_i) in it:
    the initial-mass-weighted mean metallicity, with Z = 1e-11 in bins where no star formed."""
    mass = np.asarray(mass_formed_msun, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(mass > 0, np.asarray(metal_mass_msun, dtype=float) / mass, EMPTY_BIN_METALLICITY)
    # A bin of metal-free stars (Z = 0 exactly) is given the empty-bin value rather than -inf.
    return np.log10(np.maximum(z, EMPTY_BIN_METALLICITY) / ZSUN)


def passes_metallicity_cap(histories: np.ndarray) -> np.ndarray:
    """True for histories with no bin above log10 Z/Zsun = 0.5 (the paper drops the others)."""
    return ~np.any(np.asarray(histories)[..., 1, :] > MAX_LOGZ_SOLAR, axis=-1)


def is_test_galaxy(galaxy_ids, test_fraction: float = TEST_FRACTION, salt: str = SPLIT_SALT) -> np.ndarray:
    """Deterministic train/test assignment from each galaxy's ID alone (a salted BLAKE2 hash mapped
    to [0, 1)), so the split does not depend on the order, the machine or which other galaxies exist."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    ids = np.asarray(galaxy_ids, dtype=np.int64).ravel()
    u = np.array([int.from_bytes(hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=8).digest(), "little")
                  for i in ids], dtype=np.float64) / 2.0**64
    return u < test_fraction


def normalisation_statistics(histories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paper's z-score statistics: mean and standard deviation over galaxies of each channel in
    each time bin, shape (2, n_bins) each.  A zero std (a bin constant over the set) is set to 1."""
    h = np.asarray(histories, dtype=np.float64)
    mean, std = h.mean(axis=0), h.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def make_dataset(histories: np.ndarray, galaxy_id: np.ndarray, *, split: str, norm_mean: np.ndarray,
                 norm_std: np.ndarray, attrs: dict, time_bins: TimeBins | None = None,
                 extra: dict[str, tuple[np.ndarray, dict]] | None = None) -> xr.Dataset:
    """Assemble one split's dataset.  `attrs` must say at least `source` and `description`;
    `extra` adds per-galaxy variables: {name: (values, attrs)}."""
    bins = time_bins or TimeBins()
    h = np.asarray(histories, dtype=np.float32)
    if h.ndim != 3 or h.shape[1:] != (2, bins.n_bins):
        raise ValueError(f"histories must have shape (galaxy, 2, {bins.n_bins}), got {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("histories contain non-finite values")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    for key in ("source", "description"):
        if key not in attrs:
            raise ValueError(f"attrs must contain {key!r}")
    edges = bins.edges
    data_vars = {
        "histories": (("galaxy", "channel", "time_bin"), h,
                      {"long_name": "star-formation and metallicity history",
                       "units": "channel sfr: Msun/yr (mass formed in the bin / bin width); "
                                "channel logz: log10(Z/Zsun), initial-mass-weighted"}),
        "norm_mean": (("channel", "time_bin"), np.asarray(norm_mean, dtype=np.float64),
                      {"long_name": "mean over the training split (z-score normalisation)"}),
        "norm_std": (("channel", "time_bin"), np.asarray(norm_std, dtype=np.float64),
                     {"long_name": "standard deviation over the training split (z-score normalisation)"}),
    }
    for name, (values, var_attrs) in (extra or {}).items():
        data_vars[name] = (("galaxy",), np.asarray(values), dict(var_attrs))
    coords = {
        "galaxy_id": (("galaxy",), np.asarray(galaxy_id, dtype=np.int64), {"long_name": "galaxy identifier"}),
        "channel": (("channel",), np.array(CHANNELS), {"units": ", ".join(CHANNEL_UNITS)}),
        "time_bin_lower_gyr": (("time_bin",), edges[:-1], {"units": "Gyr", "long_name": "cosmic time"}),
        "time_bin_upper_gyr": (("time_bin",), edges[1:], {"units": "Gyr", "long_name": "cosmic time"}),
        "time_bin_center_gyr": (("time_bin",), 0.5 * (edges[1:] + edges[:-1]), {"units": "Gyr"}),
    }
    base = {
        "format": "sfhkit histories",
        "format_version": FORMAT_VERSION,
        "split": split,
        "sfhkit_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cosmology": bins.cosmology.name,
        "n_time_bins": bins.n_bins,
        "zsun": ZSUN,
        "empty_bin_metallicity": EMPTY_BIN_METALLICITY,
        "max_logz_solar": MAX_LOGZ_SOLAR,
        "split_rule": f"test if blake2b('{SPLIT_SALT}:<galaxy_id>') / 2**64 < test_fraction",
        "normalisation": "z-score per channel and time bin with the training split's norm_mean, norm_std",
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs={**base, **_netcdf_attrs(attrs)})
    return ds


def _netcdf_attrs(attrs: dict) -> dict:
    """NetCDF attributes must be strings or numbers: dicts and lists become JSON, None becomes ''."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value, sort_keys=True)
        elif value is None:
            value = ""
        elif isinstance(value, (bool, np.bool_)):
            value = int(value)
        out[key] = value
    return out


def write_histories(ds: xr.Dataset, path) -> Path:
    """Write atomically (temporary file, then rename) with zlib compression; returns the path."""
    encoding = {name: {"zlib": True, "complevel": 6, "shuffle": True} for name in ds.data_vars}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
    return Path(path)


def read_histories(path) -> xr.Dataset:
    """Open a histories file (loaded into memory) and check that it is one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no histories file at {path}")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable NetCDF file ({err})") from err
    if ds.attrs.get("format") != "sfhkit histories" or "histories" not in ds:
        raise ValueError(f"{path} is not an sfhkit histories file")
    if int(ds.attrs.get("format_version", -1)) != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {ds.attrs.get('format_version')}, "
                         f"this sfhkit reads version {FORMAT_VERSION}")
    return ds


def split_and_write(histories: np.ndarray, galaxy_id: np.ndarray, out_dir, *, prefix: str, attrs: dict,
                    time_bins: TimeBins | None = None, test_fraction: float = TEST_FRACTION,
                    extra: dict[str, tuple[np.ndarray, dict]] | None = None) -> dict[str, Path]:
    """Split by galaxy ID, compute the normalisation on the training split and write
    `<prefix>_train.nc` and `<prefix>_test.nc` to `out_dir`.  Returns {split: path}."""
    histories = np.asarray(histories)
    galaxy_id = np.asarray(galaxy_id, dtype=np.int64)
    if len(histories) != len(galaxy_id):
        raise ValueError("histories and galaxy_id differ in length")
    if len(np.unique(galaxy_id)) != len(galaxy_id):
        raise ValueError("galaxy_id values must be unique")
    test = is_test_galaxy(galaxy_id, test_fraction)
    if test.all() or not test.any():
        raise ValueError(f"the split of {len(galaxy_id)} galaxies left one side empty; need more galaxies")
    mean, std = normalisation_statistics(histories[~test])
    attrs = dict(attrs, test_fraction=test_fraction, n_train=int((~test).sum()), n_test=int(test.sum()))
    paths = {}
    for split, mask in (("train", ~test), ("test", test)):
        extra_split = {k: (np.asarray(v)[mask], a) for k, (v, a) in (extra or {}).items()}
        ds = make_dataset(histories[mask], galaxy_id[mask], split=split, norm_mean=mean, norm_std=std,
                          attrs=attrs, time_bins=time_bins, extra=extra_split)
        paths[split] = write_histories(ds, Path(out_dir) / f"{prefix}_{split}.nc")
    return paths
