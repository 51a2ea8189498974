"""The TNG binning pipeline on real IllustrisTNG-model star particles (CAMELS, ../shared/data/camels_tng:
3479 stars of 10 subhalos at z ~ 0.1, h = 0.6711, Omega0 = 0.3), checked against an independent
numpy/scipy computation written here; and the one-file snapshot reader's error paths on tiny files
written in the same layout (these run on a fresh clone without ../shared)."""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest
from astropy.cosmology import Planck15
from scipy.integrate import quad

from sfhkit.cosmology import TimeBins, age_at_scale_factor_gyr
from sfhkit.data import read_histories
from sfhkit.data.tng import (
    build_snapshot_dataset,
    cosmology_from_header,
    histories_from_snapshot,
    history_from_particles,
    main,
)

# From ../shared/data/README.md, section camels_tng.
STARS_PER_SUBHALO = [278, 656, 441, 726, 8, 26, 569, 165, 149, 461]

# The independent computation's constants (not taken from sfhkit or astropy).
KM_PER_MPC = 3.0856775814913673e19
S_PER_GYR = 1e9 * 365.25 * 86400.0          # Julian year, as astropy's Gyr
ZSUN = 0.0142
EMPTY_BIN_Z = 1e-11
N_BINS = 64

# Tolerances.  Cosmic times: quad to 1e-12 here against sfhkit's log-a interpolation table, which
# is good to ~1e-5 Gyr, so a particle closer than EDGE_GYR to a bin edge may fall on either side.
EDGE_GYR = 1e-4
TIME_ATOL_GYR = 2e-5
# Masses: sfhkit converts the float32 GFM_InitialMass in float32 (the product keeps the array's
# dtype), this file in float64, so sums agree to float32 precision.
MASS_RTOL = 1e-6
LOGZ_ATOL = 1e-6                            # dex


def cosmic_time_gyr(a, h, omega_m):
    """t(a) = int_0^a da' / (a' H(a')), H(a) = H0 sqrt(Om a'^-3 + 1 - Om), by quadrature, in Gyr."""
    h0_per_gyr = 100.0 * h / KM_PER_MPC * S_PER_GYR

    def integrand(x):
        return 1.0 / (h0_per_gyr * np.sqrt(omega_m / x + (1.0 - omega_m) * x * x))  # = 1 / (x H(x))

    a = np.asarray(a, dtype=float)
    values, inverse = np.unique(a, return_inverse=True)
    t = np.array([quad(integrand, 0.0, v, epsabs=1e-13, epsrel=1e-12)[0] for v in values])
    return t[inverse].reshape(a.shape)


@pytest.fixture(scope="module")
def camels(shared_data):
    folder = shared_data / "camels_tng"
    if not (folder / "camels_snap.hdf5").is_file() or not (folder / "camels_subhalo.hdf5").is_file():
        pytest.skip(f"the CAMELS-TNG tests need {folder}/camels_snap.hdf5 and camels_subhalo.hdf5")
    return folder / "camels_snap.hdf5", folder / "camels_subhalo.hdf5"


