"""A specutils Spectrum in, the same Observation out as the survey reader gives for the same data."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import InverseVariance, StdDevUncertainty

from sfhkit.surveys import read_observation, sdss
from sfhkit.wavelength import air_to_vacuum

specutils = pytest.importorskip("specutils")
Spectrum = getattr(specutils, "Spectrum", None) or specutils.Spectrum1D
FLUX = u.Unit("1e-17 erg / (s cm2 Angstrom)")


def _as_spectrum(obs, **kwargs):
    ivar = np.where(obs.mask, 1 / obs.sigma ** 2, 0.0)
    return Spectrum(flux=obs.flux * FLUX, spectral_axis=obs.wavelength * u.AA, uncertainty=InverseVariance(ivar / FLUX ** 2),
                    mask=~obs.mask, **kwargs)


def test_same_observation_as_the_sdss_reader(shared_data):
    obs = sdss.read_spec(shared_data / "sdss" / "spec-0266-51602-0614.fits")
    from_spectrum = read_observation(_as_spectrum(obs, redshift=obs.redshift),
                                     velocity_dispersion_kms=obs.velocity_dispersion_kms,
                                     instrument_sigma_kms=obs.instrument_sigma_kms)
    assert from_spectrum.redshift == pytest.approx(obs.redshift)
    np.testing.assert_allclose(from_spectrum.wavelength, obs.wavelength, rtol=1e-12)
    np.testing.assert_allclose(from_spectrum.flux, obs.flux, rtol=1e-12)
    np.testing.assert_array_equal(from_spectrum.mask, obs.mask)
    np.testing.assert_allclose(from_spectrum.sigma[obs.mask], obs.sigma[obs.mask], rtol=1e-10)
    np.testing.assert_allclose(from_spectrum.instrument_sigma_kms, obs.instrument_sigma_kms)
    assert from_spectrum.metadata["kind"] == "spectrum1d"


def test_units_axes_and_conventions():
    wave = np.linspace(4000.0, 8000.0, 500)
    flux_aa = (3.0 + np.sin(wave / 300.0)) * FLUX
    sigma_aa = 0.1 * flux_aa
    # Per Hz on a frequency axis (decreasing wavelength): the same flux density per Angstrom comes back.
    nu = (wave * u.AA).to(u.Hz, equivalencies=u.spectral())[::-1]
    flux_nu = flux_aa[::-1].to(u.erg / u.s / u.cm ** 2 / u.Hz, equivalencies=u.spectral_density(wave[::-1] * u.AA))
    sigma_nu = sigma_aa[::-1].to(flux_nu.unit, equivalencies=u.spectral_density(wave[::-1] * u.AA))
    spectrum = Spectrum(flux=flux_nu, spectral_axis=nu, uncertainty=StdDevUncertainty(sigma_nu))
    obs = read_observation(spectrum, redshift=0.03)
    np.testing.assert_allclose(obs.wavelength, wave, rtol=1e-10)
    np.testing.assert_allclose(obs.flux, flux_aa.value, rtol=1e-8)
    np.testing.assert_allclose(obs.sigma, sigma_aa.value, rtol=1e-8)
    # Air wavelengths, on request, become vacuum ones.
    air = read_observation(Spectrum(flux=flux_aa, spectral_axis=wave * u.AA, uncertainty=StdDevUncertainty(sigma_aa)),
                           redshift=0.03, air_wavelengths=True)
    np.testing.assert_allclose(air.wavelength, air_to_vacuum(wave))


def test_refusals():
    wave = np.linspace(4000.0, 8000.0, 500) * u.AA
    flux = np.full(500, 2.0) * FLUX
    with pytest.raises(ValueError, match="no uncertainty"):
        read_observation(Spectrum(flux=flux, spectral_axis=wave), redshift=0.1)
    with pytest.raises(ValueError, match="redshift is 0"):
        read_observation(Spectrum(flux=flux, spectral_axis=wave, uncertainty=StdDevUncertainty(0.1 * flux)))
    two = Spectrum(flux=np.ones((2, 500)) * FLUX, spectral_axis=wave, uncertainty=StdDevUncertainty(np.ones((2, 500))))
    with pytest.raises(ValueError, match="1-D spectrum is needed"):
        read_observation(two, redshift=0.1)
