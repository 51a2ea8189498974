import numpy as np
import pytest
from astropy import units as u
from astropy.cosmology import WMAP9, FlatLambdaCDM, Planck15

from sfhkit.cosmology import TimeBins, age_at_redshift_gyr, age_at_scale_factor_gyr, luminosity_distance_cm


def test_time_bins_follow_the_paper():
    bins = TimeBins()
    assert bins.edges.shape == (65,) and bins.centers.shape == (64,) and bins.widths.shape == (64,)
    assert bins.edges[0] == 0.0
    assert bins.edges[-1] == pytest.approx(Planck15.age(0).to_value(u.Gyr), rel=1e-12)
    assert bins.edges[-1] == pytest.approx(13.8, abs=0.01)
    # about 215 Myr per bin, expressed in yr
    assert np.allclose(bins.widths, 215.6e6, rtol=2e-3)
    assert np.allclose(bins.centers, 0.5 * (bins.edges[1:] + bins.edges[:-1]))


def test_any_astropy_cosmology_is_accepted():
    cosmo = FlatLambdaCDM(H0=70, Om0=0.3)
    bins = TimeBins(cosmo)
    assert bins.edges[-1] == pytest.approx(cosmo.age(0).to_value(u.Gyr))
    assert TimeBins(WMAP9).edges[-1] == pytest.approx(WMAP9.age(0).to_value(u.Gyr))


@pytest.mark.parametrize("z", [0.0, 0.02, 0.1, 0.3, 1.0])
def test_age_and_distance_match_astropy(z):
    assert age_at_redshift_gyr(z) == pytest.approx(Planck15.age(z).to_value(u.Gyr), rel=1e-12)
    if z > 0:
        assert luminosity_distance_cm(z) == pytest.approx(
            Planck15.luminosity_distance(z).to_value(u.cm), rel=1e-12)
    assert age_at_redshift_gyr(z, WMAP9) == pytest.approx(WMAP9.age(z).to_value(u.Gyr), rel=1e-12)


@pytest.mark.parametrize("bad", [-0.1, np.nan, np.inf])
def test_bad_redshift_is_refused(bad):
    with pytest.raises(ValueError, match="redshift"):
        age_at_redshift_gyr(bad)


def test_fraction_formed_before():
    bins = TimeBins()
    t = bins.edges[10] + 0.25 * (bins.edges[11] - bins.edges[10])
    frac = bins.fraction_formed_before(t)
    assert np.all(frac[:10] == 1) and frac[10] == pytest.approx(0.25) and np.all(frac[11:] == 0)


def test_age_at_scale_factor_table_matches_astropy():
    a = np.geomspace(0.01, 1.0, 500)
    assert np.max(np.abs(age_at_scale_factor_gyr(a) - Planck15.age(1 / a - 1).value)) < 1e-5
    with pytest.raises(ValueError, match="scale factors"):
        age_at_scale_factor_gyr([0.5, 1.5])
