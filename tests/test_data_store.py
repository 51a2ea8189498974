"""The shared histories file format and the paper's per-history rules."""

from __future__ import annotations

import numpy as np
import pytest

from sfhkit.data.store import (
    EMPTY_BIN_LOGZ,
    is_test_galaxy,
    make_dataset,
    metallicity_channel,
    normalisation_statistics,
    passes_metallicity_cap,
    read_histories,
    split_and_write,
    write_histories,
)


def _histories(n, seed=0):
    rng = np.random.default_rng(seed)
    h = np.empty((n, 2, 64))
    h[:, 0] = rng.lognormal(0, 1, (n, 64))
    h[:, 1] = rng.uniform(-2, 0.4, (n, 64))
    return h


def test_metallicity_channel_is_mass_weighted_with_empty_bins():
    mass = np.array([0.0, 4.0, 2.0])
    metal = np.array([0.0, 1.0 * 0.02 + 3.0 * 0.01, 0.0])
    logz = metallicity_channel(mass, metal)
    assert logz[0] == pytest.approx(EMPTY_BIN_LOGZ)
    assert logz[1] == pytest.approx(np.log10(0.0125 / 0.0142))
    assert logz[2] == pytest.approx(EMPTY_BIN_LOGZ)  # metal-free stars: the empty-bin value, not -inf


def test_metallicity_cap():
    h = _histories(3)
    h[1, 1, 10] = 0.51
    h[2, 1, 10] = 0.5
    assert passes_metallicity_cap(h).tolist() == [True, False, True]


def test_split_is_deterministic_order_independent_and_near_the_fraction():
    ids = np.arange(100000)
    test = is_test_galaxy(ids)
    assert abs(test.mean() - 0.2) < 0.005
    shuffled = np.random.default_rng(1).permutation(ids)
    np.testing.assert_array_equal(is_test_galaxy(shuffled), test[shuffled])
    with pytest.raises(ValueError, match="test_fraction"):
        is_test_galaxy(ids, 1.5)


def test_write_read_round_trip_and_training_normalisation(tmp_path):
    h = _histories(200)
    ids = np.arange(1000, 1200)
    paths = split_and_write(h, ids, tmp_path, prefix="x", attrs={"source": "unit test", "description": "d",
                                                                    "cuts": {"a": 1}})
    train, test = read_histories(paths["train"]), read_histories(paths["test"])
    assert len(train.galaxy) + len(test.galaxy) == 200
    in_train = ~is_test_galaxy(ids)
    np.testing.assert_array_equal(train.histories.values, h[in_train].astype(np.float32))
    mean, std = normalisation_statistics(h[in_train])
    np.testing.assert_allclose(test.norm_mean.values, mean)
    np.testing.assert_allclose(test.norm_std.values, std)
    assert test.attrs["cuts"] == '{"a": 1}' and not list(tmp_path.glob("*.tmp"))


def test_bad_inputs(tmp_path):
    h = _histories(10)
    with pytest.raises(ValueError, match="shape"):
        make_dataset(h[:, :, :10], np.arange(10), split="train", norm_mean=0, norm_std=1, attrs={})
    bad = h.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        make_dataset(bad, np.arange(10), split="train", norm_mean=np.zeros((2, 64)), norm_std=np.ones((2, 64)),
                     attrs={"source": "s", "description": "d"})
    with pytest.raises(ValueError, match="unique"):
        split_and_write(h, np.zeros(10), tmp_path, prefix="x", attrs={"source": "s", "description": "d"})
    with pytest.raises(FileNotFoundError):
        read_histories(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable"):
        read_histories(tmp_path / "junk.nc")
    ds = make_dataset(h, np.arange(10), split="test", norm_mean=np.zeros((2, 64)), norm_std=np.ones((2, 64)),
                      attrs={"source": "s", "description": "d"})
    write_histories(ds.assign_attrs(format_version=99), tmp_path / "future.nc")
    with pytest.raises(ValueError, match="format version"):
        read_histories(tmp_path / "future.nc")
