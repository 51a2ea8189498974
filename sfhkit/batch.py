"""Batch inference over a catalogue on Dask: vectorised, resumable, one failure never stops it.

    sfhkit batch catalogue.csv --out results/ [--scheduler tcp://host:8786] [--workers 2]

**Catalogue** (CSV, or a FITS binary table; column names are case-insensitive).  Each row names
one galaxy by the first of these that it fills:

* `test_index`: a mock of that held-out test-set history (the paper's: z 0.05, A_V 0.2, S/N 50,
  unless `redshift`, `av`, `snr` say otherwise);
* `path`: a local file, recognised by its content (`sfhkit.surveys.identify`): an SDSS, BOSS or
  eBOSS spec file; a DESI coadd file with `targetid` (or `index`) and, without a redrock file beside
  it, `redshift`; a MaNGA spectra table with `index`; a LOGCUBE with `redshift`;
* `plate`, `mjd`, `fiber`: an SDSS spectrum, downloaded (astroquery's cache);
* `plateifu`: a MaNGA LOGCUBE, downloaded, with `redshift`.

Optional per row: `id` (else one is made from the source), `redshift`, `av` (mag), `vdisp`
(km/s), `mask` (observed-frame ranges "5570-5590;6860-6920"), `snr` (mocks).  Real spectra get
sfhkit's emission-line and sky masks, as `sfhkit infer` does.

**Work**: the catalogue is cut, in its order, into chunks of `chunk_size` galaxies; each chunk is
one Dask task, which samples all its galaxies in one batched reverse-SDE integration (one network
call per step; `sample_posterior` with a list).  Every galaxy's seed comes from its identifier
(SHA-256), so its draws do not depend on the chunk it lands in (up to float rounding) and a rerun
gives the same numbers, bit for bit (tested).

**Output** (in `out`):

* `posteriors/<id>.nc`: the full posterior (`Posterior.save`; xarray.open_datatree reads it);
* `galaxies/<id>.json`: its summary (derived quantities with uncertainties, chi^2, seed, the fit's
  warnings (sfhkit.health), status "ok"), written *after* the NetCDF file: it marks the galaxy as
  finished;
* `galaxies/<id>.json` with status "failed", the error and its traceback for a galaxy that could not
  be read or sampled;
* `summary.csv`: one row per catalogue row, rebuilt from those files at the end of each run; its
  `warnings` column lists the warning codes (";"-separated, empty for a healthy fit);
* `settings.json`: the sampler settings; a rerun with other settings is refused.

One run per output folder at a time: a run starts by deleting the temporary files a killed run
left behind.

Every file is written atomically (temporary file, then rename), so a killed worker or run leaves
no half-written result.  A rerun skips finished and failed galaxies (`retry_failed` retries the
failed ones) and recomputes only chunks with galaxies left, writing only their missing files.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np

from ._io import write_json
from ._version import __version__
from .fluxcal import default_degree

SOURCE_COLUMNS = ("test_index", "path", "plate", "plateifu")
OPTIONAL_COLUMNS = ("id", "redshift", "av", "vdisp", "mask", "snr", "index", "targetid", "mjd", "fiber")
SAFE_ID = re.compile(r"[^A-Za-z0-9._+-]+")


# -- the catalogue ---------------------------------------------------------------------------------
def _clean(value):
    """None for empty cells (NaN, masked, blank strings); plain Python values otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or np.ma.is_masked(value):
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_catalogue(path) -> list[dict]:
    """Rows of a CSV or FITS catalogue as dicts (lower-case keys, empty cells dropped), each with its
    1-based `row` number and an `id`.  Rows are not checked here: a bad row fails alone later."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no catalogue at {path}")
    if path.suffix.lower() in (".fits", ".fit", ".fz") or path.name.lower().endswith(".fits.gz"):
        from astropy.table import Table

        table = Table.read(path).to_pandas()
    else:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#")
    table.columns = [str(c).strip().lower() for c in table.columns]
    if not any(c in table.columns for c in SOURCE_COLUMNS):
        raise ValueError(f"{path} has none of the columns that name a galaxy {SOURCE_COLUMNS}; "
                         f"its columns are {list(table.columns)}")
    rows = []
    for number, record in enumerate(table.to_dict("records"), start=1):
        row = {k: v for k, v in ((k, _clean(v)) for k, v in record.items()) if v is not None}
        row["row"] = number
        row["id"] = galaxy_identifier(row)
        rows.append(row)
    ids = [r["id"] for r in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{path}: identifiers must be unique; repeated: {duplicates[:10]} (add an `id` column)")
    return rows


def galaxy_identifier(row: dict) -> str:
    """The row's `id`, else one made from its source (test-2122, sdss-0266-51602-0614, ...); safe
    as a file name."""
    def number(key, width=0):
        try:
            return f"{_as_int(row.get(key)):0{width}d}"
        except (TypeError, ValueError):      # a malformed cell still gets a name; the row fails later
            return str(row.get(key))

    if row.get("id") is not None:
        text = str(row["id"])
    elif row.get("test_index") is not None:
        text = f"test-{number('test_index')}"
    elif row.get("path") is not None:
        stem = re.sub(r"\.fits(\.gz)?$", "", Path(str(row["path"])).name)
        text = next((f"{stem}-{number(key)}" for key in ("targetid", "index") if row.get(key) is not None), stem)
    elif row.get("plate") is not None:
        text = f"sdss-{number('plate', 4)}-{number('mjd', 5)}-{number('fiber', 4)}"
    elif row.get("plateifu") is not None:
        text = f"manga-{row['plateifu']}"
    else:
        text = f"row-{row['row']}"
    return SAFE_ID.sub("_", text)


def galaxy_seed(identifier: str) -> int:
    """A 63-bit seed from the identifier (SHA-256): the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(identifier.encode()).digest()[:8], "big") >> 1


