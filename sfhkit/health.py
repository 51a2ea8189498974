"""Fit health: named warnings, each with the number behind it, for a posterior that should not be
believed as it stands.  summary.json (`sfhkit infer`), the CLI, batch's summary.csv and the
explorer show the same list (`Posterior.warnings()`).

    code                  when                                                         severity
    high_chi2             median chi^2 per used pixel > CHI2_PER_PIXEL_LIMIT (3)       warning
    masked_pixels         more than MASKED_FRACTION_LIMIT (30 %) of the pixels unused   caution
    survey_class          the survey calls the object QSO or STAR                      warning
    active_nucleus        the survey's subclass has BROADLINE or AGN                    warning
    metallicity_at_edge   the 95 % interval of mass-weighted log Z reaches within          caution
                          GRID_EDGE_DEX (0.05 dex) of the library's highest or lowest
                          metallicity
    bins_at_edge          the median draw forms more than half its mass in bins within  caution
                          GRID_EDGE_DEX of an edge
    draws_at_cap          a draw has an SFR at the prior's cap (MAX_SFR, 1e4 Msun/yr)    warning
    av_at_prior_edge      inferred A_V (sfhkit.attenuation) has its median within         caution
                          AV_EDGE_MAG (0.1 mag) of the prior's upper end (2 mag)
    vdisp_at_prior_edge   inferred sigma_v (sfhkit.dispersion) has its median within      caution
                          VDISP_EDGE_KMS (10 km/s) of an end of its prior (40-450 km/s)

Thresholds: a fit to the noise gives chi^2 per pixel about 1; the shared SDSS early types fitted
with the line-spread function give 1.2-1.5; the failed fits of issue 16 and a broad-line AGN (7.6)
lie above 3, so 3 separates "the model describes the spectrum" from "it does not".  Emission-line,
sky and bad-pixel masks together remove 5-15 % of an SDSS galaxy spectrum; 30 % means large
stretches are missing (a broad-line AGN's BADTRACE half).  The grid edge is the library's own
(BC03: log Z/Zsun -2.15 to +0.5 on the paper's grid), where solar-scaled models put old
alpha-enhanced galaxies: a metallicity there is a bound, not a measurement.

Each warning is a dict: code, severity ("warning": the result is likely wrong; "caution": read
it with care), message (for people), value and limit (the numbers), concerns (the panel it is
about: "spectrum", "mask", "sfh", "mh", "object").
"""

from __future__ import annotations

import numpy as np

CHI2_PER_PIXEL_LIMIT = 3.0
MASKED_FRACTION_LIMIT = 0.30
GRID_EDGE_DEX = 0.05
AV_EDGE_MAG = 0.1
VDISP_EDGE_KMS = 10.0
MASS_AT_EDGE_LIMIT = 0.5
NON_GALAXY_CLASSES = ("QSO", "STAR")
ACTIVE_SUBCLASS_WORDS = ("BROADLINE", "AGN")
# The paper's metallicity grid with BC03's native range (for posteriors saved before the sampler
# recorded the grid's own).
DEFAULT_LOGZ_RANGE = (-2.15, 0.5)


def _warning(code, severity, message, value, limit, concerns) -> dict:
    return {"code": code, "severity": severity, "message": message,
            "value": value if isinstance(value, str) else round(float(value), 4),
            "limit": limit if isinstance(limit, (str, type(None))) else float(limit), "concerns": concerns}


