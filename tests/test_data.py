"""Datasets in their real on-disk layouts, splits, and the two loading pipelines."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from PIL import Image
from torch.overrides import TorchFunctionMode
from torchvision.datasets import CIFAR10
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from saln.data import (
    DataError,
    build_dataset,
    build_pipeline,
    datasets,
    decode,
    gpu,
    loaders,
    stratified_split,
)
from saln.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def write_cifar_batches(root: Path, per_batch: int = 10) -> None:
    """torchvision's CIFAR-10 pickle layout, tiny."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def test_cifar10_reads_torchvision_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar_batches(tmp_path)
    # Only the md5 checks are bypassed: they pin the official files, which a test cannot recreate.
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    bundle = build_dataset("cifar10", str(tmp_path))
    assert len(bundle.train) == 50 and len(bundle.test) == 10
    assert bundle.classes[3] == "cat"
    assert bundle.train.image(0).size == (32, 32)
    assert bundle.train.array is not None and bundle.train.array.shape == (50, 32, 32, 3)


def test_cifar10_missing_root_says_layout_and_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*--download"):
        build_dataset("cifar10", str(tmp_path / "nothing"))


def write_pets(root: Path) -> None:
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    lines = {"trainval": [], "test": []}
    for breed, label, species in (("Abyssinian", 1, 1), ("american_bulldog", 2, 2)):
        for i in range(4):
            name = f"{breed}_{i}"
            Image.new("RGB", (40 + i, 30), (label * 60, i * 20, 90)).save(
                base / "images" / f"{name}.jpg"
            )
            lines["trainval" if i < 3 else "test"].append(f"{name} {label} {species} 1")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")


def test_pets_reads_torchvision_layout(tmp_path: Path) -> None:
    write_pets(tmp_path)
    bundle = build_dataset("pets", str(tmp_path))
    assert len(bundle.train) == 6 and len(bundle.test) == 2
    assert bundle.classes == ["Abyssinian", "American Bulldog"]
    assert bundle.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert bundle.train.image(1).mode == "RGB"


