"""The paper's training set from IllustrisTNG (TNG50-1, snapshot 99): star particles of each
subhalo binned into a 64-bin star-formation and metallicity history.

Three sources of star particles, one set of rules:

* the TNG web API (https://www.tng-project.org/data/docs/api/): a search for subhalos with
  SubhaloFlag = 1 and enough stellar mass, then one cutout per subhalo with the stars' fields
  GFM_StellarFormationTime, GFM_InitialMass and GFM_Metallicity.  Cutouts are cached on disk (a
  download goes to a temporary name and is renamed only once it opens as HDF5), so an interrupted
  run resumes where it stopped.  The API key comes from the argument or $TNG_API_KEY and is only
  ever sent in the request header: never logged, printed or written to a file.
* local simulation files read with illustris_python (group catalogue + snapshot chunks + offsets);
* one snapshot file and one subhalo catalogue file (the CAMELS-IllustrisTNG layout, e.g.
  ../shared/data/camels_tng/): the simulation's own cosmology is read from the snapshot header and
  the 64 time bins span t = 0 to the age of the universe today *in that cosmology*
  (histories_from_snapshot, build_snapshot_dataset).

The rules (DESIGN.md): formation scale factor -> cosmic time (Planck15, TNG's cosmology; the
one-file source uses the file's own cosmology instead); wind particles (formation time <= 0)
excluded; SFR of a bin = sum of initial masses / bin width;
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import requests
from astropy.cosmology import Cosmology, FlatLambdaCDM

from .._version import __version__
from ..cosmology import N_TIME_BINS, TimeBins, age_at_scale_factor_gyr
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
# Source 3: one snapshot file + one subhalo catalogue file (the CAMELS-IllustrisTNG layout)

FLATNESS_TOLERANCE = 1e-4      # largest |Omega0 + OmegaLambda - 1| accepted as a flat model
FORMATION_TIME_SLACK = 1e-6    # relative: a float32 formation scale factor may round just above Time


@dataclass(frozen=True)
class SnapshotHeader:
    """What the binning takes from a snapshot's `Header` attributes.

    scale_factor  `Time`, the snapshot's scale factor a (0 < a <= 1)
    redshift      `Redshift`, or 1/a - 1 when the header has none
    hubble_param  `HubbleParam` h (H0 = 100 h km/s/Mpc; masses are in 1e10 Msun/h)
    omega_matter  `Omega0`
    omega_lambda  `OmegaLambda`, or None when the header has none (1 - Omega0 is then assumed)
    cosmology     the flat LambdaCDM model they define (cosmology_from_header)
    """

    scale_factor: float
    redshift: float
    hubble_param: float
    omega_matter: float
    omega_lambda: float | None
    cosmology: Cosmology

    @property
    def cosmic_time_gyr(self) -> float:
        """Age of the universe at the snapshot, Gyr, in the snapshot's cosmology."""
        return float(age_at_scale_factor_gyr(self.scale_factor, self.cosmology))


