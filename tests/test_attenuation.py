"""A_V from the calibration polynomial's shape (sfhkit.attenuation): the attenuation curve as a
polynomial, the per-draw conditional against its analytic Gaussian, and an A_V = 1 mock with a
calibration error recovered end to end."""

import numpy as np
import pytest
import torch

from sfhkit import Prior, sample_posterior
from sfhkit.attenuation import (AV_GRID_STEP_MAG, attenuation_coefficients, av_log_likelihood, first_pass_av,
                                infer_av)
from sfhkit.dust import calzetti_a_over_av
from sfhkit.fluxcal import legendre_basis
from sfhkit.histories import example_history
from sfhkit.observation import mock_observation, sdss_wavelength


@pytest.mark.parametrize("av, rms_bound", [(0.5, 4e-4), (2.0, 1.6e-3)])
def test_attenuation_curve_as_a_degree_8_polynomial(av, rms_bound):
    """The module docstring's figures: Calzetti's curve is a degree-8 Legendre polynomial over the
    SDSS wavelengths to an rms of 3.4e-4 (A_V 0.5) and 1.5e-3 (A_V 2) of the flux, at z = 0.05-0.1."""
    wavelength = sdss_wavelength()
    for z in (0.05, 0.1):
        tau = attenuation_coefficients(wavelength, z, av, 8)[0]
        curve = 10 ** (-0.4 * av * calzetti_a_over_av(wavelength / (1 + z)))
        fit = tau @ legendre_basis(wavelength, 8).numpy()
        assert np.sqrt(np.mean((fit / curve - 1) ** 2)) < rms_bound
    # no dust: the constant 1
    np.testing.assert_allclose(attenuation_coefficients(wavelength, 0.1, 0.0, 8)[0], np.eye(9)[0], atol=1e-12)


def test_conditional_is_the_gaussian_of_the_linearised_curve():
    """For polynomial coefficients at mu(A_V = 0.8) the draws' A_V have mean 0.8 and the standard
    deviation sd / |d mu / d A_V| of the linearised Gaussian, within sampling noise."""
    wavelength = sdss_wavelength()
    sd = 0.05

    def mean_at(av):
        tau = attenuation_coefficients(wavelength, 0.1, av, 8)[0]
        return tau[1:] / tau[0]

    slope = (mean_at(0.801) - mean_at(0.799)) / 0.002
    expected_std = sd / np.linalg.norm(slope)
    post = _fake_posterior(np.tile(mean_at(0.8), (4000, 1)))
    inferred = infer_av(post, calibration_sd=sd, seed=1)
    assert abs(inferred.av.mean() - 0.8) < 4 * expected_std / np.sqrt(4000) + AV_GRID_STEP_MAG
    assert abs(inferred.av.std() / expected_std - 1) < 0.05
    # the intrinsic history: SFR / grey factor; metallicity untouched
    grey = attenuation_coefficients(wavelength, 0.1, inferred.av, 8)[:, 0]
    np.testing.assert_allclose(inferred.histories[:, 0], post.histories[:, 0] / grey[:, None])
    np.testing.assert_array_equal(inferred.histories[:, 1], post.histories[:, 1])
    np.testing.assert_allclose(inferred.surviving_mass_msun, post.surviving_mass_msun / grey)
    # the log-likelihood peaks at the A_V whose curve the coefficients are
    grid = np.arange(0, 2.0001, 0.01)
    tau = attenuation_coefficients(wavelength, 0.1, grid, 8)
    assert grid[np.argmax(av_log_likelihood(mean_at(1.3)[None], tau, sd)[0])] == pytest.approx(1.3)


