"""Run-time helpers for recipes and benchmarks: thread counts, environment records, JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from jepa_blocks._validation import check_int

__all__ = ["environment", "json_default", "num_threads", "write_json"]


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: leave it), then restore it."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(check_int(n, "n"))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def environment() -> dict[str, str]:
    """Versions and platform of this process: ``jepa_blocks``, ``torch``, ``python``,
    ``platform``, and the CUDA device's name when CUDA is available."""
    from jepa_blocks import __version__

    env = {
        "jepa_blocks": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name()
    return env


def json_default(o: Any) -> Any:
    """``json.dump``'s ``default``: paths as strings, tensors and NumPy values as lists/numbers."""
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # tensors, NumPy arrays and scalars
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically (a temporary file, then a rename)."""
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=json_default)
        f.write("\n")
    os.replace(tmp, dest)
    return dest
