"""Likelihood scores for diffusion posterior sampling.

The reverse diffusion needs the score of the *noised* likelihood, grad_x log p_t(y | x_t), where x_t
is a history in the prior's normalised space blurred by Gaussian noise of standard deviation
sigma_t.  It is not available in closed form; the paper's two approximations and our variant of
the first:

* CLA, the convolved likelihood approximation (default): the likelihood convolved with a Gaussian
  stand-in for p(x0 | x_t), linearised, so that p_t(y | x_t) is Gaussian.  Two variants (`cla`):
  - "paper": p_t(y | x_t) ~ N(y | S(x_t), Sigma_y + sigma_t^2 diag(A A^T)), S the forward model on
    the physical history, Sigma_y the noise, diag(A A^T) estimated as the per-pixel variance of
    S(alpha) over 1000 draws alpha ~ N(0, I) of the normalised space, once per observation
    (`cla_variance`); the score is clipped (see below).
  - "jacobian" (default, ours): p(x0 | x_t) ~ N(x0_hat, C_t) with the denoised
    x0_hat = x_t + sigma_t^2 s(x_t) (no gradient through the network) and the covariance and
    Jacobian of a Gaussian prior N(., Sigma) with the training histories' covariance Sigma
    (`HistoryTransform.covariance`, 128 x 128 in the normalised space):
        C_t = sigma_t^2 Sigma (Sigma + sigma_t^2 I)^-1,   d x0_hat / d x_t ~ C_t / sigma_t^2,
    and the full low-rank A A^T of the Jacobian at x0_hat:
        p_t(y | x_t) ~ N(y | S(x0_hat), Sigma_y + A C_t A^T).
    Why the covariance: the normalised space has unit variance per dimension, but its dimensions
    are far from independent (the default's Sigma has eigenvalues 0.005 to 98: SFR and log Z move
    together across bins).  With the identity in place of Sigma (this variant until issue 16, as
    Pi-GDM's r_t^2 = sigma_t^2 / (1 + sigma_t^2)) the CLA gave the common level of a history a tenth
    of its prior freedom and the bin-to-bin detail ten times too much: on prior draws (simulation-based
    calibration) the posterior means sat too close to the prior's, the draws were too wide per bin,
    and TARP missed by 0.24; with Sigma the posterior mean's squared error summed over the 128
    dimensions fell by 40 % (40 galaxies) and TARP's miss halved, to 0.12 (200; README,
    "Calibration").  On a correlated Gaussian prior with a linear model this variant is the exact noised likelihood (tests/test_sampler.py); with the identity the same
    test's means are off by up to 0.6 posterior standard deviations.  A checkpoint without a
    covariance gets the identity.
    Why the Jacobian (measured, README "Posterior sampling"): the diagonal estimate treats 3800 pixels as
    independent when their errors are driven by the same 128 numbers, and the draws' variance is set
    by the prior's massive galaxies, not by the one observed; linearising at the noisy x_t puts the
    first steps at absurd histories.  With the paper's variant the samples end far from the data
    (chi^2 per pixel 30 to 10^4 on test mocks); with this one at about 1.
    With the compressed model flux = c(h) @ B (`ForwardModel.linear_parts`), A = K B, K = dc/dx
    (K x 128), and by the Woodbury and push-through identities the score is a damped Gauss-Newton
    direction computed in the K-dimensional coefficient space (K = SVD rank + 1):
        grad log p_t = (C_t / sigma_t^2) K^T (I + M K C_t K^T)^-1 (b - M c),  M = B W B^T,  b = B W y,
    W = diag(used / sigma_y^2); M and b are computed once per observation, and C_t is applied in
    Sigma's eigenbasis (no 128 x 128 product per draw).
    The score is (x* - x0_hat) / sigma_t^2, Tweedie's formula for the likelihood's part of the
    score, with x* the posterior mean of x0 given x_t and y; x* is taken as the minimiser of the
    proximal objective 1/2 chi^2(x) + 1/2 (x - x0_hat)^T C_t^-1 (x - x0_hat) (`_line_search`).
    The formula above is its first Gauss-Newton step, exact for a linear model.  With the
    log-like SFR transform a draw repeats the step from where it ended, linearised anew, until
    the objective's decrease there agrees with the quadratic model's prediction to
    GAUSS_NEWTON_TOLERANCE or to a fraction GAUSS_NEWTON_RATIO of it (at most
    GAUSS_NEWTON_ITERATIONS steps; 1.65-1.9 per draw and noise level on two test mocks, 3-4 at
    the highest noise and 1 in the last third of the steps; the posterior's config records it).
    Each step takes a backtracking line search with a trust radius (`_line_search`).  With the
    first step alone, a draw whose denoised history was far from the data at moderate noise
    (chi^2 per pixel 1e5 at sigma 0.3) could not reach it (one step removed about 85 % of chi^2
    per noise level): on a faint dwarf 5 seeds x 120 draws gave 164 failed fits (chi^2 per pixel
    > 3) at 15 steps and 36 at 60; with the repeated steps none (README, "No runaway draws").

* DPS (Chung et al. 2023), "Tweedie": p_t(y | x_t) ~ p(y | x0_hat(x_t)) with the denoised estimate
  x0_hat = x_t + sigma_t^2 s_theta(x_t, t); the gradient goes back through the score network.

The likelihood score can be clipped per sample (`clip`, see `clip_norm`): the paper's safeguard
for the first steps, where the history is mostly noise; on by default for every variant.  The
Jacobian CLA does not rely on it: its Gauss-Newton steps take a backtracking line search with a
trust radius on the proximal objective they linearise (`_line_search`).  Before the search, with
the prior's log-like SFR transform, the full Gauss-Newton step overshot by orders of magnitude and
draws ran to the SFR cap: 40 of 120 draws of a dwarf test galaxy without the clip, about 1 in 150
with it, and most draws at coarse steps.  Before the trust radius, with the covariance in C_t,
21 of 4800 draws of two test galaxies still did at 15-30 steps (a step up to 1e7 long, in
normalised units, carried a bin the noise had put at the cap 2e5 further out, where the transform
is flat and no later step could bring it back).  The linearisation uses the transform's slope at the
nearest unclipped point (`HistoryTransform.physical_derivative`) for the same reason.  The
paper's CLA and DPS have neither and still run away at coarse steps.  Masked pixels
(observation.mask False) contribute nothing.  The physical history is taken with SFR clipped at 0, as it is reported: in development
runs, letting the sampler use negative light fitted a dwarf galaxy with 40 % of its bins below
zero, whose clipped spectra were then far off (chi^2 per pixel 700 instead of 1.4).

With `calibration_degree` > 0 (real spectra; sfhkit.fluxcal) the model is P S with a multiplicative
Legendre polynomial P = 1 + sum_k p_k L_k per draw, profiled out of every Gauss-Newton step
(variable projection): the step uses the Schur complement of the joint normal matrix of history
and polynomial and the gradient at the best polynomial, and the line search the profiled chi^2,
all in coefficient space (`_profiled_system`); the final chi^2 and spectra solve P once more with
the full model.  Checked against a pixel-space computation in tests/test_fluxcal.py.  Alternating
instead (P solved, then an ordinary step with P fixed) ended far from the data (chi^2 per pixel
1770 on a mock: at high noise P took shapes that let the history run off).

The Jacobian CLA works in the first `rank` SVD components of the compressed model (and its
dust-emission term; LIKELIHOOD_RANK by default), fewer than the model that reports chi^2 and the
spectra (128): its per-draw linear algebra costs K^2 to K^3 in K = rank + 1.  At rank 96 a
composite spectrum differs from the exact model's by a chi^2 of at most 0.0025 (median 2e-4) at
S/N 50 over 200 test-set histories (3800 pixels, z 0.05), against 0.9 at rank 64 and 8 at rank 32
(README "Posterior sampling", the speed levers).

Several observations that share wavelengths, redshift and A_V (one forward model) can be fitted in
one batch: samples are laid out observation-major, the same number of rows per observation, each
row with its own observation's flux, noise and mask.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

LIKELIHOODS = ("cla", "dps")
CLA_VARIANTS = ("jacobian", "paper")
CLA_DRAWS = 1000                 # the paper's number of draws for diag(A A^T)
LINE_SEARCH_HALVINGS = 12        # Jacobian CLA: step lengths 1, 1/2, ..., 1/2048 tried (then 0)
TRUST_RADIUS = 3.0               # Jacobian CLA: a step is at most TRUST_RADIUS sqrt(D) long in p(x0 | x_t)'s metric
GAUSS_NEWTON_ITERATIONS = 4      # Jacobian CLA: Gauss-Newton steps at most, per draw and noise level
GAUSS_NEWTON_TOLERANCE = 0.5     # ... until the quadratic model predicts chi^2 / 2 where the step ends to this
GAUSS_NEWTON_RATIO = 0.1         # ... or to this fraction of the decrease it predicts
LIKELIHOOD_RANK = 96             # Jacobian CLA: SVD components of the model in its coefficient space (module docstring)
DEFAULT_CLIP = 3.0               # likelihood score norm <= DEFAULT_CLIP * sqrt(dim) / sigma_t (paper CLA, DPS)


def clip_norm(clip: float | None, sigma_t: torch.Tensor, dim: int) -> torch.Tensor | None:
    """The largest allowed likelihood-score norm at noise level sigma_t: clip * sqrt(dim) / sigma_t,
    i.e. `clip` times the typical norm of the prior's own score at that noise level (a noised
    standard normal has score norm sqrt(dim) / sigma).  None disables clipping."""
    return None if clip is None else clip * math.sqrt(dim) / sigma_t


def _clip_rows(grad: torch.Tensor, max_norm: torch.Tensor | None) -> torch.Tensor:
    if max_norm is None:
        return grad
    norm = grad.flatten(1).norm(dim=1).clamp(min=1e-30)
    scale = torch.clamp(max_norm / norm, max=1.0)
    return grad * scale.view(-1, *([1] * (grad.dim() - 1)))


def _transform_key(transform) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(transform.kind.encode())
    for tensor in (transform.mean, transform.std):
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def cla_variance(forward_model, transform, av: float, n_draws: int = CLA_DRAWS, seed: int = 0,
                 batch_size: int = 250) -> torch.Tensor:
    """diag(A A^T) as the paper estimates it: the per-pixel variance of S(alpha) over `n_draws`
    draws alpha ~ N(0, I) of the normalised space (flux units squared, on the model's pixels).

    Cached on the forward model (which is specific to one observation's wavelengths, redshift and
    line-spread function) per (transform, A_V, draws, seed)."""
    cache = forward_model.__dict__.setdefault("_cla_variance_cache", {})
    key = (_transform_key(transform), float(av), int(n_draws), int(seed))
    if key not in cache:
        generator = torch.Generator().manual_seed(seed)
        device = transform.mean.device
        spectra = []
        with torch.no_grad():
            for start in range(0, n_draws, batch_size):
                alpha = torch.randn((min(batch_size, n_draws - start),) + tuple(transform.mean.shape),
                                    generator=generator).to(device)
                physical = transform.physical(alpha, clip_sfr=False)
                spectra.append(forward_model(physical, av=av, validate=False).double())
        cache[key] = torch.cat(spectra).var(dim=0).float()
    return cache[key]


class SpectrumLikelihood:
    """Gaussian likelihood of one or more observations under a forward model, and the noised
    likelihood scores the sampler needs (`score`).

    observations : an Observation or a list of them sharing wavelengths, redshift and A_V
    forward_model : `ForwardModel` on those wavelengths and redshift (compressed: rank set)
    transform : the prior's normalised <-> physical map (`prior.transform`)
    kind : "cla" or "dps";  cla : "jacobian" or "paper" (the CLA variant, see module docstring)
    clip : likelihood-score clipping factor (see `clip_norm`); None disables; "auto" (default):
        DEFAULT_CLIP
    rank : SVD components of the compressed model the Jacobian CLA uses (module docstring;
        default LIKELIHOOD_RANK, None: all of the model's)
    Samples are rows laid out observation-major, the same number per observation.
    """

    def __init__(self, observations, forward_model, transform, kind: str = "cla", cla: str = "jacobian",
                 clip="auto", cla_draws: int = CLA_DRAWS, cla_seed: int = 0, calibration_degree: int = 0,
                 rank: int | None = LIKELIHOOD_RANK):
        if kind not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {kind!r}")
        if cla not in CLA_VARIANTS:
            raise ValueError(f"cla must be one of {CLA_VARIANTS}, got {cla!r}")
        observations = list(observations) if isinstance(observations, (list, tuple)) else [observations]
        if not observations:
            raise ValueError("need at least one observation")
        for obs in observations:
            if obs.wavelength.shape != forward_model.wavelength.shape or not np.allclose(
                    obs.wavelength, forward_model.wavelength, rtol=1e-10, atol=0):
                raise ValueError("the observation's wavelengths differ from the forward model's; build the model "
                                 "with observation.forward_model() or on observation.wavelength")
            if not math.isclose(obs.redshift, forward_model.redshift, rel_tol=1e-9):
                raise ValueError(f"the observation is at z={obs.redshift}, the forward model at "
                                 f"z={forward_model.redshift}")
        if len({o.av for o in observations}) > 1:
            raise ValueError("observations sampled in one batch must share A_V")
        n_bins = transform.mean.shape[-1]
        if n_bins != forward_model.n_bins:
            raise ValueError(f"the prior has {n_bins} time bins, the forward model {forward_model.n_bins}: "
                             "they must use the same time bins")
        if calibration_degree and (kind != "cla" or cla != "jacobian"):
            raise ValueError("the flux-calibration polynomial needs the default likelihood (cla='jacobian')")
        if clip == "auto":
            clip = DEFAULT_CLIP
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0, None or 'auto', got {clip!r}")
        self.kind, self.cla, self.clip = kind, cla, clip
        self.observations = observations
        self.forward_model = forward_model
        self.transform = transform
        self.av = observations[0].av
        self.dim = int(np.prod(transform.mean.shape))
        device = transform.mean.device

        def stack(name):
            return torch.as_tensor(np.stack([getattr(o, name) for o in observations]), device=device)

        mask = stack("mask")                                                           # (G, P)
        flux = torch.where(mask, stack("flux"), 0.0)                                   # float64
        noise_variance = torch.where(mask, stack("sigma"), 1.0) ** 2
        self.used = mask.float()
        self.flux = flux.float()
        self.noise_variance = noise_variance.float()
        # The model in coefficient space: flux = c(h) @ basis, and the data's normal equations.
        self.table, basis = forward_model.linear_parts(self.av)
        dust_term = bool(getattr(forward_model, "dust_emission", False))    # linear_parts' last component
        self.rank = self._truncate(rank, basis.shape[0] - dust_term)
        if self.rank < basis.shape[0] - dust_term:
            keep = torch.arange(self.rank, device=basis.device)
            if dust_term:
                keep = torch.cat([keep, keep.new_tensor([basis.shape[0] - 1])])
            self.table, basis = self.table[..., keep], basis[keep]
        weight = mask / noise_variance                                                  # W, (G, P)
        basis64 = basis.double()
        self.normal_matrix = torch.einsum("kp,gp,lp->gkl", basis64, weight, basis64)      # (G, K, K)
        self.projected_flux = torch.einsum("kp,gp->gk", basis64, weight * flux)
        self.aat_diag = None
        self.calibration_degree = int(calibration_degree)
        if self.calibration_degree:
            # The flux-calibration polynomial P = sum_a pi_a L_a, pi_0 = 1 (sfhkit.fluxcal), in coefficient
            # space: with L_a L_b = sum_n s_abn L_n (n <= 2d), every chi^2 term of the model P S is a sum
            # over T_n = B diag(W L_n) B^T and b_a = B W (L_a y) (`_calibration_fit`).
            from .fluxcal import legendre_basis, legendre_products

            degree = self.calibration_degree
            self.calibration_basis = legendre_basis(forward_model.wavelength, degree, device=device)    # (d + 1, P)
            square = legendre_basis(forward_model.wavelength, 2 * degree, device=device)              # (2d + 1, P)
            self._legendre_products = legendre_products(degree).to(device)                          # s, (d+1, d+1, 2d+1)
            self._weight64, self._flux64 = weight, flux
            self._normal_terms = torch.einsum("kp,gp,mp,lp->gmkl", basis64, weight, square, basis64)  # T, (G, 2d+1, K, K)
            self._projected_terms = torch.einsum("kp,gp,mp->gmk", basis64, weight * flux,
                                                 self.calibration_basis)                           # b, (G, d + 1, K)
        # Jacobian CLA: draws scored, and Gauss-Newton steps taken for them (`_proximal_shift`).
        self.draws_scored = self.gauss_newton_steps = 0
        if kind == "cla" and cla == "jacobian":
            # The Gaussian p(x0 | x_t) of `_cla_jacobian_score`: the training covariance's eigenvalues
            # and the rows of its eigenvectors that belong to the bins the data see (float64).
            eigenvalues, vectors = torch.linalg.eigh(transform.covariance.double())
            active = forward_model.active_bins.to(device)
            self._flat_active = torch.cat([active, active + n_bins])                        # into the flat (D,) history
            self._cov_eigenvalues = eigenvalues.clamp_min(0.0)                             # (D,)
            self._cov_vectors = vectors                                                     # (D, D)
            self._cov_vectors_active = vectors[self._flat_active]                           # (2 active, D)
        if kind == "cla" and cla == "paper":
            self.aat_diag = cla_variance(forward_model, transform, self.av, cla_draws, cla_seed)[None].to(device)

    @staticmethod
    def _truncate(rank, available: int) -> int:
        """The SVD components used: `rank`, or all `available` for None; a bad value is refused."""
        if rank is None:
            return available
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer or None, got {rank!r}")
        return min(rank, available)

    def _rows(self, tensor: torch.Tensor, n_rows: int) -> torch.Tensor:
        """Per-observation tensor (G, ...) repeated for each observation's samples (n_rows, ...)."""
        per = n_rows // tensor.shape[0]
        if per * tensor.shape[0] != n_rows:
            raise ValueError(f"{n_rows} samples cannot be split evenly over {tensor.shape[0]} observations")
        return tensor.repeat_interleave(per, dim=0)

    def spectra(self, x_normalised: torch.Tensor) -> torch.Tensor:
        """Model spectra of normalised histories (SFR clipped at 0, see the module docstring)."""
        return self.forward_model(self.transform.physical(x_normalised), av=self.av, validate=False)

    def log_likelihood(self, x_normalised: torch.Tensor) -> torch.Tensor:
        """log N(y | S(x), Sigma_y) per sample up to a constant (differentiable), in coefficient space:
        -1/2 (c M c - 2 c b)."""
        physical = self.transform.physical(x_normalised)
        coefficients = self.forward_model.coefficient_jacobian(physical, self.table)[0].double()
        n = coefficients.shape[0]
        quadratic = torch.einsum("bk,bkl,bl->b", coefficients, self._rows(self.normal_matrix, n), coefficients)
        return -0.5 * quadratic + (coefficients * self._rows(self.projected_flux, n)).sum(1)

    def score(self, t: torch.Tensor, x_t: torch.Tensor, prior) -> tuple[torch.Tensor, torch.Tensor]:
        """(prior score, likelihood score) at x_t (B, ...) and diffusion times t (B,)."""
        return grouped_scores([(self, slice(None))], t, x_t, prior)

    def _cla_score(self, x_t: torch.Tensor, sigma_t: torch.Tensor, prior_score: torch.Tensor) -> torch.Tensor:
        """The CLA likelihood score given the prior score (no gradient through the network)."""
        if self.cla == "jacobian":
            return self._cla_jacobian_score(x_t, sigma_t, prior_score)
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            n = x.shape[0]
            variance = self._rows(self.noise_variance, n) + sigma_t.view(-1, 1) ** 2 * self.aat_diag
            residual = (self._rows(self.flux, n) - self.spectra(x)) * self._rows(self.used, n)
            grad, = torch.autograd.grad(-0.5 * (residual ** 2 / variance).sum(), x)
        return grad

    def _cla_jacobian_score(self, x_t: torch.Tensor, sigma_t: torch.Tensor, prior_score) -> torch.Tensor:
        """grad_x_t log N(y | S(x0), Sigma_y + A C A^T) (module docstring): x0 = x_t + sigma^2 s(x_t),
        and p(x0 | x_t) ~ N(x0, C) with C = sigma^2 Sigma (Sigma + sigma^2)^-1 and d x0 / d x_t = C / sigma^2,
        the moments for a Gaussian prior of the training covariance Sigma (`transform.covariance`).
        The shift x* - x0 is `_proximal_shift`'s."""
        s2 = sigma_t.view(-1, 1, 1) ** 2
        x0 = (x_t + s2 * prior_score).detach()
        s2_64 = s2.view(-1, 1).double()
        # C in the eigenbasis of Sigma = V diag(l) V^T: C = V diag(d) V^T, d = l sigma^2 / (l + sigma^2).
        shrink = self._cov_eigenvalues * s2_64 / (self._cov_eigenvalues + s2_64)                 # d, (B, D)
        shift = self._proximal_shift(x0, shrink)
        return (shift / s2_64).to(x_t.dtype).view_as(x_t)                                         # C / sigma^2 * ...

    def _calibration_fit(self, coefficients: torch.Tensor, galaxy: torch.Tensor) -> dict:
        """For model coefficients c (R, K) of draws of observations `galaxy` (R,): the polynomial
        that minimises chi^2 of the model P S given c (its terms pi (R, d + 1), pi_0 = 1), the
        Legendre coefficients q of P^2, t_n = T_n c, v_n = c T_n c, and the p-block G of the normal
        equations (R, d, d).  All in coefficient space: (2d + 1) K^2 per draw."""
        from .fluxcal import solve_normal_equations

        s = self._legendre_products
        t = torch.empty(coefficients.shape[0], s.shape[2], coefficients.shape[1], dtype=torch.float64,
                        device=coefficients.device)
        for g in galaxy.unique().tolist():
            own = galaxy == g
            t[own] = torch.einsum("mkl,rl->rmk", self._normal_terms[g], coefficients[own])
        v = (t * coefficients.unsqueeze(1)).sum(-1)                                               # (R, 2d + 1)
        degree = self.calibration_degree
        block = torch.einsum("kln,rn->rkl", s[1:, 1:], v)                                           # G = A^T W A
        rhs = (self._projected_terms[galaxy, 1:] * coefficients.unsqueeze(1)).sum(-1) - v[:, 1:degree + 1]
        p = solve_normal_equations(block, rhs)
        terms = torch.cat([torch.ones_like(p[:, :1]), p], dim=1)
        return {"terms": terms, "square": torch.einsum("ra,rb,abn->rn", terms, terms, s), "t": t, "v": v,
                "block": block}

    def _profiled_half_chi2(self, coefficients: torch.Tensor, galaxy: torch.Tensor) -> torch.Tensor:
        """chi^2 / 2 (up to a constant) of the model P S at the polynomial that minimises it, per draw."""
        fit = self._calibration_fit(coefficients, galaxy)
        data = torch.einsum("ra,rak,rk->r", fit["terms"], self._projected_terms[galaxy], coefficients)
        return 0.5 * (fit["square"] * fit["v"]).sum(-1) - data

    def _profiled_system(self, coefficients: torch.Tensor, galaxy: torch.Tensor):
        """The Gauss-Newton normal matrix and gradient of chi^2 with the polynomial profiled out
        (variable projection): M = M_P - X^T G^-1 X, with M_P = B W P^2 B^T = sum_n q_n T_n and X the
        cross terms (S L_k)^T W (P B) of history and polynomial, and u = b_P - M_P c, b_P = B W (P y)
        (at the best polynomial the gradient in it is zero).  Returns M (R, K, K) and u (R, K)."""
        fit = self._calibration_fit(coefficients, galaxy)
        s = self._legendre_products
        normal = torch.empty(coefficients.shape[0], coefficients.shape[1], coefficients.shape[1],
                             dtype=torch.float64, device=coefficients.device)
        for g in galaxy.unique().tolist():
            own = galaxy == g
            normal[own] = torch.einsum("rn,nkl->rkl", fit["square"][own], self._normal_terms[g])   # M_P
        gradient = (torch.einsum("ra,rak->rk", fit["terms"], self._projected_terms[galaxy])
                    - torch.bmm(normal, coefficients.unsqueeze(-1)).squeeze(-1))
        cross = torch.einsum("ra,akn,rnj->rkj", fit["terms"], s[:, 1:], fit["t"])                    # X, (R, d, K)
        normal = normal - torch.bmm(cross.transpose(1, 2), torch.linalg.solve(fit["block"], cross))
        return 0.5 * (normal + normal.transpose(1, 2)), gradient

    def _proximal_shift(self, x0: torch.Tensor, shrink: torch.Tensor) -> torch.Tensor:
        """x - x0 (B, D, float64) for x the Gauss-Newton approximation of the minimiser of the
        proximal objective (`_line_search`): one step from x0 for every draw, and more, each from
        where the last ended, for the draws where the objective disagreed with its quadratic model
        (GAUSS_NEWTON_TOLERANCE, GAUSS_NEWTON_RATIO; module docstring)."""
        n = x0.shape[0]
        flat_x0 = x0.flatten(1).double()
        offset = torch.zeros_like(flat_x0)                                   # x - x0, (B, D)
        rows = torch.arange(n, device=x0.device)
        normal_all = self._rows(self.normal_matrix, n)
        projected_all = self._rows(self.projected_flux, n)
        active = self.forward_model.active_bins
        self.draws_scored += n
        for _ in range(GAUSS_NEWTON_ITERATIONS):
            self.gauss_newton_steps += rows.numel()
            x = (flat_x0[rows] + offset[rows]).to(x0.dtype).view((-1,) + tuple(x0.shape[1:]))
            d, e, normal = shrink[rows], offset[rows], normal_all[rows]
            physical = self.transform.physical(x)
            d_physical = self.transform.physical_derivative(x)
            coefficients, d_sfr, d_logz = self.forward_model.coefficient_jacobian(physical, self.table)
            coefficients = coefficients.double()
            galaxy = rows // (n // self.flux.shape[0])
            data_term = None
            if self.calibration_degree:         # the polynomial profiled out, per draw where it stands
                normal, residual = self._profiled_system(coefficients, galaxy)
                data_term = self._profiled_half_chi2
            else:
                residual = projected_all[rows] - torch.bmm(normal, coefficients.unsqueeze(-1)).squeeze(-1)   # u = b - M c
            jacobian = torch.cat([d_sfr * d_physical[:, 0, active, None],
                                  d_logz * d_physical[:, 1, active, None]], dim=1).double()   # J, (B, 2 bins, K)
            # The linearised problem at x has its minimiser at x0 + C K^T w with
            # w = (I + M K C K^T)^-1 (u + M K (x - x0)) (Woodbury); with J = `jacobian` (the
            # docstring's K^T) and P = V_active^T J, K C K^T = P^T diag(d) P: a K x K solve per draw,
            # in float64 (M spans many decades: in float32 some draws of faint galaxies diverged).
            projected_jacobian = torch.einsum("ad,bak->bdk", self._cov_vectors_active, jacobian)     # P, (B, D, K)
            system = torch.bmm(normal, torch.bmm(projected_jacobian.transpose(1, 2), d.unsqueeze(-1) * projected_jacobian))
            system.diagonal(dim1=1, dim2=2).add_(1.0)
            linear_change = torch.einsum("bak,ba->bk", jacobian, e[:, self._flat_active])               # K (x - x0)
            rhs = residual + torch.bmm(normal, linear_change.unsqueeze(-1)).squeeze(-1)
            solved = torch.linalg.solve(system, rhs.unsqueeze(-1))
            # The step to that minimiser over all 128 dimensions (correlations carry it to bins the
            # data do not see), in Sigma's eigenbasis (no 128 x 128 product per draw).
            e_eigen = e @ self._cov_vectors                                                           # V^T (x - x0)
            step_eigen = d * torch.bmm(projected_jacobian, solved).squeeze(-1) - e_eigen               # V^T step
            step = step_eigen @ self._cov_vectors.T
            gradient = torch.bmm(jacobian, residual.unsqueeze(-1)).squeeze(-1)                         # K^T u
            descent = (gradient * step[:, self._flat_active]).sum(-1) - (e_eigen * step_eigen / d).sum(-1)
            alpha, f0, f = self._line_search(x, step, e_eigen, step_eigen, d, coefficients, descent, normal,
                                             projected_all[rows], data_term, galaxy)
            offset[rows] = e + alpha.view(-1, 1) * step
            # The quadratic model of f along the step, f0 - descent (alpha - alpha^2 / 2) (descent =
            # step^T H step for the Gauss-Newton Hessian H), against f where the step ended: where they
            # agree the linearisation held and x is its minimiser; elsewhere step again from x.
            predicted_decrease = descent * (alpha - 0.5 * alpha ** 2)
            mismatch = (f0 - f - predicted_decrease).abs()
            rows = rows[(mismatch > GAUSS_NEWTON_TOLERANCE) & (mismatch > GAUSS_NEWTON_RATIO * predicted_decrease.abs())]
            if rows.numel() == 0:
                break
        return offset

    def _line_search(self, x, step, e_eigen, step_eigen, shrink, coefficients, descent, normal, projected,
                     data_term=None, galaxy=None):
        """Step lengths alpha in {1, 1/2, ..., 2^-(LINE_SEARCH_HALVINGS-1)}, or 0, times a trust
        factor, per draw: the largest that satisfies Armijo's condition on the proximal objective
        the Gauss-Newton step linearises,

            f(x) = 1/2 c(x)^T M c(x) - b^T c(x) + 1/2 (x - x0)^T C^-1 (x - x0)

        (chi^2 / 2 up to a constant, plus the term of p(x0 | x_t) = N(x0, C)), that is
        f(x + alpha step) <= f(x) - 1e-4 alpha descent.  `x` (B, 2, 64) is where the step starts,
        `step` (B, D) its direction over the flat normalised history, `e_eigen` and `step_eigen` the
        offset x - x0 and the step in the eigenbasis of Sigma, `shrink` C's eigenvalues there (B, D),
        `descent` (B,) the objective's decrease along the step at x (positive: a descent direction),
        and `normal` and `projected` the per-draw normal matrix M (B, K, K) and b = B W y (B, K).
        With a flux-calibration polynomial `data_term(c, galaxy)` gives chi^2 / 2 instead, the
        polynomial profiled out (`_profiled_half_chi2`; `galaxy`: each draw's observation).

        The trust factor keeps a step no longer than TRUST_RADIUS sqrt(D) in C's metric: under
        N(x0, C) such a move has a chance below 1e-100, and only a linearisation far off asks for one
        (measured: steps up to 1e7 long at the first noise levels, where the prior's denoised history
        had a bin at the SFR cap and the step through its neighbours carried it 2e5 further out;
        every such draw ended at the cap).  For a linear model f is quadratic and alpha = 1, its exact
        minimiser, always passes: the analytic posterior is unchanged.  With the prior's log-like SFR
        transform a full step can overshoot by orders of magnitude (a bin whose SFR is already large
        has the largest Jacobian, so it takes most of the shift, and its light grows exponentially
        along it); the search shortens such a step.  Only the draws that fail are tried again, halved.
        Returns alpha, f at x and f where the step ends (B,) each."""
        def objective(c, at, a):                  # f per draw, float64
            prior_term = 0.5 * ((e_eigen[at] + a.view(-1, 1) * step_eigen[at]) ** 2 / shrink[at]).sum(-1)
            if data_term is not None:
                return data_term(c, galaxy[at]) + prior_term
            return 0.5 * torch.einsum("bk,bkl,bl->b", c, normal[at], c) - (c * projected[at]).sum(-1) + prior_term

        n = x.shape[0]
        everything = torch.arange(n, device=x.device)
        f0 = objective(coefficients, everything, torch.zeros(n, dtype=torch.float64, device=x.device))
        length = (step_eigen ** 2 / shrink).sum(-1).sqrt()
        longest = torch.clamp(TRUST_RADIUS * math.sqrt(self.dim) / length.clamp_min(1e-300), max=1.0)
        alpha = torch.zeros(n, dtype=torch.float64, device=x.device)
        f_accepted = f0.clone()
        pending = everything
        flat = x.flatten(1)
        for halving in range(LINE_SEARCH_HALVINGS):
            a = longest[pending] * 0.5 ** halving
            trial = (flat[pending] + (a.view(-1, 1) * step[pending]).to(x.dtype)).view_as(x[pending])
            c = self.forward_model.coefficients_only(self.transform.physical(trial), self.table).double()
            f = objective(c, pending, a)
            ok = f <= f0[pending] - 1e-4 * a * descent[pending]
            alpha[pending[ok]] = a[ok]
            f_accepted[pending[ok]] = f[ok]
            pending = pending[~ok]
            if pending.numel() == 0:
                break
        return alpha, f0, f_accepted

    def chi2(self, histories_physical: torch.Tensor):
        """Model spectra of physical histories, chi^2 and mean |residual|/sigma over unmasked pixels
        (in pixel space, with the full model), and the calibration polynomial's coefficients per
        draw (None without one; the spectra then include it)."""
        n = histories_physical.shape[0]
        calibration = None
        with torch.no_grad():
            spectra = self.forward_model(histories_physical, av=self.av, validate=False)
            if self.calibration_degree:
                from .fluxcal import polynomial, solve_coefficients

                calibration = solve_coefficients(spectra.double(), self._rows(self._flux64, n),
                                                 self._rows(self._weight64, n), self.calibration_basis)
                spectra = (spectra.double() * polynomial(calibration, self.calibration_basis)).to(spectra.dtype)
            normalised = (self._rows(self.flux, n) - spectra) / self._rows(self.noise_variance, n).sqrt()
            used = self._rows(self.used, n)
            chi2 = (normalised ** 2 * used).sum(1)
            mean_abs = (normalised.abs() * used).sum(1) / used.sum(1)
        return spectra, chi2, mean_abs, calibration


def grouped_scores(parts, t: torch.Tensor, x_t: torch.Tensor, prior) -> tuple[torch.Tensor, torch.Tensor]:
    """(prior score, likelihood score) for a batch whose row blocks belong to different likelihoods:
    `parts` is a list of (SpectrumLikelihood, slice of rows).  The prior network is called once for
    all rows (the point of vectorised sampling); each likelihood scores its own rows."""
    kinds = {likelihood.kind for likelihood, _ in parts}
    if len(kinds) != 1:
        raise ValueError(f"one batch needs one likelihood kind, got {sorted(kinds)}")
    sigma_t = prior.sigma(t)
    if kinds == {"cla"}:
        with torch.no_grad():
            prior_score = prior.score(t, x_t)
        grads = [likelihood._cla_score(x_t[rows], sigma_t[rows], prior_score[rows]) for likelihood, rows in parts]
    else:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            prior_score = prior.score(t, x)
            denoised = x + sigma_t.view(-1, *([1] * (x.dim() - 1))) ** 2 * prior_score
            total = sum(likelihood.log_likelihood(denoised[rows]).sum() for likelihood, rows in parts)
            grad, = torch.autograd.grad(total, x)
        prior_score = prior_score.detach()
        grads = [grad[rows] for _, rows in parts]
    clipped = [_clip_rows(g, clip_norm(likelihood.clip, sigma_t[rows], likelihood.dim))
               for g, (likelihood, rows) in zip(grads, parts)]
    return prior_score, torch.cat(clipped) if len(clipped) > 1 else clipped[0]


class LikelihoodGroups:
    """Several `SpectrumLikelihood`s (different forward models: redshifts, wavelengths, A_V) over
    consecutive blocks of one batch, `rows` rows each; `score` has SpectrumLikelihood's signature."""

    def __init__(self, likelihoods, rows):
        if len(likelihoods) != len(rows) or not likelihoods:
            raise ValueError("need one row count per likelihood")
        edges = np.cumsum([0, *rows])
        self.parts = [(likelihood, slice(int(a), int(b))) for likelihood, a, b in zip(likelihoods, edges[:-1], edges[1:])]
        self.n_rows = int(edges[-1])

    def score(self, t: torch.Tensor, x_t: torch.Tensor, prior) -> tuple[torch.Tensor, torch.Tensor]:
        if x_t.shape[0] != self.n_rows:
            raise ValueError(f"the batch has {x_t.shape[0]} rows, the groups {self.n_rows}")
        return grouped_scores(self.parts, t, x_t, prior)
