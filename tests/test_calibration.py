"""Coverage and TARP on cases with a known answer (no sampling: draws from exact posteriors)."""

import json

import numpy as np

from sfhkit.calibration import interval_coverage, tarp_coverage


def _gaussian_case(n_galaxies=2000, n_draws=200, dim=3, scale=1.0, seed=0):
    """Truth ~ N(mu, 1) and draws ~ N(mu, scale^2): calibrated for scale 1."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n_galaxies, dim)) * 3
    truth = mu + rng.normal(size=(n_galaxies, dim))
    draws = mu[:, None] + scale * rng.normal(size=(n_galaxies, n_draws, dim))
    return truth, draws


def test_interval_coverage_is_nominal_for_a_calibrated_posterior():
    truth, draws = _gaussian_case()
    for level in (0.68, 0.95):
        assert abs(np.mean(interval_coverage(truth, draws, level)) - level) < 0.03
    # Too narrow a posterior under-covers.
    truth, narrow = _gaussian_case(scale=0.5)
    assert np.mean(interval_coverage(truth, narrow, 0.68)) < 0.45


def test_interval_coverage_ignores_undefined_values():
    truth = np.array([0.0, np.nan])
    draws = np.array([np.linspace(-1, 1, 11), np.linspace(-1, 1, 11)])
    cov = interval_coverage(truth, draws, 0.68)
    assert cov[0] == 1 and np.isnan(cov[1])


def test_tarp_is_diagonal_for_a_calibrated_posterior_and_not_for_a_wrong_one():
    truth, draws = _gaussian_case()
    good = tarp_coverage(truth, draws)
    assert good["max_abs_deviation"] < 0.05
    truth, wide = _gaussian_case(scale=2.0)
    assert tarp_coverage(truth, wide)["max_abs_deviation"] > 0.1
    json.dumps(good)   # the report is JSON-ready


def test_tarp_null_matches_calibrated_posteriors_in_many_dimensions():
    """The null of `tarp_null` (ranks uniform on 0..n_draws) against TARP itself on exactly
    calibrated 16-dimensional Gaussian posteriors: the same median and 95th percentile of the
    largest deviation, and a p-value that tells a too-narrow posterior from a calibrated one."""
    from sfhkit.calibration import tarp_null

    deviations = [tarp_coverage(*_gaussian_case(n_galaxies=200, n_draws=32, dim=16, seed=s), seed=s)
                  ["max_abs_deviation"] for s in range(300)]
    null = tarp_null(200, 32, observed=float(np.median(deviations)))
    assert abs(np.median(deviations) - null["null_median"]) <= 0.01
    assert abs(np.quantile(deviations, 0.95) - null["null_p95"]) <= 0.015
    assert 0.3 < null["p_value"] < 0.7
    # Draws at 0.7 times the true width: far outside what 200 calibrated galaxies give.
    narrow = tarp_coverage(*_gaussian_case(n_galaxies=200, n_draws=32, dim=16, scale=0.7))["max_abs_deviation"]
    assert tarp_null(200, 32, observed=narrow)["p_value"] < 0.01


def test_mocks_of_one_library_fitted_with_another(shared_data, grid, emiles_grid):
    """`calibrate(mock_ssp=...)`: the mocks come from E-MILES, the fit uses BC03, the report says so
    and the truths' surviving masses are E-MILES's (tiny settings: the figures come from a real run)."""
    from sfhkit.calibration import calibrate
    from sfhkit.forward import ForwardModel
    from sfhkit.observation import sdss_wavelength
    from sfhkit.posterior import true_quantities

    emiles = ("emiles", str(shared_data / "emiles"))
    report = calibrate(2, n=4, steps=3, redshift=0.1, snr=20, mock_ssp=emiles, progress=False)
    assert report["ssp"] == ["bc03"] and report["mock_ssp"] == list(emiles)
    assert report["ssp_library"].startswith("BC03") and report["mock_ssp_library"].startswith("E-MILES")
    from sfhkit.data import load_histories

    truths = load_histories("test").histories.values[report["truth_indices"]]
    by_emiles = true_quantities(truths, ForwardModel(emiles_grid, sdss_wavelength(), 0.1, 0.2))["log10_surviving_mass"]
    np.testing.assert_allclose(report["per_galaxy"]["log10_surviving_mass"]["truth"], by_emiles, atol=1e-3)
