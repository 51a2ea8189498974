"""File writing shared by every module that saves results."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; when the block succeeds it is renamed onto `path`,
    otherwise removed.  A file with the final name is therefore always complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj) -> str:
    """`obj` as indented JSON (anything not JSON-native written with str), atomically; returns the text."""
    import json

    text = json.dumps(obj, indent=1, default=str)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return text


def save_torch(obj, path) -> Path:
    """torch.save, atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path) -> dict:
    """torch.load restricted to tensors, numbers, strings and containers (weights_only=True: no
    pickled code); a truncated or foreign file raises ValueError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path} is not a readable checkpoint (corrupt, truncated or not made by "
                         f"sfhkit): {type(err).__name__}: {str(err).splitlines()[0][:200]}") from err