@pytest.fixture(scope="module")
def independent(camels):
    """Everything recomputed from the raw files with h5py, numpy and scipy only."""
    snap_path, sub_path = camels
    with h5py.File(snap_path, "r") as f:
        header = dict(f["Header"].attrs)
        a = f["PartType4/GFM_StellarFormationTime"][()].astype(float)
        m = f["PartType4/GFM_InitialMass"][()].astype(float)
        z = f["PartType4/GFM_Metallicity"][()].astype(float)
    with h5py.File(sub_path, "r") as f:
        n_stars = f["Subhalo/SubhaloLenType"][()][:, 4]
    h, om = float(header["HubbleParam"]), float(header["Omega0"])
    t = cosmic_time_gyr(a, h, om)
    age_today = float(cosmic_time_gyr(1.0, h, om))
    edges = np.linspace(0.0, age_today, N_BINS + 1)
    width_yr = np.diff(edges) * 1e9
    start = np.concatenate([[0], np.cumsum(n_stars)[:-1]])
    subhalos = []
    for s, n in zip(start, n_stars):
        sl = slice(s, s + n)
        mass = m[sl] * 1e10 / h
        k = np.searchsorted(edges, t[sl], side="right") - 1
        distance = np.min(np.abs(t[sl, None] - edges[None, :]), axis=1)
        near = distance < EDGE_GYR
        formed = np.bincount(k, weights=mass, minlength=N_BINS)
        metals = np.bincount(k, weights=mass * z[sl], minlength=N_BINS)
        with np.errstate(invalid="ignore", divide="ignore"):
            zbin = np.where(formed > 0, metals / formed, EMPTY_BIN_Z)
        # Bins a near-edge particle could land in: its own and the one across the nearest edge.
        nearest_edge = np.argmin(np.abs(t[sl, None] - edges[None, :]), axis=1)
        touched = np.zeros(N_BINS, dtype=bool)
        for e in nearest_edge[near]:
            touched[max(e - 1, 0):min(e + 1, N_BINS)] = True
        formed_sure = np.bincount(k[~near], weights=mass[~near], minlength=N_BINS)
        subhalos.append(dict(t=t[sl], a=a[sl], mass=mass, metallicity=z[sl], bin=k, near=near, touched=touched,
                             sfr=formed / width_yr, logz=np.log10(np.maximum(zbin, EMPTY_BIN_Z) / ZSUN),
                             sfr_low=formed_sure / width_yr,
                             sfr_high=(formed_sure + _spread(nearest_edge[near], mass[near])) / width_yr))
    kept = [i for i, s in enumerate(subhalos) if np.all(s["logz"] <= 0.5)]
    return dict(h=h, om=om, scale_factor=float(header["Time"]), age_today=age_today, edges=edges,
                width_yr=width_yr, t_snapshot=float(cosmic_time_gyr(float(header["Time"]), h, om)),
                n_stars=n_stars, subhalos=subhalos, kept=kept, raw_mass=m)


def _spread(nearest_edge, mass):
    """Mass per bin if every near-edge particle were counted in both bins beside its nearest edge."""
    out = np.zeros(N_BINS)
    for e, mk in zip(nearest_edge, mass):
        for j in {e - 1, e} - {-1, N_BINS}:
            out[j] += mk
    return out


@pytest.fixture(scope="module")
def pipeline(camels):
    return histories_from_snapshot(*camels, progress=False)


def test_star_counts_and_cosmology_from_the_file(pipeline, independent):
    ids, histories, report = pipeline
    assert report["stars_per_subhalo"] == STARS_PER_SUBHALO == list(independent["n_stars"])
    assert report["n_star_particles_in_snapshot"] == report["n_particles_used"] == 3479
    assert report["n_particles_wind"] == 0 and report["n_particles_nan"] == 0
    assert list(ids) == independent["kept"] and histories.shape == (len(ids), 2, N_BINS)
    cosmology = report["cosmology"]
    assert cosmology["H0_km_s_mpc"] == pytest.approx(67.11) and cosmology["Om0"] == pytest.approx(0.3)
    assert cosmology["Ode0"] == pytest.approx(0.7) and cosmology["Tcmb0_K"] == 0.0
    assert report["snapshot_scale_factor"] == pytest.approx(0.909046978208372, rel=1e-12)
    assert report["snapshot_redshift"] == pytest.approx(1 / 0.909046978208372 - 1, rel=1e-12)
    # Age today and at the snapshot in the file's cosmology: 14.047 and 12.689 Gyr (quadrature).
    assert report["age_of_universe_today_gyr"] == pytest.approx(independent["age_today"], abs=1e-6)
    assert report["snapshot_cosmic_time_gyr"] == pytest.approx(independent["t_snapshot"], abs=TIME_ATOL_GYR)
    assert independent["age_today"] == pytest.approx(14.0469, abs=1e-4)


