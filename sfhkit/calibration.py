"""Calibration of the posterior on mocks (beyond the paper, which shows one).

For many test-set histories: make the paper's mock (same z, A_V, SNR for all, so that one forward
model serves every galaxy and galaxies are sampled in batches), sample the posterior, and ask how
often the truth falls inside the central 68 % and 95 % intervals of the kept draws (all by
default; with `keep` < n the report gives all draws' too: keeping the best by residual narrows
the posterior), for each derived quantity and each time bin's SFR.  A calibrated posterior gives 0.68 and 0.95.  TARP
(Lemos et al. 2023, "Sampling-based accuracy testing of posterior estimators") tests the joint
128-dimensional history: for a random reference point per galaxy, the fraction f of draws closer to
it than the truth is uniform when the posterior is calibrated; the expected coverage
ECP(alpha) = mean(f < alpha) then equals alpha.  On a finite number of galaxies even an exact
posterior deviates from the diagonal: the report gives the deviation a calibrated posterior
would show on as many galaxies and draws (`tarp_null`), and the p-value of the one measured.

The true histories (`truths`):

* "test" (default): held-out test-set histories of the prior's own training distribution;
* "prior": draws from the prior itself (simulation-based calibration): then the exact posterior is
  calibrated by construction, so any miscoverage is the sampler's (likelihood approximation,
  discretisation), not the prior's mismatch with the simulations;
* "parametric": a family the prior never saw (`sfhkit.data.parametric`: delayed-tau histories with
  quenching and stochastic bursts), out of distribution: a wrong prior should give wider, not
  wrong, answers (goal: 68 % intervals cover at least 0.55, 95 % at least 0.90);
* a path: histories a user brings, a NetCDF file in sfhkit's histories format
  (`sfhkit.data.store`) or a NumPy .npy array (n, 2, 64) of SFR (Msun/yr) and log10 Z/Zsun.

Besides coverage, the report gives each quantity's bias: the mean and median over galaxies of
(posterior median - truth), and per galaxy (`per_galaxy`, in the JSON file only) the truth and the
2.5, 16, 50, 84 and 97.5 % quantiles of the kept draws, so that coverage can be broken down by any
property of the truths; `by_truth_quenched` gives coverage and mean bias for quenched truths
(`sfhkit.histories.is_quenched`: last-bin sSFR below 1e-11 /yr) and star-forming ones apart.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import torch

QUANTITIES = ("log10_formed_mass", "log10_surviving_mass", "t50_gyr", "t90_gyr", "mass_weighted_age_gyr",
              "mass_weighted_logz")
LEVELS = (0.68, 0.95)
TRUTHS = ("test", "prior", "parametric")         # or a path to a histories file
GOAL_TOLERANCE = 0.05                            # in distribution: coverage and TARP within this of nominal
OUT_OF_DISTRIBUTION_GOAL = {"0.68": 0.55, "0.95": 0.90}   # minimum coverage on histories the prior never saw
# Mocks with a velocity dispersion (`vdisp_mocks`): sigma_v uniform on this range (km/s), through an
# instrument of this Gaussian sigma (km/s; SDSS's spectrographs, R ~ 1800-2200).
MOCK_VDISP_KMS = (80.0, 350.0)
MOCK_INSTRUMENT_SIGMA_KMS = 70.0


# The quantiles of each galaxy's kept draws in the report's `per_galaxy`.
PER_GALAXY_QUANTILES = {"p2.5": 0.025, "p16": 0.16, "p50": 0.5, "p84": 0.84, "p97.5": 0.975}


def _nanmean_or_none(values: np.ndarray):
    """Mean over the finite values; None when there are none (an empty group)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _rounded(values: np.ndarray) -> list:
    """JSON-ready list, 4 decimals, None for NaN."""
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values]


