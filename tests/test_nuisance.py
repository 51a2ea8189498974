"""Nuisance parameters: the (A_V, sigma_v) grid recovers known values given the true history."""

import numpy as np
import pytest

from sfhkit import ForwardModel, LineSpread
from sfhkit.histories import example_history
from sfhkit.nuisance import DEFAULT_AV_GRID, DEFAULT_VDISP_GRID_KMS, conditional_grid_draws, sample_with_nuisance
from sfhkit.observation import mock_observation, sdss_wavelength


@pytest.fixture(scope="module")
def setup(grid):
    wavelength = sdss_wavelength(n_pixels=2000)                    # 3800-6000 A: Balmer, G band, Mg b
    truth = ForwardModel(grid, wavelength, 0.05, 0.5, line_spread=LineSpread(200.0, 65.0))
    history = example_history().numpy()
    mock = mock_observation(history, truth, snr=50, seed=0)
    mock.instrument_sigma_kms = np.full(wavelength.size, 65.0)
    instrument_only = ForwardModel(grid, wavelength, 0.05, 0.0,
                                   line_spread=LineSpread(0.0, mock.instrument_sigma_kms, wavelength))
    return mock, history, instrument_only


def test_grid_peaks_at_the_true_values(setup, grid):
    mock, history, instrument_only = setup
    draws = conditional_grid_draws(mock, np.repeat(history[None], 30, axis=0), instrument_only, grid, seed=0)
    best_av, best_v = np.unravel_index(np.argmax(draws["log_likelihood"][0]), draws["log_likelihood"].shape[1:])
    assert DEFAULT_AV_GRID[best_av] == pytest.approx(0.5)
    assert DEFAULT_VDISP_GRID_KMS[best_v] == pytest.approx(200.0)
    # The conditional is narrow at SNR 50: the draws sit at or next to the truth.
    assert np.all(np.abs(draws["av"] - 0.5) <= 0.1 + 1e-9)
    assert np.all(np.abs(draws["vdisp_kms"] - 200.0) <= 30.0)


def test_grid_refuses_unreachable_dispersions(setup, grid):
    mock, history, instrument_only = setup
    with pytest.raises(ValueError, match="cannot be reached"):
        conditional_grid_draws(mock, history[None], instrument_only, grid, vdisp_grid_kms=(10.0, 200.0))


def test_nuisance_needs_the_instrument(setup, grid):
    from dataclasses import replace

    mock, _, _ = setup
    with pytest.raises(ValueError, match="instrumental resolution"):
        sample_with_nuisance(replace(mock, instrument_sigma_kms=None), None, grid)


def test_alternating_scheme_runs_and_reports(setup, grid):
    """Structure only (tiny sampler settings); `sfhkit nuisance-check` measures the accuracy."""
    from sfhkit import Prior

    mock, _, _ = setup
    posterior, nuisance = sample_with_nuisance(mock, Prior.default(), grid, av_start=0.2, vdisp_start_kms=120.0,
                                               rounds=2, n=4, keep=2, steps=4, round_draws=3, round_steps=4,
                                               progress=False)
    assert len(nuisance["av_profiles"]) == 2 and len(nuisance["path"]) == 3
    assert nuisance["av_profiles"][0]["av"][:3] == [0.0, 0.25, 0.5]
    assert 0 <= nuisance["av"]["estimate"] <= 2 and nuisance["av"]["error"] > 0
    assert posterior.observation.av == nuisance["av"]["estimate"]
    assert posterior.observation.velocity_dispersion_kms == nuisance["vdisp_kms"]["median"]
    assert posterior.config["nuisance"]["path"] == nuisance["path"]


def test_parabola_vertex_and_errors():
    from sfhkit.nuisance import _parabola_minimum

    x = np.array([0.0, 0.25, 0.5, 0.75])
    y = 400.0 * (x - 0.3) ** 2 + 1000.0
    vertex, error = _parabola_minimum(x, y, 1)
    assert vertex == pytest.approx(0.3) and error == pytest.approx(1 / np.sqrt(400.0))
    # Noisy chi^2 values widen the error; the vertex error from y errors is checked by Monte Carlo.
    y_error = np.full(4, 2.0)
    _, wider = _parabola_minimum(x, y, 1, y_error)
    rng = np.random.default_rng(0)
    vertices = [_parabola_minimum(x, y + rng.normal(0, 2.0, 4), 1)[0] for _ in range(4000)]
    assert wider ** 2 == pytest.approx(error ** 2 + np.var(vertices), rel=0.1)
    assert _parabola_minimum(x, y, 0) == (0.0, 0.125)                       # grid end: half a step


def test_the_report_says_the_nuisance_parameters_were_fitted(setup, grid, monkeypatch):
    """real_experiment in nuisance mode (tiny settings): av_source says "fitted", from where it
    started, and the estimates are in the report (the summary.json of `sfhkit infer`)."""
    from sfhkit import nuisance
    from sfhkit.experiments import real_experiment

    mock, _, _ = setup
    real = nuisance.sample_with_nuisance
    monkeypatch.setattr(nuisance, "sample_with_nuisance", lambda obs, prior, grid, **kw: real(
        obs, prior, grid, **{**kw, "rounds": 1, "round_draws": 2, "round_steps": 3, "av_coarse_step": 1.0}))
    from dataclasses import replace

    start = replace(mock, av=0.0, metadata={**mock.metadata, "av_source": "default 0"})
    posterior, report = real_experiment(start, fit_nuisance=True, mask_lines=False, mask_sky=False, n=2, steps=3,
                                        grid=grid, progress=False)
    fitted = report["nuisance"]
    assert report["av"] == fitted["av"]["estimate"] == posterior.observation.av
    assert report["av_source"].startswith("fitted (nuisance mode)") and "started from 0.000 (default 0)" in report["av_source"]
    assert report["velocity_dispersion_kms"] == fitted["vdisp_kms"]["median"]
    assert report["velocity_dispersion_source"].startswith("fitted (nuisance mode)")
