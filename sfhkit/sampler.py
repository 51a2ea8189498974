"""Diffusion posterior sampling: the reverse variance-exploding SDE with a likelihood score.

The reverse SDE is integrated from t = 1 (x ~ N(0, sigma_max^2 I)) to t = 0 on `steps` equal steps
of t (geometric in the noise level sigma).  Two integrators (`integrator`):

* "ancestral" (default): the Gaussian bridge of the VE forward process, run backwards (Ho et al.
  2020's ancestral sampler in VE form, Song et al. 2021's ancestral-sampling predictor), from noise
  level s_i to s_(i+1) < s_i.  Given the clean history x0, x at level s_(i+1) is
  N(x0 + (s_(i+1)^2 / s_i^2)(x_i - x0), s_(i+1)^2 (s_i^2 - s_(i+1)^2) / s_i^2); averaged over
  p(x0 | x_i) ~ N(x0_hat, r_i^2 I), x0_hat = x_i + s_i^2 s(x_i, t_i) (Tweedie) and
  r_i^2 = s_i^2 / (1 + s_i^2) (a unit-variance Gaussian, the normalised space's marginal scale;
  the Jacobian CLA uses the training covariance instead, sfhkit.likelihood, but isotropic noise
  needs one number, and at 150 steps this term adds at most 14 % to a step's variance):

      x_(i+1) = x_i + (s_i^2 - s_(i+1)^2) s(x_i, t_i) + sqrt(v_i) z_i,
      v_i = s_(i+1)^2 (s_i^2 - s_(i+1)^2) / s_i^2 + ((s_i^2 - s_(i+1)^2) / s_i^2)^2 r_i^2,

  and the last step goes to noise level 0 without noise: x = x + s^2 s(x, t), Tweedie's denoised
  estimate.  The step moves x a fraction 1 - s_(i+1)^2 / s_i^2 < 1 of the way to the denoised
  history, whatever the step size, so it cannot overshoot; for a unit-Gaussian prior (exact score)
  its transitions are exact at any step count (tests/test_sampler.py: variance 1.00 at 10 steps).
  Without the r_i^2 term (the textbook ancestral sampler) the same test gave variances 0.44 at
  10 steps and 0.96 at 250.
* "euler-maruyama" (the paper's):

      x_(i+1) = x_i + g_i^2 |dt| s(x_i, t_i) + g_i sqrt(|dt|) z_i,    g^2 = d sigma^2 / dt,

  the last step without noise.  Its drift coefficient g_i^2 |dt| = 2 ln(sigma_max / sigma_min) s_i^2 / steps
  exceeds s_i^2 when steps < 2 ln(sigma_max / sigma_min) = 19.4, so it overshoots the denoised
  history, and at any coarse step its noise leaves x far above the next noise level (at 15 steps
  more than twice the level the network is evaluated at, step after step).  The network then
  sees inputs unlike anything it was trained on, and the prior's log-like SFR transform turns the
  error into SFRs at the 1e4 Msun/yr cap: at 15 steps every draw of the default prior ran there.
  Kept for comparison (`sfhkit bench stability`).

With `corrector_snr` r > 0 each step but the last that ends above the noise level
`corrector_above_sigma` is followed by one Langevin corrector step at the new time (the
predictor-corrector sampler of Song et al. 2021, their Algorithm 4, with the step size per draw
rather than per batch, so that a draw does not depend on what else is in the batch):

    x <- x + e s(x, t) + sqrt(2 e) z,    e = 2 (r |z| / |s(x, t)|)^2,    z ~ N(0, I)

It costs a second score evaluation per step and is for the prior alone: with the CLA likelihood
score, which is not the exact score of the diffused posterior, the corrector inflated the variance
of the best-constrained directions of the analytic test problem up to twofold, where the plain
predictor recovers it to 10 % (tests/test_sampler.py), so `reverse_diffusion` refuses the two
together and `sample_posterior` uses the predictor alone.

Everything is batched: n samples of one observation, or n samples of each of several observations
(with one forward model, or several: consecutive observations sharing a model form one likelihood
group, and the prior network is called once per step for all of them).

`sample_posterior` is the entry point: it builds the forward model and the likelihood, runs the
loop, keeps all `n` draws (or, as the paper, the best `keep` by mean |residual| / sigma:
`kept_draws`) and returns a `Posterior`.  A `threading.Event` passed as `cancel` stops the run
cleanly between steps (`SamplingCancelled`); nothing is written and the prior, model and observation are unchanged, so
the same objects can be used again at once.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings

import torch

from .likelihood import LIKELIHOOD_RANK, SpectrumLikelihood

# 60 since issue 19 (250 before): a posterior takes a quarter of the time, and the calibration at
# 60 steps is that at 150 within binomial noise in both test settings; with A_V inferred, t90's 95 %
# interval covers 0.87 against 0.93 at 150 (README "Speed": 100 steps is the candidate to measure).
DEFAULT_STEPS = 60
# A first look (the explorer shows it while the full run goes on; `sfhkit bench posterior` times it):
# a few draws at coarse steps, which are blurry but bounded and fit the data (README, "No runaway draws").
FIRST_LOOK_DRAWS, FIRST_LOOK_STEPS = 8, 15
INTEGRATORS = ("ancestral", "euler-maruyama")
DEFAULT_INTEGRATOR = "ancestral"


class SamplingCancelled(RuntimeError):
    """Raised when sampling is cancelled through its `cancel` event."""


def kept_draws(n: int, keep: int | None) -> int:
    """How many of `n` draws a posterior keeps: all of them for `keep=None` (the default), else
    the best `keep` by residual, the paper's convention.  Keeping the best trims the posterior's
    tails: on 200 mocks the best 32 of 40 covered t50 0.605 / 0.905 of the time at 68 / 95 %
    where all draws cover 0.64 / 0.94 (README, "Calibration").  Raises ValueError unless
    1 <= keep <= n."""
    keep = n if keep is None else keep
    if not 1 <= keep <= n:
        raise ValueError(f"need 1 <= keep <= n, got keep={keep}, n={n}")
    return keep


def make_generator(seed: int | None, device) -> torch.Generator:
    """A private generator (torch's global one is left alone); fresh entropy without a seed."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed) if seed is not None else secrets.randbits(63))
    return generator


def _standard_normal(shape, generator, device) -> torch.Tensor:
    """N(0, 1) noise from one generator, or from several: a list of (generator, rows) fills
    consecutive row blocks, so each block's numbers depend only on its own generator."""
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device)
    blocks = [torch.randn((rows,) + tuple(shape[1:]), generator=g, device=device) for g, rows in generator]
    return torch.cat(blocks)


