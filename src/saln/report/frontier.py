"""Standard's compute frontier: test accuracy against total time, from standard's full run and
its shorter runs (``standard_matched@F``: a share F of the epochs, the schedule fully decayed).

A method pays only if it lies above that curve at its own total time. Per seed, the frontier's
accuracy at the method's time is interpolated linearly between the seed's frontier points
(held at the nearest point outside their range: a method faster than the shortest point is
held to that point's accuracy, one slower than standard to standard's); the method's
accuracies and these are compared by Welch's test over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from saln.report.significance import VERDICT_ALPHA, Stat, welch_p_value

Point = tuple[float, float]  # (total seconds, test accuracy)


def frontier_at(points: Sequence[Point], seconds: float) -> float:
    """The frontier's accuracy at ``seconds``: linear between its points, flat outside them."""
    times, accuracies = zip(*sorted(points), strict=True)
    return float(np.interp(seconds, times, accuracies))


def frontier_verdict(
    method: Mapping[int, Point], frontier: Mapping[int, Sequence[Point]]
) -> dict[str, Any]:
    """``method``'s (time, accuracy) per seed against the frontier of the same seeds: the mean
    difference in accuracy, Welch's p over seeds, and above / on / below (p < VERDICT_ALPHA)."""
    seeds = [s for s in sorted(method) if len(frontier.get(s, ())) >= 2]
    ours = [method[s][1] for s in seeds]
    theirs = [frontier_at(frontier[s], method[s][0]) for s in seeds]
    if not seeds:
        return {"difference": None, "p": None, "verdict": "no frontier", "seeds": []}
    difference = float(np.mean(ours) - np.mean(theirs))
    result = {"difference": difference, "p": None, "frontier_acc": theirs, "seeds": seeds}
    if len(seeds) < 2:
        return {**result, "verdict": "no verdict (needs >= 2 seeds)"}
    p = welch_p_value(Stat(tuple(ours)), Stat(tuple(theirs)))
    verdict = "on" if p >= VERDICT_ALPHA else ("above" if difference > 0 else "below")
    return {**result, "p": p, "verdict": verdict}
