"""The paper's experiments as functions, shared by the command line and the notebooks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .fluxcal import default_degree


def mock_experiment(index: int = 2122, *, redshift: float = 0.05, av: float = 0.2, snr: float = 50.0,
                    n: int = 120, keep: int | None = None, steps: int | None = None, likelihood: str = "cla",
                    cla: str = "jacobian", seed: int = 0, device: str = "cpu", progress: bool = True):
    """The paper's mock experiment: test-set history `index` observed at `redshift`, `av` and `snr`
    on SDSS-like wavelengths (noise sigma = mean flux / SNR) -> posterior with the embedded prior.

    Returns (posterior, report): report holds the run time, the median chi^2 per pixel of the kept
    draws and every derived quantity's posterior mean and std beside its true value."""
    from .galaxies import mock_galaxy
    from .posterior import true_quantities
    from .prior import Prior
    from .sampler import DEFAULT_STEPS, sample_posterior

    galaxy = mock_galaxy(index, redshift=redshift, av=av, snr=snr, seed=seed, device=device, progress=progress)
    truth, model = galaxy.true_history, galaxy.forward_model
    posterior = sample_posterior(galaxy.observation, Prior.default(device), model, n=n, keep=keep,
                                 likelihood=likelihood, cla=cla, steps=steps or DEFAULT_STEPS, seed=seed,
                                 progress=progress)
    true_values = true_quantities(truth, model)
    report = {"seconds": posterior.config["seconds"], "median_chi2_per_pixel": posterior.median_chi2_per_pixel(),
              "derived": {name: {**value, "truth": float(true_values[name])}
                          for name, value in posterior.summary().items()}}
    return posterior, report


