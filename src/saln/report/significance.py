"""Statistics over seeds: a value's mean and spread, and Welch's test between two of them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev
from typing import Any

from scipy import stats

# A verdict needs p < 0.05 in a two-sided Welch t-test on the seeds' values. (A fixed "2
# standard errors" rule ignores how few seeds there are: at 3 seeds it calls a difference at
# about 90% confidence, and such verdicts flipped between reruns.)
VERDICT_ALPHA = 0.05


@dataclass(frozen=True)
class Stat:
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return mean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return stdev(self.values) if len(self.values) > 1 else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": None if math.isnan(self.std) else self.std,
            "n": len(self.values),
        }


def welch_p_value(a: Stat, b: Stat) -> float:
    """Two-sided p-value of Welch's t-test for equal means (unequal variances). Needs >= 2
    values on each side."""
    if a.std == 0 and b.std == 0:  # every seed agreed on both sides: the difference is exact
        return 1.0 if a.mean == b.mean else 0.0
    return float(stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)
