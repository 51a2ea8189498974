import numpy as np
import pytest
import torch
from astropy import units as u

from sfhkit import ForwardModel, LineSpread, TimeBins
from sfhkit.histories import example_history, parametric_history


@pytest.fixture(scope="module")
def exact(grid, sdss_wavelength):
    return ForwardModel(grid, sdss_wavelength, redshift=0.05, av=0.2, rank=None, dtype=torch.float64)


@pytest.fixture(scope="module")
def compressed(grid, sdss_wavelength):
    return ForwardModel(grid, sdss_wavelength, redshift=0.05, av=0.2)


def random_histories(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    sfr = torch.rand(n, 64, generator=g, dtype=torch.float64) * 5
    logz = torch.rand(n, 64, generator=g, dtype=torch.float64) * 2.8 - 2.4
    return torch.stack([sfr, logz], dim=1)


def test_shapes_and_units(exact, sdss_wavelength):
    h = example_history()
    flux = exact(h)
    assert flux.shape == (sdss_wavelength.size,) and flux.dtype == torch.float64
    assert exact(torch.stack([h, h])).shape == (2, sdss_wavelength.size)
    # 3e10 Msun at z = 0.05: a few tens of 1e-17 erg/s/cm2/A, like SDSS galaxies of that mass
    assert 5 < float(flux.median()) < 200


def test_compressed_model_matches_exact(exact, compressed):
    h = random_histories(16)
    ref = exact(h)
    ours = compressed(h).double()
    assert compressed.compression_error < 1e-3
    assert float(((ours - ref).abs() / ref.abs()).max()) < 1e-3


def test_linear_in_sfr_and_only_stars_formed_before_tz_count(exact):
    h = random_histories(1)
    doubled = h.clone()
    doubled[:, 0] *= 2
    assert torch.allclose(exact(doubled), 2 * exact(h), rtol=1e-12)
    future = torch.zeros(1, 2, 64, dtype=torch.float64)
    bins = TimeBins()
    tz = exact.age_at_z_gyr
    k = int(np.searchsorted(bins.edges, tz)) - 1  # bin holding t(z)
    future[0, 0, k + 1:] = 10.0
    assert float(exact(future).abs().max()) == 0.0
    # the bin holding t(z) counts in proportion to the part of it before t(z)
    partial = torch.zeros(1, 2, 64, dtype=torch.float64)
    partial[0, 0, k] = 1.0
    assert 0 < bins.fraction_formed_before(tz)[k] < 1
    assert float(exact(partial).sum()) > 0


def test_av_is_cheap_to_change_and_per_sample(exact):
    h = random_histories(3)
    f_scalar = torch.stack([exact(h[i:i + 1], av=a)[0] for i, a in enumerate([0.0, 0.3, 1.0])])
    f_batch = exact(h, av=torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64))
    assert torch.allclose(f_scalar, f_batch, rtol=1e-12)
    exact.av = 0.7
    assert torch.allclose(exact(h), exact(h, av=0.7))
    exact.av = 0.2


def test_energy_balance(grid):
    """Absorbed starlight equals the luminosity of the dust emission (wavelengths wide enough)."""
    wave = np.geomspace(30.0, 1e8, 8000)  # nearly all of the absorbed and emitted light
    h = example_history().double().unsqueeze(0)
    model = ForwardModel(grid, wave, redshift=0.02, rank=None, dtype=torch.float64, min_rest_wavelength=0)
    bare = model(h, av=0.0)[0].numpy()
    dusty = model(h, av=0.5)[0].numpy()
    no_emission = ForwardModel(grid, wave, redshift=0.02, rank=None, dtype=torch.float64,
                               dust_emission=False, min_rest_wavelength=0)(h, av=0.5)[0].numpy()
    absorbed = np.trapezoid(bare - no_emission, wave)
    emitted = np.trapezoid(dusty - no_emission, wave)
    assert emitted == pytest.approx(absorbed, rel=0.02)


def test_gradcheck_small_float64_case(grid):
    wave = np.geomspace(4800.0, 5200.0, 40)
    model = ForwardModel(grid, wave, redshift=0.1, av=0.3, rank=None, dtype=torch.float64)
    bins = np.arange(64)
    sfr = torch.tensor(1.0 + 0.5 * np.sin(bins / 5.0), dtype=torch.float64)
    # keep log Z away from the grid's knots (the model is piecewise linear in log Z)
    logz = torch.tensor(-2.5 + (np.arange(64) % 60 + 0.37) * (3.0 / 63), dtype=torch.float64)
    history = torch.stack([sfr, logz]).unsqueeze(0).requires_grad_(True)
    av = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, a: model(h, av=a), (history, av), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("which", ["exact", "compressed"])
