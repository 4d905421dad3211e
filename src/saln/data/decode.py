"""Decoding a dataset's image files once: uint8 (N, 3, H, W), in worker processes, reused.

The resident pipeline (:mod:`saln.data.gpu`) holds every decoded image in memory or on the GPU.
Decoding 60,000 small JPEGs costs seconds of CPU per process, so the result is kept in memory
for the process and, with a cache folder, on disk for the next process, keyed by the file list,
the labels and each file's size and modification time: an edited file is decoded again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from saln.data.datasets import ImageSource, open_rgb, worker_errors
from saln.data.transforms import fit_square
from saln.io import on_terminal, remove_stale_temporaries, save_npy_atomic


def first_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) of the first file, read from its header."""
    return source.image(0).size if not source.files else _header_size(source)


def _header_size(source: ImageSource) -> tuple[int, int]:
    path = os.path.join(source.root, source.files[0])
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # the same file read in full names the problem (open_rgb)
        return open_rgb(path).size


# Decoded image files by (file signature, size): the runs of one process (a comparison, a
# benchmark) decode a dataset once, not once per run, and with a cache folder the runs of other
# processes load it instead of decoding (each run of a parallel comparison is a process). Size
# is "own" for files that share one size (then any image_size reuses them), else the image_size
# they were resized to. Bounded, oldest evicted.
_DECODED: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
DECODED_ENTRIES = 4
# Decoded files kept on disk per cache folder, the most recently used first: a dataset that
# changes (an edited file, another subset) would otherwise leave its old copy behind for good.
DECODED_ON_DISK = 8


def decode_all(
    source: ImageSource,
    image_size: int,
    progress: bool = False,
    cache_dir: Path | None = None,
    max_bytes: int | None = None,
) -> torch.Tensor:
    """All images as uint8 (N, 3, H, W), decoded once per process in worker processes, and
    kept under ``cache_dir`` (if given) for the next process. Images that all share one size
    keep it, so resizing happens per batch on the device; mixed sizes are resized to image_size
    here, or raise :class:`MixedSizes` if that would take more than ``max_bytes``. In-memory
    arrays are used as they are."""
    if source.array is not None:
        return torch.from_numpy(source.array).permute(0, 3, 1, 2).contiguous()
    signature, found = kept_decoded(source, image_size, cache_dir)
    if found is not None:
        return found
    width, height = first_size(source)
    decoded = _decode_files(source, height, width, progress, resize=False)
    key = (signature, "own")
    if decoded is None:  # mixed sizes, found while decoding: resize every image instead
        resized = len(source) * 3 * image_size**2
        if max_bytes is not None and resized > max_bytes:
            raise MixedSizes(
                f"the images of {source.name} do not all share one size, and resized to "
                f"{image_size} px they would take {resized / 2**30:.1f} GiB"
            )
        decoded = _decode_files(source, image_size, image_size, progress, resize=True)
        key = (signature, resized_key(image_size))
    assert decoded is not None
    return _keep(key, decoded, cache_dir)


def kept_decoded(
    source: ImageSource, image_size: int, cache_dir: Path | None
) -> tuple[str, torch.Tensor | None]:
    """The files' signature, and their decoded images if this process or (with ``cache_dir``)
    an earlier one kept them."""
    signature = _file_signature(source)
    for key in ((signature, "own"), (signature, resized_key(image_size))):
        found = _DECODED.get(key)
        if found is None and cache_dir is not None:
            found = _load_decoded(_decoded_path(cache_dir, key), len(source))
        if found is not None:
            return signature, _remember(key, found)
    return signature, None


def resized_key(image_size: int) -> str:
    """The cache key's size part for files of mixed sizes, resized to ``image_size`` squares:
    one function, so that storing and looking up cannot disagree."""
    return f"{image_size}-square"


class MixedSizes(Exception):
    """The files do not all share one size (found while streaming them)."""


def stream_decoded(
    source: ImageSource, signature: str, cache_dir: Path | None = None
) -> Iterator[torch.Tensor]:
    """The images as uint8 (B, 3, H, W) blocks in file order, each as soon as a worker process
    has decoded it, so that a consumer (feature extraction) works while the rest decode. Once
    the last block is out, all of them are kept as :func:`decode_all` keeps them. An image of
    another size than the first raises :class:`MixedSizes` (then use ``decode_all``, which
    resizes). ``signature``: from :func:`kept_decoded`."""
    width, height = first_size(source)
    out = torch.empty(len(source), 3, height, width, dtype=torch.uint8)
    start = 0
    for block in _decoded_blocks(source, height, width, progress=False, resize=False):
        if block is None:
            raise MixedSizes(f"the images of {source.name} do not all share one size")
        out[start : start + len(block)] = block
        yield out[start : start + len(block)]
        start += len(block)
    _keep((signature, "own"), out, cache_dir)


def _keep(key: tuple[str, str], decoded: torch.Tensor, cache_dir: Path | None) -> torch.Tensor:
    if cache_dir is not None:
        path = _decoded_path(cache_dir, key)
        _store_decoded(path, decoded)
        _prune_decoded(path.parent)
    return _remember(key, decoded)


def _remember(key: tuple[str, str], decoded: torch.Tensor) -> torch.Tensor:
    _DECODED[key] = decoded
    _DECODED.move_to_end(key)
    while len(_DECODED) > DECODED_ENTRIES:
        _DECODED.popitem(last=False)
    return decoded


