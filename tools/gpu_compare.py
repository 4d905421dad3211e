"""A study's runs on one GPU, every run as its own process, several at once.

    PYTHONPATH=src python -m tools.gpu_compare --out OUT --seeds 0,1,2 --parallel 14 \
        --deadline 420
    PYTHONPATH=src python -m tools.gpu_compare --study spectral \
        --config configs/cifar10_full_cpu.yaml --out OUT --seeds 0,1,2 --deadline 420

``--study paper`` (the default) is the paper's CIFAR-10 protocol; ``--study spectral`` is the
repaired-spectral study of ``tools/spectral_study.sh`` (every selector with and without
coverage at ratios 0.9, 0.5 and 0.8, then standard), in the folders ``saln sweep`` writes, so
``python -m tools.spectral_study OUT DOCS`` publishes it.

At the paper's batch (64 loaded, 12 trained) a ResNet-18 step is bound by kernel launches, not
by the GPU, so one process leaves most of an H100/H200 idle. This runs each
(convention, seed, method) as a separate ``saln train`` process, ``--parallel`` at a time, in
priority order: the paper's convention for every seed, then the fixed-learner-batch convention
(a second table). The features are extracted once before any run starts. A run
starts only if it can finish by the deadline, judged by the slowest finished run of its kind
(in this call, or in an earlier one's ``jobs.json``; without one, only in the first half of the
time), since a stopped run is lost to the next session. At the deadline, unfinished runs are
stopped, and each convention's report is rebuilt from the runs that finished. ``jobs.json``
records each run's wall time and outcome. Wall times of concurrent runs are not the runs' own
cost: read the per-epoch times in the report as "while sharing the GPU".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from benchmarks.common import machine, write_json

from saln.experiments.compare import DEFAULT_METHODS, run_dir
from saln.report.build import build_report
from saln.runs import RunStore


@dataclass(frozen=True)
class Convention:
    """One folder of runs: the overrides its runs share and, where the study fixes them, its
    methods (else the ``--methods`` given)."""

    sets: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None


SPECTRAL_METHODS = ("uniform", "saln", "spectral", "spectral_strata", "class_stratified")


def spectral_conventions(ratios: tuple[float, ...]) -> dict[str, Convention]:
    """``tools/spectral_study.sh``'s sweeps as folders (``saln sweep``'s layout): each ratio
    without and with coverage, then standard, which has no ratio."""
    folders: dict[str, Convention] = {}
    for ratio in ratios:
        at_ratio = f"train.filter_ratio={ratio:g}"
        folders[f"plain/ratio-{ratio:g}"] = Convention((at_ratio,), SPECTRAL_METHODS)
        folders[f"coverage/ratio-{ratio:g}"] = Convention(
            (at_ratio, "train.coverage=true"), SPECTRAL_METHODS
        )
    folders["plain/full"] = Convention((), ("standard",))
    return folders


# The ratios the CPU sweeps lacked first, so a short lease adds to what is published.
STUDIES: dict[str, dict[str, Convention]] = {
    "paper": {
        "cifar10_paper": Convention(),
        "cifar10_fixed_batch": Convention(("train.learner_batch_size=64",)),
    },
    "spectral": spectral_conventions((0.9, 0.5, 0.8)),
}
CONVENTIONS = STUDIES["paper"]


FINISHED = ("done", "complete before this call")


@dataclass
class Job:
    convention: str
    seed: int
    method: str
    started: float = 0.0
    seconds: float = 0.0
    outcome: str = "not started"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.convention}/{self.method}-seed{self.seed}"


def job_order(
    seeds: list[int], methods: list[str], conventions: dict[str, Convention] = CONVENTIONS
) -> list[Job]:
    """Each convention's every seed before the next convention (the paper's before the
    fixed-learner-batch one): a lease that ends early leaves the first table's seeds (and its
    verdicts) complete, not the second's."""
    return [
        Job(name, seed, method)
        for name, convention in conventions.items()
        for seed in seeds
        for method in convention.methods or methods
    ]


