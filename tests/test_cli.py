import json

import numpy as np
import pytest

from sfhkit.cli import main


def test_demo_runs_the_mock_experiment(grid, tmp_path, capsys):
    """Small settings; the full run is `make demo`."""
    assert main(["demo", "--out", str(tmp_path), "--n", "6", "--keep", "5", "--steps", "40"]) == 0
    report = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "mock_posterior.png").read_bytes()[:4] == b"\x89PNG"
    from sfhkit.posterior import Posterior

    posterior = Posterior.load(report["posterior"])
    assert posterior.kept.sum() == 5 and posterior.true_history().shape == (2, 64)
    mass = report["derived"]["log10_formed_mass"]
    assert abs(mass["mean"] - mass["truth"]) < 0.15 and np.isfinite(report["median_chi2_per_pixel"])
    assert main(["demo", "--out", str(tmp_path), "--index", "999999"]) == 2
    assert "index must be" in capsys.readouterr().err


def test_bad_arguments_give_an_error_not_a_traceback(grid, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--av", "-1"]) == 2
    assert "av must be" in capsys.readouterr().err


def test_bench_forward_prints_json(capsys):
    assert main(["bench", "forward", "--min-seconds", "0.05", "--no-bagpipes"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["compressed_forward_per_s_batch128"] > 0 and out["grid_build_cold_s"] > 0


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "sfhkit" in capsys.readouterr().out


def test_data_summary_of_the_embedded_set(capsys):
    assert main(["data", "summary"]) == 0
    summary = json.loads(capsys.readouterr().out)[0]
    assert summary["split"] == "test" and summary["n_galaxies"] > 3000
    assert 0 < summary["all"]["quenched_fraction"] < 1
    assert summary["all"]["t50_gyr"]["p16"] < summary["all"]["t50_gyr"]["p50"] < summary["all"]["t50_gyr"]["p84"]


def test_data_tng_from_local_files(tmp_path, capsys):
    from test_data_tng import _population
    from tng_files import write_simulation

    subhalos, flags, mass = _population()
    base = write_simulation(tmp_path / "sim", subhalos, flags=flags, masstype_stars=mass)
    assert main(["data", "tng", "--base-path", base, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert set(paths) == {"train", "test"}


def test_data_tng_without_a_key_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TNG_API_KEY", raising=False)
    assert main(["data", "tng", "--out", str(tmp_path / "out")]) == 2
    assert "no TNG API key" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prior_train_sample_and_bench(tmp_path, capsys):
    from sfhkit.data import load_histories, write_histories

    data = write_histories(load_histories("test").isel(galaxy=slice(0, 300)), tmp_path / "h.nc")
    run = tmp_path / "run"
    args = ["prior", "train", "--data", str(data), "--out", str(run), "--epochs", "2", "--batch-size", "32",
            "--hyperparameters", '{"units": 32, "layers": 2}', "--quiet"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["epochs"] == 2 and (run / "loss.csv").read_text().count("\n") == 3
    assert main(["prior", "sample", "--checkpoint", str(run / "prior.pt"), "--n", "5", "--steps", "10",
                 "--out", str(tmp_path / "s.npy"), "--quiet"]) == 0
    capsys.readouterr()
    assert np.load(tmp_path / "s.npy").shape == (5, 2, 64)
    assert main(["bench", "prior", "--checkpoint", str(run / "prior.pt"), "--data", str(data), "--n", "200",
                 "--steps", "10", "--corrector-snr", "0.2", "--plot", str(tmp_path / "draws.png")]) == 0
    assert (tmp_path / "draws.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["classifier_auc"] <= 1 and set(report["ks"]) >= {"t50_gyr", "burstiness_dex"}
    assert report["goal"] == {"classifier_auc_max": 0.65, "ks_max": 0.1}
    assert report["corrector_snr"] == 0.2 and report["corrector_speed"]["time_ratio"] > 0


def test_calibrate_and_bench_posterior_run_with_small_settings(grid, tmp_path, capsys):
    out, png = tmp_path / "cal.json", tmp_path / "cal.png"
    assert main(["calibrate", "--n", "3", "--draws", "4", "--keep", "3", "--steps", "5", "--quiet",
                 "--out", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert report["n_galaxies"] == 3 and len(report["truth_indices"]) == 3
    assert set(report["bias"]["t50_gyr"]) == {"mean", "median"} and "t90_gyr" in report["coverage"]
    assert set(report["coverage"]["log10_formed_mass"]) == {"0.68", "0.95"}
    assert len(report["coverage"]["sfr_per_bin"]["0.68"]["values"]) == 64
    # TARP of the kept and of all draws, each with what a calibrated posterior gives on as many.
    for key in ("tarp", "tarp_all_draws"):
        assert {"max_abs_deviation", "null_median", "null_p95", "p_value"} <= set(report[key])
    assert "sfr_per_bin" in report["coverage_all_draws"]
    # Per galaxy (truth and ordered quantiles) and by quenched / star-forming truth.
    per_galaxy = report["per_galaxy"]["log10_formed_mass"]
    assert set(per_galaxy) == {"truth", "p2.5", "p16", "p50", "p84", "p97.5"} and len(per_galaxy["p50"]) == 3
    assert all(a <= b <= c for a, b, c in zip(per_galaxy["p2.5"], per_galaxy["p50"], per_galaxy["p97.5"]))
    groups = report["by_truth_quenched"]
    assert groups["quenched"]["n"] + groups["star_forming"]["n"] == 3
    assert set(groups["star_forming"]["coverage"]) == set(report["bias"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["calibrate", "--n", "2", "--draws", "3", "--keep", "2", "--steps", "4", "--quiet", "--truths", "prior",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["truths"] == "prior" and report["truth_indices"] == [0, 1]
    # Out of distribution, and histories a user brings (.npy); a wrong file is refused.
    from sfhkit.data.parametric import parametric_histories

    from sfhkit import Prior

    checkpoint = Prior.default().save(tmp_path / "prior.pt")        # --prior: any checkpoint
    assert main(["calibrate", "--n", "2", "--draws", "3", "--keep", "2", "--steps", "4", "--quiet", "--truths",
                 "parametric", "--prior", str(checkpoint), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["truths"] == "parametric" and report["prior"] == repr(Prior.default())
    brought = tmp_path / "mine.npy"
    np.save(brought, parametric_histories(5, seed=3))
    assert main(["calibrate", "--n", "2", "--draws", "3", "--keep", "2", "--steps", "4", "--quiet", "--truths",
                 str(brought), "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["truth_indices"]) == 2
    np.save(brought, np.zeros((3, 2, 10)))
    assert main(["calibrate", "--n", "2", "--truths", str(brought), "--quiet"]) == 2
    assert "shape" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["bench", "posterior", "--n", "4", "--keep", "2", "--steps", "3", "--batch-galaxies", "2",
                 "--levers"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["seconds_one_galaxy"] > 0 and bench["galaxies_per_hour_batched"] > 0
    assert bench["first_look"]["seconds"] > 0 and bench["likelihood_rank"] == 96
    levers = list(bench["levers"].values())
    assert [(row["steps"], row["likelihood_rank"]) for row in levers] == [(250, None), (250, 96), (3, None), (3, 96)]
    assert levers[0]["speedup"] == 1.0 and all(row["seconds"] > 0 for row in levers)
    errors = bench["likelihood_rank_chi2_error"]["by_rank"]
    assert errors["32"]["chi2_median"] > errors["96"]["chi2_median"] > errors["128"]["chi2_median"] >= 0



def test_bench_posterior_times_a_real_spectrums_first_look(shared_data, grid, capsys):
    spectrum = shared_data / "sdss" / "spec-0266-51602-0001.fits"
    assert main(["bench", "posterior", "--n", "3", "--steps", "3", "--batch-galaxies", "1",
                 "--spectrum", str(spectrum)]) == 0
    look = json.loads(capsys.readouterr().out)["first_look_real_spectrum"]
    assert look["model_build_seconds"] > 0 and look["first_look_seconds"] > 0 and look["calibration_degree"] == 8
    assert look["pixels"] > 1000 and look["median_chi2_per_pixel"] > 0

def test_bench_gpu_runs_on_the_cpu(grid, tmp_path, capsys):
    """`sfhkit bench gpu` (issue 19 item 4) is known to work before a GPU is lent: on the CPU with
    small sizes it measures every batch size, the CPU reference and the ratio, and skips a batch
    size projected past its time budget instead of running over it."""
    out = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--device", "cpu", "--batch-sizes", "2", "1", "--n", "3", "--steps", "3",
                 "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    assert [run["galaxies"] for run in report["batches"]] == [1, 2]
    for run in report["batches"] + [report["cpu_one_galaxy"]]:
        assert run["seconds"] > 0 and run["peak_memory_gib"] > 0
        assert run["galaxies_per_hour"] == pytest.approx(3600 * run["galaxies"] / run["seconds"], rel=0.01)
    assert report["speedup_best_over_cpu_one_galaxy"] > 0 and report["goal_galaxies_per_hour"] == 1e4
    assert main(["bench", "gpu", "--device", "cpu", "--batch-sizes", "1", "64", "--n", "2", "--steps", "2",
                 "--max-seconds", "1", "--no-cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "skipped" in report["batches"][1] and "cpu_one_galaxy" not in report

def test_infer_runs_on_a_real_spectrum(shared_data, grid, tmp_path, capsys):
    """`sfhkit infer` end to end on a shared SDSS file with its FIREFLY fit (tiny sampler settings)."""
    out = tmp_path / "infer"
    assert main(["infer", "--fits", str(shared_data / "sdss" / "spec-0266-51602-0614.fits"), "--firefly-dir",
                 str(shared_data / "firefly"), "--n", "4", "--keep", "2", "--steps", "3", "--mask-worst", "3",
                 "--out", str(out)]) == 0
    report = json.loads((out / "summary.json").read_text())
    worst = report["masked_worst_residual_ranges"]
    assert len(worst) == 3 and report["masks"]["ranges"] == worst and "first_fit" in report
    assert report["av_source"].startswith("FIREFLY") and report["av"] == pytest.approx(4.05 * 0.1809, abs=1e-3)
    assert isinstance(report["warnings"], list) and report["velocity_dispersion_source"] == "the survey's"
    assert report["line_spread"]["velocity_dispersion_kms"] == pytest.approx(253.6, abs=0.1)
    assert report["masks"]["pixels_removed"]["lines"] > 50
    assert (out / "posterior.png").read_bytes()[:4] == b"\x89PNG"
    from sfhkit import Posterior

    loaded = Posterior.load(out / "posterior.nc")
    assert loaded.observation.metadata["spec_id"] == "266-51602-614"
    assert loaded.observation.metadata["masks"] == report["masks"]
    assert loaded.observation.velocity_dispersion_kms == pytest.approx(253.6, abs=0.1)
    assert loaded.observation.metadata["pipeline_model"].shape == loaded.observation.wavelength.shape
    capsys.readouterr()
    assert main(["infer", "--fits", str(shared_data / "firefly" / "spFly-0266-51602-0614.fits")]) == 2
    assert "a FIREFLY fit (spFly)" in capsys.readouterr().err


def test_infer_with_the_emiles_library(shared_data, emiles_grid, tmp_path, capsys):
    """`sfhkit infer --ssp emiles DIR` fits with E-MILES (tiny sampler settings) and says so in the
    posterior file; a library without its directory is refused."""
    import xarray as xr

    out = tmp_path / "emiles"
    assert main(["infer", "--fits", str(shared_data / "sdss" / "spec-0266-51602-0614.fits"), "--firefly-dir",
                 str(shared_data / "firefly"), "--n", "4", "--keep", "2", "--steps", "3", "--out", str(out),
                 "--ssp", "emiles", str(shared_data / "emiles")]) == 0
    with xr.open_datatree(out / "posterior.nc") as tree:
        assert "E-MILES" in tree.attrs["ssp_library"]
    assert main(["infer", "--fits", str(shared_data / "sdss" / "spec-0266-51602-0614.fits"), "--ssp", "emiles"]) == 2
    assert "E-MILES library needs the directory" in capsys.readouterr().err
    assert main(["library-check", str(shared_data / "sdss" / "spec-0266-51602-0614.fits"), "--emiles",
                 str(shared_data / "emiles"), "--firefly-dir", str(shared_data / "firefly"), "--n", "4", "--keep", "2",
                 "--steps", "3", "--quiet", "--out", str(tmp_path / "library.json")]) == 0
    rows = json.loads((tmp_path / "library.json").read_text())["rows"]
    assert [row["ssp"] for row in rows] == ["bc03", "emiles"] and all("firefly" in row for row in rows)


def test_infer_reads_a_desi_coadd(grid, tmp_path, capsys):
    """`sfhkit infer --fits coadd --targetid` with the redrock file beside it (tiny sampler settings)."""
    from survey_files import DESI_CAMERAS, desi_wavelength, write_desi_coadd, write_redrock

    targets = (39627640566453451, 39627640566453452)
    spectra = {c: (np.stack([4.0 + 1e-4 * (desi_wavelength(c) - 5000.0)] * 2), np.full((2, desi_wavelength(c).size), 25.0))
               for c in DESI_CAMERAS}
    coadd = write_desi_coadd(tmp_path / "coadd-main-dark-10016.fits", spectra, targetids=targets)
    write_redrock(tmp_path / "redrock-main-dark-10016.fits", targets, [0.08, 0.11], subtype=["", "BROADLINE"])
    out = tmp_path / "desi"
    capsys.readouterr()
    assert main(["infer", "--fits", str(coadd), "--targetid", str(targets[1]), "--n", "2", "--steps", "3",
                 "--out", str(out)]) == 0
    from sfhkit import Posterior

    obs = Posterior.load(out / "posterior.nc").observation
    assert obs.metadata["targetid"] == targets[1] and obs.redshift == pytest.approx(0.11)
    # A broad-line object is fitted, and says so: in summary.json and on stderr.
    report = json.loads((out / "summary.json").read_text())
    assert "active_nucleus" in [w["code"] for w in report["warnings"]]
    assert "warning [active_nucleus]" in capsys.readouterr().err
    assert main(["infer", "--fits", str(coadd), "--n", "2", "--steps", "3", "--out", str(out)]) == 2
    assert "holds 2 targets" in capsys.readouterr().err
    assert main(["infer", "--fits", str(tmp_path / "redrock-main-dark-10016.fits")]) == 2
    assert "give it as redrock=" in capsys.readouterr().err


def test_infer_refuses_clearly(tmp_path, capsys, monkeypatch):
    """Offline fetches and missing arguments end with a message and exit code 2, not a traceback."""
    import astropy.utils.data

    def refuse(url, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(astropy.utils.data, "download_file", refuse)
    assert main(["infer", "--plateifu", "8485-1901", "--redshift", "0.0234"]) == 2
    assert "Offline?" in capsys.readouterr().err
    assert main(["infer", "--plateifu", "8485-1901"]) == 2
    assert "--redshift" in capsys.readouterr().err


def test_bench_stability_counts_capped_draws_in_separate_processes(tmp_path, capsys):
    """Small settings (one spawned process, the prior and one mock, 4 draws, 6 steps); the full run
    is `sfhkit bench stability` (10 processes x 120 draws at 15, 30, 60, 250 steps)."""
    out = tmp_path / "stability.json"
    code = main(["bench", "stability", "--processes", "1", "--workers", "1", "--draws", "4", "--steps", "6",
                 "--galaxies", "2122", "--classifier-draws", "60", "--out", str(out)])
    report = json.loads(out.read_text())
    assert code == (0 if report["total_at_cap"] == 0 and report["total_failed_fits"] == 0 else 1)
    assert [row["target"] for row in report["runs"]] == ["prior", "test galaxy 2122"]
    assert all(row["draws"] == 4 for row in report["runs"]) and "at_cap_kept" in report["runs"][1]
    assert 0 <= report["runs"][1]["failed_fits"] <= 4
    assert 1 <= report["runs"][1]["gauss_newton_steps_per_draw_and_step_mean"] <= 4
    assert set(report["prior_quality_vs_steps"][0]["boosted_classifier_auc"]) >= {"cumulative_mass_fraction", "all"}
    capsys.readouterr()
