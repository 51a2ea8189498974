"""Model panel: A_V, redshift and velocity-dispersion controls; the model spectrum of the current
history (truth, posterior median or a chosen draw) follows them live (`sfhkit.preview`, a few ms);
masks added by dragging on the spectrum (box-select tool), from presets, or typed, and removed again."""

from __future__ import annotations

import time

import ipywidgets as w
import numpy as np
import traitlets
from bokeh.layouts import column
from bokeh.models import BoxSelectTool, ColumnDataSource
from jupyter_bokeh import BokehModel

from sfhkit.lines import largest_negative_residual_ranges, masked_ranges, parse_ranges

from ._common import error_html, new_figure
from .state import ExplorerState

HISTORY_KINDS = (("truth", "truth"), ("posterior median", "median"), ("chosen draw", "draw"))


class ModelPanel(w.VBox):
    """Live model spectrum of `state`'s current history; `last_update_ms` is the time of the last
    redraw (computing the spectrum and filling the figure's data sources)."""

    def __init__(self, state: ExplorerState | None = None):
        self.state = state if state is not None else ExplorerState()
        s = self.state
        self.av = w.FloatSlider(value=s.av, min=0.0, max=2.0, step=0.01, description="A_V [mag]",
                                readout_format=".2f", continuous_update=True)
        self.redshift = w.FloatSlider(value=max(s.redshift, 1e-3), min=1e-3, max=1.0, step=1e-4, description="z",
                                      readout_format=".4f", continuous_update=True)
        self.vdisp = w.FloatSlider(value=s.velocity_dispersion_kms, min=0.0, max=450.0, step=5.0,
                                   description="sigma_v [km/s]", continuous_update=True)
        self.history_kind = w.ToggleButtons(options=HISTORY_KINDS, value=s.history_kind, description="history")
        for widget in (self.av, self.redshift, self.vdisp):
            widget.style.description_width = "100px"
            widget.layout.width = "480px"
        traitlets.link((self.av, "value"), (s, "av"))
        traitlets.link((self.vdisp, "value"), (s, "velocity_dispersion_kms"))
        traitlets.link((self.history_kind, "value"), (s, "history_kind"))
        self.redshift.observe(self._redshift_moved, "value")

        self.mask_lines = w.Checkbox(value=s.mask_lines, description="emission lines", indent=False)
        self.mask_sky = w.Checkbox(value=s.mask_sky, description="sky lines", indent=False)
        traitlets.link((self.mask_lines, "value"), (s, "mask_lines"))
        traitlets.link((self.mask_sky, "value"), (s, "mask_sky"))
        self.worst_button = w.Button(description="3 worst residual areas", icon="plus")
        self.typed = w.Text(placeholder="e.g. 5570-5590, 6860-6920 (observed A)", description="ranges")
        self.add_button = w.Button(description="Add", icon="plus")
        self.ranges = w.SelectMultiple(options=[], description="masked", rows=4)
        self.remove_button = w.Button(description="Remove selected", icon="trash")
        self.message = w.HTML("")
        self.latency = w.Label("")
        self.worst_button.on_click(lambda _: self._guard(self.mask_worst))
        self.add_button.on_click(lambda _: self._guard(self.add_typed))
        self.remove_button.on_click(lambda _: self.remove_selected())

        self.observed = ColumnDataSource(dict(x=[], y=[]), name="observed_spectrum")
        self.model = ColumnDataSource(dict(x=[], y=[]), name="model_spectrum")
        self.residual = ColumnDataSource(dict(x=[], y=[]), name="model_residuals")
        self.masks = ColumnDataSource(dict(left=[], right=[]), name="mask_ranges")
        spectrum = new_figure("model_figure", "drag with the box-select tool to mask a range",
                              "observed wavelength [A]", "flux [1e-17 erg/s/cm2/A]", height=300)
        spectrum.quad(left="left", right="right", bottom=-1e6, top=1e6, source=self.masks, color="#dddddd",
                      line_alpha=0, level="underlay")
        spectrum.line("x", "y", source=self.observed, color="black", line_width=1, legend_label="observed")
        points = spectrum.scatter("x", "y", source=self.observed, size=3, alpha=0, selection_alpha=0.3,
                                  nonselection_alpha=0)
        spectrum.line("x", "y", source=self.model, color="#d62728", line_width=1.2, legend_label="model")
        spectrum.add_tools(BoxSelectTool(dimensions="width", renderers=[points]))
        spectrum.legend.location = "top_right"
        residuals = new_figure("residual_figure", "", "observed wavelength [A]", "(obs - model) / sigma",
                               height=150, x_range=spectrum.x_range)
        residuals.scatter("x", "y", source=self.residual, size=2, color="#1f77b4")
        self.observed.selected.on_change("indices", self._selected)
        self.figure = BokehModel(column(spectrum, residuals))
        self.last_update_ms = float("nan")

        s.observe(self._galaxy_changed, "galaxy")
        s.observe(lambda _: self.refresh(), ["av", "velocity_dispersion_kms", "history_kind", "selected_draw",
                                             "posterior", "preview"])
        s.observe(lambda _: self.refresh_masks(), ["mask_lines", "mask_sky", "mask_ranges"])
        super().__init__([w.HTML("<h3>Model</h3>"), self.av, self.redshift, self.vdisp, self.history_kind,
                          w.HBox([self.mask_lines, self.mask_sky, self.worst_button]),
                          w.HBox([self.typed, self.add_button]), w.HBox([self.ranges, self.remove_button]),
                          self.message, self.figure, self.latency])
        if s.galaxy is not None:
            self._galaxy_changed(None)

    # -- state -> figure ------------------------------------------------------------------------
    def _galaxy_changed(self, _change) -> None:
        s = self.state
        obs = s.galaxy.observation
        preview = s.preview
        centre, half = preview.redshift, preview.max_redshift_shift
        self.redshift.min, self.redshift.max = 1e-4, 10.0        # wide first: min may never exceed max
        self.redshift.value = s.redshift
        self.redshift.min, self.redshift.max = max(centre - half, 1e-4), centre + half
        self.observed.data = dict(x=obs.wavelength, y=np.where(obs.mask, obs.flux, np.nan))
        self.refresh_masks()
        self.refresh()

    def _redshift_moved(self, change) -> None:
        self.state.redshift = float(change["new"])
        self.refresh_masks()
        self.refresh()

    def refresh(self) -> None:
        """Recompute the model spectrum of the current history and redraw (a few ms)."""
        started = time.perf_counter()
        s = self.state
        history = s.current_history()
        if s.preview is None or history is None:
            self.model.data = dict(x=[], y=[])
            self.residual.data = dict(x=[], y=[])
            return
        obs = s.galaxy.observation
        try:
            flux = s.model_spectrum(history)
        except ValueError as err:
            self.message.value = error_html(str(err))
            return
        residual = np.where(obs.mask, (obs.flux - flux) / obs.sigma, np.nan)
        self.model.data = dict(x=obs.wavelength, y=flux)
        self.residual.data = dict(x=obs.wavelength, y=residual)
        self.last_update_ms = 1e3 * (time.perf_counter() - started)
        self.latency.value = f"model updated in {self.last_update_ms:.1f} ms"

    def refresh_masks(self) -> None:
        s = self.state
        if s.galaxy is None:
            return
        try:
            fit = s.fit_observation()
        except ValueError as err:
            self.message.value = error_html(str(err))
            return
        runs = masked_ranges(fit.wavelength, fit.mask)
        self.masks.data = dict(left=[r[0] for r in runs], right=[r[1] for r in runs])
        self.ranges.options = [(f"{lo:.1f}-{hi:.1f} A", (lo, hi)) for lo, hi in s.mask_ranges]
        self.message.value = f"{fit.n_used} of {fit.wavelength.size} pixels used in the fit"

    # -- masks ----------------------------------------------------------------------------------
    def _guard(self, action) -> None:
        try:
            action()
        except ValueError as err:
            self.message.value = error_html(str(err))

    def _selected(self, _attr, _old, new) -> None:
        """A box-select drag on the spectrum: mask its wavelength range."""
        if len(new) < 2:
            return
        wave = np.asarray(self.observed.data["x"])[np.asarray(new)]
        self.observed.selected.indices = []
        self._guard(lambda: self.state.add_mask_range(wave.min(), wave.max()))

    def add_typed(self) -> None:
        for lo, hi in parse_ranges(self.typed.value):
            self.state.add_mask_range(lo, hi)
        self.typed.value = ""

    def mask_worst(self, n: int = 3) -> None:
        """Mask the `n` 40 A windows where the current model's residual is most negative (the paper)."""
        residual = np.asarray(self.residual.data["y"], dtype=float)
        if residual.size == 0:
            raise ValueError("no model to take residuals from: load a galaxy (or sample a posterior) first")
        fit = self.state.fit_observation()
        residual = np.where(fit.mask, residual, np.nan)
        for lo, hi in largest_negative_residual_ranges(fit.wavelength, residual, n=n):
            self.state.add_mask_range(lo, hi)

    def remove_selected(self) -> None:
        chosen = set(self.ranges.value)
        self.state.mask_ranges = [r for r in self.state.mask_ranges if tuple(r) not in chosen]