def resumed_first(jobs: list[Job], started: set[str]) -> list[Job]:
    """Runs an earlier call on this machine started (``started``: their names) ahead of the
    rest, each group in priority order: an earlier call started them with ``--then`` on the
    promise that this call resumes them, and a run left behind again is lost with the
    machine."""
    return sorted(jobs, key=lambda job: job.name not in started)


def has_started(out: Path, job: Job) -> bool:
    """Whether an earlier call trained an epoch of ``job`` (it resumes from its checkpoint)."""
    return bool(RunStore(run_dir(out / job.convention, job.method, job.seed)).metrics())


def command(job: Job, config: str, out: Path, sets: list[str]) -> list[str]:
    """One run, as ``saln compare`` would train it (its run directory, resumed if a stopped
    call left it unfinished), without the report a single-run comparison would render: the
    reports are built once, at the end. ``sets`` holds the convention's overrides too."""
    extra = [x for s in sets for x in ("--set", s)]
    folder = run_dir(out / job.convention, job.method, job.seed)
    resume = ["--resume"] if RunStore(folder).exists() else []  # --resume needs a run there
    return [
        sys.executable, "-m", "saln", "train", "--config", config,
        "--method", job.method, "--seed", str(job.seed),
        "--out", str(folder), *resume, "--no-progress", *extra,
    ]  # fmt: skip


def start(job: Job, config: str, out: Path, sets: list[str]) -> None:
    folder = job.convention.replace("/", "_")  # one flat folder of logs, packed whole
    log = out / "logs" / f"{folder}-{job.method}-seed{job.seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        job.process = subprocess.Popen(
            command(job, config, out, sets), stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    job.started, job.outcome = time.monotonic(), "running"
    print(f"start {job.name}", flush=True)


def reap(job: Job) -> bool:
    """True once the job's process has ended (its outcome recorded)."""
    assert job.process is not None
    code = job.process.poll()
    if code is None:
        return False
    job.seconds = time.monotonic() - job.started
    job.outcome = "done" if code == 0 else f"failed (exit {code})"
    print(f"{job.outcome}: {job.name} in {job.seconds:.0f} s", flush=True)
    return True