def test_pets_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"oxford-iiit-pet.*--download"):
        build_dataset("pets", str(tmp_path))


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """The idx format by its spec: a big-endian magic (0x08 = uint8, then the number of
    dimensions), each dimension as a big-endian uint32, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_the_system_copy_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    system.mkdir()
    images = (np.arange(5 * 28 * 28) % 251).reshape(5, 28, 28)
    labels = np.array([9, 0, 3, 9, 1])
    for split, count in (("train", 3), ("t10k", 2)):
        write_idx_gz(system / f"{split}-images-idx3-ubyte.gz", images[:count])
        write_idx_gz(system / f"{split}-labels-idx1-ubyte.gz", labels[:count])
    monkeypatch.setattr(datasets, "SYSTEM_FASHION_MNIST", system)
    bundle = build_dataset("fashion_mnist", str(tmp_path / "data"))
    assert bundle.train.array is not None and bundle.train.array.shape == (3, 28, 28, 3)
    assert all(np.array_equal(bundle.train.array[..., c], images[:3]) for c in range(3))
    assert bundle.train.labels.tolist() == [9, 0, 3] and bundle.test.labels.tolist() == [9, 0]
    assert bundle.classes[9] == "Ankle boot" and len(bundle.test) == 2
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    monkeypatch.setattr(datasets, "SYSTEM_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(DataError, match=r"FashionMNIST/raw/.*--download.*dataset-fashion-mnist"):
        build_dataset("fashion_mnist", str(tmp_path / "elsewhere"))


def test_imagefolder_on_real_cifar_jpegs(cifar_root: Path) -> None:
    bundle = build_dataset(f"imagefolder:{cifar_root}")
    assert len(bundle.train) == 300 and len(bundle.test) == 100
    assert bundle.classes[0] == "airplane" and len(bundle.classes) == 10
    assert np.bincount(bundle.train.labels).tolist() == [30] * 10
    assert bundle.train.image(0).size == (32, 32)


def test_imagefolder_errors(tmp_path: Path, cifar_root: Path) -> None:
    with pytest.raises(DataError, match=r"no folder .*train: imagefolder expects"):
        build_dataset(f"imagefolder:{tmp_path}")
    copy = tmp_path / "copy"
    shutil.copytree(cifar_root, copy)
    (copy / "train" / "empty_class").mkdir()
    (copy / "test" / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class have no samples"):
        build_dataset(f"imagefolder:{copy}")
    with pytest.raises(DataError, match="needs a path"):
        build_dataset("imagefolder")


def test_corrupt_image_is_named(tmp_path: Path, cifar_root: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cifar_root, copy)
    victim = sorted((copy / "train" / "bird").glob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg")
    bundle = build_dataset(f"imagefolder:{copy}")
    index = next(
        i for i, f in enumerate(bundle.train.files) if f.endswith(victim.name) and "bird" in f
    )
    with pytest.raises(DataError, match=f"cannot read image .*{victim.name}"):
        bundle.train.image(index)


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; valid names: cifar10, digits"):
        build_dataset("mnist")


def test_digits_is_bundled() -> None:
    bundle = build_dataset("digits")
    assert len(bundle.train) + len(bundle.test) == 1797
    assert bundle.train.array is not None and bundle.train.array.dtype == np.uint8
    assert bundle.train.array.max() == 255


def test_split_is_stratified_disjoint_and_reproducible() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    split = stratified_split(labels, 0.1, 0.2, seed=3)
    parts = [split.train, split.val, split.reference]
    assert sum(map(len, parts)) == 200 and len(np.unique(np.concatenate(parts))) == 200
    assert np.bincount(labels[split.val]).tolist() == [10, 5, 3, 2]
    assert np.bincount(labels[split.reference]).tolist() == [20, 10, 6, 4]
    again = stratified_split(labels, 0.1, 0.2, seed=3)
    assert np.array_equal(split.val, again.val)
    assert not np.array_equal(split.val, stratified_split(labels, 0.1, 0.2, seed=4).val)


@pytest.mark.parametrize("fractions", [(1.0, 0.0), (0.5, 0.5), (-0.1, 0.1)])
def test_split_rejects_bad_fractions(fractions: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(np.zeros(10, dtype=int), *fractions)


@pytest.fixture
def image_batch() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 16, 16, generator=gen)


@pytest.mark.parametrize(
    ("ours", "theirs", "factor"),
    [
        (gpu.adjust_brightness, TF.adjust_brightness, 1.2),
        (gpu.adjust_contrast, TF.adjust_contrast, 0.8),
        (gpu.adjust_saturation, TF.adjust_saturation, 1.15),
        (gpu.adjust_hue, TF.adjust_hue, 0.07),
        (gpu.adjust_hue, TF.adjust_hue, -0.1),
    ],
)
def test_batched_colour_ops_match_torchvision(image_batch, ours, theirs, factor) -> None:  # type: ignore[no-untyped-def]
    factors = torch.full((4,), factor)
    expected = torch.stack([theirs(img, factor) for img in image_batch])
    assert torch.allclose(ours(image_batch, factors), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((3, 8, 8), 16),  # digits, upsampled
        ((2, 3, 32, 32), 32),  # already square at size: returned as is
        ((3, 20, 30), 16),  # wide: the long side truncated, then a centre crop
        ((2, 3, 30, 21), 16),  # tall, a batch
        ((3, 17, 16), 16),  # the short side already at size: a crop alone
        ((3, 25, 40), 12),  # a downscale, antialiased
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fit_square_is_torchvisions_resize_and_centre_crop(
    shape: tuple[int, ...], size: int, dtype: torch.dtype
) -> None:
    """Written with torch alone (torchvision costs seconds to import): bit for bit
    torchvision's short-side resize (bilinear, antialiased) and centre crop."""
    from saln.data.transforms import fit_square

    images = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    expected = TF.center_crop(TF.resize(images, [size], antialias=True), [size, size])
    got = fit_square(images, size)
    assert got.shape == expected.shape and got.dtype == dtype
    assert torch.equal(got, expected)


