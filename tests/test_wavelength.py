import numpy as np
import pytest
import spectres

from sfhkit.wavelength import air_to_vacuum, check_wavelengths, resampling_matrix


def test_air_to_vacuum_known_lines():
    # SDSS vacuum wavelengths of H-alpha, H-beta and [OIII] 5007 from their air values
    air = np.array([6562.80, 4861.33, 5006.84])
    vac = np.array([6564.61, 4862.68, 5008.24])
    assert np.allclose(air_to_vacuum(air), vac, atol=0.02)
    assert air_to_vacuum(1500.0) == 1500.0  # below 2000 A unchanged by convention


def test_resampling_matrix_reproduces_spectres():
    rng = np.random.default_rng(1)
    old = np.cumsum(rng.uniform(0.5, 1.5, 2000)) + 3000
    flux = rng.normal(10, 2, old.size)
    new = np.geomspace(old[5], old[-5], 700)
    ours = resampling_matrix(old, new) @ flux
    ref = spectres.spectres(new, old, flux, verbose=False)
    assert np.allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_resampling_conserves_flux_and_refuses_extrapolation():
    old = np.linspace(4000, 5000, 1001)
    new = np.linspace(4100, 4900, 57)
    r = resampling_matrix(old, new)
    assert np.allclose(r.sum(axis=1), 1.0)  # a flat spectrum stays flat
    with pytest.raises(ValueError, match="source covers only"):
        resampling_matrix(old, np.linspace(3900, 4500, 10))


@pytest.mark.parametrize("bad, match", [([], "at least two"), ([5000, 4000, 6000], "increasing"),
                                        ([4000, np.nan], "NaN"), ([-1, 2], "positive")])
def test_check_wavelengths(bad, match):
    with pytest.raises(ValueError, match=match):
        check_wavelengths(bad, "wavelength")
