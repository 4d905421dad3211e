"""The feature cache: round trip, invalidation on every field, atomicity, corruption; and that
the offline pretrained encoder's features are genuinely pretrained."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saln.data import build_dataset, decode, loaders
from saln.data.gpu import BatchAugment
from saln.data.streaming import rebatch
from saln.features import cache, extract_features
from saln.features import extract as extract_module
from saln.features.extract import cache_key, identity, pad_rows
from saln.models import build_encoder


@pytest.fixture(scope="module")
def digits_source():  # type: ignore[no-untyped-def]
    return build_dataset("digits").train


def extract(source, tmp: Path, **kw):  # type: ignore[no-untyped-def]
    return extract_features(
        source,
        kw.pop("encoder", "pixels"),
        image_size=kw.pop("image_size", 8),
        cache_dir=tmp,
        progress=False,
        **kw,
    )


def test_round_trip_is_aligned_with_global_indices(digits_source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = extract(digits_source, tmp_path)
    assert len(store) == len(digits_source) and store.dim == 3 * 8 * 8
    expected = digits_source.array[[0, 9, 400]].transpose(0, 3, 1, 2).reshape(3, -1) / 255.0
    assert np.allclose(store.get([0, 9, 400]).float().numpy(), expected, atol=2e-3)
    assert isinstance(store.array, np.memmap)
    again = extract(digits_source, tmp_path)
    assert "extraction_seconds" in store.meta and again.path == store.path


def test_pad_rows_appends_zero_rows_up_to_the_batch_shape() -> None:
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) + 1
    padded = pad_rows(images, 5)
    assert padded.shape == (5, 3, 2, 2)
    assert torch.equal(padded[:2], images) and not padded[2:].any()
    assert pad_rows(images, 2) is images


def test_the_encode_loop_records_its_slowest_batch(digits_source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    meta = extract(digits_source, tmp_path, batch_size=500).meta
    assert 0 < meta["slowest_batch_seconds"] <= meta["encode_seconds"]


@pytest.mark.gpu
def test_a_short_last_batch_is_padded_on_cuda_without_changing_its_rows(
    digits_source, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """1,797 digits in batches of 256 end with a 5-row batch, which runs padded to 256 rows:
    its features must be those of the same images in a full batch."""
    kw = {"encoder": "efficientnet_lite0", "image_size": 64, "device": "cuda"}
    short = extract(digits_source, tmp_path / "short", batch_size=256, **kw)
    whole = extract(digits_source, tmp_path / "whole", batch_size=599, **kw)  # 3 x 599 rows
    rows = list(range(len(digits_source) - 5, len(digits_source)))
    a, b = short.get(rows).float(), whole.get(rows).float()
    assert torch.allclose(a, b, atol=0.05 * b.abs().max().item())


def test_rebatch_regroups_blocks_in_order() -> None:
    blocks = [torch.arange(0, 5), torch.arange(5, 7), torch.arange(7, 13)]
    sizes = [len(b) for b in rebatch(blocks, 4)]
    assert sizes == [4, 4, 4, 1]
    assert torch.equal(torch.cat(list(rebatch(blocks, 4))), torch.arange(13))


def pixels_of(source, size: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The pixels encoder's features the slow way: decode everything, then transform."""
    images = BatchAugment(size, train=False)(decode.decode_all(source, size))
    return build_encoder("pixels", image_size=size).module(images)


def test_streamed_extraction_encodes_while_workers_decode_and_keeps_the_images(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = build_dataset(f"imagefolder:{cifar_root}").train  # 300 JPEGs, 32 x 32
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())  # nothing decoded yet
    monkeypatch.setattr(decode, "DECODE_IN_WORKERS_FROM", 0)  # worker processes, as at scale
    store = extract(source, tmp_path, image_size=16, batch_size=64, loader="resident")
    assert store.meta["setup_seconds"] < store.meta["encode_seconds"]  # decoding was in the loop
    expected = pixels_of(source, 16)
    assert torch.allclose(store.get(list(range(len(source)))).float(), expected, atol=1e-3)
    monkeypatch.setattr(decode, "_DECODED", type(decode._DECODED)())  # a new process
    fail = lambda *a, **k: pytest.fail("decoded again")  # noqa: E731
    monkeypatch.setattr(decode, "_decoded_blocks", fail)
    assert decode.decode_all(source, 16, cache_dir=tmp_path).shape == (300, 3, 32, 32)