def test_gradients_are_finite_and_informative(request, which):
    model = request.getfixturevalue(which)
    h = example_history().to(model.dtype_).unsqueeze(0).requires_grad_(True)
    model(h).sum().backward()
    grad = h.grad[0, :, model.active_bins]
    assert torch.isfinite(h.grad).all()
    assert (grad[0] != 0).any() and (grad[1] != 0).any()


def test_float32_and_quantity_wavelengths(grid, sdss_wavelength):
    m = ForwardModel(grid, sdss_wavelength * u.AA, redshift=0.05, rank=None)
    flux = m(example_history())
    assert flux.dtype == torch.float32 and torch.isfinite(flux).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(grid, sdss_wavelength, compressed):
    gpu = ForwardModel(grid, sdss_wavelength, redshift=0.05, av=0.2, device="cuda")
    h = random_histories(4).float()
    assert torch.allclose(gpu(h.cuda()).cpu(), compressed(h), rtol=1e-4)


def test_line_spread_hook_broadens_lines(grid):
    wave = np.geomspace(4000.0, 4600.0, 600)
    h = parametric_history("constant", logz=0.0).astype(float)
    sharp = ForwardModel(grid, wave, 0.02, rank=None, dtype=torch.float64)(torch.as_tensor(h)).numpy()
    broad = ForwardModel(grid, wave, 0.02, rank=None, dtype=torch.float64,
                         line_spread=LineSpread(velocity_dispersion_kms=250.0))(torch.as_tensor(h)).numpy()
    # broadening keeps the mean flux but smooths the lines: less pixel-to-pixel scatter
    assert np.mean(broad) == pytest.approx(np.mean(sharp), rel=5e-3)
    assert np.std(np.diff(broad)) < 0.6 * np.std(np.diff(sharp))


# --- bad input ------------------------------------------------------------------------------------
def test_bad_histories_are_refused(compressed):
    good = example_history().unsqueeze(0)
    with pytest.raises(ValueError, match="shape"):
        compressed(torch.zeros(1, 3, 64))
    with pytest.raises(ValueError, match="shape"):
        compressed(torch.zeros(1, 2, 10))
    bad = good.clone()
    bad[0, 1, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        compressed(bad)
    bad = good.clone()
    bad[0, 0, 5] = -1.0
    with pytest.raises(ValueError, match="SFR"):
        compressed(bad)
    assert torch.isfinite(compressed(bad, validate=False)).all()  # the sampler's path
    with pytest.raises(ValueError, match="av"):
        compressed(good, av=-0.1)
    with pytest.raises(ValueError, match="av"):
        compressed.av = float("nan")


@pytest.mark.parametrize("kwargs, match", [
    (dict(redshift=0.0), "redshift"),
    (dict(redshift=-0.1), "redshift"),
    (dict(redshift=float("nan")), "redshift"),
    (dict(av=-1.0), "av"),
    (dict(wavelength=[]), "wavelength"),
    (dict(wavelength=[5000.0, 4000.0, 6000.0]), "wavelength"),
    (dict(wavelength=[4000.0, float("inf")]), "wavelength"),
    (dict(wavelength=[1000.0, 1100.0], redshift=0.1), "redshift too high"),
    (dict(redshift=30.0), "redshift too high"),
    (dict(wavelength=[5.0e8, 6.0e8], redshift=0.1), "library covers"),
])
def test_bad_model_arguments_are_refused(grid, sdss_wavelength, kwargs, match):
    args = dict(wavelength=sdss_wavelength, redshift=0.05, av=0.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ForwardModel(grid, **args)


def test_the_compression_is_the_same_whatever_the_global_random_state():
    """The randomised SVD draws its projection from a fixed seed: a model built in another process
    (another global torch state) is the same to the bit, and the caller's random state is untouched."""
    import torch

    from sfhkit.forward import _compress

    templates = np.random.default_rng(0).lognormal(size=(120, 300))
    torch.manual_seed(1)
    first = _compress(templates, 20)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    second = _compress(templates, 20)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first[:2], second[:2]):
        np.testing.assert_array_equal(a, b)