def fit_warnings(posterior) -> list[dict]:
    """The warnings (module docstring) that apply to `posterior` (a sfhkit Posterior)."""
    from .histories import LOGZ, SFR, formed_mass_per_bin_msun
    from .prior import MAX_SFR

    obs, config = posterior.observation, posterior.config
    out = []
    chi2 = posterior.median_chi2_per_pixel()
    if not np.isfinite(chi2) or chi2 > CHI2_PER_PIXEL_LIMIT:
        out.append(_warning("high_chi2", "warning",
                            f"chi^2 per pixel is {chi2:.2f} (> {CHI2_PER_PIXEL_LIMIT:g}): the model does not describe "
                            "this spectrum; the history is not to be trusted", chi2, CHI2_PER_PIXEL_LIMIT, "spectrum"))
    masked = 1.0 - obs.n_used / obs.wavelength.size
    if masked > MASKED_FRACTION_LIMIT:
        out.append(_warning("masked_pixels", "caution",
                            f"{100 * masked:.0f} % of the pixels are masked (> {100 * MASKED_FRACTION_LIMIT:.0f} %): "
                            "the fit rests on what is left", masked, MASKED_FRACTION_LIMIT, "mask"))
    survey_class = str(obs.metadata.get("class", "")).strip().upper()
    if survey_class in NON_GALAXY_CLASSES:
        out.append(_warning("survey_class", "warning",
                            f"the survey classifies this object as {survey_class}, not a galaxy: a stellar-population "
                            "fit does not apply", survey_class, "GALAXY", "object"))
    subclass = str(obs.metadata.get("subclass", "")).strip().upper()
    active = [word for word in ACTIVE_SUBCLASS_WORDS if word in subclass.split()]
    if active:
        out.append(_warning("active_nucleus", "warning",
                            f"the survey's subclass is {subclass!r}: light from an active nucleus is not in the model",
                            subclass, "no " + " or ".join(ACTIVE_SUBCLASS_WORDS), "object"))
    library = config.get("ssp_library", "the SSP grid")
    low, high = config.get("ssp_logz_range", DEFAULT_LOGZ_RANGE)
    draws = posterior.samples()
    logz_draws = posterior.derived()["mass_weighted_logz"]
    if np.isfinite(logz_draws).any():
        logz, lower, upper = np.nanpercentile(logz_draws, [50, 2.5, 97.5])
        for edge, side, reach in ((high, "highest", upper), (low, "lowest", lower)):
            if abs(reach - edge) <= GRID_EDGE_DEX or (side == "highest") == (reach > edge):
                out.append(_warning("metallicity_at_edge", "caution",
                                    f"mass-weighted log Z/Zsun is {logz:+.2f} and its 95 % interval reaches {reach:+.2f}, "
                                    f"the {side} metallicity of {library} ({edge:+.2f}): a bound, not a measurement",
                                    logz, edge, "mh"))
    median = np.median(draws, axis=0)
    mass = formed_mass_per_bin_msun(median[None], posterior.time_bins)[0]
    at_edge = (np.abs(median[LOGZ] - high) <= GRID_EDGE_DEX) | (np.abs(median[LOGZ] - low) <= GRID_EDGE_DEX)
    mass = np.where(posterior.time_bins.centers < posterior.age_at_z_gyr, mass, 0.0)   # formed by t(z)
    fraction = float(mass[at_edge].sum() / mass.sum()) if mass.sum() > 0 else 0.0
    if fraction > MASS_AT_EDGE_LIMIT:
        out.append(_warning("bins_at_edge", "caution",
                            f"{100 * fraction:.0f} % of the median history's mass forms in bins at a metallicity edge "
                            f"of {library}", fraction, MASS_AT_EDGE_LIMIT, "mh"))
    capped = int((posterior.histories[:, SFR] >= (1 - 1e-3) * MAX_SFR).any(axis=-1).sum())
    if capped:
        out.append(_warning("draws_at_cap", "warning",
                            f"{capped} of {posterior.n_draws} draws have an SFR at the prior's cap ({MAX_SFR:g} Msun/yr): "
                            "the sampler diverged; use more steps", capped, 0, "sfh"))
    if posterior.av is not None:
        from .attenuation import AV_PRIOR_MAX_MAG

        av = float(np.median(posterior.av[posterior.kept]))
        if av > AV_PRIOR_MAX_MAG - AV_EDGE_MAG:
            out.append(_warning("av_at_prior_edge", "caution",
                                f"inferred A_V is {av:.2f} mag, at the top of its prior (0-{AV_PRIOR_MAX_MAG:g} mag): the "
                                "galaxy is dustier than the prior allows, or its continuum's shape is off by more than "
                                "the calibration prior", av, AV_PRIOR_MAX_MAG, "spectrum"))
    if posterior.vdisp_kms is not None:
        from .dispersion import VDISP_PRIOR_KMS

        vdisp = float(np.median(posterior.vdisp_kms[posterior.kept]))
        low, high = VDISP_PRIOR_KMS
        if vdisp < low + VDISP_EDGE_KMS or vdisp > high - VDISP_EDGE_KMS:
            out.append(_warning("vdisp_at_prior_edge", "caution",
                                f"inferred sigma_v is {vdisp:.0f} km/s, at an end of its prior ({low:.0f}-{high:.0f} "
                                "km/s): below it the lines are not resolved, above it the widths are not a galaxy's "
                                "stars' (an active nucleus, a merger, a wrong redshift)", vdisp,
                                low if vdisp < low + VDISP_EDGE_KMS else high, "spectrum"))
    return out


def format_warnings(warnings: list[dict]) -> list[str]:
    """One line per warning, for a terminal: "warning [high_chi2]: chi^2 per pixel is 7.60 ..."."""
    return [f"{w['severity']} [{w['code']}]: {w['message']}" for w in warnings]
