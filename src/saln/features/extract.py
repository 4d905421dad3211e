"""Reference-feature extraction: once per (dataset, encoder, weights, image size), cached."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saln.data.datasets import ImageSource, canonical_root
from saln.data.decode import MixedSizes
from saln.data.loaders import PIPELINES, build_pipeline, choose_pipeline
from saln.data.streaming import stream_eval_batches
from saln.data.transforms import describe
from saln.errors import InvalidInput
from saln.features import cache
from saln.features.cache import FeatureStore
from saln.io import check_writable, on_terminal, save_npy_atomic, write_json_atomic
from saln.models import Encoder, build_encoder, check_input_size


def cache_key(source: ImageSource, encoder: str, image_size: int) -> str:
    """One cache slot per (split, data location, encoder, size): two image folders get two
    slots, so alternating between them does not re-extract; a folder whose files change keeps
    its slot, and the fingerprint check replaces the stale entry."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.name)
    return f"{slug}-{location_digest(source.root)}-{encoder}-{image_size}px"


def location_digest(root: str) -> str:
    """8 hex digits naming where the data lives (:func:`canonical_root`)."""
    return hashlib.sha256(canonical_root(root).encode()).hexdigest()[:8]


def identity(source: ImageSource, encoder: Encoder, image_size: int) -> dict[str, Any]:
    return {
        "format": cache.FORMAT_VERSION,
        "dataset": source.fingerprint(),
        "encoder": encoder.name,
        "weights_sha256": encoder.weights_sha256,
        "transform": describe(image_size),
        "image_size": image_size,
        "dim": encoder.dim,
    }


def check_extraction_settings(image_size: int, batch_size: int, loader: str, workers: int) -> None:
    """Bad settings fail before any work, even when a cache hit would not have used them."""
    for name, value, least in (("image_size", image_size, 1), ("batch_size", batch_size, 1)):
        if value < least:
            raise InvalidInput(f"{name} must be >= {least}, got {value}")
    if workers < 0:
        raise InvalidInput(f"workers must be >= 0 (0: the main process), got {workers}")
    if loader != "auto":
        PIPELINES.get(loader)  # names the valid loaders


