"""The reference-feature cache: an (N, d) float16 .npy, memory-mapped, plus JSON metadata.

Writes are atomic: the array goes to a temporary file that is renamed into place, and the
metadata (the commit marker, with the array's checksum) is written last, so a killed write
leaves nothing that loads. A load checks that the metadata matches what is asked for (dataset
fingerprint, encoder, weights, transform, image size) and that the array is intact; anything
else is a miss, and the caller re-extracts. A miss first looks for the same features under
another slot (:func:`lookup`): a moved data folder keeps its features.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saln.io import (
    check_writable,
    disk_full,
    out_of_space,
    remove_stale_temporaries,
    temporary_prefix,
    write_json_atomic,
)

FORMAT_VERSION = 2  # 2: the dataset identity has each file's size and time, not the folder
CACHE_DIR_OPTION = "--cache-dir (features.cache_dir in a config)"  # named when it is unwritable
IDENTITY_KEYS = ("format", "dataset", "encoder", "weights_sha256", "transform", "image_size", "dim")


class FeatureStore:
    """Features aligned with a dataset's global indices; ``get(indices)`` returns a tensor."""

    def __init__(self, array: np.ndarray, meta: dict[str, Any], path: Path | None = None) -> None:
        self.array, self.meta, self.path = array, meta, path
        self.fresh = False  # True when this process extracted it (not a cache hit)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def get(self, indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        rows = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(self.array[rows]))

    def numpy(self) -> np.ndarray:
        return np.asarray(self.array)


def cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{key}.npy", cache_dir / f"{key}.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load(
    cache_dir: Path, key: str, identity: dict[str, Any], verify: bool = True
) -> FeatureStore | None:
    """The cached store if it exists, matches ``identity`` and is intact; else None (warns why)."""
    store, problem = _open(Path(cache_dir), key, identity, verify)
    if problem:
        warnings.warn(f"{problem}; re-extracting", stacklevel=2)
    return store


def lookup(cache_dir: Path, key: str, identity: dict[str, Any]) -> FeatureStore | None:
    """``key``'s store; when it misses, the same features under another slot (a moved data
    folder keeps its features). None, with a warning that says why ``key`` missed, if neither."""
    store, problem = _open(Path(cache_dir), key, identity, verify=True)
    if store is None:
        store = find_equal(Path(cache_dir), identity, skip=key)
    if store is None and problem:
        warnings.warn(f"{problem}; re-extracting", stacklevel=2)
    return store


def find_equal(cache_dir: Path, identity: dict[str, Any], skip: str) -> FeatureStore | None:
    """The intact store of another slot than ``skip`` whose metadata matches ``identity``: the
    same files (paths, sizes, times), encoder and transform, cached from another location."""
    for meta_path in sorted(Path(cache_dir).glob("*.json")):
        key = meta_path.stem
        if key != skip and _identity_in(_read_meta(meta_path) or {}) == _identity_in(identity):
            store, _ = _open(Path(cache_dir), key, identity, verify=True)
            if store is not None:
                return store
    return None


def _open(
    cache_dir: Path, key: str, identity: dict[str, Any], verify: bool
) -> tuple[FeatureStore | None, str | None]:
    """(store, None) on a hit; (None, why) on a miss, why None when the slot does not exist."""
    array_path, meta_path = cache_paths(cache_dir, key)
    if not meta_path.exists():
        return None, None
    meta = _read_meta(meta_path)
    if meta is None:
        return None, f"feature cache metadata {meta_path} is unreadable"
    stale = [k for k, v in _identity_in(meta).items() if v != identity.get(k)]
    if stale:
        return None, f"feature cache {meta_path.name} is stale ({', '.join(stale)} changed)"
    problem = _integrity_problem(array_path, meta, verify)
    if problem:
        return None, f"feature cache {array_path} is {problem}"
    return FeatureStore(np.load(array_path, mmap_mode="r"), meta, array_path), None


def _read_meta(meta_path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _identity_in(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in IDENTITY_KEYS}


def _integrity_problem(array_path: Path, meta: dict[str, Any], verify: bool) -> str | None:
    if not array_path.exists():
        return "missing"
    if array_path.stat().st_size != meta.get("file_bytes"):
        return "truncated or resized"
    if verify and file_sha256(array_path) != meta.get("sha256"):
        return "corrupted (checksum mismatch)"
    try:
        array = np.load(array_path, mmap_mode="r")
    except ValueError:
        return "corrupted (bad header)"
    if list(array.shape) != [meta.get("count"), meta.get("dim")]:
        return f"of shape {array.shape}, not ({meta.get('count')}, {meta.get('dim')})"
    return None


def reserve(tmp: Path, target: Path) -> None:
    """Allocate the memory-mapped file's blocks now: a write into a sparse mapping on a full
    disk kills the process with SIGBUS, an allocation fails with ENOSPC."""
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise out_of_space(target) from None
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: write on
            raise
    finally:
        os.close(fd)


def write(
    cache_dir: Path,
    key: str,
    identity: dict[str, Any],
    count: int,
    chunks: Callable[[], Iterator[tuple[int, np.ndarray]]],
    extra: dict[str, Any] | None = None,
) -> FeatureStore:
    """Write ``count`` rows given as (start, block) pairs, atomically; return the loaded store."""
    cache_dir = check_writable(Path(cache_dir), "cache dir", CACHE_DIR_OPTION)
    array_path, meta_path = cache_paths(cache_dir, key)
    remove_stale_temporaries(cache_dir)  # left by extractions that were killed
    tmp = cache_dir / f"{temporary_prefix(array_path)}memmap.tmp"
    try:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float16, shape=(count, identity["dim"])
        )
        reserve(tmp, array_path)
        for start, block in chunks():
            out[start : start + len(block)] = block
        out.flush()
        del out
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        meta_path.unlink(missing_ok=True)  # old metadata must never vouch for a new array
        os.replace(tmp, array_path)
    except BaseException as err:
        full = disk_full(err, cache_dir)
        tmp.unlink(missing_ok=True)
        if full:
            raise out_of_space(array_path) from err
        raise
    meta = {
        **identity,
        **(extra or {}),
        "count": count,
        "dtype": "float16",
        "file_bytes": array_path.stat().st_size,
        "sha256": file_sha256(array_path),
    }
    write_json_atomic(meta_path, meta)
    store = load(cache_dir, key, identity, verify=False)
    assert store is not None
    return store
