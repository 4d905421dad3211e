"""Reference-feature extraction: once per (dataset, encoder, weights, image size), cached."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saln.data.datasets import ImageSource
from saln.data.loaders import build_pipeline
from saln.data.transforms import describe
from saln.features import cache
from saln.features.cache import FeatureStore
from saln.models import Encoder, build_encoder


def cache_key(source: ImageSource, encoder: str, image_size: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.name)
    return f"{slug}-{encoder}-{image_size}px"


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
    found = cache.load(Path(cache_dir), key, ident)
    if found is not None:
        return found
    start = time.perf_counter()
    pipeline = build_pipeline(loader, source, image_size, device, workers)
    module = enc.module.to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        order = [
            list(range(i, min(i + batch_size, len(source))))
            for i in range(0, len(source), batch_size)
        ]
        bar = tqdm(
            total=len(source),
            desc=f"features {enc.name}",
            unit="img",
            unit_scale=True,
            disable=not progress or rank != 0,
        )
        autocast = (
            torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
        )
        with torch.inference_mode(), autocast, bar:
            for batch in pipeline.batches(order, train=False, seed=0):
                images = batch.images
                if device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                block = module(images).float().cpu().numpy().astype(np.float16)
                bar.update(len(block))
                yield int(batch.indices[0]), block

    store = cache.write(Path(cache_dir), key, ident, len(source), chunks)
    seconds = time.perf_counter() - start
    store.meta.update(extraction_seconds=seconds, images_per_second=len(source) / seconds)
    cache.write_json_atomic(cache.cache_paths(Path(cache_dir), key)[1], store.meta)
    store.fresh = True
    return store
