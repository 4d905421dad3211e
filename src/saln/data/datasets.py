"""Datasets behind a registry. Each yields a train and a test ``ImageSource``.

A sample's *global index* is its position in the training source; splits, features, selection
and reference losses are all keyed by it. The official test split is kept apart, untouched.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from saln.errors import InvalidInput
from saln.io import write_bytes_atomic
from saln.registry import Registry


class DataError(InvalidInput):
    """A dataset that cannot be read as asked; the message names the problem and the fix."""


def canonical_root(root: str) -> str:
    """One name per data location: a folder's absolute path (``data/x`` and ``/abs/data/x`` are
    one place, so caches keyed by it do not re-extract), else the root as is (``sklearn``)."""
    return str(Path(root).resolve()) if root and Path(root).is_dir() else root


@dataclass(frozen=True)
class ImageSource:
    """One split: labels, class names, and images by position (RGB PIL), decoded on demand.

    ``array`` (N, H, W, 3) uint8 is set when the images already sit in memory (CIFAR-10, digits),
    so the resident path can skip decoding.
    """

    name: str
    classes: list[str]
    labels: np.ndarray
    loader: Callable[[int], Image.Image]
    files: Sequence[str] = ()
    array: np.ndarray | None = None
    root: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return self.loader(index)

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the data wherever it lives, for the caches: name, count, labels, and each
        file's relative path, size and modification time (rsync's quick check: an edited file
        changes it, a moved folder does not), or the in-memory images' bytes."""
        digest = hashlib.sha256(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        for path in self.files:
            digest.update(f"{path}:{self._file_stamp(path)};".encode())
        if self.array is not None and not self.files:
            digest.update(hashlib.sha256(self.array.tobytes()).digest())
        return {
            "name": self.name,
            "count": len(self),
            "classes": len(self.classes),
            "content_sha256": digest.hexdigest(),
        }

    def _file_stamp(self, path: str) -> str:
        try:
            stat = os.stat(os.path.join(self.root, path))
        except OSError as err:
            raise DataError(
                f"{self.name}: cannot read {path} under {self.root} ({err.strerror}); the folder "
                "changed after it was opened: open the dataset again"
            ) from None
        return f"{stat.st_size}:{stat.st_mtime_ns}"


@dataclass(frozen=True)
class DatasetBundle:
    name: str
    train: ImageSource
    test: ImageSource
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.train.classes


DATASETS: Registry[DatasetBundle] = Registry("dataset")


def open_rgb(path: str | Path) -> Image.Image:
    """Decode one image file as RGB, naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as err:
        raise DataError(
            f"image {path} is too large to decode safely ({err}); shrink or remove the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}; remove or replace the file") from None


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """A DataError raised in a DataLoader worker comes back to the main process with the
    worker's whole traceback as its message; a user needs its last line, which names the file
    and the fix."""
    try:
        yield
    except DataError as err:
        text = str(err).strip()
        if "DataLoader worker" not in text.partition("\n")[0]:
            raise
        last = text.splitlines()[-1]
        raise DataError(last.partition("DataError: ")[2] or last) from None


def _array_source(
    name: str, root: str, classes: list[str], images: np.ndarray, labels: Any
) -> ImageSource:
    images = np.ascontiguousarray(images)
    return ImageSource(
        name=name,
        classes=classes,
        labels=np.asarray(labels, dtype=np.int64),
        loader=lambda i: Image.fromarray(images[i]),
        array=images,
        root=root,
    )


def _file_source(
    name: str, root: str, classes: list[str], files: list[str], labels: Any
) -> ImageSource:
    return ImageSource(
        name=name,
        classes=classes,
        labels=np.asarray(labels, dtype=np.int64),
        loader=lambda i: open_rgb(files[i]),
        files=[os.path.relpath(f, root) for f in files],
        root=root,
    )


def check_classes(source: ImageSource) -> ImageSource:
    counts = np.bincount(source.labels, minlength=len(source.classes))
    empty = [source.classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"{source.name}: class(es) {', '.join(empty)} have no samples; "
            "add images for them or remove their folders"
        )
    return source


def torchvision_splits(make: Callable[[bool], Any], missing: str) -> tuple[Any, Any]:
    """(train, test) of a torchvision dataset, ``make(train)``; torchvision's "not found"
    RuntimeError becomes a DataError saying ``missing``."""
    try:
        return make(True), make(False)
    except RuntimeError:
        raise DataError(missing) from None
    except OSError as err:  # urllib's URLError: no network, a refused or failed download
        raise DataError(f"the download failed ({err}). {missing}") from None


@DATASETS.register("cifar10")
def cifar10(root: str, download: bool = False, **_: Any) -> DatasetBundle:
    from torchvision.datasets import CIFAR10

    train, test = torchvision_splits(
        lambda train: CIFAR10(root, train=train, download=download),
        f"CIFAR-10 not found under {root!r}: torchvision expects "
        f"{os.path.join(root, 'cifar-10-batches-py')}/data_batch_1..5 and test_batch. "
        "Pass --download to fetch it, or use --dataset imagefolder:PATH for a folder "
        "of images (PATH/train/<class>/*, PATH/test/<class>/*)",
    )
    return DatasetBundle(
        "cifar10",
        _array_source("cifar10/train", root, list(train.classes), train.data, train.targets),
        _array_source("cifar10/test", root, list(test.classes), test.data, test.targets),
    )


@DATASETS.register("pets")
def pets(root: str, download: bool = False, **_: Any) -> DatasetBundle:
    from torchvision.datasets import OxfordIIITPet

    def split(name: str) -> ImageSource:
        data = OxfordIIITPet(root, split=name, target_types="category", download=download)
        files = [str(p) for p in data._images]
        return _file_source(f"pets/{name}", root, list(data.classes), files, data._labels)

    try:
        return DatasetBundle("pets", split("trainval"), split("test"))
    except RuntimeError:
        raise DataError(
            f"Oxford-IIIT Pet not found under {root!r}: torchvision expects "
            f"{os.path.join(root, 'oxford-iiit-pet')}/images/*.jpg and "
            "annotations/{trainval,test}.txt. Pass --download to fetch it"
        ) from None


# Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist): the idx files,
# gzipped, which torchvision reads once unpacked into its own layout.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def unpack_system_fashion_mnist(raw: Path, system: Path) -> None:
    """Unpack the system copy's gzipped idx files into torchvision's ``raw`` folder, each
    atomically, where torchvision's own files are missing."""
    for name in FASHION_MNIST_FILES:
        packed = system / f"{name}.gz"
        if (raw / name).exists() or not packed.is_file():
            continue
        with gzip.open(packed, "rb") as handle:
            write_bytes_atomic(raw / name, handle.read())


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: str, download: bool = False, **_: Any) -> DatasetBundle:
    """Fashion-MNIST (60,000 train / 10,000 test grey 28x28 images, 10 classes) as RGB uint8,
    through torchvision: from ``ROOT/FashionMNIST/raw``, from Debian's package, or downloaded."""
    from torchvision.datasets import FashionMNIST

    raw = Path(root) / "FashionMNIST" / "raw"
    if not download:
        unpack_system_fashion_mnist(raw, SYSTEM_FASHION_MNIST)
    train, test = torchvision_splits(
        lambda train: FashionMNIST(root, train=train, download=download),
        f"Fashion-MNIST not found: torchvision expects {raw}/"
        f"{{{','.join(FASHION_MNIST_FILES)}}}. "
        "Pass --download to fetch it, or install Debian's copy (apt-get install "
        f"dataset-fashion-mnist, read from {SYSTEM_FASHION_MNIST})",
    )

    def source(split: str, data: Any) -> ImageSource:
        rgb = np.repeat(data.data.numpy()[..., None], 3, axis=-1)
        return _array_source(f"fashion_mnist/{split}", root, list(data.classes), rgb, data.targets)

    return DatasetBundle("fashion_mnist", source("train", train), source("test", test))


