"""The paper's training set from IllustrisTNG (TNG50-1, snapshot 99): star particles of each
subhalo binned into a 64-bin star-formation and metallicity history.

Two sources of star particles, one set of rules:

* the TNG web API (https://www.tng-project.org/data/docs/api/): a search for subhalos with
  SubhaloFlag = 1 and enough stellar mass, then one cutout per subhalo with the stars' fields
  GFM_StellarFormationTime, GFM_InitialMass and GFM_Metallicity.  Cutouts are cached on disk (a
  download goes to a temporary name and is renamed only once it opens as HDF5), so an interrupted
  run resumes where it stopped.  The API key comes from the argument or $TNG_API_KEY and is only
  ever sent in the request header: never logged, printed or written to a file.
* local simulation files read with illustris_python (group catalogue + snapshot chunks + offsets).

The rules (DESIGN.md): formation scale factor -> cosmic time (Planck15, TNG's cosmology); wind
particles (formation time <= 0) excluded; SFR of a bin = sum of initial masses / bin width;
metallicity = initial-mass-weighted mean GFM_Metallicity, Z = 1e-11 in empty bins; subhalos with
any bin above log Z/Zsun = 0.5 dropped; SubhaloFlag true and stellar mass (SubhaloMassType[4])
above 1e5 Msun kept; a deterministic split by subhalo ID.  Particles with a NaN field are dropped
and counted; a subhalo left without stars is skipped and counted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import requests

from .._version import __version__
from ..cosmology import TimeBins, age_at_scale_factor_gyr
from .store import (
    MIN_STELLAR_MASS_MSUN,
    TEST_FRACTION,
    metallicity_channel,
    passes_metallicity_cap,
    split_and_write,
)

log = logging.getLogger(__name__)

API_BASE_URL = "https://www.tng-project.org/api/"
API_KEY_ENV = "TNG_API_KEY"
STAR_FIELDS = ("GFM_StellarFormationTime", "GFM_InitialMass", "GFM_Metallicity")
MASS_UNIT_MSUN_PER_H = 1e10  # TNG masses are in 1e10 Msun/h


class TNGAuthError(RuntimeError):
    """The TNG API refused the API key (HTTP 401/403)."""


class _Transient(Exception):
    """A failure worth retrying: connection error, timeout, HTTP 429/5xx, a truncated download."""


# --------------------------------------------------------------------------------------------
# The binning rules


@dataclass
class ParticleCounts:
    """What happened to a subhalo's star particles."""

    used: int = 0
    wind: int = 0
    nan: int = 0


def history_from_particles(formation_scale_factor, initial_mass_msun, metallicity,
                           time_bins: TimeBins | None = None) -> tuple[np.ndarray, ParticleCounts]:
    """Bin one subhalo's star particles into a (2, n_bins) history by the paper's rules.

    `formation_scale_factor` is GFM_StellarFormationTime (<= 0 marks wind particles, excluded),
    `initial_mass_msun` GFM_InitialMass already in Msun, `metallicity` GFM_Metallicity (mass fraction).
    Particles with a NaN in any of the three are dropped.  Returns the history and the counts.
    """
    bins = time_bins or TimeBins()
    a = np.asarray(formation_scale_factor, dtype=float).ravel()
    mass = np.asarray(initial_mass_msun, dtype=float).ravel()
    z = np.asarray(metallicity, dtype=float).ravel()
    if not (a.shape == mass.shape == z.shape):
        raise ValueError(f"particle fields differ in length: {a.shape}, {mass.shape}, {z.shape}")
    finite = np.isfinite(a) & np.isfinite(mass) & np.isfinite(z)
    star = finite & (a > 0)
    counts = ParticleCounts(used=int(star.sum()), wind=int((finite & (a <= 0)).sum()), nan=int((~finite).sum()))
    t = age_at_scale_factor_gyr(a[star], bins.cosmology)
    edges = bins.edges
    mass_formed, _ = np.histogram(t, bins=edges, weights=mass[star])
    metal_mass, _ = np.histogram(t, bins=edges, weights=mass[star] * z[star])
    history = np.stack([mass_formed / bins.widths, metallicity_channel(mass_formed, metal_mass)])
    return history, counts


def stars_in_msun(fields, hubble_param: float) -> dict[str, np.ndarray]:
    """The three star fields from a mapping (an HDF5 group, illustris_python's dict), with
    GFM_InitialMass converted from 1e10 Msun/h to Msun."""
    stars = {name: np.asarray(fields[name][()]) for name in STAR_FIELDS}
    stars["GFM_InitialMass"] = stars["GFM_InitialMass"] * (MASS_UNIT_MSUN_PER_H / hubble_param)
    return stars


