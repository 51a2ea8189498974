"""Headless widget tests: the panels driven from Python (values set, buttons clicked), with
assertions on the shared state and on the bokeh data sources the browser would draw."""

import time

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("jupyter_bokeh")

from sfhkit import Prior  # noqa: E402
from sfhkit.widgets import Explorer, ExplorerState, ModelPanel, SavePanel  # noqa: E402
from sfhkit.lines import parse_ranges  # noqa: E402

SMALL_SAMPLER = dict(n=8, keep=6, steps=20)


@pytest.fixture(scope="module")
def explorer(grid):
    """An Explorer with the test-set galaxy 2122 loaded (the paper's mock)."""
    ex = Explorer(ExplorerState(grid=grid, prior=Prior.default()), sampler_options=SMALL_SAMPLER)
    ex.picker.index.value = 2122
    ex.picker.load(wait=True)
    assert ex.state.galaxy is not None, ex.picker.message.value
    return ex


def test_loading_a_test_galaxy_fills_the_controls_and_figures(explorer):
    s = explorer.state
    assert s.galaxy.true_history.shape == (2, 64)
    assert explorer.model.av.value == pytest.approx(0.2) and explorer.model.redshift.value == pytest.approx(0.05)
    assert len(explorer.picker.true_source.data["x"]) == 128                       # true SFH shown
    assert len(explorer.model.model.data["y"]) == s.galaxy.observation.wavelength.size
    # the truth's model at the mock's own settings is the noiseless mock spectrum (within the preview's accuracy)
    noiseless = s.galaxy.observation.metadata["noiseless_flux"]
    model = np.asarray(explorer.model.model.data["y"])
    assert np.median(np.abs(model / noiseless - 1)) < 3e-3


def test_sliders_change_the_model_spectrum(explorer):
    before = np.asarray(explorer.model.model.data["y"]).copy()
    explorer.model.av.value = 0.8
    redder = np.asarray(explorer.model.model.data["y"])
    blue, red = slice(0, 300), slice(-300, None)
    # more dust dims the blue end more than the red end
    assert redder[blue].mean() / before[blue].mean() < redder[red].mean() / before[red].mean() < 1
    assert np.isfinite(explorer.model.last_update_ms)
    explorer.model.vdisp.value = 250.0
    explorer.model.redshift.value = 0.055
    assert explorer.state.redshift == pytest.approx(0.055)
    assert not np.allclose(explorer.model.model.data["y"], redder)
    explorer.model.redshift.value, explorer.model.vdisp.value, explorer.model.av.value = 0.05, 0.0, 0.2


def test_masks_typed_dragged_preset_and_removed(explorer):
    model, s = explorer.model, explorer.state
    model.typed.value = "5570-5590, 6860-6920"
    model.add_typed()
    assert s.mask_ranges == [(5570.0, 5590.0), (6860.0, 6920.0)]
    used = s.fit_observation().n_used
    # a box-select drag arrives as selected indices on the observed spectrum
    model.observed.selected.indices = list(range(1000, 1040))
    assert len(s.mask_ranges) == 3 and s.fit_observation().n_used == used - 40
    before = s.fit_observation().n_used
    model.mask_worst()
    assert len(s.mask_ranges) == 6 and s.fit_observation().n_used < before
    shaded = sum(r - l for l, r in zip(model.masks.data["left"], model.masks.data["right"]))
    assert shaded > 20 + 60 + 40                                                    # shaded on the figure
    model.ranges.value = tuple(model.ranges.options[0][1] for _ in range(1))
    model.remove_selected()
    assert len(s.mask_ranges) == 5
    s.mask_ranges = []
    assert s.fit_observation().n_used == s.galaxy.observation.n_used


