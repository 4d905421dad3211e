"""Seeded, stratified splits of the training source into learner train / val / reference holdout."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from saln.errors import InvalidInput


@dataclass(frozen=True)
class Split:
    """Global indices of the training source. ``reference`` is the holdout for RHO-LOSS/JEST's
    reference model; no learner trains on it, whatever the method, so every method sees the
    same training set."""

    train: np.ndarray
    val: np.ndarray
    reference: np.ndarray
    seed: int
    val_fraction: float
    reference_fraction: float

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("train", "val", "reference"):
            data[key] = getattr(self, key).tolist()
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Split:
        arrays = {k: np.asarray(data[k], dtype=np.int64) for k in ("train", "val", "reference")}
        return cls(
            **arrays,
            seed=int(data["seed"]),  # type: ignore[call-overload]
            val_fraction=float(data["val_fraction"]),  # type: ignore[arg-type]
            reference_fraction=float(data["reference_fraction"]),  # type: ignore[arg-type]
        )


def stratified_split(
    labels: np.ndarray, val_fraction: float = 0.1, reference_fraction: float = 0.1, seed: int = 0
) -> Split:
    """Per class: a seeded shuffle, then ``round(fraction * count)`` to val and to the holdout."""
    for name, value in (("val_fraction", val_fraction), ("reference_fraction", reference_fraction)):
        if not 0.0 <= value < 1.0:
            raise InvalidInput(f"{name}={value} must be in [0, 1)")
    if val_fraction + reference_fraction >= 1.0:
        raise InvalidInput(
            f"val_fraction={val_fraction} + reference_fraction={reference_fraction} leaves no "
            "samples to train on; their sum must stay below 1 (e.g. 0.1 each)"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "reference": []}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = round(val_fraction * len(members))
        n_ref = round(reference_fraction * len(members))
        parts["val"].append(members[:n_val])
        parts["reference"].append(members[n_val : n_val + n_ref])
        parts["train"].append(members[n_val + n_ref :])
    joined = {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}
    if len(joined["train"]) == 0:
        raise InvalidInput("the split leaves no training samples; lower the fractions")
    return Split(
        **joined, seed=seed, val_fraction=val_fraction, reference_fraction=reference_fraction
    )
