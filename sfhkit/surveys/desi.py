"""DESI spectra (DR1 and later) into an `Observation`: one target of a coadd file, its B, R and Z
cameras joined, the redshift from redrock, the line spread from the resolution matrices.

Data model (desidatamodel, healpix/SURVEY/PROGRAM/PIXGROUP/PIXNUM/coadd-SURVEY-PROGRAM-PIXNUM.fits):
FIBERMAP is a table with one row per target (TARGETID, TARGET_RA, TARGET_DEC, COADD_FIBERSTATUS,
EBV, ...); then for each camera X of B, R and Z:

* X_WAVELENGTH: (nwave,) vacuum Angstrom, 0.8 A steps; the three cameras share one grid and overlap
  (B 3600-5800, R 5760-7620, Z 7520-9824 A);
* X_FLUX: (nspec, nwave), 1e-17 erg/s/cm2/A; X_IVAR its inverse variance; X_MASK, 0 = good;
* X_RESOLUTION: (nspec, ndiag, nwave), the diagonals of the band-diagonal resolution matrix R with
  offsets +ndiag//2 ... -ndiag//2 in scipy's dia_matrix convention (R[i, i + k] = data[ndiag//2 - k, i + k]);
  row i of R is the line spread that the observed pixel i saw.

Coadd files hold no redshift.  It comes from the redrock file beside it
(redrock-SURVEY-PROGRAM-PIXNUM.fits, HDU REDSHIFTS: TARGETID, Z, ZERR, ZWARN, SPECTYPE, SUBTYPE,
DELTACHI2), from a redshift catalogue (zpix-/zall-*.fits, HDU ZCATALOG, the same columns and
ZCAT_PRIMARY), or from the caller.

Cameras are joined where they overlap as desispec's coadd_cameras does: per pixel the
inverse-variance weighted mean of the cameras that have good data there, with the summed inverse
variance; the instrument's sigma there is the same weighted mean of the cameras' sigmas.  Each
camera's sigma per pixel is the second moment of its resolution matrix's row (in pixels), times
the pixel width, in km/s.

specutils has "DESI coadd" and "DESI spectra" loaders.  They return the cameras as separate
spectra with the raw resolution diagonals in `meta` and no redshift; joining the cameras, the line
spread and the redshift are what this reader adds, so it reads the HDUs itself.

    >>> obs = read_coadd("coadd-main-dark-10016.fits", targetid=39627640566453451)   # redrock beside it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..lsf import SPEED_OF_LIGHT_KMS
from ..observation import Observation
from ._fits import open_fits, require_hdus

CAMERAS = ("B", "R", "Z")
CAMERA_HDUS = ("WAVELENGTH", "FLUX", "IVAR", "MASK")
REDSHIFT_HDUS = ("REDSHIFTS", "ZCATALOG")        # redrock files, redshift catalogues
_REDSHIFT_COLUMNS = ("TARGETID", "Z")
# Wavelengths of the same pixel in two cameras agree to float precision on DESI's common grid.
SAME_PIXEL_ANGSTROM = 1e-3


def is_desi_coadd(hdu_names) -> bool:
    """Whether a file with these HDU names is a DESI coadd (or spectra) file."""
    names = set(hdu_names)
    return "FIBERMAP" in names and any(f"{camera}_FLUX" in names for camera in CAMERAS)


def resolution_sigma_pixels(diagonals) -> np.ndarray:
    """(nwave,) Gaussian-equivalent sigma in pixels of each row of one resolution matrix given by
    its diagonals (ndiag, nwave) (the X_RESOLUTION convention above): the square root of the
    row's second central moment over its column offsets.  NaN where a row has no weight.  The
    ndiag//2 rows at each end reach past the camera's pixels, so their kernels are cut: they take
    the sigma of the nearest complete row."""
    data = np.asarray(diagonals, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"one target's resolution diagonals are (ndiag, nwave), got shape {data.shape}")
    ndiag, nwave = data.shape
    offsets = (ndiag // 2 - np.arange(ndiag))[:, None]                      # column offset k of diagonal d
    columns = np.arange(nwave)[None, :] + offsets                           # row i's entry on diagonal d: j = i + k
    inside = (columns >= 0) & (columns < nwave)
    weights = np.where(inside, data[np.arange(ndiag)[:, None], np.clip(columns, 0, nwave - 1)], 0.0)
    total = weights.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weights * offsets).sum(axis=0) / total
        second = (weights * (offsets - mean) ** 2).sum(axis=0) / total
    sigma = np.where(total > 0, np.sqrt(np.clip(second, 0.0, None)), np.nan)
    half = ndiag // 2
    if nwave > 2 * half:
        sigma[:half], sigma[nwave - half:] = sigma[half], sigma[nwave - half - 1]
    return sigma


def _row_of_target(fibermap, targetid, index, name) -> int:
    ids = np.asarray(fibermap["TARGETID"])
    if targetid is not None:
        found = np.flatnonzero(ids == int(targetid))
        if found.size == 0:
            raise ValueError(f"{name}: no TARGETID {targetid} in FIBERMAP ({ids.size} targets, e.g. {ids[:3].tolist()})")
        return int(found[0])
    if index is not None:
        if not 0 <= int(index) < ids.size:
            raise ValueError(f"{name}: index {index} is outside the {ids.size} targets")
        return int(index)
    if ids.size != 1:
        raise ValueError(f"{name} holds {ids.size} targets: say which with targetid= (e.g. {ids[:3].tolist()}) "
                         "or index=")
    return 0


def redrock_path_beside(coadd_path) -> Path | None:
    """redrock-X.fits in the folder of coadd-X.fits, if it is there."""
    path = Path(coadd_path)
    if not path.name.startswith("coadd-"):
        return None
    candidate = path.with_name("redrock-" + path.name[len("coadd-"):])
    return candidate if candidate.exists() else None


def read_redshift(source, targetid: int) -> dict:
    """Z, ZERR, ZWARN, SPECTYPE, SUBTYPE and DELTACHI2 of `targetid` from a redrock file (REDSHIFTS)
    or a redshift catalogue (ZCATALOG; its ZCAT_PRIMARY row where a target appears more than once)."""
    with open_fits(source, "DESI redshift file") as hdul:
        names = [hdu.name for hdu in hdul]
        hdu = next((h for h in REDSHIFT_HDUS if h in names), None)
        if hdu is None:
            raise ValueError(f"{source} is not a DESI redrock file or redshift catalogue: no HDU of {list(REDSHIFT_HDUS)} "
                             f"(it has {names})")
        table = hdul[hdu].data
        lacking = [c for c in _REDSHIFT_COLUMNS if c not in table.columns.names]
        if lacking:
            raise ValueError(f"{source}: the {hdu} table lacks column(s) {lacking}")
        rows = np.flatnonzero(np.asarray(table["TARGETID"]) == int(targetid))
        if rows.size > 1 and "ZCAT_PRIMARY" in table.columns.names:
            rows = rows[np.asarray(table["ZCAT_PRIMARY"], dtype=bool)[rows]]
        if rows.size != 1:
            raise ValueError(f"{source}: {'no' if rows.size == 0 else rows.size} {hdu} rows for TARGETID {targetid}")
        row = table[int(rows[0])]
        out = {"redshift": float(row["Z"]), "redshift_source": f"{Path(source).name} {hdu}"}
        for key, column in (("redshift_err", "ZERR"), ("zwarning", "ZWARN"), ("class", "SPECTYPE"),
                            ("subclass", "SUBTYPE"), ("delta_chi2", "DELTACHI2")):
            if column in table.columns.names:
                value = row[column]
                out[key] = value.strip() if isinstance(value, str) else value.item()
        return out


def _join_cameras(cameras: list[dict], name) -> dict:
    """The cameras' pixels on their common wavelength grid, overlaps combined by inverse variance."""
    grid = np.unique(np.round(np.concatenate([c["wavelength"] for c in cameras]) / SAME_PIXEL_ANGSTROM))
    wavelength = grid * SAME_PIXEL_ANGSTROM
    n = wavelength.size
    ivar_sum, flux_sum = np.zeros(n), np.zeros(n)
    sigma_sum, sigma_weight, sigma_any = np.zeros(n), np.zeros(n), np.full(n, np.nan)
    for camera in cameras:
        at = np.searchsorted(grid, np.round(camera["wavelength"] / SAME_PIXEL_ANGSTROM))
        if np.abs(wavelength[at] - camera["wavelength"]).max() > SAME_PIXEL_ANGSTROM:
            raise ValueError(f"{name}: camera {camera['camera']} is not on the other cameras' wavelength grid")
        good = camera["good"]
        weight = np.where(good, camera["ivar"], 0.0)
        np.add.at(ivar_sum, at, weight)
        np.add.at(flux_sum, at, weight * np.where(good, camera["flux"], 0.0))
        if camera["sigma_kms"] is not None:
            sigma = camera["sigma_kms"]
            usable = np.isfinite(sigma)
            np.add.at(sigma_sum, at[usable & good], (weight * sigma)[usable & good])
            np.add.at(sigma_weight, at[usable & good], weight[usable & good])
            sigma_any[at[usable]] = np.where(np.isnan(sigma_any[at[usable]]), sigma[usable], sigma_any[at[usable]])
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(ivar_sum > 0, flux_sum / ivar_sum, 0.0)
        sigma_kms = np.where(sigma_weight > 0, sigma_sum / sigma_weight, sigma_any)
    if any(c["sigma_kms"] is None for c in cameras):
        sigma_kms = None
    elif not np.isfinite(sigma_kms).all():
        fill = np.isfinite(sigma_kms)
        sigma_kms = np.interp(wavelength, wavelength[fill], sigma_kms[fill])
    return {"wavelength": wavelength, "flux": flux, "ivar": ivar_sum, "sigma_kms": sigma_kms}


