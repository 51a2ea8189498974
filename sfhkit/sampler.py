"""Diffusion posterior sampling: the reverse variance-exploding SDE with a likelihood score.

    x_{i+1} = x_i + g_i^2 |dt| [s_prior(x_i, t_i) + s_like(x_i, t_i)] + g_i sqrt(|dt|) z_i

from t = 1 (x ~ N(0, sigma_max^2 I)) to t = 0 on `steps` equal steps of t (geometric in sigma),
Euler-Maruyama as in the paper, the last step without noise.  Without a likelihood it samples the
prior (`Prior.sample` uses the same loop).  Everything is batched: n samples of one observation,
or n samples of each of several observations that share one forward model.

`sample_posterior` is the entry point: it builds the forward model and the likelihood, runs the
loop, keeps the best `keep` of the `n` draws by mean |residual| / sigma (as the paper) and returns a
`Posterior`.  A `threading.Event` passed as `cancel` stops the run cleanly between steps
(`SamplingCancelled`); nothing is written and the prior, model and observation are unchanged, so
the same objects can be used again at once.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings

import torch

from .likelihood import SpectrumLikelihood

DEFAULT_STEPS = 250


class SamplingCancelled(RuntimeError):
    """Raised when sampling is cancelled through its `cancel` event."""


def make_generator(seed: int | None, device) -> torch.Generator:
    """A private generator (torch's global one is left alone); fresh entropy without a seed."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed) if seed is not None else secrets.randbits(63))
    return generator


def reverse_diffusion(prior, n: int, steps: int, *, likelihood: SpectrumLikelihood | None = None,
                      generator: torch.Generator, progress_bar=None, callback=None, cancel=None) -> torch.Tensor:
    """Integrate the reverse SDE for n samples (normalised space, shape (n, *prior.event_shape)).

    callback(step, steps) is called after every step; `cancel` is anything with is_set()."""
    if n < 1 or steps < 1:
        raise ValueError(f"need n >= 1 and steps >= 1, got n={n}, steps={steps}")
    device = prior.device
    x = torch.randn((n,) + tuple(prior.event_shape), generator=generator, device=device) * prior.sigma_max
    times = torch.linspace(1.0, 0.0, steps + 1, device=device)
    for i in range(steps):
        if cancel is not None and cancel.is_set():
            raise SamplingCancelled(f"sampling cancelled at step {i} of {steps}")
        t = times[i].expand(n)
        dt = times[i + 1] - times[i]  # negative
        g2 = prior.diffusion(t).view(-1, *([1] * (x.dim() - 1))) ** 2
        if likelihood is None:
            with torch.no_grad():
                score = prior.score(t, x)
        else:
            prior_score, likelihood_score = likelihood.score(t, x, prior)
            score = prior_score + likelihood_score
        mean = x - g2 * score * dt
        if i < steps - 1:
            noise = torch.randn(x.shape, generator=generator, device=device)
            x = mean + g2.sqrt() * noise * math.sqrt(-float(dt))
        else:
            x = mean
        x = x.detach()
        if progress_bar is not None:
            progress_bar.update(n)
        if callback is not None:
            callback(i + 1, steps)
    return x


def sample_posterior(observation, prior=None, forward_model=None, *, n: int = 120, keep: int = 100,
                     likelihood: str = "cla", cla: str = "jacobian", steps: int = DEFAULT_STEPS, device=None,
                     seed: int | None = None, clip="auto", progress: bool = True, callback=None, cancel=None):
    """Posterior histories for one observation (or a list sharing wavelengths, redshift and A_V:
    then a list of Posteriors, all sampled in one batch).

    observation : `Observation` (or list of them)
    prior : `Prior` (default: the embedded one); forward_model : `ForwardModel` on the observation's
        wavelengths and redshift (default: `observation.forward_model()`, the default SSP grid)
    n, keep : draws made and kept (best `keep` by mean |residual| / sigma over unmasked pixels)
    likelihood : "cla" (default) or "dps"; cla : the CLA variant, "jacobian" (default) or "paper";
        clip : likelihood-score clipping, "auto" by default (see sfhkit.likelihood)
    steps : reverse-SDE steps; device : "cpu", "cuda", ... (default: the prior's; another device
        moves the prior there)
    seed : fixes the result; callback(step, steps) : progress; cancel : threading.Event
    """
    from tqdm.auto import tqdm

    from .posterior import Posterior
    from .prior import Prior

    observations = list(observation) if isinstance(observation, (list, tuple)) else [observation]
    if not 1 <= keep <= n:
        raise ValueError(f"need 1 <= keep <= n, got keep={keep}, n={n}")
    prior = prior if prior is not None else Prior.default()
    if device is not None and torch.device(device) != prior.device:
        prior.to(device)
    if forward_model is None:
        forward_model = observations[0].forward_model(device=prior.device)
    config = {"n": n, "keep": keep, "likelihood": likelihood, "cla": cla, "steps": steps, "seed": seed, "clip": clip,
              "device": str(prior.device), "prior": repr(prior), "forward_model": forward_model.extra_repr()}
    like = SpectrumLikelihood(observations, forward_model, prior.transform, kind=likelihood, cla=cla, clip=clip)
    generator = make_generator(seed, prior.device)
    prior.network.eval()
    started = time.perf_counter()
    with tqdm(total=n * len(observations) * steps, desc="posterior samples", unit="step", unit_scale=True,
              disable=not progress) as bar:
        x = reverse_diffusion(prior, n * len(observations), steps, likelihood=like, generator=generator,
                              progress_bar=bar, callback=callback, cancel=cancel)
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:
        warnings.warn(f"{bad} of {x.shape[0]} posterior draws are not finite (sampling diverged); try more steps",
                      RuntimeWarning, stacklevel=2)
    histories = prior.transform.physical(x)
    spectra, chi2, mean_abs = like.chi2(histories)
    surviving = forward_model.surviving_mass_msun(histories)
    config["seconds"] = round(time.perf_counter() - started, 3)
    posteriors = []
    for g, obs in enumerate(observations):
        rows = slice(g * n, (g + 1) * n)
        posteriors.append(Posterior.from_draws(
            obs, histories[rows], spectra[rows], chi2[rows], mean_abs[rows], surviving[rows], keep=keep,
            age_at_z_gyr=forward_model.age_at_z_gyr, time_bins=forward_model.time_bins, config=config))
    return posteriors if isinstance(observation, (list, tuple)) else posteriors[0]
