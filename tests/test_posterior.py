"""Observations, posterior sampling with the default prior and model, Posterior files."""

import threading

import numpy as np
import pytest
import torch

from sfhkit import ForwardModel, Prior
from sfhkit.data import load_histories
from sfhkit.histories import example_history, observable_quantities
from sfhkit.observation import MIN_USED_PIXELS, Observation, mock_observation, sdss_wavelength
from sfhkit.posterior import Posterior
from sfhkit.sampler import SamplingCancelled, sample_posterior


@pytest.fixture(scope="module")
def model(grid):
    return ForwardModel(grid, sdss_wavelength(), redshift=0.05, av=0.2)


@pytest.fixture(scope="module")
def mock(model):
    truth = load_histories("test").histories.values[2122]     # log10 formed mass 10.0, quenched
    return mock_observation(truth, model, snr=50, seed=1)


@pytest.fixture(scope="module")
def posterior(mock, model):
    return sample_posterior(mock, Prior.default(), model, n=12, keep=10, steps=60, seed=0, progress=False)


def test_sdss_wavelength_grid():
    w = sdss_wavelength()
    assert w.size == 3800 and w[0] == 3800.0
    assert np.allclose(np.diff(np.log10(w)), 1e-4)


def test_mock_noise_is_the_papers(model, mock):
    noiseless = mock.metadata["noiseless_flux"]
    assert np.allclose(mock.sigma, noiseless.mean() / 50)
    pulls = (mock.flux - noiseless) / mock.sigma
    assert abs(pulls.std() - 1) < 0.05 and abs(pulls.mean()) < 0.05
    again = mock_observation(mock.metadata["true_history"], model, snr=50, seed=1)
    assert np.array_equal(again.flux, mock.flux)


def test_observation_bad_input():
    w = sdss_wavelength()
    flux, sigma = np.ones(w.size), np.full(w.size, 0.1)
    with pytest.raises(ValueError, match="every pixel is masked"):
        Observation(w, flux, sigma, 0.05, mask=np.zeros(w.size, bool))
    bad = sigma.copy()
    bad[10] = 0.0
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        Observation(w, flux, bad, 0.05, mask=np.ones(w.size, bool))
    bad[10] = np.nan
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        Observation(w, flux, bad, 0.05, mask=np.ones(w.size, bool))
    nan_flux = flux.copy()
    nan_flux[5] = np.nan
    with pytest.raises(ValueError, match="flux is NaN"):
        Observation(w, nan_flux, sigma, 0.05, mask=np.ones(w.size, bool))
    # Without an explicit mask, bad pixels are simply masked.
    assert Observation(w, nan_flux, bad, 0.05).n_used == w.size - 2
    few = np.zeros(w.size, bool)
    few[:MIN_USED_PIXELS - 1] = True
    with pytest.raises(ValueError, match="unmasked pixels"):
        Observation(w, flux, sigma, 0.05, mask=few)
    with pytest.raises(ValueError, match="redshift"):
        Observation(w, flux, sigma, -0.1)
    with pytest.raises(ValueError, match="shape"):
        Observation(w, flux[:-1], sigma, 0.05)
    ivar = np.where(np.arange(w.size) < 50, 0.0, 100.0)
    obs = Observation.from_ivar(w, flux, ivar, 0.05)
    assert obs.n_used == w.size - 50 and np.allclose(obs.sigma[50:], 0.1)
    with pytest.raises(ValueError, match="looks like erg/s/cm2/A"):      # cgs numbers given as plain arrays
        Observation(w, flux * 1e-16, sigma * 1e-16, 0.05)


def test_observation_units_at_the_boundary():
    from astropy import units as u

    w = sdss_wavelength()
    cgs = u.erg / u.s / u.cm ** 2 / u.AA
    obs = Observation(w * u.AA, np.ones(w.size) * 2e-17 * cgs, np.full(w.size, 1e-18) * cgs, 0.05)
    np.testing.assert_allclose(obs.flux, 2.0)
    np.testing.assert_allclose(obs.sigma, 0.1)
    # Per-Hz flux densities are converted at each pixel's wavelength: F_lambda = F_nu c / lambda^2.
    f_nu = (2e-17 * cgs).to(u.erg / u.s / u.cm ** 2 / u.Hz, u.spectral_density(w * u.AA))
    np.testing.assert_allclose(Observation(w, f_nu, np.full(w.size, 0.1), 0.05).flux, 2.0, rtol=1e-10)
    with pytest.raises(ValueError, match="flux density"):
        Observation(w, np.ones(w.size) * u.Jy * u.km, np.full(w.size, 0.1), 0.05)
    with pytest.raises(ValueError, match="wavelength must be a length"):
        Observation(w * u.kg, np.ones(w.size), np.full(w.size, 0.1), 0.05)