def real_experiment(observation, *, mask_lines: bool = True, mask_sky: bool = True, ranges=(), rest_ranges=(),
                    line_spread: bool = True, velocity_dispersion_kms: float | None = None, n: int = 120,
                    keep: int | None = None, steps: int | None = None, likelihood: str = "cla", cla: str = "jacobian",
                    fit_nuisance: bool = False, model_error: float = 0.0, mask_worst_residuals: int = 0,
                    calibration_degree: int | None = None, infer_av: bool | None = None,
                    infer_vdisp: bool | None = None, seed: int = 0,
                    device: str = "cpu", prior=None, grid=None, progress: bool = True):
    """A real spectrum -> posterior with the embedded prior: emission-line, sky and user masks
    (sfhkit.lines.apply_masks), the line-spread function of the spectrum's velocity dispersion
    (or `velocity_dispersion_kms`) and instrument unless `line_spread` is False, A_V as the
    observation holds it, or A_V and the velocity dispersion inferred from those starting values
    with `fit_nuisance` (sfhkit.nuisance).  `model_error` adds that fraction of the flux to the noise
    in quadrature (`Observation.with_model_error`), for spectra whose S/N exceeds the model's accuracy.
    `calibration_degree`: the multiplicative flux-calibration polynomial solved per draw
    (sfhkit.fluxcal; 0: none; default fluxcal.DEFAULT_DEGREE, chosen on the shared SDSS spectra,
    with the default likelihood, none with the others).
    `infer_av`: A_V inferred through the polynomial's shape (sfhkit.attenuation); default: where the
    spectrum has no catalogue A_V (`should_infer_av`) and the nuisance mode is off.
    `infer_vdisp`: the velocity dispersion inferred with the history (sfhkit.dispersion); default:
    where neither the spectrum nor `velocity_dispersion_kms` gives one, the instrument's resolution
    is known (`should_infer_vdisp`) and the nuisance mode is off.
    `mask_worst_residuals=3` then refits without the three areas of largest negative residual, as the
    paper does (sfhkit.lines.largest_negative_residual_ranges); the report says which.

    Returns (posterior, report): report holds the run time, the median chi^2 per pixel, the
    skewness of the posterior-median residuals, the masks and the derived quantities."""
    from scipy.stats import skew

    from .attenuation import first_pass_av, infer_av as infer_av_of, should_infer_av
    from .dispersion import sample_with_vdisp, should_infer_vdisp
    from .lines import apply_masks, largest_negative_residual_ranges
    from .nuisance import sample_with_nuisance
    from .prior import Prior
    from .sampler import DEFAULT_STEPS, sample_posterior
    from .ssp import SSPGrid

    def prepared(extra_ranges=(), fitted=None):
        """The observation with its masks and model error (and a nuisance fit's A_V and sigma_v)."""
        obs = apply_masks(observation, lines=mask_lines, sky=mask_sky, ranges=list(ranges) + list(extra_ranges),
                          rest_ranges=rest_ranges)
        if model_error:
            obs = obs.with_model_error(model_error)
        if fitted is not None:
            obs = replace(obs, av=fitted.av, velocity_dispersion_kms=fitted.velocity_dispersion_kms,
                          metadata=dict(obs.metadata))
        return obs

    def fit_quality(posterior):
        median_residual = np.median(posterior.residuals()[:, posterior.observation.mask], axis=0)
        return {"median_chi2_per_pixel": posterior.median_chi2_per_pixel(),
                "residual_skewness": float(skew(median_residual))}

    if calibration_degree is None:
        calibration_degree = default_degree(likelihood, cla)
    if infer_av is None:
        infer_av = should_infer_av(observation, calibration_degree) and not fit_nuisance
    if infer_av and (fit_nuisance or observation.av != 0):
        raise ValueError("inferring A_V starts from A_V = 0 and needs the nuisance mode off")
    if infer_vdisp is None:
        infer_vdisp = velocity_dispersion_kms is None and should_infer_vdisp(observation, line_spread) \
            and not fit_nuisance
    if infer_vdisp and (fit_nuisance or velocity_dispersion_kms is not None or not line_spread):
        raise ValueError("inferring sigma_v needs the line-spread function, no given sigma_v and no nuisance mode")
    if fit_nuisance and (not line_spread or likelihood != "cla" or cla != "jacobian"):
        raise ValueError("the nuisance mode needs the line-spread function and the default likelihood")
    grid = grid or SSPGrid.default(progress=progress)
    prior = prior or Prior.default(device)

    def sample(obs, model):
        return sample_posterior(obs, prior, model, n=n, keep=keep, likelihood=likelihood, cla=cla,
                                steps=steps or DEFAULT_STEPS, seed=seed, progress=progress,
                                calibration_degree=calibration_degree)

    def sample_inferring_vdisp(obs, instrument_model, av_from_short_passes=False):
        return sample_with_vdisp(replace(obs, velocity_dispersion_kms=None, metadata=dict(obs.metadata)), prior, grid,
                                 n=n, keep=keep, steps=steps, seed=seed, calibration_degree=calibration_degree,
                                 likelihood=likelihood, cla=cla, instrument_model=instrument_model,
                                 av_from_short_passes=av_from_short_passes, progress=progress)

    def at_fit_av(obs, model):
        """With A_V inferred, the observation at the A_V of a short first pass (sfhkit.attenuation)."""
        if not infer_av:
            return obs
        at = first_pass_av(obs, prior, model, n=n, steps=steps or DEFAULT_STEPS, seed=seed, likelihood=likelihood,
                           cla=cla, calibration_degree=calibration_degree)
        if progress:
            print(f"A_V, short first pass: {at.av:.3f} mag; the full fit at it", flush=True)
        return at

    obs = prepared()
    model, extra = None, {}
    if fit_nuisance:
        posterior, extra["nuisance"] = sample_with_nuisance(obs, prior, grid, vdisp_start_kms=velocity_dispersion_kms,
                                                            n=n, keep=keep, steps=steps, seed=seed, progress=progress,
                                                            calibration_degree=calibration_degree)
    elif infer_vdisp:     # the instrument-only model, kept for the refit below (masks do not change it);
        # with A_V inferred, sigma_v's short passes give the A_V the fit runs at (sfhkit.dispersion)
        instrument_model = obs.forward_model(grid, line_spread=obs.line_spread(0.0), device=device)
        posterior = sample_inferring_vdisp(obs, instrument_model, av_from_short_passes=infer_av)
    else:
        model = obs.forward_model(grid, line_spread=obs.line_spread(velocity_dispersion_kms) if line_spread else None,
                                  device=device)
        obs = at_fit_av(obs, model)
        posterior = sample(obs, model)
    if mask_worst_residuals:
        # The paper's refit without the areas of largest negative residual (of the posterior median),
        # at the A_V and sigma_v of the first fit; masks do not change the model, so it is reused.
        worst = largest_negative_residual_ranges(obs.wavelength, np.median(posterior.residuals(), axis=0),
                                                 n=mask_worst_residuals)
        extra.update(first_fit=fit_quality(posterior), masked_worst_residual_ranges=worst)
        obs = prepared(worst, posterior.observation if fit_nuisance else None)
        if infer_av:                     # at the first pass's A_V, as the first fit
            first = posterior.observation
            obs = replace(obs, av=first.av, metadata={**obs.metadata, "av_first_pass_mag": first.av})
        if infer_vdisp:
            posterior = sample_inferring_vdisp(obs, instrument_model)
        else:
            if model is None:
                model = obs.forward_model(grid, line_spread=obs.line_spread(), device=device)
            posterior = sample(obs, model)
    if infer_av:
        posterior = infer_av_of(posterior, seed=seed)
    obs = posterior.observation
    if fit_nuisance:      # say that A_V and sigma_v were fitted, and from where they started
        fitted = extra["nuisance"]
        obs.metadata["av_source"] = (f"fitted (nuisance mode): {fitted['av']['estimate']:.3f} +- "
                                     f"{fitted['av']['error']:.3f}, started from {observation.av:.3f} "
                                     f"({observation.metadata.get('av_source', 'given')})")
        obs.metadata["velocity_dispersion_source"] = (
            f"fitted (nuisance mode): {fitted['vdisp_kms']['median']:.0f} km/s (16-84 % "
            f"{fitted['vdisp_kms']['p16']:.0f}-{fitted['vdisp_kms']['p84']:.0f})")
    spread = model.line_spread if model is not None else obs.line_spread()
    posterior.config["line_spread"] = None if spread is None else {
        "velocity_dispersion_kms": spread.velocity_dispersion_kms,
        "median_instrument_sigma_kms": float(np.median(spread.instrument_sigma_kms))}
    report = {"source": obs.metadata.get("source"), "redshift": obs.redshift,
              "av": posterior.summary()["av"] if infer_av else obs.av,
              "av_source": obs.metadata.get("av_source", "given"),
              "velocity_dispersion_kms": posterior.summary()["vdisp_kms"] if infer_vdisp
              else obs.velocity_dispersion_kms,
              "velocity_dispersion_source": obs.metadata.get("velocity_dispersion_source", _vdisp_source(
                  observation, velocity_dispersion_kms, line_spread)),
              "seconds": posterior.config["seconds"], "n_used_pixels": obs.n_used, **fit_quality(posterior),
              "warnings": posterior.warnings(),
              "line_spread": posterior.config["line_spread"], "masks": obs.metadata["masks"],
              "derived": posterior.summary(), **extra}
    return posterior, report


