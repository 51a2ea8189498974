"""Line list and masks."""

import numpy as np
import pytest

from sfhkit import Observation
from sfhkit.lines import (apply_masks, largest_negative_residual_ranges, line_list, observed_line_wavelengths,
                          pixels_in_ranges, pixels_near_lines)
from sfhkit.wavelength import air_to_vacuum


def test_line_list_is_vacuum():
    table = line_list().set_index("name")
    # Air wavelengths (NIST) of well-known lines, converted with the IAU formula.
    for name, air in (("H alpha", 6562.80), ("H beta", 4861.33), ("[OIII] 5008", 5006.84), ("NaI D2", 5889.95)):
        assert table.loc[name, "wavelength_vacuum_angstrom"] == pytest.approx(float(air_to_vacuum(air)), abs=0.02)
    assert set(table["type"]) == {"emission", "absorption", "balmer", "sky"}
    assert (table.loc[table["type"] == "sky", "frame"] == "observed").all()
    assert len(line_list(["balmer"])) == 8
    with pytest.raises(ValueError, match="unknown line types"):
        line_list("molecular")


def test_line_masks(sdss_wavelength):
    z = 0.05
    near = pixels_near_lines(sdss_wavelength, z)
    halpha = 6564.61 * (1 + z)
    dv = (sdss_wavelength - halpha) / halpha * 299792.458
    alone = pixels_near_lines(sdss_wavelength, z, names=["H alpha"])          # default +-400 km/s
    assert alone[np.abs(dv) < 390].all() and not alone[np.abs(dv) > 410].any()
    assert near[np.abs(dv) < 390].all()
    sky = 5578.89                                             # observed frame: no (1 + z)
    assert near[np.abs(sdss_wavelength - sky) < 4.9].all()
    # Absorption features are markers only.
    mgb = 5174.12 * (1 + z)
    assert not near[np.abs(sdss_wavelength - mgb) < 2].any()
    only = pixels_near_lines(sdss_wavelength, z, names=["H alpha"], half_width_kms=100)
    assert only.sum() == pytest.approx(2 * 100 / 69.03, abs=2)
    with pytest.raises(ValueError, match="not in the line list"):
        pixels_near_lines(sdss_wavelength, z, names=["H omega"])
    table = observed_line_wavelengths(z)
    assert table.set_index("name").loc["H alpha", "observed_angstrom"] == pytest.approx(halpha)


def test_ranges_and_apply(sdss_wavelength):
    inside = pixels_in_ranges(sdss_wavelength, [(5000, 5100)])
    assert sdss_wavelength[inside].min() >= 5000 and sdss_wavelength[inside].max() <= 5100
    rest = pixels_in_ranges(sdss_wavelength, [(5000, 5100)], redshift=0.1, frame="rest")
    assert sdss_wavelength[rest].min() >= 5500
    with pytest.raises(ValueError, match="low < high"):
        pixels_in_ranges(sdss_wavelength, [(5100, 5000)])
    n = sdss_wavelength.size
    obs = Observation(sdss_wavelength, np.ones(n), np.full(n, 0.1), redshift=0.05)
    masked = apply_masks(obs, ranges=[(5000, 5100)])
    record = masked.metadata["masks"]
    assert record["pixels_removed"]["ranges"] == inside.sum()
    assert masked.n_used == obs.n_used - (pixels_near_lines(sdss_wavelength, 0.05) | inside).sum()
    assert obs.n_used == n                                    # the original is untouched


def test_largest_negative_residuals(sdss_wavelength):
    rng = np.random.default_rng(1)
    residual = rng.normal(0, 0.1, sdss_wavelength.size)
    dips = (4500.0, 6000.0, 8000.0)
    depth = (-3.0, -5.0, -4.0)
    for centre, d in zip(dips, depth):
        residual[np.abs(sdss_wavelength - centre) < 10] += d
    residual[:50] = np.nan
    ranges = largest_negative_residual_ranges(sdss_wavelength, residual, n=3, width_angstrom=30)
    centres = [0.5 * (lo + hi) for lo, hi in ranges]
    np.testing.assert_allclose(centres, [6000.0, 8000.0, 4500.0], atol=10)   # most negative first
    assert all(hi - lo <= 30 for lo, hi in ranges)