def test_histories_match_an_independent_computation(pipeline, independent):
    ids, histories, _ = pipeline
    for row, i in enumerate(ids):
        ref = independent["subhalos"][i]
        clean = ~ref["touched"]
        np.testing.assert_allclose(histories[row, 0, clean], ref["sfr"][clean], rtol=MASS_RTOL, atol=0,
                                   err_msg=f"SFR of subhalo {i}")
        np.testing.assert_allclose(histories[row, 1, clean], ref["logz"][clean], rtol=0, atol=LOGZ_ATOL,
                                   err_msg=f"log Z/Zsun of subhalo {i}")
        # Bins beside a particle within EDGE_GYR of an edge: between "without it" and "with it".
        assert np.all(histories[row, 0] >= ref["sfr_low"] * (1 - MASS_RTOL))
        assert np.all(histories[row, 0] <= ref["sfr_high"] * (1 + MASS_RTOL))
        # Empty bins at the pipeline's convention: SFR 0, Z = 1e-11.
        empty = clean & (ref["sfr"] == 0)
        assert np.all(histories[row, 0, empty] == 0)
        np.testing.assert_allclose(histories[row, 1, empty], np.log10(EMPTY_BIN_Z / ZSUN), atol=1e-12)


def test_cosmic_time_of_every_particle(camels, independent):
    """sfhkit's per-particle cosmic time in the file's cosmology against the quadrature."""
    from sfhkit.data.tng import read_snapshot_header

    with h5py.File(camels[0], "r") as f:
        cosmology = read_snapshot_header(f, camels[0]).cosmology
    a = np.concatenate([s["a"] for s in independent["subhalos"]])
    t = np.concatenate([s["t"] for s in independent["subhalos"]])
    assert np.max(np.abs(age_at_scale_factor_gyr(a, cosmology) - t)) < TIME_ATOL_GYR


def test_total_formed_mass(pipeline, independent):
    ids, histories, _ = pipeline
    h, start = independent["h"], np.concatenate([[0], np.cumsum(independent["n_stars"])[:-1]])
    for row, i in enumerate(ids):
        raw = independent["raw_mass"][start[i]:start[i] + independent["n_stars"][i]]
        formed = np.sum(histories[row, 0] * independent["width_yr"])
        assert formed == pytest.approx(np.sum(raw) * 1e10 / h, rel=MASS_RTOL)


def test_no_star_formation_after_the_snapshot(pipeline, independent):
    _, histories, report = pipeline
    edges = independent["edges"]
    after = edges[:-1] >= independent["t_snapshot"]
    assert after.sum() == 6                              # 12.69 Gyr of 14.05: the last 6 of 64 bins
    assert np.all(histories[:, 0, after] == 0)
    assert report["snapshot_cosmic_time_gyr"] < edges[-1]


def test_planck15_would_bin_differently(camels, pipeline, independent):
    """The cosmology comes from the file: Planck15's age today differs by 0.25 Gyr (more than a
    bin), and binning the same particles with Planck15 moves mass between bins."""
    ids, histories, report = pipeline
    planck = TimeBins(cosmology=Planck15)
    assert abs(planck.age_of_universe_gyr - report["age_of_universe_today_gyr"]) > 0.2
    moved_bins = 0
    for row, i in enumerate(ids):
        ref = independent["subhalos"][i]
        with_planck, _ = history_from_particles(ref["a"], ref["mass"], ref["metallicity"], planck)
        mass_planck = with_planck[0] * planck.widths
        mass_file = histories[row, 0] * independent["width_yr"]
        moved_bins += int(np.sum(~np.isclose(mass_planck, mass_file, rtol=1e-3, atol=0)))
        # The same stars formed either way...
        assert mass_planck.sum() == pytest.approx(mass_file.sum(), rel=MASS_RTOL)
    # ...but not in the same bins.
    assert moved_bins > 0


