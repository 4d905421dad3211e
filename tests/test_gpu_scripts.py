"""The GPU session's scripts, run on CPU: a lease is too scarce to find a broken script in."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from tools import gpu_compare, publish_cifar10

from saln.runs.records import EpochRecord

ROOT = Path(__file__).resolve().parents[1]


def script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_comparison_runs_unattended_and_records_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import saln.report.build

    out = tmp_path / "compare"
    common: list[str | Path] = [
        "--out", out, "--config", ROOT / "configs" / "demo.yaml", "--methods", "uniform",
        "--seeds", "0", "--device", "cpu", "--skip-features", "--set", "train.epochs=1",
    ]  # fmt: skip
    comparing(*common, "--parallel", "2", "--deadline", "400")  # the runs are subprocesses
    jobs = json.loads((out / "jobs.json").read_text())
    assert [j["outcome"] for j in jobs["jobs"]] == ["done"] * 2
    # "--graphs default" leaves the library's auto, which is off on CPU.
    assert jobs["settings"] == ["train.device=cpu", "train.epochs=1"]
    for convention in ("cifar10_paper", "cifar10_fixed_batch"):
        assert (out / convention / "report.md").exists()
    # The calls below train nothing, and skip the figures to check what is trained, packed
    # and published.
    monkeypatch.setattr(saln.report.build, "draw", lambda runs, out, target: ({}, []))
    comparing(*common)
    rerun = json.loads((out / "jobs.json").read_text())["jobs"]
    assert {j["outcome"] for j in rerun} == {"complete before this call"}
    assert all(j["seconds"] > 0 for j in rerun)  # earlier wall times kept as estimates
    # The archive holds the complete runs without checkpoints; a fresh folder unpacks it and
    # trains nothing again.
    archive = tmp_path / "runs.tar.xz"
    comparing(*common, "--pack", archive)
    with tarfile.open(archive) as packed_runs:
        names = packed_runs.getnames()
    assert "jobs.json" in names and "cifar10_paper/runs/uniform-seed0/summary.json" in names
    assert not [n for n in names if n.endswith(".pt") or n.endswith("report.md")]
    fresh = [c if c != out else tmp_path / "fresh" for c in common]
    comparing(*fresh, "--archive", archive)
    again = json.loads((tmp_path / "fresh" / "jobs.json").read_text())["jobs"]
    assert {j["outcome"] for j in again} == {"complete before this call"}
    # Publishing (in this process: it trains nothing): refused while runs are missing, then
    # the reports rebuilt from the archive.
    publish = [
        "--archive", archive, "--out", tmp_path / "docs", "--runs", tmp_path / "unpacked",
    ]  # fmt: skip
    refused = publishing(*publish, "--methods", "uniform,saln", "--seeds", "0")
    assert refused.returncode == 2 and "cifar10_paper/saln-seed0" in refused.stderr
    done = publishing(*publish, "--methods", "uniform", "--seeds", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("paper", "fixed_batch"):
        summary = json.loads((tmp_path / "docs" / name / "summary.json").read_text())
        assert list(summary["methods"]) == ["uniform"]
        env = json.loads((tmp_path / "docs" / name / "env.json").read_text())
        assert list(env["settings"].values()) == [["uniform-seed0"]]
        assert summary["runs"] == [f"{tmp_path}/unpacked/cifar10_{name}/runs/uniform-seed0"]
    (tmp_path / "unpacked" / "mine.txt").write_text("not from the archive")
    kept = publishing(*publish, "--methods", "uniform", "--seeds", "0")
    assert kept.returncode != 0 and "mine.txt" in kept.stderr
    assert (tmp_path / "unpacked" / "mine.txt").exists()


def comparing(*args: str | Path) -> None:
    """``python -m tools.gpu_compare ARGS`` in this process, quietly."""
    with contextlib.redirect_stdout(io.StringIO()):
        gpu_compare.main([str(a) for a in args])


def publishing(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m tools.publish_cifar10 ARGS``, run in this process: its exit code and stderr."""
    errors = io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            publish_cifar10.main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code
    if isinstance(code, str):  # sys.exit("message") prints it and exits 1
        errors.write(code)
        code = 1
    return subprocess.CompletedProcess(args, code or 0, "", errors.getvalue())


