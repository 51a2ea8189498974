"""The out-of-distribution family (sfhkit.data.parametric)."""

import numpy as np
import pytest

from sfhkit.cosmology import TimeBins
from sfhkit.data.parametric import LOG_MASS_RANGE, parametric_histories
from sfhkit.data.store import EMPTY_BIN_LOGZ
from sfhkit.histories import formed_mass_per_bin_msun


def test_parametric_histories_are_seeded_physical_and_in_range():
    h = parametric_histories(300, seed=4)
    assert h.shape == (300, 2, 64) and np.isfinite(h).all()
    np.testing.assert_array_equal(h, parametric_histories(300, seed=4))
    assert not np.array_equal(h, parametric_histories(300, seed=5))
    assert (h[:, 0] >= 0).all()
    log_mass = np.log10(formed_mass_per_bin_msun(h, TimeBins()).sum(-1))
    assert log_mass.min() >= LOG_MASS_RANGE[0] - 1e-6 and log_mass.max() <= LOG_MASS_RANGE[1] + 1e-6
    populated = h[:, 0] > 0
    assert (h[:, 1][populated] <= 0.45).all() and (h[:, 1][populated] >= -2.5).all()
    np.testing.assert_array_equal(h[:, 1][~populated], EMPTY_BIN_LOGZ)
    # Metallicity rises with the mass formed (closed-box-like), and no star forms before t0 >= 0.2 Gyr.
    assert (np.diff(np.where(populated, h[:, 1], np.nan), axis=1)[np.isfinite(np.diff(h[:, 1], axis=1))
                                                                    & populated[:, 1:] & populated[:, :-1]] >= -1e-9).all()
    assert (h[:, 0, 0] == 0).all()
    with pytest.raises(ValueError, match="positive integer"):
        parametric_histories(0)
