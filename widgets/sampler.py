"""Sampler panel: draws, steps, likelihood, device (the GPU when there is one), the flux-calibration
polynomial's degree and whether A_V and sigma_v are inferred, Start and Cancel, a progress bar with the time
left.  Sampling runs in a background thread, so the other controls stay live; the posterior lands
in the shared state when done, and errors are shown here.

A real spectrum gets what `sfhkit infer` gives it: the polynomial at sfhkit.fluxcal's default
degree, and A_V inferred through the polynomial's shape (sfhkit.attenuation) where the spectrum
has no catalogue A_V, and sigma_v inferred with the history (sfhkit.dispersion) where it has no
catalogue sigma_v but a known instrumental resolution.  With "infer A_V" the fit starts from A_V = 0
whatever the slider says (a short first pass, then the full fit at its A_V), with "infer sigma_v" from no sigma_v; the sliders move to the inferred
medians when the posterior lands.  Mocks get neither.

A first look lands within seconds: a coarse posterior of a few draws at a few steps
(sfhkit.sampler.FIRST_LOOK_DRAWS, FIRST_LOOK_STEPS; with "infer A_V", its A_V inferred too) is
shown while the full run goes on, and replaced by it.  A cancelled or failed run puts back the
posterior shown before Start.  With "infer sigma_v" there is no first look: the instrument-only
model it would use has no stellar broadening.

Start is disabled until a galaxy is loaded and while one loads (a click then would sample the
galaxy before).  The forward model a fit needs (3-8 s to build for a real spectrum) is built in
the background as soon as a galaxy is in, so that Start does not wait for it unless the redshift
or sigma_v changed since."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import ipywidgets as w
import numpy as np
import torch

from sfhkit import SamplingCancelled, sample_posterior
from sfhkit.attenuation import first_pass_av, infer_av, should_infer_av
from sfhkit.dispersion import sample_with_vdisp, should_infer_vdisp
from sfhkit.fluxcal import default_degree
from sfhkit.sampler import DEFAULT_STEPS, FIRST_LOOK_DRAWS, FIRST_LOOK_STEPS, first_look

from ._common import BackgroundTask, error_html
from .state import ExplorerState


def available_devices() -> list[str]:
    return (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]


class SamplerPanel(w.VBox):
    def __init__(self, state: ExplorerState | None = None, *, n: int = 120, keep: int | None = None, steps: int = DEFAULT_STEPS,
                 seed: int = 0):
        self.state = state if state is not None else ExplorerState()
        self.n = w.BoundedIntText(value=n, min=2, max=100000, description="draws")
        # All draws by default (sfhkit.sampler.kept_draws); fewer keeps the best by residual.
        self.keep = w.BoundedIntText(value=n if keep is None else keep, min=1, max=100000, description="keep best")
        self.steps = w.BoundedIntText(value=steps, min=2, max=100000, description="steps")
        self.likelihood = w.Dropdown(options=[("CLA (convolved likelihood)", "cla"), ("DPS", "dps")], value="cla",
                                     description="likelihood")
        self.device = w.Dropdown(options=available_devices(), description="device")
        self.seed = w.IntText(value=seed, description="seed")
        self.calibration_degree = w.BoundedIntText(value=0, min=0, max=20, description="poly. degree",
                                                   tooltip="multiplicative flux-calibration polynomial (0: none)")
        self.infer_av = w.Checkbox(value=False, description="infer A_V (from the polynomial)", indent=False)
        self.infer_vdisp = w.Checkbox(value=False, description="infer sigma_v", indent=False)
        self.start_button = w.Button(description="Start", button_style="success", icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="sampling")
        self.eta = w.Label("")
        self.message = w.HTML("")
        self.error = None                  # the last exception, also shown in `message`
        self.task = None
        self._sampling = False             # from Start until the run ends (its callbacks run in its thread)
        self.first_look = None             # the coarse posterior of the last run, shown until the full one lands
        self._before_start = None          # the posterior shown before Start, put back if the run stops
        self._cancel = threading.Event()
        self._models = {}                  # (galaxy label, z, line spread) -> ForwardModel: a build takes seconds
        self._models_lock = threading.Lock()   # the prefetch and a run may ask for the same model
        self.prefetch = None               # the background build of the loaded galaxy's model
        self.start_button.on_click(lambda _: self.start())
        self.state.observe(lambda _: self.set_real_spectrum_defaults(), names="galaxy")
        self.state.observe(lambda _: self._prefetch_model(), names="galaxy")
        self.likelihood.observe(lambda _: self.set_real_spectrum_defaults(), names="value")
        self.set_real_spectrum_defaults()
        self.cancel_button.on_click(lambda _: self.cancel())
        self.state.observe(lambda _: self._enable_start(), names=["galaxy", "loading"])
        self._enable_start()
        super().__init__([w.HTML("<h3>Sampler</h3>"), w.HBox([self.n, self.keep, self.steps]),
                          w.HBox([self.likelihood, self.device, self.seed]),
                          w.HBox([self.calibration_degree, self.infer_av, self.infer_vdisp]),
                          w.HBox([self.start_button, self.cancel_button, self.progress, self.eta]), self.message])

    def set_real_spectrum_defaults(self) -> None:
        """The polynomial, A_V and sigma_v inference as `sfhkit infer` sets them for the loaded galaxy."""
        galaxy = self.state.galaxy
        if galaxy is None:
            return
        observation = galaxy.observation
        real = observation.metadata.get("kind") != "mock"
        self.calibration_degree.value = default_degree(self.likelihood.value) if real else 0
        self.infer_av.value = should_infer_av(observation, self.calibration_degree.value)
        self.infer_vdisp.value = real and should_infer_vdisp(observation)

    def _prefetch_model(self) -> None:
        """Build the model a fit of the newly loaded galaxy needs, in the background (errors are
        left for Start to report)."""
        if self.state.galaxy is None:
            return
        try:
            observation = self.state.fit_observation()
        except ValueError:
            return
        if self.infer_vdisp.value:
            observation = replace(observation, velocity_dispersion_kms=None, metadata=dict(observation.metadata))
        device = self.device.value

        def build():
            return self._forward_model(observation, self.state.prior(device).device, quiet=True)

        self.prefetch = BackgroundTask(build, lambda _: None, lambda _: None).start()

    def _forward_model(self, observation, device, quiet: bool = False):
        galaxy = self.state.galaxy
        line_spread = observation.line_spread()
        key = (galaxy.label, observation.redshift, repr(line_spread), str(device), self.state.ssp)
        with self._models_lock:
            return self._build_model(key, galaxy, observation, line_spread, device, quiet)

    def _build_model(self, key, galaxy, observation, line_spread, device, quiet):
        if key not in self._models:
            mock_model = galaxy.forward_model
            if (mock_model is not None and line_spread is None and mock_model.redshift == observation.redshift
                    and str(mock_model.device_) == str(torch.device(device))):
                self._models[key] = mock_model          # the model the mock was made with
            else:
                if not quiet:
                    self.message.value = "building the forward model at this redshift and line spread ..."
                self._models[key] = observation.forward_model(self.state.ssp_grid(), device=device)
        return self._models[key]

    def _run(self, observation, settings):
        device = settings.pop("device")
        inferring_av, inferring_vdisp = settings.pop("infer_av"), settings.pop("infer_vdisp")
        prior = self.state.prior(device)
        model = self._forward_model(observation, prior.device)
        self.message.value = "sampling ..."
        started = time.perf_counter()
        last = [0.0]

        def progress(step, steps):
            now = time.perf_counter()
            if step == steps or now - last[0] > 0.2:            # at most five redraws a second
                last[0] = now
                self.progress.max, self.progress.value = steps, step
                left = (now - started) / step * (steps - step)
                self.eta.value = f"{step}/{steps} steps, {left:.0f} s left"

        if not inferring_vdisp and (settings["steps"] > FIRST_LOOK_STEPS or settings["n"] > FIRST_LOOK_DRAWS):
            self._show_first_look(observation, prior, model, settings, inferring_av)
        if inferring_av and not inferring_vdisp:   # the full fit runs at the A_V of a short first pass
            self.message.value = "A_V: a short first pass ..."
            observation = first_pass_av(observation, prior, model, n=settings["n"], steps=settings["steps"],
                                        seed=settings["seed"], likelihood=settings["likelihood"],
                                        calibration_degree=settings["calibration_degree"], cancel=self._cancel)
            self.message.value = f"sampling at A_V = {observation.av:.2f} (the first pass's) ..."
        if inferring_vdisp:      # `model` is then the instrument-only one (the observation has no sigma_v)
            # with A_V inferred too, its short passes give the A_V the fit runs at
            self.message.value = "sigma_v" + (" and A_V" if inferring_av else "") + ": short passes ..."
            posterior = sample_with_vdisp(observation, prior, self.state.ssp_grid(), instrument_model=model,
                                          av_from_short_passes=inferring_av, callback=progress, cancel=self._cancel,
                                          progress=False, **settings)
        else:
            posterior = sample_posterior(observation, prior, model, callback=progress, cancel=self._cancel,
                                         progress=False, **settings)
        return infer_av(posterior, seed=settings["seed"]) if inferring_av else posterior

    def _show_first_look(self, observation, prior, model, settings, inferring_av: bool) -> None:
        """A coarse posterior (FIRST_LOOK_DRAWS draws, FIRST_LOOK_STEPS steps, all kept) into the state."""
        self.message.value = "first look ..."
        look = first_look(observation, prior, model, seed=settings["seed"], likelihood=settings["likelihood"],
                          calibration_degree=settings["calibration_degree"], cancel=self._cancel)
        self.first_look = infer_av(look, seed=settings["seed"]) if inferring_av else look
        self._show(self.first_look)
        self.state.status = (f"first look: {FIRST_LOOK_DRAWS} draws at {FIRST_LOOK_STEPS} steps "
                             f"({look.config['seconds']:.1f} s); the full run goes on")
        self.message.value = self.state.status

    def _show(self, posterior) -> None:
        """The posterior into the shared state; a galaxy without a true history then shows the median's model."""
        self.state.posterior = posterior
        if self.state.history_kind == "truth" and self.state.galaxy.true_history is None:
            self.state.history_kind = "median"

    def _enable_start(self) -> None:
        self.start_button.disabled = self._sampling or self.state.loading or self.state.galaxy is None

    def start(self, wait: bool = False) -> None:
        """Sample the posterior of the state's observation as the controls set it."""
        if self._sampling:
            return
        if self.state.loading:
            self.message.value = "a galaxy is loading: Start samples it once it is in"
            return
        self.error = None
        try:
            observation = self.state.fit_observation()
            if self.keep.value > self.n.value:
                raise ValueError(f"keep ({self.keep.value}) must not exceed the number of draws ({self.n.value})")
            if self.infer_av.value:
                if not self.calibration_degree.value:
                    raise ValueError("inferring A_V needs the flux-calibration polynomial (degree > 0)")
                observation = replace(observation, av=0.0, metadata=dict(observation.metadata))
            if self.infer_vdisp.value:
                if observation.instrument_sigma_kms is None:
                    raise ValueError("inferring sigma_v needs the spectrum's instrumental resolution; this one has none")
                observation = replace(observation, velocity_dispersion_kms=None, metadata=dict(observation.metadata))
        except ValueError as err:
            self._failed(err)
            return
        settings = dict(n=self.n.value, keep=self.keep.value, steps=self.steps.value, likelihood=self.likelihood.value,
                        seed=self.seed.value, device=self.device.value,
                        calibration_degree=self.calibration_degree.value, infer_av=self.infer_av.value,
                        infer_vdisp=self.infer_vdisp.value)
        self._cancel.clear()
        self.first_look, self._before_start = None, self.state.posterior
        self._sampling, self.cancel_button.disabled = True, False
        self._enable_start()
        self.progress.value, self.eta.value = 0, ""
        self.task = BackgroundTask(lambda: self._run(observation, settings), self._done, self._failed).start()
        if wait:
            self.task.join()

    def cancel(self) -> None:
        self._cancel.set()

    def _done(self, posterior) -> None:
        av_text = ""
        if posterior.av is not None:                # the model panel then shows the inferred attenuation
            kept_av = posterior.av[posterior.kept]
            self.state.av = float(np.median(kept_av))
            av_text = f"; A_V inferred {kept_av.mean():.2f} +- {kept_av.std():.2f} mag"
        if posterior.vdisp_kms is not None:         # and the inferred sigma_v
            kept_vdisp = posterior.vdisp_kms[posterior.kept]
            self.state.velocity_dispersion_kms = float(np.median(kept_vdisp))
            av_text += f"; sigma_v inferred {kept_vdisp.mean():.0f} +- {kept_vdisp.std():.0f} km/s"
        self._show(posterior)
        self.message.value = (f"done in {posterior.config['seconds']:.1f} s: {int(posterior.kept.sum())} draws kept, "
                              f"median chi^2 per pixel {posterior.median_chi2_per_pixel():.2f}{av_text}")
        self.state.status = "posterior ready"
        self._sampling, self.cancel_button.disabled = False, True
        self._enable_start()

    def _failed(self, err) -> None:
        self.error = err
        if self.first_look is not None and self.state.posterior is self.first_look:
            self.state.posterior = self._before_start      # the run stopped: its first look goes too
        if isinstance(err, SamplingCancelled):
            self.message.value = f"cancelled ({err}); the previous posterior is kept"
        else:
            self.message.value = error_html(f"{type(err).__name__}: {err}")
        self.state.status = f"sampling stopped: {err}"
        self._sampling, self.cancel_button.disabled = False, True
        self._enable_start()
