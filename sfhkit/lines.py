"""Spectral lines and the pixel masks built from them.

The line list (data/lines.csv, vacuum Angstrom) names each line and gives its type: "emission"
(nebular and forbidden lines), "absorption" (stellar features), "balmer" (the hydrogen Balmer series,
both), or "sky" (night-sky lines, observed frame).  Its `mask` column says which lines
`pixels_near_lines` masks by default: emission lines, the three strongest Balmer lines (H alpha,
H beta, H gamma, whose nebular emission fills in the stellar absorption) and the sky lines.

Every mask function returns True for pixels to leave OUT; combine them and hand the complement to
`Observation.with_mask`, or use `apply_masks`, which does it and records what it did.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .lsf import SPEED_OF_LIGHT_KMS

LINE_TYPES = ("emission", "absorption", "balmer", "sky")
LINE_COLOURS = {"emission": "green", "absorption": "red", "balmer": "orange", "sky": "grey"}
DEFAULT_HALF_WIDTH_KMS = 400.0       # emission lines: +-400 km/s around the line centre
DEFAULT_SKY_HALF_WIDTH_ANGSTROM = 5.0


@lru_cache(maxsize=1)
def _line_table():
    import pandas as pd

    from .data.embedded import embedded_path

    table = pd.read_csv(embedded_path("lines.csv"), comment="#")
    bad = set(table["type"]) - set(LINE_TYPES)
    if bad:  # pragma: no cover - guards the shipped file
        raise ValueError(f"lines.csv has unknown line types {bad}")
    return table


def line_list(types=None):
    """The line list as a pandas DataFrame (name, wavelength_vacuum_angstrom, type, frame, mask),
    optionally only the given `types`."""
    table = _line_table().copy()
    if types is not None:
        types = [types] if isinstance(types, str) else list(types)
        unknown = set(types) - set(LINE_TYPES)
        if unknown:
            raise ValueError(f"unknown line types {sorted(unknown)}; known: {LINE_TYPES}")
        table = table[table["type"].isin(types)]
    return table.reset_index(drop=True)


def observed_line_wavelengths(redshift: float, types=None):
    """Line list with an added column `observed_angstrom`: (1 + z) times the rest wavelength for
    galaxy lines, unchanged for sky lines."""
    table = line_list(types)
    stretch = np.where(table["frame"] == "rest", 1.0 + redshift, 1.0)
    table["observed_angstrom"] = table["wavelength_vacuum_angstrom"] * stretch
    return table


def pixels_near_lines(wavelength, redshift: float, *, names=None, half_width_kms: float = DEFAULT_HALF_WIDTH_KMS,
                      sky_half_width_angstrom: float = DEFAULT_SKY_HALF_WIDTH_ANGSTROM, include_sky: bool = True):
    """True for observed-frame pixels within `half_width_kms` of a galaxy line or within
    `sky_half_width_angstrom` of a sky line.  Lines: those flagged in the list's `mask` column, or
    exactly the lines named in `names`."""
    wavelength = np.asarray(wavelength, dtype=float)
    if half_width_kms < 0 or sky_half_width_angstrom < 0:
        raise ValueError("mask half-widths must be >= 0")
    table = observed_line_wavelengths(redshift)
    if names is None:
        table = table[table["mask"] == 1]
    else:
        unknown = set(names) - set(table["name"])
        if unknown:
            raise ValueError(f"lines not in the line list: {sorted(unknown)}")
        table = table[table["name"].isin(list(names))]
    if not include_sky:
        table = table[table["type"] != "sky"]
    centre = table["observed_angstrom"].to_numpy()
    half = np.where(table["type"] == "sky", sky_half_width_angstrom, centre * half_width_kms / SPEED_OF_LIGHT_KMS)
    return (np.abs(wavelength[:, None] - centre[None, :]) <= half[None, :]).any(axis=1)


def pixels_in_ranges(wavelength, ranges, *, redshift: float = 0.0, frame: str = "observed"):
    """True for pixels inside any (low, high) Angstrom range; `frame="rest"` ranges are stretched by 1+z."""
    if frame not in ("observed", "rest"):
        raise ValueError(f"frame must be 'observed' or 'rest', not {frame!r}")
    wavelength = np.asarray(wavelength, dtype=float)
    stretch = 1.0 + redshift if frame == "rest" else 1.0
    inside = np.zeros(wavelength.shape, dtype=bool)
    for pair in ranges:
        low, high = (float(v) for v in pair)
        if not low < high:
            raise ValueError(f"a mask range needs low < high, got {pair!r}")
        inside |= (wavelength >= low * stretch) & (wavelength <= high * stretch)
    return inside


def largest_negative_residual_ranges(wavelength, residual, n: int = 3, width_angstrom: float = 40.0):
    """The paper's "three areas with the largest negative residuals": the `n` non-overlapping
    windows of `width_angstrom` (observed frame) where the running mean of `residual` (observed
    minus model over sigma per pixel, NaN for masked pixels; e.g. the median over posterior draws) is
    most negative.  Returns a list of (low, high) Angstrom, most negative first."""
    wavelength = np.asarray(wavelength, dtype=float)
    residual = np.asarray(residual, dtype=float)
    if residual.shape != wavelength.shape:
        raise ValueError("residual must have the wavelength's shape")
    valid = np.isfinite(residual)
    if not valid.any():
        raise ValueError("every residual is NaN")
    # Running mean over each pixel's window (NaN-aware, via cumulative sums).
    low_index = np.searchsorted(wavelength, wavelength - width_angstrom / 2, side="left")
    high_index = np.searchsorted(wavelength, wavelength + width_angstrom / 2, side="right")
    csum = np.concatenate([[0.0], np.cumsum(np.where(valid, residual, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(valid)])
    count = ccount[high_index] - ccount[low_index]
    with np.errstate(invalid="ignore", divide="ignore"):
        running = np.where(count > 0, (csum[high_index] - csum[low_index]) / count, np.inf)
    ranges = []
    taken = np.zeros(wavelength.shape, dtype=bool)
    for centre in np.argsort(running):
        if len(ranges) == n or not np.isfinite(running[centre]):
            break
        window = slice(low_index[centre], high_index[centre])
        if taken[window].any():
            continue
        taken[window] = True
        ranges.append((float(wavelength[low_index[centre]]), float(wavelength[high_index[centre] - 1])))
    return ranges


def parse_ranges(text: str) -> list[tuple[float, float]]:
    """'5570-5590, 6860-6920' (or ';'-separated) -> [(5570.0, 5590.0), (6860.0, 6920.0)], each
    (low, high) in Angstrom; for the explorer's typed masks and batch catalogues' `mask` column."""
    ranges = []
    for part in filter(None, (p.strip() for p in str(text).replace(";", ",").split(","))):
        try:
            lo, hi = (float(b) for b in part.replace(" ", "").split("-"))
        except ValueError:
            raise ValueError(f"{part!r} is not a range LOW-HIGH in Angstrom (e.g. 5570-5590)") from None
        ranges.append((min(lo, hi), max(lo, hi)))
    return ranges


def masked_ranges(wavelength, mask) -> list[tuple[float, float]]:
    """(first, last) wavelength of each contiguous run of masked pixels (`mask` False), for shading."""
    masked = ~np.asarray(mask, dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], masked.astype(int), [0]])))
    return [(float(wavelength[a]), float(wavelength[b - 1])) for a, b in zip(edges[::2], edges[1::2])]


def apply_masks(observation, *, lines: bool = True, sky: bool = True, ranges=(), rest_ranges=(),
                half_width_kms: float = DEFAULT_HALF_WIDTH_KMS,
                sky_half_width_angstrom: float = DEFAULT_SKY_HALF_WIDTH_ANGSTROM):
    """A copy of `observation` with line, sky and user-range pixels masked; its metadata["masks"]
    records the settings and how many more pixels each mask removed."""
    wavelength, z = observation.wavelength, observation.redshift
    parts = {}
    if lines:
        parts["lines"] = pixels_near_lines(wavelength, z, half_width_kms=half_width_kms, include_sky=False)
    if sky:
        sky_table = line_list("sky")
        parts["sky"] = pixels_near_lines(wavelength, z, names=list(sky_table["name"]),
                                         sky_half_width_angstrom=sky_half_width_angstrom)
    if len(ranges):
        parts["ranges"] = pixels_in_ranges(wavelength, ranges)
    if len(rest_ranges):
        parts["rest_ranges"] = pixels_in_ranges(wavelength, rest_ranges, redshift=z, frame="rest")
    excluded = np.zeros(wavelength.shape, dtype=bool)
    for part in parts.values():
        excluded |= part
    masked = observation.with_mask(~excluded)
    record = {"half_width_kms": half_width_kms if lines else None,
              "sky_half_width_angstrom": sky_half_width_angstrom if sky else None,
              "ranges": [list(map(float, r)) for r in ranges], "rest_ranges": [list(map(float, r)) for r in rest_ranges],
              "pixels_removed": {name: int((part & observation.mask).sum()) for name, part in parts.items()}}
    masked.metadata["masks"] = record
    return masked