@pytest.mark.slow
def test_the_gpu_benchmark_computes_every_ratio(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = script(
        "-m", "benchmarks.bench_gpu", "--smoke", "--data", cifar_root, "--out", out,
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ratios = json.loads(out.read_text())["results"]["16px"]
    for key in (
        "standard_throughput_ratio",
        "saln_vs_standard_fixed_learner_batch",
        "saln_vs_standard_paper_convention",
        "selection_share_of_saln_epoch",
    ):
        assert ratios[key] > 0


@pytest.mark.slow
def test_the_selection_profile_names_where_the_time_goes(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    done = script("-m", "benchmarks.profile_selection", "--out", out, "--calls", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    smoke = json.loads(out.read_text())["smoke"]
    assert smoke["epoch_ms_unprofiled"] > 0
    names = {row["name"] for row in smoke["by_host_time"]}
    assert "aten::sort" in names, names  # the priority order: every selection's torch op


def write_run(out: Path, method: str, seed: int, epochs: int, complete: bool) -> None:
    run = gpu_compare.run_dir(out, method, seed)
    run.mkdir(parents=True)
    record = {f.name: 0 for f in fields(EpochRecord) if f.default is MISSING}
    rows = (json.dumps({**record, "epoch": e + 1}) + "\n" for e in range(epochs))
    (run / "metrics.jsonl").write_text("".join(rows))
    if complete:
        (run / "summary.json").write_text("{}")


def test_a_stopped_run_is_expected_to_take_only_its_epochs_left(tmp_path: Path) -> None:
    out = tmp_path / "cifar10_paper"
    write_run(out, "saln", 0, epochs=20, complete=True)
    write_run(out, "saln", 1, epochs=5, complete=False)  # stopped by an earlier call
    assert gpu_compare.share_left(out, "saln", 1) == 0.75
    assert gpu_compare.share_left(out, "saln", 2) == 1.0  # not started
    assert gpu_compare.share_left(out, "uniform", 1) == 1.0  # nothing like it finished
    jobs = [gpu_compare.Job("cifar10_paper", s, "saln") for s in (0, 1, 2)]
    earlier = {"cifar10_paper/saln-seed0": 200.0}
    assert gpu_compare.expected_seconds(jobs[1], jobs, earlier, 0.75) == 150.0
    assert gpu_compare.expected_seconds(jobs[2], jobs, earlier) == 200.0
    other = gpu_compare.Job("cifar10_paper", 1, "uniform")
    assert gpu_compare.expected_seconds(other, jobs, earlier) is None


def test_runs_an_earlier_call_started_are_resumed_before_new_ones(tmp_path: Path) -> None:
    out = tmp_path / "cifar10_fixed_batch"
    write_run(out, "saln", 0, epochs=20, complete=True)
    write_run(out, "saln", 2, epochs=8, complete=False)  # started under --then, then stopped
    write_run(out, "jest", 2, epochs=3, complete=False)  # stopped, and no jest run is complete
    jobs = [gpu_compare.Job("cifar10_fixed_batch", s, m) for s in (1, 2) for m in ("jest", "saln")]
    started = {job.name for job in jobs if gpu_compare.has_started(tmp_path, job)}
    order = [job.name for job in gpu_compare.resumed_first(jobs, started)]
    assert order == [
        "cifar10_fixed_batch/jest-seed2",
        "cifar10_fixed_batch/saln-seed2",
        "cifar10_fixed_batch/jest-seed1",
        "cifar10_fixed_batch/saln-seed1",
    ]


def test_a_later_call_on_the_warm_machine_lets_longer_runs_start(tmp_path: Path) -> None:
    """With --then, a run that cannot end by this call's deadline but can by the next call's
    starts now (it resumes there); without it, its slot is left to runs that can end."""
    started: list[str] = []

    def launch(job: gpu_compare.Job) -> None:
        started.append(job.method)
        job.process = subprocess.Popen([sys.executable, "-c", "pass"])
        job.started = gpu_compare.time.monotonic()

    def estimate(job: gpu_compare.Job) -> float:
        return {"long": 30.0, "short": 0.5}[job.method]

    def pool(then: float) -> list[str]:
        started.clear()
        jobs = [gpu_compare.Job("cifar10_paper", 0, m) for m in ("long", "short")]
        deadline = gpu_compare.time.monotonic() + 5
        gpu_compare.run_pool(jobs, launch, 2, deadline, deadline, estimate, then=then)
        return started

    assert pool(then=0) == ["short"]
    assert pool(then=60) == ["long", "short"]


def test_unpacking_keeps_what_this_machine_already_has(tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    write_run(packed / "cifar10_paper", "saln", 0, epochs=2, complete=True)
    (packed / "jobs.json").write_text("earlier lease")
    archive = tmp_path / "runs.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for path in sorted(p for p in packed.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(packed).as_posix())
    out = tmp_path / "warm"
    out.mkdir()
    (out / "jobs.json").write_text("this lease's first call")
    gpu_compare.unpack(archive, out)
    assert (out / "jobs.json").read_text() == "this lease's first call"
    assert (gpu_compare.run_dir(out / "cifar10_paper", "saln", 0) / "summary.json").exists()


def test_every_seed_of_the_papers_convention_comes_before_the_second_table() -> None:
    names = [job.name for job in gpu_compare.job_order([0, 1], ["saln", "uniform"])]
    assert names == [
        "cifar10_paper/saln-seed0",
        "cifar10_paper/uniform-seed0",
        "cifar10_paper/saln-seed1",
        "cifar10_paper/uniform-seed1",
        "cifar10_fixed_batch/saln-seed0",
        "cifar10_fixed_batch/uniform-seed0",
        "cifar10_fixed_batch/saln-seed1",
        "cifar10_fixed_batch/uniform-seed1",
    ]


def test_the_spectral_study_trains_the_ratios_the_cpu_sweeps_lacked_first() -> None:
    study = gpu_compare.STUDIES["spectral"]
    jobs = gpu_compare.job_order([0], ["ignored"], study)
    assert [j.name for j in jobs[:2]] == [
        "plain/ratio-0.9/uniform-seed0",
        "plain/ratio-0.9/saln-seed0",
    ]
    assert jobs[-1].name == "plain/full/standard-seed0"  # saln sweep's folder for standard
    assert len(jobs) == 3 * 2 * len(gpu_compare.SPECTRAL_METHODS) + 1
    assert study["coverage/ratio-0.5"].sets == ("train.filter_ratio=0.5", "train.coverage=true")


def test_the_archive_keeps_what_the_reports_read(tmp_path: Path) -> None:
    for method in ("saln", "spectral"):
        write_run(tmp_path / "plain/ratio-0.8", method, 0, epochs=1, complete=True)
        run = gpu_compare.run_dir(tmp_path / "plain/ratio-0.8", method, 0)
        (run / "spectral.json").write_text("[]")
        (run / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "jobs.json").write_text("{}")
    archive = tmp_path / "runs.tar.xz"
    gpu_compare.pack(tmp_path, archive, gpu_compare.STUDIES["spectral"])
    with tarfile.open(archive) as packed_runs:
        names = set(packed_runs.getnames())
    assert "plain/ratio-0.8/runs/saln-seed0/spectral.json" in names  # the report plots it
    assert "plain/ratio-0.8/runs/spectral-seed0/spectral.json" not in names
    assert "plain/ratio-0.8/runs/spectral-seed0/summary.json" in names
    assert not [n for n in names if n.endswith(".pt")]
