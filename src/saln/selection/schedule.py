"""When a selector selects, and how much: a filter ratio per epoch.

``select_from`` trains on every row for the first epochs (warm-up) and ``select_until`` trains
on every row from that epoch on (annealing), both as fractions of the run's epochs, rounded to
whole epochs. Between them a ramp scales the filter ratio: ``constant`` keeps it, ``linear``
raises it from ``ratio / n`` in the first selecting epoch to ``ratio`` in the last of the ``n``.
The defaults (0, 1, constant) are the paper's setting: every epoch at the full ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from saln.errors import InvalidInput
from saln.registry import Registry

Ramp = Callable[[float], float]  # progress through the selecting epochs, in (0, 1] -> share


def constant(progress: float) -> float:
    return 1.0


def linear(progress: float) -> float:
    return progress


RAMPS: Registry[Ramp] = Registry("filter-ratio ramp")
for _ramp in (constant, linear):
    RAMPS.register(_ramp.__name__)(lambda r=_ramp: r)


@dataclass(frozen=True)
class SelectionSchedule:
    """The filter ratio of each epoch of an ``epochs``-epoch run."""

    filter_ratio: float
    epochs: int
    select_from: float = 0.0
    select_until: float = 1.0
    ramp: str = "constant"

    def __post_init__(self) -> None:
        check_schedule(self.select_from, self.select_until, self.epochs)
        RAMPS.get(self.ramp)  # an unknown name fails here, listing the valid ones

    @property
    def window(self) -> tuple[int, int]:
        """[first, stop): the epochs that select."""
        return selecting_window(self.select_from, self.select_until, self.epochs)

    @property
    def is_default(self) -> bool:
        return (self.select_from, self.select_until, self.ramp) == (0.0, 1.0, "constant")

    def ratio(self, epoch: int) -> float:
        first, stop = self.window
        if not first <= epoch < stop:
            return 0.0
        progress = (epoch - first + 1) / (stop - first)
        return self.filter_ratio * RAMPS.build(self.ramp)(progress)


def selecting_window(select_from: float, select_until: float, epochs: int) -> tuple[int, int]:
    return round(select_from * epochs), round(select_until * epochs)


def check_schedule(select_from: float, select_until: float, epochs: int) -> None:
    """Both fractions in range, and at least one selecting epoch between them."""
    if not 0.0 <= select_from < 1.0:
        raise InvalidInput(f"train.select_from={select_from} must be in [0, 1)")
    if not 0.0 < select_until <= 1.0:
        raise InvalidInput(f"train.select_until={select_until} must be in (0, 1]")
    if select_from >= select_until:
        raise InvalidInput(
            f"train.select_from={select_from} must be below train.select_until={select_until}: "
            "selection runs from the one to the other"
        )
    first, stop = selecting_window(select_from, select_until, epochs)
    if first >= stop:
        raise InvalidInput(
            f"train.select_from={select_from} and train.select_until={select_until} round to "
            f"epoch {first} of {epochs} both: no epoch selects; widen the window"
        )
