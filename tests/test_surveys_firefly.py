"""FIREFLY readers: real spFly files in ../shared/data/firefly, and a small catalogue file made here
in the DR17 MaNGA FIREFLY VAC layout."""

import numpy as np
import pytest
from astropy.io import fits

from sfhkit.cosmology import TimeBins, age_at_redshift_gyr
from sfhkit.histories import formed_mass_msun, formed_mass_per_bin_msun
from sfhkit.surveys.firefly import find_spfly, read_firefly_catalogue, read_spfly

# ../shared/data/README.md: log M* / mass-weighted age (Gyr) / mass-weighted [Z/H] / E(B-V).
SUMMARY = {"0614": (10.66, 10.6, 0.18, 0.18), "0461": (10.40, 11.0, 0.17, 0.14), "0526": (10.25, 11.0, 0.15, 0.20),
           "0001": (9.55, 3.9, 0.16, 0.19), "0628": (9.04, 5.6, -0.21, 0.39)}


@pytest.mark.parametrize("fiber", sorted(SUMMARY))
def test_spfly_summary_and_history(shared_data, fiber):
    path = next((shared_data / "firefly").glob(f"spFly-*-{fiber}.fits"))
    fit = read_spfly(path)
    mass, age, zh, ebv = SUMMARY[fiber]
    assert fit.summary["log10_stellar_mass"] == pytest.approx(mass, abs=0.01)
    assert fit.summary["mass_weighted_age_gyr"] == pytest.approx(age, abs=0.1)
    assert fit.summary["mass_weighted_zh"] == pytest.approx(zh, abs=0.01)
    assert fit.ebv == pytest.approx(ebv, abs=0.01)
    assert fit.av == pytest.approx(4.05 * fit.ebv)
    assert fit.mass_kind == "formed"
    bins = TimeBins()
    history = fit.history(bins, float(age_at_redshift_gyr(fit.redshift)))
    # The binned SFH conserves the components' formed mass, which matches the header's total_mass.
    formed = formed_mass_msun(np.nan_to_num(history), bins)          # sfhkit's own SFR -> mass
    assert formed == pytest.approx(fit.components["mass_msun"].sum(), rel=1e-12)
    assert np.log10(formed) == pytest.approx(fit.summary["log10_formed_mass"], abs=0.01)
    # Absolute scale: the heaviest component's mass over one bin width (215 Myr), in Msun/yr.
    assert history[0].max() >= fit.components["mass_msun"].max() / 2.156e8 * (1 - 1e-3)
    has_mass = history[0] > 0
    assert np.isfinite(history[1][has_mass]).all() and np.isnan(history[1][~has_mass]).all()
    assert fit.spectrum["model"].shape == fit.spectrum["wavelength"].shape


def test_spfly_published_examples_without_total_mass(shared_data):
    """FIREFLY's own examples predate total_mass_ssp_i: formed = stellar + ejecta; nine IMF x library HDUs."""
    path = shared_data / "firefly" / "spFly-0266-51602-0004.fits"
    fits_by_hdu = [read_spfly(path, hdu) for hdu in range(1, 10)]
    assert {(f.summary["imf"], f.summary["library"]) for f in fits_by_hdu} >= {("Chabrier", "MILES"), ("Kroupa", "STELIB")}
    first = fits_by_hdu[0]
    assert first.mass_kind == "formed"
    assert first.components["mass_msun"].sum() > 10 ** first.summary["log10_stellar_mass"]
    with pytest.raises(ValueError, match="model HDUs 1..9"):
        read_spfly(path, 10)


def test_find_spfly(shared_data):
    assert find_spfly("266-51602-614", shared_data / "firefly").name == "spFly-0266-51602-0614.fits"
    assert find_spfly("266-51602-573", shared_data / "firefly") is None


def _catalogue(path):
    """Two galaxies, 4 Voronoi cells, 8 SSP slots, in the DR17 VAC layout (HDU names; shapes
    (galaxy, cell, channel); -9999 fills)."""
    n_gal, n_cell, n_slot = 2, 4, 8
    info = fits.BinTableHDU.from_columns([fits.Column("PLATEIFU", "10A", array=["7443-12703", "8485-1901"]),
                                          fits.Column("MANGAID", "9A", array=["12-193481", "1-209232"]),
                                          fits.Column("REDSHIFT", "D", array=[0.0204, 0.0234])], name="GALAXY_INFO")
    mass = np.full((n_gal, n_cell, 4), -9999.0)
    mass[1, :3, 2] = [9.0, 9.5, 10.0]                       # log10 Msun per cell; cell 3 unfitted
    sfh = np.full((n_gal, n_cell, n_slot, 3), -9999.0)
    for cell in range(3):
        sfh[1, cell, 0] = [np.log10(10.0), 0.1, 0.75]       # 10 Gyr old, [Z/H] 0.1, 75 % of the mass
        sfh[1, cell, 1] = [np.log10(1.0), -0.3, 0.25]       # 1 Gyr old, [Z/H] -0.3, 25 %
    ebv = np.full((n_gal, n_cell), -9999.0)
    ebv[1, :3] = [0.1, 0.2, 0.3]
    hdus = [fits.PrimaryHDU(), info, fits.BinTableHDU.from_columns([fits.Column("MW_AGE_1RE", "D", array=[1, 2])],
                                                                   name="GLOBAL_PARAMETERS"),
            fits.ImageHDU(np.zeros((n_gal, n_cell, 5)), name="SPATIAL_INFO"),
            fits.ImageHDU(ebv, name="E(B_V)_VORONOI"), fits.ImageHDU(mass, name="STELLAR_MASS_VORONOI"),
            fits.ImageHDU(sfh, name="STAR_FORMATION_HISTORY")]
    fits.HDUList(hdus).writeto(path)
    return path


def test_catalogue_sums_cells(tmp_path):
    path = _catalogue(tmp_path / "manga-firefly-v3_1_1-miles.fits")
    fit = read_firefly_catalogue(path, plateifu="8485-1901")
    total = 10 ** 9.0 + 10 ** 9.5 + 10 ** 10.0
    assert fit.mass_kind == "surviving"
    assert fit.summary["log10_stellar_mass"] == pytest.approx(np.log10(total))
    assert fit.ebv == pytest.approx(0.2)
    bins = TimeBins()
    t_z = float(age_at_redshift_gyr(0.0234))
    history = fit.history(bins, t_z)
    np.testing.assert_allclose(formed_mass_msun(np.nan_to_num(history), bins), total, rtol=1e-10)
    old = np.searchsorted(bins.edges, t_z - 10.0) - 1
    young = np.searchsorted(bins.edges, t_z - 1.0) - 1
    np.testing.assert_allclose(formed_mass_per_bin_msun(np.nan_to_num(history), bins)[old], 0.75 * total, rtol=1e-10)
    assert history[1, old] == pytest.approx(0.1) and history[1, young] == pytest.approx(-0.3)
    assert read_firefly_catalogue(path, mangaid="1-209232").summary["n_cells"] == 3
    with pytest.raises(LookupError, match="not in"):
        read_firefly_catalogue(path, plateifu="1-1")
    with pytest.raises(ValueError, match="no fitted cells"):
        read_firefly_catalogue(path, plateifu="7443-12703")
    with pytest.raises(ValueError, match="exactly one"):
        read_firefly_catalogue(path)
