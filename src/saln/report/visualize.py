"""Pictures that need the data or the model: the selection of one batch, classifier weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from saln.models import classifier_weight
from saln.report.aggregate import Run
from saln.report.plots import save, subplots

THUMB = 32  # pixels per thumbnail
KEPT, DROPPED = np.array([40, 170, 60]), np.array([200, 200, 200])


def mosaic(images: list[np.ndarray], kept: set[int], columns: int = 16) -> np.ndarray:
    """Thumbnails in a grid: kept ones framed green, dropped ones faded and framed grey."""
    rows = -(-len(images) // columns)
    cell = THUMB + 4
    canvas = np.full((rows * cell, columns * cell, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        tile = np.full((cell, cell, 3), KEPT if i in kept else DROPPED, dtype=np.uint8)
        thumb = image if i in kept else (0.35 * image + 0.65 * 255).astype(np.uint8)
        tile[2:-2, 2:-2] = thumb
        canvas[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = tile
    return canvas


def load_thumbnails(run: Run, indices: list[int]) -> list[np.ndarray]:
    from PIL import Image

    from saln.data import build_dataset

    data = run.config["data"]
    source = build_dataset(data["dataset"], data["data_root"], download=False).train
    return [
        np.asarray(source.image(i).resize((THUMB, THUMB), Image.Resampling.NEAREST))
        for i in indices
    ]


def selection_grid(examples: dict[str, tuple[Run, dict[str, Any]]], path: Path) -> Path:
    """The same loaded batch as each method saw it, kept rows highlighted."""
    methods = list(examples)
    fig, axes = subplots(len(methods), 1, figsize=(12, 2.3 * len(methods)), squeeze=False)
    for ax, method in zip(axes[:, 0], methods, strict=True):
        run, example = examples[method]
        images = load_thumbnails(run, example["indices"])
        kept = set(example["kept_positions"])
        ax.imshow(mosaic(images, kept))
        ax.set_title(
            f"{method}: {len(kept)} of {len(images)} kept (green)", fontsize=10, loc="left"
        )
        ax.axis("off")
    fig.suptitle(
        f"One loaded batch (final epoch, seed {next(iter(examples.values()))[0].seed}): "
        "which samples each method trains on"
    )
    return save(fig, path)


def weights_figure(runs: dict[str, Run], path: Path) -> Path:
    """Heatmap and histogram of each method's final fully connected layer (best-val model),
    on one colour scale so the methods' weights compare at a glance."""
    weights = {}
    for method, run in runs.items():
        state = torch.load(run.path / "best_model.pt", map_location="cpu", weights_only=True)
        weights[method] = classifier_weight(state).float().numpy()
    limit = max(float(np.abs(w).max()) for w in weights.values()) or 1.0
    fig, axes = subplots(
        len(runs), 2, figsize=(11, 1.9 * len(runs) + 0.8), squeeze=False,
        gridspec_kw={"width_ratios": [3, 1]},
    )  # fmt: skip
    for (heat, hist), (method, weight) in zip(axes, weights.items(), strict=True):
        image = heat.imshow(
            weight, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
        )
        heat.set_ylabel(f"{method}\nclass")
        hist.hist(weight.ravel(), bins=60, color="C0", histtype="stepfilled")
        hist.set_title(f"std {weight.std():.3f}", fontsize=9)
    fig.colorbar(image, ax=axes[:, 0], fraction=0.02)  # one scale: constrained layout is slow
    axes[-1][0].set_xlabel("input feature")
    axes[-1][1].set_xlabel("weight")
    fig.suptitle(
        f"Final fully connected layer of the best-val model (seed {next(iter(runs.values())).seed})"
    )
    return save(fig, path)
