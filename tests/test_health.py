"""Fit warnings (sfhkit.health): each fires at its threshold with its number, and only then."""

import json

import numpy as np
import pytest

from sfhkit import Observation, Posterior, TimeBins
from sfhkit.health import (CHI2_PER_PIXEL_LIMIT, GRID_EDGE_DEX, MASKED_FRACTION_LIMIT, fit_warnings,
                           format_warnings)
from sfhkit.prior import MAX_SFR

N_PIXELS, N_DRAWS = 1000, 6
CONFIG = {"ssp_library": "BC03 test", "ssp_logz_range": [-2.15, 0.5]}


def _posterior(*, chi2_per_pixel=1.0, used_fraction=0.95, logz=-0.2, metadata=None, cap=False):
    wave = np.linspace(4000.0, 8000.0, N_PIXELS)
    mask = np.arange(N_PIXELS) < int(used_fraction * N_PIXELS)
    obs = Observation(wave, np.ones(N_PIXELS), np.full(N_PIXELS, 0.1), 0.05, mask=mask, metadata=metadata or {})
    bins = TimeBins()
    histories = np.zeros((N_DRAWS, 2, bins.n_bins))
    histories[:, 0] = 1.0                                      # 1 Msun/yr in every bin
    histories[:, 1] = logz
    if cap:
        histories[0, 0, 10] = MAX_SFR
    chi2 = np.full(N_DRAWS, chi2_per_pixel * obs.n_used)
    return Posterior.from_draws(obs, histories, np.ones((N_DRAWS, N_PIXELS)), chi2, np.ones(N_DRAWS),
                                np.full(N_DRAWS, 1e10), keep=N_DRAWS, age_at_z_gyr=13.1, time_bins=bins,
                                config=CONFIG)


def _codes(posterior):
    return [w["code"] for w in fit_warnings(posterior)]


def test_a_healthy_fit_has_no_warnings():
    assert fit_warnings(_posterior()) == []


def test_each_warning_at_its_threshold():
    assert _codes(_posterior(chi2_per_pixel=CHI2_PER_PIXEL_LIMIT * 0.99)) == []
    high = fit_warnings(_posterior(chi2_per_pixel=7.6))
    assert [w["code"] for w in high] == ["high_chi2"] and high[0]["value"] == pytest.approx(7.6)
    assert high[0]["severity"] == "warning" and high[0]["limit"] == CHI2_PER_PIXEL_LIMIT
    assert _codes(_posterior(used_fraction=1 - MASKED_FRACTION_LIMIT + 0.01)) == []
    masked = fit_warnings(_posterior(used_fraction=0.5))
    assert [w["code"] for w in masked] == ["masked_pixels"] and masked[0]["value"] == pytest.approx(0.5)
    assert _codes(_posterior(metadata={"class": "QSO"})) == ["survey_class"]
    assert _codes(_posterior(metadata={"class": "STAR "})) == ["survey_class"]
    assert _codes(_posterior(metadata={"class": "GALAXY", "subclass": "AGN BROADLINE"})) == ["active_nucleus"]
    assert _codes(_posterior(metadata={"class": "GALAXY", "subclass": "STARFORMING"})) == []
    assert _codes(_posterior(cap=True)) == ["draws_at_cap"]


def test_metallicity_at_the_library_edge_names_the_library():
    near = fit_warnings(_posterior(logz=0.5 - GRID_EDGE_DEX / 2))
    assert [w["code"] for w in near] == ["metallicity_at_edge", "bins_at_edge"]
    assert "BC03 test" in near[0]["message"] and near[0]["limit"] == 0.5 and near[0]["concerns"] == "mh"
    assert _codes(_posterior(logz=-2.15)) == ["metallicity_at_edge", "bins_at_edge"]
    assert _codes(_posterior(logz=0.5 - 2 * GRID_EDGE_DEX)) == []


def test_warnings_reach_the_posterior_file_and_the_terminal(tmp_path):
    posterior = _posterior(chi2_per_pixel=12.8, metadata={"subclass": "BROADLINE"})
    path = posterior.save(tmp_path / "p.nc")
    import xarray as xr

    with xr.open_datatree(path, engine="h5netcdf") as tree:
        saved = json.loads(tree.attrs["warnings"])
    assert [w["code"] for w in saved] == ["high_chi2", "active_nucleus"]
    assert Posterior.load(path).warnings() == saved
    lines = format_warnings(saved)
    assert lines[0].startswith("warning [high_chi2]: chi^2 per pixel is 12.80")


def test_the_figure_shows_the_warnings():
    import matplotlib

    matplotlib.use("Agg")
    from sfhkit.plots import plot_posterior

    figure = plot_posterior(_posterior(chi2_per_pixel=7.6, metadata={"subclass": "BROADLINE"}))
    text = "\n".join(t.get_text() for t in figure.texts)
    assert "warning [high_chi2]" in text and "warning [active_nucleus]" in text
    assert not plot_posterior(_posterior()).texts
