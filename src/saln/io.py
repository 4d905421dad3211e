"""Atomic writes: a temporary file in the same folder, fsync, then rename over the target.

A reader therefore sees either the old file or the complete new one, never a half-written one,
even when the writer is killed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from filelock import FileLock


def _atomic(path: Path, mode: str, write: Callable[[IO[Any]], object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return _atomic(path, "w", lambda f: f.write(text))


def write_json_atomic(path: Path, payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return _atomic(path, "wb", lambda f: f.write(data))


def save_npy_atomic(path: Path, array: np.ndarray) -> Path:
    return _atomic(path, "wb", lambda f: np.save(f, array))


def save_torch_atomic(path: Path, obj: Any) -> Path:
    return _atomic(path, "wb", lambda f: torch.save(obj, f))


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold the lock file ``lock`` for the block, so processes that would build the same cache
    entry take turns and the later ones find it built."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):
        yield


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def check_writable(folder: Path, what: str, option: str) -> Path:
    """Create ``folder`` if needed and prove it writable, or fail naming it and the ``option``
    that chooses another."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(
            f"the {what} {folder} is not writable ({err.strerror or err}); "
            f"choose another with {option}"
        ) from None
    return folder
