"""Reference-feature extraction: once per (dataset, encoder, weights, image size), cached."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from saln.data.datasets import ImageSource, canonical_root
from saln.data.decode import MixedSizes
from saln.data.loaders import PIPELINES, Pipeline, build_pipeline, choose_pipeline
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


@dataclass(frozen=True)
class ExtractionSettings:
    """How features are extracted: the ``features`` and ``data`` config sections' part of it,
    plus where and by which process. Checked on construction, before any work, even when a
    cache hit would not have used them."""

    image_size: int = 224
    batch_size: int = 256
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Path = Path(".cache/saln")
    loader: str = "auto"
    workers: int = 2
    progress: bool = True
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        for name, value in (("image_size", self.image_size), ("batch_size", self.batch_size)):
            if value < 1:
                raise InvalidInput(f"features.{name} must be >= 1, got {value}")
        if self.workers < 0:
            raise InvalidInput(
                f"data.workers must be >= 0 (0: the main process), got {self.workers}"
            )
        if self.loader != "auto":
            PIPELINES.get(self.loader)  # names the valid loaders

    def streams(self, source: ImageSource) -> bool:
        """Whether a source's first extraction encodes while worker processes decode the rest
        (streaming.py): the resident loader, one process, files on disk."""
        resident = choose_pipeline(self.loader, source) == "resident"
        return self.world_size == 1 and source.array is None and resident


class FeatureExtraction:
    """One extraction of ``source`` through ``encoder``: a cache hit, or the images encoded in
    order (eval transform, deterministic), written to the cache atomically."""

    def __init__(self, source: ImageSource, encoder: Encoder, settings: ExtractionSettings):
        self.source, self.encoder, self.settings = source, encoder, settings
        image_size = settings.image_size
        self.key = cache_key(source, encoder.name, image_size)
        self.ident = identity(source, encoder, image_size)
        self.timing: dict[str, float] = {}
        self.pipeline: Pipeline | None = None
        self.module: nn.Module = encoder.module

    def run(self) -> FeatureStore:
        s = self.settings
        found = cache.lookup(s.cache_dir, self.key, self.ident)
        if found is not None:
            return found
        enc = self.encoder
        check_input_size(enc.module, s.image_size, "features.image_size", f"the encoder {enc.name}")
        start = time.perf_counter()
        if not s.streams(self.source):
            self.pipeline = self._pipeline()
        self.module = enc.module.to(s.device)
        if s.device.type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)
        self.timing["setup_seconds"] = time.perf_counter() - start
        store = self._write()
        self._record(store, time.perf_counter() - start)
        store.fresh = True
        return store

    def _pipeline(self) -> Pipeline:
        s = self.settings
        return build_pipeline(s.loader, self.source, s.image_size, s.device, s.workers, s.cache_dir)

    def _write(self) -> FeatureStore:
        s, count = self.settings, len(self.source)
        if s.world_size > 1:
            return _sharded(
                s.cache_dir, self.key, self.ident, count, self.encode, s.rank, s.world_size
            )
        try:
            return cache.write(
                s.cache_dir, self.key, self.ident, count, lambda: self.encode(0, count)
            )
        except MixedSizes:  # the resident loader resizes files of several sizes as it decodes
            self.pipeline = self._pipeline()
            return cache.write(
                s.cache_dir, self.key, self.ident, count, lambda: self.encode(0, count)
            )

    def _record(self, store: FeatureStore, seconds: float) -> None:
        count, encoding = len(self.source), self.timing.get("encode_seconds", seconds)
        store.meta.update(
            extraction_seconds=seconds,
            images_per_second=count / seconds,
            **self.timing,
            encode_images_per_second=count / max(encoding, 1e-9),
            loader="streamed" if self.pipeline is None else type(self.pipeline).__name__,
        )
        if self.settings.rank == 0:
            write_json_atomic(cache.cache_paths(self.settings.cache_dir, self.key)[1], store.meta)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows, s = len(images), self.settings
        if s.device.type == "cuda":
            # Every forward gets the full batch shape: a short last batch is a new shape, for
            # which cuDNN picks (and may compile) kernels for every layer again, which cost
            # seconds per extraction on a GPU. Eval mode keeps rows independent.
            images = pad_rows(images, s.batch_size).contiguous(memory_format=torch.channels_last)
        return self.module(images)[:rows].float()

    def eval_batches(self, order: list[list[int]]) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, images on the device) per batch of ``order``."""
        s = self.settings
        if self.pipeline is None:
            return stream_eval_batches(
                self.source, s.image_size, s.device, s.batch_size, s.cache_dir
            )
        batches = self.pipeline.batches(order, train=False, seed=0)
        return ((int(batch.indices[0]), batch.images) for batch in batches)

    def encode(self, first: int, last: int) -> Iterator[tuple[int, np.ndarray]]:
        """Features of rows [first, last) in order, as (start row, block) pairs."""
        s, size = self.settings, self.settings.batch_size
        order = [list(range(i, min(i + size, last))) for i in range(first, last, size)]
        bar = tqdm(
            total=last - first,
            desc=f"features {self.encoder.name}",
            unit="img",
            unit_scale=True,
            disable=not s.progress or s.rank != 0 or not on_terminal(),
        )
        cuda = s.device.type == "cuda"
        autocast = torch.autocast("cuda", torch.bfloat16) if cuda else nullcontext()
        began = time.perf_counter()
        ticks = [began]  # when each block was back on the host

        def read_back(copy: HostCopy) -> tuple[int, np.ndarray]:
            block = copy.result()
            ticks.append(time.perf_counter())
            bar.update(len(block))
            return copy.start, block

        with torch.inference_mode(), autocast, bar:
            pending: HostCopy | None = None
            for row, images in self.eval_batches(order):
                queued = HostCopy(row, self.forward(images))
                # Queue this batch before reading the last one back, so the device never
                # waits on the host's conversion and the next batch's launches.
                if pending is not None:
                    yield read_back(pending)
                pending = queued
            if pending is not None:
                yield read_back(pending)
        # Diagnostic: a batch far slower than the rest points at one-off work (a new shape).
        self.timing["slowest_batch_seconds"] = float(np.diff(ticks).max(initial=0.0))
        self.timing["encode_seconds"] = time.perf_counter() - began


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
    settings = ExtractionSettings(
        image_size, batch_size, torch.device(device), Path(cache_dir), loader, workers,
        progress, rank, world_size,
    )  # fmt: skip
    if not isinstance(encoder, Encoder):
        encoder = build_encoder(
            encoder, pretrained=pretrained, weights=weights, download=download,
            image_size=image_size,
        )  # fmt: skip
    return FeatureExtraction(source, encoder, settings).run()


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
