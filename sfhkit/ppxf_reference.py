"""pPXF (Cappellari 2017, 2023) as an independent reference for fits of real spectra, as bagpipes
is for the forward model (`sfhkit bench ppxf`; pPXF comes with the `bench` extra).

pPXF fits the same spectrum with the same templates, like for like with an sfhkit posterior:

- templates: sfhkit's own: the observed-frame spectrum of a unit SFR (Msun/yr) at one grid
  metallicity (ForwardModel with rank=None: redshift, the library's and the instrument's line
  spread, the fit's sigma_v), attenuated by Calzetti at the fit's A_V (the posterior median where
  A_V was inferred), summed over BINS_PER_TEMPLATE neighbouring time bins (a constant SFR over
  them), at every LOGZ_STRIDE-th of the grid's metallicities: 16 x 10 templates at z ~ 0.05 for
  BC03 (all 61 x 64 would be 3900, beyond what pPXF solves in reasonable time; the usual pPXF
  grid is about 25 ages x 6 metallicities).  Dust emission is left out (below 1 per cent of
  the flux redward of 1 micron only; SDSS ends at 0.92 micron observed).  pPXF's kinematics are
  held fixed at V = 0 and a negligible sigma (1 km/s): the templates already carry both, so pPXF
  solves only for the weights and the polynomial.
- the same pixels (the posterior's final mask, noise and wavelengths), the same
  multiplicative Legendre polynomial degree (pPXF's `mdegree`; no additive polynomial);
- weights regularised with pPXF's second-order smoothing over the (time bin, metallicity) grid
  (`regul`, default REGUL; templates and spectrum scaled to medians of order one).  REGUL = 10
  was chosen on a mock (the example history, S/N 50, tests/test_ppxf_reference.py): regul 0 / 10
  / 100 / 1000 gave the age 7.95 / 7.63 / 6.51 / 7.13 Gyr for a true 7.67, log Z -0.13 / -0.10 /
  -0.02 / +0.00 for -0.14, the mass within 0.03 dex throughout; pPXF's examples' 100 smooths too much
  for these templates.  The bins are equal in cosmic time, so
  the SFR weights are mass weights up to one constant and pPXF's usual mass-weighted smoothing holds.

The weights give a history: per bin the SFR summed over metallicities and the SFR-weighted mean
log Z, so the formed mass, mass-weighted age and mass-weighted log Z come out of
sfhkit.posterior.true_quantities with sfhkit's own definitions (all three are linear in the
weights; the surviving mass is not, and is not compared).
"""

from __future__ import annotations

import numpy as np

REGUL = 10.0
BINS_PER_TEMPLATE = 4
LOGZ_STRIDE = 7
COMPARED = ("log10_formed_mass", "mass_weighted_age_gyr", "mass_weighted_logz")
# Issue 18's agreement goals: dex, Gyr, dex.
AGREEMENT = {"log10_formed_mass": 0.1, "mass_weighted_age_gyr": 1.0, "mass_weighted_logz": 0.1}


def _import_ppxf():
    try:
        from ppxf.ppxf import ppxf
    except ImportError as err:       # pragma: no cover - the bench extra installs it
        raise ImportError("the pPXF reference needs pPXF: pip install 'sfhkit[bench]' (or pip install ppxf)") from err
    return ppxf


