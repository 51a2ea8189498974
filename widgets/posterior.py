"""Posterior explorer: SFH and metallicity history as bands (median, 68 %, 95 %) with individual
draws, the truth or FIREFLY overlaid, t(z) marked, and the cumulative formed mass (mean +- std).
Hovering a draw highlights it; clicking one (or the draw slider) makes it the model panel's history,
so its spectrum and residuals show there."""

from __future__ import annotations

import ipywidgets as w
import numpy as np
import traitlets
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, HoverTool, Span, TapTool
from jupyter_bokeh import BokehModel

from sfhkit.histories import formed_mass_per_bin_msun

from ._common import new_figure, stairs_xy, warnings_html
from .state import ExplorerState

MAX_DRAWS_SHOWN = 50
CHANNELS = (("sfh", "SFR [Msun/yr]", "star-formation history"), ("mh", "log10 Z/Zsun", "metallicity history"))


def history_bands(histories, edges):
    """Stairs coordinates of the 2.5, 16, 50, 84 and 97.5 percentiles of `histories` (n, 2, bins),
    per channel: {channel: dict(x, lo95, lo68, median, hi68, hi95)}."""
    q = np.percentile(histories, [2.5, 16, 50, 84, 97.5], axis=0)      # (5, 2, bins)
    out = {}
    for c, (name, _, _) in enumerate(CHANNELS):
        x, ys = stairs_xy(edges, q[:, c])
        out[name] = dict(x=x, lo95=ys[0], lo68=ys[1], median=ys[2], hi68=ys[3], hi95=ys[4])
    return out


