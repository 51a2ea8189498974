"""Flux-calibration polynomial: a multiplicative Legendre polynomial in observed wavelength that
absorbs what a survey's spectrophotometry gets wrong, so that it does not leak into dust, age and
metallicity (pPXF's `mdegree`, bagpipes' maximum-likelihood polynomial, Prospector's PolySpecModel).

The model of a draw is  P(lambda) S(lambda),  P = 1 + sum_{k=1..degree} p_k L_k(u), with L_k the
Legendre polynomials and u = 2 (lambda - lambda_min) / (lambda_max - lambda_min) - 1 over the
observation's wavelengths.  The constant term is fixed at 1, so that P leaves the overall flux
level (the mass) to the history, as pPXF's multiplicative polynomial does.  The flux is linear in
p, so for a given model spectrum S the best p is a weighted linear least-squares solve, one small
(degree x degree) system per draw (`solve_coefficients`).  The likelihood (sfhkit.likelihood)
profiles it out of every Gauss-Newton step (variable projection: the best p where the draw stands,
and the Schur complement of the joint normal matrix of history and polynomial, all in the model's
coefficient space through the Legendre products L_a L_b = sum_n s_abn L_n, `legendre_products`),
and solves it once more, in pixel space with the full model, on the final draws.  It is a profile,
not a marginal: p gets no prior and no uncertainty of its own.
"""

from __future__ import annotations

import numpy as np
import torch

# A tiny ridge on the normal equations: a draw whose model is 0 in every used pixel has none.
RIDGE = 1e-12
# The degree real spectra get by default (`sfhkit infer`, `sfhkit batch`); mocks get none.  Chosen
# on the six shared SDSS spectra (`sfhkit polynomial-check`, README "Real spectra").
DEFAULT_DEGREE = 8


def default_degree(likelihood: str = "cla", cla: str = "jacobian") -> int:
    """The polynomial degree a real spectrum gets by default: DEFAULT_DEGREE with the default
    likelihood (the only one that profiles the polynomial), else 0."""
    return DEFAULT_DEGREE if (likelihood, cla) == ("cla", "jacobian") else 0


def legendre_basis(wavelength, degree: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """(degree + 1, n_pixels) Legendre polynomials L_0..L_degree of the wavelengths mapped onto [-1, 1]."""
    if int(degree) != degree or degree < 0:
        raise ValueError(f"the calibration polynomial's degree must be an integer >= 0, got {degree!r}")
    w = np.asarray(wavelength, dtype=float)
    u = 2 * (w - w.min()) / (w.max() - w.min()) - 1
    return torch.as_tensor(np.polynomial.legendre.legvander(u, int(degree)).T, dtype=dtype, device=device)


def legendre_products(degree: int) -> torch.Tensor:
    """s (degree + 1, degree + 1, 2 degree + 1): L_a L_b = sum_n s_abn L_n (float64)."""
    from numpy.polynomial import legendre

    d = int(degree)
    s = np.zeros((d + 1, d + 1, 2 * d + 1))
    for a in range(d + 1):
        for b in range(d + 1):
            product = legendre.legmul(np.eye(d + 1)[a], np.eye(d + 1)[b])
            s[a, b, :product.size] = product
    return torch.as_tensor(s)


def solve_coefficients(model_flux: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor,
                       basis: torch.Tensor) -> torch.Tensor:
    """p (batch, degree) minimising sum W (y - (1 + p L) S)^2 per draw, for model spectra S
    (batch, pixels), data y and weights W = used / sigma^2 (batch or 1, pixels) and the basis
    of `legendre_basis` (degree + 1, pixels)."""
    design = model_flux.unsqueeze(1) * basis[1:].unsqueeze(0)                       # (B, d, P): S L_k
    normal = torch.einsum("bkp,bp,blp->bkl", design, weight.expand_as(model_flux), design)
    rhs = torch.einsum("bkp,bp->bk", design, weight * (flux - model_flux))
    return solve_normal_equations(normal, rhs)


def solve_normal_equations(normal: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """p (batch, d) from the normal equations (batch, d, d) p = rhs (batch, d), with a relative ridge
    of RIDGE."""
    scale = normal.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-300)
    ridged = normal + (RIDGE * scale).view(-1, 1, 1) * torch.eye(normal.shape[-1], dtype=normal.dtype,
                                                                  device=normal.device)
    return torch.linalg.solve(ridged, rhs.unsqueeze(-1)).squeeze(-1)


def polynomial(coefficients: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """P = 1 + p L per draw (batch, pixels)."""
    return 1.0 + coefficients @ basis[1:]