def _as_int(value) -> int:
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)                  # exact: a 17-digit DESI TARGETID does not survive float()
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    return int(number)


def _as_float(row, key, default=None):
    value = row.get(key)
    return default if value is None else float(value)


# -- one galaxy ------------------------------------------------------------------------------------
def load_galaxy(row: dict, grid, model_cache: dict | None = None):
    """The Galaxy a catalogue row names, with its per-row settings and masks applied, and the
    forward model to sample it with.  Raises ValueError/OSError for a bad row."""
    from .galaxies import MOCK_AV, MOCK_REDSHIFT, MOCK_SNR, manga_galaxy, mock_galaxy, spectrum_galaxy
    from .forward import ForwardModel
    from .lines import apply_masks, parse_ranges
    from .observation import sdss_wavelength
    from .surveys import identify

    model_cache = {} if model_cache is None else model_cache
    av = _as_float(row, "av")
    if row.get("test_index") is not None:
        z, av = _as_float(row, "redshift", MOCK_REDSHIFT), MOCK_AV if av is None else av
        key = ("mock", z, av)
        if key not in model_cache:         # every mock at one (z, A_V) shares one model
            model_cache[key] = ForwardModel(grid, sdss_wavelength(), redshift=z, av=av)
        galaxy = mock_galaxy(_as_int(row["test_index"]), snr=_as_float(row, "snr", MOCK_SNR), seed=galaxy_seed(row["id"]),
                             forward_model=model_cache[key])
        obs, model = galaxy.observation, galaxy.forward_model
        if row.get("mask"):
            obs = apply_masks(obs, lines=False, sky=False, ranges=parse_ranges(row["mask"]))
        return galaxy, obs, model
    kind = identify(str(row["path"])) if row.get("path") is not None else None
    cube = row.get("plateifu") is not None or kind == "manga-cube"
    if kind is not None:
        path = str(row["path"])
        if cube:
            galaxy = manga_galaxy(logcube=path, redshift=_as_float(row, "redshift"), av=av)
        elif kind == "manga-table":
            if row.get("index") is None:
                raise ValueError(f"row {row['row']}: {path} is a MaNGA spectra table; say which spectrum in `index`")
            galaxy = manga_galaxy(table=path, index=_as_int(row["index"]), av=av)
        elif kind == "desi":
            target = {k: _as_int(row[k]) for k in ("targetid", "index") if row.get(k) is not None}
            galaxy = spectrum_galaxy(path, av=av, redshift=_as_float(row, "redshift"), **target)
        else:
            galaxy = spectrum_galaxy(path, av=av)
    elif row.get("plate") is not None:
        galaxy = spectrum_galaxy(f"{_as_int(row['plate'])}-{_as_int(row['mjd'])}-{_as_int(row['fiber'])}", av=av)
    elif row.get("plateifu") is not None:
        galaxy = manga_galaxy(plateifu=str(row["plateifu"]), redshift=_as_float(row, "redshift"), av=av)
    else:
        raise ValueError(f"row {row['row']} names no galaxy: fill one of {SOURCE_COLUMNS}")
    obs = galaxy.observation
    changes = {}
    if row.get("redshift") is not None and not cube:      # a cube has no redshift of its own: it was used above
        changes["redshift"] = float(row["redshift"])
    if row.get("vdisp") is not None:
        changes["velocity_dispersion_kms"] = float(row["vdisp"])
    if changes:
        obs = replace(obs, metadata=dict(obs.metadata), **changes)
    obs = apply_masks(obs, lines=True, sky=True, ranges=parse_ranges(row["mask"]) if row.get("mask") else ())
    return galaxy, obs, obs.forward_model(grid)


