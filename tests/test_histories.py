"""Derived quantities of histories, against answers worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sfhkit import histories as H
from sfhkit.cosmology import TimeBins

BINS = TimeBins()
T0 = BINS.age_of_universe_gyr


def _history(sfr, logz=0.0):
    return np.stack([np.asarray(sfr, dtype=float) * np.ones(64), np.broadcast_to(logz, (64,))])


def test_constant_history():
    h = _history(2.0)
    assert H.formed_mass_msun(h) == pytest.approx(2.0 * T0 * 1e9)
    assert H.formation_time_gyr(h, 0.5) == pytest.approx(T0 / 2)
    assert H.formation_time_gyr(h, 0.9) == pytest.approx(0.9 * T0)
    assert H.burstiness_dex(h) == pytest.approx(0.0)
    assert not H.is_quenched(h)


def test_single_burst_and_metallicity_weighting():
    sfr = np.zeros(64)
    sfr[10], sfr[20] = 1.0, 3.0
    logz = np.zeros(64)
    logz[10], logz[20] = 0.0, -1.0
    h = _history(sfr, logz)
    assert H.mass_weighted_logz(h) == pytest.approx(-0.75)
    # Half the mass is formed two thirds of the way through bin 20 (1/4 before it, 3/4 in it).
    edges = BINS.edges
    assert H.formation_time_gyr(h, 0.5) == pytest.approx(edges[20] + (1 / 3) * (edges[21] - edges[20]))
    assert H.is_quenched(h)  # nothing forms in the last bin


def test_burstiness_of_alternating_history():
    sfr = np.where(np.arange(64) % 2 == 0, 1.0, 10.0)
    expected = np.std(np.diff(np.log10(sfr)), ddof=1)
    assert H.burstiness_dex(_history(sfr)) == pytest.approx(expected)
    few = np.zeros(64)
    few[5:7] = 1.0
    assert np.isnan(H.burstiness_dex(_history(few)))


def test_batches_and_empty_history():
    batch = np.stack([_history(1.0), _history(0.0)])
    t50 = H.formation_time_gyr(batch, 0.5)
    assert t50.shape == (2,) and t50[0] == pytest.approx(T0 / 2) and np.isnan(t50[1])
    assert np.isnan(H.mass_weighted_logz(batch)[1])
    with pytest.raises(ValueError, match="fraction"):
        H.formation_time_gyr(batch, 0.0)
