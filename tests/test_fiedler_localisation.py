"""benchmarks/fiedler_localisation.py: top-entry mass from old and new spectral records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmarks import fiedler_localisation as fl


def saln_run(tmp_path: Path, record: dict[str, list[float]]) -> Path:
    run = tmp_path / "runs" / "saln-seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("train:\n  batch_size: 8\n  filter_ratio: 0.5\n")
    (run / "spectral.json").write_text(json.dumps(record))
    return run


def test_an_old_record_is_grouped_by_batch_from_the_kept_rows(tmp_path: Path) -> None:
    localised = np.sqrt([0.9, 0.05, 0.03, 0.02])  # a unit vector's 4 kept of 8 entries
    even = np.full(4, np.sqrt(1 / 8))
    kept = np.concatenate([localised, even]) * np.sqrt(8)  # as recorded: |v| x sqrt(n)
    run = saln_run(tmp_path, {"gaps": [0.1, 0.2], "abs_fiedler_kept": kept.tolist()})
    assert fl.top_mass_of_run(run) == pytest.approx([0.9, 1 / 8])
    assert fl.summarise(fl.top_mass_of_run(run))["share_above_half"] == 0.5


def test_a_truncated_old_record_is_refused_and_a_new_one_read_as_is(tmp_path: Path) -> None:
    run = saln_run(tmp_path / "a", {"gaps": [0.1, 0.2], "abs_fiedler_kept": [1.0] * 5})
    with pytest.raises(SystemExit, match="truncated"):
        fl.top_mass_of_run(run)
    new = saln_run(tmp_path / "b", {"gaps": [0.1], "top_entry_mass": [0.7]})
    assert fl.top_mass_of_run(new).tolist() == [0.7]


def test_the_oracle_finds_the_one_weakly_linked_sample() -> None:
    rows = np.tile([1.0, 0.0], (63, 1)) + np.random.default_rng(0).normal(0, 0.01, (63, 2))
    features = np.vstack([rows, [[0.1, 1.0]]]).astype(np.float32)  # row 63: the outlier
    found = fl.oracle(features, rows=64, batches=3, seed=0)  # every batch is the whole table
    assert found["share_top_is_least_connected"] == 1.0
    assert found["median"] > 0.95


def test_kept_overlaps_name_the_least_connected_rows_and_those_unlike_the_top() -> None:
    # Unit vectors at these angles: cosine similarity = cos(angle difference), all positive.
    # Row sums, by hand: 80 deg 3.43, 0 deg 4.73, 10 deg 5.12, ..., so the two least connected
    # rows are 5 and 0, and the row least similar to row 5 (80 deg) is row 0 (0 deg).
    angles = np.radians([0, 10, 20, 30, 40, 80])
    sim = fl.cosine(np.stack([np.cos(angles), np.sin(angles)], axis=1))
    assert fl.kept_overlaps(sim, np.array([5, 0])) == {
        "least_connected": 1.0,
        "top_and_least_similar_to_it": 1.0,
    }
    assert fl.kept_overlaps(sim, np.array([5, 1])) == {
        "least_connected": 0.5,
        "top_and_least_similar_to_it": 0.5,
    }
    # With row 0 on top, the row least similar to it is row 5: {0, 5} again.
    assert fl.kept_overlaps(sim, np.array([0, 5]))["top_and_least_similar_to_it"] == 1.0
    assert fl.kept_overlaps(sim, np.array([2, 3])) == {
        "least_connected": 0.0,
        "top_and_least_similar_to_it": 0.5,  # row 2's least similar row is 5, not 3
    }


def test_the_papers_variant_measures_what_the_numpy_oracle_does() -> None:
    """The repaired ranking with every repair off, on the same batches as the NumPy recipe."""
    from tests.conftest import clustered_features

    features = clustered_features(1, 300, 12, seed=5)[0]
    by_oracle = fl.oracle(features, 32, 40, seed=1)
    by_variant = fl.variants(features, 32, 40, seed=1)
    assert by_variant["paper"]["median"] == pytest.approx(by_oracle["median"], rel=1e-4)
    assert by_variant["paper"]["kept_vs_least_connected"] == pytest.approx(
        by_oracle["kept_vs_least_connected"]
    )
    assert set(by_variant) == {*fl.VARIANTS, "random_expected"}