def ppxf_history(observation, grid, *, av: float, calibration_degree: int, regul: float = REGUL,
                 vdisp_kms: float | None = None, bins_per_template: int = BINS_PER_TEMPLATE,
                 logz_stride: int = LOGZ_STRIDE):
    """pPXF's fit of `observation` (module docstring) at Calzetti `av` (mag) with a multiplicative
    polynomial of `calibration_degree` and sigma_v `vdisp_kms` (default the observation's).
    Returns (history (2, n_bins), the model ForwardModel, a dict of pPXF's chi^2 per pixel and
    the number of templates with weight)."""
    import torch

    ppxf = _import_ppxf()
    if not np.isfinite(av) or av < 0:
        raise ValueError(f"av must be finite and >= 0 mag, got {av!r}")
    vdisp = observation.velocity_dispersion_kms if vdisp_kms is None else vdisp_kms
    model = observation.forward_model(grid, line_spread=observation.line_spread(vdisp), rank=None, dtype=torch.float64)
    n_active = model.active_bins.numel()
    logz_index = np.arange(0, model.n_logz, logz_stride)
    logz = model.logz[logz_index]
    groups = np.array_split(np.arange(n_active), int(np.ceil(n_active / bins_per_template)))
    attenuation = 10.0 ** (-0.4 * av * model.a_over_av_pixel.numpy())
    per_bin = model.templates.numpy().reshape(n_active, model.n_logz, -1)[:, logz_index]   # (bins, logz, pixels)
    templates = np.stack([per_bin[g].sum(0) for g in groups]).reshape(len(groups) * logz.size, -1) * attenuation
    used = np.asarray(observation.mask, dtype=bool)
    template_scale = float(np.median(templates[:, used]))
    flux_scale = float(np.median(observation.flux[used]))
    if not (template_scale > 0 and flux_scale > 0):
        raise ValueError("pPXF needs a spectrum and templates with positive median flux")
    velscale = float(np.median(np.diff(np.log(observation.wavelength)))) * 299792.458
    fit = ppxf((templates / template_scale).T, observation.flux / flux_scale,
               np.where(used, observation.sigma, np.median(observation.sigma[used])) / flux_scale, velscale,
               start=[0.0, 1.0], fixed=[1, 1], moments=2, degree=-1, mdegree=int(calibration_degree),
               mask=used, regul=float(regul), reg_dim=(len(groups), logz.size), quiet=True, plot=False)
    sfr = fit.weights.reshape(len(groups), logz.size) * flux_scale / template_scale   # Msun/yr in each of a group's bins
    history = np.zeros((2, model.n_bins))
    history[1] = np.median(logz)                       # where nothing formed (no weight on it)
    active = model.active_bins.numpy()
    for group, weights in zip(groups, sfr):
        history[0, active[group]] = weights.sum()
        if weights.sum() > 0:
            history[1, active[group]] = (weights * logz).sum() / weights.sum()
    info = {"chi2_per_pixel": float(fit.chi2), "templates_with_weight": int((fit.weights > 0).sum()),
            "n_templates": int(fit.weights.size), "regul": float(regul), "mdegree": int(calibration_degree)}
    return history, model, info


def compare_with_ppxf(posterior, grid, *, regul: float = REGUL) -> dict:
    """sfhkit's posterior (median, 16th-84th percentiles of the kept draws) beside pPXF's fit of the
    same spectrum (`ppxf_history` at the posterior's A_V, sigma_v and polynomial degree), for the
    COMPARED quantities, with the differences and the AGREEMENT goals."""
    from .posterior import true_quantities

    obs = posterior.observation
    av = float(np.median(posterior.av[posterior.kept])) if posterior.av is not None else float(obs.av)
    vdisp = float(np.median(posterior.vdisp_kms[posterior.kept])) if posterior.vdisp_kms is not None \
        else obs.velocity_dispersion_kms
    degree = 0 if posterior.calibration is None else int(posterior.calibration.shape[1])
    history, model, info = ppxf_history(obs, grid, av=av, calibration_degree=degree, regul=regul, vdisp_kms=vdisp)
    reference = true_quantities(history[None], model)
    derived = posterior.derived()
    rows = {}
    for name in COMPARED:
        p16, p50, p84 = np.percentile(derived[name], [16, 50, 84])
        ppxf_value = float(reference[name][0])
        rows[name] = {"sfhkit_median": round(float(p50), 3), "sfhkit_p16": round(float(p16), 3),
                      "sfhkit_p84": round(float(p84), 3), "ppxf": round(ppxf_value, 3),
                      "difference": round(float(p50) - ppxf_value, 3), "goal_abs_difference": AGREEMENT[name]}
    return {"galaxy": obs.metadata.get("spec_id") or obs.metadata.get("source"), "ssp_library": model.ssp_library,
            "av_mag": round(av, 3), "vdisp_kms": None if vdisp is None else round(float(vdisp), 1),
            "calibration_degree": degree, "sfhkit_median_chi2_per_pixel": round(posterior.median_chi2_per_pixel(), 4),
            "ppxf": info, "quantities": rows,
            "agrees": all(abs(r["difference"]) <= r["goal_abs_difference"] for r in rows.values())}
