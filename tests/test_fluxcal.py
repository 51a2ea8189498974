"""The flux-calibration polynomial: exact least squares, the likelihood's term sums against a direct
computation, and a mock whose flux calibration is off recovered by the sampler."""

import numpy as np
import pytest
import torch

from sfhkit import Prior, sample_posterior
from sfhkit.fluxcal import legendre_basis, polynomial, solve_coefficients
from sfhkit.histories import example_history
from sfhkit.likelihood import SpectrumLikelihood
from sfhkit.observation import mock_observation, sdss_wavelength

TRUE_TERMS = np.array([0.06, -0.04, 0.02])        # P = 1 + 0.06 L1 - 0.04 L2 + 0.02 L3: a 10 % tilt and bow


def test_least_squares_recovers_a_known_polynomial():
    wavelength = np.linspace(3800.0, 9200.0, 2000)
    basis = legendre_basis(wavelength, 3)
    np.testing.assert_allclose(basis[1].numpy()[[0, -1]], [-1.0, 1.0])
    rng = np.random.default_rng(1)
    model = torch.as_tensor(3.0 + rng.uniform(size=(4, wavelength.size)))
    truth = torch.as_tensor(np.stack([TRUE_TERMS * (k + 1) for k in range(4)]))
    flux = model * polynomial(truth, basis)
    weight = torch.ones(1, wavelength.size, dtype=torch.float64)
    np.testing.assert_allclose(solve_coefficients(model, flux, weight, basis).numpy(), truth.numpy(), atol=1e-10)
    with pytest.raises(ValueError, match="degree"):
        legendre_basis(wavelength, -1)


@pytest.fixture(scope="module")
def mock(grid):
    from sfhkit import ForwardModel

    model = ForwardModel(grid, sdss_wavelength(), 0.05, 0.2)
    obs = mock_observation(example_history().numpy(), model, snr=50, seed=3)
    basis = legendre_basis(obs.wavelength, 3).numpy()
    off = 1.0 + TRUE_TERMS @ basis[1:]
    miscalibrated = obs.__class__(obs.wavelength, obs.flux * off, obs.sigma * off, obs.redshift, obs.av,
                                  metadata=dict(obs.metadata))
    return miscalibrated, model


def test_the_profiled_chi2_and_its_gauss_newton_system_against_pixel_space(mock):
    """The likelihood's coefficient-space sums (Legendre products, variable projection) against a
    direct pixel-space computation: the best polynomial and chi^2, and the Schur complement of the
    joint Gauss-Newton normal matrix of (history coefficients, polynomial)."""
    obs, model = mock
    like = SpectrumLikelihood(obs, model, Prior.default().transform, calibration_degree=3, rank=None)   # all of the basis
    history = torch.as_tensor(example_history().numpy()[None] * [[1.3], [1.0]], dtype=torch.float32)
    c = model.coefficient_jacobian(history, like.table)[0].double()
    galaxy = torch.zeros(1, dtype=torch.long)
    _, basis = model.linear_parts(obs.av)
    basis = basis.double()
    weight, flux = torch.as_tensor(obs.mask / obs.sigma ** 2), torch.as_tensor(obs.flux)
    model_flux = c @ basis
    p = solve_coefficients(model_flux, flux[None], weight[None], like.calibration_basis)
    factor = polynomial(p, like.calibration_basis)[0]
    chi2 = (weight * (flux - factor * model_flux[0]) ** 2).sum()
    half = like._profiled_half_chi2(c, galaxy)[0] + 0.5 * (weight * flux ** 2).sum()
    assert half.item() == pytest.approx(0.5 * chi2.item(), rel=1e-9)
    normal, gradient = like._profiled_system(c, galaxy)
    jc = factor[:, None] * basis.T                                                  # d model / d c
    design = model_flux[0][:, None] * like.calibration_basis[1:].T                   # d model / d p
    m_cc, m_cp, m_pp = jc.T @ (weight[:, None] * jc), jc.T @ (weight[:, None] * design), design.T @ (weight[:, None] * design)
    schur = m_cc - m_cp @ torch.linalg.solve(m_pp, m_cp.T)
    scale = m_cc.abs().max().item()
    np.testing.assert_allclose(normal[0].numpy(), schur.numpy(), atol=1e-7 * scale)
    residual = flux - factor * model_flux[0]
    np.testing.assert_allclose(gradient[0].numpy(), (jc.T @ (weight * residual)).numpy(),
                               atol=1e-8 * (jc.T @ (weight * flux)).abs().max().item())
    with pytest.raises(ValueError, match="needs the default likelihood"):
        SpectrumLikelihood(obs, model, Prior.default().transform, kind="dps", calibration_degree=3)