def test_fit_at_nonzero_av_infers_relative_to_it():
    """A fit at A_V = a carries T(A_V - a) in its polynomial (Calzetti's curve is exponential in
    A_V): coefficients of T(0.8 - 0.5) at a = 0.5 give draws of mean 0.8 and the standard deviation
    of the Gaussian linearised about it, and the grey factor of A_V - a, above 1 for draws below a."""
    wavelength = sdss_wavelength()
    sd = 0.05

    def relative_mean(av, fit_av):
        tau = attenuation_coefficients(wavelength, 0.1, av - fit_av, 8)[0]
        return tau[1:] / tau[0]

    expected_std = sd / np.linalg.norm((relative_mean(0.801, 0.5) - relative_mean(0.799, 0.5)) / 0.002)
    from_half = infer_av(_fake_posterior(np.tile(relative_mean(0.8, 0.5), (4000, 1)), av=0.5), calibration_sd=sd,
                         seed=1)
    assert abs(from_half.av.mean() - 0.8) < 4 * expected_std / np.sqrt(4000) + AV_GRID_STEP_MAG
    assert abs(from_half.av.std() / expected_std - 1) < 0.05
    grey = attenuation_coefficients(wavelength, 0.1, from_half.av - 0.5, 8)[:, 0]
    np.testing.assert_allclose(from_half.surviving_mass_msun, 1e10 / grey)
    assert (grey[from_half.av < 0.5] > 1).all() and (grey[from_half.av > 0.5] < 1).all()
    assert from_half.config["av_inference"]["fit_av_mag"] == 0.5
    assert "sampled at A_V = 0.500" in from_half.observation.metadata["av_source"]


def _fake_posterior(calibration, av=0.0):
    from sfhkit.cosmology import TimeBins
    from sfhkit.observation import Observation
    from sfhkit.posterior import Posterior

    n = calibration.shape[0]
    wavelength = sdss_wavelength()
    obs = Observation(wavelength, np.ones(wavelength.size), np.ones(wavelength.size), 0.1, av)
    history = example_history().numpy()
    return Posterior(obs, np.tile(history, (n, 1, 1)), np.ones((n, wavelength.size)), np.ones(n), np.ones(n),
                     np.full(n, 1e10), np.ones(n, dtype=bool), 12.4, TimeBins(), {}, calibration)


def test_bad_input_is_refused():
    post = _fake_posterior(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="calibration_sd"):
        infer_av(post, calibration_sd=0.0)
    with pytest.raises(ValueError, match="outside the prior"):
        infer_av(_fake_posterior(np.zeros((3, 8)), av=2.5))
    with pytest.raises(ValueError, match="starts from A_V = 0"):
        first_pass_av(_fake_posterior(np.zeros((3, 8)), av=0.3).observation, None, None, n=8, steps=8,
                      calibration_degree=8)
    no_polynomial = _fake_posterior(np.zeros((3, 8)))
    no_polynomial.calibration = None
    with pytest.raises(ValueError, match="polynomial"):
        infer_av(no_polynomial)


def test_dusty_miscalibrated_mock_recovered(grid, tmp_path):
    """A mock at A_V = 1 with a 5 % calibration error, fitted with the polynomial at A_V = 0 and
    at the A_V of the short first pass: A_V within 3 sigma of the truth, the surviving mass within
    3 sigma (and 0.15 dex) of the truth where the fit at A_V = 0 alone is 0.35 dex low, each way;
    chi^2 per pixel near 1; A_V in the posterior file."""
    from sfhkit import ForwardModel
    from sfhkit.posterior import Posterior, true_quantities

    model = ForwardModel(grid, sdss_wavelength(), 0.1, 0.0)
    history = example_history().numpy()
    obs = mock_observation(history, model, snr=20, seed=5, av=1.0, calibration=[0.04, -0.03, 0.02])
    assert obs.av == 0.0 and obs.metadata["true_av"] == 1.0
    fit = sample_posterior(obs, Prior.default(), model, n=40, steps=150, seed=2, progress=False, calibration_degree=8)
    at_first_pass = first_pass_av(obs, Prior.default(), model, n=40, steps=150, seed=2, calibration_degree=8)
    assert abs(at_first_pass.av - 1.0) < 0.4 and at_first_pass.metadata["av_first_pass_mag"] == at_first_pass.av
    refit = sample_posterior(at_first_pass, Prior.default(), model, n=40, steps=150, seed=2, progress=False,
                             calibration_degree=8)
    truth = true_quantities(history[None], model)["log10_surviving_mass"][0]
    assert fit.derived()["log10_surviving_mass"].mean() < truth - 0.25
    for post in (infer_av(fit, seed=3), infer_av(refit, seed=3)):
        assert abs(post.av.mean() - 1.0) < 3 * post.av.std()
        mass = post.derived()["log10_surviving_mass"]
        assert abs(mass.mean() - truth) < max(3 * mass.std(), 0.05) and abs(mass.mean() - truth) < 0.15
        assert post.median_chi2_per_pixel() < 1.2
    assert post.summary()["av"]["unit"] == "mag"
    back = Posterior.load(post.save(tmp_path / "p.nc"))
    np.testing.assert_allclose(back.av, post.av)
    np.testing.assert_allclose(back.histories, post.histories)


