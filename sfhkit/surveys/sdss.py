"""SDSS single-fibre spectra into an `Observation`: the spec-PLATE-MJD-FIBER.fits files of SDSS-I/II
(DR8+ reductions) and of SDSS-III BOSS and SDSS-IV eBOSS (DR9-DR17), full and lite.

Data model (https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/spectra/PLATE4/spec.html):
HDU 1 "COADD" is a table with loglam (log10 vacuum Angstrom), flux and ivar (1e-17 erg/s/cm2/A and its
inverse variance, 0 = bad), and_mask (SPPIXMASK bits set in every exposure), wdisp (the instrumental
Gaussian sigma in pixels of 1e-4 dex), sky and model (the pipeline's best fit).  HDU 2 holds the
object's catalogue row: "SPECOBJ" (the specObj file's columns) for SDSS-I/II plates, "SPALL" (the spAll
file's) for BOSS and eBOSS; both have PLATE, MJD, FIBERID, Z, Z_ERR, ZWARNING, CLASS, SUBCLASS, VDISP,
VDISP_ERR, SN_MEDIAN_ALL, PLUG_RA, PLUG_DEC.  HDU 3 "SPZLINE" has the emission-line fits; full files add
one HDU per exposure, lite files stop at SPZLINE.  SDSS-I/II spectra cover 3800-9200 A at R 1850-2200,
BOSS/eBOSS 3600-10400 A at R 1560-2650: the reader takes the coverage from loglam and the resolution
from wdisp, so both need nothing else.

specutils has an "SDSS-III/IV spec" loader, but it masks every pixel with any and_mask bit (half of
spec-0266-51602-0526 carries the advisory MANYBADCOLUMNS) and drops wdisp and the redshift, which
the fit needs; so this reader reads the columns itself.

    >>> from sfhkit.surveys.sdss import read_spec
    >>> obs = read_spec("spec-0266-51602-0614.fits")          # vdisp and wdisp ride along
    >>> obs = from_sdss(266, 51602, 614)                        # through astroquery, cached
"""

from __future__ import annotations

import re

import numpy as np

from ..lsf import SPEED_OF_LIGHT_KMS
from ..observation import Observation
from ._fits import open_fits, require_hdus

# One SDSS pixel: 1e-4 in log10 wavelength, i.e. c ln(10) 1e-4 = 69.0 km/s.
PIXEL_KMS = SPEED_OF_LIGHT_KMS * np.log(10.0) * 1e-4

# SPPIXMASK bits (https://www.sdss4.org/dr17/algorithms/bitmasks/#SPPIXMASK).
SPPIXMASK = {"NOPLUG": 0, "BADTRACE": 1, "BADFLAT": 2, "BADARC": 3, "MANYBADCOLUMNS": 4, "MANYREJECTED": 5,
             "LARGESHIFT": 6, "BADSKYFIBER": 7, "NEARWHOPPER": 8, "WHOPPER": 9, "SMEARIMAGE": 10,
             "SMEARHIGHSN": 11, "SMEARMEDSN": 12, "NEARBADPIXEL": 16, "LOWFLAT": 17, "FULLREJECT": 18,
             "PARTIALREJECT": 19, "SCATTEREDLIGHT": 20, "CROSSTALK": 21, "NOSKY": 22, "BRIGHTSKY": 23,
             "NODATA": 24, "COMBINEREJ": 25, "BADFLUXFACTOR": 26, "BADSKYCHI": 27, "REDMONSTER": 28}
# Masked by default: flags that say the pixel's flux or noise is wrong.  Left in: the advisory flags
# (MANYBADCOLUMNS, NEARBADPIXEL, NEARWHOPPER, SMEAR*, PARTIALREJECT, CROSSTALK), which the pipeline
# sets on whole stretches of good spectra (half of spec-0266-51602-0526 carries MANYBADCOLUMNS).
DEFAULT_MASKED_FLAGS = ("NOPLUG", "BADTRACE", "BADFLAT", "BADARC", "MANYREJECTED", "LARGESHIFT", "BADSKYFIBER",
                        "WHOPPER", "LOWFLAT", "FULLREJECT", "SCATTEREDLIGHT", "NOSKY", "BRIGHTSKY", "NODATA",
                        "COMBINEREJ", "BADFLUXFACTOR", "BADSKYCHI", "REDMONSTER")

