"""The Explorer: every panel on one shared state, top to bottom in the order of the work
(pick a galaxy, look at the model, sample, explore the posterior, zoom on lines, save)."""

from __future__ import annotations

import ipywidgets as w

from .model import ModelPanel
from .picker import GalaxyPicker
from .posterior import PosteriorPanel
from .sampler import SamplerPanel
from .save import SavePanel
from .state import ExplorerState
from .zoom import ZoomPanel


class Explorer(w.VBox):
    """All panels composed; `picker_options` and `sampler_options` go to the galaxy picker and the
    sampler panel (e.g. small settings for a demo)."""

    def __init__(self, state: ExplorerState | None = None, *, picker_options: dict | None = None,
                 sampler_options: dict | None = None, save_folder: str | None = None):
        self.state = state if state is not None else ExplorerState()
        self.picker = GalaxyPicker(self.state, **(picker_options or {}))
        self.model = ModelPanel(self.state)
        self.sampler = SamplerPanel(self.state, **(sampler_options or {}))
        self.posterior = PosteriorPanel(self.state)
        self.zoom = ZoomPanel(self.state)
        self.save = SavePanel(self.state, folder=save_folder)
        self.status = w.HTML("")
        self.state.observe(lambda change: setattr(self.status, "value", f"<i>{change['new']}</i>"), "status")
        super().__init__([w.HTML("<h2>sfhkit explorer</h2>"), self.status, self.picker, self.model, self.sampler,
                          self.posterior, self.zoom, self.save])