def test_auto_keeps_small_files_resident_for_a_larger_input(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 px files for a 64 px model: held as stored they fit the resident budget, resized
    they would not. ``auto`` must hold them as stored, both for training and for extraction
    (it took the DataLoader: all of CIFAR-10 for a 224 px encoder extracted at 900 img/s on an
    H200)."""
    source = build_dataset(f"imagefolder:{cifar_root}").train  # 300 JPEGs, 32 x 32
    stored = len(source) * 3 * 32 * 32
    monkeypatch.setattr(loaders, "RESIDENT_MAX_BYTES", 2 * stored)  # 64 px would need 4x
    pipeline = loaders.build_pipeline("auto", source, 64, torch.device("cpu"))
    assert isinstance(pipeline, loaders.ResidentPipeline)
    assert pipeline.images.shape == (300, 3, 32, 32)  # resized per batch
    calls = []
    real = extract_module.stream_eval_batches
    monkeypatch.setattr(
        extract_module,
        "stream_eval_batches",
        lambda *args: calls.append(args) or real(*args),  # type: ignore[func-returns-value]
    )
    store = extract(source, tmp_path, image_size=64, batch_size=64, loader="auto")
    assert len(calls) == 1 and store.meta["loader"] == "streamed"
    expected = pixels_of(source, 64)
    assert torch.allclose(store.get(list(range(len(source)))).float(), expected, atol=1e-3)
    monkeypatch.setattr(loaders, "RESIDENT_MAX_BYTES", stored - 1)  # not even as stored
    assert loaders.choose_pipeline("auto", source) == "dataloader"


def several_sizes(root: Path) -> Path:
    """Six PNGs, 18 px high and 20..25 px wide, in two classes, as train and test."""
    for i in range(6):
        for split in ("train", "test"):
            folder = root / split / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20 + i, 18), (40 * i, 90, 200 - 30 * i)).save(folder / f"{i}.png")
    return root


def test_auto_holds_files_of_several_sizes_only_if_they_fit_resized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first file's size says they fit; decoding finds other sizes, which are resized to
    the model's input: resident if that fits too, else the DataLoader, for extraction too."""
    source = build_dataset(f"imagefolder:{several_sizes(tmp_path / 'data')}").train
    monkeypatch.setattr(loaders, "RESIDENT_MAX_BYTES", 6 * 3 * 64 * 64)  # 64 px fits, not 96
    cpu = torch.device("cpu")
    assert loaders.build_pipeline("auto", source, 64, cpu).images.shape == (6, 3, 64, 64)  # type: ignore[attr-defined]
    assert isinstance(loaders.build_pipeline("auto", source, 96, cpu), loaders.LoaderPipeline)
    store = extract(source, tmp_path / "cache", image_size=96, loader="auto")
    assert store.meta["loader"] == "LoaderPipeline" and len(store) == 6


def test_files_of_several_sizes_fall_back_to_resizing_while_decoding(tmp_path: Path) -> None:
    source = build_dataset(f"imagefolder:{several_sizes(tmp_path / 'data')}").train
    store = extract(source, tmp_path / "cache", image_size=16, loader="resident")
    expected = pixels_of(source, 16)
    assert torch.allclose(store.get(list(range(6))).float(), expected, atol=1e-3)


def test_cache_hit_does_not_recompute(
    digits_source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    extract(digits_source, tmp_path)
    monkeypatch.setattr(cache, "write", lambda *a, **k: pytest.fail("re-extracted a valid cache"))
    extract(digits_source, tmp_path)


def test_a_source_that_is_not_a_dataset_split_is_named(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"source must be an ImageSource, got ndarray"):
        extract(np.zeros((3, 8, 8, 3)), tmp_path)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"workers": -1}, "workers must be >= 0"),
        ({"loader": "fast"}, "unknown loader 'fast'; valid names: dataloader, resident"),
    ],
)
def test_bad_settings_are_named_even_when_the_cache_would_hit(  # type: ignore[no-untyped-def]
    digits_source, tmp_path: Path, setting: dict[str, object], message: str
) -> None:
    extract(digits_source, tmp_path)
    with pytest.raises(ValueError, match=message):
        extract(digits_source, tmp_path, **setting)