@DATASETS.register("imagefolder")
def imagefolder(root: str, path: str = "", **_: Any) -> DatasetBundle:
    """``imagefolder:PATH``: PATH/train/<class>/* and PATH/test/<class>/* (torchvision layout)."""
    base = Path(path or root)
    layout = f"{base}/train/<class>/*.jpg and {base}/test/<class>/*.jpg"

    def split(name: str) -> ImageSource:
        folder = base / name
        if not folder.is_dir():
            raise DataError(f"no folder {folder}: imagefolder expects {layout}")
        classes, files, targets = scan_image_folder(folder)
        if not classes:
            raise DataError(f"{folder} has no class folders; imagefolder expects {layout}")
        source = _file_source(f"imagefolder/{name}", str(base), classes, files, targets)
        return check_classes(source)

    train, test = split("train"), split("test")
    if train.classes != test.classes:
        raise DataError(
            f"train and test classes differ under {base}: "
            f"{sorted(set(train.classes) ^ set(test.classes))}"
        )
    return DatasetBundle(f"imagefolder:{base}", train, test)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_image_folder(folder: Path) -> tuple[list[str], list[str], list[int]]:
    """Class names (sorted sub-folders), image files and their labels under ``folder``, as
    torchvision's ImageFolder finds them, except that a directory symlink leading back into
    ``folder`` (a loop, or a second copy of a class) is not followed and anything that is not a
    regular file (a FIFO would block the reader forever; a dangling link) is refused."""
    inside = os.path.realpath(folder)
    classes = sorted(
        e.name
        for e in os.scandir(folder)
        if e.is_dir() and not (e.is_symlink() and _leads_inside(e.path, inside))
    )
    files: list[str] = []
    targets: list[int] = []
    for label, name in enumerate(classes):
        found = _class_files(folder / name, inside)
        files += found
        targets += [label] * len(found)
    return classes, files, targets


