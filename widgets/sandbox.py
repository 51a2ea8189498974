"""Teaching sandbox: a forward-model playground.  A delayed-tau history of 1e10 Msun plus a burst
whose time and mass you move, one metallicity for all stars, and Calzetti dust; the spectrum and
the line-strength indices (Lick H delta_A, H beta, Mg b, Fe 5270, Na D and Dn4000) follow live."""

from __future__ import annotations

import ipywidgets as w
import numpy as np
import torch
from bokeh.layouts import column
from bokeh.models import ColumnDataSource
from jupyter_bokeh import BokehModel

from sfhkit import ForwardModel, SSPGrid, TimeBins, age_at_redshift_gyr
from sfhkit.histories import parametric_history
from sfhkit.indices import all_indices
from sfhkit.observation import sdss_wavelength

from ._common import new_figure, stairs_xy

SANDBOX_REDSHIFT = 0.05
BASE_MASS_MSUN = 1e10


class SandboxPanel(w.VBox):
    """Sliders -> history -> `ForwardModel` spectrum and indices.  `grid` defaults to the default
    SSP grid (read once, about 15 s); building the model takes a few seconds more."""

    def __init__(self, grid=None):
        self.model = ForwardModel(grid if grid is not None else SSPGrid.default(progress=False), sdss_wavelength(),
                                  redshift=SANDBOX_REDSHIFT)
        self.time_bins = TimeBins()
        t_obs = float(age_at_redshift_gyr(SANDBOX_REDSHIFT))
        self.tau = w.FloatSlider(value=2.0, min=0.2, max=10.0, step=0.1, description="tau [Gyr]")
        self.burst_time = w.FloatSlider(value=t_obs - 1.0, min=0.5, max=t_obs - 0.05, step=0.05,
                                        description="burst at [Gyr]")
        self.burst_fraction = w.FloatSlider(value=0.1, min=0.0, max=1.0, step=0.01, description="burst mass")
        self.logz = w.FloatSlider(value=0.0, min=-2.0, max=0.4, step=0.05, description="log Z/Zsun")
        self.av = w.FloatSlider(value=0.2, min=0.0, max=2.0, step=0.02, description="A_V [mag]")
        for slider in (self.tau, self.burst_time, self.burst_fraction, self.logz, self.av):
            slider.style.description_width = "110px"
            slider.layout.width = "460px"
            slider.observe(lambda _: self.refresh(), "value")
        self.indices = w.HTML("")
        self.history_source = ColumnDataSource(dict(x=[], y=[]), name="sandbox_history")
        self.spectrum_source = ColumnDataSource(dict(x=[], y=[]), name="sandbox_spectrum")
        history = new_figure("sandbox_history_figure", "history (burst mass as a fraction of the 1e10 Msun)",
                             "age of the universe [Gyr]", "SFR [Msun/yr]", height=200)
        history.line("x", "y", source=self.history_source, color="black", line_width=2)
        spectrum = new_figure("sandbox_spectrum_figure", f"spectrum at z = {SANDBOX_REDSHIFT}",
                              "rest-frame wavelength [A]", "flux [1e-17 erg/s/cm2/A]", height=280)
        spectrum.line("x", "y", source=self.spectrum_source, color="#d62728")
        self.figure = BokehModel(column(history, spectrum))
        super().__init__([w.HTML("<h3>Forward-model sandbox</h3>"), self.tau, self.burst_time, self.burst_fraction,
                          self.logz, self.av, self.indices, self.figure])
        self.refresh()

    def history(self) -> np.ndarray:
        """(2, 64): the delayed-tau history plus the burst in the bin holding its time."""
        h = parametric_history("delayed", mass_formed_msun=BASE_MASS_MSUN, tau_gyr=self.tau.value, logz=self.logz.value)
        edges = self.time_bins.edges
        k = int(np.clip(np.searchsorted(edges, self.burst_time.value, side="right") - 1, 0, len(edges) - 2))
        h[0, k] += self.burst_fraction.value * BASE_MASS_MSUN / self.time_bins.widths[k]      # widths in yr
        return h

    def refresh(self) -> dict:
        h = self.history()
        flux = self.model(torch.as_tensor(h), av=self.av.value).detach().double().numpy()
        rest = self.model.wavelength / (1 + SANDBOX_REDSHIFT)
        x, y = stairs_xy(self.time_bins.edges, h[0])
        self.history_source.data = dict(x=x, y=y)
        self.spectrum_source.data = dict(x=rest, y=flux)
        values = {k: float(v) for k, v in all_indices(rest, flux).items()}
        cells = "".join(f"<td style='padding:0 10px'><b>{k}</b><br>{v:.3f}{'' if k == 'Dn4000' else ' A'}</td>"
                        for k, v in values.items())
        self.indices.value = f"<table><tr>{cells}</tr></table>"
        return values
