"""sfhkit: star-formation and metallicity histories from galaxy spectra.

Three lines to a model spectrum:

    >>> import sfhkit, numpy as np
    >>> model = sfhkit.ForwardModel(sfhkit.SSPGrid.default(), np.geomspace(3800, 9200, 3800), redshift=0.05, av=0.2)
    >>> flux = model(sfhkit.histories.example_history())   # 1e-17 erg/s/cm2/A
"""

from . import histories
from ._version import __version__
from .cosmology import TimeBins, age_at_redshift_gyr, luminosity_distance_cm
from .forward import ForwardModel
from .lsf import LineSpread
from .observation import Observation, mock_observation
from .posterior import Posterior
from .prior import Prior
from .sampler import SamplingCancelled, sample_posterior
from .ssp import SSPGrid
from .surveys import read_observation

__all__ = ["ForwardModel", "LineSpread", "Observation", "Posterior", "Prior", "SSPGrid", "SamplingCancelled",
           "TimeBins", "__version__", "age_at_redshift_gyr", "histories", "luminosity_distance_cm",
           "mock_observation", "read_observation", "sample_posterior"]