def galaxy_summary(row: dict, posterior, seconds: float) -> dict:
    obs = posterior.observation
    return {"id": row["id"], "row": row["row"], "status": "ok", "seed": galaxy_seed(row["id"]),
            "redshift": obs.redshift, "av": obs.av if posterior.av is None else float(posterior.av[posterior.kept].mean()),
            "av_source": obs.metadata.get("av_source", "given"),
            "vdisp_kms": obs.velocity_dispersion_kms if posterior.vdisp_kms is None
            else float(posterior.vdisp_kms[posterior.kept].mean()),
            "vdisp_source": obs.metadata.get("velocity_dispersion_source",
                                             "the survey's" if obs.velocity_dispersion_kms is not None else "none"),
            "n_used_pixels": obs.n_used,
            "median_chi2_per_pixel": posterior.median_chi2_per_pixel(), "n_kept": int(posterior.kept.sum()),
            "seconds": seconds, "posterior": f"posteriors/{row['id']}.nc", "derived": posterior.summary(),
            "warnings": posterior.warnings()}


# -- one chunk (runs on a Dask worker) -------------------------------------------------------------
_WORKER = {}      # per process: the SSP grid, the prior and forward models, loaded once


def _worker_state(device: str, threads: int | None, ssp=("bc03",)):
    import torch

    from .prior import Prior
    from .ssp import library_grid

    if threads:
        torch.set_num_threads(threads)
    if _WORKER.get("ssp") != list(ssp):
        _WORKER["grid"], _WORKER["ssp"] = library_grid(*ssp, progress=False), list(ssp)
        _WORKER["models"] = {}
    if _WORKER.get("device") != device:
        _WORKER["prior"], _WORKER["device"] = Prior.default(device), device
    return _WORKER