def load_truths(path, n_bins: int = 64) -> np.ndarray:
    """True histories a user brings (`truths=PATH`): a histories NetCDF file (sfhkit.data.store) or
    a .npy array (n, 2, n_bins); SFR in Msun/yr, log10 Z/Zsun.  Raises ValueError for anything else."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise ValueError(f"truths: no such file {path} (or use one of {TRUTHS})")
    if path.suffix == ".npy":
        histories = np.load(path, allow_pickle=False)
    else:
        from .data import read_histories

        histories = read_histories(path).histories.values
    histories = np.asarray(histories, dtype=np.float64)
    if histories.ndim != 3 or histories.shape[1:] != (2, n_bins):
        raise ValueError(f"truths in {path} must have shape (n, 2, {n_bins}), got {histories.shape}")
    if not np.isfinite(histories).all() or (histories[:, 0] < 0).any():
        raise ValueError(f"truths in {path} must be finite, with SFR >= 0")
    return histories


def interval_coverage(truth: np.ndarray, draws: np.ndarray, level: float) -> np.ndarray:
    """Whether each truth (galaxies, ...) lies in the central `level` interval of its draws
    (galaxies, draws, ...); NaN where the truth or the draws are undefined."""
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=1)
    inside = (truth >= lo) & (truth <= hi)
    return np.where(np.isfinite(truth) & np.isfinite(lo), inside, np.nan)


def tarp_coverage(truth: np.ndarray, draws: np.ndarray, seed: int = 0, n_alpha: int = 21) -> dict:
    """TARP expected coverage: truth (galaxies, dim), draws (galaxies, draws, dim), both in a space
    where Euclidean distance is meaningful (the prior's normalised space).  Reference points are
    drawn uniformly in the box spanned by the truths."""
    rng = np.random.default_rng(seed)
    lo, hi = truth.min(0), truth.max(0)
    reference = lo + (hi - lo) * rng.random(truth.shape)
    d_draws = np.linalg.norm(draws - reference[:, None], axis=-1)
    d_truth = np.linalg.norm(truth - reference, axis=-1)
    f = (d_draws < d_truth[:, None]).mean(axis=1)
    alpha = np.linspace(0, 1, n_alpha)
    ecp = np.array([(f < a).mean() for a in alpha])
    return {"alpha": alpha.round(3).tolist(), "ecp": ecp.round(4).tolist(),
            "max_abs_deviation": float(np.abs(ecp - alpha).max())}


def tarp_null(n_galaxies: int, n_draws: int, observed: float | None = None, n_alpha: int = 21,
              repeats: int = 4000, seed: int = 0) -> dict:
    """What `tarp_coverage` gives for an exactly calibrated posterior on `n_galaxies` galaxies of
    `n_draws` draws each: the truth is then exchangeable with the draws, so the number of draws
    closer to the reference point than the truth is uniform on 0..n_draws, whatever the dimension.
    Monte Carlo over `repeats` such sets: the median and the 95th percentile of the largest
    deviation from the diagonal, and, for an `observed` deviation, the fraction of calibrated
    sets that deviate at least as much (a p-value; small: the miscalibration is real).  On 200
    galaxies the median is about 0.055: a goal of 0.05 is at the noise floor there."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, n_draws + 1, size=(repeats, n_galaxies)) / n_draws
    alpha = np.linspace(0, 1, n_alpha)
    deviation = np.abs((f[:, :, None] < alpha).mean(1) - alpha).max(1)
    null = {"null_median": float(np.median(deviation)), "null_p95": float(np.quantile(deviation, 0.95))}
    if observed is not None:
        null["p_value"] = float((deviation >= observed - 1e-12).mean())
    return null


def _add_nuisance_report(report: dict, name: str, truth: np.ndarray, draws: np.ndarray):
    """Coverage, pulls (truth - mean) / std, bias and per-galaxy values of an inferred nuisance
    parameter (`name`: "av", "vdisp_kms") into `report`; truth (galaxies,), draws (galaxies, kept)."""
    report["coverage"][name] = {f"{level:.2f}": float(np.mean(interval_coverage(truth, draws, level)))
                                for level in LEVELS}
    pulls = (truth - draws.mean(1)) / draws.std(1)
    report[f"{name}_pulls"] = {"within_1_sigma": float(np.mean(np.abs(pulls) < 1)),
                               "within_2_sigma": float(np.mean(np.abs(pulls) < 2)),
                               "mean": float(pulls.mean()), "std": float(pulls.std()),
                               "median_posterior_std": float(np.median(draws.std(1)))}
    error = np.median(draws, 1) - truth
    report["bias"][name] = {"mean": float(np.mean(error)), "median": float(np.median(error))}
    report["per_galaxy"][name] = {"truth": _rounded(truth), "mean": _rounded(draws.mean(1)),
                                  "std": _rounded(draws.std(1))}


def calibrate(n_galaxies: int = 200, *, n: int = 120, keep: int | None = None, steps: int | None = None,
              batch: int = 1, redshift: float = 0.05, av: float = 0.2, snr: float = 50.0, seed: int = 0,
              likelihood: str = "cla", cla: str = "jacobian", truths: str = "test", prior=None, model=None,
              calibration_degree: int | None = None, infer_av: bool = False,
              calibration_sd: float | None = None, vdisp_mocks: bool = False, infer_vdisp: bool = False,
              ssp=("bc03",), mock_ssp=None, progress: bool = True) -> dict:
    """Run `n_galaxies` mocks (of test-set histories, or of prior draws when `truths` is "prior")
    through the sampler, `batch` galaxies at a time; return the coverage report (see module
    docstring) with the per-galaxy values needed to redo it.

    `calibration_degree` fits the flux-calibration polynomial (sfhkit.fluxcal) to mocks that have
    no calibration error.  `infer_av` runs the real-spectrum fit instead: each mock gets an A_V from
    the prior (uniform 0-AV_PRIOR_MAX_MAG) and a calibration error P_cal of degree 3 with
    coefficients drawn from N(0, calibration_sd^2) (`av` is then unused), the fit runs with the
    polynomial (degree 8 unless given) at the A_V of a short first pass and A_V is inferred
    (sfhkit.attenuation: first_pass_av, infer_av); the report adds
    A_V's coverage and pulls (truth - mean) / std.

    `vdisp_mocks` gives each mock a stellar velocity dispersion from U(MOCK_VDISP_KMS) and an
    instrument of MOCK_INSTRUMENT_SIGMA_KMS (SDSS's), each spectrum made with a model built at its
    own sigma_v, and no catalogue sigma_v: the fit then uses the instrument's line spread alone, as
    sfhkit did before it inferred sigma_v.  `infer_vdisp` (implies `vdisp_mocks`) infers sigma_v
    (sfhkit.dispersion, one galaxy at a time); the report adds its coverage and pulls.

    `ssp` names the SSP library the fit uses (sfhkit.ssp.library_grid: ("bc03",) or ("emiles",
    DIR)); `mock_ssp` the one the mocks are made with (default the same): a mock made with one
    library and fitted with another measures model misspecification (issue 18).  The truths'
    surviving masses are those of the mocks' library."""
    from tqdm.auto import tqdm

    from .data import load_histories
    from .forward import ForwardModel
    from .observation import mock_observation, sdss_wavelength
    from .posterior import true_quantities
    from .prior import Prior
    from .data.parametric import parametric_histories
    from .histories import is_quenched
    from .sampler import DEFAULT_STEPS, kept_draws, sample_posterior
    from .ssp import library_grid

    from .attenuation import AV_PRIOR_MAX_MAG, DEFAULT_CALIBRATION_SD, first_pass_av, infer_av as infer_av_of
    from .fluxcal import DEFAULT_DEGREE

    from .dispersion import sample_with_vdisp
    from .lsf import LineSpread

    steps = steps or DEFAULT_STEPS
    keep = kept_draws(n, keep)
    vdisp_mocks = vdisp_mocks or infer_vdisp
    calibration_sd = DEFAULT_CALIBRATION_SD if calibration_sd is None else float(calibration_sd)
    if calibration_degree is None:
        calibration_degree = DEFAULT_DEGREE if infer_av else 0
    if infer_av:
        if not calibration_degree:
            raise ValueError("infer_av needs the calibration polynomial (calibration_degree > 0)")
        av = 0.0                     # the fit's A_V: the attenuation is inferred through the polynomial
    prior = prior or Prior.default()
    ssp, mock_ssp = [str(x) for x in ssp], [str(x) for x in (mock_ssp or ssp)]
    for spec in (ssp, mock_ssp):
        if not 1 <= len(spec) <= 2:
            raise ValueError(f"an SSP library is a name and at most one directory, got {spec}")
    # The grid only where a model is built here (a caller's model comes without one).
    grid = library_grid(*ssp, progress=progress) if model is None or vdisp_mocks else None
    # With vdisp_mocks the fit's model has the instrument's line spread alone (sigma_v unknown).
    model = model or ForwardModel(grid, sdss_wavelength(), redshift=redshift, av=av, device=prior.device,
                                  line_spread=LineSpread(0.0, MOCK_INSTRUMENT_SIGMA_KMS) if vdisp_mocks else None)
    mock_grid, mock_model = grid, model                        # the mocks' library: the fit's unless told
    if mock_ssp != ssp:
        mock_grid = library_grid(*mock_ssp, progress=progress)
        mock_model = ForwardModel(mock_grid, model.wavelength, redshift=model.redshift, av=av, device=prior.device,
                                  line_spread=model.line_spread)
    if truths == "test":
        test = load_histories("test")
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(test.sizes["galaxy"], size=n_galaxies, replace=False))
        true_histories = test.histories.values[indices]
    elif truths == "prior":   # seeds far from the sampler's (seed + start) so that truths and draws are
        # independent; drawn with the posterior sampler's integrator and no corrector: one prior for both
        indices = np.arange(n_galaxies)
        true_histories = prior.sample(n_galaxies, corrector_snr=0.0, seed=10**6 + seed, progress=False).cpu().numpy()
    elif truths == "parametric":
        indices = np.arange(n_galaxies)
        true_histories = parametric_histories(n_galaxies, seed=10**6 + seed, time_bins=model.time_bins)
    else:
        brought = load_truths(truths, model.n_bins)
        if n_galaxies > len(brought):
            raise ValueError(f"asked for {n_galaxies} galaxies, {truths} holds {len(brought)}")
        indices = np.sort(np.random.default_rng(seed).choice(len(brought), size=n_galaxies, replace=False))
        true_histories = brought[indices]
    def real_spectrum(i):
        """A mock's A_V and calibration error where A_V is inferred (a generator per galaxy)."""
        if not infer_av:
            return {}
        rng = np.random.default_rng([seed, int(indices[i]), 7])
        return {"av": float(rng.uniform(0.0, AV_PRIOR_MAX_MAG)), "calibration": rng.normal(0.0, calibration_sd, 3)}

    def mock(i):
        """Galaxy i's mock spectrum; with vdisp_mocks from a model built at its own sigma_v."""
        generator, extra = mock_model, {}
        if vdisp_mocks:
            true_vdisp = float(np.random.default_rng([seed, int(indices[i]), 11]).uniform(*MOCK_VDISP_KMS))
            generator = ForwardModel(mock_grid, model.wavelength, redshift=redshift, av=av, device=prior.device,
                                     line_spread=LineSpread(true_vdisp, MOCK_INSTRUMENT_SIGMA_KMS))
            extra = {"instrument_sigma_kms": np.full(model.wavelength.size, MOCK_INSTRUMENT_SIGMA_KMS)}
        made = mock_observation(true_histories[i], generator, snr=snr, seed=seed * 100003 + int(indices[i]),
                                metadata={"truth_index": int(indices[i])}, **real_spectrum(i))
        if vdisp_mocks:
            made.metadata["true_vdisp_kms"] = true_vdisp
        return replace(made, **extra)

    started = time.perf_counter()
    posteriors = []
    for start in tqdm(range(0, n_galaxies, batch), desc="calibration batches", disable=not progress):
        chunk = range(start, min(start + batch, n_galaxies))
        mocks = [mock(i) for i in chunk]
        if infer_av and not infer_vdisp:    # each at the A_V of a short first pass (sfhkit.attenuation)
            mocks = first_pass_av(mocks, prior, model, n=n, steps=steps, seed=[seed + i for i in chunk],
                                  likelihood=likelihood, cla=cla, calibration_degree=calibration_degree,
                                  calibration_sd=calibration_sd)
        if infer_vdisp:
            drawn = [sample_with_vdisp(m, prior, grid, n=n, keep=keep, likelihood=likelihood, cla=cla, steps=steps,
                                       seed=seed + i, progress=False, calibration_degree=calibration_degree,
                                       instrument_model=model, av_from_short_passes=infer_av,
                                       calibration_sd=calibration_sd)
                     for m, i in zip(mocks, chunk)]
        else:
            drawn = sample_posterior(mocks, prior, model, n=n, keep=keep, likelihood=likelihood, cla=cla, steps=steps,
                                     seed=seed + start, progress=False, calibration_degree=calibration_degree)
        if infer_av:
            drawn = [infer_av_of(p, calibration_sd, seed=seed + int(indices[i])) for p, i in zip(drawn, chunk)]
        posteriors += drawn
    seconds = time.perf_counter() - started

    true_q = true_quantities(true_histories, mock_model)
    derived = [p.derived() for p in posteriors]
    derived_all = [p.derived(kept_only=False) for p in posteriors]
    report = {"n_galaxies": n_galaxies, "n_draws": n, "keep": keep, "steps": steps, "likelihood": likelihood,
              "cla": cla, "truths": truths, "redshift": redshift, "av": "inferred" if infer_av else av, "snr": snr,
              "seed": seed, "calibration_degree": int(calibration_degree), "infer_av": bool(infer_av),
              "calibration_sd": calibration_sd if infer_av else None, "vdisp_mocks": bool(vdisp_mocks),
              "infer_vdisp": bool(infer_vdisp), "ssp": ssp, "mock_ssp": mock_ssp,
              "ssp_library": model.ssp_library, "mock_ssp_library": mock_model.ssp_library,
              "prior": repr(prior), "seconds": round(seconds, 1), "seconds_per_galaxy": round(seconds / n_galaxies, 2),
              "median_chi2_per_pixel": float(np.median([p.median_chi2_per_pixel() for p in posteriors])),
              "coverage": {}, "bias": {},
              "goal": (f"in distribution: coverage and TARP within {GOAL_TOLERANCE} of nominal; out of distribution: "
                       f"coverage at least {OUT_OF_DISTRIBUTION_GOAL}")}
    report["coverage_all_draws"] = {}
    report["per_galaxy"] = {}
    # The same figures for quenched and star-forming truths apart: a prior wrong about one kind of
    # history shows there first (issue 16: the parametric family's sharply quenched histories).
    truth_quenched = is_quenched(true_histories, model.time_bins)
    groups = {"quenched": truth_quenched, "star_forming": ~truth_quenched}
    report["by_truth_quenched"] = {group: {"n": int(sel.sum()), "coverage": {}, "bias_mean": {}}
                                   for group, sel in groups.items()}
    for name in QUANTITIES:
        draws_all = np.stack([d[name] for d in derived_all])
        report["coverage_all_draws"][name] = {
            f"{level:.2f}": float(np.nanmean(interval_coverage(true_q[name], draws_all, level))) for level in LEVELS}
        draws = np.stack([d[name] for d in derived])
        inside = {level: interval_coverage(true_q[name], draws, level) for level in LEVELS}
        report["coverage"][name] = {f"{level:.2f}": float(np.nanmean(inside[level])) for level in LEVELS}
        error = np.nanmedian(draws, axis=1) - true_q[name]
        report["bias"][name] = {"mean": float(np.nanmean(error)), "median": float(np.nanmedian(error))}
        for group, sel in groups.items():
            entry = report["by_truth_quenched"][group]
            entry["coverage"][name] = {f"{level:.2f}": _nanmean_or_none(inside[level][sel]) for level in LEVELS}
            entry["bias_mean"][name] = _nanmean_or_none(error[sel])
        # Per galaxy, so that coverage can be broken down by any property of the truths.
        quantiles = np.nanquantile(draws, list(PER_GALAXY_QUANTILES.values()), axis=1)
        report["per_galaxy"][name] = {"truth": _rounded(true_q[name]),
                                      **{key: _rounded(q) for key, q in zip(PER_GALAXY_QUANTILES, quantiles)}}
    sfr_draws = np.stack([p.samples()[:, 0] for p in posteriors])                     # (G, keep, 64)
    per_bin = {f"{level:.2f}": np.nanmean(interval_coverage(true_histories[:, 0], sfr_draws, level), axis=0)
               for level in LEVELS}
    observed_bins = model.time_bins.fraction_formed_before(model.age_at_z_gyr) > 0
    report["coverage"]["sfr_per_bin"] = {level: {"observed_bins_mean": float(v[observed_bins].mean()),
                                                 "min": float(v.min()), "values": v.round(3).tolist()}
                                         for level, v in per_bin.items()}
    sfr_all = np.stack([p.histories[:, 0] for p in posteriors])                      # (G, n, 64)
    report["coverage_all_draws"]["sfr_per_bin"] = {
        f"{level:.2f}": {"observed_bins_mean": float(np.nanmean(
            interval_coverage(true_histories[:, 0], sfr_all, level), axis=0)[observed_bins].mean())}
        for level in LEVELS}
    normalise = prior.transform.normalise
    with torch.no_grad():
        x_true = normalise(torch.as_tensor(true_histories)).flatten(1).cpu().numpy()
        x_all = np.stack([normalise(torch.as_tensor(p.histories)).flatten(1).cpu().numpy() for p in posteriors])
    x_draws = np.stack([x[p.kept] for x, p in zip(x_all, posteriors)])             # the kept ones
    for key, x, draws_per_galaxy in (("tarp", x_draws, keep), ("tarp_all_draws", x_all, n)):
        report[key] = tarp_coverage(x_true, x, seed=seed)
        report[key].update(tarp_null(n_galaxies, draws_per_galaxy, report[key]["max_abs_deviation"], seed=seed))
    # A_V and sigma_v where inferred: coverage, and pulls (truth - mean) / std, which fall within 1 (2)
    # sigma 68 (95) % of the time.
    for name, inferred in (("av", infer_av), ("vdisp_kms", infer_vdisp)):     # Posterior attributes
        if inferred:
            truth = np.array([p.observation.metadata[f"true_{name}"] for p in posteriors])
            draws = np.stack([getattr(p, name)[p.kept] for p in posteriors])
            _add_nuisance_report(report, name, truth, draws)
    quantity_coverage = [(report["coverage"][name][f"{level:.2f}"], level) for name in QUANTITIES for level in LEVELS]
    quantity_coverage += [(report["coverage"]["sfr_per_bin"][f"{level:.2f}"]["observed_bins_mean"], level)
                          for level in LEVELS]
    report["meets_goal"] = bool(all(abs(c - level) <= GOAL_TOLERANCE for c, level in quantity_coverage)
                                and report["tarp"]["max_abs_deviation"] <= GOAL_TOLERANCE)
    report["meets_out_of_distribution_goal"] = bool(all(c >= OUT_OF_DISTRIBUTION_GOAL[f"{level:.2f}"]
                                                        for c, level in quantity_coverage))
    report["truth_indices"] = indices.tolist()
    return report


