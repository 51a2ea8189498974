"""The embedded synthetic stand-in: loads without optional extras, obeys the paper's rules, has the
TNG path's format, and regenerates bit-for-bit (to float32 rounding) from its recorded seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sfhkit.data import load_histories, read_histories
from sfhkit.data.store import EMPTY_BIN_LOGZ, MAX_LOGZ_SOLAR
from sfhkit.data.synthetic import CHUNK, SyntheticConfig, config_from_file, mzr_logz_solar
from sfhkit.histories import formed_mass_msun


@pytest.fixture(scope="module")
def test_set():
    return load_histories("test")


def test_embedded_test_set_loads_and_says_it_is_a_stand_in(test_set):
    h = test_set.histories.values
    assert h.shape[1:] == (2, 64) and 3000 <= h.shape[0] <= 6000
    assert np.all(np.isfinite(h)) and np.all(h[:, 0] >= 0)
    assert test_set.attrs["is_tng50"] == 0 and "NOT TNG50" in test_set.attrs["description"]
    assert test_set.attrs["split"] == "test" and test_set.attrs["source"] == "synthetic"
    # The paper's rules: cap, empty-bin metallicity, mass cut.
    assert h[:, 1].max() <= MAX_LOGZ_SOLAR
    empty = h[:, 0] == 0
    assert empty.any() and np.allclose(h[:, 1][empty], EMPTY_BIN_LOGZ)
    assert formed_mass_msun(h).min() > 1e5
    # Every generator choice is recorded.
    config = SyntheticConfig(**json.loads(test_set.attrs["config"]))
    assert config.burst_amplitude_dex == 0.3 and config.star_particle_mass_msun == 8.5e4


def test_same_format_as_the_tng_path(test_set, tmp_path):
    from test_data_tng import _population
    from tng_files import write_simulation

    from sfhkit.data.tng import build_tng_dataset

    subhalos, flags, mass = _population()
    base = write_simulation(tmp_path / "sim", subhalos, flags=flags, masstype_stars=mass)
    tng = read_histories(build_tng_dataset(tmp_path / "out", source="local", base_path=base, progress=False)["test"])
    core = {"histories", "norm_mean", "norm_std"}
    assert core <= set(tng.data_vars) and core <= set(test_set.data_vars)
    assert dict(tng.histories.sizes).keys() == dict(test_set.histories.sizes).keys()
    np.testing.assert_array_equal(tng.time_bin_center_gyr.values, test_set.time_bin_center_gyr.values)
    for key in ("format", "format_version", "zsun", "empty_bin_metallicity", "max_logz_solar", "split_rule",
                "cosmology", "source", "description", "is_tng50", "n_train", "n_test"):
        assert key in tng.attrs and key in test_set.attrs, key


def test_mzr_matches_zahid_2014_form():
    cfg = SyntheticConfig()
    # Saturates at Z0 - solar for massive galaxies; at M0(z) it is Z0 - solar + log10(1 - 1/e).
    assert mzr_logz_solar(1e14, 0.0) == pytest.approx(cfg.mzr_oh_saturation - cfg.solar_oh, abs=1e-6)
    m0 = 10 ** (cfg.mzr_log_m0_at_z0 + cfg.mzr_log_m0_slope * np.log10(2.0))
    assert mzr_logz_solar(m0, 1.0) == pytest.approx(cfg.mzr_oh_saturation - cfg.solar_oh + np.log10(1 - np.e**-1))


def test_training_split_needs_generation_or_the_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="sfhkit data synthetic"):
        load_histories("train", cache_dir=tmp_path, generate=False)
    with pytest.raises(ValueError, match="split"):
        load_histories("validation")
    with pytest.raises(ValueError, match="source"):
        load_histories("test", source="tng")


def test_regenerates_the_embedded_set_from_its_seed(test_set, tmp_path):
    """Regenerate the first two chunks with the recorded configuration: the galaxies of the
    embedded test split that fall in them come out the same (needs sfhkit[synthetic])."""
    pytest.importorskip("diffstar", reason="regeneration needs the optional extra sfhkit[synthetic]")
    from dataclasses import replace

    from sfhkit.data.synthetic import build_synthetic_dataset

    config = replace(SyntheticConfig(**json.loads(test_set.attrs["config"])), n_galaxies=2 * CHUNK)
    paths = build_synthetic_dataset(tmp_path, config, progress=False)
    regenerated = read_histories(paths["test"])
    ids = regenerated.galaxy_id.values
    position = {int(g): i for i, g in enumerate(test_set.galaxy_id.values)}
    assert len(ids) > 100 and all(int(g) in position for g in ids)
    expected = test_set.histories.values[[position[int(g)] for g in ids]]
    np.testing.assert_allclose(regenerated.histories.values, expected, rtol=1e-4, atol=1e-4)
    train = read_histories(paths["train"])
    assert train.attrs["split"] == "train" and not set(train.galaxy_id.values) & set(ids)


def test_config_from_file_and_cached_training_split(tmp_path, test_set):
    from sfhkit.data.embedded import _cached_train_path, embedded_path
    from sfhkit.data.store import write_histories

    config = config_from_file(embedded_path("synthetic_tng50_standin_test.nc"))
    assert config == SyntheticConfig(**json.loads(test_set.attrs["config"]))
    # load_histories("train") reads the cached training split when it exists.
    fake_train = test_set.assign_attrs(split="train")
    write_histories(fake_train, _cached_train_path(tmp_path))
    assert load_histories("train", cache_dir=tmp_path, generate=False).attrs["split"] == "train"


def test_training_split_is_generated_into_the_keyed_cache_path(tmp_path, test_set, monkeypatch):
    """On a fresh machine load_histories("train") generates the set and then finds it (the
    generator writes unkeyed file names; the cache is keyed by the generator configuration)."""
    import sfhkit.data.synthetic as synthetic
    from sfhkit.data.embedded import _cached_train_path
    from sfhkit.data.store import write_histories

    def fake_build(out_dir, config, progress=True):
        paths = {split: Path(out_dir) / f"{synthetic.PREFIX}_{split}.nc" for split in ("train", "test")}
        write_histories(test_set.assign_attrs(split="train"), paths["train"])
        write_histories(test_set, paths["test"])
        return paths

    monkeypatch.setattr(synthetic, "build_synthetic_dataset", fake_build)
    assert load_histories("train", cache_dir=tmp_path).attrs["split"] == "train"
    assert _cached_train_path(tmp_path).exists()


def test_halo_masses_follow_the_stated_density():
    """Flat in log M_halo up to the break, then M_halo**-slope: the sampler's histogram against the
    density integrated independently over each histogram bin."""
    from sfhkit.data.synthetic import sample_log_halo_mass

    config = SyntheticConfig()
    x = sample_log_halo_mass(np.random.default_rng(0).uniform(size=400_000), config)
    assert config.log_halo_mass_min <= x.min() and x.max() <= config.log_halo_mass_max
    edges = np.linspace(config.log_halo_mass_min, config.log_halo_mass_max, 17)
    fine = np.linspace(edges[0], edges[-1], 160_001)
    density = np.where(fine < config.log_halo_mass_break, 1.0,
                       10 ** (-config.halo_mass_slope_above_break * (fine - config.log_halo_mass_break)))
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    expected = np.diff(np.interp(edges, fine, cumulative)) / cumulative[-1]
    observed = np.histogram(x, edges)[0] / x.size
    np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(expected / x.size).max())
    # Slope 0 is the flat range of the set before issue 16.
    flat = sample_log_halo_mass(np.array([0.0, 0.25, 1.0]), SyntheticConfig(halo_mass_slope_above_break=0.0))
    np.testing.assert_allclose(flat, [10.0, 11.0, 14.0])


def test_quenched_branch_probability():
    from sfhkit.data.synthetic import quenched_probability

    config = SyntheticConfig()
    mid = config.central_quenching_log_halo_mass
    central = quenched_probability([10.0, mid, 14.0], np.zeros(3, bool), config)
    np.testing.assert_allclose(central, [0.0, config.central_quenched_fraction_max / 2,
                                         config.central_quenched_fraction_max], atol=1e-3)
    satellite = quenched_probability([10.0, mid, 14.0], np.ones(3, bool), config)
    share = config.satellite_environmental_quenched_fraction
    np.testing.assert_allclose(satellite, central + (1 - central) * share)
    with pytest.raises(ValueError, match="quenched_branch"):
        SyntheticConfig(quenched_branch="guess")


def test_files_made_before_issue_16_regenerate_with_their_own_settings(tmp_path, test_set):
    """A file whose recorded configuration predates the settings added in issue 16 gets the values
    that reproduce it (diffstarpop's own quenched draw, a flat halo mass range)."""
    from sfhkit.data.store import write_histories

    old = {k: v for k, v in json.loads(test_set.attrs["config"]).items()
           if k not in ("quenched_branch", "halo_mass_slope_above_break", "log_halo_mass_break")}
    path = write_histories(test_set.assign_attrs(config=json.dumps(old)), tmp_path / "old.nc")
    config = config_from_file(path)
    assert config.quenched_branch == "diffstarpop" and config.halo_mass_slope_above_break == 0.0


def test_embedded_set_is_the_start_of_the_full_test_split(test_set, tmp_path, monkeypatch):
    from sfhkit.data import embedded
    from sfhkit.data.store import write_histories
    from sfhkit.data.synthetic import EMBEDDED_TEST_GALAXY_ID_LIMIT, embedded_test_subset

    ids = test_set.galaxy_id.values
    assert ids.max() < EMBEDDED_TEST_GALAXY_ID_LIMIT and "galaxy_id < 24000" in test_set.attrs["embedded_subset"]
    # At the paper's size: >= 94,000 training and 23,000 test histories in the full set.
    assert test_set.attrs["n_train"] >= 94_000 and test_set.attrs["n_test"] >= 23_000
    assert embedded_test_subset(test_set).sizes["galaxy"] == ids.size
    # The cached training split is keyed by the generator configuration.
    first = embedded._cached_train_path(tmp_path)
    changed = test_set.assign_attrs(config=json.dumps({**json.loads(test_set.attrs["config"]), "seed": 1}))
    write_histories(changed, tmp_path / "other.nc")
    monkeypatch.setattr(embedded, "embedded_path", lambda name: tmp_path / "other.nc")
    assert embedded._cached_train_path(tmp_path) != first


def test_stand_in_follows_tng_quenching_and_metallicity(test_set):
    """The retuned stand-in (issue 16) against the published TNG trends, by surviving stellar
    mass (README, "The stand-in against TNG"): centrals below 1e10 Msun are rarely quenched
    (Donnari et al. 2021), most galaxies above 1e10.5 Msun are, and the median mass-weighted
    metallicity is at most solar below 1e11 Msun."""
    from sfhkit.data.summary import by_surviving_mass, surviving_mass_today_msun

    h = test_set.histories.values
    rows = by_surviving_mass(h, surviving_mass_today_msun(h), test_set.is_satellite.values)
    for low_mass in ("8.5-9.0", "9.0-9.5", "9.5-10.0"):
        assert rows[low_mass]["quenched_fraction_centrals"] < 0.05
        assert rows[low_mass]["quenched_fraction"] < 0.15
    assert rows["10.5-11.0"]["quenched_fraction"] > 0.6
    for row in rows.values():
        if row["n"] > 50:
            assert row["mass_weighted_logz_solar"] < 0.0
            assert 0.2 < row["main_sequence_scatter_dex"] < 0.5