def _finished(out: Path, identifier: str, retry_failed: bool = False) -> bool:
    path = out / "galaxies" / f"{identifier}.json"
    if not path.exists():
        return False
    if not retry_failed:
        return True
    try:
        return json.loads(path.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def run_chunk(rows: list[dict], out, settings: dict) -> list[dict]:
    """Sample every galaxy of `rows` in one batch; write the files of those not finished yet.
    Returns their summaries (status "ok" or "failed")."""
    from .attenuation import first_pass_av, infer_av, should_infer_av
    from .dispersion import sample_with_vdisp, should_infer_vdisp
    from .sampler import sample_posterior

    out = Path(out)
    state = _worker_state(settings["device"], settings.get("threads"), settings.get("ssp", ["bc03"]))
    retry = settings.get("retry_failed", False)
    results, loaded = [], []
    for row in rows:
        try:
            loaded.append((row, *load_galaxy(row, state["grid"], state["models"])))
        except Exception as err:  # noqa: BLE001 - a bad row is recorded, never fatal
            results.append(_record_failure(out, row, err, retry))
    if loaded:
        def sample(observations, models, seeds, degree):
            return sample_posterior(observations, state["prior"], models, n=settings["n"], keep=settings["keep"],
                                    steps=settings["steps"], likelihood=settings["likelihood"], seed=seeds,
                                    progress=False, calibration_degree=degree)

        def degree_of(obs):        # real spectra get the flux-calibration polynomial, mocks none
            return 0 if obs.metadata.get("kind") == "mock" else settings.get("calibration_degree", 0)

        def infers_av(obs):        # A_V inferred where the spectrum has no catalogue value
            return settings.get("infer_av", True) and should_infer_av(obs, degree_of(obs))

        def at_fit_av(observations, models, seeds):
            """Those that infer A_V at the A_V of a short first pass (sfhkit.attenuation), in one batch
            per model."""
            observations = list(observations)
            for model in {id(m): m for m in models}.values():
                group = [i for i, (o, m) in enumerate(zip(observations, models)) if m is model and infers_av(o)]
                if group:
                    moved = first_pass_av([observations[i] for i in group], state["prior"], model, n=settings["n"],
                                          steps=settings["steps"], seed=[seeds[i] for i in group],
                                          likelihood=settings["likelihood"],
                                          calibration_degree=degree_of(observations[group[0]]))
                    for i, o in zip(group, moved):
                        observations[i] = o
            return observations

        def finished(posterior, row):
            if infers_av(posterior.observation):
                return infer_av(posterior, seed=galaxy_seed(row["id"]))
            return posterior

        def infers_vdisp(obs):      # sigma_v inferred where the spectrum has none (sfhkit.dispersion)
            return settings.get("infer_vdisp", True) and should_infer_vdisp(obs)

        started = time.perf_counter()
        posteriors = [None] * len(loaded)
        for i, (row, _, obs, model) in enumerate(loaded):     # one at a time: short passes and a full fit each
            if infers_vdisp(obs):
                try:               # with A_V inferred, the short passes give the fit's A_V too
                    posteriors[i] = sample_with_vdisp(
                        obs, state["prior"], state["grid"], n=settings["n"], keep=settings["keep"],
                        steps=settings["steps"], likelihood=settings["likelihood"], seed=galaxy_seed(row["id"]),
                        calibration_degree=degree_of(obs), instrument_model=model,
                        av_from_short_passes=infers_av(obs), progress=False)
                except Exception as err:  # noqa: BLE001
                    posteriors[i] = err
        for degree in sorted({degree_of(obs) for _, _, obs, _ in loaded}):
            group = [i for i, (_, _, obs, _) in enumerate(loaded) if degree_of(obs) == degree and not infers_vdisp(obs)]
            if not group:
                continue
            models = [loaded[i][3] for i in group]
            seeds = [galaxy_seed(loaded[i][0]["id"]) for i in group]
            try:
                observations = at_fit_av([loaded[i][2] for i in group], models, seeds)
                for i, posterior in zip(group, sample(observations, models, seeds, degree)):
                    posteriors[i] = posterior
            except Exception:  # noqa: BLE001 - one galaxy that breaks the batch: sample one at a time
                for i in group:
                    row, _, obs, model = loaded[i]
                    try:
                        obs, = at_fit_av([obs], [model], [galaxy_seed(row["id"])])
                        posteriors[i] = sample(obs, model, galaxy_seed(row["id"]), degree)
                    except Exception as err:  # noqa: BLE001
                        posteriors[i] = err
        seconds = (time.perf_counter() - started) / len(loaded)
        for (row, *_), posterior in zip(loaded, posteriors):
            if isinstance(posterior, Exception):
                results.append(_record_failure(out, row, posterior, retry))
                continue
            posterior = finished(posterior, row)
            summary = galaxy_summary(row, posterior, round(seconds, 3))
            if not _finished(out, row["id"], retry):            # finished files are never rewritten
                posterior.save(out / "posteriors" / f"{row['id']}.nc")
                write_json(out / "galaxies" / f"{row['id']}.json", summary)
            results.append(summary)
    return results


def _record_failure(out: Path, row: dict, err: BaseException, retry: bool) -> dict:
    record = {"id": row["id"], "row": row["row"], "status": "failed", "error": f"{type(err).__name__}: {err}",
              "traceback": traceback.format_exc()}
    if not _finished(out, row["id"], retry):
        write_json(out / "galaxies" / f"{row['id']}.json", record)
    return record


# -- the driver ------------------------------------------------------------------------------------
def _check_settings(out: Path, settings: dict) -> None:
    path = out / "settings.json"
    identity = {k: settings[k] for k in ("n", "keep", "steps", "likelihood", "chunk_size")}
    identity["ssp"] = settings.get("ssp", ["bc03"])
    if path.exists():
        saved = {"ssp": ["bc03"], **json.loads(path.read_text())}   # runs before the library was a setting: BC03
        if {k: saved.get(k) for k in identity} != identity:
            raise ValueError(f"{out} holds results made with other settings ({ {k: saved.get(k) for k in identity} }); "
                             "use another --out or the same settings")
    else:
        write_json(path, {**identity, "sfhkit_version": __version__})


def write_summary_table(rows: list[dict], out):
    """summary.csv: one line per catalogue row from galaxies/<id>.json (status "missing" where
    none); returns the table (a pandas DataFrame)."""
    import pandas as pd

    from ._io import atomic_path

    out = Path(out)
    records = []
    for row in rows:
        path = out / "galaxies" / f"{row['id']}.json"
        info = json.loads(path.read_text()) if path.exists() else {"id": row["id"], "row": row["row"], "status": "missing"}
        flat = {k: v for k, v in info.items() if k not in ("derived", "traceback", "warnings")}
        if info.get("status") == "ok":     # the codes, ";"-separated ("" for a healthy fit); details in the JSON
            flat["warnings"] = ";".join(w["code"] for w in info.get("warnings", []))
        for name, value in info.get("derived", {}).items():
            flat[f"{name}_mean"], flat[f"{name}_std"] = value["mean"], value["std"]
        records.append(flat)
    table = pd.DataFrame.from_records(records)
    for column in ("row", "seed", "n_used_pixels", "n_kept"):      # integers, also beside failed rows
        if column in table:
            table[column] = table[column].astype("Int64")
    with atomic_path(out / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def run_batch(catalogue, out, *, scheduler: str | None = None, workers: int = 2, threads_per_worker: int = 1,
              chunk_size: int = 8, device: str = "cpu", n: int = 120, keep: int | None = None, steps: int | None = None,
              likelihood: str = "cla", retry_failed: bool = False, progress: bool = True, client=None,
              calibration_degree: int | None = None, infer_av: bool = True, infer_vdisp: bool = True,
              ssp=("bc03",)) -> dict:
    """Run (or resume) a batch; returns counts and the summary table's path.  `client`: an existing
    dask.distributed Client (else one on `scheduler`, else a LocalCluster of `workers` processes).
    Real spectra get a flux-calibration polynomial of `calibration_degree` (sfhkit.fluxcal; default
    fluxcal.DEFAULT_DEGREE with the CLA likelihood, none with DPS), mocks none; with
    `infer_av`, those without a catalogue A_V have it inferred (sfhkit.attenuation); with
    `infer_vdisp`, those without a velocity dispersion (no VDISP in the file, no vdisp column) but
    with a known instrumental resolution have sigma_v inferred (sfhkit.dispersion).  `ssp`: the SSP
    library, ("bc03",) or ("emiles", directory) (sfhkit.ssp.library_grid)."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    from .sampler import DEFAULT_STEPS, kept_draws

    if chunk_size < 1 or workers < 1:
        raise ValueError("need chunk_size >= 1 and workers >= 1")
    keep = kept_draws(n, keep)
    if calibration_degree is None:
        calibration_degree = default_degree(likelihood)
    out = Path(out)
    rows = read_catalogue(catalogue)
    settings = {"n": n, "keep": keep, "steps": steps or DEFAULT_STEPS, "likelihood": likelihood,
                "calibration_degree": int(calibration_degree), "infer_av": bool(infer_av),
                "infer_vdisp": bool(infer_vdisp), "ssp": [str(x) for x in ssp],
                "chunk_size": chunk_size, "device": device, "threads": threads_per_worker, "retry_failed": retry_failed}
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    for stale in [*out.glob("posteriors/.*.tmp"), *out.glob("galaxies/.*.tmp")]:   # left by a killed run
        stale.unlink(missing_ok=True)
    chunks = [rows[i:i + chunk_size] for i in range(0, len(rows), chunk_size)]
    pending = [c for c in chunks if not all(_finished(out, r["id"], retry_failed) for r in c)]
    todo = sum(1 for c in pending for r in c if not _finished(out, r["id"], retry_failed))
    started = time.perf_counter()
    own_cluster, chunk_errors = None, []
    if pending:
        if client is None:
            if scheduler:
                client = Client(scheduler)
            else:
                own_cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
                client = Client(own_cluster)
        try:
            futures = [client.submit(run_chunk, chunk, str(out.resolve()), settings, pure=False, retries=3)
                       for chunk in pending]
            left = lambda: sum(1 for c in pending for r in c if not _finished(out, r["id"], retry_failed))  # noqa: E731
            with tqdm(total=todo, desc="galaxies", unit="galaxy", disable=not progress) as bar:
                for future in as_completed(futures):
                    try:
                        future.result()
                    except Exception as err:  # noqa: BLE001 - e.g. workers that kept dying: rerun resumes it
                        chunk_errors.append(f"{type(err).__name__}: {err}")
                    bar.n = todo - left()
                    bar.refresh()
        finally:
            if own_cluster is not None:
                client.close()
                own_cluster.close()
    statuses = list(write_summary_table(rows, out)["status"])
    return {"catalogue_rows": len(rows), "ran_this_time": todo, "chunks_run": len(pending),
            "ok": statuses.count("ok"), "failed": statuses.count("failed"), "missing": statuses.count("missing"),
            "chunk_errors": chunk_errors, "seconds": round(time.perf_counter() - started, 1),
            "summary": str(out / "summary.csv")}
