"""Small pieces every panel uses: bokeh figures, step-plot coordinates, background work."""

from __future__ import annotations

import threading
import traceback

import ipywidgets as w
import numpy as np
from bokeh.plotting import figure

FIGURE_WIDTH = 900
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def setup_notebook() -> None:
    """Load BokehJS from the installed bokeh package (INLINE), not from a CDN: notebooks and the
    Voila app then work offline.  Call once at the top of a notebook."""
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(INLINE, hide_banner=True)


def new_figure(name: str, title: str, x_label: str, y_label: str, *, height: int = 260,
               width: int = FIGURE_WIDTH, tools: str = TOOLS, **kwargs):
    """A bokeh figure with a name (tests and the browser find it by that name)."""
    fig = figure(name=name, title=title, height=height, width=width, tools=tools, **kwargs)
    fig.xaxis.axis_label, fig.yaxis.axis_label = x_label, y_label
    fig.toolbar.logo = None
    return fig


def stairs_xy(edges, values):
    """Corner points of a stairs line over bins `edges` (n+1) with `values` (..., n): x (2n,) and
    y (..., 2n), for bokeh line, multi_line and varea glyphs."""
    edges = np.asarray(edges, dtype=float)
    return np.repeat(edges, 2)[1:-1], np.repeat(np.asarray(values, dtype=float), 2, axis=-1)


def error_html(message: str) -> str:
    return f"<span style='color:#b00020'><b>Error:</b> {message}</span>"


SEVERITY_COLOURS = {"warning": "#b00020", "caution": "#a05a00"}


def warnings_html(warnings: list[dict]) -> str:
    """The fit's warnings (Posterior.warnings()), one line each, coloured by severity; "" if none."""
    import html

    return "".join(f"<div class='sfhkit-warning' data-code='{w['code']}' style='color:{SEVERITY_COLOURS[w['severity']]}'>"
                   f"<b>{w['severity']}</b> [{w['code']}]: {html.escape(w['message'])}</div>" for w in warnings)


class BackgroundTask:
    """Runs fn() in a daemon thread; on_done(result) or on_error(exception) afterwards (from that
    thread: ipywidgets and bokeh updates from a thread reach the browser with ipykernel >= 6).
    The traceback of a failure is kept in `.traceback`."""

    def __init__(self, fn, on_done, on_error):
        self.fn, self.on_done, self.on_error = fn, on_done, on_error
        self.traceback = ""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            result = self.fn()
        except BaseException as err:  # noqa: BLE001 - every failure is shown in the panel
            self.traceback = traceback.format_exc()
            self.on_error(err)
            return
        self.on_done(result)

    def start(self) -> "BackgroundTask":
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

