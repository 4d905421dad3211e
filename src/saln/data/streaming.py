"""Eval batches in file order that do not wait for a whole dataset to decode.

Feature extraction reads every image once, in order. Through the resident loader it would first
decode all of them and only then start the encoder, and on a GPU decoding can take as long as
encoding (docs/benchmarks.md). Here each block goes to the device as
soon as a worker process has decoded it, so decoding and encoding overlap, and the decoded
images are still kept, in memory and on disk, for the training runs that follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from saln.data.datasets import ImageSource
from saln.data.decode import DECODE_CHUNK, kept_decoded, stream_decoded
from saln.data.gpu import BatchAugment


def stream_eval_batches(
    source: ImageSource, image_size: int, device: torch.device, batch_size: int, cache_dir: Path
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, normalised images on ``device``) for rows 0..N-1 in batches of
    ``batch_size``, with the resident loader's eval transform. Decoded images kept earlier are
    used as they are. Raises :class:`saln.data.decode.MixedSizes` for files of several sizes
    (the resident loader then resizes them while decoding)."""
    signature, kept = kept_decoded(source, image_size, cache_dir)
    blocks = (
        kept.split(DECODE_CHUNK)
        if kept is not None
        else stream_decoded(source, signature, cache_dir)
    )
    transform = BatchAugment(image_size, train=False)
    row = 0
    for images in rebatch(blocks, batch_size):
        if device.type == "cuda":  # pinned, so the copy does not make the host wait
            images = images.pin_memory().to(device, non_blocking=True)
        yield row, transform(images)
        row += len(images)


def rebatch(blocks: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """The rows of ``blocks``, in order, regrouped into batches of ``size`` (the last may be
    shorter)."""
    held: list[torch.Tensor] = []
    count = 0
    for block in blocks:
        held.append(block)
        count += len(block)
        while count >= size:
            joined = torch.cat(held)
            yield joined[:size]
            held, count = [joined[size:]], count - size
    if count:
        yield torch.cat(held)
