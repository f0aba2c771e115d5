"""Checkpoints you can trust: atomic, verified, tensors and primitives only, the previous kept.

A crash at any moment leaves the previous or the new checkpoint intact, never a torn one;
loading runs no code (``torch.load(weights_only=True)``) and verifies a SHA-256 digest.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_path",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "jepa-blocks-checkpoint/2"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted: unreadable, truncated, corrupted or of another format."""


def previous_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`save_checkpoint` keeps the previous checkpoint of ``path``."""
    p = Path(path)
    return p.with_name(p.name + ".prev")


def _remove_stale_temp_files(dest: Path) -> None:
    """Temporary files of interrupted saves (a save killed between write and rename)."""
    for stale in glob.glob(str(dest.parent / f".{glob.escape(dest.name)}.*.tmp")):
        with contextlib.suppress(OSError):
            os.unlink(stale)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # makes the renames durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_checkpoint(
    path: str | os.PathLike[str], state: dict[str, Any], *, keep_previous: bool = True
) -> Path:
    """Write ``state`` atomically (temporary file, fsync, :func:`os.replace`) and verifiably.

    Args:
        path: Destination file (its folder is created).
        state: Tensors and primitives only (what ``torch.load(weights_only=True)`` reads).
        keep_previous: Move the checkpoint already at ``path`` to :func:`previous_path`.

    Raises:
        TypeError: If ``state`` holds anything else (it could not be loaded safely).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    try:  # refuse what weights_only loading would refuse, before anything is written
        torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:
        raise TypeError(
            "state must hold only tensors and primitives (numbers, strings, None, lists, tuples, "
            f"dicts) to be loadable with weights_only=True: {e}"
        ) from None
    record = {
        "format": FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    _remove_stale_temp_files(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and dest.is_file():
            os.replace(dest, previous_path(dest))
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)
    return dest


def load_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: No file at ``path``.
        CheckpointError: The file is unreadable, truncated, corrupted or not a checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(p)!r}")
    try:
        record = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is unreadable (truncated or corrupted): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(p)!r} is not a {FORMAT} checkpoint (written by another version or program)"
        )
    payload = record["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupted: its SHA-256 digest does not match its contents"
        )
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


def load_latest_checkpoint(
    path: str | os.PathLike[str], *, map_location: Any = "cpu"
) -> tuple[dict[str, Any], Path]:
    """Load ``path``, or its previous checkpoint (with a warning) when ``path`` is unreadable.

    Returns:
        ``(state, the path it came from)``.

    Raises:
        CheckpointError: Neither the latest nor the previous checkpoint can be trusted.
    """
    p = Path(path)
    prev = previous_path(p)
    try:
        return load_checkpoint(p, map_location=map_location), p
    except (CheckpointError, FileNotFoundError) as latest:
        if not prev.is_file():
            if isinstance(latest, FileNotFoundError):
                raise
            raise CheckpointError(
                f"{latest}; there is no previous checkpoint to fall back to"
            ) from None
        try:
            state = load_checkpoint(prev, map_location=map_location)
        except CheckpointError as previous:
            raise CheckpointError(f"{latest}; and the previous one: {previous}") from None
        warnings.warn(
            f"{latest}; resuming from the previous good checkpoint {str(prev)!r}", stacklevel=2
        )
        return state, prev


def rng_state() -> dict[str, Any]:
    """The state of every random generator the training loop draws from (tensors and primitives)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002  (legacy global state)
    keys_t = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), keys_t, int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = np.asarray(keys.cpu().numpy(), dtype=np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, gauss))  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
