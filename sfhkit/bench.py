"""Benchmarks that print JSON (`sfhkit bench forward`).  Times are measured here, never in tests."""

from __future__ import annotations

import contextlib
import io
import json
import platform
import tempfile
import time

import numpy as np
import torch

from ._version import __version__


def _rate(fn, n_spectra: int, min_seconds: float) -> float:
    fn()  # warm-up
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n_spectra * count / elapsed


def bench_forward(min_seconds: float = 2.0, device: str = "cpu", include_bagpipes: bool = True) -> dict:
    """Spectra per second of the forward model on an SDSS-like grid (3800 log-spaced pixels),
    batch 1 and 128, forward and forward+backward, exact and compressed; bagpipes'
    model_galaxy.update in the same run; SSP grid build time cold and from cache."""
    from .forward import ForwardModel
    from .histories import example_history
    from .ssp import SSPGrid

    result = {"benchmark": "forward", "sfhkit_version": __version__, "torch": torch.__version__,
              "device": device, "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        SSPGrid.default(cache_dir=cache, progress=False)
        result["grid_build_cold_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        grid = SSPGrid.default(cache_dir=cache, progress=False)
        result["grid_load_from_cache_s"] = round(time.perf_counter() - t0, 2)
    wavelength = np.geomspace(3800.0, 9200.0, 3800)
    history = example_history()
    for label, rank in (("exact", None), ("compressed", 128)):
        t0 = time.perf_counter()
        model = ForwardModel(grid, wavelength, redshift=0.05, av=0.2, rank=rank, device=device)
        result[f"{label}_model_build_s"] = round(time.perf_counter() - t0, 2)
        if rank:
            result["compression_max_template_residual"] = model.compression_error
        for batch in (1, 128):
            x = history.unsqueeze(0).repeat(batch, 1, 1).to(device)

            def forward():
                with torch.no_grad():
                    model(x, validate=False)
                if device != "cpu":
                    torch.cuda.synchronize()

            def forward_backward():
                xg = x.clone().requires_grad_(True)
                model(xg, validate=False).sum().backward()
                if device != "cpu":
                    torch.cuda.synchronize()

            result[f"{label}_forward_per_s_batch{batch}"] = round(_rate(forward, batch, min_seconds))
            result[f"{label}_forward_backward_per_s_batch{batch}"] = round(_rate(forward_backward, batch, min_seconds))
    if include_bagpipes:
        result.update(_bench_bagpipes(wavelength, min_seconds))
    result["goal_forward_per_s_batch128"] = 5000
    return result


def _bench_bagpipes(wavelength, min_seconds) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        import bagpipes
    components = {"redshift": 0.05,
                  "delayed": {"age": 10.0, "tau": 2.0, "massformed": 10.5, "metallicity": 1.0},
                  "dust": {"type": "Calzetti", "Av": 0.2, "qpah": 3.5, "umin": 1.0, "gamma": 0.01}}
    model = bagpipes.model_galaxy(components, spec_wavs=wavelength)
    taus = iter(np.linspace(1.0, 3.0, 100000))

    def update():
        components["delayed"]["tau"] = float(next(taus))
        model.update(components)

    from importlib.metadata import version

    return {"bagpipes_version": version("bagpipes"),
            "bagpipes_update_per_s": round(_rate(update, 1, min_seconds), 1),
            "bagpipes_note": "model_galaxy.update with default R_spec=1000, same 3800 pixels"}


def main_forward(args) -> int:
    out = bench_forward(min_seconds=args.min_seconds, device=args.device,
                        include_bagpipes=not args.no_bagpipes)
    print(json.dumps(out, indent=1))
    return 0
