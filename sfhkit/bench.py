"""Benchmarks that print JSON (`sfhkit bench forward`).  Times are measured here, never in tests."""

from __future__ import annotations

import contextlib
import io
import json
import platform
import tempfile
import time

import numpy as np
import torch

from ._version import __version__
from .sampler import DEFAULT_INTEGRATOR


def _rate(fn, n_spectra: int, min_seconds: float) -> float:
    fn()  # warm-up
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n_spectra * count / elapsed


def bench_forward(min_seconds: float = 2.0, device: str = "cpu", include_bagpipes: bool = True) -> dict:
    """Spectra per second of the forward model on an SDSS-like grid (3800 log-spaced pixels),
    batch 1 and 128, forward and forward+backward, exact and compressed; bagpipes'
    model_galaxy.update in the same run; SSP grid build time cold and from cache."""
    from .forward import ForwardModel
    from .histories import example_history
    from .ssp import SSPGrid

    result = {"benchmark": "forward", "sfhkit_version": __version__, "torch": torch.__version__,
              "device": device, "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        SSPGrid.default(cache_dir=cache, progress=False)
        result["grid_build_cold_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        grid = SSPGrid.default(cache_dir=cache, progress=False)
        result["grid_load_from_cache_s"] = round(time.perf_counter() - t0, 2)
    wavelength = np.geomspace(3800.0, 9200.0, 3800)
    history = example_history()
    for label, rank in (("exact", None), ("compressed", 128)):
        t0 = time.perf_counter()
        model = ForwardModel(grid, wavelength, redshift=0.05, av=0.2, rank=rank, device=device)
        result[f"{label}_model_build_s"] = round(time.perf_counter() - t0, 2)
        if rank:
            result["compression_max_template_residual"] = model.compression_error
        for batch in (1, 128):
            x = history.unsqueeze(0).repeat(batch, 1, 1).to(device)

            def forward():
                with torch.no_grad():
                    model(x, validate=False)
                if device != "cpu":
                    torch.cuda.synchronize()

            def forward_backward():
                xg = x.clone().requires_grad_(True)
                model(xg, validate=False).sum().backward()
                if device != "cpu":
                    torch.cuda.synchronize()

            result[f"{label}_forward_per_s_batch{batch}"] = round(_rate(forward, batch, min_seconds))
            result[f"{label}_forward_backward_per_s_batch{batch}"] = round(_rate(forward_backward, batch, min_seconds))
    if include_bagpipes:
        result.update(_bench_bagpipes(wavelength, min_seconds))
    result["goal_forward_per_s_batch128"] = 5000
    return result


def _bench_bagpipes(wavelength, min_seconds) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        import bagpipes
    components = {"redshift": 0.05,
                  "delayed": {"age": 10.0, "tau": 2.0, "massformed": 10.5, "metallicity": 1.0},
                  "dust": {"type": "Calzetti", "Av": 0.2, "qpah": 3.5, "umin": 1.0, "gamma": 0.01}}
    model = bagpipes.model_galaxy(components, spec_wavs=wavelength)
    taus = iter(np.linspace(1.0, 3.0, 100000))

    def update():
        components["delayed"]["tau"] = float(next(taus))
        model.update(components)

    from importlib.metadata import version

    return {"bagpipes_version": version("bagpipes"),
            "bagpipes_update_per_s": round(_rate(update, 1, min_seconds), 1),
            "bagpipes_note": "model_galaxy.update with default R_spec=1000, same 3800 pixels"}


def main_forward(args) -> int:
    out = bench_forward(min_seconds=args.min_seconds, device=args.device,
                        include_bagpipes=not args.no_bagpipes)
    print(json.dumps(out, indent=1))
    return 0


def bench_prior(prior=None, test_histories=None, *, n: int = 2000, steps: int = 500, corrector_snr: float | None = None,
                corrector_above_sigma: float | None = None, seed: int = 0, device: str = "cpu", plot_path=None) -> dict:
    """Quality of a prior against held-out histories (classifier AUC, KS distances, see
    sfhkit.quality) and its sampling speed.  Defaults: the embedded prior and test set, and
    `Prior.sample`'s sampler."""
    from .data import load_histories
    from .prior import CORRECTOR_ABOVE_SIGMA, CORRECTOR_SNR, Prior
    from .quality import boosted_classifier_aucs, classifier_two_sample_auc, ks_distances, resolved

    prior = prior or Prior.default(device=device)
    if test_histories is None:
        test_histories = load_histories("test").histories.values
    test = np.asarray(test_histories, dtype=np.float64)
    n = min(n, len(test))
    test = test[np.random.default_rng(seed).permutation(len(test))[:n]]
    start = time.perf_counter()
    corrector = {"corrector_snr": CORRECTOR_SNR if corrector_snr is None else corrector_snr,
                 "corrector_above_sigma": CORRECTOR_ABOVE_SIGMA if corrector_above_sigma is None else corrector_above_sigma}
    draws = prior.sample(n, steps=steps, **corrector, seed=seed, progress=False).double().cpu().numpy()
    sample_s = time.perf_counter() - start
    finite = np.isfinite(draws).all(axis=(1, 2))
    draws = draws[finite]
    features = [prior.transform.normalise(torch.as_tensor(resolved(x))).cpu().numpy() for x in (test, draws)]
    ks = ks_distances(test, draws)
    auc = classifier_two_sample_auc(*features, seed=seed)
    boosted = boosted_classifier_aucs(test, draws, seed=seed)
    if plot_path is not None:
        from .cosmology import TimeBins
        from .plots import plot_prior_draws

        plot_prior_draws(draws, test, TimeBins(), plot_path)
    return {"prior": repr(prior), "training": prior.training_info, "n_test": int(n), "n_draws_finite": int(finite.sum()),
            "steps": steps, **corrector, "classifier_auc": round(auc, 4), "ks": ks, "ks_max": max(ks.values()),
            "goal": {"classifier_auc_max": 0.65, "ks_max": 0.1},
            "meets_goal": bool(auc <= 0.65 and max(ks.values()) <= 0.1),
            "boosted_classifier_auc": boosted, "boosted_goal_auc_max": 0.55,
            "meets_boosted_goal": bool(max(boosted.values()) <= 0.55),
            "samples_per_s": round(n / sample_s, 1), "corrector_speed": corrector_speed(prior, steps, corrector),
            "device": str(prior.device), "torch_threads": torch.get_num_threads()}


def corrector_speed(prior, steps: int, corrector: dict, n: int = 500, repeats: int = 2) -> dict:
    """Samples per second of `prior.sample` with the predictor steps alone and with
    `corrector`, interleaved in one process (best of `repeats`), and the ratio of their times."""
    settings = {"predictor_only": {"corrector_snr": 0.0}, "with_corrector": corrector}
    prior.sample(16, steps=4, progress=False)   # warm-up
    best = dict.fromkeys(settings, float("inf"))
    for _ in range(repeats):
        for name, kwargs in settings.items():
            start = time.perf_counter()
            prior.sample(n, steps=steps, seed=0, progress=False, **kwargs)
            best[name] = min(best[name], time.perf_counter() - start)
    return {"n": n, "samples_per_s": {name: round(n / seconds, 1) for name, seconds in best.items()},
            "time_ratio": round(best["with_corrector"] / best["predictor_only"], 2)}


def main_prior(args) -> int:
    from .prior import Prior

    prior = Prior.load(args.checkpoint, device=args.device) if args.checkpoint else None
    test = None
    if args.data:
        from .data import read_histories

        test = read_histories(args.data).histories.values
    print(json.dumps(bench_prior(prior, test, n=args.n, steps=args.steps, corrector_snr=args.corrector_snr,
                                 corrector_above_sigma=args.corrector_above_sigma, seed=args.seed,
                                 device=args.device, plot_path=args.plot), indent=1))
    return 0


def bench_posterior(*, n: int = 100, keep: int | None = None, steps: int | None = None, index: int = 2122,
                    batch_galaxies: int = 4, device: str = "cpu", seed: int = 0, levers: bool = False,
                    spectrum=None) -> dict:
    """Wall time of `sample_posterior` for `keep` kept draws (of n; all by default: the goal's 100
    kept draws) of one mock SDSS-like spectrum (3800 pixels, z 0.05, A_V 0.2, SNR 50) with the
    default prior, the explorer's first look (FIRST_LOOK_DRAWS draws at FIRST_LOOK_STEPS steps),
    and the throughput when `batch_galaxies` mocks are sampled in one batch.  With `levers`, the
    same galaxy also at the previous defaults (LEVER_BASELINE: 250 steps, every SVD component in the
    likelihood) and with each speed lever alone, in this one run, so that their ratios compare.
    The forward model is built (and the SSP grid loaded) before the clock starts; the time includes
    the likelihood's per-observation setup.  With `spectrum` (a file `sfhkit.read_observation`
    reads), the first look of a real spectrum as the explorer makes it: its forward model's build
    (which the explorer starts when the galaxy loads) and the first look with the real-spectrum
    settings (emission-line and sky masks, the flux-calibration polynomial, A_V inferred where the
    file has no catalogue value)."""
    from .data import load_histories
    from .forward import ForwardModel
    from .likelihood import LIKELIHOOD_RANK
    from .observation import mock_observation, sdss_wavelength
    from .prior import Prior
    from .sampler import DEFAULT_STEPS, FIRST_LOOK_DRAWS, FIRST_LOOK_STEPS, first_look, sample_posterior
    from .ssp import SSPGrid

    steps = steps or DEFAULT_STEPS
    prior = Prior.default(device=device)
    grid = SSPGrid.default(progress=False)
    model = ForwardModel(grid, sdss_wavelength(), redshift=0.05, av=0.2, device=device)
    test = load_histories("test").histories.values
    mock = mock_observation(test[index], model, snr=50, seed=seed)
    sample_posterior(mock, prior, model, n=4, keep=4, steps=2, seed=seed, progress=False)   # warm-up

    def timed(**settings):
        start = time.perf_counter()
        posterior = sample_posterior(mock, prior, model, seed=seed, progress=False, **settings)
        return time.perf_counter() - start, posterior

    single_s, posterior = timed(n=n, keep=keep, steps=steps)
    start = time.perf_counter()
    first_look(mock, prior, model, seed=seed)
    first_look_s = time.perf_counter() - start
    mocks = [mock_observation(test[i], model, snr=50, seed=seed) for i in range(batch_galaxies)]
    start = time.perf_counter()
    sample_posterior(mocks, prior, model, n=n, keep=keep, steps=steps, seed=seed, progress=False)
    batch_s = time.perf_counter() - start
    kept = int(posterior.kept.sum())
    result = {"pixels": int(mock.n_used), "n": n, "keep": kept, "steps": steps,
              "likelihood_rank": posterior.config["likelihood_rank"], "prior": repr(prior),
              "seconds_one_galaxy": round(single_s, 2), "seconds_per_kept_sample": round(single_s / kept, 4),
              "goal_seconds_cpu": 10, "goal_seconds_gpu": 5,
              "median_chi2_per_pixel": round(posterior.median_chi2_per_pixel(), 4),
              "first_look": {"draws": FIRST_LOOK_DRAWS, "steps": FIRST_LOOK_STEPS, "seconds": round(first_look_s, 2),
                             "goal_seconds": 5},
              "batch_galaxies": batch_galaxies, "seconds_batch": round(batch_s, 2),
              "galaxies_per_hour_one_at_a_time": round(3600 / single_s, 1),
              "galaxies_per_hour_batched": round(3600 * batch_galaxies / batch_s, 1),
              "device": device, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "sfhkit": __version__}
    if spectrum is not None:
        result["first_look_real_spectrum"] = _first_look_real(spectrum, grid, prior, seed)
    if levers:
        baseline = dict(LEVER_BASELINE)
        settings = {"baseline (250 steps, every SVD component)": baseline,
                    f"likelihood rank {LIKELIHOOD_RANK} alone": {**baseline, "likelihood_rank": LIKELIHOOD_RANK},
                    f"{steps} steps alone": {**baseline, "steps": steps},
                    "both (the defaults)": {"steps": steps, "likelihood_rank": LIKELIHOOD_RANK}}
        rows = {}
        for label, lever in settings.items():
            seconds, drawn = timed(n=n, keep=keep, **lever)
            rows[label] = {**lever, "seconds": round(seconds, 2),
                           "median_chi2_per_pixel": round(drawn.median_chi2_per_pixel(), 4)}
        first = next(iter(rows.values()))["seconds"]
        for row in rows.values():
            row["speedup"] = round(first / row["seconds"], 2)
        result["levers"] = rows
        result["likelihood_rank_chi2_error"] = rank_chi2_error(grid, test[::20][:200])
    return result


LEVER_BASELINE = {"steps": 250, "likelihood_rank": None}     # the defaults before issue 19


def _first_look_real(path, grid, prior, seed: int) -> dict:
    """Seconds to build a real spectrum's forward model and to sample its first look (see
    `bench_posterior`)."""
    from dataclasses import replace

    from .attenuation import infer_av, should_infer_av
    from .fluxcal import default_degree
    from .galaxies import spectrum_galaxy
    from .lines import apply_masks
    from .sampler import first_look

    observation = apply_masks(spectrum_galaxy(path).observation, lines=True, sky=True)
    degree = default_degree("cla")
    inferring_av = should_infer_av(observation, degree)
    if inferring_av:
        observation = replace(observation, av=0.0, metadata=dict(observation.metadata))
    start = time.perf_counter()
    model = observation.forward_model(grid, device=prior.device)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    look = first_look(observation, prior, model, seed=seed, calibration_degree=degree)
    if inferring_av:
        look = infer_av(look, seed=seed)
    look_s = time.perf_counter() - start
    return {"file": str(path), "pixels": int(observation.n_used), "model_build_seconds": round(build_s, 2),
            "first_look_seconds": round(look_s, 2), "infers_av": inferring_av, "calibration_degree": degree,
            "median_chi2_per_pixel": round(look.median_chi2_per_pixel(), 3)}


def rank_chi2_error(grid, histories, *, ranks=(32, 64, 96, 128), snr: float = 50.0) -> dict:
    """What a likelihood of lower SVD rank misses: for each rank, the chi^2 between the rank's
    composite spectra and the exact model's (rank=None) for `histories` (n, 2, 64), with the paper's
    mock noise (sigma = mean flux / snr), on the SDSS-like grid at z 0.05, A_V 0.2.  Median, 95th
    percentile and largest over the histories, and the largest relative template residual."""
    from .forward import ForwardModel
    from .observation import sdss_wavelength

    histories = torch.as_tensor(np.asarray(histories), dtype=torch.float32)
    with torch.no_grad():
        exact = ForwardModel(grid, sdss_wavelength(), redshift=0.05, av=0.2, rank=None)(histories, validate=False)
    exact = exact.double()
    sigma = exact.mean(1, keepdim=True) / snr
    rows = {}
    for rank in ranks:
        model = ForwardModel(grid, sdss_wavelength(), redshift=0.05, av=0.2, rank=rank)
        with torch.no_grad():
            chi2 = ((((model(histories, validate=False).double() - exact) / sigma) ** 2).sum(1)).numpy()
        rows[str(rank)] = {"chi2_median": float(f"{np.median(chi2):.3g}"),
                           "chi2_p95": float(f"{np.percentile(chi2, 95):.3g}"), "chi2_max": float(f"{chi2.max():.3g}"),
                           "template_residual_max": float(f"{model.compression_error:.3g}")}
    return {"histories": int(histories.shape[0]), "snr": snr, "pixels": int(exact.shape[1]), "by_rank": rows}


def main_posterior(args) -> int:
    print(json.dumps(bench_posterior(n=args.n, keep=args.keep, steps=args.steps, batch_galaxies=args.batch_galaxies,
                                     device=args.device, seed=args.seed, levers=args.levers,
                                     spectrum=args.spectrum), indent=1))
    return 0


def bench_vdisp(*, n: int = 120, keep: int | None = None, steps: int | None = None, index: int = 2122,
                true_vdisp_kms: float = 220.0, true_av: float = 0.6, calibration_degree: int = 8, device: str = "cpu",
                seed: int = 0) -> dict:
    """The cost of inferring A_V and sigma_v (sfhkit.attenuation, sfhkit.dispersion: a real
    spectrum without catalogue values, the default) against a fit at catalogue values, in one run:
    a mock at `true_vdisp_kms` through a 70 km/s instrument, at `true_av` with a calibration error
    of a few per cent (z 0.1, S/N 20, the real-spectrum polynomial of `calibration_degree`).  Each
    side's time includes the one forward-model build it needs (at the catalogue sigma_v; the
    instrument-only model) and its sampling; the goal is a ratio of at most 2 (issue 17)."""
    from dataclasses import replace

    from .attenuation import infer_av
    from .data import load_histories
    from .dispersion import sample_with_vdisp
    from .forward import ForwardModel
    from .lsf import LineSpread
    from .observation import mock_observation, sdss_wavelength
    from .prior import Prior
    from .sampler import DEFAULT_STEPS, sample_posterior
    from .ssp import SSPGrid

    steps = steps or DEFAULT_STEPS
    grid, prior = SSPGrid.default(progress=False), Prior.default(device=device)
    wavelength = sdss_wavelength()
    built = ForwardModel(grid, wavelength, 0.1, 0.0, line_spread=LineSpread(true_vdisp_kms, 70.0), device=device)
    mock = mock_observation(load_histories("test").histories.values[index], built, snr=20, seed=seed, av=true_av,
                            calibration=[0.03, -0.02, 0.01])
    mock = replace(mock, instrument_sigma_kms=np.full(wavelength.size, 70.0))
    sample_posterior(mock, prior, built, n=4, steps=2, seed=seed, progress=False)           # warm-up
    start = time.perf_counter()
    known = replace(mock, av=true_av, velocity_dispersion_kms=true_vdisp_kms, metadata=dict(mock.metadata))
    fixed = sample_posterior(known, prior, known.forward_model(grid, device=device), n=n, keep=keep, steps=steps,
                             seed=seed, progress=False, calibration_degree=calibration_degree)
    fixed_s = time.perf_counter() - start
    start = time.perf_counter()
    instrument_model = mock.forward_model(grid, line_spread=mock.line_spread(0.0), device=device)
    inferred = infer_av(sample_with_vdisp(mock, prior, grid, n=n, keep=keep, steps=steps, seed=seed, progress=False,
                                          calibration_degree=calibration_degree, instrument_model=instrument_model,
                                          av_from_short_passes=True), seed=seed)
    inferred_s = time.perf_counter() - start
    vdisp, av = inferred.vdisp_kms[inferred.kept], inferred.av[inferred.kept]
    return {"benchmark": "vdisp", "n": n, "steps": steps, "calibration_degree": calibration_degree,
            "true_vdisp_kms": true_vdisp_kms, "inferred_vdisp_kms": {"mean": round(float(vdisp.mean()), 1),
                                                                     "std": round(float(vdisp.std()), 1)},
            "true_av": true_av, "first_pass_av": inferred.config["av_inference"]["fit_av_mag"],
            "short_passes": inferred.config["vdisp_inference"]["short_passes"],
            "inferred_av": {"mean": round(float(av.mean()), 3), "std": round(float(av.std()), 3)},
            "seconds_fixed": round(fixed_s, 2), "seconds_inferred": round(inferred_s, 2),
            "cost_ratio": round(inferred_s / fixed_s, 3), "goal_cost_ratio": 2.0,
            "median_chi2_per_pixel": {"fixed": round(fixed.median_chi2_per_pixel(), 4),
                                      "inferred": round(inferred.median_chi2_per_pixel(), 4)},
            "device": device, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "sfhkit": __version__}


def main_vdisp(args) -> int:
    print(json.dumps(bench_vdisp(n=args.n, keep=args.keep, steps=args.steps, device=args.device, seed=args.seed),
                     indent=1))
    return 0


def bench_ppxf(posterior_paths, *, grid=None, regul: float | None = None) -> dict:
    """sfhkit beside pPXF (sfhkit.ppxf_reference) on each posterior file of `posterior_paths`
    (`sfhkit infer` writes them): the same spectrum, pixels, templates, A_V, sigma_v and polynomial
    degree; formed mass, mass-weighted age and log Z side by side, with the differences."""
    from .posterior import Posterior
    from .ppxf_reference import REGUL, compare_with_ppxf
    from .ssp import SSPGrid

    grid = grid or SSPGrid.default(progress=False)
    regul = REGUL if regul is None else regul
    rows = []
    for path in posterior_paths:
        posterior = Posterior.load(path)
        fitted_with = posterior.config.get("ssp_library")
        if fitted_with and fitted_with != grid.library:
            raise ValueError(f"{path} was fitted with {fitted_with!r}, not {grid.library!r}: give the same library "
                             "(--ssp) so that pPXF gets the fit's own templates")
        start = time.perf_counter()
        row = compare_with_ppxf(posterior, grid, regul=regul)
        rows.append({"posterior": str(path), **row, "ppxf_seconds": round(time.perf_counter() - start, 1)})
    return {"benchmark": "ppxf", "ssp_library": grid.library, "regul": regul, "rows": rows,
            "all_agree": all(r["agrees"] for r in rows), "sfhkit": __version__}


def bench_batch(*, galaxies: int = 8, n: int = 120, keep: int | None = None, steps: int | None = None,
                device: str = "cpu", cores: int = 2) -> dict:
    """Galaxies per hour of `sfhkit batch` on a LocalCluster of 1 and 2 workers (sharing `cores`
    torch threads), one galaxy per task against all of a worker's galaxies in one vectorised task.
    Workers load the grid, the prior and the mock model in a warm-up batch before the clock starts."""
    from pathlib import Path

    from dask.distributed import Client, LocalCluster

    from .batch import run_batch
    from .sampler import DEFAULT_STEPS

    steps = steps or DEFAULT_STEPS
    indices = np.linspace(0, 4000, galaxies).round().astype(int)
    result = {"benchmark": "batch", "galaxies": galaxies, "n": n, "keep": keep, "steps": steps, "device": device,
              "cores": cores, "sfhkit": __version__, "cpu": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        catalogue = tmp / "catalogue.csv"
        catalogue.write_text("test_index\n" + "\n".join(map(str, indices)) + "\n")
        for workers in (1, 2):
            threads = max(cores // workers, 1)
            warm = tmp / f"warm{workers}.csv"
            warm.write_text("test_index\n" + "\n".join(str(4100 + i) for i in range(workers)) + "\n")
            entry = {"torch_threads_per_worker": threads}
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                run_batch(warm, tmp / f"warm-out{workers}", client=client, chunk_size=1, n=2, keep=2, steps=2,
                          threads_per_worker=threads, device=device, progress=False)
                for label, chunk in (("one_at_a_time", 1), ("vectorised", -(-galaxies // workers))):
                    start = time.perf_counter()
                    report = run_batch(catalogue, tmp / f"{label}{workers}", client=client, chunk_size=chunk, n=n,
                                       keep=keep, steps=steps, threads_per_worker=threads, device=device, progress=False)
                    seconds = time.perf_counter() - start
                    entry[label] = {"chunk_size": chunk, "seconds": round(seconds, 1), "ok": report["ok"],
                                    "galaxies_per_hour": round(3600 * galaxies / seconds, 1)}
            entry["vectorised_speedup"] = round(entry["vectorised"]["galaxies_per_hour"]
                                                / entry["one_at_a_time"]["galaxies_per_hour"], 2)
            result[f"{workers}_worker{'s' if workers > 1 else ''}"] = entry
    result["goal_vectorised_speedup"] = {"cpu": 1.5, "gpu": 5}
    return result


def main_batch(args) -> int:
    print(json.dumps(bench_batch(galaxies=args.galaxies, n=args.n, keep=args.keep, steps=args.steps,
                                 device=args.device), indent=1))
    return 0


GPU_BATCH_SIZES = (1, 8, 64, 256)


def _peak_memory_gib(device: torch.device) -> float:
    """Peak memory since the last reset: allocated by torch on a CUDA device; on the CPU the
    process's peak resident set (all of the run so far, not one measurement)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3)   # kB on Linux


def _timed_batch(observations, prior, model, *, n: int, steps: int, device: torch.device) -> dict:
    """One batched `sample_posterior` over `observations`, timed (device synchronised) with its
    peak memory and median chi^2 per pixel."""
    from .sampler import sample_posterior

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    posteriors = sample_posterior(observations, prior, model, n=n, steps=steps,
                                  seed=list(range(len(observations))), progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    galaxies = len(observations)
    return {"galaxies": galaxies, "seconds": round(seconds, 3), "seconds_per_posterior": round(seconds / galaxies, 4),
            "galaxies_per_hour": round(3600 * galaxies / seconds, 1), "peak_memory_gib": _peak_memory_gib(device),
            "median_chi2_per_pixel": round(float(np.median([p.median_chi2_per_pixel() for p in posteriors])), 4)}


def bench_gpu(*, device: str = "cuda", batch_sizes=GPU_BATCH_SIZES, n: int = 120, steps: int | None = None,
              max_seconds: float = 240.0, cpu_reference: bool = True, index: int = 2122) -> dict:
    """Throughput of batched posterior sampling on `device` (issue 19 item 4): galaxies per hour,
    seconds per posterior and peak memory at each batch size (galaxies sampled together, `n` draws
    each, every draw kept), for SDSS-like mocks of one test-set history (`index`, the demo's galaxy;
    3800 pixels, z 0.05, A_V 0.2, S/N 50) with independent noise, so that batch sizes compare
    (galaxies differ in cost: a faint one takes more Gauss-Newton steps), and one of them on the
    CPU in the same run for the ratio.  Forward models, mocks and a warm-up are made before any
    clock starts.  A batch size whose time, projected from the last one at the
    same time per galaxy (batching only lowers it), would end past `max_seconds` since the start
    is skipped and says so, so that the command ends within a short device lease."""
    from .data import load_histories
    from .forward import ForwardModel
    from .observation import mock_observation, sdss_wavelength
    from .prior import Prior
    from .sampler import DEFAULT_STEPS, sample_posterior
    from .ssp import SSPGrid

    began = time.perf_counter()
    steps = steps or DEFAULT_STEPS
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is visible to torch; run with --device cpu to test the benchmark")
    batch_sizes = sorted({int(b) for b in batch_sizes})
    if not batch_sizes or batch_sizes[0] < 1:
        raise ValueError(f"batch sizes must be positive integers, got {batch_sizes}")
    grid = SSPGrid.default(progress=False)
    cpu_model = ForwardModel(grid, sdss_wavelength(), redshift=0.05, av=0.2)
    test = load_histories("test").histories.values
    mocks = [mock_observation(test[index], cpu_model, snr=50, seed=seed) for seed in range(batch_sizes[-1])]
    result = {"benchmark": "gpu", "device": str(target),
              "device_name": torch.cuda.get_device_name(target) if target.type == "cuda" else
              (platform.processor() or platform.machine()),
              "test_index": index, "n_draws": n, "steps": steps, "pixels": int(mocks[0].n_used), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "sfhkit": __version__, "goal_galaxies_per_hour": 1e4}
    if cpu_reference:
        cpu_prior = Prior.default()
        sample_posterior(mocks[0], cpu_prior, cpu_model, n=2, steps=2, seed=0, progress=False)       # warm-up
        result["cpu_one_galaxy"] = _timed_batch(mocks[:1], cpu_prior, cpu_model, n=n, steps=steps,
                                                device=torch.device("cpu"))
    prior = Prior.default(device=target)
    model = cpu_model if target.type == "cpu" else ForwardModel(grid, sdss_wavelength(), redshift=0.05, av=0.2,
                                                                device=target)
    sample_posterior(mocks[:2], prior, model, n=2, steps=2, seed=[0, 1], progress=False)             # warm-up
    runs, seconds_per_galaxy = [], None
    for size in batch_sizes:
        elapsed = time.perf_counter() - began
        if seconds_per_galaxy is not None and elapsed + seconds_per_galaxy * size > max_seconds:
            runs.append({"galaxies": size, "skipped": f"projected to end after {max_seconds:.0f} s "
                                                      f"({seconds_per_galaxy * size:.0f} s from {elapsed:.0f} s)"})
            continue
        run = _timed_batch(mocks[:size], prior, model, n=n, steps=steps, device=target)
        seconds_per_galaxy = run["seconds_per_posterior"]
        runs.append(run)
    result["batches"] = runs
    measured = [r for r in runs if "skipped" not in r]
    best = max(measured, key=lambda r: r["galaxies_per_hour"])
    result["best_galaxies_per_hour"] = best["galaxies_per_hour"]
    if cpu_reference:
        result["speedup_best_over_cpu_one_galaxy"] = round(
            best["galaxies_per_hour"] / result["cpu_one_galaxy"]["galaxies_per_hour"], 2)
    result["seconds_total"] = round(time.perf_counter() - began, 1)
    return result


def main_gpu(args) -> int:
    report = bench_gpu(device=args.device, batch_sizes=args.batch_sizes, n=args.n, steps=args.steps,
                       max_seconds=args.max_seconds, cpu_reference=not args.no_cpu)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


STABILITY_STEPS = (15, 30, 60, 250)
STABILITY_GALAXIES = (0, 2122)
FAILED_FIT_CHI2_PER_PIXEL = 3.0   # a posterior draw this far from the data (the median draw's is ~1) is a failed fit


def stability_run(process_index: int, *, draws: int = 120, keep: int | None = None, steps=STABILITY_STEPS,
                  galaxies=STABILITY_GALAXIES, integrator: str = DEFAULT_INTEGRATOR, likelihood: str = "cla",
                  cla: str = "jacobian", threads: int = 1) -> dict:
    """One process's share of `bench_stability`: for each step count, `draws` prior draws and
    `draws` posterior draws of each test-set mock (the paper's: z 0.05, A_V 0.2, SNR 50), seeded by
    the process index; counts of draws with any SFR at the cap (`prior.MAX_SFR`, 1e4 Msun/yr) and of
    posterior draws that are failed fits (chi^2 per pixel above FAILED_FIT_CHI2_PER_PIXEL)."""
    from .galaxies import mock_galaxy
    from .prior import MAX_SFR, Prior
    from .sampler import sample_posterior

    torch.set_num_threads(threads)
    prior = Prior.default()
    at_cap = lambda h: (np.asarray(h)[:, 0] >= (1 - 1e-3) * MAX_SFR).any(-1)   # noqa: E731
    rows = []
    for n_steps in steps:
        h = prior.sample(draws, steps=n_steps, seed=process_index, progress=False, integrator=integrator).cpu().numpy()
        rows.append({"target": "prior", "steps": n_steps, "draws": draws, "at_cap": int(at_cap(h).sum()),
                     "max_sfr_msun_per_yr": float(np.nanmax(h[:, 0]))})
    for index in galaxies:
        galaxy = mock_galaxy(index, progress=False)
        for n_steps in steps:
            post = sample_posterior(galaxy.observation, prior, galaxy.forward_model, n=draws,
                                    keep=None if keep is None else min(keep, draws), steps=n_steps,
                                    seed=process_index, progress=False, integrator=integrator,
                                    likelihood=likelihood, cla=cla)
            capped = at_cap(post.histories)
            failed = post.chi2 / galaxy.observation.n_used > FAILED_FIT_CHI2_PER_PIXEL
            rows.append({"target": f"test galaxy {index}", "steps": n_steps, "draws": draws,
                         "at_cap": int(capped.sum()), "at_cap_kept": int((capped & post.kept).sum()),
                         "failed_fits": int(failed.sum()),
                         "gauss_newton_steps_per_draw_and_step": post.config.get("gauss_newton_steps_per_draw_and_step"),
                         "max_sfr_msun_per_yr": float(np.nanmax(post.histories[:, 0])),
                         "median_chi2_per_pixel_kept": round(post.median_chi2_per_pixel(), 4)})
    return {"process": process_index, "rows": rows}


def bench_stability(*, processes: int = 10, workers: int = 2, draws: int = 120, steps=STABILITY_STEPS,
                    galaxies=STABILITY_GALAXIES, integrator: str = DEFAULT_INTEGRATOR, likelihood: str = "cla",
                    cla: str = "jacobian", classifier_draws: int = 1000, seed: int = 0) -> dict:
    """Runaway draws (issue 16): `stability_run` in `processes` separate Python processes (spawned,
    one per run, `workers` at a time with one torch thread each, so that float rounding differs as
    it does between users' machines), summed per (target, steps); and the prior's quality against
    the step count (`quality.boosted_classifier_aucs`, `classifier_draws` draws against as many
    test histories)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from .data import load_histories
    from .prior import MAX_SFR, Prior
    from .quality import boosted_classifier_aucs

    start = time.perf_counter()
    job = partial(stability_run, draws=draws, steps=tuple(steps), galaxies=tuple(galaxies), integrator=integrator,
                  likelihood=likelihood, cla=cla)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        runs = list(pool.map(job, range(processes)))
    totals: dict[tuple, dict] = {}
    for run in runs:
        for row in run["rows"]:
            total = totals.setdefault((row["target"], row["steps"]), {
                "target": row["target"], "steps": row["steps"], "draws": 0, "at_cap": 0, "max_sfr_msun_per_yr": 0.0,
                **({"at_cap_kept": 0, "failed_fits": 0, "median_chi2_per_pixel_kept": [],
                    "gauss_newton_steps_per_draw_and_step": []} if "at_cap_kept" in row else {})})
            total["draws"] += row["draws"]
            total["at_cap"] += row["at_cap"]
            total["max_sfr_msun_per_yr"] = round(max(total["max_sfr_msun_per_yr"], row["max_sfr_msun_per_yr"]), 2)
            if "at_cap_kept" in row:
                total["at_cap_kept"] += row["at_cap_kept"]
                total["failed_fits"] += row["failed_fits"]
                total["median_chi2_per_pixel_kept"].append(row["median_chi2_per_pixel_kept"])
                total["gauss_newton_steps_per_draw_and_step"].append(row["gauss_newton_steps_per_draw_and_step"])
    table = list(totals.values())
    for total in table:
        if "median_chi2_per_pixel_kept" in total:
            values = total.pop("median_chi2_per_pixel_kept")
            total["median_chi2_per_pixel_kept_range"] = [min(values), max(values)]
            steps_taken = [v for v in total.pop("gauss_newton_steps_per_draw_and_step") if v is not None]
            total["gauss_newton_steps_per_draw_and_step_mean"] = (round(float(np.mean(steps_taken)), 3)
                                                                   if steps_taken else None)
    sampling_s = time.perf_counter() - start
    quality = []
    if classifier_draws:
        test = load_histories("test").histories.values
        test = test[np.random.default_rng(seed).permutation(len(test))[:classifier_draws]]
        prior = Prior.default()
        for n_steps in steps:
            h = prior.sample(len(test), steps=n_steps, seed=seed, progress=False, integrator=integrator)
            quality.append({"steps": n_steps, "boosted_classifier_auc": boosted_classifier_aucs(
                test, h.double().cpu().numpy(), seed=seed)})
    return {"benchmark": "stability", "integrator": integrator, "likelihood": likelihood, "cla": cla,
            "processes": processes, "workers": workers,
            "cap_msun_per_yr": MAX_SFR,
            "failed_fit_chi2_per_pixel": FAILED_FIT_CHI2_PER_PIXEL, "runs": table,
            "total_at_cap": sum(t["at_cap"] for t in table),
            "total_failed_fits": sum(t.get("failed_fits", 0) for t in table), "prior_quality_vs_steps": quality,
            "classifier_goal_auc_max": 0.55, "sampling_seconds": round(sampling_s, 1), "sfhkit": __version__}


def main_stability(args) -> int:
    from ._io import write_json

    report = bench_stability(processes=args.processes, workers=args.workers, draws=args.draws, steps=args.steps,
                             galaxies=args.galaxies, integrator=args.integrator, likelihood=args.likelihood,
                             cla=args.cla, classifier_draws=args.classifier_draws, seed=args.seed)
    if args.out:
        write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return 0 if report["total_at_cap"] == 0 and report["total_failed_fits"] == 0 else 1