def test_batched_flip_and_rotation_match_torchvision(image_batch: torch.Tensor) -> None:
    mask = torch.tensor([True, False, True, False])
    flipped = gpu.flip(image_batch, mask)
    assert torch.equal(flipped[0], image_batch[0].flip(-1)) and torch.equal(
        flipped[1], image_batch[1]
    )
    for angle in (0.0, 90.0, -12.0):
        ours = gpu.rotate(image_batch, torch.full((4,), angle))
        theirs = torch.stack([TF.rotate(img, angle) for img in image_batch])
        agree = (ours - theirs).abs().lt(1e-5).float().mean()
        assert agree > 0.93, f"{angle} degrees: only {agree:.2f} of pixels agree"


def test_augment_draws_parameters_per_sample() -> None:
    same = torch.full((8, 3, 16, 16), 128, dtype=torch.uint8)
    same[:, :, :, :8] = 30  # an asymmetric image, so flips and rotations show
    out = gpu.BatchAugment(16, train=True)(same, torch.Generator().manual_seed(1))
    assert len({round(float(o.sum()), 3) for o in out}) == 8
    plain = gpu.BatchAugment(16, train=False)(same)
    assert torch.allclose(plain[0], plain[7])


class HostTensorCounter(TorchFunctionMode):
    """Counts tensors built from host data. On a GPU each one is a pageable host copy, which
    synchronises the stream, so a per-batch path must build none."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls += func in (torch.tensor, torch.as_tensor)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("train", [True, False])
def test_batch_augment_builds_no_tensor_from_host_data_per_batch(train: bool) -> None:
    augment, images = (
        gpu.BatchAugment(24, train=train),
        torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
    )
    gen, order = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    augment(images, gen, order)  # the first batch may build the constants
    with HostTensorCounter() as counter:
        for _ in range(3):
            augment(images, gen, order)
    assert counter.calls == 0


@pytest.mark.parametrize("loader", ["resident", "dataloader"])
def test_pipelines_load_exactly_the_requested_indices(loader: str, cifar_root: Path) -> None:
    bundle = build_dataset(f"imagefolder:{cifar_root}")
    pipeline = build_pipeline(loader, bundle.train, 32, torch.device("cpu"), workers=0)
    requested = [[5, 17, 250], [0, 299]]
    batches = list(pipeline.batches(requested, train=True, seed=0))
    assert [b.indices.tolist() for b in batches] == requested
    assert batches[0].images.shape == (3, 3, 32, 32)
    assert batches[0].labels.tolist() == bundle.train.labels[[5, 17, 250]].tolist()
    again = list(pipeline.batches(requested, train=True, seed=0))
    assert torch.equal(batches[0].images, again[0].images)


def test_batch_groups_fill_up_to_the_row_and_batch_caps() -> None:
    assert list(loaders.batch_groups([5, 5, 5, 20, 3], 10, 16)) == [[5, 5], [5], [20], [3]]
    assert list(loaders.batch_groups([1, 1, 1, 1, 1], 100, 2)) == [[1, 1], [1, 1], [1]]
    assert list(loaders.batch_groups([], 10, 16)) == []


def test_grouped_augmentation_slices_each_batch_as_requested(
    cifar_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = build_dataset(f"imagefolder:{cifar_root}").train
    pipeline = build_pipeline("resident", source, 32, torch.device("cpu"))
    requested = [[5, 17, 250], [0, 299], [7], [8, 9, 10, 11]]

    def run(train: bool) -> list[loaders.Batch]:
        return list(pipeline.batches(requested, train=train, seed=0))

    monkeypatch.setitem(loaders.GROUP_BYTES, "cpu", 1)  # one batch per call
    alone, alone_train = run(False), run(True)
    monkeypatch.setitem(loaders.GROUP_BYTES, "cpu", 1 << 30)  # all four in one call
    together, together_train = run(False), run(True)
    for a, b, want in zip(alone, together, requested, strict=True):
        assert b.indices.tolist() == want
        assert b.labels.tolist() == source.labels[want].tolist()
        assert torch.equal(a.images, b.images)  # eval is deterministic: grouping changes nothing
    assert [b.images.shape[0] for b in together_train] == [3, 2, 1, 4]
    assert not torch.equal(alone_train[0].images, together_train[0].images)  # other draws


def test_resident_and_dataloader_agree_without_augmentation(cifar_root: Path) -> None:
    bundle = build_dataset(f"imagefolder:{cifar_root}")
    args = (bundle.train, 32, torch.device("cpu"))
    a = next(build_pipeline("resident", *args).batches([[3, 4]], train=False, seed=0))
    b = next(build_pipeline("dataloader", *args, workers=0).batches([[3, 4]], train=False, seed=0))
    assert torch.allclose(a.images, b.images, atol=1e-5)


def test_resident_images_keep_their_own_size_when_uniform(cifar_root: Path, tmp_path: Path) -> None:
    cifar = build_dataset(f"imagefolder:{cifar_root}").train
    assert decode.decode_all(cifar, image_size=224).shape == (300, 3, 32, 32)  # resized per batch
    write_pets(tmp_path)  # widths 40..43: mixed sizes must be resized to stack
    pets = build_dataset("pets", str(tmp_path)).train
    assert decode.decode_all(pets, image_size=24).shape == (6, 3, 24, 24)
    batch = gpu.BatchAugment(224, train=False)(decode.decode_all(cifar, 224)[:2])
    assert batch.shape == (2, 3, 224, 224)


def test_worker_processes_decode_what_the_main_process_decodes(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cifar = build_dataset(f"imagefolder:{cifar_root}").train
    write_pets(tmp_path)  # mixed sizes: the workers' first pass must give up, then resize
    pets = build_dataset("pets", str(tmp_path)).train
    decoded = {}
    for threshold in (10**9, 0):  # in-process, then in worker processes
        monkeypatch.setattr(decode, "DECODE_IN_WORKERS_FROM", threshold)
        monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())  # no reuse across the two
        decoded[threshold] = (decode.decode_all(cifar, 32), decode.decode_all(pets, 24))
    assert torch.equal(decoded[0][0], decoded[10**9][0])
    assert torch.equal(decoded[0][1], decoded[10**9][1])
    assert decoded[0][1].shape == (6, 3, 24, 24)
    first = np.array(Image.open(cifar_root / cifar.files[0]).convert("RGB"))
    assert torch.equal(decoded[0][0][0], torch.from_numpy(first).permute(2, 0, 1))


def test_decoded_images_are_reused_in_process_but_never_stale(
    cifar_root: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cifar_root, copy)
    source = build_dataset(f"imagefolder:{copy}").train
    first = decode.decode_all(source, 32)
    assert decode.decode_all(build_dataset(f"imagefolder:{copy}").train, 32) is first  # reused
    victim = copy / source.files[0]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(victim)
    fresh = decode.decode_all(build_dataset(f"imagefolder:{copy}").train, 32)
    assert fresh is not first and fresh[0, 0].float().mean() > 200  # the edited image, red


def test_mixed_size_images_are_decoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of mixed sizes are stored resized; the lookup must find them under the same key
    (it once looked for another, so every call decoded them again)."""
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())
    write_pets(tmp_path)  # widths 40..43
    pets = build_dataset("pets", str(tmp_path)).train
    cache = tmp_path / "cache"
    first = decode.decode_all(pets, 24, cache_dir=cache)
    monkeypatch.setattr(decode, "_decode_files", lambda *a, **k: pytest.fail("decoded again"))
    assert decode.decode_all(pets, 24, cache_dir=cache) is first  # this process
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())  # a new process: from disk
    assert torch.equal(decode.decode_all(pets, 24, cache_dir=cache), first)


