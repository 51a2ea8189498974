"""sfhkit.widgets: ipywidgets + bokeh panels for notebooks and the Voila app.

    >>> from sfhkit.widgets import Explorer, setup_notebook
    >>> setup_notebook()          # BokehJS from the installed package, so it works offline
    >>> Explorer()                # pick a galaxy, move A_V, sample, explore, save

Every panel works alone on its own `ExplorerState` or composed on a shared one.  The panels use
only sfhkit's public API; the core (sfhkit/) never imports this package.
"""

from ._common import setup_notebook
from .explorer import Explorer
from .model import ModelPanel
from .picker import GalaxyPicker
from .posterior import PosteriorPanel
from .sampler import SamplerPanel
from .sandbox import SandboxPanel
from .save import SavePanel
from .state import ExplorerState
from .zoom import ZoomPanel

__all__ = ["Explorer", "ExplorerState", "GalaxyPicker", "ModelPanel", "PosteriorPanel", "SamplerPanel", "SandboxPanel", "SavePanel",
           "ZoomPanel", "setup_notebook"]