def test_typed_ranges_are_checked():
    assert parse_ranges("4000-4100; 5000 - 5100") == [(4000.0, 4100.0), (5000.0, 5100.0)]
    with pytest.raises(ValueError, match="not a range"):
        parse_ranges("4000")
    with pytest.raises(ValueError, match="different finite"):
        ExplorerState().add_mask_range(5000, 5000)


def test_sampling_fills_the_posterior_and_zoom_panels(explorer, tmp_path):
    from sfhkit.sampler import FIRST_LOOK_DRAWS, FIRST_LOOK_STEPS

    s = explorer.state
    shown = []
    s.observe(lambda change: shown.append(change["new"]), names="posterior")
    explorer.sampler.start(wait=True)
    assert explorer.sampler.error is None, explorer.sampler.message.value
    # a first look of a few coarse draws lands before the full run, which replaces it
    assert [(p.config["n"], p.config["steps"]) for p in shown] == [(FIRST_LOOK_DRAWS, FIRST_LOOK_STEPS),
                                                                     (SMALL_SAMPLER["n"], SMALL_SAMPLER["steps"])]
    assert shown[0] is explorer.sampler.first_look and shown[1] is s.posterior
    assert s.posterior is not None and int(s.posterior.kept.sum()) == SMALL_SAMPLER["keep"]
    bands = explorer.posterior.bands["sfh"].data
    assert len(bands["x"]) == 128 and np.all(np.asarray(bands["lo95"]) <= np.asarray(bands["hi95"]))
    assert len(explorer.posterior.draws["sfh"].data["xs"]) == SMALL_SAMPLER["keep"]
    assert len(explorer.posterior.truth["mh"].data["x"]) == 128
    mass = explorer.posterior.mass.data
    assert np.all(np.diff(mass["mean"]) >= 0)                                        # cumulative
    assert explorer.posterior.time_marks[0].visible
    # picking a draw (a tap on its line) makes it the model's history
    explorer.posterior.draws["sfh"].selected.indices = [2]
    assert s.selected_draw == 2 and s.history_kind == "draw"
    np.testing.assert_allclose(explorer.posterior.selected["sfh"].data["y"][::2], s.posterior.samples()[2, 0])
    # the zoom panel follows the line choice
    explorer.zoom.line.value = "H alpha"
    x = np.asarray(explorer.zoom.observed.data["x"])
    assert x.min() < 6564.61 * 1.05 < x.max()
    assert "H alpha" in explorer.zoom.markers.data["name"]
    assert len(explorer.zoom.density.data["top"]) == 48
    # save
    saver = SavePanel(s, folder=str(tmp_path))
    saver.save(wait=True)
    assert sorted(p.name for p in saver.saved) == ["posterior.nc", "posterior.png", "posterior.svg"], saver.message.value
    assert all(p.stat().st_size > 1000 for p in saver.saved)


def test_sampler_errors_and_cancel_are_shown_in_the_panel(explorer):
    sampler = explorer.sampler
    sampler.keep.value, sampler.n.value = 10, 5
    sampler.start(wait=True)
    assert "keep" in sampler.message.value and "Error" in sampler.message.value
    sampler.n.value, sampler.keep.value = SMALL_SAMPLER["n"], SMALL_SAMPLER["keep"]
    previous = explorer.state.posterior
    sampler.steps.value = 100000                               # far longer than the test waits
    sampler.start()
    deadline = time.monotonic() + 120
    while sampler.progress.value == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sampler.task.running and sampler.progress.value > 0 and "left" in sampler.eta.value
    assert explorer.state.posterior is sampler.first_look and sampler.first_look.config["steps"] < 100000
    # the other controls stay live while the sampler works in its thread
    before = np.asarray(explorer.model.model.data["y"]).copy()
    explorer.model.av.value = 1.0
    assert not np.allclose(explorer.model.model.data["y"], before)
    sampler.cancel()
    sampler.task.join(120)
    assert not sampler.task.running and "cancelled" in sampler.message.value
    assert explorer.state.posterior is previous and not sampler.start_button.disabled   # the first look went too
    sampler.steps.value, explorer.model.av.value = SMALL_SAMPLER["steps"], 0.2


