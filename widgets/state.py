"""What the panels share: the galaxy, the model settings, the masks, the posterior, the chosen draw.

`ExplorerState` is a traitlets object (the machinery ipywidgets use): a panel changes a trait and
every panel observing it redraws.  Panels never talk to each other directly, so each one works
alone on its own state or composed in the `Explorer` on a shared one.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np
import traitlets

from sfhkit.lines import apply_masks


class ExplorerState(traitlets.HasTraits):
    galaxy = traitlets.Any(None, allow_none=True)          # sfhkit.galaxies.Galaxy
    preview = traitlets.Any(None, allow_none=True)         # sfhkit.preview.SpectrumPreview of the galaxy
    posterior = traitlets.Any(None, allow_none=True)       # sfhkit.Posterior
    av = traitlets.Float(0.0)                              # Calzetti A_V, mag
    redshift = traitlets.Float(0.0)
    velocity_dispersion_kms = traitlets.Float(0.0)         # stellar sigma_v, km/s (0 = library resolution)
    mask_lines = traitlets.Bool(False)                     # emission lines and the three strongest Balmer lines
    mask_sky = traitlets.Bool(False)                       # night-sky lines (observed frame)
    mask_ranges = traitlets.List()                         # [(lo, hi)] observed-frame Angstrom
    history_kind = traitlets.Unicode("truth")              # what the model panel shows: truth | median | draw
    selected_draw = traitlets.Int(-1)                      # index into the posterior's kept draws, -1 = none
    status = traitlets.Unicode("")                         # one line for the user
    loading = traitlets.Bool(False)                        # the picker is reading a galaxy (in the background)

    def __init__(self, grid=None, prior=None, **kwargs):
        super().__init__(**kwargs)
        self._grid, self._prior = grid, prior
        self.ssp = ("bc03", None)        # (library, directory): sfhkit.ssp.library_grid
        self._lock = threading.Lock()
        self._last_model = None          # (settings, flux) of the last model_spectrum call

    def ssp_grid(self):
        """The SSP grid all panels share (read once, about 15 s; thread-safe)."""
        from sfhkit.ssp import library_grid

        with self._lock:
            if self._grid is None:
                self._grid = library_grid(*self.ssp, progress=False)
            return self._grid

    def use_ssp(self, library: str, path=None) -> None:
        """Switch the SSP library (read at the next `ssp_grid()`); the same one keeps its grid."""
        from sfhkit.ssp import SSP_LIBRARIES

        library = library.lower().replace("-", "")
        if library not in SSP_LIBRARIES:
            raise ValueError(f"unknown SSP library {library!r}; choose from {sorted(SSP_LIBRARIES)}")
        if library == "emiles" and not path:
            raise ValueError("E-MILES needs the folder of its SSP files")
        spec = (library, str(path) if path else None)
        with self._lock:
            if spec != self.ssp:
                self.ssp, self._grid = spec, None

    def prior(self, device="cpu"):
        """The prior all panels share (the embedded default unless one was given), on `device`."""
        from sfhkit import Prior

        with self._lock:
            if self._prior is None:
                self._prior = Prior.default(device)
            elif str(self._prior.device) != str(device):
                self._prior.to(device)
            return self._prior

    def set_galaxy(self, galaxy, preview) -> None:
        """A newly loaded galaxy: its settings become the controls' values, the old posterior goes."""
        obs = galaxy.observation
        with self.hold_trait_notifications():
            self.posterior = None
            self.selected_draw = -1
            self.mask_ranges = []
            self.mask_lines = obs.metadata.get("kind") != "mock"
            self.mask_sky = obs.metadata.get("kind") not in ("mock", "manga")
            self.av = float(obs.av)
            self.redshift = float(obs.redshift)
            self.velocity_dispersion_kms = float(obs.velocity_dispersion_kms or 0.0)
            self.history_kind = "truth" if galaxy.true_history is not None else "median"
            self.preview = preview
            self.galaxy = galaxy

    def fit_observation(self):
        """The observation as the controls set it: A_V, redshift, sigma_v and masks applied."""
        if self.galaxy is None:
            raise ValueError("no galaxy loaded yet")
        obs = self.galaxy.observation
        # the slider's sigma_v, as the model panel shows it (0: instrument and library resolution only)
        obs = replace(obs, av=self.av, redshift=self.redshift,
                      velocity_dispersion_kms=self.velocity_dispersion_kms or None, metadata=dict(obs.metadata))
        if self.mask_lines or self.mask_sky or self.mask_ranges:
            obs = apply_masks(obs, lines=self.mask_lines, sky=self.mask_sky, ranges=list(self.mask_ranges))
        return obs

    def current_history(self):
        """The (2, 64) history the model panel shows, or None when there is none of that kind."""
        if self.history_kind == "truth" and self.galaxy is not None:
            return self.galaxy.true_history
        if self.posterior is None:
            return None
        kept = self.posterior.samples()
        if self.history_kind == "draw" and 0 <= self.selected_draw < len(kept):
            return kept[self.selected_draw]
        return np.median(kept, axis=0)

    def model_spectrum(self, history) -> np.ndarray:
        """The preview's model flux of `history` at the controls' A_V, redshift and sigma_v.  The
        last result is kept, so the panels that redraw on one slider move share one computation."""
        key = (np.asarray(history, dtype=float).tobytes(), self.av, self.redshift, self.velocity_dispersion_kms,
               id(self.preview))
        if self._last_model is None or self._last_model[0] != key:
            flux = self.preview.spectrum(history, av=self.av, redshift=self.redshift,
                                         velocity_dispersion_kms=self.velocity_dispersion_kms)
            self._last_model = (key, flux)
        return self._last_model[1]

    def add_mask_range(self, lo: float, hi: float) -> None:
        lo, hi = sorted((float(lo), float(hi)))
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            raise ValueError(f"a mask range needs two different finite wavelengths, got {lo}, {hi}")
        # rounded outwards to 0.01 A, so the pixels at both ends stay inside
        self.mask_ranges = [*self.mask_ranges, (math.floor(lo * 100) / 100, math.ceil(hi * 100) / 100)]