def test_av_at_the_prior_edge_is_flagged():
    wavelength = sdss_wavelength()
    tau = attenuation_coefficients(wavelength, 0.1, 3.0, 8)[0]        # dustier than the prior allows
    post = infer_av(_fake_posterior(np.tile(tau[1:] / tau[0], (50, 1))), seed=0)
    codes = [w["code"] for w in post.warnings()]
    assert "av_at_prior_edge" in codes
    tau = attenuation_coefficients(wavelength, 0.1, 0.5, 8)[0]
    assert "av_at_prior_edge" not in [w["code"] for w in infer_av(_fake_posterior(np.tile(tau[1:] / tau[0], (50, 1)))).warnings()]


def test_inferred_by_default_only_without_a_catalogue_value():
    from dataclasses import replace

    from sfhkit.attenuation import should_infer_av
    from sfhkit.galaxies import AV_NOT_GIVEN

    obs = _fake_posterior(np.zeros((1, 8))).observation
    assert should_infer_av(replace(obs, metadata={"av_source": AV_NOT_GIVEN}), 8)
    assert not should_infer_av(replace(obs, metadata={"av_source": AV_NOT_GIVEN}), 0)
    assert not should_infer_av(replace(obs, metadata={"av_source": "FIREFLY E(B-V) 0.050 x 4.05"}), 8)
    assert not should_infer_av(replace(obs, metadata={"av_source": "given"}), 8)


def test_calibrate_infer_av_reports_av_coverage_and_pulls(grid):
    """`sfhkit calibrate --infer-av`: mocks with A_V from the prior and a calibration error, the
    report has A_V's coverage, pulls and per-galaxy truths (the figures come from a real run)."""
    from sfhkit import ForwardModel
    from sfhkit.calibration import calibrate

    model = ForwardModel(grid, sdss_wavelength(), 0.1, 0.0)
    report = calibrate(2, n=8, steps=20, infer_av=True, redshift=0.1, snr=20, model=model, progress=False)
    assert report["infer_av"] and report["calibration_degree"] == 8 and report["av"] == "inferred"
    assert set(report["coverage"]["av"]) == {"0.68", "0.95"}
    assert set(report["av_pulls"]) >= {"within_1_sigma", "within_2_sigma", "median_posterior_std"}
    truths = report["per_galaxy"]["av"]["truth"]
    assert len(truths) == 2 and all(0 <= a <= 2 for a in truths) and truths[0] != truths[1]
    with pytest.raises(ValueError, match="polynomial"):
        calibrate(1, n=4, steps=5, infer_av=True, calibration_degree=0, model=model, progress=False)


def test_posterior_file_states_the_av_prior(tmp_path):
    import xarray as xr

    tau = attenuation_coefficients(sdss_wavelength(), 0.1, 0.5, 8)[0]
    post = infer_av(_fake_posterior(np.tile(tau[1:] / tau[0], (5, 1))))
    path = post.save(tmp_path / "p.nc")
    tree = xr.open_datatree(path, engine="h5netcdf")
    assert "uniform 0-2.0 mag" in tree["posterior"]["av"].attrs["long_name"]
