"""Training the prior: denoising score matching with Adam and an exponential moving average (EMA)
of the weights, periodic checkpoints, resume after interruption, a seed, and a loss log.

Everything of a run lives in one folder:

    state.pt    the full training state (network, EMA, optimiser, epoch, config), for resuming
    prior.pt    the EMA weights as a `Prior` checkpoint (what you sample from)
    loss.csv    epoch, mean training loss, seconds since the run began

Randomness is keyed by (seed, epoch): a run killed after any checkpoint and resumed gives the
same weights as one that was never interrupted (tested on CPU).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._io import load_torch, save_torch
from .prior import ASINH_SFR_SCALE, HistoryTransform, Prior


@dataclass(frozen=True)
class TrainingConfig:
    architecture: str = "mlp"
    hyperparameters: dict = field(default_factory=dict)
    transform: str = "asinh"
    sfr_scale: float = ASINH_SFR_SCALE   # Msun/yr, for the "asinh" transform
    epochs: int = 200
    batch_size: int = 256
    learning_rate: float = 1e-3
    ema_decay: float = 0.999
    gradient_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 10
    lr_schedule: str = "constant"      # or "cosine": decays to 0 over `epochs`
    init_from: str | None = None       # a prior checkpoint to start from (fine-tuning)

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")

    def identity(self) -> dict:
        """What must match for a run to be resumed (the number of epochs may grow)."""
        return {k: v for k, v in asdict(self).items() if k not in ("epochs", "checkpoint_every")}


def train_prior(train_histories, out_dir, config: TrainingConfig = TrainingConfig(), *, device="cpu",
                progress: bool = True, max_minutes: float | None = None, on_epoch=None) -> Prior:
    """Train (or resume training) a prior on physical histories (n, 2, 64) into `out_dir`.

    Resumes from `out_dir/state.pt` when it exists and was made with the same configuration.
    `max_minutes` stops cleanly (with a checkpoint) after that much time; `on_epoch(epoch, loss)` is
    called after every epoch.  Returns the prior with the EMA weights.
    """
    from torch_ema import ExponentialMovingAverage
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    histories = np.asarray(train_histories, dtype=np.float64)
    if histories.ndim != 3 or histories.shape[1:] != (2, 64) or not np.all(np.isfinite(histories)):
        raise ValueError(f"training histories must be finite with shape (n, 2, 64), got {histories.shape}")
    if len(histories) < config.batch_size:
        raise ValueError(f"{len(histories)} training histories is fewer than one batch ({config.batch_size})")

    state_path = out_dir / "state.pt"
    state = load_torch(state_path) if state_path.exists() else None
    if state is not None:
        saved = json.loads(state["config"])
        if saved != json.loads(json.dumps(config.identity())):
            raise ValueError(f"{state_path} was made with another configuration ({saved}); "
                             "use another output folder or the same settings")
    start = Prior.load(config.init_from) if config.init_from else None
    if start is not None and (start.architecture != config.architecture or start.transform.kind != config.transform):
        raise ValueError(f"{config.init_from} is a {start.architecture}/{start.transform.kind} prior, "
                         f"not {config.architecture}/{config.transform}")
    if state is not None:
        transform = HistoryTransform.from_state(state["transform"])
    elif start is not None:
        transform = start.transform
    else:
        transform = HistoryTransform.fit(histories, config.transform, config.sfr_scale)
    parent_info = start.training_info if start is not None else None

    torch.manual_seed(config.seed)  # the initial weights (and score_models' random Fourier features)
    prior = Prior(config.architecture, config.hyperparameters or None, transform, device=device)
    if state is None and start is not None:
        prior.network.load_state_dict(start.network.state_dict())
    optimiser = torch.optim.Adam(prior.network.parameters(), lr=config.learning_rate)
    ema = ExponentialMovingAverage(prior.network.parameters(), decay=config.ema_decay)
    start_epoch, elapsed_before = 0, 0.0
    if state is not None:
        prior.network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        ema.load_state_dict(state["ema"])
        start_epoch, elapsed_before = int(state["epoch"]), float(state["elapsed_s"])

    data = transform.normalise(torch.as_tensor(histories)).float().to(prior.device)
    log_path = out_dir / "loss.csv"
    if start_epoch == 0:
        log_path.write_text("epoch,loss,elapsed_s\n")
    else:
        _truncate_log(log_path, start_epoch)
    t0 = time.perf_counter() - elapsed_before
    deadline = None if max_minutes is None else time.perf_counter() + 60 * max_minutes
    last_loss = float("nan")

    def save(epoch: int):
        save_torch({"config": json.dumps(config.identity()), "epoch": epoch,
                            "elapsed_s": time.perf_counter() - t0, "transform": transform.state(),
                            "network": prior.network.state_dict(), "optimiser": optimiser.state_dict(),
                            "ema": ema.state_dict()}, state_path)
        with ema.average_parameters():
            prior.training_info = {"epochs": epoch, "config": config.identity(), "n_train": len(histories),
                                   "final_loss": last_loss, "train_seconds": round(time.perf_counter() - t0, 1),
                                   "init_from_training": parent_info}
            prior.save(out_dir / "prior.pt")

    bar = tqdm(range(start_epoch, config.epochs), desc="training prior", unit="epoch", disable=not progress,
               initial=start_epoch, total=config.epochs)
    for epoch in bar:
        if config.lr_schedule == "cosine":
            for group in optimiser.param_groups:
                # a Python float: a NumPy scalar here would make state.pt unreadable with weights_only=True
                group["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
        torch.manual_seed(config.seed * 100003 + epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(data))
        prior.network.train()
        total, batches = 0.0, 0
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            batch = data[torch.as_tensor(order[start:start + config.batch_size], device=data.device)]
            loss = prior.loss(batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if config.gradient_clip:
                torch.nn.utils.clip_grad_norm_(prior.network.parameters(), config.gradient_clip)
            optimiser.step()
            ema.update()
            total, batches = total + float(loss.detach()), batches + 1
        last_loss = total / batches
        with open(log_path, "a") as f:
            f.write(f"{epoch + 1},{last_loss:.6g},{time.perf_counter() - t0:.1f}\n")
        bar.set_postfix(loss=f"{last_loss:.4g}")
        if on_epoch is not None:
            on_epoch(epoch + 1, last_loss)
        out_of_time = deadline is not None and time.perf_counter() > deadline
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs or out_of_time:
            save(epoch + 1)
        if out_of_time:
            break
    bar.close()
    if start_epoch >= config.epochs:  # nothing left to do: still hand back the EMA weights
        save(start_epoch)
    return Prior.load(out_dir / "prior.pt", device=device)


def _truncate_log(path: Path, epoch: int):
    """Keep the log lines up to `epoch` (a resumed run repeats the epochs after the last checkpoint)."""
    if not path.exists():
        path.write_text("epoch,loss,elapsed_s\n")
        return
    lines = path.read_text().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if ln and int(ln.split(",")[0]) <= epoch]
    path.write_text("\n".join(kept) + "\n")
