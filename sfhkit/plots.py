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


def plot_posterior(posterior, path=None, n_show: int = 100):
    """The paper's Figure 1 for any posterior: SFH and MH draws (kept ones, up to `n_show`) on a
    cosmic-time axis with t(z) marked and the truth of a mock overlaid; observed against posterior
    spectra; the density of normalised residuals against N(0, 1).  Returns the figure; saved to
    `path` when given."""
    import matplotlib.pyplot as plt

    obs = posterior.observation
    edges = posterior.time_bins.edges
    draws = posterior.samples()[:n_show]
    truth = posterior.true_history()
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for channel, ax, label in ((0, axes[0, 0], "SFR [Msun/yr]"), (1, axes[0, 1], "log Z/Zsun")):
        for h in draws:
            ax.stairs(h[channel], edges, color="C0", alpha=0.08, lw=1, baseline=None)
        ax.stairs(np.median(draws[:, channel], axis=0), edges, color="C0", lw=2, baseline=None,
                  label=f"posterior median ({len(draws)} draws)")
        if truth is not None:
            ax.stairs(truth[channel], edges, color="k", lw=1.5, baseline=None, label="truth")
        ax.axvline(posterior.age_at_z_gyr, color="C3", ls="--", label=f"t(z = {obs.redshift:g})")
        ax.set_xlabel("age of the universe [Gyr]")
        ax.set_ylabel(label)
    axes[0, 1].set_ylim(-2.6, 0.6)
    summary = posterior.summary()["log10_formed_mass"]
    title = f"log10 formed mass {summary['mean']:.3f} +- {summary['std']:.3f}"
    if truth is not None:
        from .histories import observable_quantities

        true_mass = observable_quantities(truth, posterior.age_at_z_gyr, posterior.time_bins)["log10_formed_mass"]
        title += f" (truth {float(true_mass):.3f})"
    axes[0, 0].set_title(title, fontsize=10)
    axes[0, 0].legend(fontsize=8)
    ax = axes[1, 0]
    spectra = posterior.spectra[posterior.kept]
    lo, med, hi = np.percentile(spectra, [2.5, 50, 97.5], axis=0)
    ax.plot(obs.wavelength, np.where(obs.mask, obs.flux, np.nan), color="k", lw=0.5, label="observed")
    ax.fill_between(obs.wavelength, lo, hi, color="C1", alpha=0.5, lw=0, label="posterior 95 %")
    ax.plot(obs.wavelength, med, color="C1", lw=0.6, label="posterior median")
    ax.set_xlabel("observed vacuum wavelength [A]")
    ax.set_ylabel("flux [1e-17 erg/s/cm2/A]")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    residuals = posterior.residuals().ravel()
    residuals = residuals[np.isfinite(residuals)]
    grid = np.linspace(-5, 5, 201)
    ax.hist(np.clip(residuals, -5, 5), bins=100, range=(-5, 5), density=True, color="C0", alpha=0.6,
            label="(observed - posterior) / sigma")
    ax.plot(grid, np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi), color="k", lw=1, label="N(0, 1)")
    ax.set_title(f"median chi^2 per pixel {posterior.median_chi2_per_pixel():.3f}", fontsize=10)
    ax.set_xlabel("normalised residual")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
