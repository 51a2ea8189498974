"""Save: the posterior as NetCDF (readable with `sfhkit.Posterior.load` or xarray) and the paper's
figures (`sfhkit.plots.plot_posterior`) as PNG and SVG."""

from __future__ import annotations

import os
from pathlib import Path

import ipywidgets as w

from sfhkit.plots import DEFAULT_ZOOM_LINES, plot_posterior

from ._common import BackgroundTask, error_html
from .state import ExplorerState


class SavePanel(w.VBox):
    def __init__(self, state: ExplorerState | None = None, *, folder: str | None = None):
        folder = folder or os.environ.get("SFHKIT_OUTPUT_DIR", "outputs/explorer")   # `sfhkit app --out`
        self.state = state if state is not None else ExplorerState()
        self.folder = w.Text(value=folder, description="folder")
        self.formats = w.SelectMultiple(options=["NetCDF", "PNG", "SVG"], value=["NetCDF", "PNG", "SVG"],
                                        description="save", rows=3)
        self.save_button = w.Button(description="Save", icon="save")
        self.message = w.HTML("")
        self.saved = []                      # paths written by the last save
        self.task = None
        self.save_button.on_click(lambda _: self.save())
        super().__init__([w.HTML("<h3>Save</h3>"), w.HBox([self.folder, self.formats, self.save_button]),
                          self.message])

    def _write(self):
        import matplotlib.pyplot as plt

        posterior = self.state.posterior
        folder = Path(self.folder.value).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        if "NetCDF" in self.formats.value:
            paths.append(posterior.save(folder / "posterior.nc"))
        figure_formats = [f.lower() for f in self.formats.value if f != "NetCDF"]
        if figure_formats:
            figure = plot_posterior(posterior, firefly=getattr(self.state.galaxy, "firefly", None),
                                    zoom_lines=DEFAULT_ZOOM_LINES)
            for suffix in figure_formats:
                figure.savefig(folder / f"posterior.{suffix}", dpi=110)
                paths.append(folder / f"posterior.{suffix}")
            plt.close(figure)
        return paths

    def save(self, wait: bool = False) -> None:
        if self.state.posterior is None:
            self.message.value = error_html("nothing to save yet: sample a posterior first")
            return
        self.save_button.disabled = True
        self.message.value = "saving ..."
        self.task = BackgroundTask(self._write, self._done, self._failed).start()
        if wait:
            self.task.join()

    def _done(self, paths) -> None:
        self.saved = [Path(p) for p in paths]
        self.message.value = "saved " + ", ".join(str(p) for p in self.saved)
        self.save_button.disabled = False

    def _failed(self, err) -> None:
        self.message.value = error_html(f"{type(err).__name__}: {err}")
        self.save_button.disabled = False
