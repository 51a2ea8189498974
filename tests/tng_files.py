"""Writers for small files in the exact upstream TNG layouts, used by the tests:

* an API cutout (cutout_<id>.hdf5 as https://www.tng-project.org/api/.../cutout.hdf5?stars=... returns
  it: a Header group with the snapshot header attributes and a PartType4 group with the requested
  fields, float32, masses in 1e10 Msun/h; no PartType4 group for a subhalo without stars);
* a local simulation: output/groups_099/fof_subhalo_tab_099.<n>.hdf5 (group catalogue chunks),
  output/snapdir_099/snap_099.<n>.hdf5 (snapshot chunks, particles ordered by group and subhalo)
  and postprocessing/offsets/offsets_099.hdf5, as illustris_python reads them.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

HUBBLE = 0.6774
FIELDS = ("GFM_StellarFormationTime", "GFM_InitialMass", "GFM_Metallicity")


def _header_attrs(group, n_this_file, n_total, num_files):
    group.attrs["BoxSize"] = 35000.0
    group.attrs["HubbleParam"] = HUBBLE
    group.attrs["MassTable"] = np.zeros(6)
    group.attrs["NumFilesPerSnapshot"] = np.int32(num_files)
    group.attrs["NumPart_ThisFile"] = np.asarray(n_this_file, dtype=np.int32)
    group.attrs["NumPart_Total"] = np.asarray(n_total, dtype=np.uint32)
    group.attrs["NumPart_Total_HighWord"] = np.zeros(6, dtype=np.uint32)
    group.attrs["Omega0"] = 0.3089
    group.attrs["OmegaBaryon"] = 0.0486
    group.attrs["OmegaLambda"] = 0.6911
    group.attrs["Redshift"] = 2.220446049250313e-16
    group.attrs["Time"] = 1.0
    group.attrs["UnitLength_in_cm"] = 3.085678e21
    group.attrs["UnitMass_in_g"] = 1.989e43
    group.attrs["UnitVelocity_in_cm_per_s"] = 1e5


def write_cutout(path, stars: dict | None) -> Path:
    """An API star cutout; `stars` maps the three field names to arrays (TNG units), or None."""
    path = Path(path)
    n = 0 if stars is None else len(stars[FIELDS[0]])
    with h5py.File(path, "w") as f:
        _header_attrs(f.create_group("Header"), [0, 0, 0, 0, n, 0], [0, 0, 0, 0, n, 0], 1)
        if stars is not None:
            g = f.create_group("PartType4")
            for name in FIELDS:
                g.create_dataset(name, data=np.asarray(stars[name], dtype=np.float32))
    return path


def write_simulation(root, subhalos: list[dict], *, flags, masstype_stars, n_gc_files=2, n_snap_files=2,
                     fuzz_between=2) -> str:
    """A TNG-layout simulation under `root`; returns basePath (root/output).

    `subhalos[i]` holds subhalo i's star fields (TNG units); `flags[i]` its SubhaloFlag,
    `masstype_stars[i]` its SubhaloMassType[4] (1e10 Msun/h).  All subhalos belong to one FoF
    group; `fuzz_between` unbound star particles sit after every subhalo so offsets matter.
    """
    root = Path(root)
    base = root / "output"
    (base / "groups_099").mkdir(parents=True, exist_ok=True)
    (base / "snapdir_099").mkdir(parents=True, exist_ok=True)
    (root / "postprocessing" / "offsets").mkdir(parents=True, exist_ok=True)
    n_sub = len(subhalos)
    rng = np.random.default_rng(0)

    # Particle order: subhalo 0's stars, fuzz, subhalo 1's stars, fuzz, ...
    fields = {name: [] for name in FIELDS}
    sub_len = np.zeros((n_sub, 6), dtype=np.int32)
    sub_offset = np.zeros((n_sub, 6), dtype=np.int64)
    position = 0
    for i, stars in enumerate(subhalos):
        n = 0 if stars is None else len(stars[FIELDS[0]])
        sub_len[i, 4], sub_offset[i, 4] = n, position
        for name in FIELDS:
            if n:
                fields[name].append(np.asarray(stars[name], dtype=np.float32))
            fuzz = {"GFM_StellarFormationTime": rng.uniform(0.2, 1.0, fuzz_between),
                    "GFM_InitialMass": np.full(fuzz_between, 1e-5), "GFM_Metallicity": np.full(fuzz_between, 0.5)}
            fields[name].append(fuzz[name].astype(np.float32))
        position += n + fuzz_between
    fields = {name: np.concatenate(v) for name, v in fields.items()}
    n_part = position

    # Snapshot chunks: split the star particles into n_snap_files nearly equal pieces.
    bounds = np.linspace(0, n_part, n_snap_files + 1).astype(int)
    for i in range(n_snap_files):
        lo, hi = bounds[i], bounds[i + 1]
        with h5py.File(base / "snapdir_099" / f"snap_099.{i}.hdf5", "w") as f:
            _header_attrs(f.create_group("Header"), [0, 0, 0, 0, hi - lo, 0], [0, 0, 0, 0, n_part, 0], n_snap_files)
            g = f.create_group("PartType4")
            for name in FIELDS:
                g.create_dataset(name, data=fields[name][lo:hi])

    # Group catalogue chunks: one group (in file 0); subhalos split across files.
    sub_bounds = np.linspace(0, n_sub, n_gc_files + 1).astype(int)
    mass_type = np.zeros((n_sub, 6), dtype=np.float32)
    mass_type[:, 4] = masstype_stars
    for i in range(n_gc_files):
        lo, hi = sub_bounds[i], sub_bounds[i + 1]
        with h5py.File(base / "groups_099" / f"fof_subhalo_tab_099.{i}.hdf5", "w") as f:
            h = f.create_group("Header")
            h.attrs["HubbleParam"] = HUBBLE
            h.attrs["Ngroups_ThisFile"] = np.int32(1 if i == 0 else 0)
            h.attrs["Ngroups_Total"] = np.int32(1)
            h.attrs["Nsubgroups_ThisFile"] = np.int32(hi - lo)
            h.attrs["Nsubgroups_Total"] = np.int32(n_sub)
            h.attrs["NumFiles"] = np.int32(n_gc_files)
            h.attrs["Redshift"] = 2.220446049250313e-16
            h.attrs["Time"] = 1.0
            grp = f.create_group("Group")
            if i == 0:
                grp.create_dataset("GroupLenType", data=np.array([[0, 0, 0, 0, n_part, 0]], dtype=np.int32))
                grp.create_dataset("GroupFirstSub", data=np.array([0], dtype=np.int32))
                grp.create_dataset("GroupNsubs", data=np.array([n_sub], dtype=np.int32))
            sub = f.create_group("Subhalo")
            sub.create_dataset("SubhaloFlag", data=np.asarray(flags, dtype=np.uint8)[lo:hi])
            sub.create_dataset("SubhaloMassType", data=mass_type[lo:hi])
            sub.create_dataset("SubhaloLenType", data=sub_len[lo:hi])
            sub.create_dataset("SubhaloGrNr", data=np.zeros(hi - lo, dtype=np.int32))

    with h5py.File(root / "postprocessing" / "offsets" / "offsets_099.hdf5", "w") as f:
        snap_by_type = np.zeros((6, n_snap_files), dtype=np.int64)
        snap_by_type[4] = bounds[:-1]
        f.create_dataset("FileOffsets/SnapByType", data=snap_by_type.T)  # (n_files, 6)
        f.create_dataset("FileOffsets/Group", data=np.array([0] + [1] * (n_gc_files - 1), dtype=np.int64))
        f.create_dataset("FileOffsets/Subhalo", data=sub_bounds[:-1].astype(np.int64))
        f.create_dataset("Group/SnapByType", data=np.zeros((1, 6), dtype=np.int64))
        f.create_dataset("Subhalo/SnapByType", data=sub_offset)
    return str(base)
