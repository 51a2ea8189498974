"""Cosmic time: the paper's 64 time bins, age of the universe at a redshift, luminosity distance.

Every function takes any astropy cosmology object; Planck15 is the default because the paper's
binning (64 bins of about 215 Myr from the Big Bang to today) is defined with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.cosmology import Cosmology, Planck15

DEFAULT_COSMOLOGY = Planck15
N_TIME_BINS = 64


def _check_redshift(redshift) -> np.ndarray:
    z = np.asarray(redshift, dtype=float)
    if not np.all(np.isfinite(z)):
        raise ValueError(f"redshift must be finite, got {redshift!r}")
    if np.any(z < 0):
        raise ValueError(f"redshift must be >= 0, got {redshift!r}")
    return z


def age_at_redshift_gyr(redshift, cosmology: Cosmology = DEFAULT_COSMOLOGY):
    """Age of the universe (cosmic time since the Big Bang) at `redshift`, in Gyr."""
    return cosmology.age(_check_redshift(redshift)).to_value(u.Gyr)


def luminosity_distance_cm(redshift, cosmology: Cosmology = DEFAULT_COSMOLOGY):
    """Luminosity distance to `redshift`, in cm."""
    return cosmology.luminosity_distance(_check_redshift(redshift)).to_value(u.cm)


_AGE_TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _age_table(cosmology: Cosmology, n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Age (Gyr) on a dense grid of log scale factor, for fast interpolation of millions of values
    (cached per cosmology; astropy cosmologies are not hashable, their repr is)."""
    key = repr(cosmology)
    if key not in _AGE_TABLES:
        log_a = np.linspace(np.log(1e-4), 0.0, n)
        _AGE_TABLES[key] = log_a, cosmology.age(1.0 / np.exp(log_a) - 1.0).to_value(u.Gyr)
    return _AGE_TABLES[key]


def age_at_scale_factor_gyr(scale_factor, cosmology: Cosmology = DEFAULT_COSMOLOGY) -> np.ndarray:
    """Age of the universe (cosmic time) at scale factor `scale_factor` (0 < a <= 1), in Gyr,
    interpolated in log a from a table of the cosmology's age (better than 1e-5 Gyr; tested
    against astropy): fast for the millions of star particles of a simulation."""
    a = np.asarray(scale_factor, dtype=float)
    if np.any((a <= 0) | (a > 1 + 1e-6)):
        raise ValueError("scale factors must be in (0, 1]")
    log_a, age = _age_table(cosmology)
    return np.interp(np.log(np.clip(a, 1e-4, 1.0)), log_a, age)


def redshift_at_age_gyr(age_gyr, cosmology: Cosmology = DEFAULT_COSMOLOGY) -> np.ndarray:
    """Redshift at which the universe had age `age_gyr` (the inverse of age_at_redshift_gyr)."""
    from astropy.cosmology import z_at_value

    age = np.atleast_1d(np.asarray(age_gyr, dtype=float))
    today = cosmology.age(0).to_value(u.Gyr)
    if np.any(~np.isfinite(age) | (age <= 0) | (age > today * (1 + 1e-9))):
        raise ValueError(f"ages must be in (0, {today:.4f}] Gyr, got {age_gyr!r}")
    z = np.array([0.0 if a >= today else float(z_at_value(cosmology.age, a * u.Gyr, zmax=1e4)) for a in age])
    return z.reshape(np.shape(age_gyr))


@dataclass(frozen=True)
class TimeBins:
    """Equal bins of cosmic time from the Big Bang (t = 0) to the age of the universe today.

    `edges` and `centers` are cosmic times in Gyr; `widths` are in yr, so that an SFR in Msun/yr
    times a width is a mass in Msun.
    """

    cosmology: Cosmology = field(default_factory=lambda: DEFAULT_COSMOLOGY)
    n_bins: int = N_TIME_BINS

    def __post_init__(self):
        if int(self.n_bins) != self.n_bins or self.n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {self.n_bins!r}")

    @property
    def age_of_universe_gyr(self) -> float:
        return float(self.cosmology.age(0).to_value(u.Gyr))

    @property
    def edges(self) -> np.ndarray:
        """Bin edges in cosmic time, Gyr, shape (n_bins + 1,)."""
        return np.linspace(0.0, self.age_of_universe_gyr, self.n_bins + 1)

    @property
    def centers(self) -> np.ndarray:
        """Bin centres in cosmic time, Gyr, shape (n_bins,)."""
        e = self.edges
        return 0.5 * (e[1:] + e[:-1])

    @property
    def widths(self) -> np.ndarray:
        """Bin widths in yr, shape (n_bins,)."""
        return np.diff(self.edges) * 1e9

    def fraction_formed_before(self, cosmic_time_gyr: float) -> np.ndarray:
        """Fraction of each bin that lies before `cosmic_time_gyr` (1 before, 0 after, partial in it)."""
        e = self.edges
        return np.clip((cosmic_time_gyr - e[:-1]) / (e[1:] - e[:-1]), 0.0, 1.0)