def read_cutout(path) -> dict[str, np.ndarray] | None:
    """Read a TNG API cutout file (HDF5: a Header group and, if the subhalo has stars, PartType4).
    Returns the star fields with masses in Msun, or None for a subhalo without stars."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "Header" not in f:
                raise ValueError(f"{path} has no Header group; not a TNG cutout")
            hubble = f["Header"].attrs.get("HubbleParam")
            if hubble is None:
                raise ValueError(f"{path}: Header lacks HubbleParam")
            if "PartType4" not in f or len(f["PartType4"]) == 0:
                return None
            missing = [name for name in STAR_FIELDS if name not in f["PartType4"]]
            if missing:
                raise ValueError(f"{path}: PartType4 lacks {', '.join(missing)}")
            return stars_in_msun(f["PartType4"], float(hubble))
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {err}") from err


# --------------------------------------------------------------------------------------------
# Source 1: the TNG web API


@dataclass
class TNGClient:
    """A small client for the TNG web API with retries and exponential back-off.

    The key is taken from `api_key` or $TNG_API_KEY; it is sent in the `api-key` header only and
    hidden from repr().  `sleep` is injectable so tests can run without waiting.
    """

    api_key: str | None = field(default=None, repr=False)
    simulation: str = "TNG50-1"
    snapshot: int = 99
    base_url: str = API_BASE_URL
    max_retries: int = 5
    backoff_s: float = 2.0
    timeout_s: float = 120.0
    page_size: int = 1000
    sleep: object = field(default=time.sleep, repr=False)

    def __post_init__(self):
        self.api_key = self.api_key or os.environ.get(API_KEY_ENV)
        if not self.api_key:
            raise TNGAuthError(f"no TNG API key: pass api_key or set ${API_KEY_ENV} "
                               "(get one at https://www.tng-project.org/users/register/)")
        if not self.base_url.endswith("/"):
            self.base_url += "/"
        self._session = requests.Session()
        self._session.headers["api-key"] = self.api_key
        self._hubble = None

    @property
    def snapshot_url(self) -> str:
        return f"{self.base_url}{self.simulation}/snapshots/{self.snapshot}/"

    def _get(self, url: str, params: dict | None = None, stream: bool = False):
        """One GET.  Connection errors, timeouts, 429 and 5xx raise _Transient (retried by the
        caller); 401/403 raise TNGAuthError; any other non-200 status a RuntimeError."""
        try:
            response = self._session.get(url, params=params, stream=stream, timeout=self.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise _Transient(type(err).__name__) from None
        if response.status_code in (401, 403):
            response.close()
            raise TNGAuthError(f"the TNG API refused the API key (HTTP {response.status_code}) for {url}")
        if response.status_code == 429 or response.status_code >= 500:
            response.close()
            raise _Transient(f"HTTP {response.status_code}")
        if response.status_code != 200:
            response.close()
            raise RuntimeError(f"TNG API: HTTP {response.status_code} for {url}")
        return response

    def _retrying(self, what: str, action):
        """Run `action` up to max_retries + 1 times, sleeping backoff_s * 2**k between attempts."""
        last = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return action()
            except _Transient as err:
                last = err
                log.warning("TNG API: %s on %s (attempt %d of %d)", err, what, attempt + 1, self.max_retries + 1)
        raise RuntimeError(f"TNG API: giving up on {what} after {self.max_retries + 1} attempts ({last})")

    def _json(self, url: str, params: dict | None = None) -> dict:
        def fetch():
            response = self._get(url, params)
            try:
                return response.json()
            except ValueError:
                raise _Transient("incomplete JSON") from None

        return self._retrying(url, fetch)

    def search_subhalos(self, min_stellar_mass_msun: float = MIN_STELLAR_MASS_MSUN) -> tuple[np.ndarray, dict]:
        """IDs of subhalos with SubhaloFlag = 1 and SubhaloMassType[4] above the threshold, in ID
        order, following the API's pagination.  Returns (ids, query) where query is what was asked."""
        hubble = self.hubble_param()
        query = {"subhaloflag": 1, "mass_stars__gt": min_stellar_mass_msun * hubble / MASS_UNIT_MSUN_PER_H,
                 "order_by": "id", "limit": self.page_size}
        url, params, ids = f"{self.snapshot_url}subhalos/", dict(query), []
        while url:
            page = self._json(url, params)
            ids.extend(int(item["id"]) for item in page["results"])
            url, params = page.get("next"), None  # "next" carries the query string
        return np.array(sorted(set(ids)), dtype=np.int64), query

    def hubble_param(self) -> float:
        """h of the simulation (TNG: 0.6774), from the simulation's API entry (asked once)."""
        if self._hubble is None:
            self._hubble = float(self._json(f"{self.base_url}{self.simulation}/")["hubble"])
        return self._hubble

    def cutout_path(self, cache_dir, subhalo_id: int) -> Path:
        return Path(cache_dir) / f"{self.simulation}_{self.snapshot:03d}" / f"cutout_{int(subhalo_id)}.hdf5"

    def download_cutout(self, subhalo_id: int, cache_dir) -> Path:
        """The subhalo's star cutout, downloaded once into the cache.  A download is streamed to a
        temporary file and renamed only after it opens as an HDF5 file with a Header group, so a
        half-written file is never taken as complete."""
        path = self.cutout_path(cache_dir, subhalo_id)
        if path.exists():
            return path
        url = f"{self.snapshot_url}subhalos/{int(subhalo_id)}/cutout.hdf5"
        params = {"stars": ",".join(STAR_FIELDS)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")

        def fetch():
            try:
                with self._get(url, params, stream=True) as response, open(tmp, "wb") as out:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        out.write(chunk)
                read_cutout(tmp)
            except (requests.RequestException, ValueError) as err:
                tmp.unlink(missing_ok=True)
                raise _Transient(f"incomplete download ({type(err).__name__})") from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, path)
            return path

        return self._retrying(f"cutout of subhalo {int(subhalo_id)}", fetch)

    def star_particles(self, subhalo_id: int, cache_dir) -> dict[str, np.ndarray] | None:
        """The subhalo's star fields (masses in Msun; None without stars), from the cache or the
        API.  A cached file that no longer opens (a disk filled up, a copy cut short) is fetched again."""
        path = self.download_cutout(subhalo_id, cache_dir)
        try:
            return read_cutout(path)
        except ValueError:
            log.warning("cached cutout %s is unreadable; downloading it again", path)
            path.unlink()
            return read_cutout(self.download_cutout(subhalo_id, cache_dir))