def _total_score(prior, likelihood, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Score of the diffused prior, plus the likelihood's when there is one."""
    if likelihood is None:
        with torch.no_grad():
            return prior.score(t, x)
    prior_score, likelihood_score = likelihood.score(t, x, prior)
    return prior_score + likelihood_score


def langevin_step(x: torch.Tensor, score: torch.Tensor, noise: torch.Tensor, snr: float) -> torch.Tensor:
    """One Langevin corrector step with signal-to-noise ratio `snr` (module docstring); the step
    size e = 2 (snr |noise| / |score|)^2 is computed per draw (first axis)."""
    ratio = noise.flatten(1).norm(dim=1) / score.flatten(1).norm(dim=1).clamp_min(torch.finfo(score.dtype).tiny)
    step = (2 * (snr * ratio) ** 2).view(-1, *([1] * (x.dim() - 1)))
    return x + step * score + (2 * step).sqrt() * noise


def reverse_diffusion(prior, n: int, steps: int, *, likelihood=None, generator, progress_bar=None, callback=None,
                      cancel=None, corrector_snr: float = 0.0, corrector_above_sigma: float = 0.0,
                      integrator: str = DEFAULT_INTEGRATOR) -> torch.Tensor:
    """Integrate the reverse SDE for n samples (normalised space, shape (n, *prior.event_shape)).

    likelihood : anything with SpectrumLikelihood's score(t, x, prior) (or None: the prior);
    generator : a torch.Generator, or a list of (generator, rows) for per-block noise;
    callback(step, steps) is called after every step; `cancel` is anything with is_set();
    corrector_snr : 0 for the predictor alone, > 0 for a Langevin corrector step after each
        step but the last that ends at a noise level above `corrector_above_sigma`;
    integrator : "ancestral" (default) or "euler-maruyama" (the paper's); module docstring."""
    if n < 1 or steps < 1:
        raise ValueError(f"need n >= 1 and steps >= 1, got n={n}, steps={steps}")
    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    if not (math.isfinite(corrector_snr) and corrector_snr >= 0):
        raise ValueError(f"corrector_snr must be >= 0, got {corrector_snr}")
    if corrector_snr > 0 and likelihood is not None:
        raise ValueError("the Langevin corrector is for prior sampling only (with a likelihood it distorts the "
                         "posterior; see sfhkit.sampler)")
    device = prior.device
    shape = (n,) + tuple(prior.event_shape)
    x = _standard_normal(shape, generator, device) * prior.sigma_max
    times = torch.linspace(1.0, 0.0, steps + 1, device=device)
    # Noise levels at the step ends, as Python floats, and whether each is followed by a corrector
    # step: decided once, not per step (reading a value back from the device each step would
    # synchronise a GPU).  The ancestral sampler's last step ends at noise level 0.
    levels = prior.sigma(times).tolist()
    if integrator == "ancestral":
        levels[-1] = 0.0
    corrected = [corrector_snr > 0 and level > corrector_above_sigma for level in levels]
    for i in range(steps):
        if cancel is not None and cancel.is_set():
            raise SamplingCancelled(f"sampling cancelled at step {i} of {steps}")
        t = times[i].expand(n)
        score = _total_score(prior, likelihood, t, x)
        last = i == steps - 1
        if integrator == "ancestral":
            high, low = levels[i] ** 2, levels[i + 1] ** 2        # s_i^2 > s_(i+1)^2
            mean = x + (high - low) * score
            # the bridge's own variance, plus what the spread r^2 = s_i^2 / (1 + s_i^2) of x0 given x_i adds
            noise_std = math.sqrt(low * (high - low) / high + ((high - low) / high) ** 2 * high / (1 + high))
        else:
            dt = float(times[i + 1] - times[i])                     # negative
            g2 = prior.diffusion(t).view(-1, *([1] * (x.dim() - 1))) ** 2
            mean = x - g2 * score * dt
            noise_std = g2.sqrt() * math.sqrt(-dt)
        if last:
            x = mean.detach()
        else:
            x = (mean + noise_std * _standard_normal(shape, generator, device)).detach()
            if corrected[i + 1]:
                with torch.no_grad():
                    corrector_score = prior.score(times[i + 1].expand(n), x)
                x = langevin_step(x, corrector_score, _standard_normal(shape, generator, device), corrector_snr)
        if progress_bar is not None:
            progress_bar.update(n)
        if callback is not None:
            callback(i + 1, steps)
    return x


def _likelihood_groups(observations, forward_models):
    """Consecutive observations that share a forward model and A_V form one group: (first, last+1)."""
    groups, start = [], 0
    for i in range(1, len(observations) + 1):
        if i == len(observations) or forward_models[i] is not forward_models[start] \
                or observations[i].av != observations[start].av:
            groups.append((start, i))
            start = i
    return groups


def first_look(observation, prior, forward_model, **settings):
    """The coarse posterior shown while a full run goes on: `sample_posterior` with FIRST_LOOK_DRAWS
    draws at FIRST_LOOK_STEPS steps, all kept, no progress bar; `settings` are its other arguments
    (seed, likelihood, calibration_degree, cancel, ...)."""
    return sample_posterior(observation, prior, forward_model, n=FIRST_LOOK_DRAWS, steps=FIRST_LOOK_STEPS,
                            keep=None, progress=False, **settings)


def sample_posterior(observation, prior=None, forward_model=None, *, n: int = 120, keep: int | None = None,
                     likelihood: str = "cla", cla: str = "jacobian", steps: int = DEFAULT_STEPS, device=None,
                     seed=None, clip="auto", progress: bool = True, callback=None, cancel=None,
                     integrator: str = DEFAULT_INTEGRATOR, calibration_degree: int = 0,
                     likelihood_rank: int | None = LIKELIHOOD_RANK):
    """Posterior histories for one observation, or for a list of them sampled in one batch (one
    network call per step for all; then a list of Posteriors).

    observation : `Observation` (or list of them)
    prior : `Prior` (default: the embedded one)
    forward_model : `ForwardModel` on the observation's wavelengths and redshift, or (for a list of
        observations) one model for all or a list with one per observation (observations with the
        same model object and A_V share a likelihood); default: each observation's
        `forward_model()` with the default SSP grid
    n, keep : draws made, and how many the posterior keeps (`kept_draws`): all (None, the default)
        or the best `keep` by mean |residual| / sigma over unmasked pixels (the paper's 100 of 120)
    likelihood : "cla" (default) or "dps"; cla : the CLA variant, "jacobian" (default) or "paper";
        clip : likelihood-score clipping, "auto" by default (see sfhkit.likelihood)
    steps : reverse-SDE steps; integrator : "ancestral" (default) or "euler-maruyama" (the paper's;
        module docstring); device : "cpu", "cuda", ... (default: the prior's; another device
        moves the prior there)
    seed : fixes the result; for a list of observations, a list of seeds gives each observation
        its own random numbers (its draws then do not depend on what else is in the batch, up to
        floating-point rounding)
    callback(step, steps) : progress; cancel : threading.Event
    calibration_degree : the degree of a multiplicative flux-calibration polynomial solved per draw
        (sfhkit.fluxcal; 0, the default, none: mocks have no calibration error)
    likelihood_rank : SVD components of the compressed model the Jacobian CLA uses (default
        LIKELIHOOD_RANK; None: all; sfhkit.likelihood); chi^2 and the spectra always use all
    """
    from tqdm.auto import tqdm

    from .likelihood import LikelihoodGroups
    from .posterior import Posterior
    from .prior import Prior

    observations = list(observation) if isinstance(observation, (list, tuple)) else [observation]
    keep = kept_draws(n, keep)
    prior = prior if prior is not None else Prior.default()
    if device is not None and torch.device(device) != prior.device:
        prior.to(device)
    if isinstance(forward_model, (list, tuple)):
        if len(forward_model) != len(observations):
            raise ValueError(f"{len(forward_model)} forward models for {len(observations)} observations")
        models = list(forward_model)
    elif forward_model is not None:
        models = [forward_model] * len(observations)
    else:   # one model per distinct (wavelengths, redshift, line spread): a build takes seconds
        built, models = {}, []
        for o in observations:
            key = (o.wavelength.tobytes(), o.redshift, repr(o.line_spread()))
            if key not in built:
                built[key] = o.forward_model(device=prior.device)
            models.append(built[key])
    seeds = list(seed) if isinstance(seed, (list, tuple)) else None
    if seeds is not None and len(seeds) != len(observations):
        raise ValueError(f"{len(seeds)} seeds for {len(observations)} observations")
    groups = _likelihood_groups(observations, models)
    likes = [SpectrumLikelihood(observations[a:b], models[a], prior.transform, kind=likelihood, cla=cla, clip=clip,
                                calibration_degree=calibration_degree, rank=likelihood_rank)
             for a, b in groups]
    like = likes[0] if len(likes) == 1 else LikelihoodGroups(likes, [n * (b - a) for a, b in groups])
    config = {"n": n, "keep": keep, "likelihood": likelihood, "cla": cla, "steps": steps, "integrator": integrator,
              "clip": clip, "calibration_degree": int(calibration_degree), "likelihood_rank": likes[0].rank,
              "device": str(prior.device), "prior": repr(prior)}
    generator = ([(make_generator(s, prior.device), n) for s in seeds] if seeds is not None
                 else make_generator(seed, prior.device))
    prior.network.eval()
    started = time.perf_counter()
    with tqdm(total=n * len(observations) * steps, desc="posterior samples", unit="step", unit_scale=True,
              disable=not progress) as bar:
        x = reverse_diffusion(prior, n * len(observations), steps, likelihood=like, generator=generator,
                              progress_bar=bar, callback=callback, cancel=cancel, integrator=integrator)
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:
        warnings.warn(f"{bad} of {x.shape[0]} posterior draws are not finite (sampling diverged); try more steps",
                      RuntimeWarning, stacklevel=2)
    histories = prior.transform.physical(x)
    seconds = round(time.perf_counter() - started, 3)
    scored = sum(group_like.draws_scored for group_like in likes)
    if scored:
        config["gauss_newton_steps_per_draw_and_step"] = round(
            sum(group_like.gauss_newton_steps for group_like in likes) / scored, 3)
    posteriors = []
    for (a, b), group_like in zip(groups, likes):
        model = models[a]
        rows = slice(a * n, b * n)
        spectra, chi2, mean_abs, calibration = group_like.chi2(histories[rows])
        surviving = model.surviving_mass_msun(histories[rows])
        for g in range(b - a):
            own = slice(g * n, (g + 1) * n)
            galaxy_config = {**config, "seed": seeds[a + g] if seeds is not None else seed, "seconds": seconds,
                             "forward_model": model.extra_repr(), "batch_size": len(observations),
                             "ssp_library": model.ssp_library, "ssp_logz_range": list(model.ssp_logz_range)}
            posteriors.append(Posterior.from_draws(
                observations[a + g], histories[rows][own], spectra[own], chi2[own], mean_abs[own], surviving[own],
                keep=keep, age_at_z_gyr=model.age_at_z_gyr, time_bins=model.time_bins, config=galaxy_config,
                calibration=None if calibration is None else calibration[own]))
    return posteriors if isinstance(observation, (list, tuple)) else posteriors[0]