def cosmology_from_header(hubble_param: float, omega_matter: float, omega_lambda: float | None = None,
                          name: str | None = None) -> FlatLambdaCDM:
    """The simulation's own cosmology: FlatLambdaCDM(H0 = 100 h km/s/Mpc, Om0 = Omega0, Tcmb0 = 0).

    Radiation: a Gadget/AREPO header (TNG, CAMELS) has no radiation term, and the code integrates
    H(a) = H0 sqrt(Omega0 a^-3 + OmegaLambda) (plus a curvature term, zero here), so the model is
    built with Tcmb0 = 0: no photons and no neutrinos, as in the simulation's own Friedmann
    equation.  (astropy's usual Tcmb0 = 2.7255 K would add photons and massless neutrinos,
    Omega_r ~ 9e-5, and make the age today 6 Myr shorter for h = 0.6711, Omega0 = 0.3.)  Baryons
    need no term of their own: Omega0 includes them.

    Only flat models are accepted: `omega_lambda`, when given, must equal 1 - Omega0 to within
    FLATNESS_TOLERANCE, or a ValueError says so.
    """
    h, om = float(hubble_param), float(omega_matter)
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"HubbleParam must be a positive number, got {hubble_param!r}")
    if not (np.isfinite(om) and 0 < om <= 1):
        raise ValueError(f"Omega0 must be in (0, 1], got {omega_matter!r}")
    if omega_lambda is not None and not abs(float(omega_lambda) + om - 1) <= FLATNESS_TOLERANCE:
        raise ValueError(f"Omega0 = {om} and OmegaLambda = {omega_lambda} do not make a flat universe "
                         f"(they sum to {om + float(omega_lambda):.6g}, not 1 within {FLATNESS_TOLERANCE}); "
                         "only flat LambdaCDM simulations are supported")
    name = name or f"FlatLambdaCDM(H0={100 * h:g}, Om0={om:g}, Tcmb0=0)"
    return FlatLambdaCDM(H0=100 * h, Om0=om, Tcmb0=0, name=name)


def read_snapshot_header(snapshot, path="snapshot") -> SnapshotHeader:
    """The `Header` of an open snapshot file (h5py.File): scale factor, redshift and cosmology.
    A missing Header group or attribute, a scale factor outside (0, 1], a Redshift that disagrees
    with Time, a non-flat model or a snapshot split over several files raise a ValueError."""
    if "Header" not in snapshot:
        raise ValueError(f"{path} has no Header group; not a TNG/Gadget snapshot")
    attrs = snapshot["Header"].attrs
    missing = [key for key in ("Time", "HubbleParam", "Omega0") if key not in attrs]
    if missing:
        raise ValueError(f"{path}: the Header lacks {', '.join(missing)} (needed for the cosmology and the "
                         "snapshot's time)")
    if int(np.max(attrs.get("NumFilesPerSnapshot", 1))) > 1:
        raise ValueError(f"{path} is one of {int(attrs['NumFilesPerSnapshot'])} files of a snapshot; this reader "
                         "takes a snapshot in one file (use histories_from_local for chunked snapshots)")
    a = float(attrs["Time"])
    if not (np.isfinite(a) and 0 < a <= 1):
        raise ValueError(f"{path}: Header Time (the scale factor) must be in (0, 1], got {attrs['Time']!r}")
    redshift = 1 / a - 1
    if "Redshift" in attrs:
        if not abs(float(attrs["Redshift"]) - redshift) <= 1e-6 * (1 + redshift):
            raise ValueError(f"{path}: Header Redshift = {float(attrs['Redshift'])} disagrees with Time = {a} "
                             f"(1/Time - 1 = {redshift})")
        redshift = float(attrs["Redshift"])
    omega_lambda = float(attrs["OmegaLambda"]) if "OmegaLambda" in attrs else None
    h, om = float(attrs["HubbleParam"]), float(attrs["Omega0"])
    cosmology = cosmology_from_header(
        h, om, omega_lambda, name=f"FlatLambdaCDM(H0={100 * h:g}, Om0={om:g}, Tcmb0=0) from {Path(str(path)).name}")
    return SnapshotHeader(scale_factor=a, redshift=max(redshift, 0.0), hubble_param=h, omega_matter=om,
                          omega_lambda=omega_lambda, cosmology=cosmology)


@dataclass(frozen=True)
class SubhaloCatalogue:
    """Per subhalo: the number of star particles (SubhaloLenType[:, 4]) and where they start in the
    snapshot (subhalos stored back to back from particle 0), with SubhaloFlag and the stellar mass
    SubhaloMassType[:, 4] (1e10 Msun/h) when the catalogue has them (None otherwise)."""

    n_stars: np.ndarray
    first_star: np.ndarray
    flag: np.ndarray | None
    stellar_mass: np.ndarray | None


