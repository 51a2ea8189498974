"""The differentiable forward model: SFH + metallicity history -> observed spectrum.

    flux(lambda_obs) = Lsun / (4 pi d_L^2 (1+z)) * [ T(lambda) sum_i SFR_i int_bin_i L_SSP(t(z)-t, Z_i; lambda) dt
                                                    + L_absorbed * D(lambda) ]

in 1e-17 erg/s/cm2/A at observed vacuum wavelengths, where only stars formed before t(z) count
(the bin holding t(z) in part), T is Calzetti attenuation, and D the Draine & Li dust emission
carrying the absorbed luminosity (energy balance).

Everything that does not depend on the history is precomputed at construction, per (grid,
wavelengths, redshift): for each time bin and each grid metallicity, the SSP light of a unit SFR
over that bin, broadened by the line-spread function, redshifted, resampled (flux-conserving) onto
the target pixels and converted to flux.  A call is then an interpolation in metallicity (two
weights per bin) and one matrix product.  Attenuation is applied per target pixel at its rest
wavelength (Calzetti varies by less than 1e-4 across a pixel), so changing A_V rebuilds nothing.

With `rank` set (the default), the (bin x metallicity) x pixel template matrix is replaced by its
truncated SVD after normalising every template to unit norm, which turns the product into a gather
of `rank` coefficients and one (batch, rank) x (rank, pixels) product; `compression_error` reports
the largest relative residual over all templates.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from astropy import units as u
from astropy.cosmology import Cosmology

from .cosmology import DEFAULT_COSMOLOGY, TimeBins, age_at_redshift_gyr, luminosity_distance_cm
from .dust import calzetti_a_over_av, dust_emission_template
from .lsf import LineSpread, broadening_matrix
from .ssp import SSPGrid
from .wavelength import check_wavelengths, pixel_edges, resampling_matrix

FLUX_UNIT_ERG_S_CM2_A = 1e-17  # SDSS flux unit
DUST_FREE_ABOVE_ANGSTROM = 31000.0  # the Calzetti curve is zero beyond 3.1 micron
ENERGY_BIN_DLNLAM = 0.01  # log-wavelength bins for the absorbed-energy integral
COMPRESSION_SEED = 0  # the randomised SVD's projection (`_compress`): a model is the same in every process


class ForwardModel(torch.nn.Module):
    """Observed-frame spectra of histories (batch, 2, n_bins): SFR in Msun/yr, log10 Z/Zsun.

    Parameters
    ----------
    grid : SSPGrid
    wavelength : observed vacuum wavelengths (Angstrom, or an astropy Quantity), increasing
    redshift : > 0
    av : Calzetti A_V in magnitudes (>= 0); settable later through `model.av = ...`
    cosmology : any astropy cosmology (Planck15 by default)
    line_spread : optional `LineSpread` (velocity dispersion + instrument); None = no broadening
    dust_emission : add Draine & Li dust emission by energy balance (qpah, umin, gamma)
    rank : truncated-SVD rank of the template matrix (None: exact), see module docstring
    min_rest_wavelength : shortest rest-frame wavelength (A) allowed in `wavelength`; the model
        has no intergalactic absorption, which matters below Lyman alpha (1216 A)
    """

    def __init__(self, grid: SSPGrid, wavelength, redshift: float, av: float = 0.0,
                 cosmology: Cosmology = DEFAULT_COSMOLOGY, *, time_bins: TimeBins | None = None,
                 line_spread: LineSpread | None = None, dust_emission: bool = True,
                 qpah: float = 3.5, umin: float = 1.0, gamma: float = 0.01,
                 rank: int | None = 128, min_rest_wavelength: float = 1216.0,
                 dtype=torch.float32, device="cpu"):
        super().__init__()
        if isinstance(wavelength, u.Quantity):
            wavelength = wavelength.to_value(u.AA, equivalencies=u.spectral())
        wavelength = check_wavelengths(wavelength, "wavelength")
        redshift = float(redshift)
        if not np.isfinite(redshift) or redshift <= 0:
            raise ValueError(f"redshift must be finite and > 0, got {redshift!r}")
        self.time_bins = time_bins or TimeBins(cosmology)
        self.redshift = redshift
        self.cosmology = cosmology
        self.wavelength = wavelength
        self.ssp_library, self.ssp_logz_range = grid.library, grid.metallicity_range
        self.dtype_, self.device_ = dtype, torch.device(device)
        self.age_at_z_gyr = float(age_at_redshift_gyr(redshift, cosmology))
        lum_dist_cm = float(luminosity_distance_cm(redshift, cosmology))
        flux_per_lsun = grid.lsun_erg_s / (4 * np.pi * lum_dist_cm ** 2 * (1 + redshift)) / FLUX_UNIT_ERG_S_CM2_A

        # 1. Time: years of each time bin that fall in each SSP age cell (the bin holding t(z) in part).
        edges = self.time_bins.edges
        if self.age_at_z_gyr > grid.age_edges_gyr[-1] + 1e-9:
            raise ValueError(f"the SSP grid's ages end at {grid.age_edges_gyr[-1]:.2f} Gyr, younger than "
                             f"the universe at z={redshift} ({self.age_at_z_gyr:.2f} Gyr) in this cosmology")
        active = np.nonzero(edges[:-1] < self.age_at_z_gyr)[0]
        self.n_bins = self.time_bins.n_bins
        self.register_buffer("active_bins", torch.as_tensor(active, device=self.device_))
        age_hi = self.age_at_z_gyr - edges[active]                            # oldest age in bin
        age_lo = np.clip(self.age_at_z_gyr - edges[active + 1], 0.0, None)   # youngest age in bin
        cell = grid.age_edges_gyr
        overlap_yr = 1e9 * np.clip(np.minimum(age_hi[:, None], cell[None, 1:])
                                   - np.maximum(age_lo[:, None], cell[None, :-1]), 0.0, None)
        self.formed_fraction = self.time_bins.fraction_formed_before(self.age_at_z_gyr)
        living = grid.dataset["living_mass_fraction"].values                    # (age, logz)
        self.register_buffer("surviving_per_sfr", self._t(overlap_yr @ living))  # Msun per Msun/yr

        # 2. Templates on the library's wavelengths: Lsun/A per (Msun/yr) in each (bin, logz).
        lum = torch.from_numpy(np.ascontiguousarray(grid.luminosity))       # (age, logz, wave) float32
        n_age, n_logz, n_native = lum.shape
        native = torch.from_numpy(overlap_yr.astype(np.float32)) @ lum.reshape(n_age, -1)
        native = native.reshape(active.size * n_logz, n_native).numpy()     # float32

        # 3. Wavelengths: vacuum rest frame -> line-spread -> redshift -> target pixels.
        rest = grid.vacuum_wavelength
        library_edges = pixel_edges(rest) * (1 + redshift)
        target_edges = pixel_edges(wavelength)
        if target_edges[0] < library_edges[0] or target_edges[-1] > library_edges[-1]:
            raise ValueError(
                f"at z={redshift} the library covers observed {library_edges[0]:.0f}-{library_edges[-1]:.0f} A, "
                f"not the requested {target_edges[0]:.0f}-{target_edges[-1]:.0f} A")
        if wavelength[0] / (1 + redshift) < min_rest_wavelength:
            raise ValueError(
                f"at z={redshift} the bluest requested wavelength is {wavelength[0] / (1 + redshift):.0f} A "
                f"in the rest frame, below min_rest_wavelength={min_rest_wavelength} A: the model has no "
                "intergalactic absorption (redshift too high for these wavelengths)")
        operator = resampling_matrix(rest * (1 + redshift), wavelength)
        self.line_spread = line_spread
        if line_spread is not None:
            sigma = line_spread.sigma_kms(rest, redshift, grid.dataset["library_fwhm"].values)
            operator = operator @ broadening_matrix(rest, sigma)
        operator = sp.csr_matrix(operator)
        templates = np.asarray((operator @ native.T).T, dtype=np.float64) * flux_per_lsun

        # 4. Dust: attenuation per target pixel; absorbed energy on coarse rest-frame bins.
        self.register_buffer("a_over_av_pixel", self._t(calzetti_a_over_av(wavelength / (1 + redshift))))
        self.dust_emission = dust_emission
        if dust_emission:
            coarse_edges, integrate = _energy_bins(rest)
            coarse_centres = np.sqrt(coarse_edges[1:] * coarse_edges[:-1])
            energy = np.asarray((integrate @ native.T).T, dtype=np.float64) * flux_per_lsun
            self.register_buffer("energy_templates", self._t(energy))        # (bin*logz, coarse)
            self.register_buffer("a_over_av_coarse", self._t(calzetti_a_over_av(coarse_centres)))
            dust_wave, dust_lum = dust_emission_template(qpah, umin, gamma)
            on_library = np.interp(rest, dust_wave, dust_lum, left=0.0, right=0.0)
            self.register_buffer("dust_template", self._t(operator @ on_library))  # 1/A per absorbed Lsun
            self.dust_parameters = dict(qpah=qpah, umin=umin, gamma=gamma)

        # 5. Metallicity axis and the template matrix, exact or compressed.
        self.logz = grid.logz
        dlogz = np.diff(self.logz)
        if not np.allclose(dlogz, dlogz[0]):
            raise ValueError("the grid's logz values must be evenly spaced")
        self.logz_start, self.logz_step = float(self.logz[0]), float(dlogz[0])
        self.n_logz = n_logz
        self.rank = rank
        if rank is None:
            self.register_buffer("templates", self._t(templates))           # (bin*logz, pixel)
            self.compression_error = 0.0
        else:
            coeff, basis, err = _compress(templates, rank)
            self.register_buffer("coefficients", self._t(coeff).reshape(active.size, n_logz, -1))
            self.register_buffer("basis", self._t(basis))                   # (rank, pixel)
            self.compression_error = err
        self.av = av

    def _t(self, array):
        return torch.as_tensor(np.asarray(array), dtype=self.dtype_, device=self.device_)

    # --- A_V -------------------------------------------------------------------------------------
    @property
    def av(self) -> float:
        return self._av

    @av.setter
    def av(self, value: float):
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"av must be finite and >= 0, got {value!r}")
        self._av = value

    # --- the model ---------------------------------------------------------------------------------
    def forward(self, history: torch.Tensor, av=None, validate: bool = True) -> torch.Tensor:
        """Spectra (batch, n_wavelength) in 1e-17 erg/s/cm2/A for histories (batch, 2, n_bins).

        `av` overrides the model's A_V: a float, or a tensor of shape (batch,) (differentiable).
        `validate=False` skips the input checks (NaN, negative SFR) in the sampler's inner loop.
        A negative SFR is then not refused: the model is linear in SFR, so it contributes negative
        light (the paper's diag(A A^T) estimate draws such histories; the sampler itself clips SFRs
        at 0, see sfhkit.likelihood)."""
        unbatched = history.dim() == 2
        if unbatched:
            history = history.unsqueeze(0)
        if history.dim() != 3 or history.shape[1] != 2 or history.shape[2] != self.n_bins:
            raise ValueError(f"history must have shape (batch, 2, {self.n_bins}) or (2, {self.n_bins}) "
                             f"(SFR in Msun/yr, log10 Z/Zsun), got {tuple(history.shape)}")
        history = history.to(device=self.device_, dtype=self.dtype_)
        if validate:
            if not torch.isfinite(history).all():
                raise ValueError("history contains NaN or infinite values")
            if (history[:, 0] < 0).any():
                raise ValueError("history SFR (channel 0) must be >= 0 Msun/yr")
        lower, _, w_lo, w_hi = self._metallicity_weights(history)
        sfr = history[:, 0, self.active_bins]

        if self.rank is None:
            weights = torch.zeros(sfr.shape + (self.n_logz,), dtype=sfr.dtype, device=sfr.device)
            weights = weights.scatter(2, lower.unsqueeze(-1), w_lo.unsqueeze(-1))
            weights = weights.scatter_add(2, (lower + 1).unsqueeze(-1), w_hi.unsqueeze(-1))
            weights = weights.reshape(sfr.shape[0], -1)
            stellar = weights @ self.templates
        else:
            stellar = self._sum_over_bins(*self._neighbours(self.coefficients, lower), w_lo, w_hi) @ self.basis

        av = self._av if av is None else av
        av_t = torch.as_tensor(av, dtype=self.dtype_, device=self.device_)
        if validate and (not torch.isfinite(av_t).all() or (av_t < 0).any()):
            raise ValueError("av must be finite and >= 0")
        av_col = av_t.reshape(-1, 1) if av_t.dim() else av_t
        flux = stellar * torch.pow(10.0, -0.4 * av_col * self.a_over_av_pixel)
        if self.dust_emission:
            absorbed_fraction = 1 - torch.pow(10.0, -0.4 * av_col * self.a_over_av_coarse)
            absorbed = self._absorbed(lower, w_lo, w_hi, absorbed_fraction)
            flux = flux + absorbed.unsqueeze(-1) * self.dust_template
        return flux[0] if unbatched else flux

    def _metallicity_weights(self, history):
        """For each active bin: the lower of the two grid metallicities around its log Z, the
        fraction of the way to the upper one, and the SFR weights of the lower and upper one
        (linear in log Z), each (batch, active bins)."""
        sfr = history[:, 0, self.active_bins]
        logz = history[:, 1, self.active_bins]
        u_idx = ((logz - self.logz_start) / self.logz_step).clamp(0, self.n_logz - 1)
        lower = u_idx.detach().floor().clamp(max=self.n_logz - 2).long()
        frac = u_idx - lower
        return lower, frac, sfr * (1 - frac), sfr * frac

    @staticmethod
    def _neighbours(table, lower):
        """Rows of a per-(active bin, grid metallicity) table (bins, logz, K) at each bin's lower and
        upper metallicity neighbour: two (batch, bins, K) tensors."""
        bins = torch.arange(lower.shape[1], device=lower.device)
        return table[bins, lower], table[bins, lower + 1]

    @staticmethod
    def _sum_over_bins(t_lo, t_hi, w_lo, w_hi):
        """sum over bins of w_lo * t_lo + w_hi * t_hi: (batch, K)."""
        return (w_lo.unsqueeze(-1) * t_lo + w_hi.unsqueeze(-1) * t_hi).sum(1)

    # --- the model as a linear map (for the sampler) ----------------------------------------------
    def linear_parts(self, av: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The compressed model as flux = coefficients(history) @ basis at a fixed A_V:
        `table` (active bins, logz, K): the coefficients of a unit SFR in each bin at each grid
        metallicity (the SVD coefficients, then the absorbed luminosity that dust re-emits), and
        `basis` (K, pixels) (the attenuated SVD basis, then the dust-emission spectrum)."""
        if self.rank is None:
            raise ValueError("linear_parts needs the compressed model (rank=...), not rank=None")
        av = self._av if av is None else float(av)
        table = self.coefficients
        basis = self.basis * torch.pow(10.0, -0.4 * av * self.a_over_av_pixel)
        if self.dust_emission:
            absorbed_fraction = 1 - torch.pow(10.0, -0.4 * av * self.a_over_av_coarse)
            energy = (absorbed_fraction @ self.energy_templates.T).reshape(table.shape[0], self.n_logz, 1)
            table = torch.cat([table, energy], dim=-1)
            basis = torch.cat([basis, self.dust_template[None]], dim=0)
        return table, basis

    def coefficient_jacobian(self, history: torch.Tensor, table: torch.Tensor):
        """For histories (batch, 2, n_bins) and a `table` from `linear_parts`: the coefficients
        (batch, K) and their derivatives with respect to each active bin's SFR and log Z
        (batch, active bins, K each; zero for log Z outside the grid, where it is clamped)."""
        lower, frac, w_lo, w_hi = self._metallicity_weights(history)
        sfr = history[:, 0, self.active_bins]
        t_lo, t_hi = self._neighbours(table, lower)                              # (batch, bins, K)
        coefficients = self._sum_over_bins(t_lo, t_hi, w_lo, w_hi)
        d_sfr = t_lo + frac.unsqueeze(-1) * (t_hi - t_lo)
        logz = history[:, 1, self.active_bins]
        inside = (logz > self.logz_start) & (logz < self.logz_start + (self.n_logz - 1) * self.logz_step)
        d_logz = (sfr * inside / self.logz_step).unsqueeze(-1) * (t_hi - t_lo)
        return coefficients, d_sfr, d_logz

    def coefficients_only(self, history: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """The coefficients alone (batch, K), as `coefficient_jacobian` gives them, by one dense
        product of the (batch, active bins x grid metallicities) SFR weights with the table: cheaper
        than gathering each bin's two table rows when no derivative is needed (the sampler's line
        search evaluates many trial histories)."""
        lower, _, w_lo, w_hi = self._metallicity_weights(history)
        weights = torch.zeros(lower.shape + (self.n_logz,), dtype=table.dtype, device=table.device)
        weights.scatter_(2, lower.unsqueeze(-1), w_lo.unsqueeze(-1).to(table.dtype))
        weights.scatter_add_(2, (lower + 1).unsqueeze(-1), w_hi.unsqueeze(-1).to(table.dtype))
        return weights.flatten(1) @ table.reshape(-1, table.shape[-1])

    def surviving_mass_msun(self, history: torch.Tensor) -> torch.Tensor:
        """Stellar mass still alive at t(z) (Msun; living fraction of the SSP grid), per history
        (batch, 2, n_bins) -> (batch,), or a scalar tensor for one (2, n_bins) history."""
        unbatched = history.dim() == 2
        history = torch.as_tensor(history, dtype=self.dtype_, device=self.device_).reshape(-1, 2, self.n_bins)
        lower, _, w_lo, w_hi = self._metallicity_weights(history)
        table = self.surviving_per_sfr.unsqueeze(-1)                              # (bins, logz, 1)
        mass = self._sum_over_bins(*self._neighbours(table, lower), w_lo, w_hi)[:, 0]
        return mass[0] if unbatched else mass

    def _absorbed(self, lower, w_lo, w_hi, absorbed_fraction):
        """Absorbed luminosity per history (flux units x Angstrom), from the two metallicity
        neighbours of each bin: absorbed_fraction is (n_coarse,) or (batch, n_coarse)."""
        per_template = (absorbed_fraction @ self.energy_templates.T).reshape(-1, lower.shape[1], self.n_logz)
        per_template = per_template.expand(lower.shape[0], -1, -1)
        e_lo = per_template.gather(2, lower.unsqueeze(-1)).squeeze(-1)
        e_hi = per_template.gather(2, (lower + 1).unsqueeze(-1)).squeeze(-1)
        return (w_lo * e_lo + w_hi * e_hi).sum(1)

    def broadened(self, sigma_kms, line_spread: LineSpread | None = None) -> "ForwardModel":
        """A copy whose spectra are this model's convolved with a Gaussian of velocity sigma
        `sigma_kms` (per observed pixel, sfhkit.lsf.broadening_matrix), before dust: the model at a
        larger velocity dispersion in milliseconds instead of a rebuild (seconds), exact up to the
        pixel sampling (sfhkit.dispersion).  `line_spread` is recorded as the copy's."""
        import copy

        operator = broadening_matrix(self.wavelength, sigma_kms)

        def convolve(tensor):       # along the last (pixel) axis
            rows = tensor.detach().double().cpu().numpy().reshape(-1, tensor.shape[-1])
            return self._t((operator @ rows.T).T.reshape(tensor.shape))

        model = copy.deepcopy(self)
        for name in ("basis", "templates", "dust_template"):
            if hasattr(model, name):
                setattr(model, name, convolve(getattr(model, name)))
        model.line_spread = line_spread
        return model

    def extra_repr(self):
        return (f"z={self.redshift}, av={self._av}, n_wavelength={self.wavelength.size}, "
                f"active_bins={self.active_bins.numel()}/{self.n_bins}, rank={self.rank}, "
                f"line_spread={self.line_spread}")


def _energy_bins(rest_wavelength):
    """Log-spaced bins over the dust-affected rest wavelengths and the sparse matrix that
    integrates a library-sampled flux density over each (trapezoid weights of library pixels)."""
    lam = np.asarray(rest_wavelength, dtype=float)
    lo, hi = lam[0], min(lam[-1], DUST_FREE_ABOVE_ANGSTROM)
    n = int(np.ceil(np.log(hi / lo) / ENERGY_BIN_DLNLAM))
    edges = np.geomspace(lo, hi, n + 1)
    pix_edges = pixel_edges(lam)
    width = np.diff(pix_edges)
    which = np.searchsorted(edges, lam, side="right") - 1
    keep = (which >= 0) & (which < n)
    integrate = sp.csr_matrix((width[keep], (which[keep], np.nonzero(keep)[0])), shape=(n, lam.size))
    return edges, integrate


def _compress(templates: np.ndarray, rank: int):
    """Truncated SVD of unit-norm-scaled templates: templates ~ coeff @ basis.  Returns the
    coefficients (n_templates, rank), basis (rank, n_pixels) and the largest relative residual."""
    norms = np.linalg.norm(templates, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    scaled = torch.from_numpy(templates / norms)
    rank = min(rank, *scaled.shape)
    # A few extra vectors and power iterations make the randomised SVD accurate to the tail (a
    # full SVD of the 3904 x 3800 templates takes ten times as long).  Its random projection is
    # drawn from a fixed seed, so that the same model built in two processes is the same to the
    # bit (from the global generator, posteriors with a fixed seed differed between processes in
    # the last digits), and the caller's global random state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(COMPRESSION_SEED)
        _, _, v = torch.svd_lowrank(scaled, q=min(rank + 32, *scaled.shape), niter=6)
    basis = v[:, :rank].T.contiguous()                                   # (rank, pixel)
    coeff = scaled @ basis.T
    residual = torch.linalg.vector_norm(scaled - coeff @ basis, dim=1).max().item()
    return (coeff * torch.from_numpy(norms)).numpy(), basis.numpy(), residual
