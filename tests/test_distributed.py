"""torchrun with two CPU processes (gloo): semantics, one writer, failures, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.dist, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


def torchrun(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SALN_DIST_TIMEOUT_S": "60", "PYTHONPATH": str(HERE.parent)}
    with tempfile.TemporaryDirectory(prefix="saln-torchrun-") as logs:  # not /tmp/torchelastic_*
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            f"--log-dir={logs}",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def scenario(
    name: str, out: Path, ok: bool = True
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    done = torchrun([str(HERE / "dist_worker.py"), name, str(out)])
    if ok:
        # enough of both streams to see what a rank printed before torchrun's own summary
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-8000:]
        return done, json.loads((out / "result.json").read_text())
    return done, {}


def test_two_ranks_in_one_process_group(tmp_path: Path) -> None:
    """The passing scenarios share one torchrun launch (each costs seconds to start)."""
    _, result = scenario("together", tmp_path)
    check_every_method_trains(result["all_methods"], tmp_path / "all_methods")
    check_global_selection(result["global_select"])
    check_sharded_features(result["features"], tmp_path)
    assert result["bad_steps"]["bad_step"] == [1, 1]  # the earliest non-finite step of any rank
    curator = result["curator"]
    assert curator["same_as_saln_train"] == [True, True] and curator["same_plan_on_both_ranks"]
    assert curator["planned"] < curator["train_rows"]  # losses of both ranks: some pruned
    assert curator["proxy"] == {"same_weights": True, "trained": True, "disjoint_rows": True}
    accelerate = result["accelerate"]
    assert accelerate["same_as_torchrun"] == [True] * 6 and accelerate["same_plan_on_both_ranks"]
    assert all("dealt to another process" in why for why in accelerate["refused"])
    # Mismatched configs are refused at start, on every rank, before anything is written (a
    # rank failing mid-run is test_a_failing_rank_ends_the_job_with_its_error_and_resumes's).
    mismatch = result["mismatch"]
    assert "ranks [1] were started with a config that differs from rank 0's" in (
        mismatch["refused"] or "nothing refused"
    )
    assert not mismatch["wrote"]


def check_every_method_trains(result: dict[str, Any], out: Path) -> None:
    from tests.dist_worker import DISTRIBUTED_METHODS

    for method in DISTRIBUTED_METHODS:
        assert result[method]["final_val_loss"] < result[method]["initial_val_loss"] - 0.3, (
            method,
            result[method],
        )
    # 1008 training rows, super-batches of 56: 18 per epoch, 9 per rank; 11 kept of each.
    assert result["saln"]["examples"] == [18 * 11] * 5
    assert result["loss"]["examples"] == [18 * 11] * 5
    assert result["standard"]["examples"] == [1008] * 5
    assert not (out / "saln" / ".write-test").exists()


def check_global_selection(result: dict[str, Any]) -> None:
    """Global mode selects exactly the set one process selects on the union."""
    for name, got in result.items():
        assert got["distributed"] == got["single"], name
        assert sum(got["scales"]) == pytest.approx(2.0)  # shares add up to the whole


def check_sharded_features(result: dict[str, Any], tmp_path: Path) -> None:
    """Sharded extraction writes the cache one process writes."""
    from saln.data import build_dataset
    from saln.features import extract_features

    single = extract_features(
        build_dataset("digits").train,
        "pixels",
        image_size=8,
        cache_dir=tmp_path / "single",
        progress=False,
    )
    sharded = np.load(result["path"])
    assert sharded.shape == single.array.shape
    assert np.array_equal(sharded, np.asarray(single.array))
    assert not list((tmp_path / "features" / "sharded").glob(".*part*"))  # parts removed


def test_one_process_trains_the_same_examples_per_epoch(tmp_path: Path) -> None:
    from saln.train import fit
    from tests.dist_worker import tiny

    fit(tiny(tmp_path, "saln"), tmp_path / "single")
    rows = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["examples"] for r in rows] == [18 * 11] * 3


def test_a_failing_rank_ends_the_job_with_its_error_and_resumes(tmp_path: Path) -> None:
    """Rank 1 fails mid-epoch: the job ends with its error (rank 0 does not wait in its
    collective), and the run resumed under torchrun ends as the uninterrupted one."""
    from saln.config import ConfigError
    from saln.train import fit
    from tests.dist_worker import tiny

    config = tmp_path / "c.yaml"
    config.write_text(tiny(tmp_path, "saln").to_yaml())
    train = ["-m", "saln", "train", "--config", str(config)]
    start = time.monotonic()
    done, _ = scenario("killed", tmp_path, ok=False)  # "whole" uninterrupted, "run" failed
    assert time.monotonic() - start < 120
    assert done.returncode != 0 and "injected failure on rank 1" in done.stderr
    assert (tmp_path / "whole" / "summary.json").exists()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(
        ConfigError, match=r"checkpointed with 2 process\(es\) and is resumed with 1"
    ):
        fit(tiny(tmp_path, "saln"), tmp_path / "run", resume=True)  # one process, this one
    resumed = torchrun([*train, "--out", str(tmp_path / "run"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [
        [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in ("whole", "run")
    ]
    for key in ("train_loss", "val_loss", "examples", "distinct_trained_total"):
        assert [r[key] for r in rows[0]] == [r[key] for r in rows[1]], key


def test_compare_launches_each_run_through_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saln.experiments.compare import run_comparison
    from tests.dist_worker import tiny

    monkeypatch.setenv("SALN_DIST_TIMEOUT_S", "60")  # the ranks inherit it
    config = tiny(tmp_path, "saln", **{"train.epochs": 1})
    report = run_comparison(config, ["saln"], [0], tmp_path / "cmp", nproc=2)
    summary = json.loads((tmp_path / "cmp" / "runs" / "saln-seed0" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["examples_trained"] == 18 * 11
    assert Path(report["report"]).exists()


def processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and text in command:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_a_comparison_stops_its_torchrun_and_ranks(tmp_path: Path) -> None:
    from saln.runs.lock import OWNER_FILE, writing
    from tests.dist_worker import tiny

    config = tmp_path / "c.yaml"
    config.write_text(tiny(tmp_path, "uniform", **{"train.epochs": 200}).to_yaml())
    out = tmp_path / "cmp"
    compare = subprocess.Popen(
        [sys.executable, "-m", "saln", "compare", "--config", str(config), "--methods",
         "uniform", "--nproc", "2", "--out", str(out)],
        env={**os.environ, "SALN_DIST_TIMEOUT_S": "60"}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    run = out / "runs" / "uniform-seed0"
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # training has begun: torchrun and both ranks are up
    assert (run / OWNER_FILE).exists(), "the ranks never started"
    assert len(processes_naming(str(run))) >= 3  # torchrun and two ranks
    compare.kill()
    compare.wait()
    deadline = time.monotonic() + 30
    while processes_naming(str(run)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_naming(str(run)) == []
    with writing(run, "a test"):  # nothing holds or writes the folder any more
        rows = len((run / "metrics.jsonl").read_text().splitlines())
        time.sleep(1)  # many epochs' time: a rank still training would have written one
        assert len((run / "metrics.jsonl").read_text().splitlines()) == rows
    # The killed launcher could not remove its scratch folder: the next launch does.
    from saln.experiments.launch import SCRATCH, remove_stale_scratch

    assert list(Path(tempfile.gettempdir()).glob(f"{SCRATCH}*"))
    remove_stale_scratch()
    assert not list(Path(tempfile.gettempdir()).glob(f"{SCRATCH}*"))