def _vdisp_source(observation, velocity_dispersion_kms, line_spread: bool) -> str:
    """Where a fit's sigma_v came from when it was not inferred."""
    if not line_spread:
        return "none: no line-spread function (the paper's model)"
    if velocity_dispersion_kms is not None:
        return "given"
    if observation.velocity_dispersion_kms is not None:
        return "the survey's"
    return "unknown, not inferred: the instrument's line spread alone (sigma_v = 0)"


def _compare_fits(paths, settings, *, firefly_dir=None, n: int = 120, keep: int | None = None,
                  steps: int | None = None, seed: int = 0, device: str = "cpu", progress: bool = True) -> list[dict]:
    """Fit each SDSS spec file in `paths` once per setting ((label, real_experiment kwargs) pairs;
    a setting's `grid` replaces the default BC03 one), everything else equal (masks, A_V from the
    spectrum's FIREFLY fit in `firefly_dir` when there is one, else 0, seed).  One row per spectrum
    and setting: chi^2 per pixel, residual skewness, mass, mass-weighted age and log Z, and
    FIREFLY's where there is a fit."""
    from .surveys.firefly import find_spfly, read_spfly
    from .surveys.sdss import read_spec
    from .prior import Prior
    from .ssp import SSPGrid

    grid, prior = SSPGrid.default(progress=progress), Prior.default(device)
    rows = []
    for path in paths:
        obs = read_spec(path)
        spfly = find_spfly(obs.metadata["spec_id"], firefly_dir) if firefly_dir else None
        firefly = read_spfly(spfly) if spfly else None
        obs.av = firefly.av if firefly else 0.0
        for label, kwargs in settings:
            _, report = real_experiment(obs, n=n, keep=keep, steps=steps, seed=seed, device=device, prior=prior,
                                        progress=progress, **{"grid": grid, **kwargs})
            derived = report["derived"]
            row = {"spectrum": obs.metadata["spec_id"], **label, "av": round(obs.av, 3),
                   "vdisp_kms": obs.velocity_dispersion_kms,
                   "median_chi2_per_pixel": round(report["median_chi2_per_pixel"], 3),
                   "residual_skewness": round(report["residual_skewness"], 3),
                   "log10_formed_mass": round(derived["log10_formed_mass"]["mean"], 3),
                   "log10_surviving_mass": round(derived["log10_surviving_mass"]["mean"], 3),
                   "mass_weighted_age_gyr": round(derived["mass_weighted_age_gyr"]["mean"], 2),
                   "mass_weighted_logz": round(derived["mass_weighted_logz"]["mean"], 3),
                   "warnings": [w["code"] for w in report["warnings"]], "seconds": report["seconds"]}
            if firefly is not None:
                row["firefly"] = {key: round(float(firefly.summary[key]), 3) for key in
                                  ("log10_stellar_mass", "mass_weighted_age_gyr", "mass_weighted_zh")}
            rows.append(row)
    return rows