def test_linear_parts_reproduce_the_model(model):
    h = torch.stack([example_history(), example_history()]).float()
    h[1, 1] -= 0.8
    table, basis = model.linear_parts(av=0.5)
    coefficients = model.coefficient_jacobian(h, table)[0]
    expected = model(h, av=0.5)
    assert torch.allclose(coefficients @ basis, expected, rtol=0, atol=1e-5 * expected.abs().max())


def test_surviving_mass_integrates_the_living_fraction(model, grid):
    """Against a direct midpoint-rule integral of SFR(t) x living fraction(t(z) - t) at one grid metallicity."""
    h = example_history().numpy().copy()
    h[1] = grid.logz[40]
    t_z = model.age_at_z_gyr
    t = (np.arange(200000) + 0.5) / 200000 * t_z
    sfr = h[0][np.minimum((t / model.time_bins.edges[1]).astype(int), 63)]
    living = np.interp(t_z - t, grid.age_gyr, grid.dataset["living_mass_fraction"].values[:, 40])
    expected = np.sum(sfr * living) * (t_z / t.size) * 1e9
    assert model.surviving_mass_msun(torch.as_tensor(h).float()).item() == pytest.approx(expected, rel=0.01)
    # BC03 + Chabrier: an old population keeps about half its initial mass in living stars.
    formed = 10 ** observable_quantities(h, t_z)["log10_formed_mass"]
    assert 0.4 < expected / formed < 0.6


def test_posterior_fits_the_mock(posterior, mock):
    assert posterior.histories.shape == (12, 2, 64) and posterior.kept.sum() == 10
    assert np.isfinite(posterior.histories).all() and (posterior.histories[:, 0] >= 0).all()
    # The kept draws are the best by mean |residual|.
    assert posterior.mean_abs_residual[posterior.kept].max() <= posterior.mean_abs_residual[~posterior.kept].min()
    # Even with 60 steps the fit is close: chi^2 per pixel below 3 and the formed mass within 0.1 dex.
    assert np.median(posterior.chi2[posterior.kept]) / mock.n_used < 3
    truth = observable_quantities(mock.metadata["true_history"], posterior.age_at_z_gyr)
    assert abs(posterior.summary()["log10_formed_mass"]["mean"] - truth["log10_formed_mass"]) < 0.1
    assert set(posterior.summary()) == {"log10_formed_mass", "log10_surviving_mass", "t50_gyr", "t90_gyr",
                                        "mass_weighted_age_gyr", "mass_weighted_logz"}


def test_faint_dwarf_draws_stay_bounded(model):
    """Test-set galaxy 0 (10^7.4 Msun formed): no draw runs away or fails to fit, at coarse or fine
    steps, and the formed mass is recovered within 0.15 dex.  Before the ancestral sampler and the
    line search (issue 16) 12 of these 24 draws ran to the SFR cap without the clip, and with it 1
    in 150; before the repeated Gauss-Newton steps of the Jacobian CLA about a quarter of the draws
    at 15 steps, and 3-6 % at 60-250, were failed fits (chi^2 per pixel > 3, up to 1e4), and a few
    at 15-30 steps reached the cap (`sfhkit bench stability`; README, "No runaway draws")."""
    from sfhkit.prior import MAX_SFR

    truth = load_histories("test").histories.values[0]
    mock = mock_observation(truth, model, snr=50, seed=1)
    coarse = sample_posterior(mock, Prior.default(), model, n=24, keep=20, steps=15, seed=0, progress=False)
    assert coarse.histories[:, 0].max() < 0.1 * MAX_SFR
    assert (coarse.chi2 / mock.n_used).max() < 3
    truth = load_histories("test").histories.values[0]
    mock = mock_observation(truth, model, snr=50, seed=1)
    posterior = sample_posterior(mock, Prior.default(), model, n=24, keep=20, steps=100, seed=0, progress=False)
    assert posterior.histories[:, 0].max() < 1e3
    assert (posterior.chi2 / mock.n_used).max() < 3
    assert np.median(posterior.chi2[posterior.kept]) / mock.n_used < 1.5
    true_mass = observable_quantities(truth[None], posterior.age_at_z_gyr)["log10_formed_mass"][0]
    assert abs(posterior.summary()["log10_formed_mass"]["mean"] - true_mass) < 0.15