def stop(jobs: list[Job], grace: float = 10.0) -> None:
    """Stop the jobs together: each one's grace period runs alongside the others', so the
    time left for packing does not shrink with the number of runs still going."""
    for job in jobs:
        assert job.process is not None
        job.process.send_signal(signal.SIGTERM)
    ends = time.monotonic() + grace
    for job in jobs:
        assert job.process is not None
        try:
            job.process.wait(timeout=max(0.0, ends - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()
        job.seconds, job.outcome = time.monotonic() - job.started, "stopped at the deadline"
        print(f"stopped {job.name}", flush=True)


# The runs' CUDA-graph settings: "default" leaves the library's auto (on for one CUDA process).
GRAPH_SETTINGS = {
    "default": [],
    "on": ["train.cuda_graphs=true", "features.cuda_graph=true"],
    "off": ["train.cuda_graphs=false", "features.cuda_graph=false"],
}


def unpack(archive: Path, out: Path) -> None:
    """Earlier leases' complete runs and their jobs.json, so that none is trained again. A file
    already in ``out`` is kept: on a warm machine it is this lease's own, at least as new."""
    if archive.is_file():
        with tarfile.open(archive) as tar:
            fresh = [m for m in tar.getmembers() if not (out / m.name).exists()]
            tar.extractall(out, members=fresh, filter="data")


# xz -2: 7 s and 8.6 MB for 60 runs of the spectral study, where the default -6 took 46 s
# and 7.1 MB: the lease's last seconds are better spent training.
PACK_PRESET: Final = 2


def rebuilds_reports(path: Path) -> bool:
    """Whether a run's file is needed to rebuild its reports: not its checkpoints, and the
    per-batch spectral records only of ``saln`` runs (the one method whose report plots them;
    the repaired selectors' records were 40% of a packed spectral study: 8.6 MB, 5.1 without)."""
    if path.suffix == ".pt":
        return False
    method = path.parent.name.rpartition("-seed")[0]
    return path.name != "spectral.json" or method == "saln"


def pack(out: Path, archive: Path, conventions: Iterable[str] = CONVENTIONS) -> None:
    """jobs.json, the run logs and every complete run without its checkpoints, atomically. xz,
    because every run repeats one 340 KB split.json, which gzip's 32 KB window stores each time
    (6 MB for 16 runs, 0.5 MB with xz). Reports are left out: they are rebuilt from the runs."""
    members = [out / "jobs.json", *sorted((out / "logs").glob("*.log"))]
    for convention in conventions:
        for run in sorted((out / convention / "runs").glob("*")):
            if RunStore(run).is_complete():
                members += [f for f in sorted(run.iterdir()) if f.is_file() and rebuilds_reports(f)]
    partial = archive.with_name(archive.name + ".part")
    with tarfile.open(partial, "w:xz", preset=PACK_PRESET) as tar:
        for path in members:
            if path.is_file():
                tar.add(path, arcname=path.relative_to(out).as_posix())
    os.replace(partial, archive)


def earlier_seconds(out: Path) -> dict[str, float]:
    """Wall seconds of the runs earlier calls finished, by run name (their jobs.json)."""
    path = out / "jobs.json"
    rows = json.loads(path.read_text())["jobs"] if path.exists() else []
    return {r["run"]: r["seconds"] for r in rows if r["seconds"] and r["outcome"] in FINISHED}


def expected_seconds(
    job: Job, jobs: list[Job], earlier: dict[str, float], share: float = 1.0
) -> float | None:
    """How long ``job`` will take: the slowest finished run of its convention and method, in
    this call (the same sharing of the GPU) or else in an earlier one, times ``share``, the
    share of its epochs still to train (:func:`share_left`); None if none finished."""
    prefix = f"{job.convention}/{job.method}-seed"
    now = [j.seconds for j in jobs if j.outcome == "done" and j.name.startswith(prefix)]
    before = [seconds for name, seconds in earlier.items() if name.startswith(prefix)]
    return max(now or before) * share if now or before else None


def share_left(out: Path, method: str, seed: int) -> float:
    """The share of a run's epochs not yet in its metrics.jsonl (a run stopped by an earlier call
    on this machine resumes from its checkpoint), judged by a complete run of the same method
    (standard_matched trains fewer epochs than the config says); 1 if unknown."""
    done = len(RunStore(run_dir(out, method, seed)).metrics())
    runs = sorted((out / "runs").glob(f"{method}-seed*"))
    complete = [store for store in map(RunStore, runs) if store.is_complete()]
    total = len(complete[0].metrics()) if done and complete else 0
    return max(0.0, 1.0 - done / total) if total else 1.0


def run_pool(
    jobs: list[Job],
    launch: Callable[[Job], None],
    parallel: int,
    deadline: float,
    last_start: float,
    estimate: Callable[[Job], float | None] = lambda job: None,
    then: float = 0.0,
) -> None:
    """Keep ``parallel`` jobs running in order until all end or the deadline passes. A job is
    started only if it can finish: by ``estimate`` where a run like it has finished, else only
    before ``last_start``. A run stopped at the deadline is lost to the next session (its
    checkpoints are too large to carry), so its slot is better left to a shorter one, unless a
    later call on this warm machine (``then`` seconds long) resumes it: then a job may start if
    it can finish by ``deadline + then``."""

    def can_finish(job: Job, now: float) -> bool:
        seconds = estimate(job)
        return now < last_start if seconds is None else now + seconds <= deadline + then

    queue, running = list(jobs), list[Job]()
    while (queue or running) and time.monotonic() < deadline:
        running = [j for j in running if not reap(j)]
        now = time.monotonic()
        for job in [j for j in queue if can_finish(j, now)][: parallel - len(running)]:
            queue.remove(job)
            launch(job)
            running.append(job)
        if not running and not any(can_finish(j, now) for j in queue):
            break
        time.sleep(1.0)
    stop([job for job in running if not reap(job)])


def extract_features(config: str, sets: list[str]) -> None:
    """Once, before the runs: otherwise every saln run would extract the same features."""
    from saln import config as cfg

    c = cfg.load(config, dict(cfg.parse_override(s) for s in sets))
    f = c.features
    cmd = [
        sys.executable, "-m", "saln", "features", "--dataset", c.data.dataset,
        "--encoder", f.encoder, "--image-size", str(f.image_size), "--device", c.train.device,
        "--cache-dir", f.cache_dir, "--data-root", c.data.data_root,
    ]  # fmt: skip
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--study", choices=tuple(STUDIES), default="paper")
    parser.add_argument("--config", default="configs/paper_cifar10.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--parallel", type=int, default=14, help="runs at once")
    parser.add_argument("--deadline", type=float, default=420, help="seconds for everything")
    parser.add_argument(
        "--last-start",
        type=float,
        default=None,
        help="start no run in the final N seconds (default: half the deadline)",
    )
    parser.add_argument(
        "--then",
        type=float,
        default=0.0,
        help="seconds a later call on this warm machine will run: start runs that can finish "
        "by then (they resume there from their checkpoints)",
    )
    parser.add_argument("--set", action="append", default=[], help="config override for all")
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument(
        "--skip-reports", action="store_true", help="leave the reports to whoever publishes"
    )
    parser.add_argument(
        "--graphs",
        choices=tuple(GRAPH_SETTINGS),
        default="default",
        help="CUDA-graph settings of every run (default: the library's auto)",
    )
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to check the script")
    parser.add_argument(
        "--archive", type=Path, default=None, help="complete runs of earlier calls, unpacked first"
    )
    parser.add_argument("--pack", type=Path, default=None, help="write the complete runs here")
    args = parser.parse_args(argv)
    args.set = [
        f"train.device={args.device}",
        *GRAPH_SETTINGS[args.graphs],
        *args.set,
    ]
    began = time.monotonic()
    deadline = began + args.deadline
    last_start = deadline - (args.deadline / 2 if args.last_start is None else args.last_start)
    if args.archive is not None:
        unpack(args.archive, args.out)
    if not args.skip_features:
        extract_features(args.config, args.set)
    conventions = STUDIES[args.study]
    jobs = job_order([int(s) for s in args.seeds.split(",")], args.methods.split(","), conventions)
    earlier = earlier_seconds(args.out)
    for job in jobs:  # runs an earlier session finished (see gpu_session.sh) are not relaunched
        if RunStore(run_dir(args.out / job.convention, job.method, job.seed)).is_complete():
            job.outcome, job.seconds = FINISHED[1], earlier.get(job.name, 0.0)
    todo = [job for job in jobs if job.outcome == "not started"]
    # Read once: a queued run's files do not change until it starts.
    shares = {job.name: share_left(args.out / job.convention, job.method, job.seed) for job in todo}
    run_pool(
        resumed_first(todo, {job.name for job in todo if has_started(args.out, job)}),
        lambda job: start(
            job, args.config, args.out, [*conventions[job.convention].sets, *args.set]
        ),
        args.parallel,
        deadline,
        last_start,
        lambda job: expected_seconds(job, jobs, earlier, shares[job.name]),
        args.then,
    )
    rows = [{"run": j.name, "seconds": round(j.seconds, 1), "outcome": j.outcome} for j in jobs]
    write_json(
        {
            "benchmark": "gpu_compare",
            "machine": machine(),
            "study": args.study,
            "parallel": args.parallel,
            "settings": args.set,
            "wall_s": time.monotonic() - began,
            "jobs": rows,
        },
        args.out / "jobs.json",
    )
    if args.pack is not None:  # first: the archive holds no reports, and must not wait on one
        pack(args.out, args.pack, conventions)
    for convention in () if args.skip_reports else conventions:
        # a report changes only where a run finished just now
        if any(j.outcome == "done" and j.convention == convention for j in jobs):
            report = build_report([args.out / convention], args.out / convention)
            print(f"report: {report['report']}", flush=True)


if __name__ == "__main__":
    main()
