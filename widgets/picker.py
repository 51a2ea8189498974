"""Galaxy picker: a test-set mock by index (its true history shown), a survey spectrum (SDSS by
plate-mjd-fiber, or a local SDSS/BOSS/eBOSS spec file or DESI coadd file with its TARGETID), a MaNGA spectrum (table row, LOGCUBE file or plate-IFU).  Redshift,
A_V and velocity dispersion come pre-filled from the files and FIREFLY where they exist."""

from __future__ import annotations

import ipywidgets as w
from bokeh.models import ColumnDataSource
from jupyter_bokeh import BokehModel

from sfhkit import TimeBins
from sfhkit.galaxies import MOCK_AV, MOCK_REDSHIFT, MOCK_SNR, manga_galaxy, mock_galaxy, spectrum_galaxy
from sfhkit.preview import SpectrumPreview

from ._common import BackgroundTask, error_html, new_figure, stairs_xy
from .state import ExplorerState

SOURCES = ("test-set mock", "survey spectrum", "MaNGA")


class GalaxyPicker(w.VBox):
    """Pick and load a galaxy into `state` (loading runs in the background: the first load reads
    the SSP grid, about 15 s; each load builds a forward model, a few seconds)."""

    def __init__(self, state: ExplorerState | None = None, *, firefly_dir: str = "", sdss: str = "",
                 manga_table: str = "", index: int = 2122):
        self.state = state if state is not None else ExplorerState()
        self.source = w.ToggleButtons(options=SOURCES, value=SOURCES[0], description="source")
        self.index = w.BoundedIntText(value=index, min=0, max=10 ** 6, description="test index")
        self.mock_redshift = w.BoundedFloatText(value=MOCK_REDSHIFT, min=0.001, max=1.0, step=0.01, description="z")
        self.mock_av = w.BoundedFloatText(value=MOCK_AV, min=0.0, max=4.0, step=0.05, description="A_V")
        self.mock_snr = w.BoundedFloatText(value=MOCK_SNR, min=1.0, max=1000.0, step=5, description="S/N")
        self.sdss = w.Text(value=sdss, placeholder="266-51602-614, path/to/spec-....fits or coadd-....fits",
                           description="spectrum")
        self.targetid = w.Text(placeholder="DESI TARGETID (coadd files)", description="TARGETID")
        self.firefly_dir = w.Text(value=firefly_dir, placeholder="folder of spFly-*.fits (optional)",
                                  description="FIREFLY")
        self.manga_table = w.Text(value=manga_table, placeholder="MaNGA spectra table or LOGCUBE file",
                                  description="file")
        self.manga_index = w.BoundedIntText(value=0, min=0, max=10 ** 6, description="row")
        self.plateifu = w.Text(placeholder="8485-1901 (downloads the LOGCUBE)", description="plate-IFU")
        self.manga_redshift = w.FloatText(value=0.0, description="z (cube)")
        self.ssp = w.Dropdown(options=[("BC03 + MILES", "bc03"), ("E-MILES", "emiles")], value="bc03",
                              description="SSP library")
        self.ssp_dir = w.Text(placeholder="E-MILES folder (FIREFLY's EMILES_SSP)", description="folder")
        self.load_button = w.Button(description="Load", button_style="primary", icon="download")
        self.message = w.HTML("")
        self.task = None

        self.true_source = ColumnDataSource(dict(x=[], y=[]), name="true_sfh")
        fig = new_figure("picker_true_sfh", "true star-formation history", "age of the universe [Gyr]",
                         "SFR [Msun/yr]", height=180, width=600)
        fig.line("x", "y", source=self.true_source, color="black", line_width=2)
        self.true_figure = BokehModel(fig)

        self._forms = {
            SOURCES[0]: w.HBox([self.index, self.mock_redshift, self.mock_av, self.mock_snr]),
            SOURCES[1]: w.VBox([self.sdss, self.targetid, self.firefly_dir]),
            SOURCES[2]: w.VBox([w.HBox([self.manga_table, self.manga_index]),
                                w.HBox([self.plateifu, self.manga_redshift])]),
        }
        self.form = w.VBox([self._forms[self.source.value]])
        self.source.observe(lambda change: setattr(self.form, "children", [self._forms[change["new"]]]), "value")
        self.load_button.on_click(lambda _: self.load())
        super().__init__([w.HTML("<h3>Galaxy</h3>"), self.source, self.form, w.HBox([self.ssp, self.ssp_dir]),
                          w.HBox([self.load_button, self.message]), self.true_figure])

    # -- loading --------------------------------------------------------------------------------
    def _read(self):
        """The Galaxy the form describes and its spectrum preview (runs in the background)."""
        kind = self.source.value
        self.state.use_ssp(self.ssp.value, (self.ssp_dir.value.strip() or None) if self.ssp.value == "emiles" else None)
        if kind == SOURCES[0]:
            galaxy = mock_galaxy(self.index.value, redshift=self.mock_redshift.value, av=self.mock_av.value,
                                 snr=self.mock_snr.value, grid=self.state.ssp_grid(), progress=False)
        elif kind == SOURCES[1]:
            if not self.sdss.value.strip():
                raise ValueError("type an SDSS plate-mjd-fiber or the path of a spec-*.fits or DESI coadd file")
            target = self.targetid.value.strip()
            if target and not target.isdigit():
                raise ValueError(f"a DESI TARGETID is a whole number, not {target!r}")
            galaxy = spectrum_galaxy(self.sdss.value.strip(), firefly_dir=self.firefly_dir.value.strip() or None,
                                     **({"targetid": int(target)} if target else {}))
        else:
            path = self.manga_table.value.strip() or None
            is_cube = path is not None and "LOGCUBE" in path.upper()
            galaxy = manga_galaxy(table=None if is_cube else path, index=self.manga_index.value,
                                  logcube=path if is_cube else None, plateifu=self.plateifu.value.strip() or None,
                                  redshift=self.manga_redshift.value or None)
        return galaxy, SpectrumPreview(galaxy.observation, self.state.ssp_grid())

    def load(self, wait: bool = False) -> None:
        """Load what the form says; `wait=True` blocks until done (for scripts and tests)."""
        if self.task is not None and self.task.running:
            return
        self.load_button.disabled, self.state.loading = True, True
        self.message.value = "loading (the first load reads the SSP grid, about 15 s) ..."
        self.task = BackgroundTask(self._read, self._loaded, self._failed).start()
        if wait:
            self.task.join()

    def _loaded(self, result) -> None:
        galaxy, preview = result
        obs = galaxy.observation
        self.state.set_galaxy(galaxy, preview)
        if galaxy.true_history is not None:
            x, y = stairs_xy(TimeBins().edges, galaxy.true_history[0])
            self.true_source.data = dict(x=x, y=y)
        else:
            self.true_source.data = dict(x=[], y=[])
        self.true_figure.layout.display = None if galaxy.true_history is not None else "none"
        vdisp = f"{obs.velocity_dispersion_kms:.0f} km/s" if obs.velocity_dispersion_kms else "unknown"
        self.message.value = (f"<b>{galaxy.label}</b>: z = {obs.redshift:.5f}, A_V = {obs.av:.2f} "
                              f"({obs.metadata.get('av_source', '')}), sigma_v {vdisp}, {obs.n_used} usable pixels"
                              + (", FIREFLY fit found" if galaxy.firefly is not None else "")
                              + f"; SSPs: {self.state.ssp_grid().library}")
        self.state.status = f"loaded {galaxy.label}"
        self.load_button.disabled, self.state.loading = False, False

    def _failed(self, err) -> None:
        self.message.value = error_html(f"{type(err).__name__}: {err}")
        self.state.status = f"loading failed: {err}"
        self.load_button.disabled, self.state.loading = False, False