def extract_features(
    source: ImageSource,
    encoder: str | Encoder = "efficientnet_lite0",
    *,
    image_size: int = 224,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    cache_dir: str | Path = ".cache/saln",
    pretrained: bool = True,
    weights: str | None = None,
    download: bool = False,
    loader: str = "auto",
    workers: int = 2,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> FeatureStore:
    """Features of every image in ``source`` (eval transform, deterministic order), cached.

    A valid cache entry is returned as is; a stale, truncated or corrupted one is re-extracted.
    """
    if not isinstance(source, ImageSource):
        raise TypeError(
            f"source must be an ImageSource, got {type(source).__name__}: pass a dataset split, "
            "e.g. saln.data.build_dataset('digits').train"
        )
    check_extraction_settings(image_size, batch_size, loader, workers)
    device = torch.device(device)
    enc = (
        encoder
        if isinstance(encoder, Encoder)
        else build_encoder(
            encoder,
            pretrained=pretrained,
            weights=weights,
            download=download,
            image_size=image_size,
        )
    )
    key, ident = cache_key(source, enc.name, image_size), identity(source, enc, image_size)
    found = cache.lookup(Path(cache_dir), key, ident)
    if found is not None:
        return found
    check_input_size(enc.module, image_size, "features.image_size", f"the encoder {enc.name}")
    start = time.perf_counter()
    folder = Path(cache_dir)
    # The resident loader's first extraction encodes while worker processes decode the rest
    # (streaming.py); sharded extraction and the DataLoader path go through the pipeline.
    streamed = (
        world_size == 1 and source.array is None and choose_pipeline(loader, source) == "resident"
    )
    pipeline = (
        None if streamed else build_pipeline(loader, source, image_size, device, workers, folder)
    )
    module = enc.module.to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    timing = {"setup_seconds": time.perf_counter() - start}

    def forward(images: torch.Tensor) -> torch.Tensor:
        rows = len(images)
        if device.type == "cuda":
            # Every forward gets the full batch shape: a short last batch is a new shape, for
            # which cuDNN picks (and may compile) kernels for every layer again, which cost
            # seconds per extraction on an H200. Eval mode keeps rows independent.
            images = pad_rows(images, batch_size).contiguous(memory_format=torch.channels_last)
        return module(images)[:rows].float()

    def eval_batches(order: list[list[int]]) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, images on the device) per batch of ``order``."""
        if pipeline is None:
            return stream_eval_batches(source, image_size, device, batch_size, folder)
        batches = pipeline.batches(order, train=False, seed=0)
        return ((int(batch.indices[0]), batch.images) for batch in batches)

    def encode(first: int, last: int) -> Iterator[tuple[int, np.ndarray]]:
        """Features of rows [first, last) in order, as (start row, block) pairs."""
        order = [list(range(i, min(i + batch_size, last))) for i in range(first, last, batch_size)]
        bar = tqdm(
            total=last - first,
            desc=f"features {enc.name}",
            unit="img",
            unit_scale=True,
            disable=not progress or rank != 0 or not on_terminal(),
        )
        autocast = (
            torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
        )
        began = time.perf_counter()
        ticks = [began]  # when each block was back on the host

        def read_back(copy: HostCopy) -> tuple[int, np.ndarray]:
            block = copy.result()
            ticks.append(time.perf_counter())
            bar.update(len(block))
            return copy.start, block

        with torch.inference_mode(), autocast, bar:
            pending: HostCopy | None = None
            for row, images in eval_batches(order):
                queued = HostCopy(row, forward(images))
                # Queue this batch before reading the last one back, so the device never
                # waits on the host's conversion and the next batch's launches.
                if pending is not None:
                    yield read_back(pending)
                pending = queued
            if pending is not None:
                yield read_back(pending)
        # Diagnostic: a batch far slower than the rest points at one-off work (a new shape).
        timing["slowest_batch_seconds"] = float(np.diff(ticks).max(initial=0.0))
        timing["encode_seconds"] = time.perf_counter() - began

    if world_size > 1:
        store = _sharded(folder, key, ident, len(source), encode, rank, world_size)
    else:
        try:
            store = cache.write(folder, key, ident, len(source), lambda: encode(0, len(source)))
        except MixedSizes:  # the resident loader resizes files of several sizes as it decodes
            pipeline = build_pipeline(loader, source, image_size, device, workers, folder)
            store = cache.write(folder, key, ident, len(source), lambda: encode(0, len(source)))
    seconds = time.perf_counter() - start
    store.meta.update(
        extraction_seconds=seconds,
        images_per_second=len(source) / seconds,
        **timing,
        encode_images_per_second=len(source) / max(timing.get("encode_seconds", seconds), 1e-9),
        loader="streamed" if pipeline is None else type(pipeline).__name__,
    )
    if rank == 0:
        write_json_atomic(cache.cache_paths(folder, key)[1], store.meta)
    store.fresh = True
    return store


def pad_rows(images: torch.Tensor, rows: int) -> torch.Tensor:
    """``images`` with zero rows appended up to ``rows`` (unchanged if it has as many)."""
    missing = rows - len(images)
    if missing <= 0:
        return images
    return torch.cat([images, images.new_zeros((missing, *images.shape[1:]))])


class HostCopy:
    """A device result on its way to host memory: on CUDA a non-blocking copy into pinned
    memory, waited for only when ``result`` is read."""

    def __init__(self, start: int, values: torch.Tensor) -> None:
        self.start = start
        if values.is_cuda:
            self.host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self.host.copy_(values, non_blocking=True)
            self.done: torch.cuda.Event | None = torch.cuda.Event()
            self.done.record()
        else:
            self.host, self.done = values, None

    def result(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.host.numpy().astype(np.float16)


def _sharded(
    folder: Path,
    key: str,
    ident: dict[str, Any],
    count: int,
    encode: Callable[[int, int], Iterator[tuple[int, np.ndarray]]],
    rank: int,
    world_size: int,
) -> FeatureStore:
    """Each rank encodes a contiguous slice into a part file; rank 0 assembles the cache
    atomically and removes the parts; the others wait, then memory-map the result. The cache
    directory must be shared by all ranks (one node, or a shared filesystem)."""
    from saln.distributed import barrier

    check_writable(folder, "cache dir", cache.CACHE_DIR_OPTION)
    per = -(-count // world_size)
    parts = [folder / f".{key}.part{r}-of-{world_size}.npy" for r in range(world_size)]
    first, last = min(count, rank * per), min(count, (rank + 1) * per)
    blocks = [block for _, block in encode(first, last)]
    save_npy_atomic(
        parts[rank], np.concatenate(blocks) if blocks else np.zeros((0, ident["dim"]), np.float16)
    )
    barrier()
    if rank == 0:

        def assembled() -> Iterator[tuple[int, np.ndarray]]:
            for r, part in enumerate(parts):
                yield r * per, np.load(part)

        cache.write(folder, key, ident, count, assembled)
        for part in parts:
            part.unlink(missing_ok=True)
    barrier()
    store = cache.load(folder, key, ident, verify=False)
    assert store is not None
    return store
