"""Nothing silently wrong: changed configs, concurrent writers, killed writers, full disks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from saln import config as cfg
from saln.errors import OutOfSpace
from saln.experiments.compare import run_comparison
from saln.experiments.sweep import run_sweep
from saln.io import FILE_MODE, remove_stale_temporaries, write_json_atomic
from saln.runs.lock import FolderInUse, writing
from saln.train import fit
from tests.test_train import tiny

ROOT = Path(__file__).resolve().parents[1]


def test_a_finished_run_of_another_config_is_refused_naming_what_differs(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    run_comparison(tiny(tmp_path, "uniform", **{"train.epochs": 1}), ["uniform"], [0], out)
    for setting, shown in (
        ({"train.epochs": 2}, "train.epochs: 1 -> 2"),
        ({"train.filter_ratio": 0.5}, "train.filter_ratio: 0.8 -> 0.5"),
        ({"optim.lr": 0.01}, "optim.lr: 0.05 -> 0.01"),
    ):
        changed = tiny(tmp_path, "uniform", **{"train.epochs": 1, **setting})
        with pytest.raises(cfg.ConfigError, match=f"{shown}.*--overwrite"):
            run_comparison(changed, ["uniform"], [0], out)
    # a cosmetic setting is the same run; --overwrite retrains the changed one
    quiet = tiny(tmp_path, "uniform", **{"train.epochs": 1, "train.tensorboard": True})
    assert run_comparison(quiet, ["uniform"], [0], out)["methods"]["uniform"]["seeds"] == [0]
    longer = tiny(tmp_path, "uniform", **{"train.epochs": 2})
    report = run_comparison(longer, ["uniform"], [0], out, overwrite=True)
    assert report["methods"]["uniform"]["steps"]["mean"] == 2 * 21  # 1005 rows: 20 x 50, 1 x 5


def test_a_sweep_refuses_a_finished_run_of_another_config(tmp_path: Path) -> None:
    base = tiny(tmp_path, "uniform", **{"train.epochs": 1})
    run_sweep(base, [0.8], ["uniform"], [0], tmp_path / "sweep")
    changed = tiny(tmp_path, "uniform", **{"train.epochs": 1, "optim.lr": 0.01})
    with pytest.raises(cfg.ConfigError, match=r"optim\.lr: 0\.05 -> 0\.01"):
        run_sweep(changed, [0.8], ["uniform"], [0], tmp_path / "sweep")


HOLD = """
import sys, time
from pathlib import Path
from saln.runs.lock import writing
with writing(Path(sys.argv[1]), "a test"):
    print("holding", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A folder held for writing by another process, which is SIGKILLed at the end."""
    folder = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
    yield folder, holder
    holder.kill()
    holder.wait()


def test_a_second_writer_fails_at_once_naming_the_folder_and_the_process(
    tmp_path: Path, held: tuple[Path, subprocess.Popen[str]]
) -> None:
    folder, holder = held
    started = time.monotonic()
    with pytest.raises(FolderInUse, match=f"{folder} is in use by process {holder.pid}"):
        fit(tiny(tmp_path, "uniform", **{"train.epochs": 1}), folder)
    with pytest.raises(FolderInUse, match="choose another --out"):
        run_comparison(tiny(tmp_path, "uniform"), ["uniform"], [0], folder)
    assert time.monotonic() - started < 5  # at once, not after a wait
    assert not (folder / "metrics.jsonl").exists()


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_run(
    tmp_path: Path, held: tuple[Path, subprocess.Popen[str]]
) -> None:
    folder, holder = held
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    summary = fit(tiny(tmp_path, "uniform", **{"train.epochs": 1}), folder)
    assert summary.method == "uniform"
    with writing(folder, "a test"):  # and it is released at the end
        pass


def test_temporary_files_of_killed_writes_are_removed_on_the_next_start(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    stale = [run / f".{name}.pid{dead}.x1y2.tmp" for name in ("summary.json", "checkpoint.pt")]
    mine = run / f".report.md.pid{os.getpid()}.abcd.tmp"  # a live writer's: kept
    for path in [*stale, mine]:
        path.write_text("half")
    fit(tiny(tmp_path, "uniform", **{"train.epochs": 1}), run)
    assert not any(p.exists() for p in stale) and mine.exists()
    cache = tmp_path / "cache"
    cache.mkdir()
    left = cache / f".digits.npy.pid{dead}.memmap.tmp"
    left.write_text("half")
    assert remove_stale_temporaries(cache) == [left]


def test_every_file_of_a_run_follows_one_permission_policy(tmp_path: Path) -> None:
    fit(tiny(tmp_path, "uniform", **{"train.epochs": 1}), tmp_path / "run")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert set(modes.values()) == {FILE_MODE}, modes
    assert modes["metrics.jsonl"] == modes["summary.json"] == modes["checkpoint.pt"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs, unmounted afterwards; skipped where this user cannot mount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until about ``leave`` bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_a_full_disk_under_the_feature_cache_is_named_and_leaves_nothing(
    tmp_path: Path, small_disk: Path
) -> None:
    from saln.data import build_dataset
    from saln.features import extract_features

    fill(small_disk, 64 << 10)  # digits' pixel features at 8 px take 552 KB
    with pytest.raises(OutOfSpace, match=f"out of space on the disk holding {small_disk}"):
        extract_features(build_dataset("digits").train, "pixels", image_size=8,
                         cache_dir=small_disk, progress=False)  # fmt: skip
    assert [p.name for p in small_disk.iterdir()] == ["filler"]


def test_a_full_run_folder_is_named_by_the_command_line_and_leaves_nothing(
    tmp_path: Path, small_disk: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(tiny(tmp_path, "uniform", **{"train.epochs": 1}).to_yaml())
    fill(small_disk, 48 << 10)  # the config fits, a checkpoint does not
    done = subprocess.run(
        [sys.executable, "-m", "saln", "train", "--config", str(config), "--out",
         str(small_disk / "run")], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "out of space on the disk holding" in done.stderr and "Traceback" not in done.stderr
    assert not list((small_disk / "run").glob(".*.tmp"))


def test_atomic_writes_on_a_full_disk_keep_the_old_file(small_disk: Path) -> None:
    target = small_disk / "summary.json"
    write_json_atomic(target, {"old": True})
    fill(small_disk, 0)
    with pytest.raises(OutOfSpace):
        write_json_atomic(target, {"new": "x" * (1 << 20)})
    assert yaml.safe_load(target.read_text()) == {"old": True}
    assert not list(small_disk.glob(".*.tmp"))