_COADD_COLUMNS = ("loglam", "flux", "ivar", "and_mask", "wdisp")
_CATALOGUE_COLUMNS = ("PLATE", "MJD", "FIBERID", "Z")
# The catalogue-row HDU names the survey generation: SDSS-I/II's specObj, or BOSS/eBOSS's spAll.
CATALOGUE_HDUS = {"SPECOBJ": "SDSS-I/II", "SPALL": "BOSS/eBOSS"}


def parse_spec_id(text: str) -> tuple[int, int, int]:
    """(plate, mjd, fiber) from "266-51602-614", "0266-51602-0614" or a spec-/spFly- file name."""
    match = re.search(r"(\d{3,5})-(\d{5})-(\d{1,4})(?:\.fits)?(?:\.gz)?$", str(text))
    if match is None:
        raise ValueError(f"{text!r} is not an SDSS spectrum identifier PLATE-MJD-FIBER (e.g. 266-51602-614)")
    return int(match[1]), int(match[2]), int(match[3])


def spec_name(plate: int, mjd: int, fiber: int) -> str:
    """The upstream file stem, e.g. spec-0266-51602-0614."""
    return f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}"


def mask_bits(flags) -> int:
    """An integer with the SPPIXMASK bits of the flag names `flags` set ("all": every bit)."""
    if isinstance(flags, str):
        if flags != "all":
            raise ValueError(f"flags must be 'all' or a list of SPPIXMASK names, not {flags!r}")
        return ~0
    unknown = set(flags) - set(SPPIXMASK)
    if unknown:
        raise ValueError(f"unknown SPPIXMASK flags {sorted(unknown)}; known: {sorted(SPPIXMASK)}")
    return sum(1 << SPPIXMASK[name] for name in set(flags))


