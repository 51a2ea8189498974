"""The histories that ship with sfhkit (data/, installed as the resource package sfhkit.embedded)
and the training split regenerated from the seed into the user cache."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import xarray as xr

from .store import read_histories

SOURCES = ("synthetic",)


def embedded_path(name: str) -> Path:
    """Path of a file in the embedded data folder."""
    return Path(str(resources.files("sfhkit.embedded").joinpath(name)))


def _cached_train_path(cache_dir=None) -> Path:
    """Where the regenerated training split is cached: named after a hash of the generator
    configuration of the shipped test file, so a new stand-in never reads an old cache."""
    import hashlib

    from ..ssp import default_cache_dir
    from .synthetic import PREFIX

    config = read_histories(embedded_path(f"{PREFIX}_test.nc")).attrs["config"]
    key = hashlib.blake2b(config.encode(), digest_size=6).hexdigest()
    return Path(cache_dir or default_cache_dir()) / "histories" / f"{PREFIX}_{key}_train.nc"


def load_histories(split: str = "test", source: str = "synthetic", *, cache_dir=None,
                   generate: bool = True, progress: bool = True) -> xr.Dataset:
    """The embedded stand-in histories as an xarray.Dataset (see sfhkit.data.store for the format).

    "test" is shipped in data/ (the part of the test split with galaxy_id < 24000, see
    sfhkit.data.synthetic).  "train" is regenerated deterministically from the seed recorded in
    the test file the first time it is asked for (needs `pip install 'sfhkit[synthetic]'`, about a
    minute) and cached; `generate=False` raises instead.  For the real TNG50 set run
    `sfhkit data tng` and open its files with sfhkit.data.read_histories.
    """
    from .synthetic import PREFIX, build_synthetic_dataset, config_from_file, embedded_test_subset

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}; "
                         "open TNG files with sfhkit.data.read_histories(path)")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    test_path = embedded_path(f"{PREFIX}_test.nc")
    if split == "test":
        return read_histories(test_path)
    train_path = _cached_train_path(cache_dir)
    if not train_path.exists():
        if not generate:
            raise FileNotFoundError(f"no cached training split at {train_path}; run `sfhkit data synthetic`")
        paths = build_synthetic_dataset(train_path.parent, config_from_file(test_path), progress=progress)
        _warn_if_regeneration_differs(embedded_test_subset(read_histories(paths["test"])), read_histories(test_path))
        paths["train"].replace(train_path)        # the generator names its files without the key
    return read_histories(train_path)


def _warn_if_regeneration_differs(regenerated: xr.Dataset, embedded: xr.Dataset, tolerance: float = 1e-4):
    """Other jax/diffstar versions may not reproduce the shipped set exactly; say so rather than
    silently train on a set whose test split is not the shipped one."""
    import warnings

    import numpy as np

    same_ids = np.array_equal(regenerated.galaxy_id.values, embedded.galaxy_id.values)
    if not same_ids or not np.allclose(regenerated.histories.values, embedded.histories.values,
                                       rtol=tolerance, atol=tolerance):
        warnings.warn("the regenerated synthetic set differs from the shipped one (diffstar/diffmah/jax "
                      "versions other than those in the file's attrs?); the split by galaxy ID still keeps "
                      "training and test galaxies apart", stacklevel=3)
