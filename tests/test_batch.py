"""Batch inference on a Dask LocalCluster: results, failures, killed workers and killed runs."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("dask.distributed")

from sfhkit import Posterior  # noqa: E402
from sfhkit.batch import galaxy_seed, read_catalogue, run_batch  # noqa: E402

SMALL = dict(n=4, keep=3, steps=8, chunk_size=2)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(out):
    """Digest of every result file (not the hidden temporary files a killed writer leaves; the next
    run deletes those)."""
    return {p.relative_to(out).as_posix(): _digest(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.parent.name in ("posteriors", "galaxies") and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with Client(cluster) as c:
        yield c
    cluster.close()


def test_catalogue_rows_identifiers_and_seeds(tmp_path):
    csv = tmp_path / "cat.csv"
    csv.write_text("test_index,redshift,mask\n2122,,\n100,0.08,5570-5590\n")
    rows = read_catalogue(csv)
    assert [r["id"] for r in rows] == ["test-2122", "test-100"] and rows[1]["redshift"] == "0.08"
    from astropy.table import Table

    fits = tmp_path / "cat.fits"
    Table({"plate": [266, 266], "mjd": [51602, 51630], "fiber": [614, 461]}).write(fits)
    assert [r["id"] for r in read_catalogue(fits)] == ["sdss-0266-51602-0614", "sdss-0266-51630-0461"]
    assert galaxy_seed("test-2122") == galaxy_seed("test-2122") != galaxy_seed("test-2123")
    (tmp_path / "dup.csv").write_text("test_index\n5\n5\n")
    with pytest.raises(ValueError, match="unique"):
        read_catalogue(tmp_path / "dup.csv")
    (tmp_path / "none.csv").write_text("name\nx\n")
    with pytest.raises(ValueError, match="none of the columns"):
        read_catalogue(tmp_path / "none.csv")


def test_batch_writes_posteriors_and_records_a_corrupt_row(client, tmp_path):
    catalogue = tmp_path / "cat.csv"
    catalogue.write_text("test_index,redshift\n2122,\n100,0.08\nnot-a-number,\n1000,\n")
    out = tmp_path / "out"
    report = run_batch(catalogue, out, client=client, progress=False, **SMALL)
    assert (report["ok"], report["failed"], report["missing"]) == (3, 1, 0), report
    failed = json.loads((out / "galaxies" / "test-not-a-number.json").read_text())
    assert failed["status"] == "failed" and "not-a-number" in failed["error"]
    posterior = Posterior.load(out / "posteriors" / "test-100.nc")
    assert posterior.observation.redshift == pytest.approx(0.08) and posterior.histories.shape == (4, 2, 64)
    import pandas as pd

    table = pd.read_csv(out / "summary.csv")
    assert list(table["status"]) == ["ok", "ok", "failed", "ok"]
    assert np.isfinite(table.loc[table.status == "ok", "log10_formed_mass_mean"]).all()
    assert table.loc[0, "seed"] == galaxy_seed("test-2122")                  # exact integers
    # a rerun does nothing and changes nothing; other settings are refused
    before = _outputs(out)
    again = run_batch(catalogue, out, client=client, progress=False, **SMALL)
    assert again["ran_this_time"] == 0 and _outputs(out) == before
    with pytest.raises(ValueError, match="other settings"):
        run_batch(catalogue, out, client=client, progress=False, **{**SMALL, "steps": 9})


def test_a_killed_worker_loses_nothing(client, tmp_path):
    catalogue = tmp_path / "cat.csv"
    catalogue.write_text("test_index\n" + "\n".join(str(i) for i in (5, 50, 500, 4000, 7, 70)) + "\n")
    out = tmp_path / "out"
    result = {}
    runner = threading.Thread(target=lambda: result.update(run_batch(catalogue, out, client=client, progress=False,
                                                                     **SMALL)))
    runner.start()
    deadline = time.monotonic() + 300
    while not any((out / "galaxies").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    victim = sorted(client.run(os.getpid).values())[0]
    os.kill(victim, signal.SIGKILL)                                          # a worker dies mid-run
    runner.join(600)
    assert result.get("ok") == 6 and not result["missing"], result
    # results lost in flight are recomputed identically: drop one galaxy's files and rerun
    first = _outputs(out)
    reference = Posterior.load(out / "posteriors" / "test-500.nc").histories
    (out / "galaxies" / "test-500.json").unlink()
    (out / "posteriors" / "test-500.nc").unlink()
    again = run_batch(catalogue, out, client=client, progress=False, **SMALL)
    assert again["ran_this_time"] == 1 and again["ok"] == 6
    after = _outputs(out)
    assert {k: v for k, v in after.items() if "test-500" not in k} == {k: v for k, v in first.items()
                                                                        if "test-500" not in k}
    # Bit for bit: the model's compression is seeded (`forward._compress`), so a fresh process
    # builds the same model and samples the same draws.
    np.testing.assert_array_equal(Posterior.load(out / "posteriors" / "test-500.nc").histories, reference)


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    catalogue = tmp_path / "cat.csv"
    catalogue.write_text("test_index\n" + "\n".join(str(i) for i in (11, 111, 1111, 2111)) + "\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "sfhkit.cli", "batch", str(catalogue), "--out", str(out), "--workers", "1",
               "--n", "4", "--keep", "3", "--steps", "8", "--chunk-size", "1", "--quiet"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while len(list((out / "galaxies").glob("*.json"))) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)                                     # the run and its workers
    proc.wait(60)
    finished = _outputs(out)
    assert finished and len(finished) < 8, "the kill should land mid-run"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] == 4 and not report["missing"]
    after = _outputs(out)
    assert {k: after[k] for k in finished} == finished                       # byte-identical
    assert not list(out.rglob(".*.tmp"))                                    # no half-written files left


def test_real_spectra_rows(client, shared_data, tmp_path):
    """SDSS and MaNGA files from ../shared/data, with per-row A_V, sigma_v and a mask; a missing
    file is recorded as failed."""
    sdss = shared_data / "sdss" / "spec-0266-51602-0614.fits"
    manga = shared_data / "manga" / "MaNGA_test_spectra.fits.gz"
    catalogue = tmp_path / "cat.csv"
    catalogue.write_text("path,index,av,vdisp,mask\n"
                         f"{sdss},,0.3,240,5570-5590\n{manga},0,,,\n{tmp_path / 'missing.fits'},,,,\n")
    out = tmp_path / "out"
    report = run_batch(catalogue, out, client=client, progress=False, **SMALL)
    assert (report["ok"], report["failed"]) == (2, 1), report
    sdss_posterior = Posterior.load(out / "posteriors" / "spec-0266-51602-0614.nc")
    obs = sdss_posterior.observation
    assert obs.av == pytest.approx(0.3) and obs.velocity_dispersion_kms == pytest.approx(240)
    inside = (obs.wavelength > 5570) & (obs.wavelength < 5590)
    assert inside.any() and not obs.mask[inside].any()
    assert (out / "posteriors" / "MaNGA_test_spectra-0.nc").exists()
    assert "missing.fits" in json.loads((out / "galaxies" / "missing.json").read_text())["error"]


def test_desi_rows(client, tmp_path):
    """A DESI coadd file in the upstream data model, two targets by TARGETID (17 digits, read
    exactly), the redshift from the redrock file beside it and, for one row, from the catalogue."""
    from survey_files import DESI_CAMERAS, desi_wavelength, write_desi_coadd, write_redrock

    targets = (39627640566453451, 39627640566453452)
    spectra = {}
    for camera in DESI_CAMERAS:
        wave = desi_wavelength(camera)
        flux = np.stack([4.0 + 1e-4 * (wave - 5000.0)] * 2)
        spectra[camera] = (flux, np.full(flux.shape, 25.0))
    coadd = write_desi_coadd(tmp_path / "coadd-main-dark-10016.fits", spectra, targetids=targets)
    write_redrock(tmp_path / "redrock-main-dark-10016.fits", targets, [0.08, 0.11])
    catalogue = tmp_path / "cat.csv"
    catalogue.write_text(f"path,targetid,redshift\n{coadd},{targets[0]},\n{coadd},{targets[1]},0.12\n")
    out = tmp_path / "out"
    report = run_batch(catalogue, out, client=client, progress=False, **SMALL)
    assert (report["ok"], report["failed"]) == (2, 0), report
    first = Posterior.load(out / "posteriors" / f"coadd-main-dark-10016-{targets[0]}.nc").observation
    second = Posterior.load(out / "posteriors" / f"coadd-main-dark-10016-{targets[1]}.nc").observation
    assert first.metadata["targetid"] == targets[0] and first.redshift == pytest.approx(0.08)
    assert second.metadata["targetid"] == targets[1] and second.redshift == pytest.approx(0.12)
    import pandas as pd

    table = pd.read_csv(out / "summary.csv", dtype={"warnings": str}, keep_default_na=False)
    summary = json.loads((out / "galaxies" / f"coadd-main-dark-10016-{targets[0]}.json").read_text())
    assert list(table["warnings"])[0] == ";".join(w["code"] for w in summary["warnings"])