def read_spec(source, *, av: float = 0.0, masked_flags=DEFAULT_MASKED_FLAGS) -> Observation:
    """An `Observation` from an SDSS, BOSS or eBOSS spec file (path or open astropy HDUList).

    Pixels with ivar = 0 or any of `masked_flags` set in and_mask are masked.  The redshift and
    velocity dispersion come from the catalogue row (SPECOBJ or SPALL: Z, VDISP); the instrumental
    sigma per pixel from wdisp.  Metadata: identifiers, the survey, VDISP_ERR, CLASS, SUBCLASS,
    ZWARNING, SN_MEDIAN_ALL, RA/Dec, the pipeline model and the sky (per pixel)."""
    from astropy.io import fits

    if isinstance(source, fits.HDUList):
        hdul, name = source, source.filename()
    else:
        hdul, name = open_fits(source, "SDSS spectrum file"), source
    with hdul:
        names = [hdu.name for hdu in hdul]
        catalogue_hdu = next((hdu for hdu in CATALOGUE_HDUS if hdu in names), "SPECOBJ or SPALL")
        require_hdus(hdul, ("COADD", catalogue_hdu), name,
                     "an SDSS, BOSS or eBOSS spec-PLATE-MJD-FIBER file (COADD with SPECOBJ or SPALL)",
                     hint="; a spFly file is FIREFLY's output (sfhkit.surveys.firefly), a MaNGA cube needs "
                          "sfhkit.surveys.manga")
        coadd, catalogue = hdul["COADD"].data, hdul[catalogue_hdu].data
        for table, needed, hdu in ((coadd, _COADD_COLUMNS, "COADD"), (catalogue, _CATALOGUE_COLUMNS, catalogue_hdu)):
            lacking = [c for c in needed if c not in table.columns.names]
            if lacking:
                raise ValueError(f"{name}: the {hdu} table lacks column(s) {lacking}")
        if len(catalogue) != 1:
            raise ValueError(f"{name}: the {catalogue_hdu} table has {len(catalogue)} rows, a spec file has one")
        row = catalogue[0]
        wavelength = 10 ** np.asarray(coadd["loglam"], dtype=float)
        flux = np.asarray(coadd["flux"], dtype=float)
        ivar = np.asarray(coadd["ivar"], dtype=float)
        if not (ivar > 0).any():
            raise ValueError(f"{name}: ivar is 0 in every pixel, the spectrum has no usable data")
        flagged = (np.asarray(coadd["and_mask"]).astype(np.int64) & mask_bits(masked_flags)) != 0
        wdisp = np.asarray(coadd["wdisp"], dtype=float)
        # wdisp is 0 in some unusable pixels: give them the median so the LSF stays defined.
        good_wdisp = np.isfinite(wdisp) & (wdisp > 0)
        wdisp = np.where(good_wdisp, wdisp, np.median(wdisp[good_wdisp]) if good_wdisp.any() else 1.0)
        plate, mjd, fiber = int(row["PLATE"]), int(row["MJD"]), int(row["FIBERID"])
        vdisp = float(row["VDISP"]) if "VDISP" in catalogue.columns.names else None
        metadata = {"kind": "sdss", "survey": CATALOGUE_HDUS[catalogue_hdu],
                    "source": str(name) if name else spec_name(plate, mjd, fiber),
                    "spec_id": f"{plate}-{mjd}-{fiber}", "plate": plate, "mjd": mjd, "fiber": fiber,
                    "pipeline_model": np.asarray(coadd["model"], dtype=float) if "model" in coadd.columns.names
                    else None,
                    "sky_flux": np.asarray(coadd["sky"], dtype=float) if "sky" in coadd.columns.names else None,
                    "n_flagged_pixels": int((flagged & (ivar > 0)).sum())}
        for key, column in (("redshift_err", "Z_ERR"), ("velocity_dispersion_err_kms", "VDISP_ERR"),
                            ("class", "CLASS"), ("subclass", "SUBCLASS"), ("zwarning", "ZWARNING"),
                            ("sn_median", "SN_MEDIAN_ALL"), ("ra_deg", "PLUG_RA"), ("dec_deg", "PLUG_DEC"),
                            ("specobjid", "SPECOBJID"), ("run2d", "RUN2D"), ("program", "PROGRAMNAME")):
            if column in catalogue.columns.names:
                value = row[column]
                metadata[key] = value.strip() if isinstance(value, str) else value.item()
        metadata = {k: v for k, v in metadata.items() if v is not None}
        redshift = float(row["Z"])
    if not np.isfinite(redshift) or redshift <= 0:
        raise ValueError(f"{name}: {catalogue_hdu} gives redshift Z={redshift}; sfhkit fits galaxies at z > 0")
    return Observation.from_ivar(wavelength, flux, ivar, redshift, av=av, mask=~flagged, metadata=metadata,
                                 velocity_dispersion_kms=vdisp if vdisp and vdisp > 0 else None,
                                 instrument_sigma_kms=wdisp * PIXEL_KMS)


def fetch_spec(plate: int, mjd: int, fiber: int, *, data_release: int = 17):
    """The spec file of PLATE-MJD-FIBER as an astropy HDUList, through astroquery's SDSS service
    (files are kept in astroquery's cache, so a second call works offline).  Without a network
    connection and without a cached copy this raises ConnectionError with what to do instead."""
    try:
        from astroquery.sdss import SDSS
    except ImportError as err:  # pragma: no cover - astroquery is a core dependency
        raise ImportError("fetching SDSS spectra needs astroquery (pip install astroquery)") from err
    try:
        spectra = SDSS.get_spectra(plate=plate, mjd=mjd, fiberID=fiber, data_release=data_release, cache=True)
    except Exception as err:  # noqa: BLE001 - requests/urllib/astroquery raise many kinds
        raise ConnectionError(
            f"could not fetch {spec_name(plate, mjd, fiber)} from the SDSS archive ({type(err).__name__}: {err}). "
            "Offline? Download the file (https://dr17.sdss.org/optical/spectrum/view/data) and use "
            "`sfhkit infer --fits PATH` or sfhkit.surveys.sdss.read_spec(PATH).") from None
    if not spectra:
        raise LookupError(f"the SDSS archive has no spectrum {plate}-{mjd}-{fiber} in DR{data_release}")
    return spectra[0]


def from_sdss(plate: int, mjd: int, fiber: int, *, data_release: int = 17, **kwargs) -> Observation:
    """`read_spec` of the file fetched by `fetch_spec`."""
    return read_spec(fetch_spec(plate, mjd, fiber, data_release=data_release), **kwargs)
