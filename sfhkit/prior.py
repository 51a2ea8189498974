"""The score-based prior over (2, 64) star-formation + metallicity histories.

`Prior` wraps score_models (0.5.x): a network (score_models' NCSNpp or MLP) inside a
`score_models.ScoreModel` with the paper's variance-exploding SDE (sigma_min 1e-3, sigma_max 16).
The rest of sfhkit talks only to `Prior`: it takes and returns *physical* histories (SFR in
Msun/yr, log10 Z/Zsun) and exposes the normalised space the diffusion runs in for the sampler.

The normalisation lives with the network and travels in its checkpoint (`HistoryTransform`):

* "zscore" (the paper): each channel and time bin z-scored with the training set's mean and std;
* "asinh" (default, ours): SFR -> asinh(SFR / s) with s = `sfr_scale` Msun/yr, 1e-3 unless set
  (about one TNG50 star particle per 215 Myr bin: log-like down to the simulation's resolution,
  linear through zero, so empty bins are fine; the first default, 0.1, made draws too bursty) and
  log Z clipped to the SSP grid's range [-2.5, 0.5]
  (the 1e-11 of empty bins carries no light), then z-scored per channel and bin.

Checkpoints are single files read with torch.load(weights_only=True): tensors, numbers and
strings only, never pickled code.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._io import load_torch, save_torch
from ._version import __version__
from .sampler import DEFAULT_INTEGRATOR

SIGMA_MIN = 1e-3
SIGMA_MAX = 16.0
N_CHANNELS, N_BINS = 2, 64
LOGZ_RANGE = (-2.5, 0.5)          # the SSP grid's metallicity range (log10 Z/Zsun)
ASINH_SFR_SCALE = 1e-3            # Msun/yr, for new transforms
LEGACY_SFR_SCALE = 0.1            # Msun/yr, of checkpoints written before sfr_scale was recorded
MAX_SFR = 1e4                     # Msun/yr; "asinh" histories are capped here (no overflow far out in the noise)
# Prior.sample's Langevin corrector (sfhkit.sampler): signal-to-noise 0.25 at noise levels above 0.1
# (normalised units), where the coarse structure (formed mass, metallicity) is set; below, plain
# Euler-Maruyama keeps the bin-to-bin scatter right.  Chosen by measurement (README, "The prior").
CORRECTOR_SNR = 0.25
CORRECTOR_ABOVE_SIGMA = 0.1
CHECKPOINT_FORMAT = "sfhkit prior"
CHECKPOINT_VERSION = 1

# The paper's NCSNpp (1-D, two channels over 64 bins) and score_models' MLP.  The embedded default
# is a small NCSNpp (NCSNPP_SMALL: nf 16, no attention), chosen over the MLP by held-out calibration
# and a two-sample classifier (README, "The prior").  Hyperparameters go to the score_models constructors.
ARCHITECTURES = {
    "ncsnpp": {"channels": N_CHANNELS, "dimensions": 1, "nf": 64, "ch_mult": [1, 2, 2, 4]},
    "mlp": {"dimensions": N_CHANNELS * N_BINS, "units": 512, "layers": 4, "time_embedding_dimensions": 64},
}
# The embedded default's network: 134,334 parameters, trainable on one CPU core (about 2 min per
# epoch of 100,000 histories).  `sfhkit prior train --arch ncsnpp --hyperparameters '<this as JSON>'`.
NCSNPP_SMALL = {"nf": 16, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attention": False}


class HistoryTransform(nn.Module):
    """Physical histories (..., 2, 64) <-> the normalised space of the diffusion."""

    KINDS = ("asinh", "zscore")

    def __init__(self, kind: str = "asinh", mean=None, std=None, sfr_scale: float = ASINH_SFR_SCALE,
                 covariance=None):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"transform kind must be one of {self.KINDS}, got {kind!r}")
        if not (math.isfinite(sfr_scale) and sfr_scale > 0):
            raise ValueError(f"sfr_scale must be a positive SFR in Msun/yr, got {sfr_scale}")
        self.kind = kind
        self.sfr_scale = float(sfr_scale)
        self.register_buffer("mean", torch.zeros(N_CHANNELS, N_BINS) if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("std", torch.ones(N_CHANNELS, N_BINS) if std is None else torch.as_tensor(std).float())
        # Covariance of the normalised training histories, flattened channel-major (SFR bins, then
        # log Z bins): the Gaussian the Jacobian CLA takes for p(x0 | x_t) (sfhkit.likelihood).
        # Identity when unknown (checkpoints written before it was recorded): the unit-variance,
        # uncorrelated Gaussian the CLA assumed before.
        dim = self.mean.numel()
        covariance = torch.eye(dim) if covariance is None else torch.as_tensor(covariance).float()
        if covariance.shape != (dim, dim):
            raise ValueError(f"covariance must be ({dim}, {dim}), got {tuple(covariance.shape)}")
        self.register_buffer("covariance", covariance)

    def _forward_map(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "zscore":
            return h
        sfr = torch.asinh(h[..., 0, :] / self.sfr_scale)
        logz = h[..., 1, :].clamp(*LOGZ_RANGE)
        return torch.stack([sfr, logz], dim=-2)

    @classmethod
    def fit(cls, histories, kind: str = "asinh", sfr_scale: float = ASINH_SFR_SCALE) -> "HistoryTransform":
        """Statistics of the mapped training histories: mean and std per channel and bin, and the
        covariance of the normalised histories (`with_covariance_of`)."""
        t = cls(kind, sfr_scale=sfr_scale)
        mapped = t._forward_map(torch.as_tensor(np.asarray(histories), dtype=torch.float64))
        std = mapped.std(dim=0)
        t = cls(kind, mapped.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std)), sfr_scale)
        return t.with_covariance_of(histories)

    def with_covariance_of(self, histories) -> "HistoryTransform":
        """The same transform, with the covariance of `histories` (n, 2, 64) in its normalised space
        (for a checkpoint trained before the covariance was recorded: pass its training histories)."""
        x = self.normalise(torch.as_tensor(np.asarray(histories), dtype=torch.float64)).flatten(1).double()
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 histories for a covariance, got {x.shape[0]}")
        covariance = torch.cov(x.T)
        return type(self)(self.kind, self.mean, self.std, self.sfr_scale, covariance)

    @classmethod
    def from_state(cls, state: dict) -> "HistoryTransform":
        """Inverse of `state()`; checkpoints written before sfr_scale existed used 0.1 Msun/yr, and
        those written before the covariance was recorded get the identity."""
        return cls(state["kind"], state["mean"], state["std"], float(state.get("sfr_scale", LEGACY_SFR_SCALE)),
                   state.get("covariance"))

    def normalise(self, histories: torch.Tensor) -> torch.Tensor:
        h = torch.as_tensor(histories, dtype=self.mean.dtype, device=self.mean.device)
        return (self._forward_map(h) - self.mean) / self.std

    def physical(self, x: torch.Tensor, clip_sfr: bool = True) -> torch.Tensor:
        """Back to SFR (Msun/yr, clipped at 0 unless `clip_sfr` is False, as the sampler needs for
        informative gradients) and log10 Z/Zsun (clipped to the grid's range for "asinh", whose
        forward map clips it too)."""
        y = x * self.std + self.mean
        sfr, logz = y[..., 0, :], y[..., 1, :]
        if self.kind == "asinh":
            limit = math.asinh(MAX_SFR / self.sfr_scale)
            sfr = torch.sinh(sfr.clamp(-limit, limit)) * self.sfr_scale
            logz = logz.clamp(*LOGZ_RANGE)
        return torch.stack([sfr.clamp(min=0.0) if clip_sfr else sfr, logz], dim=-2)

    def physical_derivative(self, x: torch.Tensor) -> torch.Tensor:
        """d physical / d x element by element (the map acts on each number alone), taken at the
        nearest point of the range where `physical` is not clipped: at SFR 0 below it and at
        MAX_SFR above it (one-sided), and log Z's slope outside the grid's range.  The true
        derivative is zero there, and a Gauss-Newton step linearised with it cannot move a bin that
        the noise put at a clip: a bin at the SFR cap stays at the cap (sfhkit.likelihood)."""
        if self.kind == "zscore":
            return self.std.expand_as(x)
        y_sfr = x[..., 0, :] * self.std[0] + self.mean[0]
        limit = math.asinh(MAX_SFR / self.sfr_scale)
        d_sfr = self.std[0] * self.sfr_scale * torch.cosh(y_sfr.clamp(0.0, limit))
        return torch.stack([d_sfr, self.std[1].expand_as(d_sfr)], dim=-2)

    def state(self) -> dict:
        return {"kind": self.kind, "mean": self.mean.detach().cpu(), "std": self.std.detach().cpu(),
                "sfr_scale": self.sfr_scale, "covariance": self.covariance.detach().cpu()}


class _FlatMLP(nn.Module):
    """score_models' MLP acting on (B, 2, 64) histories (it wants flat vectors), with the input
    scaled by c_in = 1 / sqrt(1 + sigma(t)^2) (Karras et al. 2022) so that the network sees inputs
    of unit scale at every noise level (data are z-scored, so their own scale is about 1)."""

    def __init__(self, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, **hyperparameters):
        super().__init__()
        from score_models import MLP

        self.net = MLP(**hyperparameters)
        self.hyperparameters = self.net.hyperparameters
        self.log_sigma_min, self.log_sigma_max = math.log(sigma_min), math.log(sigma_max)

    def forward(self, t, x):
        sigma = torch.exp(self.log_sigma_min + t * (self.log_sigma_max - self.log_sigma_min)).view(-1, 1)
        return self.net(t, x.flatten(1) / torch.sqrt(1 + sigma**2)).view_as(x)


def build_network(architecture: str, hyperparameters: dict | None = None, sigma_min: float = SIGMA_MIN,
                  sigma_max: float = SIGMA_MAX) -> nn.Module:
    """The score network: 'ncsnpp' (the paper's, or the default's NCSNPP_SMALL through
    `hyperparameters`) or 'mlp', with optional overrides."""
    from score_models import NCSNpp

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
    params = {**ARCHITECTURES[architecture], **(hyperparameters or {})}
    if architecture == "ncsnpp":
        return NCSNpp(**params)
    return _FlatMLP(sigma_min, sigma_max, **params)


class Prior:
    """Score-based prior over histories: `sample`, `score`, `save`/`load`, `default()`.

    `prior.sample(n)` returns physical histories (n, 2, 64); `prior.score(t, x)` is the score of
    the diffused distribution in the normalised space at diffusion time t in [0, 1]
    (noise level `prior.sigma(t)`); `prior.transform` maps between the two spaces.
    """

    def __init__(self, architecture: str = "mlp", hyperparameters: dict | None = None,
                 transform: HistoryTransform | None = None, sigma_min: float = SIGMA_MIN,
                 sigma_max: float = SIGMA_MAX, device: str | torch.device = "cpu"):
        from score_models import ScoreModel

        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.architecture = architecture
        self.hyperparameters = {**ARCHITECTURES.get(architecture, {}), **(hyperparameters or {})}
        self.device = torch.device(device)
        self.network = build_network(architecture, hyperparameters, sigma_min, sigma_max)
        self.model = ScoreModel(model=self.network, sde="ve", sigma_min=sigma_min, sigma_max=sigma_max,
                                device=self.device)
        self.transform = (transform or HistoryTransform()).to(self.device)
        self.training_info: dict = {}

    # -- the diffusion --------------------------------------------------------------------------
    event_shape = (N_CHANNELS, N_BINS)

    @property
    def sde(self):
        return self.model.sde

    @property
    def sigma_max(self) -> float:
        return float(self.sde.sigma_max)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level sigma(t) = sigma_min (sigma_max / sigma_min)^t of the diffusion."""
        return self.sde.sigma(t)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) = sqrt(d sigma^2 / dt) of the VE SDE, shape (B,)."""
        return self.sde.diffusion(t, t.view(-1, 1)).view(-1)

    def score(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Score of the diffused prior in the normalised space, for x (B, 2, 64) at times t (B,)."""
        return self.model.score(t, x)

    def loss(self, x_normalised: torch.Tensor) -> torch.Tensor:
        """Denoising score-matching loss (score_models') on a batch of normalised histories."""
        return self.model.loss_fn(x_normalised)

    @torch.no_grad()
    def sample_normalised(self, n: int, steps: int = 500, *, corrector_snr: float = CORRECTOR_SNR,
                          corrector_above_sigma: float = CORRECTOR_ABOVE_SIGMA, seed: int | None = None,
                          progress: bool = True, batch_size: int = 4096,
                          integrator: str = DEFAULT_INTEGRATOR) -> torch.Tensor:
        """Draws in the normalised space: the reverse VE SDE from t = 1 to t = 0 with ancestral
        steps (or the paper's Euler-Maruyama), those that end above the noise level
        `corrector_above_sigma` followed by a Langevin corrector step of signal-to-noise
        `corrector_snr` (0: none); `sfhkit.sampler.reverse_diffusion`."""
        from tqdm.auto import tqdm

        from .sampler import make_generator, reverse_diffusion

        if n < 1 or steps < 1:
            raise ValueError(f"need n >= 1 and steps >= 1, got n={n}, steps={steps}")
        generator = make_generator(seed, self.device)
        self.network.eval()
        with tqdm(total=n * steps, desc="prior samples", unit="step", unit_scale=True, disable=not progress) as bar:
            x = torch.cat([reverse_diffusion(self, min(batch_size, n - start), steps, generator=generator,
                                             progress_bar=bar, corrector_snr=corrector_snr,
                                             corrector_above_sigma=corrector_above_sigma, integrator=integrator)
                           for start in range(0, n, batch_size)])
        if not torch.isfinite(x).all():
            warnings.warn(f"{int((~torch.isfinite(x)).any(-1).any(-1).sum())} of {n} prior draws are not finite "
                          f"(sampling diverged); try more steps", RuntimeWarning, stacklevel=2)
        return x

    def sample(self, n: int, steps: int = 500, *, corrector_snr: float = CORRECTOR_SNR,
               corrector_above_sigma: float = CORRECTOR_ABOVE_SIGMA, seed: int | None = None,
               progress: bool = True, integrator: str = DEFAULT_INTEGRATOR) -> torch.Tensor:
        """n physical histories (n, 2, 64) on the prior's device: SFR in Msun/yr, log10 Z/Zsun
        (`sample_normalised` for the sampler's settings)."""
        return self.transform.physical(self.sample_normalised(
            n, steps, corrector_snr=corrector_snr, corrector_above_sigma=corrector_above_sigma, seed=seed,
            progress=progress, integrator=integrator))

    def to(self, device) -> "Prior":
        self.device = torch.device(device)
        self.model.to(self.device)
        self.model.device = self.device
        self.transform.to(self.device)
        return self

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        """Everything needed to rebuild this prior: tensors, numbers and strings only."""
        return {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "sfhkit_version": __version__,
                "architecture": self.architecture, "hyperparameters": json.dumps(self.hyperparameters),
                "sigma_min": float(self.sde.sigma_min), "sigma_max": float(self.sde.sigma_max),
                "transform": self.transform.state(),
                "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
                "training_info": json.dumps(self.training_info)}

    def save(self, path) -> Path:
        """Write the checkpoint atomically (temporary file, then rename)."""
        return save_torch(self.checkpoint(), path)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device="cpu", source: str = "checkpoint") -> "Prior":
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{source} is not an sfhkit prior checkpoint")
        if ckpt.get("format_version") != CHECKPOINT_VERSION:
            raise ValueError(f"{source} has checkpoint format {ckpt.get('format_version')}; this sfhkit "
                             f"({__version__}) reads format {CHECKPOINT_VERSION}")
        try:
            transform = HistoryTransform.from_state(ckpt["transform"])
            prior = cls(ckpt["architecture"], json.loads(ckpt["hyperparameters"]), transform,
                        ckpt["sigma_min"], ckpt["sigma_max"], device)
            prior.network.load_state_dict(ckpt["state_dict"], strict=True)
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"{source} does not match this sfhkit's prior code ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:300]})") from err
        prior.training_info = json.loads(ckpt.get("training_info", "{}"))
        return prior

    @classmethod
    def load(cls, path, device="cpu") -> "Prior":
        """Load a checkpoint written by `save` (safe: torch.load with weights_only=True)."""
        return cls.from_checkpoint(load_torch(path), device, source=str(path))

    @classmethod
    def default(cls, device="cpu") -> "Prior":
        """The embedded default prior (data/prior_default.pt), trained on the synthetic stand-in."""
        from .data.embedded import embedded_path

        path = embedded_path(DEFAULT_CHECKPOINT)
        if not path.exists():
            raise FileNotFoundError(f"the embedded prior checkpoint {path} is missing from this installation")
        return cls.load(path, device)

    def __repr__(self) -> str:
        n_params = sum(p.numel() for p in self.network.parameters())
        return (f"Prior(architecture={self.architecture!r}, parameters={n_params}, transform={self.transform.kind!r}, "
                f"sigma=[{self.sde.sigma_min:g}, {self.sde.sigma_max:g}], device={str(self.device)!r})")


DEFAULT_CHECKPOINT = "prior_default.pt"
