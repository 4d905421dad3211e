"""Shared fixtures: small real data from ../shared/data, seeded synthetic features."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from saln.data.archive import extract_per_class

REPO = Path(__file__).resolve().parents[1]
CIFAR_ARCHIVE = Path(
    os.environ.get("SALN_CIFAR_ARCHIVE", REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
)


def pytest_configure(config: pytest.Config) -> None:
    """One compute thread per test process: the suite runs two tests at once on two cores, and
    each torch process defaulting to every core made them fight over both. Subprocesses
    (torchrun ranks, CLI runs) inherit the limit."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: two workers then finish together instead of one waiting on the last
    slow test. A test marked ``gpu`` is skipped, saying so, where CUDA is missing."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    import torch

    if not torch.cuda.is_available():
        needs_cuda = pytest.mark.skip(reason="marked gpu: needs CUDA, which this machine lacks")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(needs_cuda)


@functools.cache
def one_pixel_png() -> bytes:
    """A valid PNG of one pixel (PIL's encoder, not matplotlib's renderer)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def figures_rendered_where_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendering a report's PNGs (matplotlib's Agg) is most of what building a report costs and
    a large share of the suite's time. Tests marked ``figures`` render them; elsewhere every
    figure is still built, and its file holds a one-pixel PNG instead of the rendering."""
    if request.node.get_closest_marker("figures"):
        return
    from saln.io import write_bytes_atomic
    from saln.report import plots, visualize

    image = one_pixel_png()

    def stand_in(fig: object, path: Path) -> Path:
        return write_bytes_atomic(path, image)

    monkeypatch.setattr(plots, "save", stand_in)
    monkeypatch.setattr(visualize, "save", stand_in)


@pytest.fixture(autouse=True)
def leaves_no_temp_files(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test that leaves files in the temp folder (its own and its subprocesses')."""
    scratch = tmp_path_factory.mktemp("tempdir")
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield
    # torch.compile's kernel cache lives in the temp folder by design, and multiprocessing's
    # per-process folder (pymp-*, made by the first DataLoader worker) goes when the process
    # ends: neither is a leak.
    ours = ("torchinductor_", "pymp-")
    left = sorted(e.name for e in scratch.iterdir() if not e.name.startswith(ours))
    assert not left, f"the test left {left} in the temp folder; remove them when done"


def clustered_features(
    batches: int, n: int, d: int, *, clusters: int = 6, seed: int = 0
) -> np.ndarray:
    """Non-negative, clustered features like pooled ReLU activations: (batches, n, d) float32."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, size=(clusters, d))
    out = np.empty((batches, n, d), dtype=np.float32)
    for b in range(batches):
        members = rng.integers(0, clusters, n)
        noise = rng.gamma(1.0, 0.7, size=(n, d))
        out[b] = np.maximum((centres[members] + noise) * rng.random((n, d)), 0)
    return out


def unpack_cifar_subset(
    dest: Path, per_class: dict[str, int], archive: Path = CIFAR_ARCHIVE
) -> Path:
    """The first ``per_class[split]`` JPEGs of every class of the real CIFAR-10 archive, in
    ImageFolder layout under ``dest/cifar10-jpeg``."""
    return extract_per_class(archive, dest / "cifar10-jpeg", per_class)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10 subset in ImageFolder layout: 30 train and 10 test JPEGs per class."""
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"real CIFAR-10 archive not found at {CIFAR_ARCHIVE} (set SALN_CIFAR_ARCHIVE)")
    return unpack_cifar_subset(tmp_path_factory.mktemp("cifar"), {"train": 30, "test": 10})


@pytest.fixture(scope="session")
def cifar_pixels(cifar_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Flattened pixels in [0, 1] (300, 3072) and labels of the train subset."""
    from PIL import Image

    files = sorted((cifar_root / "train").glob("*/*.jpg"))
    classes = sorted({f.parent.name for f in files})
    pixels = np.stack([np.asarray(Image.open(f), dtype=np.float32).ravel() / 255 for f in files])
    labels = np.array([classes.index(f.parent.name) for f in files])
    return pixels, labels
