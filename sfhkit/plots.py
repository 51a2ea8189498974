"""Static figures (matplotlib, Agg backend): used by the command line, not by the widgets."""

from __future__ import annotations

import numpy as np


def plot_model_spectrum(wavelength, flux, history, time_bins, redshift, av, path, age_at_z_gyr):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 2]})
    ax = axes[0]
    ax.stairs(history[0], time_bins.edges, color="C0", label="SFR")
    ax.set_xlabel("cosmic time [Gyr]")
    ax.set_ylabel("SFR [Msun/yr]", color="C0")
    ax.axvline(age_at_z_gyr, color="k", ls=":", label=f"t(z={redshift})")
    ax2 = ax.twinx()
    ax2.stairs(history[1], time_bins.edges, color="C3", baseline=None)
    ax2.set_ylabel("log Z/Zsun", color="C3")
    ax.legend(loc="upper left", fontsize=8)
    axes[1].plot(wavelength, flux, lw=0.6, color="k")
    axes[1].set_xlabel("observed vacuum wavelength [A]")
    axes[1].set_ylabel("flux [1e-17 erg/s/cm2/A]")
    axes[1].set_title(f"sfhkit forward model, z = {redshift}, A_V = {av}")
    axes[1].set_ylim(0, np.percentile(flux, 99.5) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
