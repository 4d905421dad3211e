"""Run records: typed epoch records and summaries that round-trip through their JSON files."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from saln.errors import UserError
from saln.runs import RunStore
from saln.runs.records import EpochRecord, RecordError, RunSummary


def required(record: type[EpochRecord] | type[RunSummary]) -> dict[str, object]:
    return {
        f.name: 1 for f in fields(record) if f.default is MISSING and f.default_factory is MISSING
    }


def test_records_round_trip_and_leave_out_what_was_not_measured() -> None:
    record = EpochRecord(**{**required(EpochRecord), "gap_median": 0.5})  # type: ignore[arg-type]
    data = record.to_dict()
    assert "top_entry_mass_median" not in data and data["gap_median"] == 0.5
    assert EpochRecord.from_dict(data) == record
    summary = RunSummary(**required(RunSummary))  # type: ignore[arg-type]
    assert RunSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_a_record_from_an_older_version_loads_with_defaults_and_ignores_dropped_keys() -> None:
    old = {**required(RunSummary), "a_key_no_longer_written": 3}
    summary = RunSummary.from_dict(old)
    assert summary.one_off == {} and summary.convention == "paper" and summary.world_size == 1


def test_a_run_missing_a_core_field_says_how_to_re_run_it(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.path.mkdir()
    summary = required(RunSummary)
    del summary["test_acc_best"]
    store.file("summary.json").write_text(json.dumps(summary))
    with pytest.raises(RecordError, match=r"lacks test_acc_best.*re-run that run with --overwrite"):
        store.summary()
    row = required(EpochRecord)
    del row["val_acc"]
    store.file("metrics.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=r"metrics.jsonl line 1 lacks val_acc"):
        store.metrics()


def test_metrics_append_and_rewrite_through_records(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.path.mkdir()
    records = [EpochRecord(**{**required(EpochRecord), "epoch": e}) for e in (1, 2)]  # type: ignore[arg-type]
    for record in records:
        store.append_metrics(record)
    assert store.metrics() == records
    store.rewrite_metrics(records[:1])
    assert store.metrics() == records[:1]


def test_the_split_is_written_by_rank_0_once_and_a_resume_checks_it(tmp_path: Path) -> None:
    """Every rank wrote split.json, and a resume rewrote it: a changed dataset then trained on
    a new split with nothing on record."""
    split = {"train": [0, 2], "val": [1], "reference": [], "seed": 0}
    data = {"train": {"name": "x", "count": 3, "classes": 2, "content_sha256": "a"}}
    RunStore(tmp_path / "a", writer=False).record_data(data, split)
    assert not (tmp_path / "a").exists()  # not written by another rank
    writer = RunStore(tmp_path / "a")
    (tmp_path / "a").mkdir()
    writer.record_data(data, split)
    assert json.loads((tmp_path / "a" / "split.json").read_text()) == split
    writer.check_data(data, split)  # the same data: fine
    with pytest.raises(UserError, match=r"no longer gives the split this run recorded"):
        writer.check_data(data, {**split, "train": [2, 0]})
    grown = {"train": {**data["train"], "count": 4, "classes": 3}}
    with pytest.raises(UserError, match=r"other data: train images 3 -> 4; train classes 2 -> 3"):
        writer.check_data(grown, split)
    swapped = {"train": {**data["train"], "content_sha256": "b"}}
    with pytest.raises(UserError, match=r"train files or labels changed \(same count\)"):
        writer.check_data(swapped, split)
    writer.record_data(grown, {**split, "train": [2, 0]})  # never rewritten
    assert json.loads((tmp_path / "a" / "split.json").read_text()) == split
    assert json.loads((tmp_path / "a" / "data.json").read_text()) == data
