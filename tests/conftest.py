import numpy as np
import pytest

from sfhkit import SSPGrid


@pytest.fixture(scope="session")
def grid():
    """The default BC03+MILES grid from the user cache ($SFHKIT_CACHE_DIR overrides), built once
    there: the same cache the demo and notebooks use."""
    return SSPGrid.default(progress=False)


@pytest.fixture(scope="session")
def sdss_wavelength():
    """An SDSS-like grid: log10 spacing 1e-4 from 3800 to 9200 A (vacuum)."""
    return 10 ** np.arange(np.log10(3800.0), np.log10(9200.0), 1e-4)