def test_decoded_images_are_kept_on_disk_for_the_next_process(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())  # nothing from other tests
    source = build_dataset(f"imagefolder:{cifar_root}").train
    cache = tmp_path / "cache"
    first = decode.decode_all(source, 32, cache_dir=cache)
    [stored] = (cache / "decoded").glob("*-own.npy")
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())  # a new process
    monkeypatch.setattr(decode, "_decode_files", lambda *a, **k: pytest.fail("decoded again"))
    again = decode.decode_all(source, 32, cache_dir=cache)
    assert torch.equal(again, first)
    stored.write_bytes(stored.read_bytes()[:1000])  # damaged: decoded again, with a warning
    monkeypatch.undo()
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())
    with pytest.warns(UserWarning, match=r"cache .* is unreadable \(.*\); decoding again"):
        repaired = decode.decode_all(source, 32, cache_dir=cache)
    assert torch.equal(repaired, first) and np.load(stored).shape == tuple(first.shape)


def test_an_edited_file_misses_the_disk_cache(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())
    copy = tmp_path / "copy"
    shutil.copytree(cifar_root, copy)
    cache = tmp_path / "cache"
    source = build_dataset(f"imagefolder:{copy}").train
    decode.decode_all(source, 32, cache_dir=cache)
    Image.new("RGB", (32, 32), (255, 0, 0)).save(copy / source.files[0])
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())  # a new process
    fresh = decode.decode_all(build_dataset(f"imagefolder:{copy}").train, 32, cache_dir=cache)
    assert fresh[0, 0].float().mean() > 200  # the edited image, red
    assert len(list((cache / "decoded").glob("*.npy"))) == 2


