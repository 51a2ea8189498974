from pathlib import Path

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


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data (real SDSS, MaNGA and FIREFLY files): present in CI, absent in a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-spectrum tests need {SHARED_DATA} (the shared data folder beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def emiles_grid(shared_data):
    """The E-MILES grid of ../shared/data/emiles, cached as the BC03 one is (`SSPGrid.emiles`)."""
    return SSPGrid.emiles(shared_data / "emiles", progress=False)