def test_posterior_netcdf_round_trip(posterior, tmp_path):
    path = posterior.save(tmp_path / "post.nc")
    back = Posterior.load(path)
    assert np.array_equal(back.histories, posterior.histories)
    assert np.array_equal(back.kept, posterior.kept)
    assert np.allclose(back.spectra, posterior.spectra)
    assert np.array_equal(back.observation.mask, posterior.observation.mask)
    assert np.array_equal(back.true_history(), posterior.true_history())
    assert np.array_equal(back.observation.metadata["noiseless_flux"], posterior.observation.metadata["noiseless_flux"])
    assert back.config == posterior.config
    for name, value in posterior.summary().items():
        assert back.summary()[name]["mean"] == pytest.approx(value["mean"], rel=1e-6)
    import xarray as xr

    tree = xr.open_datatree(path)
    assert {"posterior", "posterior_predictive", "observed_data", "sample_stats"} <= set(tree.children)
    assert tree["posterior"]["sfr"].attrs["units"] == "Msun/yr"
    assert tree["posterior"]["sfr"].dims == ("chain", "draw", "time_bin")
    (tmp_path / "junk.nc").write_bytes(b"not netcdf")
    with pytest.raises(ValueError, match="not a readable"):
        Posterior.load(tmp_path / "junk.nc")


def test_seeded_sampling_repeats_and_cancel_leaves_nothing_behind(mock, model):
    prior = Prior.default()
    kwargs = dict(n=4, keep=4, steps=20, seed=11, progress=False)
    a = sample_posterior(mock, prior, model, **kwargs)
    cancel = threading.Event()
    with pytest.raises(SamplingCancelled):
        sample_posterior(mock, prior, model, callback=lambda step, steps: step == 5 and cancel.set(),
                         cancel=cancel, **kwargs)
    b = sample_posterior(mock, prior, model, **kwargs)
    assert np.array_equal(a.histories, b.histories)


def test_a_posterior_keeps_all_its_draws_by_default_and_the_best_on_request(mock, model):
    """keep=None (the default) keeps every draw: keeping the best by residual, the paper's
    convention, trims the posterior's tails (README, "Calibration"); keep=k keeps the k smallest
    mean |residual| / sigma."""
    every = sample_posterior(mock, Prior.default(), model, n=5, steps=4, seed=3, progress=False)
    assert every.kept.all() and every.config["keep"] == 5
    best = sample_posterior(mock, Prior.default(), model, n=5, keep=2, steps=4, seed=3, progress=False)
    assert best.kept.sum() == 2
    assert best.mean_abs_residual[best.kept].max() <= best.mean_abs_residual[~best.kept].min()


def test_sampling_refuses_bad_settings(mock, model):
    with pytest.raises(ValueError, match="keep"):
        sample_posterior(mock, Prior.default(), model, n=5, keep=6, steps=2, progress=False)
    with pytest.raises(ValueError, match="must be one of"):
        sample_posterior(mock, Prior.default(), model, n=2, keep=1, steps=2, likelihood="exact", progress=False)


def test_model_error_adds_in_quadrature():
    w = sdss_wavelength()
    flux, sigma = np.full(w.size, 10.0), np.full(w.size, 0.1)
    mask = np.ones(w.size, bool)
    mask[:10] = False
    obs = Observation(w, flux, sigma, 0.05, mask=mask)
    wider = obs.with_model_error(0.02)
    np.testing.assert_allclose(wider.sigma[mask], np.hypot(0.1, 0.2))
    np.testing.assert_allclose(wider.sigma[~mask], 0.1)
    assert wider.metadata["model_error_fraction"] == 0.02 and "model_error_fraction" not in obs.metadata
    with pytest.raises(ValueError, match="model-error"):
        obs.with_model_error(-0.1)


def test_mixed_batch_with_per_galaxy_seeds_matches_one_at_a_time(grid):
    """Galaxies at different redshifts (two forward models) sampled in one batch, one network call
    per step: each galaxy's draws equal its own run with the same seed, up to float rounding."""
    from sfhkit.galaxies import mock_galaxy

    galaxies = [mock_galaxy(2122, redshift=0.05, grid=grid, progress=False),
                mock_galaxy(100, redshift=0.08, grid=grid, progress=False)]
    prior = Prior.default()
    observations = [g.observation for g in galaxies]
    models = [g.forward_model for g in galaxies]
    batch = sample_posterior(observations, prior, models, n=6, keep=6, steps=15, seed=[11, 22], progress=False)
    for galaxy, seed, together in zip(galaxies, (11, 22), batch):
        alone = sample_posterior(galaxy.observation, prior, galaxy.forward_model, n=6, keep=6, steps=15, seed=seed,
                                 progress=False)
        np.testing.assert_allclose(together.histories, alone.histories, rtol=1e-3, atol=1e-6)
        assert together.observation is galaxy.observation
        assert together.age_at_z_gyr == alone.age_at_z_gyr
    with pytest.raises(ValueError, match="seeds for"):
        sample_posterior(observations, prior, models, n=6, keep=6, steps=2, seed=[1], progress=False)