def test_the_disk_cache_keeps_the_most_recently_used_entries(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "DECODED_ON_DISK", 2)
    cache = tmp_path / "cache"
    copy = tmp_path / "copy"
    shutil.copytree(cifar_root, copy)

    def decode_in_a_new_process(colour: int | None = None) -> Path:
        """Decode (after editing one file, if a colour is given) and return the cache entry."""
        monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())
        if colour is not None:  # a new version of the dataset
            first = build_dataset(f"imagefolder:{copy}").train.files[0]
            Image.new("RGB", (32, 32), (colour, 0, 0)).save(copy / first)
        source = build_dataset(f"imagefolder:{copy}").train
        decode.decode_all(source, 32, cache_dir=cache)
        return decode._decoded_path(cache, (decode._file_signature(source), "own"))

    def age(path: Path, seconds: int) -> None:
        os.utime(path, ns=(seconds * 10**9, seconds * 10**9))

    used = decode_in_a_new_process()
    age(used, 1)
    assert decode_in_a_new_process() == used  # loaded from disk, which marks it used now
    stale = decode_in_a_new_process(colour=20)
    age(stale, 2)
    newest = decode_in_a_new_process(colour=30)
    assert set((cache / "decoded").glob("*.npy")) == {used, newest}


def _toy_archive(path: Path) -> Path:
    """root/{train,test}/{a,b}/k.jpg: 3 train and 2 test files per class."""
    with tarfile.open(path, "w:gz") as tar:
        for split, count in (("train", 3), ("test", 2)):
            for label in ("a", "b"):
                for k in range(count):
                    data = f"{split}/{label}/{k}".encode()
                    info = tarfile.TarInfo(f"root/{split}/{label}/{k}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return path


def test_a_per_class_slice_takes_the_first_files_of_each_class(tmp_path: Path) -> None:
    from saln.cli import main

    archive = _toy_archive(tmp_path / "toy.tar.gz")
    assert (
        main(
            ["subset", str(archive), "--out", str(tmp_path / "s"), "--per-class", "train=2,test=5"]
        )
        == 0
    )
    files = sorted(str(p.relative_to(tmp_path / "s")) for p in (tmp_path / "s").rglob("*.jpg"))
    assert files == [
        "test/a/0.jpg",
        "test/a/1.jpg",
        "test/b/0.jpg",
        "test/b/1.jpg",
        "train/a/0.jpg",
        "train/a/1.jpg",
        "train/b/0.jpg",
        "train/b/1.jpg",
    ]
    assert (tmp_path / "s" / "train" / "b" / "1.jpg").read_text() == "train/b/1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.")] == []  # no staging left


@pytest.mark.parametrize(
    ("per_class", "message"),
    [
        ("train=0", "N >= 1"),
        ("train", "SPLIT=N"),
        ("", "no per-class counts"),
        ("val=2", "no files under val/<class>/"),
    ],
)
def test_bad_slices_are_refused_and_leave_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], per_class: str, message: str
) -> None:
    from saln.cli import main

    archive = _toy_archive(tmp_path / "toy.tar.gz")
    assert (
        main(["subset", str(archive), "--out", str(tmp_path / "s"), "--per-class", per_class]) == 2
    )
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.tar.gz"]