@pytest.mark.parametrize(
    "field", ["format", "dataset", "encoder", "weights_sha256", "transform", "image_size", "dim"]
)
def test_every_identity_field_invalidates(digits_source, tmp_path: Path, field: str) -> None:  # type: ignore[no-untyped-def]
    store = extract(digits_source, tmp_path)
    encoder = build_encoder("pixels", image_size=8)
    ident = identity(digits_source, encoder, 8)
    key = cache_key(digits_source, "pixels", 8)
    assert cache.load(tmp_path, key, ident) is not None
    changed = dict(ident, **{field: "something else"})
    with pytest.warns(UserWarning, match=f"stale \\({field} changed\\)"):
        assert cache.load(tmp_path, key, changed) is None
    assert store.path is not None


def test_changed_dataset_content_re_extracts(tmp_path: Path, cifar_root: Path) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(cifar_root, copy)
    first = extract(build_dataset(f"imagefolder:{copy}").train, tmp_path / "c", image_size=32)
    next(iter((copy / "train" / "cat").glob("*.jpg"))).unlink()
    with pytest.warns(UserWarning, match="dataset changed"):
        second = extract(build_dataset(f"imagefolder:{copy}").train, tmp_path / "c", image_size=32)
    assert len(first) == 300 and len(second) == 299


