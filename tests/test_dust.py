import contextlib
import io

import numpy as np
import pytest

from sfhkit.dust import calzetti_a_over_av, dust_emission_template


def _bagpipes_attenuation(wavelength):
    with contextlib.redirect_stdout(io.StringIO()):
        from bagpipes.models.dust_attenuation_model import dust_attenuation
    return dust_attenuation(wavelength, {"type": "Calzetti", "Av": 1.0}).A_cont


def test_calzetti_matches_bagpipes_and_is_one_at_v():
    lam = np.geomspace(100.0, 1e5, 3000)
    assert np.allclose(calzetti_a_over_av(lam), _bagpipes_attenuation(lam), rtol=1e-12, atol=1e-12)
    assert calzetti_a_over_av(5500.0) == pytest.approx(1.0, abs=0.02)


def test_dust_emission_template_is_normalised_and_matches_bagpipes():
    with contextlib.redirect_stdout(io.StringIO()):
        from bagpipes.models.dust_emission_model import dust_emission
    wave, lum = dust_emission_template(qpah=3.5, umin=1.0, gamma=0.01)
    assert np.trapezoid(lum, wave) == pytest.approx(1.0)
    ref = dust_emission(wave).spectrum(3.5, 1.0, 0.01)
    assert np.allclose(lum, ref, rtol=1e-10, atol=1e-30)


@pytest.mark.parametrize("kw", [dict(qpah=10.0), dict(umin=0.01), dict(gamma=2.0)])
def test_dust_emission_parameters_are_checked(kw):
    with pytest.raises(ValueError):
        dust_emission_template(**kw)
