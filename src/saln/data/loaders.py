"""Two ways to turn lists of global indices into training batches, behind one registry.

Both take the index lists that ``SelectiveBatchSampler`` produces, so dropped samples are never
decoded or augmented: ``resident`` (decoded uint8 images held on the device, batched
augmentation) and ``dataloader`` (a torch DataLoader with per-image v2 transforms in workers).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from saln.data.datasets import DataError, ImageSource, worker_errors
from saln.data.decode import MixedSizes, decode_all, first_size
from saln.data.flip_translate import FlipTranslate
from saln.data.gpu import BatchAugment
from saln.data.transforms import eval_transform, train_transform
from saln.registry import Registry

# Sources up to this size (decoded, uint8) are held in memory by the ``auto`` loader choice.
RESIDENT_MAX_BYTES = 2 * 1024**3


class Batch(NamedTuple):
    images: torch.Tensor  # float, normalised, (B, 3, S, S) on the target device
    labels: torch.Tensor  # int64 (B,)
    indices: torch.Tensor  # int64 global indices (B,)


class Pipeline(Protocol):
    def batches(
        self, index_batches: Iterable[Sequence[int]], *, train: bool, seed: int, epoch: int = 0
    ) -> Iterator[Batch]: ...


PIPELINES: Registry[Pipeline] = Registry("loader")


class TrainAugment(Protocol):
    """A resident training batch (uint8) to normalised floats; random draws from ``generator``
    (on the images' device) and ``order`` (CPU), per image by ``indices`` and ``epoch``."""

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        order: torch.Generator | None = None,
        *,
        indices: torch.Tensor,
        epoch: int,
    ) -> torch.Tensor: ...


TRAIN_AUGMENTS: Registry[TrainAugment] = Registry("data.augment")


@TRAIN_AUGMENTS.register("paper")
def paper_augment(image_size: int, rows: int, seed: int, device: torch.device) -> TrainAugment:
    return BatchAugment(image_size, train=True)


TRAIN_AUGMENTS.register("flip_translate")(FlipTranslate)


class IndexedDataset(Dataset[tuple[torch.Tensor, int, int]]):
    """(image tensor, label, global index) for the DataLoader path."""

    def __init__(self, source: ImageSource, train: bool, image_size: int) -> None:
        self.source = source
        self.transform = train_transform(image_size) if train else eval_transform(image_size)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.transform(self.source.image(index))
        return image, int(self.source.labels[index]), index


@PIPELINES.register("dataloader")
class LoaderPipeline:
    def __init__(
        self,
        source: ImageSource,
        image_size: int,
        device: torch.device,
        workers: int = 2,
        cache_dir: Path | None = None,  # unused: its workers decode batch by batch
        augment: str = "paper",
        seed: int = 0,  # unused: the paper's augmentation draws per call
    ) -> None:
        if augment != "paper":
            raise DataError(
                f"data.augment={augment} augments whole batches on the resident loader, and "
                "these images go through the DataLoader (too large to hold, or data.loader="
                "dataloader): set data.augment=paper, or data.loader=resident"
            )
        self.datasets = {t: IndexedDataset(source, t, image_size) for t in (True, False)}
        self.device, self.workers = device, workers

    def batches(
        self, index_batches: Iterable[Sequence[int]], *, train: bool, seed: int, epoch: int = 0
    ) -> Iterator[Batch]:
        if train and self.workers == 0:
            # In-process augmentation draws from the global generator (torchvision's transforms
            # take no other); a training run scopes it (saln.train.components). Evaluation is
            # deterministic and leaves the caller's generator alone.
            torch.manual_seed(seed)
        loader = DataLoader(
            self.datasets[train],
            batch_sampler=[list(b) for b in index_batches],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),  # seeds the workers reproducibly
        )
        with worker_errors():
            for images, labels, indices in loader:
                yield Batch(
                    images.to(self.device, non_blocking=True),
                    labels.to(self.device, non_blocking=True),
                    indices,
                )


