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