def _decoded_path(cache_dir: Path, key: tuple[str, str]) -> Path:
    signature, size = key
    return Path(cache_dir) / "decoded" / f"{signature[:32]}-{size}.npy"


def _load_decoded(path: Path, rows: int) -> torch.Tensor | None:
    """The stored images, or None when there are none or they are not what was stored (a
    damaged file is decoded again, with a warning)."""
    if not path.exists():
        return None
    try:
        array = np.load(path)
    except (OSError, ValueError, EOFError) as err:
        warnings.warn(
            f"decoded-image cache {path} is unreadable ({err}); decoding again", stacklevel=3
        )
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[:2] != (rows, 3):
        warnings.warn(
            f"decoded-image cache {path} has the wrong shape; decoding again", stacklevel=3
        )
        return None
    _touch(path)
    return torch.from_numpy(array)


def _touch(path: Path) -> None:
    """Mark an entry as used now: pruning keeps the most recently used ones."""
    with contextlib.suppress(OSError):  # a read-only cache is still a cache
        os.utime(path)


def _prune_decoded(folder: Path) -> None:
    """Delete all but the ``DECODED_ON_DISK`` most recently used entries. A process that has
    opened an entry deleted meanwhile still reads it whole; one that had not yet opened it
    decodes again."""
    entries = []
    for path in folder.glob("*.npy"):
        try:
            entries.append((path.stat().st_mtime_ns, path))
        except OSError:
            continue  # deleted by another process meanwhile
    for _, path in sorted(entries, reverse=True)[DECODED_ON_DISK:]:
        with contextlib.suppress(OSError):  # gone already, or a read-only cache
            path.unlink()


def _store_decoded(path: Path, decoded: torch.Tensor) -> None:
    """Atomic, so a concurrent reader sees all of it or nothing; a cache that cannot be written
    costs the next process a decode, not this run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)  # left by a process killed while keeping one
        save_npy_atomic(path, decoded.numpy())
    except OSError as err:
        warnings.warn(f"could not keep decoded images in {path} ({err})", stacklevel=3)


def _file_signature(source: ImageSource) -> str:
    """File list, labels, sizes and modification times (the source's fingerprint): a file edited
    between two runs of one process is decoded again, never served stale; a moved folder is not."""
    return str(source.fingerprint()["content_sha256"])


DECODE_CHUNK = 256  # images per worker task
DECODE_IN_WORKERS_FROM = 2048  # smaller sources decode in-process (worker start-up would dominate)


def square_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """A (H, W, 3) uint8 image brought to (size, size, 3) by :func:`fit_square`, rounded back to
    uint8: files of several sizes are held at one size, with the loaders' geometry."""
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255)
    square = fit_square(pixels, size).mul_(255).round_().clamp_(0, 255)
    return square.to(torch.uint8).permute(1, 2, 0).numpy()


class _FileDecoder(Dataset[np.ndarray]):
    """Image i as uint8 (H, W, 3) at (height, width): resized when ``resize``, else an empty
    array for an image of another size (the caller then knows the sizes are mixed)."""

    def __init__(self, source: ImageSource, height: int, width: int, resize: bool) -> None:
        self.source, self.size, self.resize = source, (width, height), resize

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> np.ndarray:
        image = self.source.image(index)
        if image.size != self.size:
            if not self.resize:
                return np.empty((0, 0, 3), dtype=np.uint8)
            return square_uint8(np.asarray(image), self.size[0])
        return np.asarray(image)


def _decode_files(
    source: ImageSource, height: int, width: int, progress: bool, resize: bool
) -> torch.Tensor | None:
    """Decode every file into (N, 3, height, width). Without ``resize``, the first image of
    another size stops the pass and the result is None: one pass both learns whether the
    sizes agree and decodes (opening every header first cost seconds on CIFAR-10)."""
    out = torch.empty(len(source), 3, height, width, dtype=torch.uint8)
    start = 0
    for block in _decoded_blocks(source, height, width, progress, resize):
        if block is None:
            return None
        out[start : start + len(block)] = block
        start += len(block)
    return out


def _decoded_blocks(
    source: ImageSource, height: int, width: int, progress: bool, resize: bool
) -> Iterator[torch.Tensor | None]:
    """Blocks of ``DECODE_CHUNK`` images as (B, 3, height, width) in file order; None (and the
    end) at the first image of another size when not ``resize``.

    Worker processes decode (a DataLoader's): PIL holds the GIL for most of a small image's
    decode, so threads did not scale past about one core."""
    # Forked workers inherit the source; other start methods would pickle its loader closure.
    fork = "fork" in multiprocessing.get_all_start_methods()
    many = len(source) >= DECODE_IN_WORKERS_FROM and fork
    workers = min(16, os.cpu_count() or 1) if many else 0
    loader = DataLoader(
        _FileDecoder(source, height, width, resize),
        batch_size=DECODE_CHUNK,
        num_workers=workers,
        collate_fn=list,
        multiprocessing_context="fork" if workers else None,
    )
    with (
        tqdm(
            total=len(source),
            desc=f"decode {source.name}",
            disable=not progress or not on_terminal(),
        ) as bar,
        worker_errors(),
    ):
        for chunk in loader:
            if any(image.size == 0 for image in chunk):
                yield None
                return
            yield torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)
            bar.update(len(chunk))