@PIPELINES.register("resident")
class ResidentPipeline:
    def __init__(
        self,
        source: ImageSource,
        image_size: int,
        device: torch.device,
        workers: int = 0,
        cache_dir: Path | None = None,  # where decoded images are kept for the next process
        max_bytes: int | None = None,  # files of several sizes: MixedSizes if resized is larger
        augment: str = "paper",  # data.augment
        seed: int = 0,  # the run's: an augmentation's once-per-run draws
    ) -> None:
        decoded = decode_all(source, image_size, cache_dir=cache_dir, max_bytes=max_bytes)
        self.images = decoded.to(device)
        self.labels = torch.from_numpy(source.labels).to(device)
        self.augment: dict[bool, TrainAugment] = {
            True: TRAIN_AUGMENTS.build(
                augment, image_size=image_size, rows=len(source), seed=seed, device=device
            ),
            False: BatchAugment(image_size, train=False),
        }
        self.device, self.image_size = device, image_size

    def batches(
        self, index_batches: Iterable[Sequence[int]], *, train: bool, seed: int, epoch: int = 0
    ) -> Iterator[Batch]:
        """The epoch's indices go to the device in one copy; consecutive batches are augmented
        together (see :func:`batch_groups`) and each step gets its slice."""
        batches = [list(b) for b in index_batches]
        if not batches:
            return
        flat = torch.tensor([i for b in batches for i in b], dtype=torch.int64)
        if self.device.type == "cuda":  # pinned: the engine's per-step copies do not sync
            flat = flat.pin_memory()
        on_device = flat.to(self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        row_bytes = 4 * 3 * self.image_size**2
        budget = GROUP_BYTES.get(self.device.type, GROUP_BYTES["cpu"])
        start = 0
        for group in batch_groups([len(b) for b in batches], budget // row_bytes, GROUP_BATCHES):
            rows = slice(start, start + sum(group))
            rows_here = on_device[rows]
            images = self.augment[train](
                self.images[rows_here], gen, order, indices=rows_here, epoch=epoch
            )
            labels, indices = self.labels[on_device[rows]], flat[rows]
            offset = 0
            for size in group:
                part = slice(offset, offset + size)
                yield Batch(images[part], labels[part], indices[part])
                offset += size
            start = rows.stop


# Rows augmented in one call, as float32 bytes. Each call costs ~80 kernel launches whatever its
# size, most of a 12-row step's data time. On CPU a group stays cache-sized (larger ones got
# slower per row); on CUDA it amortises the launches. The colour-jitter op order is drawn once
# per call, so a group also caps how many batches share it.
GROUP_BYTES = {"cpu": 4 << 20, "cuda": 64 << 20}
GROUP_BATCHES = 16


def batch_groups(sizes: Sequence[int], max_rows: int, max_batches: int) -> Iterator[list[int]]:
    """Consecutive batch sizes, grouped while a group holds at most ``max_rows`` rows and
    ``max_batches`` batches (a batch larger than max_rows is a group of its own; batches are
    never split)."""
    group: list[int] = []
    for size in sizes:
        if group and (sum(group) + size > max_rows or len(group) == max_batches):
            yield group
            group = []
        group.append(size)
    if group:
        yield group


def resident_bytes(source: ImageSource) -> int:
    """The decoded images' size in memory as the files store them, from the first file's
    header (exact for in-memory arrays and for files of one size; see :func:`build_pipeline`
    for files of several)."""
    if source.array is not None:
        return int(source.array.nbytes)
    width, height = first_size(source)
    return len(source) * 3 * height * width


def choose_pipeline(name: str, source: ImageSource) -> str:
    """``auto``: resident when the images as stored fit in RESIDENT_MAX_BYTES, else dataloader.
    The resident loader keeps them as stored and resizes each batch on the device, so the
    bytes that count are the stored ones, not the resized ones."""
    if name != "auto":
        PIPELINES.get(name)
        return name
    return "resident" if resident_bytes(source) <= RESIDENT_MAX_BYTES else "dataloader"


def build_pipeline(
    name: str,
    source: ImageSource,
    image_size: int,
    device: torch.device,
    workers: int = 2,
    cache_dir: Path | None = None,
    augment: str = "paper",
    seed: int = 0,
) -> Pipeline:
    chosen = choose_pipeline(name, source)
    settings = dict(
        source=source,
        image_size=image_size,
        device=device,
        workers=workers,
        cache_dir=cache_dir,
        augment=augment,
        seed=seed,
    )
    if name == "auto" and chosen == "resident":
        try:  # files of several sizes are resized while decoding: only if that still fits
            return PIPELINES.build(chosen, **settings, max_bytes=RESIDENT_MAX_BYTES)
        except MixedSizes:
            chosen = "dataloader"
    return PIPELINES.build(chosen, **settings)
