"""Line-strength indices against analytic answers."""

import numpy as np
import pytest

from sfhkit.indices import LICK_BANDS_AIR, all_indices, dn4000, lick_index
from sfhkit.wavelength import air_to_vacuum

WAVE = np.arange(3700.0, 6100.0, 0.25)


def test_flat_spectrum_has_no_absorption_and_no_break():
    flat = np.full_like(WAVE, 3.0)
    for name in LICK_BANDS_AIR:
        assert lick_index(WAVE, flat, name) == pytest.approx(0.0, abs=1e-12)
    flat_fnu = 1.0 / WAVE ** 2                      # constant F_nu
    assert dn4000(WAVE, flat_fnu) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("name", ["H beta", "Mg b", "Na D"])
def test_gaussian_line_of_known_equivalent_width(name):
    central = air_to_vacuum(np.asarray(LICK_BANDS_AIR[name][0]))
    centre, width_sigma, ew = central.mean(), 2.0, 4.0
    depth = ew / (width_sigma * np.sqrt(2 * np.pi))
    flux = 2.0 * (1 - depth * np.exp(-0.5 * ((WAVE - centre) / width_sigma) ** 2))
    assert lick_index(WAVE, flux, name) == pytest.approx(ew, rel=2e-3)
    # a sloped continuum is removed by the pseudo-continua
    sloped = flux * (1 + (WAVE - centre) / 5000)
    assert lick_index(WAVE, sloped, name) == pytest.approx(ew, rel=2e-2)


def test_batches_and_coverage():
    flux = np.stack([np.full_like(WAVE, 1.0), 1.0 / WAVE ** 2 * 1e8])
    out = all_indices(WAVE, flux)
    assert set(out) == {*LICK_BANDS_AIR, "Dn4000"} and out["Dn4000"].shape == (2,)
    with pytest.raises(ValueError, match="needs rest-frame wavelengths"):
        lick_index(WAVE[WAVE > 4500], np.ones((WAVE > 4500).sum()), "H delta_A")
    with pytest.raises(ValueError, match="unknown index"):
        lick_index(WAVE, np.ones_like(WAVE), "Lyman alpha")