def read_subhalo_catalogue(path) -> SubhaloCatalogue:
    """A subhalo catalogue file with `Subhalo/SubhaloLenType` (n_sub x 6): the type-4 counts give
    each subhalo's contiguous slice of the snapshot's PartType4 arrays, in catalogue order.

    A full FoF catalogue whose groups hold more stars than their subhalos (unbound 'fuzz' between
    the subhalos' particles) breaks that layout and raises a ValueError, as does a missing group or
    dataset or a malformed SubhaloLenType."""
    path = Path(path)
    with _open_hdf5(path, "subhalo catalogue") as f:
        if "Subhalo" not in f or "SubhaloLenType" not in f["Subhalo"]:
            raise ValueError(f"{path} has no Subhalo/SubhaloLenType; not a subhalo catalogue")
        sub = f["Subhalo"]
        lengths = np.asarray(sub["SubhaloLenType"][()])
        if lengths.ndim != 2 or lengths.shape[1] != 6 or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"{path}: Subhalo/SubhaloLenType must be integers of shape (n_subhalos, 6), "
                             f"got {lengths.dtype} {lengths.shape}")
        n_stars = lengths[:, 4].astype(np.int64)
        if np.any(n_stars < 0):
            raise ValueError(f"{path}: negative star counts in Subhalo/SubhaloLenType")
        if "Group" in f and "GroupLenType" in f["Group"]:
            in_groups = int(np.asarray(f["Group"]["GroupLenType"][()])[:, 4].sum())
            if in_groups != int(n_stars.sum()):
                raise ValueError(f"{path}: its FoF groups hold {in_groups} star particles but its subhalos "
                                 f"{int(n_stars.sum())}; with unbound particles between the subhalos their "
                                 "slices are not back to back (use histories_from_local and its offsets)")
        flag = np.asarray(sub["SubhaloFlag"][()]) if "SubhaloFlag" in sub else None
        stellar_mass = np.asarray(sub["SubhaloMassType"][()])[:, 4] if "SubhaloMassType" in sub else None
    for name, values in (("SubhaloFlag", flag), ("SubhaloMassType", stellar_mass)):
        if values is not None and len(values) != len(n_stars):
            raise ValueError(f"{path}: Subhalo/{name} has {len(values)} rows, SubhaloLenType {len(n_stars)}")
    first_star = np.concatenate([[0], np.cumsum(n_stars)[:-1]]).astype(np.int64)
    return SubhaloCatalogue(n_stars=n_stars, first_star=first_star, flag=flag, stellar_mass=stellar_mass)