def line_spread_comparison(paths, *, firefly_dir=None, n: int = 120, keep: int | None = None, steps: int | None = None,
                           seed: int = 0, device: str = "cpu", progress: bool = True) -> dict:
    """Each SDSS spec file fitted with and without the line-spread function (velocity dispersion +
    instrument - library resolution), everything else equal (`_compare_fits`; no calibration polynomial)."""
    settings = [({"line_spread": line_spread}, {"line_spread": line_spread, "calibration_degree": 0})
                for line_spread in (False, True)]
    rows = _compare_fits(paths, settings, firefly_dir=firefly_dir, n=n, keep=keep, steps=steps, seed=seed,
                         device=device, progress=progress)
    return {"experiment": "line-spread function on/off", "n": n, "keep": keep, "steps": steps, "seed": seed,
            "rows": rows}


def vdisp_comparison(paths, *, firefly_dir=None, n: int = 120, keep: int | None = None, steps: int | None = None,
                     seed: int = 0, device: str = "cpu", progress: bool = True) -> dict:
    """Each SDSS spec file fitted with its catalogue velocity dispersion set aside and sigma_v
    inferred (sfhkit.dispersion), A_V from FIREFLY's fit in `firefly_dir` where there is one (else
    0), the default polynomial: the inferred sigma_v beside the SDSS pipeline's VDISP +- VDISP_ERR
    (an independent measurement: a template fit to the absorption lines)."""
    from .prior import Prior
    from .ssp import SSPGrid
    from .surveys.firefly import find_spfly, read_spfly
    from .surveys.sdss import read_spec

    grid, prior = SSPGrid.default(progress=progress), Prior.default(device)
    rows = []
    for path in paths:
        obs = read_spec(path)
        spfly = find_spfly(obs.metadata["spec_id"], firefly_dir) if firefly_dir else None
        catalogue_kms = obs.velocity_dispersion_kms
        unknown = replace(obs, av=read_spfly(spfly).av if spfly else 0.0, velocity_dispersion_kms=None,
                          metadata=dict(obs.metadata))
        posterior, report = real_experiment(unknown, infer_vdisp=True, infer_av=False, n=n, keep=keep, steps=steps,
                                            seed=seed, device=device, prior=prior, grid=grid, progress=progress)
        inferred = posterior.summary()["vdisp_kms"]
        error = obs.metadata.get("velocity_dispersion_err_kms")
        rows.append({"spectrum": obs.metadata["spec_id"], "av": round(unknown.av, 3),
                     "sdss_vdisp_kms": catalogue_kms, "sdss_vdisp_err_kms": error,
                     "inferred_vdisp_kms": round(inferred["mean"], 1), "inferred_sd_kms": round(inferred["std"], 1),
                     "difference_in_combined_sd": None if catalogue_kms is None else round(
                         (inferred["mean"] - catalogue_kms) / np.hypot(inferred["std"], error or 0.0), 2),
                     "short_passes_kms": posterior.config["vdisp_inference"]["short_passes"]["medians_kms"],
                     "median_chi2_per_pixel": round(report["median_chi2_per_pixel"], 3),
                     "residual_skewness": round(report["residual_skewness"], 3), "seconds": report["seconds"]})
    return {"experiment": "sigma_v inferred against the SDSS pipeline's VDISP", "n": n, "keep": keep,
            "steps": steps, "seed": seed, "rows": rows}