def test_start_waits_for_the_galaxy_to_load(explorer):
    """Start is disabled with no galaxy and while one loads (a click then used to fail with 'no
    galaxy loaded yet'); the picker says when it is loading."""
    from sfhkit.widgets import GalaxyPicker, SamplerPanel

    alone = ExplorerState(grid=explorer.state.ssp_grid())
    assert SamplerPanel(alone).start_button.disabled                               # nothing loaded yet
    loading = []
    alone.observe(lambda change: loading.append(change["new"]), names="loading")
    GalaxyPicker(alone).load(wait=True)
    assert loading == [True, False] and alone.galaxy is not None
    state, sampler = explorer.state, explorer.sampler
    assert not sampler.start_button.disabled
    posterior, state.loading = state.posterior, True
    assert sampler.start_button.disabled
    sampler.start()
    assert "loading" in sampler.message.value and state.posterior is posterior and not sampler._sampling
    state.loading = False
    assert not sampler.start_button.disabled

def test_panels_without_a_galaxy_say_so():
    state = ExplorerState()
    panel = ModelPanel(state)
    panel._guard(panel.mask_worst)
    assert "load a galaxy" in panel.message.value
    saver = SavePanel(state)
    saver.save()
    assert "nothing to save" in saver.message.value


def test_picker_shows_errors_for_a_missing_file(tmp_path):
    ex = Explorer(ExplorerState())
    ex.picker.source.value = "survey spectrum"
    ex.picker.sdss.value = str(tmp_path / "spec-0266-51602-0614.fits")
    ex.picker.load(wait=True)
    assert "Error" in ex.picker.message.value and ex.state.galaxy is None


def test_sdss_galaxy_prefills_redshift_av_and_dispersion(shared_data, grid):
    ex = Explorer(ExplorerState(grid=grid))
    ex.picker.source.value = "survey spectrum"
    ex.picker.sdss.value = str(shared_data / "sdss" / "spec-0266-51602-0614.fits")
    ex.picker.firefly_dir.value = str(shared_data / "firefly")
    ex.picker.load(wait=True)
    obs = ex.state.galaxy.observation
    assert ex.state.galaxy.firefly is not None
    assert ex.model.redshift.value == pytest.approx(obs.redshift, abs=1e-4)
    assert ex.model.av.value == pytest.approx(ex.state.galaxy.firefly.av, abs=0.01)
    assert ex.model.vdisp.value == pytest.approx(obs.velocity_dispersion_kms, abs=5)
    assert ex.state.mask_lines and ex.state.mask_sky
    assert ex.state.fit_observation().n_used < obs.n_used


def test_picker_switches_the_ssp_library(shared_data, grid, emiles_grid):
    """The picker's library choice: E-MILES from a folder (its grid, named in the message), back to
    BC03 (the grid given); E-MILES without a folder is an error in the panel."""
    ex = Explorer(ExplorerState(grid=grid))
    ex.picker.source.value = "survey spectrum"
    ex.picker.sdss.value = str(shared_data / "sdss" / "spec-0266-51602-0614.fits")
    ex.picker.ssp.value = "emiles"
    ex.picker.load(wait=True)
    assert "Error" in ex.picker.message.value and "folder" in ex.picker.message.value
    ex.picker.ssp_dir.value = str(shared_data / "emiles")
    ex.picker.load(wait=True)
    assert ex.state.galaxy is not None, ex.picker.message.value
    assert "E-MILES" in ex.state.ssp_grid().library and "SSPs: E-MILES" in ex.picker.message.value
    ex.picker.ssp.value = "bc03"
    ex.picker.load(wait=True)
    assert ex.state.ssp_grid().library.startswith("BC03") and "SSPs: BC03" in ex.picker.message.value