@contextmanager
def _open_hdf5(path, what: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {err}") from err
    with f:
        yield f


def histories_from_snapshot(snapshot_file, subhalo_file, *, n_bins: int = N_TIME_BINS,
                            min_stellar_mass_msun: float = MIN_STELLAR_MASS_MSUN, progress: bool = True,
                            limit: int | None = None):
    """Bin the star particles of every subhalo of a one-file snapshot (TNG/CAMELS layout).

    `snapshot_file`: HDF5 with `Header` attributes Time (scale factor), HubbleParam, Omega0 and, if
    present, OmegaLambda and Redshift, and `PartType4` datasets GFM_StellarFormationTime
    (formation scale factor; <= 0 for wind particles, excluded), GFM_InitialMass (1e10 Msun/h) and
    GFM_Metallicity (metal mass fraction).  `subhalo_file`: HDF5 with `Subhalo/SubhaloLenType`
    (read_subhalo_catalogue); SubhaloFlag and SubhaloMassType cuts are applied when it has them.

    The cosmology comes from the header (cosmology_from_header), not Planck15, and the `n_bins`
    equal time bins span t = 0 to the age of the universe today (a = 1) in that cosmology, as the
    paper's bins do in Planck15.  A star particle formed after the snapshot (formation scale factor
    above Time) cannot exist and raises a ValueError, as does a catalogue claiming more star
    particles than the snapshot holds.

    Returns (ids, histories (n, 2, n_bins), report): ids are catalogue indices of the kept
    subhalos; histories SFR (Msun/yr) and log10 Z/Zsun per bin; the report gives the cosmology, the
    snapshot's scale factor, redshift and cosmic time, the age today, the star counts and the cuts.
    """
    snapshot_file, subhalo_file = Path(snapshot_file), Path(subhalo_file)
    catalogue = read_subhalo_catalogue(subhalo_file)
    with _open_hdf5(snapshot_file, "snapshot") as snap:
        header = read_snapshot_header(snap, snapshot_file)
        stars = snap["PartType4"] if "PartType4" in snap else {}
        missing = [name for name in STAR_FIELDS if name not in stars]
        if missing and catalogue.n_stars.sum() > 0:
            raise ValueError(f"{snapshot_file}: PartType4 lacks {', '.join(missing)}")
        n_in_file = {len(stars[name]) for name in STAR_FIELDS} if not missing else {0}
        if len(n_in_file) != 1:
            raise ValueError(f"{snapshot_file}: the PartType4 fields differ in length ({sorted(n_in_file)})")
        n_in_file = n_in_file.pop()
        if catalogue.n_stars.sum() > n_in_file:
            raise ValueError(f"{subhalo_file} gives its subhalos {int(catalogue.n_stars.sum())} star particles "
                             f"but {snapshot_file} holds only {n_in_file}: the catalogue is not this snapshot's")

        selected = np.ones(len(catalogue.n_stars), dtype=bool)
        cuts = {"max_logz_solar": 0.5, "wind_particles": "GFM_StellarFormationTime <= 0 excluded",
                "nan_particles": "excluded"}
        if catalogue.flag is not None:
            selected &= catalogue.flag != 0
            cuts["SubhaloFlag"] = 1
        else:
            cuts["SubhaloFlag"] = "not in the catalogue; not applied"
        mass_cut = "min_stellar_mass_msun (SubhaloMassType[4])"
        if catalogue.stellar_mass is not None:
            selected &= catalogue.stellar_mass * (MASS_UNIT_MSUN_PER_H / header.hubble_param) > min_stellar_mass_msun
            cuts[mass_cut] = min_stellar_mass_msun
        else:
            cuts[mass_cut] = "SubhaloMassType not in the catalogue; not applied"
        ids = np.flatnonzero(selected)
        if limit is not None:
            ids = ids[:limit]

        def stars_of(subhalo_id):
            start, n = catalogue.first_star[subhalo_id], catalogue.n_stars[subhalo_id]
            if n == 0:
                return None
            try:
                fields = stars_in_msun({name: stars[name][start:start + n] for name in STAR_FIELDS},
                                       header.hubble_param)
            except OSError as err:
                raise ValueError(f"cannot read the star particles of subhalo {subhalo_id} from {snapshot_file} "
                                 f"(truncated or corrupt file?): {err}") from err
            late = fields["GFM_StellarFormationTime"] > header.scale_factor * (1 + FORMATION_TIME_SLACK)
            if late.any():
                raise ValueError(f"{snapshot_file}: {int(late.sum())} star particles of subhalo {subhalo_id} "
                                 f"formed after the snapshot (formation scale factor up to "
                                 f"{float(fields['GFM_StellarFormationTime'].max()):.6g} > Time = "
                                 f"{header.scale_factor:.6g}); wrong catalogue for this snapshot or a corrupt file")
            return fields

        bins = TimeBins(cosmology=header.cosmology, n_bins=n_bins)
        cosmology = header.cosmology
        report = {
            "source": "one snapshot file + subhalo catalogue (TNG/CAMELS layout)",
            "snapshot_file": str(snapshot_file), "subhalo_file": str(subhalo_file),
            "cosmology": {"name": cosmology.name, "H0_km_s_mpc": float(cosmology.H0.value),
                          "Om0": float(cosmology.Om0), "Ode0": float(cosmology.Ode0), "Tcmb0_K": 0.0,
                          "from": "snapshot Header: HubbleParam, Omega0"
                                  + (", OmegaLambda" if header.omega_lambda is not None else "")},
            "hubble_param": header.hubble_param,
            "snapshot_scale_factor": header.scale_factor, "snapshot_redshift": header.redshift,
            "snapshot_cosmic_time_gyr": header.cosmic_time_gyr,
            "age_of_universe_today_gyr": bins.age_of_universe_gyr,
            "n_subhalos_in_catalogue": len(catalogue.n_stars),
            "n_star_particles_in_snapshot": int(n_in_file),
            "n_star_particles_in_subhalos": int(catalogue.n_stars.sum()),
            "stars_per_subhalo": [int(n) for n in catalogue.n_stars],
            "cuts": cuts,
        }
        return _bin_subhalos(ids, stars_of, bins, progress, report)


def build_snapshot_dataset(out_dir, snapshot_file, subhalo_file, *, prefix: str | None = None,
                           n_bins: int = N_TIME_BINS, min_stellar_mass_msun: float = MIN_STELLAR_MASS_MSUN,
                           test_fraction: float = TEST_FRACTION, progress: bool = True,
                           limit: int | None = None) -> dict[str, Path]:
    """Bin a one-file snapshot (histories_from_snapshot) and write `<prefix>_{train,test}.nc` to
    `out_dir` (prefix: the snapshot file's stem by default), with time bins in the file's cosmology."""
    snapshot_file = Path(snapshot_file)
    ids, histories, report = histories_from_snapshot(snapshot_file, subhalo_file, n_bins=n_bins,
                                                     min_stellar_mass_msun=min_stellar_mass_msun,
                                                     progress=progress, limit=limit)
    if len(ids) < 2:
        raise ValueError(f"only {len(ids)} subhalos passed the cuts; nothing written")
    with _open_hdf5(snapshot_file, "snapshot") as snap:
        bins = TimeBins(cosmology=read_snapshot_header(snap, snapshot_file).cosmology, n_bins=n_bins)
    attrs = dict(
        report,
        description=f"star particles of {snapshot_file.name} binned into {n_bins} time bins from t = 0 to "
                    f"{bins.age_of_universe_gyr:.4f} Gyr (the age today in the snapshot's own cosmology, "
                    f"{bins.cosmology.name}) by the rules of Perry-Fagant et al. (sfhkit.data.tng)",
        is_tng50=0, particle_fields=list(STAR_FIELDS), builder=f"sfhkit {__version__}",
    )
    return split_and_write(histories, ids, out_dir, prefix=prefix or snapshot_file.stem, attrs=attrs,
                           time_bins=bins, test_fraction=test_fraction)


# --------------------------------------------------------------------------------------------
# Every source


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
    """`sfhkit data tng`: the web API, local files (--base-path), or one snapshot file and its subhalo
    catalogue (--snapshot-file with --subhalo-file)."""
    snapshot_file, subhalo_file = getattr(args, "snapshot_file", None), getattr(args, "subhalo_file", None)
    if (snapshot_file is None) != (subhalo_file is None):
        raise ValueError("--snapshot-file and --subhalo-file go together")
    if snapshot_file is not None:
        if args.base_path:
            raise ValueError("give either --base-path or --snapshot-file/--subhalo-file, not both")
        paths = build_snapshot_dataset(args.out, snapshot_file, subhalo_file,
                                       min_stellar_mass_msun=args.min_stellar_mass, limit=args.limit,
                                       progress=not args.quiet)
        print(json.dumps({split: str(p) for split, p in paths.items()}, indent=1))
        return 0
    paths = build_tng_dataset(args.out, source="local" if args.base_path else "api", api_key=args.api_key,
                              base_path=args.base_path, simulation=args.simulation, snapshot=args.snapshot,
                              cache_dir=args.cache_dir, min_stellar_mass_msun=args.min_stellar_mass,
                              limit=args.limit, progress=not args.quiet)
    print(json.dumps({split: str(p) for split, p in paths.items()}, indent=1))
    return 0
