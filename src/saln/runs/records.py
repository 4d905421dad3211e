"""The typed records of a run: one ``EpochRecord`` per line of metrics.jsonl, one ``RunSummary``
in summary.json. Training writes them, aggregation and plots read them; the files stay JSON.

Runs written by earlier versions load as long as they hold the fields every version wrote;
fields added since read as their defaults. A run missing a core field is refused with a message
that says how to re-run it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from saln.errors import UserError

# A relative spectral gap (l3 - l2) / l2 below this leaves the Fiedler vector not unique.
SMALL_GAP = 1e-3
TIME_PHASES = ("data", "selection", "step", "eval", "checkpoint")  # each epoch's seconds
BUDGET = "@"  # standard_matched@METHOD: the run trained METHOD's measured examples
COVERAGE = "+coverage"  # METHOD+coverage: the run's selector preferred rows not yet trained
# Methods that measure the others rather than compete: never named the winner.
REFERENCE_METHODS = frozenset({"standard"})
CONTROL_METHODS = frozenset({"standard_matched", "uniform"})


def budget_epochs(examples: int, rows_per_epoch: float) -> int:
    """Whole epochs ``standard_matched@M`` trains for M's ``examples`` (at least one): the
    trainer's rule, and the report's for finding that run among the frontier's points."""
    return max(1, round(examples / rows_per_epoch))


@dataclass(frozen=True)
class RunLabel:
    """The name a run is reported under, typed: ``method``, whose budget it trained
    (``standard_matched@infobatch``), and whether its selector preferred rows not yet trained
    (``uniform+coverage``). ``str()`` writes the name, :meth:`parse` reads it back."""

    method: str
    budget_of: str | None = None
    coverage: bool = False

    @classmethod
    def parse(cls, name: str) -> RunLabel:
        head, _, budget_of = name.partition(BUDGET)
        method, coverage, rest = head.partition(COVERAGE)
        if rest:
            raise RecordError(f"run name {name!r}: {COVERAGE} ends a name")
        return cls(method, budget_of or None, bool(coverage))

    def __str__(self) -> str:
        budget = f"{BUDGET}{self.budget_of}" if self.budget_of else ""
        return self.method + (COVERAGE if self.coverage else "") + budget

    @property
    def fraction(self) -> float | None:
        """``standard_matched@F`` with a number F: standard for that share of its epochs, the
        schedule fully decayed (a point of standard's compute frontier)."""
        if self.budget_of is None:
            return None
        try:
            return float(self.budget_of)
        except ValueError:
            return None

    @property
    def is_reference(self) -> bool:
        return self.method in REFERENCE_METHODS

    @property
    def is_control(self) -> bool:
        """A control (budget-matched standard in any form, the random subset) is never crowned."""
        return self.method in CONTROL_METHODS

    @property
    def competes(self) -> bool:
        return not (self.is_reference or self.is_control)


class RecordError(UserError, ValueError):
    """A stored record that this version cannot read."""


R = TypeVar("R", bound="_Record")


class _Record:
    """JSON round trip for the dataclasses below: ``None`` optionals are left out on writing,
    unknown keys are ignored on reading, missing required keys are an error."""

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any], source: Path | str = "") -> R:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        required = [
            f.name
            for f in fields(cls)  # type: ignore[arg-type]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in data]
        if missing:
            raise RecordError(
                f"{source or cls.__name__} lacks {', '.join(missing)}: it was written by a saln "
                "that did not record them; re-run that run with --overwrite"
            )
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EpochRecord(_Record):
    """One epoch. Train loss/accuracy are over the rows trained; val over the whole val split.
    Times are seconds, by phase (:data:`TIME_PHASES`)."""

    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    examples: int  # rows trained this epoch
    steps: int  # optimizer steps this epoch
    time_data: float
    time_selection: float
    time_step: float
    time_eval: float = 0.0
    time_checkpoint: float = 0.0
    epoch_wall_s: float = 0.0
    lr: float | None = None
    train_rows_per_s: float | None = None
    distinct_trained_epoch: int | None = None  # samples trained at least once this epoch
    distinct_trained_total: int | None = None  # ... in any epoch so far
    class_histogram: list[int] | None = None  # rows trained per class this epoch
    gap_median: float | None = None  # SALN: median relative spectral gap of the epoch's batches
    gap_small_share: float | None = None  # share of batches with a gap below SMALL_GAP
    top_entry_mass_median: float | None = None  # Fiedler mass on each batch's top entry
    filter_ratio: float | None = None  # scheduled share of each loaded batch dropped
    kept_share: float | None = None  # epoch-level methods: share of the split planned
    low_loss_share_of_kept: float | None = None  # InfoBatch: kept rows below the mean loss
    mean_weight: float | None = None  # InfoBatch: mean loss weight of the kept rows

    @property
    def train_time(self) -> float:
        """Seconds spent training: data wait, selection and steps (not eval or checkpoints)."""
        return self.time_data + self.time_selection + self.time_step


@dataclass(frozen=True)
class RunSummary(_Record):
    """A finished run: what it trained, how well, and where the time went (seconds)."""

    method: str
    seed: int
    final_train_loss: float
    final_train_acc: float
    final_val_loss: float
    final_val_acc: float
    best_val_acc: float
    test_acc_last: float
    test_acc_best: float
    train_time_s: float  # data wait + selection + steps
    examples_trained: int
    steps: int
    total_time_s: float  # train time + one-off costs
    dataset: str | None = None
    split_seed: int | None = None
    convention: str = "paper"  # paper | fixed_learner_batch
    filter_ratio: float = 0.0  # 0 for methods without a selector
    loaded_batch: int | None = None
    kept_batch: int | None = None
    epochs: int | None = None
    device: str | None = None
    world_size: int = 1
    best_epoch: int | None = None
    test_loss_last: float | None = None
    test_loss_best: float | None = None
    time: dict[str, float] = field(default_factory=dict)  # seconds by phase
    wall_time_s: float | None = None
    one_off: dict[str, float] = field(default_factory=dict)  # extraction, reference model
    feature_cache_hit: bool = False
    selection_share_of_step: float = 0.0
    share_ever_trained: float = 1.0
    max_epochs_kept: int = 0
    top1pct_mean_epochs_kept: float = 0.0
    class_entropy_trained: float = 0.0  # nats
    class_entropy_split: float = 0.0  # nats
    min_class_share_trained: float | None = None
    tta: int = 0  # the test-time augmentation of its val and test accuracy (eval.tta)
    selection_flops_per_step: float | None = None  # a proxy's, counted by torch

    @property
    def one_off_s(self) -> float:
        return float(sum(self.one_off.values()))

    def value(self, key: str) -> float:
        """A numeric field by name, for tables and statistics."""
        return float(getattr(self, key))
