"""Velocity dispersion inferred with the history (sfhkit.dispersion): the broadened instrument-only
model against models built at sigma_v, the conditional's peak at the truth, the draws of a known
conditional, a 250 km/s mock recovered end to end, and bad input refused."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from sfhkit import ForwardModel, Prior
from sfhkit.dispersion import (VDISP_PRIOR_KMS, DispersionLikelihood, sample_with_vdisp, should_infer_vdisp,
                               vdisp_grid_kms)
from sfhkit.histories import example_history
from sfhkit.lsf import LineSpread
from sfhkit.observation import Observation, mock_observation, sdss_wavelength

INSTRUMENT_KMS = 70.0
REDSHIFT = 0.1


@pytest.fixture(scope="module")
def instrument_model(grid):
    return ForwardModel(grid, sdss_wavelength(), REDSHIFT, 0.2, line_spread=LineSpread(0.0, INSTRUMENT_KMS))


def _spectrum(model, history):
    with torch.no_grad():
        return model(torch.as_tensor(history, dtype=torch.float32)).double().numpy()


def _observation(flux, snr=20.0, **kwargs):
    wavelength = sdss_wavelength()
    return Observation(wavelength, flux, np.full(wavelength.size, flux.mean() / snr), REDSHIFT, 0.2,
                       instrument_sigma_kms=np.full(wavelength.size, INSTRUMENT_KMS), **kwargs)


@pytest.mark.parametrize("vdisp_kms", [80.0, 250.0])
def test_broadened_model_is_the_model_built_at_sigma_v(grid, instrument_model, vdisp_kms):
    """The module docstring's figure: the instrument-only model broadened on the pixels differs from
    a model built at sigma_v (broadened on the library's pixels) by chi^2 < 1.1 over 3800 pixels at
    S/N 20; the conditional of the true history at S/N 20 then peaks within 1 km/s of the truth."""
    history = example_history().numpy()
    built = ForwardModel(grid, sdss_wavelength(), REDSHIFT, 0.2, line_spread=LineSpread(vdisp_kms, INSTRUMENT_KMS))
    truth = _spectrum(built, history)
    obs = _observation(truth)
    likelihood = DispersionLikelihood(obs, instrument_model, grid)
    broadened = _spectrum(likelihood.model_at(vdisp_kms), history)
    assert np.sum(((broadened - truth) / obs.sigma) ** 2) < 1.1
    assert likelihood.model_at(vdisp_kms).line_spread.velocity_dispersion_kms == vdisp_kms
    fine = np.arange(vdisp_kms - 20, vdisp_kms + 20.01, 0.5)
    exact = DispersionLikelihood(obs, instrument_model, grid, vdisp_kms=fine).log_likelihood(history[None])[0]
    assert abs(fine[np.argmax(exact)] - vdisp_kms) <= 1.0


def test_polynomial_solved_at_every_sigma_v(grid, instrument_model):
    """A 5 % calibration error: with the polynomial the conditional still peaks at the truth and its
    chi^2 there is the noise-free fit's; without it the fit is far off."""
    from sfhkit.fluxcal import legendre_basis

    history = example_history().numpy()
    built = ForwardModel(grid, sdss_wavelength(), REDSHIFT, 0.2, line_spread=LineSpread(180.0, INSTRUMENT_KMS))
    calibration = 1 + np.array([0.05, -0.03, 0.02]) @ legendre_basis(sdss_wavelength(), 3).numpy()[1:]
    obs = _observation(_spectrum(built, history) * calibration)
    values = np.arange(160.0, 200.01, 2.0)
    with_polynomial = DispersionLikelihood(obs, instrument_model, grid, values, calibration_degree=8)
    log_like = with_polynomial.log_likelihood(history[None])[0]
    assert abs(values[np.argmax(log_like)] - 180.0) <= 2.0
    assert -2 * log_like.max() < 2.0
    without = DispersionLikelihood(obs, instrument_model, grid, values).log_likelihood(history[None])[0]
    assert -2 * without.max() > 100.0


def test_draws_follow_a_known_conditional(grid, instrument_model, monkeypatch):
    """For a Gaussian log-likelihood (mean 203.3, sd 6 km/s) tabulated on the 5 km/s grid the draws
    (spline, 0.5 km/s inverse CDF) have that mean and sd; a conditional beyond the prior piles up
    against its end, inside the range."""
    obs = _observation(_spectrum(instrument_model, example_history().numpy()))
    likelihood = DispersionLikelihood(obs, instrument_model, grid)
    grid_kms = likelihood.vdisp_kms
    np.testing.assert_allclose(grid_kms, vdisp_grid_kms())
    assert grid_kms[0] == VDISP_PRIOR_KMS[0] and grid_kms[-1] == VDISP_PRIOR_KMS[1]
    gaussian = -0.5 * ((grid_kms - 203.3) / 6.0) ** 2
    monkeypatch.setattr(likelihood, "log_likelihood", lambda h, av=None: np.tile(gaussian, (len(h), 1)))
    draws = likelihood.draws(np.zeros((20000, 2, 64)), np.random.default_rng(0))
    assert abs(draws.mean() - 203.3) < 4 * 6.0 / np.sqrt(20000)
    assert abs(draws.std() / 6.0 - 1) < 0.03
    beyond = -0.5 * ((grid_kms - 600.0) / 20.0) ** 2
    monkeypatch.setattr(likelihood, "log_likelihood", lambda h, av=None: np.tile(beyond, (len(h), 1)))
    edge = likelihood.draws(np.zeros((500, 2, 64)), np.random.default_rng(1))
    # the tail exp(-0.375 (450 - v)) has mean 450 - 2.7 km/s
    assert edge.max() <= VDISP_PRIOR_KMS[1] and abs(edge.mean() - (VDISP_PRIOR_KMS[1] - 2.67)) < 0.5


def test_mock_at_250_kms_recovered(grid, tmp_path):
    """A 250 km/s mock (S/N 20, model built at 250 km/s) fitted with no sigma_v: sigma_v within 3
    sigma of the truth, the histories sampled at the last short pass's value (within 25 km/s), the draws
    in the posterior file and the summary, the source stated."""
    from sfhkit.posterior import Posterior

    built = ForwardModel(grid, sdss_wavelength(), REDSHIFT, 0.2, line_spread=LineSpread(250.0, INSTRUMENT_KMS))
    mock = mock_observation(example_history().numpy(), built, snr=20, seed=3)
    mock = replace(mock, instrument_sigma_kms=np.full(mock.wavelength.size, INSTRUMENT_KMS))
    assert should_infer_vdisp(mock)
    post = sample_with_vdisp(mock, Prior.default(), grid, n=24, steps=100, seed=1, progress=False)
    vdisp = post.vdisp_kms[post.kept]
    assert abs(vdisp.mean() - 250.0) < 3 * vdisp.std() and 2.0 < vdisp.std() < 25.0
    assert abs(post.observation.velocity_dispersion_kms - 250.0) < 25.0
    assert post.observation.metadata["velocity_dispersion_source"].startswith("inferred")
    passes = post.config["vdisp_inference"]["short_passes"]
    assert passes["draws"] == 24 and passes["medians_kms"][-1] == post.observation.velocity_dispersion_kms
    assert 1 <= len(passes["medians_kms"]) <= 3
    assert post.summary()["vdisp_kms"]["unit"] == "km/s"
    assert post.median_chi2_per_pixel() < 1.2
    back = Posterior.load(post.save(tmp_path / "p.nc"))
    np.testing.assert_allclose(back.vdisp_kms, post.vdisp_kms)


def test_av_from_the_short_passes(grid):
    """sigma_v and A_V inferred together, the fit's A_V from sigma_v's short passes (no A_V pass of
    its own): a 220 km/s mock at A_V = 0.8 with a 4 % calibration error; the A_V path recorded and
    the fit at its last value, A_V and sigma_v within 3 sigma of the truth (sfhkit.attenuation's
    conditional on the returned fit), chi^2 per pixel near 1."""
    from sfhkit.attenuation import infer_av

    built = ForwardModel(grid, sdss_wavelength(), REDSHIFT, 0.0, line_spread=LineSpread(220.0, INSTRUMENT_KMS))
    mock = mock_observation(example_history().numpy(), built, snr=20, seed=4, av=0.8, calibration=[0.04, -0.02])
    mock = replace(mock, instrument_sigma_kms=np.full(mock.wavelength.size, INSTRUMENT_KMS))
    fit = sample_with_vdisp(mock, Prior.default(), grid, n=32, steps=120, seed=2, progress=False,
                            calibration_degree=8, av_from_short_passes=True)
    passes = fit.config["vdisp_inference"]["short_passes"]
    assert passes["av_medians_mag"][0] == 0.0 and len(passes["av_medians_mag"]) == len(passes["medians_kms"]) + 1
    assert fit.observation.av == passes["av_medians_mag"][-1] == fit.observation.metadata["av_first_pass_mag"]
    post = infer_av(fit, seed=3)
    av, vdisp = post.av[post.kept], post.vdisp_kms[post.kept]
    assert abs(av.mean() - 0.8) < 3 * av.std() and abs(vdisp.mean() - 220.0) < 3 * vdisp.std()
    assert post.median_chi2_per_pixel() < 1.2


def test_bad_input_is_refused(grid, instrument_model):
    flux = _spectrum(instrument_model, example_history().numpy())
    no_instrument = replace(_observation(flux), instrument_sigma_kms=None)
    assert not should_infer_vdisp(no_instrument)
    with pytest.raises(ValueError, match="instrumental resolution"):
        sample_with_vdisp(no_instrument, Prior.default(), grid, n=2, steps=2, progress=False)
    given = _observation(flux, velocity_dispersion_kms=200.0)
    assert not should_infer_vdisp(given) and not should_infer_vdisp(_observation(flux), line_spread=False)
    with pytest.raises(ValueError, match="has a velocity dispersion"):
        sample_with_vdisp(given, Prior.default(), grid, n=2, steps=2, progress=False)
    for dusty, degree in ((replace(_observation(flux), av=0.3), 8), (replace(_observation(flux), av=0.0), 0)):
        with pytest.raises(ValueError, match="A_V = 0 and the calibration polynomial"):
            sample_with_vdisp(dusty, Prior.default(), grid, n=2, steps=2, progress=False, calibration_degree=degree,
                              av_from_short_passes=True)


def test_sigma_v_at_the_prior_edge_is_flagged(grid, instrument_model):
    from sfhkit.cosmology import TimeBins
    from sfhkit.posterior import Posterior

    obs = _observation(_spectrum(instrument_model, example_history().numpy()))
    n = 10
    post = Posterior(obs, np.tile(example_history().numpy(), (n, 1, 1)), np.tile(obs.flux, (n, 1)), np.ones(n),
                     np.ones(n), np.full(n, 1e10), np.ones(n, dtype=bool), 12.4, TimeBins(), {},
                     vdisp_kms=np.full(n, 445.0))
    assert "vdisp_at_prior_edge" in [w["code"] for w in post.warnings()]
    assert "vdisp_at_prior_edge" not in [w["code"] for w in replace(post, vdisp_kms=np.full(n, 220.0)).warnings()]


def test_calibrate_infer_vdisp_reports_coverage_and_pulls(grid):
    """`sfhkit calibrate --infer-vdisp` (tiny settings): mocks with their own sigma_v in 80-350 km/s,
    the report has sigma_v's coverage, pulls and per-galaxy truths (the figures come from a real run)."""
    from sfhkit.calibration import MOCK_VDISP_KMS, calibrate

    report = calibrate(2, n=6, steps=10, infer_vdisp=True, redshift=REDSHIFT, snr=20, progress=False)
    assert report["infer_vdisp"] and report["vdisp_mocks"]
    assert set(report["coverage"]["vdisp_kms"]) == {"0.68", "0.95"}
    assert set(report["vdisp_kms_pulls"]) >= {"within_1_sigma", "within_2_sigma", "median_posterior_std"}
    truths = report["per_galaxy"]["vdisp_kms"]["truth"]
    assert len(truths) == 2 and all(MOCK_VDISP_KMS[0] <= v <= MOCK_VDISP_KMS[1] for v in truths)
