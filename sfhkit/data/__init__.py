"""Training and test histories: the paper's TNG50 set (`sfhkit.data.tng`), the embedded synthetic
stand-in (`sfhkit.data.synthetic`), and the file format both write (`sfhkit.data.store`).

    >>> from sfhkit.data import load_histories
    >>> test = load_histories("test")          # xarray.Dataset, histories (galaxy, channel, time_bin)
"""

from .store import read_histories, write_histories
from .embedded import embedded_path, load_histories

__all__ = ["embedded_path", "load_histories", "read_histories", "write_histories"]