def calibration_polynomial_comparison(paths, *, degrees=(0, 4, 8, 12), firefly_dir=None, n: int = 120,
                                      keep: int | None = None, steps: int | None = None, seed: int = 0,
                                      device: str = "cpu", progress: bool = True) -> dict:
    """Each SDSS spec file fitted with flux-calibration polynomials of each degree in `degrees`
    (0: none), everything else equal (`_compare_fits`): how the fit, the residuals' skewness and
    mass, age and log Z against FIREFLY's change."""
    settings = [({"calibration_degree": int(d)}, {"calibration_degree": int(d)}) for d in degrees]
    rows = _compare_fits(paths, settings, firefly_dir=firefly_dir, n=n, keep=keep, steps=steps, seed=seed,
                         device=device, progress=progress)
    return {"experiment": "flux-calibration polynomial degree", "n": n, "keep": keep, "steps": steps, "seed": seed,
            "rows": rows}


def library_comparison(paths, emiles_dir, *, firefly_dir=None, n: int = 120, keep: int | None = None,
                       steps: int | None = None, seed: int = 0, device: str = "cpu", progress: bool = True) -> dict:
    """Each SDSS spec file fitted with BC03+MILES and with E-MILES (the SSPs of `emiles_dir`,
    FIREFLY's library), everything else equal (`_compare_fits`: A_V from FIREFLY's fit where there
    is one, the default polynomial): mass, mass-weighted age and log Z beside FIREFLY's, like for like."""
    from .ssp import SSPGrid

    emiles = SSPGrid.emiles(emiles_dir, progress=progress)
    settings = [({"ssp": "bc03"}, {}), ({"ssp": "emiles"}, {"grid": emiles})]
    rows = _compare_fits(paths, settings, firefly_dir=firefly_dir, n=n, keep=keep, steps=steps, seed=seed,
                         device=device, progress=progress)
    return {"experiment": "SSP library: BC03+MILES against E-MILES", "emiles": emiles.library, "n": n, "keep": keep,
            "steps": steps, "seed": seed, "rows": rows}