def test_two_image_folders_keep_their_own_cache_entries(tmp_path: Path, cifar_root: Path) -> None:
    import shutil
    import warnings

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(cifar_root, a)
    shutil.copytree(cifar_root, b)
    next(iter((b / "train" / "cat").glob("*.jpg"))).unlink()  # b differs from a
    first = extract(build_dataset(f"imagefolder:{a}").train, tmp_path / "c", image_size=32)
    other = extract(build_dataset(f"imagefolder:{b}").train, tmp_path / "c", image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stale-cache warning would mean b replaced a's entry
        again = extract(build_dataset(f"imagefolder:{a}").train, tmp_path / "c", image_size=32)
    assert (len(first), len(other), len(again)) == (300, 299, 300)
    assert again.path == first.path != other.path


def test_a_folder_named_relatively_or_absolutely_is_one_cache_entry(
    tmp_path: Path, cifar_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(cifar_root, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    first = extract(build_dataset("imagefolder:data").train, tmp_path / "c", image_size=32)
    monkeypatch.setattr(cache, "write", lambda *a, **k: pytest.fail("re-extracted: root differs"))
    absolute = build_dataset(f"imagefolder:{tmp_path / 'data'}").train
    again = extract(absolute, tmp_path / "c", image_size=32)
    assert again.path == first.path and len(again) == 300


def small_folder(root: Path) -> Path:
    """Eight 12 px images in two classes per split, all dated 2020, so an edit changes times."""
    for i in range(8):
        for split in ("train", "test"):
            folder = root / split / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 12), (30 * i, 90, 200 - 20 * i)).save(folder / f"{i}.png")
    for path in root.rglob("*.png"):
        os.utime(path, ns=(1_577_836_800 * 10**9,) * 2)
    return root


def test_a_moved_folder_keeps_its_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = extract(build_dataset(f"imagefolder:{small_folder(tmp_path / 'a')}").train, tmp_path)
    (tmp_path / "a").rename(tmp_path / "b")
    monkeypatch.setattr(cache, "write", lambda *a, **k: pytest.fail("re-extracted moved data"))
    moved = extract(build_dataset(f"imagefolder:{tmp_path / 'b'}").train, tmp_path)
    assert moved.path == first.path and np.array_equal(moved.numpy(), first.numpy())


def test_an_image_edited_in_place_re_extracts_the_features(tmp_path: Path) -> None:
    data = small_folder(tmp_path / "data")
    source = build_dataset(f"imagefolder:{data}").train
    first = extract(source, tmp_path).numpy().astype(np.float32)
    edited = source.files.index(os.path.join("train", "class0", "2.png"))
    Image.new("RGB", (12, 12), (255, 0, 0)).save(data / source.files[edited])  # same name
    with pytest.warns(UserWarning, match="dataset changed"):
        second = extract(build_dataset(f"imagefolder:{data}").train, tmp_path).numpy()
    changed = np.flatnonzero(np.abs(second.astype(np.float32) - first).max(axis=1) > 0)
    assert changed.tolist() == [edited]


def test_killed_write_leaves_nothing_that_loads(digits_source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    encoder = build_encoder("pixels", image_size=8)
    ident = identity(digits_source, encoder, 8)

    def dies_midway() -> Iterator[tuple[int, np.ndarray]]:
        yield 0, np.ones((10, ident["dim"]), dtype=np.float16)
        raise KeyboardInterrupt  # as if the process were killed

    with pytest.raises(KeyboardInterrupt):
        cache.write(tmp_path, "k", ident, len(digits_source), dies_midway)
    assert cache.load(tmp_path, "k", ident) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_meta"])
def test_corruption_is_detected_and_re_extracted(
    digits_source, tmp_path: Path, damage: str
) -> None:  # type: ignore[no-untyped-def]
    store = extract(digits_source, tmp_path)
    reference = store.get(np.arange(20)).clone()
    assert store.path is not None
    path = store.path
    del store
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[-100] ^= 0xFF
        path.write_bytes(data)
    else:
        path.with_suffix(".json").unlink()
    if damage == "delete_meta":
        fresh = extract(digits_source, tmp_path)
    else:
        with pytest.warns(UserWarning, match="truncated|corrupted"):
            fresh = extract(digits_source, tmp_path)
    assert torch.equal(fresh.get(np.arange(20)), reference)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == cache.file_sha256(path)


def test_unwritable_cache_dir_is_named(digits_source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(
        ValueError, match=r"cache dir .*file/sub cannot be made: .*file is a file.*--cache-dir"
    ):
        extract(digits_source, blocker / "sub")


@pytest.mark.slow
def test_pretrained_encoder_separates_classes_better_than_random(
    cifar_root: Path, tmp_path: Path
) -> None:
    """efficientnet_lite0's ImageNet features make cat vs. ship (real CIFAR-10 JPEGs) linearly
    separable far better than the same network with random weights."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    two_classes = tmp_path / "cat_ship"  # only the rows scored: extraction is the test's cost
    for split in ("train", "test"):
        for name in ("cat", "ship"):
            shutil.copytree(cifar_root / split / name, two_classes / split / name)
    source = build_dataset(f"imagefolder:{two_classes}").train
    scores = {}
    for pretrained in (True, False):
        torch.manual_seed(0)
        store = extract_features(
            source,
            "efficientnet_lite0",
            image_size=96,
            pretrained=pretrained,
            cache_dir=tmp_path / str(pretrained),
            progress=False,
        )
        x = store.numpy().astype(np.float32)
        model = LogisticRegression(max_iter=2000, C=0.5)
        scores[pretrained] = cross_val_score(model, x, source.labels, cv=5).mean()
    assert scores[True] >= 0.85 and scores[True] - scores[False] >= 0.15, scores
