"""The TNG50 pipeline on small files in the exact upstream formats: known answers by hand for a few
particles, both sources (web API through a real HTTP server, local files through illustris_python)
giving the same file, and the bad-input cases."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import h5py
import numpy as np
import pytest
from astropy.cosmology import Planck15

from sfhkit.cosmology import TimeBins
from sfhkit.data import read_histories
from sfhkit.data.store import EMPTY_BIN_LOGZ
from sfhkit.data.tng import (
    TNGAuthError,
    TNGClient,
    build_tng_dataset,
    history_from_particles,
    read_cutout,
)
from tng_files import HUBBLE, write_cutout, write_simulation

KEY = "0123456789abcdef0123456789abcdef"
MSUN_PER_UNIT = 1e10 / HUBBLE


def _stars(a, m, z):
    return {"GFM_StellarFormationTime": np.array(a, dtype=float), "GFM_InitialMass": np.array(m, dtype=float),
            "GFM_Metallicity": np.array(z, dtype=float)}


# Subhalo 0: the hand-worked one.  Two stars formed at a = 1 (today), a wind particle, a star at
# a = 0.5 (z = 1) and a star with a NaN metallicity.
KNOWN = _stars([1.0, 1.0, -0.5, 0.5, 0.7], [1e-5, 3e-5, 5e-5, 2e-5, 1e-5], [0.02, 0.01, 0.03, 0.0142, np.nan])


def _population():
    """(stars per subhalo, SubhaloFlag, SubhaloMassType[4]) for 36 subhalos."""
    rng = np.random.default_rng(1)
    subhalos = [KNOWN,
                _stars([0.9, 0.95], [2e-5, 2e-5], [0.0142 * 10**0.7] * 2),       # 1: above the Z cap
                _stars([0.8, 0.9], [2e-5, 2e-5], [0.01, 0.01]),                  # 2: SubhaloFlag = 0
                _stars([0.8], [1e-6], [0.01]),                                   # 3: below 1e5 Msun
                _stars([-0.3, -0.9], [2e-5, 2e-5], [0.01, 0.01])]                # 4: only wind particles
    for _ in range(31):                                                          # 5..35: ordinary
        n = int(rng.integers(5, 40))
        subhalos.append(_stars(rng.uniform(0.1, 1.0, n), rng.uniform(0.5e-5, 2e-5, n), rng.uniform(0.001, 0.03, n)))
    flags = np.ones(len(subhalos), dtype=int)
    flags[2] = 0
    mass = np.array([np.nansum(s["GFM_InitialMass"]) for s in subhalos])  # stand-in for the bound stellar mass
    mass[4] = 4e-5
    return subhalos, flags, mass


# ------------------------------------------------------------------------------------------ rules


def test_known_answer_by_hand():
    bins = TimeBins()
    history, counts = history_from_particles(KNOWN["GFM_StellarFormationTime"],
                                             KNOWN["GFM_InitialMass"] * MSUN_PER_UNIT, KNOWN["GFM_Metallicity"], bins)
    assert (counts.used, counts.wind, counts.nan) == (3, 1, 1)
    width_yr = Planck15.age(0).value * 1e9 / 64
    # Last bin: 1e-5 + 3e-5 (1e10 Msun/h) formed today; Z = (1 x 0.02 + 3 x 0.01) / 4 = 0.0125.
    assert history[0, 63] == pytest.approx(4e-5 * 1e10 / 0.6774 / width_yr, rel=1e-9)
    assert history[1, 63] == pytest.approx(np.log10(0.0125 / 0.0142), abs=1e-9)
    # a = 0.5 is z = 1: cosmic time from astropy, bin by hand.
    k = int(Planck15.age(1.0).value / (Planck15.age(0).value / 64))
    assert history[0, k] == pytest.approx(2e-5 * 1e10 / 0.6774 / width_yr, rel=1e-9)
    assert history[1, k] == pytest.approx(0.0, abs=1e-9)
    others = np.setdiff1d(np.arange(64), [k, 63])
    assert np.all(history[0, others] == 0)
    assert np.allclose(history[1, others], np.log10(1e-11 / 0.0142))
    assert EMPTY_BIN_LOGZ == pytest.approx(np.log10(1e-11 / 0.0142))


def test_particle_fields_must_agree_in_length():
    with pytest.raises(ValueError, match="differ in length"):
        history_from_particles([0.5, 0.6], [1.0], [0.01])


# ------------------------------------------------------------------------- local files (illustris)


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    subhalos, flags, mass = _population()
    root = tmp_path_factory.mktemp("TNG50-1")
    return write_simulation(root, subhalos, flags=flags, masstype_stars=mass)


def test_local_files_known_answers_and_cuts(simulation, tmp_path):
    paths = build_tng_dataset(tmp_path, source="local", base_path=simulation, progress=False)
    train, test = read_histories(paths["train"]), read_histories(paths["test"])
    ids = np.concatenate([train.galaxy_id.values, test.galaxy_id.values])
    # 1 dropped by the cap, 2 by SubhaloFlag, 3 by mass, 4 has no stars once wind is excluded.
    assert sorted(ids) == [0] + list(range(5, 36))
    assert train.attrs["n_dropped_metallicity_cap"] == 1 and train.attrs["n_dropped_no_stars"] == 1
    assert train.attrs["n_particles_nan"] == 1
    both = xr_concat(train, test)
    known = both.histories.sel(galaxy=int(np.flatnonzero(both.galaxy_id.values == 0)[0])).values
    expected, _ = history_from_particles(KNOWN["GFM_StellarFormationTime"], KNOWN["GFM_InitialMass"] * MSUN_PER_UNIT,
                                         KNOWN["GFM_Metallicity"])
    # float32 storage of the particle fields and of the file
    np.testing.assert_allclose(known, expected, rtol=2e-6, atol=1e-6)
    # The normalisation travels with both files and is the training split's.
    np.testing.assert_allclose(test.norm_mean.values, train.histories.values.astype(float).mean(axis=0), rtol=1e-5)
    assert test.attrs["is_tng50"] == 1 and "SubhaloFlag" in test.attrs["cuts"]


def xr_concat(a, b):
    import xarray as xr

    return xr.concat([a.histories, b.histories], dim="galaxy").to_dataset().assign_coords(
        galaxy_id=("galaxy", np.concatenate([a.galaxy_id.values, b.galaxy_id.values])))


def test_truncated_snapshot_chunk_gives_clear_error(simulation, tmp_path):
    import shutil

    root = tmp_path / "sim"
    shutil.copytree(Path(simulation).parent, root)
    chunk = root / "output" / "snapdir_099" / "snap_099.1.hdf5"
    chunk.write_bytes(chunk.read_bytes()[:300])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="snapshot"):
        build_tng_dataset(out, source="local", base_path=str(root / "output"), progress=False)
    assert not out.exists() or not any(out.iterdir())


def test_missing_group_catalogue_gives_clear_error(tmp_path):
    with pytest.raises(ValueError, match="group catalogue"):
        build_tng_dataset(tmp_path / "out", source="local", base_path=str(tmp_path), progress=False)


# ----------------------------------------------------------------------------------- the web API


class FakeTNG:
    """A real HTTP server answering like the TNG API from recorded content: the simulation entry,
    the paginated subhalo search and the cutout files; faults can be injected per subhalo."""

    def __init__(self, tmp_path, subhalos, flags, mass):
        self.cutouts = {}
        for i, stars in enumerate(subhalos):
            keep = {k: v for k, v in stars.items()}
            self.cutouts[i] = write_cutout(tmp_path / f"served_{i}.hdf5", keep).read_bytes()
        self.flags, self.mass = flags, mass
        self.faults: dict[int, list[str]] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                if self.headers.get("api-key") != KEY:
                    return self._send(403, b'{"detail": "Invalid API key."}', "application/json")
                url = urlparse(self.path)
                parts = [p for p in url.path.split("/") if p]
                query = parse_qs(url.query)
                if parts == ["api", "TNG50-1"]:
                    return self._json({"name": "TNG50-1", "hubble": HUBBLE, "num_snapshots": 100})
                if parts == ["api", "TNG50-1", "snapshots", "99", "subhalos"]:
                    return self._search(query)
                if len(parts) == 7 and parts[:5] == ["api", "TNG50-1", "snapshots", "99", "subhalos"] \
                        and parts[-1] == "cutout.hdf5":
                    return self._cutout(int(parts[5]), query)
                return self._send(404, b'{"detail": "Not found."}', "application/json")

            def _search(self, query):
                threshold = float(query["mass_stars__gt"][0])
                assert query["subhaloflag"] == ["1"]
                ids = [i for i in range(len(outer.flags)) if outer.flags[i] == 1 and outer.mass[i] > threshold]
                limit, offset = int(query["limit"][0]), int(query.get("offset", ["0"])[0])
                page = ids[offset:offset + limit]
                nxt = None
                if offset + limit < len(ids):
                    nxt = (f"http://127.0.0.1:{self.server.server_port}/api/TNG50-1/snapshots/99/subhalos/?"
                           f"subhaloflag=1&mass_stars__gt={threshold}&order_by=id&limit={limit}&offset={offset + limit}")
                results = [{"id": i, "sfr": 0.0, "mass_log_msun": 9.0,
                            "url": f"http://www.tng-project.org/api/TNG50-1/snapshots/99/subhalos/{i}/"} for i in page]
                return self._json({"count": len(ids), "next": nxt, "previous": None, "results": results})

            def _cutout(self, subhalo_id, query):
                assert query["stars"] == ["GFM_StellarFormationTime,GFM_InitialMass,GFM_Metallicity"]
                body = outer.cutouts[subhalo_id]
                fault = outer.faults.get(subhalo_id, [])
                action = fault.pop(0) if fault else None
                if action == "503":
                    return self._send(503, b"busy", "text/plain")
                self.send_response(200)
                self.send_header("Content-Type", "application/x-hdf5")
                self.send_header("Content-Disposition", f"attachment; filename=cutout_{subhalo_id}.hdf5")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # "truncate": the connection drops half way through the file.
                self.wfile.write(body[: len(body) // 2] if action == "truncate" else body)

            def _json(self, obj):
                self._send(200, json.dumps(obj).encode(), "application/json")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/"

    def client(self, key=KEY, **kw):
        return TNGClient(api_key=key, base_url=self.url, sleep=lambda s: None, max_retries=2, page_size=10, **kw)

    def cutout_requests(self):
        return [r for r in self.requests if "cutout" in r]


@pytest.fixture
def api(tmp_path):
    subhalos, flags, mass = _population()
    server = FakeTNG(tmp_path, subhalos, flags, mass)
    yield server
    server.server.shutdown()


def test_api_and_local_files_give_the_same_file(api, simulation, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    api.faults = {7: ["503"], 9: ["truncate"]}  # retried with back-off, and a half download re-fetched
    out_api = tmp_path / "api"
    cache = tmp_path / "cache"
    paths_api = build_tng_dataset(out_api, client=api.client(), cache_dir=cache, progress=False)
    paths_local = build_tng_dataset(tmp_path / "local", source="local", base_path=simulation, progress=False)
    for split in ("train", "test"):
        a, b = read_histories(paths_api[split]), read_histories(paths_local[split])
        np.testing.assert_array_equal(a.galaxy_id.values, b.galaxy_id.values)
        np.testing.assert_array_equal(a.histories.values, b.histories.values)
        assert a.attrs["source"] == "TNG web API"
    # The key is never written anywhere nor logged.
    for path in list(out_api.rglob("*")) + list(cache.rglob("*")):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes()
    assert KEY not in caplog.text
    assert KEY not in repr(api.client())
    assert not list(cache.rglob("*.part"))


def test_api_resumes_without_refetching_finished_cutouts(api, tmp_path):
    cache = tmp_path / "cache"
    api.faults = {20: ["503"] * 3}  # subhalo 20 fails all 3 attempts: the run stops there
    with pytest.raises(RuntimeError, match="20"):
        build_tng_dataset(tmp_path / "out", client=api.client(), cache_dir=cache, progress=False)
    assert not (tmp_path / "out").exists()
    finished = sorted(int(p.stem.split("_")[1]) for p in cache.rglob("cutout_*.hdf5"))
    assert finished == [0, 1] + list(range(4, 20))
    # A killed download left a partial file; a cached cutout was truncated by a full disk.
    folder = next(cache.rglob("cutout_0.hdf5")).parent
    (folder / "cutout_21.hdf5.part").write_bytes(b"\x89HDF\r\n")
    truncated = folder / "cutout_5.hdf5"
    truncated.write_bytes(truncated.read_bytes()[:200])
    api.requests.clear()
    paths = build_tng_dataset(tmp_path / "out", client=api.client(), cache_dir=cache, progress=False)
    fetched = sorted({int(urlparse(r).path.split("/")[-2]) for r in api.cutout_requests()})
    assert fetched == [5] + list(range(20, 36))
    assert read_histories(paths["train"]).attrs["n_kept"] == 32


@pytest.mark.parametrize("key", ["wrong-key", None])
def test_wrong_or_missing_api_key_writes_nothing(api, tmp_path, monkeypatch, key):
    monkeypatch.delenv("TNG_API_KEY", raising=False)
    with pytest.raises(TNGAuthError, match="API key"):
        build_tng_dataset(tmp_path / "out", client=api.client(key=key) if key else None,
                          cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_api_key_from_environment(api, monkeypatch):
    monkeypatch.setenv("TNG_API_KEY", KEY)
    client = TNGClient(base_url=api.url, sleep=lambda s: None)
    assert client.hubble_param() == pytest.approx(HUBBLE)


def test_cutout_reader(tmp_path):
    assert read_cutout(write_cutout(tmp_path / "empty.hdf5", None)) is None
    stars = read_cutout(write_cutout(tmp_path / "c.hdf5", KNOWN))
    np.testing.assert_allclose(stars["GFM_InitialMass"], KNOWN["GFM_InitialMass"] * MSUN_PER_UNIT, rtol=1e-6)
    (tmp_path / "bad.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_cutout(tmp_path / "bad.hdf5")
    with h5py.File(tmp_path / "noheader.hdf5", "w") as f:
        f.create_group("PartType4")
    with pytest.raises(ValueError, match="Header"):
        read_cutout(tmp_path / "noheader.hdf5")
