"""Spectral zoom: pick a line (Ca H&K, G band, H-beta, Mg b, Fe, Na D, H-alpha, ...) and see the
observed spectrum around it with the posterior (or, before sampling, the model panel's history),
line markers coloured by type, the residuals, and the residual density against N(0, 1)."""

from __future__ import annotations

import ipywidgets as w
import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource
from jupyter_bokeh import BokehModel

from sfhkit.lines import LINE_COLOURS, line_list, observed_line_wavelengths

from ._common import new_figure
from .state import ExplorerState

ZOOM_LINES = ("CaII K", "CaII H", "H delta", "G band", "H gamma", "H beta", "MgI b 5174", "Fe 5270", "Fe 5335",
              "NaI D2", "H alpha", "CaII 8544")
HALF_WIDTH_REST_ANGSTROM = 60.0


class ZoomPanel(w.VBox):
    def __init__(self, state: ExplorerState | None = None, *, line: str = "H beta"):
        self.state = state if state is not None else ExplorerState()
        names = [n for n in ZOOM_LINES if n in set(line_list()["name"])]
        self.line = w.Dropdown(options=names, value=line, description="line")
        self.half_width = w.BoundedFloatText(value=HALF_WIDTH_REST_ANGSTROM, min=5, max=1000, step=10,
                                             description="+- A (rest)")
        self.pipeline = w.Checkbox(value=False, description="survey pipeline model", indent=False)
        self.message = w.HTML("")
        self._band = None                # (posterior, its 95 % band): percentiles once per posterior
        self.observed = ColumnDataSource(dict(x=[], y=[]), name="zoom_observed")
        self.model = ColumnDataSource(dict(x=[], median=[], lo=[], hi=[]), name="zoom_model")
        self.pipeline_source = ColumnDataSource(dict(x=[], y=[]), name="zoom_pipeline")
        self.markers = ColumnDataSource(dict(x=[], top=[], bottom=[], color=[], name=[]), name="zoom_lines")
        self.residual = ColumnDataSource(dict(x=[], y=[]), name="zoom_residuals")
        self.density = ColumnDataSource(dict(left=[], right=[], top=[]), name="residual_density")
        self.normal = ColumnDataSource(dict(x=[], y=[]), name="residual_normal")
        fig = new_figure("zoom_figure", "", "observed wavelength [A]", "flux [1e-17 erg/s/cm2/A]", height=280,
                         width=620)
        fig.varea("x", "lo", "hi", source=self.model, color="#ff7f0e", alpha=0.4, legend_label="posterior 95 %")
        fig.line("x", "y", source=self.observed, color="black", line_width=1, legend_label="observed")
        fig.line("x", "median", source=self.model, color="#d62728", line_width=1.2, legend_label="model")
        fig.line("x", "y", source=self.pipeline_source, color="#9467bd", line_width=1, legend_label="pipeline")
        fig.segment(x0="x", x1="x", y0="bottom", y1="top", source=self.markers, color="color", line_dash="dotted",
                    line_width=1.5)
        fig.text(x="x", y="top", text="name", source=self.markers, angle=np.pi / 2, text_font_size="8pt",
                 text_color="color", text_align="right", text_baseline="bottom")
        fig.legend.location = "bottom_left"
        fig.legend.click_policy = "hide"
        residuals = new_figure("zoom_residual_figure", "", "observed wavelength [A]", "(obs - model) / sigma",
                               height=140, width=620, x_range=fig.x_range)
        residuals.scatter("x", "y", source=self.residual, size=3)
        density = new_figure("residual_density_figure", "residual density (all fitted pixels)", "(obs - model) / sigma",
                             "density", height=300, width=280)
        density.quad(left="left", right="right", top="top", bottom=0, source=self.density, alpha=0.5)
        density.line("x", "y", source=self.normal, color="black", legend_label="N(0, 1)")
        self.figure_model = fig
        self.figure = BokehModel(row(column(fig, residuals), density))
        for widget in (self.line, self.half_width, self.pipeline):
            widget.observe(lambda _: self.refresh(), "value")
        self.state.observe(lambda _: self.refresh(), ["posterior", "galaxy", "av", "redshift",
                                                      "velocity_dispersion_kms", "history_kind", "selected_draw"])
        super().__init__([w.HTML("<h3>Spectral zoom</h3>"), w.HBox([self.line, self.half_width, self.pipeline]),
                          self.message, self.figure])
        self.refresh()

    def _model_spectra(self, obs):
        """(median, lo, hi) model flux: the posterior's 95 % band, else the model panel's history."""
        s = self.state
        if s.posterior is not None and s.history_kind != "truth":
            spectra = s.posterior.spectra[s.posterior.kept]
            if s.history_kind == "draw" and 0 <= s.selected_draw < len(spectra):
                one = spectra[s.selected_draw]
                return one, one, one
            if self._band is None or self._band[0] is not s.posterior:     # once per posterior, not per redraw
                lo, med, hi = np.percentile(spectra, [2.5, 50, 97.5], axis=0)
                self._band = (s.posterior, (med, lo, hi))
            return self._band[1]
        history = s.current_history()
        if history is None or s.preview is None:
            return None
        flux = s.model_spectrum(history)
        return flux, flux, flux

    def refresh(self) -> None:
        s = self.state
        if s.galaxy is None:
            return
        obs = s.posterior.observation if s.posterior is not None else s.fit_observation()
        table = observed_line_wavelengths(obs.redshift)
        centre = float(table.loc[table["name"] == self.line.value, "observed_angstrom"].iloc[0])
        half = self.half_width.value * (1 + obs.redshift)
        window = (obs.wavelength >= centre - half) & (obs.wavelength <= centre + half)
        if not window.any():
            self.message.value = f"{self.line.value} is outside this spectrum ({centre:.0f} A observed)"
            return
        self.message.value = ""
        wave = obs.wavelength[window]
        flux = np.where(obs.mask, obs.flux, np.nan)[window]
        self.observed.data = dict(x=wave, y=flux)
        model = self._model_spectra(obs)
        if model is None:
            self.model.data = dict(x=[], median=[], lo=[], hi=[])
            self.residual.data = dict(x=[], y=[])
        else:
            med, lo, hi = model
            self.model.data = dict(x=wave, median=med[window], lo=lo[window], hi=hi[window])
            self.residual.data = dict(x=wave, y=(flux - med[window]) / obs.sigma[window])
            self._density((np.where(obs.mask, obs.flux, np.nan) - med) / obs.sigma)
        pipeline = obs.metadata.get("pipeline_model")
        self.pipeline_source.data = (dict(x=wave, y=np.asarray(pipeline)[window]) if self.pipeline.value
                                     and pipeline is not None else dict(x=[], y=[]))
        shown = np.concatenate([flux[np.isfinite(flux)], self.model.data["median"]]) if len(flux) else np.array([0.0])
        low, high = float(np.nanmin(shown)), float(np.nanmax(shown))
        inside = table[(table["observed_angstrom"] >= wave[0]) & (table["observed_angstrom"] <= wave[-1])]
        self.markers.data = dict(x=inside["observed_angstrom"].to_numpy(), top=np.full(len(inside), high),
                                 bottom=np.full(len(inside), low), color=[LINE_COLOURS[t] for t in inside["type"]],
                                 name=inside["name"].tolist())
        title = f"{self.line.value} at {centre:.1f} A observed (z = {obs.redshift:.4f})"
        if self.figure_model.title.text != title:              # only on a new line or redshift: fewer messages
            self.figure_model.title.text = title
            self.figure_model.x_range.start, self.figure_model.x_range.end = float(wave[0]), float(wave[-1])

    def _density(self, residual) -> None:
        r = residual[np.isfinite(residual)]
        if r.size == 0:
            return
        counts, edges = np.histogram(np.clip(r, -6, 6), bins=48, range=(-6, 6), density=True)
        self.density.data = dict(left=edges[:-1], right=edges[1:], top=counts)
        x = np.linspace(-6, 6, 200)
        self.normal.data = dict(x=x, y=np.exp(-0.5 * x ** 2) / np.sqrt(2 * np.pi))
