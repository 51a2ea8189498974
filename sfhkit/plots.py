"""Static figures (matplotlib, Agg backend): used by the command line, not by the widgets."""

from __future__ import annotations

import numpy as np


def plot_prior_draws(draws, test_histories, time_bins, path=None, n_show: int = 6, seed: int = 0):
    """Prior draws (left column) next to held-out histories (right), each row one random pick:
    SFR normalised to its formed mass (1/Gyr, log scale) and log Z/Zsun.  Returns the figure
    (for a notebook); saved to `path` when given."""
    import matplotlib.pyplot as plt

    from .histories import formed_mass_msun

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True, sharey="row")
    edges = time_bins.edges
    for col, (title, sets) in enumerate((("prior draws", draws), ("test histories", test_histories))):
        sets = np.asarray(sets, dtype=float)
        for k, i in enumerate(rng.choice(len(sets), size=min(n_show, len(sets)), replace=False)):
            h = sets[i]
            specific = h[0] / max(formed_mass_msun(h, time_bins), 1.0) * 1e9
            axes[0, col].stairs(np.maximum(specific, 1e-4), edges, color=f"C{k}", lw=1)
            axes[1, col].stairs(np.clip(h[1], -2.5, 0.5), edges, color=f"C{k}", lw=1, baseline=None)
        axes[0, col].set_title(title)
        axes[0, col].set_yscale("log")
        axes[1, col].set_xlabel("cosmic time [Gyr]")
    axes[0, 0].set_ylabel("SFR / formed mass [1/Gyr]")
    axes[1, 0].set_ylabel("log Z/Zsun (clipped to the grid)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


DEFAULT_ZOOM_LINES = ("CaII K", "H beta", "MgI b 5174", "NaI D2", "H alpha")
ZOOM_HALF_WIDTH_REST_ANGSTROM = 60.0


def _shade_masked(ax, obs):
    """Grey bands over the masked stretches of the observed spectrum."""
    from .lines import masked_ranges

    for low, high in masked_ranges(obs.wavelength, obs.mask):
        ax.axvspan(low, high, color="0.85", lw=0, zorder=0)


def _history_panels(axes, posterior, draws, firefly):
    obs, edges = posterior.observation, posterior.time_bins.edges
    truth = posterior.true_history()
    reference = None if firefly is None else firefly.history(posterior.time_bins, posterior.age_at_z_gyr)
    for channel, ax, label in ((0, axes[0], "SFR [Msun/yr]"), (1, axes[1], "log Z/Zsun")):
        for h in draws:
            ax.stairs(h[channel], edges, color="C0", alpha=0.08, lw=1, baseline=None)
        ax.stairs(np.median(draws[:, channel], axis=0), edges, color="C0", lw=2, baseline=None,
                  label=f"posterior median ({len(draws)} draws)")
        if truth is not None:
            ax.stairs(truth[channel], edges, color="k", lw=1.5, baseline=None, label="truth")
        if reference is not None:
            centres = posterior.time_bins.centers
            has = np.isfinite(reference[1]) & (reference[0] > 0)
            ax.plot(centres[has], reference[channel][has], "s", color="C2", ms=6,
                    label=f"FIREFLY ({firefly.mass_kind} mass)")
        ax.axvline(posterior.age_at_z_gyr, color="C3", ls="--", label=f"t(z = {obs.redshift:g})")
        ax.set_xlabel("age of the universe [Gyr]")
        ax.set_ylabel(label)
    axes[1].set_ylim(-2.6, 0.6)
    if reference is not None:   # FIREFLY's few SSPs make spikes that a linear axis cannot show with the draws
        axes[0].set_yscale("log")
        axes[0].set_ylim(bottom=max(1e-3 * float(np.max(np.median(draws[:, 0], axis=0))), 1e-6))
    summary = posterior.summary()["log10_formed_mass"]
    title = f"log10 formed mass {summary['mean']:.3f} +- {summary['std']:.3f}"
    if truth is not None:
        from .histories import observable_quantities

        true_mass = observable_quantities(truth, posterior.age_at_z_gyr, posterior.time_bins)["log10_formed_mass"]
        title += f" (truth {float(true_mass):.3f})"
    if reference is not None and np.isfinite(firefly.summary.get("log10_formed_mass", np.nan)):
        title += f" (FIREFLY {firefly.summary['log10_formed_mass']:.2f})"
    axes[0].set_title(title, fontsize=10)
    axes[0].legend(fontsize=7, loc="best", framealpha=0.6)


def _spectrum_panel(ax, posterior, window=None):
    obs = posterior.observation
    spectra = posterior.spectra[posterior.kept]
    lo, med, hi = np.percentile(spectra, [2.5, 50, 97.5], axis=0)
    pick = slice(None) if window is None else (obs.wavelength >= window[0]) & (obs.wavelength <= window[1])
    wave = obs.wavelength[pick]
    _shade_masked(ax, obs)
    ax.plot(wave, obs.flux[pick], color="k", lw=0.6, label="observed")
    ax.fill_between(wave, lo[pick], hi[pick], color="C1", alpha=0.5, lw=0, label="posterior 95 %")
    ax.plot(wave, med[pick], color="C1", lw=0.7, label="posterior median")
    if "pipeline_model" in obs.metadata:
        ax.plot(wave, np.asarray(obs.metadata["pipeline_model"])[pick], color="C4", lw=0.6, alpha=0.8,
                label="survey pipeline model")
    if window is not None:
        ax.set_xlim(*window)
        shown = np.concatenate([obs.flux[pick][obs.mask[pick]], med[pick]])   # masked emission may go off-scale
        if shown.size:
            span = np.array([shown.min(), shown.max()])
            ax.set_ylim(span[0] - 0.1 * np.ptp(span), span[1] + 0.1 * np.ptp(span))


def _line_markers(ax, redshift, window):
    from .lines import LINE_COLOURS, observed_line_wavelengths

    table = observed_line_wavelengths(redshift)
    inside = table[(table["observed_angstrom"] >= window[0]) & (table["observed_angstrom"] <= window[1])]
    for _, line in inside.iterrows():
        ax.axvline(line["observed_angstrom"], color=LINE_COLOURS[line["type"]], lw=0.8, ls=":", zorder=1)
        ax.text(line["observed_angstrom"], 0.98, line["name"], transform=ax.get_xaxis_transform(), rotation=90,
                va="top", ha="right", fontsize=6, color=LINE_COLOURS[line["type"]])


def plot_posterior(posterior, path=None, n_show: int = 100, firefly=None, zoom_lines=None):
    """The paper's figures for any posterior: SFH and MH draws (kept ones, up to `n_show`) on a
    cosmic-time axis with t(z) marked, the truth of a mock or a FIREFLY fit (`FireflyFit`)
    overlaid; observed against posterior spectra (and the survey pipeline's model where the
    observation carries one), masked stretches shaded grey; the density of normalised residuals
    against N(0, 1); and, for each name in `zoom_lines` (see sfhkit.lines.line_list), a zoom of
    +-60 rest-frame Angstrom with emission (green), absorption (red) and Balmer (orange) lines
    marked.  Returns the figure; saved to `path` when given."""
    import matplotlib.pyplot as plt

    from .lines import line_list

    obs = posterior.observation
    zooms = []
    if zoom_lines:
        table = line_list().set_index("name")
        unknown = set(zoom_lines) - set(table.index)
        if unknown:
            raise ValueError(f"zoom lines not in the line list: {sorted(unknown)}")
        for name in zoom_lines:
            centre = table.loc[name, "wavelength_vacuum_angstrom"] * (1 + obs.redshift)
            half = ZOOM_HALF_WIDTH_REST_ANGSTROM * (1 + obs.redshift)
            if centre - half >= obs.wavelength[0] and centre + half <= obs.wavelength[-1]:
                zooms.append((name, (centre - half, centre + half)))
    rows = 3 if zooms else 2
    fig = plt.figure(figsize=(14, 4 * rows))
    grid = fig.add_gridspec(rows, max(len(zooms), 3))
    draws = posterior.samples()[:n_show]
    _history_panels([fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])], posterior, draws, firefly)

    ax = fig.add_subplot(grid[0, 2])
    residuals = posterior.residuals().ravel()
    residuals = residuals[np.isfinite(residuals)]
    x = np.linspace(-5, 5, 201)
    ax.hist(np.clip(residuals, -5, 5), bins=100, range=(-5, 5), density=True, color="C0", alpha=0.6,
            label="(observed - posterior) / sigma")
    ax.plot(x, np.exp(-x ** 2 / 2) / np.sqrt(2 * np.pi), color="k", lw=1, label="N(0, 1)")
    ax.set_title(f"median chi^2 per pixel {posterior.median_chi2_per_pixel():.3f}", fontsize=10)
    ax.set_xlabel("normalised residual (unmasked pixels)")
    ax.legend(fontsize=8)

    ax = fig.add_subplot(grid[1, :])
    _spectrum_panel(ax, posterior)
    ax.set_xlabel("observed vacuum wavelength [A]")
    ax.set_ylabel("flux [1e-17 erg/s/cm2/A]")
    ax.set_title(str(obs.metadata.get("source", "")), fontsize=9)
    ax.legend(fontsize=8, ncol=4)
    factor = posterior.calibration_polynomial()
    if factor is not None:       # the flux-calibration polynomial the model spectra include (sfhkit.fluxcal)
        twin = ax.twinx()
        twin.fill_between(obs.wavelength, *np.percentile(factor, [2.5, 97.5], axis=0), color="C4", alpha=0.2, lw=0)
        twin.plot(obs.wavelength, np.median(factor, axis=0), color="C4", lw=1,
                  label=f"calibration polynomial (degree {posterior.calibration.shape[1]})")
        twin.set_ylabel("calibration polynomial P", color="C4", fontsize=9)
        twin.legend(fontsize=8, loc="lower right")
    for k, (name, window) in enumerate(zooms):
        ax = fig.add_subplot(grid[2, k])
        _spectrum_panel(ax, posterior, window)
        _line_markers(ax, obs.redshift, window)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("observed wavelength [A]", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    warnings = posterior.warnings()
    if warnings:        # the fit's health, above the panels (sfhkit.health)
        from .health import format_warnings

        lines = format_warnings(warnings)
        fig.subplots_adjust(top=1 - 0.022 * len(lines) * 3 / rows)
        fig.text(0.01, 0.995, "\n".join(lines), va="top", ha="left", fontsize=9, color="#b00020")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
