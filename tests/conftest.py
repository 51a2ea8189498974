import os

import numpy as np
import pytest

from sfhkit import SSPGrid


@pytest.fixture(scope="session")
def grid(tmp_path_factory):
    """The default BC03+MILES grid, from $SFHKIT_CACHE_DIR when set (built there once)."""
    cache = os.environ.get("SFHKIT_CACHE_DIR") or tmp_path_factory.mktemp("ssp-cache")
    return SSPGrid.default(cache_dir=cache, progress=False)


@pytest.fixture(scope="session")
def sdss_wavelength():
    """An SDSS-like grid: log10 spacing 1e-4 from 3800 to 9200 A (vacuum)."""
    return 10 ** np.arange(np.log10(3800.0), np.log10(9200.0), 1e-4)