def test_writes_a_dataset_with_the_files_time_bins(camels, tmp_path, capsys):
    args = argparse.Namespace(out=str(tmp_path), snapshot_file=str(camels[0]), subhalo_file=str(camels[1]),
                              base_path=None, min_stellar_mass=1e5, limit=None, quiet=True)
    assert main(args) == 0
    assert "camels_snap_train.nc" in capsys.readouterr().out
    train = read_histories(tmp_path / "camels_snap_train.nc")
    test = read_histories(tmp_path / "camels_snap_test.nc")
    assert train.sizes["galaxy"] + test.sizes["galaxy"] == 10
    assert float(train.time_bin_upper_gyr[-1]) == pytest.approx(14.0469, abs=1e-4)
    assert "0.6711" in train.attrs["cosmology"] or "67.11" in train.attrs["cosmology"]


# --------------------------------------------------------------------- tiny files (no ../shared)


def _write_pair(folder, *, header=None, stars=None, lengths=None, extra_snap=None, extra_sub=None):
    """A snapshot + subhalo catalogue in the CAMELS layout: 3 subhalos with 2, 0 and 3 stars
    (one a wind particle), one unbound star at the end; h = 0.7, Omega0 = 0.25, a = 0.8."""
    attrs = {"Time": 0.8, "HubbleParam": 0.7, "Omega0": 0.25, "OmegaLambda": 0.75, "Redshift": 0.25}
    attrs.update(header or {})
    fields = {"GFM_StellarFormationTime": [0.3, 0.5, 0.2, -0.4, 0.79, 0.6],
              "GFM_InitialMass": [1e-4, 2e-4, 1e-4, 1e-4, 3e-4, 1e-4],
              "GFM_Metallicity": [0.01, 0.02, 0.005, 0.01, 0.03, 0.01]}
    fields.update(stars or {})
    snap, sub = folder / "snap.hdf5", folder / "subhalo.hdf5"
    with h5py.File(snap, "w") as f:
        g = f.create_group("Header")
        for key, value in attrs.items():
            if value is not None:
                g.attrs[key] = value
        p = f.create_group("PartType4")
        for key, value in fields.items():
            if value is not None:
                p.create_dataset(key, data=np.asarray(value, dtype=np.float32))
        if extra_snap:
            extra_snap(f)
    with h5py.File(sub, "w") as f:
        n = np.zeros((3, 6), dtype=np.int32)
        n[:, 4] = [2, 0, 3]
        f.create_dataset("Subhalo/SubhaloLenType", data=n if lengths is None else lengths)
        if extra_sub:
            extra_sub(f)
    return snap, sub


def test_tiny_file_known_answer(tmp_path):
    snap, sub = _write_pair(tmp_path)
    ids, histories, report = histories_from_snapshot(snap, sub, progress=False)
    assert list(ids) == [0, 2] and report["n_dropped_no_stars"] == 1 and report["n_particles_wind"] == 1
    assert report["stars_per_subhalo"] == [2, 0, 3] and report["n_star_particles_in_snapshot"] == 6
    age_today = float(cosmic_time_gyr(1.0, 0.7, 0.25))
    assert report["age_of_universe_today_gyr"] == pytest.approx(age_today, abs=1e-6)
    assert report["snapshot_cosmic_time_gyr"] == pytest.approx(float(cosmic_time_gyr(0.8, 0.7, 0.25)), abs=2e-5)
    width_yr = age_today / N_BINS * 1e9
    for row, (a_star, m_star, z_star) in enumerate([([0.3, 0.5], [1e-4, 2e-4], [0.01, 0.02]),
                                                    ([0.2, 0.79], [1e-4, 3e-4], [0.005, 0.03])]):
        k = (cosmic_time_gyr(np.float32(a_star), 0.7, 0.25) / (age_today / N_BINS)).astype(int)
        assert len(set(k)) == 2
        for kk, mm, zz in zip(k, m_star, z_star):
            assert histories[row, 0, kk] == pytest.approx(mm * 1e10 / 0.7 / width_yr, rel=MASS_RTOL)
            assert histories[row, 1, kk] == pytest.approx(np.log10(zz / ZSUN), abs=LOGZ_ATOL)
        assert np.count_nonzero(histories[row, 0]) == 2