class PosteriorPanel(w.VBox):
    def __init__(self, state: ExplorerState | None = None):
        self.state = state if state is not None else ExplorerState()
        self.draw = w.IntSlider(value=-1, min=-1, max=-1, description="draw", disabled=True)
        traitlets.link((self.draw, "value"), (self.state, "selected_draw"))
        self.summary = w.HTML("")
        self.bands, self.draws, self.selected, self.truth, self.firefly = {}, {}, {}, {}, {}
        self.time_marks = []
        figures = []
        for name, y_label, title in CHANNELS:
            shared = {"x_range": figures[0].x_range} if figures else {}
            fig = new_figure(f"posterior_{name}", title, "age of the universe [Gyr]", y_label, height=240, **shared)
            band = self.bands[name] = ColumnDataSource({k: [] for k in ("x", "lo95", "lo68", "median", "hi68", "hi95")},
                                                       name=f"posterior_{name}_bands")
            fig.varea("x", "lo95", "hi95", source=band, color="#1f77b4", alpha=0.2, legend_label="95 %")
            fig.varea("x", "lo68", "hi68", source=band, color="#1f77b4", alpha=0.35, legend_label="68 %")
            draws = self.draws[name] = ColumnDataSource(dict(xs=[], ys=[], draw=[]), name=f"posterior_{name}_draws")
            lines = fig.multi_line("xs", "ys", source=draws, color="#1f77b4", alpha=0.15, line_width=1,
                                   hover_color="#ff7f0e", hover_alpha=1.0, selection_color="#ff7f0e",
                                   selection_alpha=1.0, nonselection_alpha=0.15)
            fig.line("x", "median", source=band, color="#1f77b4", line_width=2, legend_label="median")
            self.selected[name] = ColumnDataSource(dict(x=[], y=[]), name=f"posterior_{name}_selected")
            fig.line("x", "y", source=self.selected[name], color="#ff7f0e", line_width=2.5, legend_label="chosen draw")
            self.truth[name] = ColumnDataSource(dict(x=[], y=[]), name=f"posterior_{name}_truth")
            fig.line("x", "y", source=self.truth[name], color="black", line_width=1.5, legend_label="truth")
            self.firefly[name] = ColumnDataSource(dict(x=[], y=[]), name=f"posterior_{name}_firefly")
            fig.scatter("x", "y", source=self.firefly[name], marker="square", size=8, color="#2ca02c",
                        legend_label="FIREFLY")
            fig.add_tools(HoverTool(renderers=[lines], tooltips=[("draw", "@draw")]), TapTool(renderers=[lines]))
            draws.selected.on_change("indices", self._tapped)
            mark = Span(location=0, dimension="height", line_color="#d62728", line_dash="dashed", visible=False)
            fig.add_layout(mark)
            self.time_marks.append(mark)
            fig.legend.location = "top_left"
            fig.legend.click_policy = "hide"
            figures.append(fig)
        figures[1].y_range.start, figures[1].y_range.end = -2.6, 0.6
        mass = new_figure("posterior_mass", "cumulative formed mass", "age of the universe [Gyr]", "formed mass [Msun]",
                          height=220, x_range=figures[0].x_range, y_axis_type="log")
        self.mass = ColumnDataSource(dict(t=[], mean=[], lo=[], hi=[], truth=[]), name="posterior_mass")
        mass.varea("t", "lo", "hi", source=self.mass, color="#9467bd", alpha=0.3, legend_label="mean +- std")
        mass.line("t", "mean", source=self.mass, color="#9467bd", line_width=2, legend_label="mean")
        mass.line("t", "truth", source=self.mass, color="black", line_width=1.5, legend_label="truth")
        mass.legend.location = "bottom_right"
        mark = Span(location=0, dimension="height", line_color="#d62728", line_dash="dashed", visible=False)
        mass.add_layout(mark)
        self.time_marks.append(mark)
        self.figure = BokehModel(column(*figures, mass))
        self.state.observe(lambda _: self.refresh(), "posterior")
        self.state.observe(lambda _: self.refresh_selected(), "selected_draw")
        super().__init__([w.HTML("<h3>Posterior</h3>"), self.summary, self.draw, self.figure])
        self.refresh()

    def _tapped(self, _attr, _old, new) -> None:
        if len(new):
            draw = int(self.draws["sfh"].data["draw"][new[0]])
            self.state.selected_draw = draw
            self.state.history_kind = "draw"

    def refresh(self) -> None:
        posterior, galaxy = self.state.posterior, self.state.galaxy
        if posterior is None:
            for source in (*self.bands.values(), *self.draws.values(), *self.truth.values(), *self.firefly.values(),
                           *self.selected.values(), self.mass):
                source.data = {k: [] for k in source.data}
            self.draw.disabled, self.draw.max, self.summary.value = True, -1, "no posterior yet"
            for mark in self.time_marks:
                mark.visible = False
            return
        kept, edges, tb = posterior.samples(), posterior.time_bins.edges, posterior.time_bins
        for name, data in history_bands(kept, edges).items():
            self.bands[name].data = data
        shown = np.linspace(0, len(kept) - 1, min(MAX_DRAWS_SHOWN, len(kept))).round().astype(int)
        for c, (name, _, _) in enumerate(CHANNELS):
            x, ys = stairs_xy(edges, kept[shown, c])
            self.draws[name].data = dict(xs=[x] * len(shown), ys=list(ys), draw=shown.tolist())
        truth = posterior.true_history()
        for c, (name, _, _) in enumerate(CHANNELS):
            self.truth[name].data = dict(zip(("x", "y"), stairs_xy(edges, truth[c]))) if truth is not None \
                else dict(x=[], y=[])
        firefly = getattr(galaxy, "firefly", None)
        reference = firefly.history(tb, posterior.age_at_z_gyr) if firefly is not None else None
        for c, (name, _, _) in enumerate(CHANNELS):
            if reference is None:
                self.firefly[name].data = dict(x=[], y=[])
            else:
                has = np.isfinite(reference[1]) & (reference[0] > 0)
                self.firefly[name].data = dict(x=tb.centers[has], y=reference[c][has])
        cumulative = np.cumsum(formed_mass_per_bin_msun(kept, tb), axis=-1)
        true_cumulative = (np.cumsum(formed_mass_per_bin_msun(truth[None], tb), axis=-1)[0] if truth is not None
                           else np.full(tb.n_bins, np.nan))
        mean, std = cumulative.mean(0), cumulative.std(0)
        floor = 1e-3 * mean[-1]                                # a log axis cannot show zero
        self.mass.data = dict(t=edges[1:], mean=np.maximum(mean, floor), lo=np.maximum(mean - std, floor),
                              hi=np.maximum(mean + std, floor), truth=np.maximum(true_cumulative, floor))
        for mark in self.time_marks:
            mark.location, mark.visible = posterior.age_at_z_gyr, True
        with self.draw.hold_trait_notifications():
            self.draw.min, self.draw.max, self.draw.disabled = -1, len(kept) - 1, False
        s = posterior.summary()
        parts = [f"{k.replace('_', ' ')} {v['mean']:.3g} +- {v['std']:.2g}" for k, v in s.items()
                 if k in ("log10_formed_mass", "log10_surviving_mass", "mass_weighted_age_gyr", "t50_gyr",
                          "mass_weighted_logz")]
        self.summary.value = (f"{len(kept)} kept draws; median chi^2 per pixel {posterior.median_chi2_per_pixel():.2f}"
                              f"<br>{'; '.join(parts)}{warnings_html(posterior.warnings())}")
        self.refresh_selected()

    def refresh_selected(self) -> None:
        posterior, i = self.state.posterior, self.state.selected_draw
        for c, (name, _, _) in enumerate(CHANNELS):
            if posterior is None or not 0 <= i < int(posterior.kept.sum()):
                self.selected[name].data = dict(x=[], y=[])
            else:
                x, y = stairs_xy(posterior.time_bins.edges, posterior.samples()[i, c])
                self.selected[name].data = dict(x=x, y=y)