def _class_files(top: Path, inside: str) -> list[str]:
    """The image files under ``top`` in torchvision's order: folders by path, files by name."""
    found: list[str] = []
    seen = {os.path.realpath(top)}
    walked = []
    for here, dirs, names in os.walk(top, followlinks=True):
        walked.append((here, names))
        kept = []
        for d in sorted(dirs):
            path = os.path.join(here, d)
            real = os.path.realpath(path)
            if not (os.path.islink(path) and _leads_inside(path, inside)) and real not in seen:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
    for here, names in sorted(walked):
        for n in sorted(names):
            if n.lower().endswith(IMAGE_SUFFIXES):
                found.append(_regular_file(os.path.join(here, n)))
    return found


def _leads_inside(link: str, inside: str) -> bool:
    """Whether the symlink ``link`` resolves into the tree at ``inside`` (or to it)."""
    return (os.path.realpath(link) + os.sep).startswith(inside + os.sep)


def _regular_file(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(
            f"{path} is a symbolic link to a file that does not exist: remove it or restore "
            "its target"
        ) from None
    if not stat.S_ISREG(mode):
        raise DataError(
            f"{path} is not a regular file (a FIFO, socket or device cannot be read as an "
            "image): move it out of the dataset"
        )
    return path


@DATASETS.register("digits")
def digits(root: str = "", **_: Any) -> DatasetBundle:
    """scikit-learn's bundled 8x8 digits as RGB uint8 images: the default that needs no download.

    sklearn has no official test split; a fixed, stratified 20% (seed 0) plays that role.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    grey = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    train_idx, test_idx = train_test_split(
        np.arange(len(rgb)), test_size=0.2, random_state=0, stratify=data.target
    )
    classes = [str(c) for c in data.target_names]
    return DatasetBundle(
        "digits",
        _array_source("digits/train", "sklearn", classes, rgb[train_idx], data.target[train_idx]),
        _array_source("digits/test", "sklearn", classes, rgb[test_idx], data.target[test_idx]),
    )


def build_dataset(spec: str, root: str = "data", download: bool = False) -> DatasetBundle:
    """``spec`` is a registered name, optionally with an argument: ``imagefolder:PATH``."""
    name, _, argument = spec.partition(":")
    factory = DATASETS.get(name)
    if name == "imagefolder" and not argument:
        raise DataError("imagefolder needs a path: --dataset imagefolder:PATH")
    return factory(root=root, download=download, path=argument)