def test_tiny_file_without_omega_lambda_or_redshift(tmp_path):
    snap, sub = _write_pair(tmp_path, header={"OmegaLambda": None, "Redshift": None})
    _, _, report = histories_from_snapshot(snap, sub, progress=False)
    assert report["cosmology"]["Ode0"] == pytest.approx(0.75)
    assert report["snapshot_redshift"] == pytest.approx(0.25)


def _fuzzy_groups(f):
    g = np.zeros((1, 6), dtype=np.int32)
    g[0, 4] = 6
    f.create_dataset("Group/GroupLenType", data=g)


@pytest.mark.parametrize("kwargs, message", [
    (dict(header={"HubbleParam": None}), "lacks HubbleParam"),
    (dict(header={"Omega0": None, "Time": None}), "lacks Time, Omega0"),
    (dict(header={"OmegaLambda": 0.7}), "flat"),
    (dict(header={"Redshift": 0.1}), "disagrees with Time"),
    (dict(header={"Time": 1.5}), "must be in"),
    (dict(header={"NumFilesPerSnapshot": 4}), "one of 4 files"),
    (dict(header={"Time": 0.7, "Redshift": None}), "formed after the snapshot"),
    (dict(stars={"GFM_Metallicity": None}), "PartType4 lacks GFM_Metallicity"),
    (dict(stars={"GFM_InitialMass": [1e-4] * 5}), "differ in length"),
    (dict(lengths=np.array([[0, 0, 0, 0, 4, 0], [0, 0, 0, 0, 3, 0]], dtype=np.int32)), "holds only 6"),
    (dict(lengths=np.array([2, 0, 3], dtype=np.int32)), "shape"),
    (dict(lengths=np.array([[0, 0, 0, 0, -1, 0]], dtype=np.int32)), "negative"),
    (dict(extra_sub=_fuzzy_groups), "not back to back"),
])
def test_tiny_file_errors(tmp_path, kwargs, message):
    snap, sub = _write_pair(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message):
        histories_from_snapshot(snap, sub, progress=False)


def test_missing_groups_and_files(tmp_path):
    snap, sub = _write_pair(tmp_path)
    with h5py.File(tmp_path / "empty.hdf5", "w"):
        pass
    with pytest.raises(ValueError, match="no Header group"):
        histories_from_snapshot(tmp_path / "empty.hdf5", sub, progress=False)
    with pytest.raises(ValueError, match="no Subhalo/SubhaloLenType"):
        histories_from_snapshot(snap, tmp_path / "empty.hdf5", progress=False)
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        histories_from_snapshot(tmp_path / "junk.hdf5", sub, progress=False)
    with pytest.raises(FileNotFoundError, match="no snapshot file"):
        histories_from_snapshot(tmp_path / "absent.hdf5", sub, progress=False)
    with pytest.raises(ValueError, match="together"):
        main(argparse.Namespace(out=str(tmp_path), snapshot_file=str(snap), subhalo_file=None, base_path=None))


def test_cosmology_from_header_checks():
    cosmology = cosmology_from_header(0.6711, 0.3)
    assert cosmology.Tcmb0.value == 0 and cosmology.Ode0 == pytest.approx(0.7)
    assert cosmology.age(0).value == pytest.approx(float(cosmic_time_gyr(1.0, 0.6711, 0.3)), abs=1e-6)
    for bad in [(0.0, 0.3), (0.7, 0.0), (0.7, 1.2), (float("nan"), 0.3)]:
        with pytest.raises(ValueError):
            cosmology_from_header(*bad)