def histories_from_api(client: TNGClient, cache_dir, *, min_stellar_mass_msun: float = MIN_STELLAR_MASS_MSUN,
                       time_bins: TimeBins | None = None, progress: bool = True, limit: int | None = None):
    """Search, download (resumably) and bin every selected subhalo.  Returns (ids, histories, report)."""
    ids, query = client.search_subhalos(min_stellar_mass_msun)
    if limit is not None:
        ids = ids[:limit]

    report = {"source": "TNG web API", "api_url": client.snapshot_url, "api_query": query}
    return _bin_subhalos(ids, lambda i: client.star_particles(i, cache_dir), time_bins, progress, report)


# --------------------------------------------------------------------------------------------
# Source 2: local simulation files (illustris_python)


def histories_from_local(base_path, snapshot: int = 99, *, min_stellar_mass_msun: float = MIN_STELLAR_MASS_MSUN,
                         time_bins: TimeBins | None = None, progress: bool = True, limit: int | None = None):
    """Read the group catalogue and the snapshot chunks under `base_path` (the simulation's
    `output` folder: groups_099/, snapdir_099/, and ../postprocessing/offsets/) with illustris_python,
    select and bin every subhalo.  Returns (ids, histories, report)."""
    import illustris_python as il

    base_path = str(base_path)
    try:
        header = il.groupcat.loadHeader(base_path, snapshot)
        catalogue = il.groupcat.loadSubhalos(base_path, snapshot, fields=["SubhaloFlag", "SubhaloMassType"])
    except (OSError, KeyError) as err:
        raise ValueError(f"cannot read the group catalogue of snapshot {snapshot} under {base_path}: {err}") from err
    except Exception as err:  # illustris_python raises bare Exception for a missing field
        raise ValueError(f"group catalogue under {base_path}: {err}") from err
    hubble = float(header["HubbleParam"])
    if catalogue["count"] == 0:
        ids = np.zeros(0, dtype=np.int64)
    else:
        stellar_mass = catalogue["SubhaloMassType"][:, 4] * (MASS_UNIT_MSUN_PER_H / hubble)
        ids = np.flatnonzero((catalogue["SubhaloFlag"] != 0) & (stellar_mass > min_stellar_mass_msun))
    if limit is not None:
        ids = ids[:limit]

    def stars_of(subhalo_id):
        try:
            stars = il.snapshot.loadSubhalo(base_path, snapshot, int(subhalo_id), "stars", fields=list(STAR_FIELDS))
        except OSError as err:
            raise ValueError(f"cannot read the snapshot chunks of snapshot {snapshot} under {base_path} "
                             f"(subhalo {subhalo_id}; truncated or corrupt file?): {err}") from err
        return None if stars["count"] == 0 else stars_in_msun(stars, hubble)

    report = {"source": "TNG local simulation files (illustris_python)", "base_path": base_path,
              "hubble_param": hubble}
    return _bin_subhalos(ids, stars_of, time_bins, progress, report)


# --------------------------------------------------------------------------------------------
# Both sources


