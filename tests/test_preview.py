"""SpectrumPreview against the exact forward model rebuilt at each setting."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from sfhkit.galaxies import mock_galaxy
from sfhkit.histories import parametric_history
from sfhkit.preview import SpectrumPreview


@pytest.fixture(scope="module")
def galaxy(grid):
    return mock_galaxy(2122, grid=grid, progress=False)


@pytest.fixture(scope="module")
def preview(galaxy, grid):
    return SpectrumPreview(galaxy.observation, grid)


def _exact(observation, history, grid, **changes):
    obs = replace(observation, metadata={}, **changes)
    model = obs.forward_model(grid)
    return model(torch.as_tensor(history, dtype=model.dtype_)).detach().double().numpy()


def test_at_the_observation_settings_it_is_the_mock_noiseless_spectrum(galaxy, preview):
    flux = preview.spectrum(galaxy.true_history)
    noiseless = galaxy.observation.metadata["noiseless_flux"]
    assert np.median(np.abs(flux / noiseless - 1)) < 2e-3


def test_av_and_velocity_dispersion_match_a_rebuilt_model(galaxy, preview, grid):
    h = galaxy.true_history
    fast = preview.spectrum(h, av=0.7, velocity_dispersion_kms=250.0)
    exact = _exact(galaxy.observation, h, grid, av=0.7, velocity_dispersion_kms=250.0)
    inner = slice(30, -30)
    assert np.max(np.abs(fast[inner] / exact[inner] - 1)) < 0.01


def test_redshift_shift_keeps_the_shape_and_misses_only_the_ages(galaxy, preview, grid):
    """The preview freezes stellar ages at z0.  Moving z by 0.015 makes the universe about 190 Myr
    younger; an old population is then about 1.5 % brighter in the exact model (fading goes roughly
    as age^-0.8).  The spectral shape (stretch, line positions) must agree better than that."""
    old = parametric_history("delayed", tstart_gyr=0.5, tau_gyr=0.5)
    z = galaxy.observation.redshift + 0.015
    fast = preview.spectrum(old, redshift=z, velocity_dispersion_kms=200.0)
    exact = _exact(galaxy.observation, old, grid, redshift=z, velocity_dispersion_kms=200.0)
    inner = slice(30, -30)
    level = fast[inner].sum() / exact[inner].sum()
    assert 0.97 < level < 1.0                                   # the fading the frozen ages miss
    shape = np.abs(fast[inner] / exact[inner] / level - 1)
    assert np.median(shape) < 3e-3 and np.max(shape) < 0.02    # fading is a little bluer: max at the edges


def test_bad_settings_are_refused(galaxy, preview):
    with pytest.raises(ValueError, match="rebuild it"):
        preview.spectrum(galaxy.true_history, redshift=galaxy.observation.redshift + 0.1)
    with pytest.raises(ValueError, match="velocity_dispersion_kms"):
        preview.spectrum(galaxy.true_history, velocity_dispersion_kms=-1)
    batch = preview.spectrum(np.stack([galaxy.true_history] * 3))
    assert batch.shape == (3, galaxy.observation.wavelength.size)
