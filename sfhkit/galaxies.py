"""One galaxy to fit, from any source sfhkit reads: a test-set mock, a survey spectrum (SDSS, BOSS,
eBOSS, DESI; `sfhkit.surveys`), a MaNGA spectrum or cube.  The command line (`sfhkit infer`, `sfhkit demo`) and the explorer's galaxy
picker both come here, so a galaxy means the same thing everywhere.

    >>> galaxy = mock_galaxy(2122)                     # the paper's mock: z 0.05, A_V 0.2, S/N 50
    >>> galaxy = spectrum_galaxy("../shared/data/sdss/spec-0266-51602-0614.fits",
    ...                          firefly_dir="../shared/data/firefly")
    >>> galaxy = spectrum_galaxy("coadd-main-dark-10016.fits", targetid=39627640566453451)
    >>> galaxy.observation, galaxy.true_history, galaxy.firefly

A_V comes from the caller, else from the FIREFLY fit (A_V = 4.05 E(B-V)), else 0; where it came
from is recorded in observation.metadata["av_source"].
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .observation import Observation

MOCK_REDSHIFT, MOCK_AV, MOCK_SNR = 0.05, 0.2, 50.0   # the paper's mock experiment
AV_NOT_GIVEN = "default 0 (none given, no FIREFLY fit)"   # av_source of a real spectrum without a catalogue A_V


@dataclass
class Galaxy:
    """An observation to fit and what is known about it.

    observation : the spectrum (with mask, redshift, A_V, velocity dispersion where known)
    label : a short name for titles and file names
    true_history : (2, 64) physical history for mocks, else None
    firefly : the FIREFLY fit to compare with (`sfhkit.surveys.firefly.FireflyFit`), or None
    forward_model : the model a mock was made with (reusable for sampling), or None
    """

    observation: Observation
    label: str
    true_history: np.ndarray | None = None
    firefly: object | None = None
    forward_model: object | None = None


def with_catalogue_av(observation: Observation, firefly=None, av: float | None = None) -> Observation:
    """The observation with A_V from `av`, else FIREFLY's E(B-V) x 4.05, else 0 (source recorded)."""
    if av is not None:
        value, source = float(av), "given"
    elif firefly is not None and np.isfinite(firefly.av):
        value, source = float(firefly.av), f"FIREFLY E(B-V) {firefly.ebv:.3f} x 4.05"
    else:
        value, source = 0.0, AV_NOT_GIVEN
    # replace() re-validates, so a negative A_V is refused with the Observation's message.
    return replace(observation, av=value, metadata={**observation.metadata, "av_source": source})


def mock_galaxy(index: int, *, redshift: float = MOCK_REDSHIFT, av: float = MOCK_AV, snr: float = MOCK_SNR,
                seed: int = 0, grid=None, device="cpu", progress: bool = True, forward_model=None) -> Galaxy:
    """The paper's mock of held-out test-set history `index`: SDSS-like wavelengths (3800 log pixels
    from 3800 A), noise sigma = mean flux / `snr`.  A `forward_model` built before (on
    `observation.sdss_wavelength()`) is reused instead of building one: its redshift and A_V count."""
    from .forward import ForwardModel
    from .observation import mock_observation, sdss_wavelength
    from .ssp import SSPGrid
    from .data.embedded import load_histories

    test = load_histories("test")
    n = test.sizes["galaxy"]
    if not 0 <= int(index) < n:
        raise ValueError(f"test-set index must be in [0, {n}), got {index}")
    truth = test.histories.values[int(index)]
    model = forward_model if forward_model is not None else ForwardModel(
        grid if grid is not None else SSPGrid.default(progress=progress), sdss_wavelength(), redshift=redshift, av=av,
        device=device)
    galaxy_id = int(test.galaxy_id.values[int(index)])
    obs = mock_observation(truth, model, snr=snr, seed=seed,
                           metadata={"test_index": int(index), "galaxy_id": galaxy_id, "av_source": "mock"})
    return Galaxy(obs, f"test galaxy {index}", true_history=truth, forward_model=model)


def spectrum_galaxy(spec: str | Path, *, firefly_dir=None, firefly_path=None, av: float | None = None,
                    **reader_kwargs) -> Galaxy:
    """A survey spectrum: a local file of any kind `sfhkit.surveys.read_observation` reads (SDSS,
    BOSS, eBOSS, DESI, MaNGA; `reader_kwargs` go to its reader, e.g. targetid= for DESI), or an SDSS
    PLATE-MJD-FIBER fetched from the SDSS archive (astroquery; ConnectionError offline).  The
    FIREFLY fit comes from `firefly_path`, or from `firefly_dir` by the spectrum's identifier."""
    from .surveys import read_observation
    from .surveys.firefly import find_spfly, read_spfly
    from .surveys.sdss import from_sdss, parse_spec_id

    path = Path(spec)
    if path.exists() or path.suffix in (".fits", ".gz"):
        obs = read_observation(path, **reader_kwargs)
    else:
        obs = from_sdss(*parse_spec_id(str(spec)), **reader_kwargs)
    if firefly_path is None and firefly_dir is not None and "spec_id" in obs.metadata:
        firefly_path = find_spfly(obs.metadata["spec_id"], firefly_dir)
    firefly = read_spfly(firefly_path) if firefly_path else None
    survey = obs.metadata.get("survey", "SDSS")
    label = f"{'SDSS' if survey.startswith('SDSS') else survey} {obs.metadata.get('spec_id', path.name)}"
    return Galaxy(with_catalogue_av(obs, firefly, av), label, firefly=firefly)


def manga_galaxy(*, table=None, index: int | None = None, logcube=None, plateifu: str | None = None,
                 redshift: float | None = None, spaxel: tuple[int, int] | None = None,
                 radius_arcsec: float | None = 2.5, av: float | None = None) -> Galaxy:
    """A MaNGA spectrum: row `index` of a spectra table, or a LOGCUBE (a local file, or `plateifu`
    downloaded from the SDSS archive) at `redshift` (the cube has none: drpall NSA_Z), one `spaxel`
    or a circular aperture of `radius_arcsec` (default 2.5", about an SDSS fibre)."""
    from .surveys.manga import fetch_logcube, read_logcube, read_manga_spectra

    if table is not None:
        if index is None:
            raise ValueError("a MaNGA spectra table needs the row index")
        obs = read_manga_spectra(table, int(index))
    else:
        if logcube is None and not plateifu:
            raise ValueError("give a MaNGA spectra table and index, a LOGCUBE file, or a plate-IFU")
        if redshift is None:
            raise ValueError("a LOGCUBE needs the redshift (it has none: drpall NSA_Z)")
        cube = logcube or fetch_logcube(plateifu)
        obs = read_logcube(cube, redshift=redshift, spaxel=tuple(spaxel) if spaxel else None,
                           radius_arcsec=None if spaxel else radius_arcsec)
    label = f"MaNGA {obs.metadata.get('plateifu') or obs.metadata.get('source')}"
    return Galaxy(with_catalogue_av(obs, None, av), label)