def _bin_subhalos(ids, stars_of, time_bins, progress, report):
    """Bin the stars of every subhalo in `ids` (`stars_of(id)` gives its fields or None) and apply
    the cuts.  Returns (kept ids, histories (n, 2, n_bins), report with the counts)."""
    from tqdm.auto import tqdm

    bins = time_bins or TimeBins()
    kept_ids, histories = [], []
    dropped = {"no_stars": [], "metallicity_cap": []}
    particles = ParticleCounts()
    for subhalo_id in tqdm(ids, desc="subhalos", unit="subhalo", disable=not progress):
        stars = stars_of(subhalo_id)
        if stars is None:
            dropped["no_stars"].append(int(subhalo_id))
            continue
        history, counts = history_from_particles(stars["GFM_StellarFormationTime"], stars["GFM_InitialMass"],
                                                 stars["GFM_Metallicity"], bins)
        particles.used += counts.used
        particles.wind += counts.wind
        particles.nan += counts.nan
        if counts.used == 0:
            dropped["no_stars"].append(int(subhalo_id))
        elif not passes_metallicity_cap(history):
            dropped["metallicity_cap"].append(int(subhalo_id))
        else:
            kept_ids.append(int(subhalo_id))
            histories.append(history)
    if particles.nan:
        log.warning("dropped %d star particles with NaN fields", particles.nan)
    report = dict(report, n_selected=len(ids), n_kept=len(kept_ids),
                  n_dropped_no_stars=len(dropped["no_stars"]),
                  n_dropped_metallicity_cap=len(dropped["metallicity_cap"]),
                  n_particles_used=particles.used, n_particles_wind=particles.wind,
                  n_particles_nan=particles.nan)
    return np.array(kept_ids, dtype=np.int64), np.array(histories).reshape(-1, 2, bins.n_bins), report


def build_tng_dataset(out_dir, *, source: str = "api", api_key: str | None = None, base_path=None,
                      simulation: str = "TNG50-1", snapshot: int = 99, cache_dir=None,
                      min_stellar_mass_msun: float = MIN_STELLAR_MASS_MSUN, test_fraction: float = TEST_FRACTION,
                      time_bins: TimeBins | None = None, progress: bool = True, limit: int | None = None,
                      client: TNGClient | None = None) -> dict[str, Path]:
    """Build `<simulation>_snap<snapshot>_{train,test}.nc` in `out_dir` from the API or local files.
    Nothing is written to `out_dir` unless every selected subhalo was read."""
    bins = time_bins or TimeBins()
    if source == "api":
        client = client or TNGClient(api_key=api_key, simulation=simulation, snapshot=snapshot)
        if cache_dir is None:
            from ..ssp import default_cache_dir

            cache_dir = Path(default_cache_dir()) / "tng_cutouts"
        ids, histories, report = histories_from_api(client, cache_dir, min_stellar_mass_msun=min_stellar_mass_msun,
                                                    time_bins=bins, progress=progress, limit=limit)
    elif source == "local":
        if base_path is None:
            raise ValueError("source='local' needs base_path (the simulation's output folder)")
        ids, histories, report = histories_from_local(base_path, snapshot, min_stellar_mass_msun=min_stellar_mass_msun,
                                                      time_bins=bins, progress=progress, limit=limit)
    else:
        raise ValueError(f"source must be 'api' or 'local', got {source!r}")
    if len(ids) < 2:
        raise ValueError(f"only {len(ids)} subhalos passed the cuts; nothing written")
    attrs = dict(
        report,
        description=f"{simulation} snapshot {snapshot} star particles binned into 64 Planck15 time bins "
                    "by the rules of Perry-Fagant et al. (sfhkit.data.tng)",
        simulation=simulation, snapshot=snapshot, is_tng50=int(simulation.startswith("TNG50")),
        cuts={"SubhaloFlag": 1, "min_stellar_mass_msun (SubhaloMassType[4])": min_stellar_mass_msun,
              "max_logz_solar": 0.5, "wind_particles": "GFM_StellarFormationTime <= 0 excluded",
              "nan_particles": "excluded"},
        particle_fields=list(STAR_FIELDS), builder=f"sfhkit {__version__}",
    )
    prefix = f"{simulation}_snap{snapshot:03d}"
    return split_and_write(histories, ids, out_dir, prefix=prefix, attrs=attrs, time_bins=bins,
                           test_fraction=test_fraction)


def main(args) -> int:
    """`sfhkit data tng`."""
    paths = build_tng_dataset(args.out, source="local" if args.base_path else "api", api_key=args.api_key,
                              base_path=args.base_path, simulation=args.simulation, snapshot=args.snapshot,
                              cache_dir=args.cache_dir, min_stellar_mass_msun=args.min_stellar_mass,
                              limit=args.limit, progress=not args.quiet)
    print(json.dumps({split: str(p) for split, p in paths.items()}, indent=1))
    return 0