def read_coadd(source, *, targetid: int | None = None, index: int | None = None, redshift: float | None = None,
               redrock=None, av: float = 0.0) -> Observation:
    """An `Observation` of one target of a DESI coadd file (module docstring).

    targetid or index picks the target (either may be left out when the file holds one).  The
    redshift is `redshift` if given, else the target's row in `redrock` (a redrock file or a
    redshift catalogue), else in the redrock file beside the coadd.  Pixels with ivar = 0 or a
    non-zero mask in every camera are masked."""
    name = str(source)
    with open_fits(source, "DESI coadd file") as hdul:
        names = [hdu.name for hdu in hdul]
        cameras_present = [c for c in CAMERAS if f"{c}_FLUX" in names]
        if "FIBERMAP" not in names or not cameras_present:
            require_hdus(hdul, ("FIBERMAP", "B_FLUX", "R_FLUX", "Z_FLUX"), name, "a DESI coadd file")
        if "EXP_FIBERMAP" not in names and "NIGHT" in hdul["FIBERMAP"].columns.names:
            raise ValueError(f"{name} is a DESI spectra file (one row per exposure); fit the coadd file "
                             "(coadd-*.fits), which combines the exposures")
        require_hdus(hdul, tuple(f"{c}_{h}" for c in cameras_present for h in CAMERA_HDUS), name,
                     f"a DESI coadd file with camera(s) {cameras_present}")
        fibermap = hdul["FIBERMAP"].data
        if "TARGETID" not in fibermap.columns.names:
            raise ValueError(f"{name}: the FIBERMAP table lacks column TARGETID")
        row = _row_of_target(fibermap, targetid, index, name)
        cameras, missing_resolution = [], []
        for camera in cameras_present:
            wavelength = np.asarray(hdul[f"{camera}_WAVELENGTH"].data, dtype=float)
            flux = np.asarray(hdul[f"{camera}_FLUX"].data[row], dtype=float)
            ivar = np.asarray(hdul[f"{camera}_IVAR"].data[row], dtype=float)
            mask = np.asarray(hdul[f"{camera}_MASK"].data[row])
            if flux.shape != wavelength.shape or ivar.shape != wavelength.shape or mask.shape != wavelength.shape:
                raise ValueError(f"{name}: camera {camera}'s FLUX/IVAR/MASK rows do not match its "
                                 f"{wavelength.size} wavelengths")
            sigma_kms = None
            if f"{camera}_RESOLUTION" in names:
                sigma_pixels = resolution_sigma_pixels(hdul[f"{camera}_RESOLUTION"].data[row])
                sigma_kms = SPEED_OF_LIGHT_KMS * sigma_pixels * np.gradient(wavelength) / wavelength
            else:
                missing_resolution.append(camera)
            good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & (mask == 0)
            cameras.append({"camera": camera, "wavelength": wavelength, "flux": flux, "ivar": ivar, "good": good,
                            "sigma_kms": sigma_kms, "n_flagged": int(((mask != 0) & (ivar > 0)).sum())})
        target = fibermap[row]
        metadata = {"kind": "desi", "survey": "DESI", "source": name, "targetid": int(target["TARGETID"]),
                    "spec_id": str(int(target["TARGETID"])), "cameras": "".join(cameras_present).lower(),
                    "n_flagged_pixels": sum(c["n_flagged"] for c in cameras)}
        for key, column in (("ra_deg", "TARGET_RA"), ("dec_deg", "TARGET_DEC"),
                            ("coadd_fiberstatus", "COADD_FIBERSTATUS"), ("milky_way_ebv", "EBV")):
            if column in fibermap.columns.names:
                metadata[key] = np.asarray(target[column]).item()
        if "HPXPIXEL" in hdul[0].header:
            metadata["healpix"] = int(hdul[0].header["HPXPIXEL"])
    if missing_resolution:
        metadata["note"] = f"no resolution matrix for camera(s) {missing_resolution}: no instrumental line spread"
    joined = _join_cameras(cameras, name)
    if not (joined["ivar"] > 0).any():
        raise ValueError(f"{name}: TARGETID {metadata['targetid']} has no pixel with ivar > 0 and mask 0")
    if redshift is None:
        redrock = redrock if redrock is not None else redrock_path_beside(source)
        if redrock is None:
            raise ValueError(f"{name}: a DESI coadd file has no redshift; give redrock= (the redrock-*.fits "
                             "beside it, or a zpix/zall redshift catalogue) or redshift=")
        found = read_redshift(redrock, metadata["targetid"])
        redshift = found.pop("redshift")
        metadata.update(found)
    else:
        metadata["redshift_source"] = "given"
    if not np.isfinite(redshift) or redshift <= 0:
        raise ValueError(f"{name}: redshift {redshift} for TARGETID {metadata['targetid']}; sfhkit fits galaxies at z > 0")
    return Observation.from_ivar(joined["wavelength"], joined["flux"], joined["ivar"], float(redshift), av=av,
                                 metadata=metadata, instrument_sigma_kms=joined["sigma_kms"])