def test_a_slice_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from saln.cli import main

    (tmp_path / "s").mkdir()
    archive = _toy_archive(tmp_path / "toy.tar.gz")
    assert main(["subset", str(archive), "--out", str(tmp_path / "s")]) == 2
    assert "exists" in capsys.readouterr().err


def test_a_slice_writes_only_split_class_file_paths(tmp_path: Path) -> None:
    from saln.data.archive import extract_per_class

    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("root/train/a/ok.jpg", "root/train/../stray.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    out = extract_per_class(archive, tmp_path / "s", {"train": 5})
    assert [str(p.relative_to(out)) for p in out.rglob("*.jpg")] == ["train/a/ok.jpg"]


def write_image_folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """An ImageFolder of JPEGs with the given (width, height), two classes, train and test."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i, (width, height) in enumerate(sizes):
            folder = root / split / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            # smooth content, as photos are: JPEG and resizing then disturb it little
            y, x = np.mgrid[0:height, 0:width]
            base = np.stack([x / width, y / height, (x + y) / (width + height)], -1)
            noise = rng.random((1, 1, 3))
            pixels = (255 * (0.7 * base + 0.3 * noise)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=95)
    return root


NON_SQUARE = {
    "one size": [(40, 24)] * 6,  # held as stored, fitted per batch
    "several sizes": [(40, 24), (24, 40), (50, 30), (33, 47), (40, 24), (64, 20)],
}


@pytest.mark.parametrize("layout", sorted(NON_SQUARE))
def test_both_loaders_give_the_same_eval_images_of_non_square_files(
    tmp_path: Path, layout: str
) -> None:
    """One eval geometry (short side, centre crop) whichever loader decodes: squashing in one
    and cropping in the other differed by up to 2.4 after normalisation."""
    source = build_dataset(f"imagefolder:{write_image_folder(tmp_path, NON_SQUARE[layout])}").train
    rows = [list(range(len(source)))]
    args = (source, 16, torch.device("cpu"))
    resident = next(build_pipeline("resident", *args).batches(rows, train=False, seed=0))
    loader = next(build_pipeline("dataloader", *args, workers=0).batches(rows, train=False, seed=0))
    # files of several sizes are held as uint8 once fitted: half a grey level, normalised
    tolerance = 1e-5 if layout == "one size" else 0.5 / 255 / min(IMAGENET_STD) + 1e-5
    assert (resident.images - loader.images).abs().max() <= tolerance
    # torchvision's own short-side resize and centre crop, normalised: the reference
    reference = v2.Compose(
        [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Resize(16), v2.CenterCrop(16),
         v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )  # fmt: skip
    expected = torch.stack([reference(source.image(i)) for i in range(len(source))])
    assert (loader.images - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("layout", sorted(NON_SQUARE))
def test_feature_extraction_sees_the_same_images_through_either_loader(
    tmp_path: Path, layout: str
) -> None:
    from saln.features import extract_features

    source = build_dataset(f"imagefolder:{write_image_folder(tmp_path, NON_SQUARE[layout])}").train
    tables = [
        extract_features(
            source, "pixels", image_size=16, batch_size=4, cache_dir=tmp_path / loader,
            loader=loader, workers=0, progress=False,
        ).numpy().astype(np.float32)
        for loader in ("resident", "dataloader")
    ]  # fmt: skip
    # the cache holds float16: its rounding, plus the uint8 rounding of mixed sizes
    assert np.abs(tables[0] - tables[1]).max() <= 0.02


@pytest.mark.parametrize("damage", ["truncated", "not an archive"])
def test_a_damaged_archive_is_named_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    from saln.cli import main

    archive = _toy_archive(tmp_path / "toy.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"just text\n" * 50)
    assert main(["subset", str(archive), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert f"{archive} is not a readable .tar or .tar.gz archive" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.tar.gz"]
