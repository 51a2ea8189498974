"""Sampler panel: draws, steps, likelihood, device (the GPU when there is one), Start and Cancel,
a progress bar with the time left.  Sampling runs in a background thread, so the other controls
stay live; the posterior lands in the shared state when done, and errors are shown here."""

from __future__ import annotations

import threading
import time

import ipywidgets as w
import torch

from sfhkit import SamplingCancelled, sample_posterior

from ._common import BackgroundTask, error_html
from .state import ExplorerState


def available_devices() -> list[str]:
    return (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]


class SamplerPanel(w.VBox):
    def __init__(self, state: ExplorerState | None = None, *, n: int = 120, keep: int | None = None, steps: int = 250,
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
        self.start_button = w.Button(description="Start", button_style="success", icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="sampling")
        self.eta = w.Label("")
        self.message = w.HTML("")
        self.error = None                  # the last exception, also shown in `message`
        self.task = None
        self._cancel = threading.Event()
        self._models = {}                  # (galaxy label, z, line spread) -> ForwardModel: a build takes seconds
        self.start_button.on_click(lambda _: self.start())
        self.cancel_button.on_click(lambda _: self.cancel())
        super().__init__([w.HTML("<h3>Sampler</h3>"), w.HBox([self.n, self.keep, self.steps]),
                          w.HBox([self.likelihood, self.device, self.seed]),
                          w.HBox([self.start_button, self.cancel_button, self.progress, self.eta]), self.message])

    def _forward_model(self, observation, device):
        galaxy = self.state.galaxy
        line_spread = observation.line_spread()
        key = (galaxy.label, observation.redshift, repr(line_spread), str(device))
        if key not in self._models:
            mock_model = galaxy.forward_model
            if (mock_model is not None and line_spread is None and mock_model.redshift == observation.redshift
                    and str(mock_model.device_) == str(torch.device(device))):
                self._models[key] = mock_model          # the model the mock was made with
            else:
                self.message.value = "building the forward model at this redshift and line spread ..."
                self._models[key] = observation.forward_model(self.state.ssp_grid(), device=device)
        return self._models[key]

    def _run(self, observation, settings):
        device = settings.pop("device")
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

        return sample_posterior(observation, prior, model, callback=progress, cancel=self._cancel,
                                progress=False, **settings)

    def start(self, wait: bool = False) -> None:
        """Sample the posterior of the state's observation as the controls set it."""
        if self.task is not None and self.task.running:
            return
        self.error = None
        try:
            observation = self.state.fit_observation()
            if self.keep.value > self.n.value:
                raise ValueError(f"keep ({self.keep.value}) must not exceed the number of draws ({self.n.value})")
        except ValueError as err:
            self._failed(err)
            return
        settings = dict(n=self.n.value, keep=self.keep.value, steps=self.steps.value, likelihood=self.likelihood.value,
                        seed=self.seed.value, device=self.device.value)
        self._cancel.clear()
        self.start_button.disabled, self.cancel_button.disabled = True, False
        self.progress.value, self.eta.value = 0, ""
        self.task = BackgroundTask(lambda: self._run(observation, settings), self._done, self._failed).start()
        if wait:
            self.task.join()

    def cancel(self) -> None:
        self._cancel.set()

    def _done(self, posterior) -> None:
        self.state.posterior = posterior
        if self.state.history_kind == "truth" and self.state.galaxy.true_history is None:
            self.state.history_kind = "median"
        self.message.value = (f"done in {posterior.config['seconds']:.1f} s: {int(posterior.kept.sum())} draws kept, "
                              f"median chi^2 per pixel {posterior.median_chi2_per_pixel():.2f}")
        self.state.status = "posterior ready"
        self.start_button.disabled, self.cancel_button.disabled = False, True

    def _failed(self, err) -> None:
        self.error = err
        if isinstance(err, SamplingCancelled):
            self.message.value = f"cancelled ({err}); the previous posterior is kept"
        else:
            self.message.value = error_html(f"{type(err).__name__}: {err}")
        self.state.status = f"sampling stopped: {err}"
        self.start_button.disabled, self.cancel_button.disabled = False, True