def plot_calibration(report: dict, path=None):
    """Coverage per quantity and level, per-bin SFR coverage, and the TARP curve."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = [q for q in QUANTITIES if q in report["coverage"]]
    for k, level in enumerate(LEVELS):
        values = [report["coverage"][q][f"{level:.2f}"] for q in names]
        axes[0].bar(np.arange(len(names)) + 0.4 * k, values, width=0.4, label=f"{level:.0%} interval")
        axes[0].axhline(level, color=f"C{k}", ls="--", lw=1)
    axes[0].set_xticks(np.arange(len(names)) + 0.2, names, rotation=30, ha="right", fontsize=8)
    axes[0].set_ylabel("empirical coverage")
    axes[0].legend(fontsize=8)
    for k, level in enumerate(LEVELS):
        axes[1].plot(report["coverage"]["sfr_per_bin"][f"{level:.2f}"]["values"], color=f"C{k}", label=f"{level:.0%}")
        axes[1].axhline(level, color=f"C{k}", ls="--", lw=1)
    axes[1].set_xlabel("time bin")
    axes[1].set_ylabel("coverage of the bin's SFR")
    axes[1].legend(fontsize=8)
    tarp = report["tarp"]
    axes[2].plot(tarp["alpha"], tarp["ecp"], color="C0", label="TARP")
    axes[2].plot([0, 1], [0, 1], color="k", ls="--", lw=1)
    axes[2].set_xlabel("credibility level alpha")
    axes[2].set_ylabel("expected coverage")
    axes[2].set_title(f"{report['n_galaxies']} mocks, {report['steps']} steps, {report['likelihood']}/{report['cla']}",
                      fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def main(args) -> int:
    from .prior import Prior

    prior = Prior.load(args.prior) if args.prior else None
    report = calibrate(args.n, n=args.draws, keep=args.keep, steps=args.steps, batch=args.batch,
                       redshift=args.redshift, av=args.av, snr=args.snr, seed=args.seed,
                       likelihood=args.likelihood, cla=args.cla, truths=args.truths, prior=prior,
                       calibration_degree=args.calibration_degree, infer_av=args.infer_av,
                       calibration_sd=args.calibration_sd, vdisp_mocks=args.vdisp_mocks, infer_vdisp=args.infer_vdisp,
                       ssp=args.ssp, mock_ssp=args.mock_ssp, progress=not args.quiet)
    if args.out:
        from ._io import write_json

        write_json(args.out, report)
    if args.plot:
        plot_calibration(report, args.plot)
    # On screen: the report without the per-galaxy indices and the 64 per-bin values.
    per_bin = {level: {k: v for k, v in cov.items() if k != "values"}
               for level, cov in report["coverage"]["sfr_per_bin"].items()}
    printed = {k: v for k, v in report.items() if k not in ("truth_indices", "per_galaxy")}
    printed["coverage"] = {**report["coverage"], "sfr_per_bin": per_bin}
    print(json.dumps(printed, indent=1))
    return 0