def test_the_likelihood_rank_keeps_the_leading_components_and_the_dust_term(mock):
    """The Jacobian CLA at a lower rank (sfhkit.likelihood.LIKELIHOOD_RANK) is the compressed model
    truncated: its first SVD components and the dust-emission term, exactly; None keeps them all."""
    from sfhkit.likelihood import LIKELIHOOD_RANK

    obs, model = mock
    transform = Prior.default().transform
    full = SpectrumLikelihood(obs, model, transform, rank=None)
    default = SpectrumLikelihood(obs, model, transform)
    assert full.rank == model.rank and default.rank == LIKELIHOOD_RANK < model.rank
    keep = list(range(LIKELIHOOD_RANK)) + [model.rank]                      # the dust term is the last column
    assert torch.equal(default.table, full.table[..., keep])
    torch.testing.assert_close(default.normal_matrix, full.normal_matrix[:, keep][:, :, keep])
    assert SpectrumLikelihood(obs, model, transform, rank=10_000).rank == model.rank
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="rank must be"):
            SpectrumLikelihood(obs, model, transform, rank=bad)

def test_a_calibration_error_leaks_into_the_history_without_the_polynomial_and_not_with_it(mock, grid):
    """A 10 % tilt and bow on a mock: fitted as it is, chi^2 looks fine but the mass-weighted age
    moves by more than a Gyr (the continuum's shape is read as age); with the polynomial the fits of
    the miscalibrated and the clean spectrum agree, at chi^2 per pixel about 1, and the recovered
    polynomial is the true one to a per cent."""
    from dataclasses import replace

    obs, model = mock
    clean = replace(obs, flux=obs.flux / _factor(obs), sigma=obs.sigma / _factor(obs), metadata=dict(obs.metadata))
    prior = Prior.default()

    def fit(o, degree):
        return sample_posterior(o, prior, model, n=12, steps=40, seed=0, progress=False, calibration_degree=degree)

    def age(p):
        return float(np.median(p.derived()["mass_weighted_age_gyr"]))

    plain_clean, plain_off = fit(clean, 0), fit(obs, 0)
    poly_clean, poly_off = fit(clean, 3), fit(obs, 3)
    assert plain_off.calibration is None and abs(age(plain_off) - age(plain_clean)) > 1.0
    assert abs(age(poly_off) - age(poly_clean)) < 0.3
    assert poly_off.median_chi2_per_pixel() < 1.05 and poly_clean.median_chi2_per_pixel() < 1.05
    assert poly_off.config["calibration_degree"] == 3 and poly_off.calibration.shape == (12, 3)
    assert np.abs(np.median(poly_off.calibration_polynomial(), axis=0) / _factor(obs) - 1).max() < 0.01


def _factor(obs):
    return 1.0 + TRUE_TERMS @ legendre_basis(obs.wavelength, 3).numpy()[1:]


def test_the_polynomial_travels_in_the_posterior_file(mock, tmp_path):
    from sfhkit import Posterior

    obs, model = mock
    fitted = sample_posterior(obs, Prior.default(), model, n=3, steps=5, seed=0, progress=False, calibration_degree=2)
    loaded = Posterior.load(fitted.save(tmp_path / "p.nc"))
    np.testing.assert_allclose(loaded.calibration, fitted.calibration)
    np.testing.assert_allclose(loaded.calibration_polynomial(), fitted.calibration_polynomial())
    import matplotlib

    matplotlib.use("Agg")
    from sfhkit.plots import plot_posterior

    figure = plot_posterior(loaded)
    assert any(ax.get_ylabel() == "calibration polynomial P" for ax in figure.axes)
