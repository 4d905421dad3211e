"""Selection schedules: warm-up, annealing and a ratio ramp, for any selector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from saln import config as cfg
from saln.experiments.compare import run_comparison
from saln.selection.schedule import SelectionSchedule
from saln.train import fit
from tests.test_train import tiny


def test_the_default_schedule_selects_every_epoch_at_the_full_ratio() -> None:
    schedule = SelectionSchedule(0.8, 5)
    assert schedule.is_default and [schedule.ratio(e) for e in range(5)] == [0.8] * 5


def test_warm_up_and_annealing_train_everything_outside_the_window() -> None:
    schedule = SelectionSchedule(0.8, 10, select_from=0.2, select_until=0.9)
    assert schedule.window == (2, 9)
    assert [schedule.ratio(e) for e in range(10)] == [0.0] * 2 + [0.8] * 7 + [0.0]


def test_a_linear_ramp_reaches_the_full_ratio_in_the_last_selecting_epoch() -> None:
    schedule = SelectionSchedule(0.8, 6, select_from=0.5, ramp="linear")
    ratios = [schedule.ratio(e) for e in range(6)]
    assert ratios == pytest.approx([0, 0, 0, 0.8 / 3, 1.6 / 3, 0.8])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"train.select_from": 0.5, "train.select_until": 0.5}, r"select_from=0\.5 must be below"),
        ({"train.select_from": 1.0}, r"train\.select_from=1\.0 must be in \[0, 1\)"),
        ({"train.select_until": 0.0}, r"train\.select_until=0\.0 must be in \(0, 1\]"),
        ({"train.select_from": 0.4, "train.select_until": 0.45}, "no epoch selects"),
        ({"train.ratio_ramp": "cubic"}, "unknown filter-ratio ramp 'cubic'; valid names"),
    ],
)
def test_a_bad_schedule_is_refused_before_any_training(
    tmp_path: Path, overrides: dict[str, object], match: str
) -> None:
    config = tiny(tmp_path, "uniform", **overrides)
    with pytest.raises(cfg.ConfigError, match=match):
        fit(config, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("method", ["standard", "standard_matched", "infobatch"])
def test_a_schedule_for_a_method_without_a_selector_names_the_keys(
    tmp_path: Path, method: str
) -> None:
    config = tiny(tmp_path, method, **{"train.select_from": 0.5})
    with pytest.raises(cfg.ConfigError, match=rf"select_from.*{method!r} has none"):
        fit(config, tmp_path / "run")


def test_a_schedule_with_a_fixed_learner_batch_is_refused(tmp_path: Path) -> None:
    config = tiny(tmp_path, "loss", **{"train.select_from": 0.5, "train.learner_batch_size": 10})
    with pytest.raises(cfg.ConfigError, match="learner_batch_size fixes them"):
        fit(config, tmp_path / "run")


def _epochs(run: Path) -> list[dict[str, float]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["uniform", "loss"])  # chosen in the sampler; in the step
def test_a_run_trains_every_row_outside_its_window_and_the_ramp_inside(
    tmp_path: Path, method: str
) -> None:
    overrides = {"train.epochs": 4, "train.select_from": 0.25, "train.select_until": 0.75}
    fit(tiny(tmp_path, method, **overrides, **{"train.ratio_ramp": "linear"}), tmp_path / "run")
    rows = _epochs(tmp_path / "run")
    steps = rows[0]["steps"]  # batches of 50: 20 full, a short one of 5 rows (keeps >= 2)
    assert [r["filter_ratio"] for r in rows] == pytest.approx([0.0, 0.4, 0.8, 0.0])
    assert [r["examples"] for r in rows] == [1005, 20 * 30 + 3, 20 * 10 + 2, 1005]
    assert all(r["steps"] == steps for r in rows)


def test_a_comparison_schedules_its_selectors_and_trains_standard_as_always(
    tmp_path: Path,
) -> None:
    config = tiny(tmp_path, "standard", **{"train.select_from": 0.5})
    run_comparison(config, ["standard", "uniform"], [0], tmp_path / "cmp")
    runs = tmp_path / "cmp" / "runs"
    standard, uniform = _epochs(runs / "standard-seed0"), _epochs(runs / "uniform-seed0")
    assert [r["examples"] for r in standard] == [1005, 1005]
    assert [r["examples"] for r in uniform] == [1005, 20 * 10 + 2]
    saved = yaml.safe_load((runs / "standard-seed0" / "config.yaml").read_text())
    assert saved["train"]["select_from"] == 0.0


def test_a_comparison_whose_schedule_applies_to_no_method_is_refused(tmp_path: Path) -> None:
    config = tiny(tmp_path, "standard", **{"train.select_until": 0.5})
    with pytest.raises(cfg.ConfigError, match="none of --methods standard,infobatch has one"):
        run_comparison(config, ["standard", "infobatch"], [0], tmp_path / "cmp")
    assert not (tmp_path / "cmp" / "runs").exists()
