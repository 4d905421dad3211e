"""Atomic writes: a temporary file in the same folder, fsync, then rename over the target.

A reader therefore sees either the old file or the complete new one, never a half-written one,
even when the writer is killed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from filelock import FileLock

from saln.errors import InvalidInput, OutOfSpace


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The mode open() gives a new file: every file saln writes follows the one umask policy
# (mkstemp alone would make atomic writes 0600 beside 0644 appended ones).
FILE_MODE = 0o666 & ~_current_umask()
TEMPORARY = re.compile(r"\.pid(\d+)\.[^.]*\.tmp$")  # .NAME.pidPID.RANDOM.tmp


def temporary_prefix(path: Path) -> str:
    """The name start of ``path``'s temporary files: its writer's pid tells a stale one."""
    return f".{path.name}.pid{os.getpid()}."


def _atomic(path: Path, mode: str, write: Callable[[IO[Any]], object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        full = disk_full(err, path.parent)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise out_of_space(path) from err
        raise
    return path


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether ``err`` came from a full disk: ENOSPC, or an error of torch's writer (which
    reports a failed write as a RuntimeError) while the disk has no room left."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(err, RuntimeError):
        return False
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def out_of_space(path: Path) -> OutOfSpace:
    return OutOfSpace(
        errno.ENOSPC,
        f"out of space on the disk holding {path}: free some space there or choose another "
        "folder (--out, or features.cache_dir for the cache); nothing half-written was kept",
    )


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writer (named by pid) is gone: a killed
    write leaves one behind. Returns what was removed."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        found = TEMPORARY.search(path.name)
        if found and not process_alive(int(found.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


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


def file_in_the_way(folder: Path) -> Path | None:
    """The file (not a folder) at ``folder`` or above it that stops it from being made."""
    return next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)


def check_writable(folder: Path, what: str, option: str) -> Path:
    """Create ``folder`` if needed and prove it writable, or fail naming it and the ``option``
    that chooses another."""
    folder = Path(folder)
    blocking = file_in_the_way(folder)
    if blocking is not None:
        raise InvalidInput(
            f"the {what} {folder} cannot be made: {blocking} is a file, not a folder; choose "
            f"another with {option}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InvalidInput(
            f"the {what} {folder} is not writable ({err.strerror or err}); "
            f"choose another with {option}"
        ) from None
    return folder


def on_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (stderr by default) is a terminal: bars are drawn there only. In a
    log a bar is carriage-return frames that never move on a short epoch; the plain line per
    epoch says what it would have."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())