def test_real_spectrum_gets_the_polynomial_and_inferred_av_as_the_cli_does(shared_data, grid, explorer):
    from sfhkit.fluxcal import DEFAULT_DEGREE

    assert explorer.sampler.calibration_degree.value == 0 and not explorer.sampler.infer_av.value   # a mock
    ex = Explorer(ExplorerState(grid=grid, prior=explorer.state.prior("cpu")), sampler_options=SMALL_SAMPLER)
    ex.picker.source.value = "survey spectrum"
    ex.picker.sdss.value = str(shared_data / "sdss" / "spec-0266-51602-0614.fits")
    ex.picker.firefly_dir.value = ""                            # no catalogue A_V: it is inferred
    ex.picker.load(wait=True)
    assert ex.state.galaxy is not None, ex.picker.message.value
    sampler = ex.sampler
    assert sampler.calibration_degree.value == DEFAULT_DEGREE and sampler.infer_av.value
    # the model the fit needs is built in the background as the galaxy loads, so Start need not wait
    sampler.prefetch.join(120)
    assert len(sampler._models) == 1
    line_spread = ex.state.fit_observation().line_spread()
    assert repr(next(iter(sampler._models.values())).line_spread) == repr(line_spread)
    sampler.likelihood.value = "dps"                            # only the default likelihood profiles it
    assert sampler.calibration_degree.value == 0 and not sampler.infer_av.value
    sampler.likelihood.value = "cla"
    assert sampler.infer_av.value
    ex.model.av.value = 0.7             # ignored: the fit starts from A_V = 0, then runs at the first pass's
    sampler.start(wait=True)
    assert sampler.error is None, sampler.message.value
    assert len(sampler._models) == 1                            # the prefetched model, not a second build
    posterior = ex.state.posterior
    fit_av = posterior.observation.av
    assert fit_av == posterior.observation.metadata["av_first_pass_mag"] == posterior.config["av_inference"]["fit_av_mag"]
    assert fit_av != 0.7 and posterior.calibration is not None
    assert posterior.av is not None and "A_V inferred" in sampler.message.value
    assert ex.state.av == pytest.approx(np.median(posterior.av[posterior.kept]))
    assert not sampler.infer_vdisp.value                        # the file has VDISP ...
    sampler.infer_vdisp.value = True                            # ... set aside: sigma_v inferred
    sampler.start(wait=True)
    assert sampler.error is None, sampler.message.value
    posterior = ex.state.posterior
    assert posterior.vdisp_kms is not None and "sigma_v inferred" in sampler.message.value
    passes = posterior.config["vdisp_inference"]["short_passes"]     # A_V from sigma_v's short passes
    assert posterior.av is not None and posterior.observation.av == passes["av_medians_mag"][-1]
    assert ex.state.velocity_dispersion_kms == pytest.approx(np.median(posterior.vdisp_kms[posterior.kept]))
    sampler.infer_vdisp.value = False
    sampler.calibration_degree.value = 0
    sampler.start(wait=True)
    assert "polynomial" in sampler.message.value and ex.state.posterior is posterior


def test_sandbox_burst_and_metallicity_move_the_indices(grid):
    from sfhkit.widgets import SandboxPanel

    box = SandboxPanel(grid)
    box.burst_fraction.value = 0.0
    old = box.refresh()
    box.burst_time.value = box.burst_time.max          # a young burst ...
    box.burst_fraction.value = 0.5
    young = box.refresh()
    assert young["H delta_A"] > old["H delta_A"] + 1 and young["Dn4000"] < old["Dn4000"]   # ... strong Balmer, weak break
    box.burst_fraction.value = 0.0
    box.logz.value = -1.5
    poor = box.refresh()
    assert poor["Mg b"] < old["Mg b"] and poor["Fe 5270"] < old["Fe 5270"]                # metal lines weaken
    assert len(box.spectrum_source.data["y"]) == 3800