def nuisance_experiment(indices=(2122, 100, 1000, 3000), *, true_av: float = 0.5, true_vdisp_kms: float = 200.0,
                        start_av: float = 0.2, start_vdisp_kms: float = 120.0, instrument_sigma_kms: float = 65.0,
                        redshift: float = 0.05, snr: float = 50.0, n: int = 120, keep: int | None = None,
                        steps: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Mocks with a known A_V and velocity dispersion (SDSS-like pixels and instrument), fitted
    three ways: fixed at the truth, fixed at wrong values (`start_*`), and with the nuisance mode
    (sfhkit.nuisance) started from those wrong values.  Returns, per galaxy and mode, the error of
    the posterior mean of log formed mass and mass-weighted age and the A_V and sigma_v used."""
    from .data import load_histories
    from .forward import ForwardModel
    from .lsf import LineSpread
    from .nuisance import sample_with_nuisance
    from .observation import mock_observation, sdss_wavelength
    from .posterior import true_quantities
    from .prior import Prior
    from .sampler import DEFAULT_STEPS, sample_posterior
    from .ssp import SSPGrid

    grid, prior = SSPGrid.default(progress=progress), Prior.default()
    wavelength = sdss_wavelength()
    truth_model = ForwardModel(grid, wavelength, redshift, true_av,
                               line_spread=LineSpread(true_vdisp_kms, instrument_sigma_kms))
    test = load_histories("test")
    steps = steps or DEFAULT_STEPS
    rows = []
    for index in indices:
        truth = test.histories.values[index]
        mock = mock_observation(truth, truth_model, snr=snr, seed=seed + index, metadata={"test_index": int(index)})
        mock.instrument_sigma_kms = np.full(wavelength.size, instrument_sigma_kms)
        true_values = true_quantities(truth, truth_model)
        fits = {}
        for mode, (av, vdisp) in (("fixed at truth", (true_av, true_vdisp_kms)),
                                  ("fixed, wrong", (start_av, start_vdisp_kms))):
            obs = replace(mock, av=av, velocity_dispersion_kms=vdisp, metadata=dict(mock.metadata))
            model = obs.forward_model(grid)
            fits[mode] = (sample_posterior(obs, prior, model, n=n, keep=keep, steps=steps, seed=seed, progress=progress),
                          {"av": av, "vdisp_kms": vdisp})
        posterior, nuisance = sample_with_nuisance(mock, prior, grid, av_start=start_av, vdisp_start_kms=start_vdisp_kms,
                                                   n=n, keep=keep, steps=steps, seed=seed, progress=progress)
        fits["nuisance mode from wrong"] = (posterior, {"av": nuisance["av"], "vdisp_kms": nuisance["vdisp_kms"],
                                                        "av_profiles": nuisance["av_profiles"]})
        for mode, (posterior, used) in fits.items():
            summary = posterior.summary()
            rows.append({"test_index": int(index), "mode": mode, "nuisance": used,
                         "log10_formed_mass_error": round(summary["log10_formed_mass"]["mean"]
                                                          - float(true_values["log10_formed_mass"]), 4),
                         "log10_formed_mass_std": round(summary["log10_formed_mass"]["std"], 4),
                         "mass_weighted_age_error_gyr": round(summary["mass_weighted_age_gyr"]["mean"]
                                                              - float(true_values["mass_weighted_age_gyr"]), 3),
                         "median_chi2_per_pixel": round(posterior.median_chi2_per_pixel(), 3),
                         "seconds": posterior.config["seconds"]})
    return {"experiment": "nuisance parameters", "true_av": true_av, "true_vdisp_kms": true_vdisp_kms,
            "start_av": start_av, "start_vdisp_kms": start_vdisp_kms, "instrument_sigma_kms": instrument_sigma_kms,
            "redshift": redshift, "snr": snr, "n": n, "keep": keep, "steps": steps, "rows": rows}
