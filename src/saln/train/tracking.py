"""What each epoch trained on: accuracy/loss accumulators and selection diagnostics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

NO_STEP = 2**62  # larger than any step index


class EpochAccumulator:
    """Each step's loss sum and correct count land in a slot of two device tensors: two copies
    per step, no host sync (on a launch-bound GPU each kernel counts). Sums, running means and
    the first non-finite step are computed from the slots when asked."""

    def __init__(self, device: torch.device, capacity: int) -> None:
        self.losses = torch.zeros(max(capacity, 1), device=device)
        self.corrects = torch.zeros(max(capacity, 1), device=device, dtype=torch.long)
        self.step_of_slot: list[int] = []
        self.rows = 0

    @property
    def steps(self) -> int:
        return len(self.step_of_slot)

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor, rows: int, step: int) -> None:
        self.losses[self.steps] = loss_sum
        self.corrects[self.steps] = correct
        self.step_of_slot.append(step)
        self.rows += rows

    def running(self, seconds: float) -> dict[str, float]:
        """This rank's running means (one host sync; called every few steps for display)."""
        rows = max(self.rows, 1)
        return {
            "loss": float(self.losses[: self.steps].sum()) / rows,
            "acc": float(self.corrects[: self.steps].sum()) / rows,
            "rows_per_s": self.rows / max(seconds, 1e-9),
        }

    def bad_step(self) -> int | None:
        """The first non-finite step on any rank (a collective under torchrun)."""
        from saln.distributed import all_reduce

        bad = (~torch.isfinite(self.losses[: self.steps])).nonzero()  # one host sync
        first = self.step_of_slot[int(bad[0])] if len(bad) else NO_STEP
        # The earliest is a min, and ranks reduce by max: negate ("none" is far below any step).
        negated = all_reduce(torch.tensor(-first, device=self.losses.device), "max")
        return None if int(negated) == -NO_STEP else -int(negated)

    def totals(self) -> tuple[float, float, int]:
        """(mean loss, accuracy, rows) over every rank's trained rows."""
        from saln.distributed import all_reduce

        loss, correct, rows = all_reduce(
            torch.stack(
                [
                    self.losses[: self.steps].double().sum(),
                    self.corrects[: self.steps].double().sum(),
                    torch.tensor(float(self.rows), device=self.losses.device, dtype=torch.float64),
                ]
            )
        )
        return float(loss) / max(float(rows), 1), float(correct) / max(float(rows), 1), int(rows)


class SelectionTracker:
    """Per sample: epochs in which it was trained; per epoch: the class histogram trained."""

    def __init__(self, labels: np.ndarray, num_classes: int) -> None:
        self.labels, self.num_classes = labels, num_classes
        self.epochs_kept = np.zeros(len(labels), dtype=np.int32)
        self.trained_classes = np.zeros(num_classes, dtype=np.int64)  # all epochs so far
        self._this_epoch = np.zeros(len(labels), dtype=bool)
        self._classes = np.zeros(num_classes, dtype=np.int64)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def start_epoch(self) -> None:
        self._this_epoch[:] = False
        self._classes[:] = 0
        self._pending.clear()

    def record(self, indices: torch.Tensor, positions: torch.Tensor | None = None) -> None:
        """Count the trained rows: ``indices`` (CPU) of the loaded batch, or only those at
        ``positions`` when a model-aware selector chose them. Positions may live on the GPU: they
        are resolved at the epoch's end, so recording never waits for the device."""
        if positions is None:
            self._mark(indices.numpy())
        else:
            self._pending.append((indices, positions))

    def _mark(self, rows: np.ndarray) -> None:
        self._this_epoch[rows] = True
        self._classes += np.bincount(self.labels[rows], minlength=self.num_classes)

    def _resolve_pending(self) -> None:
        """One device-to-host copy for the epoch's selected positions."""
        if not self._pending:
            return
        lengths = [len(p) for _, p in self._pending]
        positions = torch.cat([p for _, p in self._pending]).cpu().split(lengths)
        for (indices, _), kept in zip(self._pending, positions, strict=True):
            self._mark(indices.numpy()[kept.numpy()])
        self._pending.clear()

    def end_epoch(self) -> dict[str, Any]:
        from saln.distributed import all_reduce_numpy

        self._resolve_pending()
        self._this_epoch = all_reduce_numpy(self._this_epoch.astype(np.int64), "max").astype(bool)
        self._classes = all_reduce_numpy(self._classes)
        self.epochs_kept += self._this_epoch
        self.trained_classes += self._classes
        return {
            "distinct_trained_epoch": int(self._this_epoch.sum()),
            "distinct_trained_total": int((self.epochs_kept > 0).sum()),
            "class_histogram": self._classes.tolist(),
        }

    def state(self) -> dict[str, Any]:
        return {
            "epochs_kept": self.epochs_kept.copy(),
            "trained_classes": self.trained_classes.copy(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.epochs_kept = np.asarray(state["epochs_kept"], dtype=np.int32)
        self.trained_classes = np.asarray(state["trained_classes"], dtype=np.int64)


def entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def selection_summary(tracker: SelectionTracker, train: np.ndarray) -> dict[str, Any]:
    """Share of the training split ever trained on, how often the most-kept samples were kept,
    and class balance (entropy, nats) of the trained rows against the split's."""
    kept = tracker.epochs_kept[train]
    top = np.sort(kept)[::-1][: max(1, len(kept) // 100)]
    split_classes = np.bincount(tracker.labels[train], minlength=tracker.num_classes)
    trained = tracker.trained_classes
    return {
        "share_ever_trained": float((kept > 0).mean()),
        "max_epochs_kept": int(kept.max()),
        "top1pct_mean_epochs_kept": float(top.mean()),
        "class_entropy_trained": entropy(trained),
        "class_entropy_split": entropy(split_classes),
        "min_class_share_trained": float(trained.min() / max(trained.sum(), 1)),
    }
