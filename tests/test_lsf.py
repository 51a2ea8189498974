import numpy as np
import pytest

from sfhkit.lsf import FWHM_PER_SIGMA, SPEED_OF_LIGHT_KMS, LineSpread, broadening_matrix


def test_broadening_gives_the_requested_gaussian_and_conserves_flux():
    lam = np.arange(4000.0, 6000.0, 0.5)
    flux = np.zeros_like(lam)
    centre = np.searchsorted(lam, 5000.0)
    flux[centre] = 1.0 / 0.5  # unit line flux
    sigma_kms = 150.0
    out = broadening_matrix(lam, np.full(lam.size, sigma_kms)) @ flux
    assert np.sum(out) * 0.5 == pytest.approx(1.0, rel=1e-3)
    mean = np.sum(out * lam) / np.sum(out)
    width = np.sqrt(np.sum(out * (lam - mean) ** 2) / np.sum(out))
    assert width == pytest.approx(5000.0 * sigma_kms / SPEED_OF_LIGHT_KMS, rel=0.02)


def test_net_sigma_is_the_quadrature_difference_clipped_at_zero():
    ls = LineSpread(velocity_dispersion_kms=200.0, instrument_sigma_kms=60.0)
    rest = np.array([5000.0, 5000.0])
    lib_fwhm = np.array([2.5, 100.0])  # MILES; and a library coarser than the request
    sig_lib = SPEED_OF_LIGHT_KMS * 2.5 / FWHM_PER_SIGMA / 5000.0
    net = ls.sigma_kms(rest, 0.05, lib_fwhm)
    assert net[0] == pytest.approx(np.sqrt(200 ** 2 + 60 ** 2 - sig_lib ** 2))
    assert net[1] == 0.0


def test_bad_line_spread_is_refused():
    with pytest.raises(ValueError, match="velocity_dispersion_kms"):
        LineSpread(velocity_dispersion_kms=-1)
    with pytest.raises(ValueError, match="instrument_wavelength"):
        LineSpread(instrument_sigma_kms=np.ones(3))
