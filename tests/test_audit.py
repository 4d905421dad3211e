"""The adversarial audit's cases: nothing lost, nothing silently wrong, no traceback for a
user's mistake. Each case, and the test that failed before its fix:

- --overwrite with a misspelt setting deleted the finished run:
  ``test_overwrite_with_a_bad_setting_keeps_the_run``
- --overwrite that fails in its first epoch lost the old run:
  ``test_overwrite_that_fails_early_puts_the_old_run_back``
- resume on swapped files, an added class, a grown dataset: ``test_resume_refuses_other_data``
- resume without checkpoint.pt recorded epochs twice:
  ``test_resume_without_its_checkpoint_is_refused``
- --resume on a folder with no run started one: ``test_resume_of_nothing_is_refused``
- a symlink loop in an image folder multiplied and mislabelled images:
  ``test_a_symlink_loop_is_not_followed``
- a FIFO named pipe.png hung train and features:
  ``test_a_fifo_or_a_dangling_link_is_refused_naming_it``
- a one-class dataset reported 100%: ``test_one_class_or_no_val_images_is_refused_before_training``
- 5 or fewer images per class: ZeroDivisionError after an epoch:
  ``test_one_class_or_no_val_images_is_refused_before_training``
- `saln report runs/a runs/a` counted one run twice: ``test_a_run_named_twice_is_reported_once``
- a comparison wrote inside a folder a sweep held: ``test_a_lock_covers_its_subfolders``
- the Curator's JEST stream was not in its state:
  ``test_a_resumed_jest_curator_draws_what_an_uninterrupted_one_draws``
- a 100-sample Curator's state loaded into a 50-sample one:
  ``test_a_curator_refuses_anothers_state_and_bad_epochs``
- Curator epochs=0 or -1; set_epoch(-1); meta indices; pickling:
  ``test_a_curator_refuses_anothers_state_and_bad_epochs``
- --set train.method=standard_matched@nosuch went unchecked:
  ``test_a_replaced_set_is_still_checked``
- a 30000x30000 header (decompression bomb): ``test_a_decompression_bomb_is_one_line``
- a corrupt JPEG under data.loader=dataloader: a worker's traceback:
  ``test_a_corrupt_image_in_a_worker_is_one_line``
- a damaged config.yaml in a run folder (resume, report): ``test_a_damaged_run_config_is_one_line``
- --out under a regular file; --out naming a file: ``test_out_under_a_file_is_one_line``
- a full disk while writing the lock's owner file: ``test_a_full_disk_at_the_lock_is_one_line``
- SIGTERM: exit 143, no message, stale lock owner: ``test_sigterm_is_ctrl_c``
- Ctrl-C under compare --nproc: the ranks advised `saln train --resume`:
  ``test_a_launched_run_leaves_the_advice_to_its_comparison``
- weight_decay=.nan/.inf, image_size=100000, a huge seed:
  ``test_values_that_fail_later_are_refused_naming_the_key``
- a binary config file; a folder as config: ``test_a_config_that_is_no_yaml_file_is_named``
- weights that are text or garbage: ``test_weights_that_are_no_state_dict_are_named``
- only 5 of 7 differing settings named: ``test_every_differing_setting_is_named``
- a finished run without config.yaml: ``test_run_files_without_config_are_refused``

Cases of our own, in the same spirit (the rest of the 30 tried held; docs/guarantees.md):

- SIGHUP (the terminal closed) killed a run without unwinding, leaving its lock owner:
  ``test_a_stop_signal_unwinds_like_ctrl_c_and_the_handler_comes_back``
- ``compare --seeds -1`` made its folder before refusing the seed:
  ``test_a_bad_seed_is_refused_before_a_comparison_makes_its_folder``
- ``--out ""`` trained into the working directory itself: ``test_an_empty_out_is_refused``
- a truncated checkpoint or archive, a duplicate YAML key: torch's, tarfile's or YAML's
  multi-line text as the error: ``test_damaged_files_are_named_in_one_line``
- weights naming a folder were reported as missing:
  ``test_weights_that_are_no_state_dict_are_named``
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from saln import config as cfg
from saln.cli import main
from saln.errors import UserError
from saln.report.aggregate import expand_run_dirs
from saln.runs.lock import FolderInUse, writing
from saln.train import fit

ROOT = Path(__file__).resolve().parents[1]


def image_folder(root: Path, classes: int = 3, train: int = 12, test: int = 3) -> Path:
    """PATH/{train,test}/<class>/*.png: 8 px images whose colour is their class."""
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                colour = (80 * c, 10 * i, 200 - 60 * c)
                Image.new("RGB", (8, 8), colour).save(folder / f"{i:03d}.png")
    return root


def folder_config(root: Path, tmp: Path, **overrides: Any) -> cfg.Config:
    base = {
        "data.dataset": f"imagefolder:{root}",
        "data.image_size": 8,
        "data.val_fraction": 0.2,
        "data.reference_fraction": 0.0,
        "data.loader": "resident",
        "features.cache_dir": str(tmp / "cache"),
        "model.learner": "small_cnn",
        "optim.lr": 0.05,
        "train.method": "standard",
        "train.epochs": 2,
        "train.batch_size": 8,
        "train.progress": False,
    }
    return cfg.load(None, {**base, **overrides})


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- data lost -------------------------------------------------------------------------------


def test_overwrite_with_a_bad_setting_keeps_the_run(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    run = tmp_path / "run"
    fit(folder_config(data, tmp_path), run)
    before = sorted(p.name for p in run.iterdir())
    bad = folder_config(data, tmp_path, **{"train.method": "saln", "features.solver": "lanczs"})
    with pytest.raises(cfg.ConfigError, match=r"features\.solver='lanczs': unknown solver"):
        fit(bad, run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == before
    assert (run / "summary.json").exists()


def test_overwrite_that_fails_early_puts_the_old_run_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saln.train import engine

    data = image_folder(tmp_path / "data")
    run = tmp_path / "run"
    fit(folder_config(data, tmp_path), run)
    summary = (run / "summary.json").read_text()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory in the first epoch")

    monkeypatch.setattr(engine, "run_epoch", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        fit(folder_config(data, tmp_path, **{"optim.lr": 0.01}), run, overwrite=True)
    assert (run / "summary.json").read_text() == summary
    assert "lr: 0.05" in (run / "config.yaml").read_text() and not (run / ".replaced").exists()


# -- silently wrong --------------------------------------------------------------------------


def unfinished_run(tmp_path: Path) -> tuple[Path, Path, cfg.Config]:
    data = image_folder(tmp_path / "data")
    config = folder_config(data, tmp_path)
    run = tmp_path / "run"
    fit(config, run)
    (run / "summary.json").unlink()  # as if killed before its end: it resumes
    return data, run, config


def swap(data: Path) -> None:
    a, b = data / "train" / "c0" / "000.png", data / "train" / "c1" / "000.png"
    a.rename(data / "x.png")
    b.rename(a)
    (data / "x.png").rename(b)


def add_class(data: Path) -> None:
    image_folder(data / "more", classes=4)
    for split in ("train", "test"):
        (data / "more" / split / "c3").rename(data / split / "c3")


def grow(data: Path) -> None:
    for i in range(4):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(data / "train" / "c0" / f"new{i}.png")


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (swap, r"train files or labels changed \(same count\)"),
        (add_class, r".*train images 36 -> 48; train classes 3 -> 4"),
        (grow, r"train images 36 -> 40"),
    ],
)
def test_resume_refuses_other_data(tmp_path: Path, change: Any, said: str) -> None:
    data, run, config = unfinished_run(tmp_path)
    split = (run / "split.json").read_text()
    change(data)
    time.sleep(0.01)
    with pytest.raises(UserError, match=f"was trained on other data: {said}"):
        fit(config, run, resume=True)
    assert (run / "split.json").read_text() == split  # never rewritten


def test_resume_without_its_checkpoint_is_refused(tmp_path: Path) -> None:
    _, run, config = unfinished_run(tmp_path)
    (run / "checkpoint.pt").unlink()
    with pytest.raises(UserError, match=r"recorded 2 epoch\(s\) .* no checkpoint\.pt"):
        fit(config, run, resume=True)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_of_nothing_is_refused(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    with pytest.raises(UserError, match=r"holds no run to resume .* drop --resume"):
        fit(folder_config(data, tmp_path), tmp_path / "never", resume=True)
    assert not (tmp_path / "never").exists()


def test_a_symlink_loop_is_not_followed(tmp_path: Path) -> None:
    from saln.data import build_dataset

    data = image_folder(tmp_path / "data", classes=2, train=10, test=2)
    (data / "train" / "c0" / "loop").symlink_to("..")
    (data / "train" / "c1" / "again").symlink_to(data / "train" / "c1")
    (data / "train" / "c2").symlink_to(data / "train" / "c0")  # a class that is another's copy
    (data / "test" / "c2").symlink_to(data / "test" / "c0")
    bundle = build_dataset(f"imagefolder:{data}")
    assert len(bundle.train) == 20 and np.bincount(bundle.train.labels).tolist() == [10, 10]
    assert bundle.train.classes == ["c0", "c1"]
    outside = tmp_path / "extra"
    image_folder(outside, classes=1, train=3, test=0)
    (data / "train" / "c1" / "linked").symlink_to(outside / "train" / "c0")  # not a loop
    assert np.bincount(build_dataset(f"imagefolder:{data}").train.labels).tolist() == [10, 13]


@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_a_fifo_or_a_dangling_link_is_refused_naming_it(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = image_folder(tmp_path / "data")
    odd = data / "train" / "c1" / "pipe.png"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to(tmp_path / "gone.png")
    said = "not a regular file" if kind == "fifo" else "symbolic link to a file that does not"
    for command in (["features", "--encoder", "pixels"], ["train", "--out", str(tmp_path / "r")]):
        err = one_line(capsys, [*command, "--dataset", f"imagefolder:{data}", "--no-progress"])
        assert str(odd) in err and said in err


def test_one_class_or_no_val_images_is_refused_before_training(tmp_path: Path) -> None:
    one = image_folder(tmp_path / "one", classes=1)
    with pytest.raises(UserError, match=r"has 1 class \(c0\): a classifier needs at least two"):
        fit(folder_config(one, tmp_path), tmp_path / "r1")
    few = image_folder(tmp_path / "few", classes=3, train=5)
    with pytest.raises(UserError, match=r"leaves no val images .* smallest class has 5"):
        fit(folder_config(few, tmp_path, **{"data.val_fraction": 0.05}), tmp_path / "r2")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_a_run_named_twice_is_reported_once(tmp_path: Path) -> None:
    run = tmp_path / "a"
    (run).mkdir()
    (run / "config.yaml").write_text("{}\n")
    same = tmp_path / "." / "a"
    assert expand_run_dirs([run, same, run]) == [run]


def test_a_lock_covers_its_subfolders(tmp_path: Path) -> None:
    hold = (
        "import sys, time; from pathlib import Path; from saln.runs.lock import writing\n"
        "with writing(Path(sys.argv[1]), 'a sweep'):\n"
        "    print('holding', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path / "s")],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        inside = writing(tmp_path / "s" / "ratio-0.8", "a comparison")
        with pytest.raises(FolderInUse, match=r"ratio-0\.8 is inside .*/s, which process"), inside:
            pass
        with writing(tmp_path / "elsewhere", "a comparison"):  # outside it: fine
            pass
    finally:
        holder.kill()
        holder.wait()
    with writing(tmp_path / "s", "a sweep"), writing(tmp_path / "s" / "ratio-0.8", "a comparison"):
        pass  # this process's own nesting: a comparison inside its sweep


def test_a_resumed_jest_curator_draws_what_an_uninterrupted_one_draws() -> None:
    import saln

    refs = torch.rand(100)

    def steps(curator: Any, epochs: range) -> list[list[int]]:
        kept = []
        for epoch in epochs:
            curator.set_epoch(epoch)
            for rows in curator.batch_sampler:
                indices = torch.tensor(rows)
                curator.loss(
                    torch.rand(len(rows), generator=torch.Generator().manual_seed(1)), indices
                )
                kept.append(curator.last_kept.tolist())
        return kept

    whole = saln.Curator(100, "jest", epochs=2, batch_size=20, ref_losses=refs)
    straight = steps(whole, range(2))
    first = saln.Curator(100, "jest", epochs=2, batch_size=20, ref_losses=refs)
    steps(first, range(1))
    state = first.state_dict()
    resumed = saln.Curator(100, "jest", epochs=2, batch_size=20, ref_losses=refs)
    resumed.load_state_dict(state)
    assert steps(resumed, range(1, 2)) == straight[len(straight) // 2 :]


def test_a_curator_refuses_anothers_state_and_bad_epochs() -> None:
    import saln

    state = saln.Curator(100, "uniform", epochs=2).state_dict()
    with pytest.raises(UserError, match=r"Curator with .*'size': 100.* this one has .*'size': 50"):
        saln.Curator(50, "uniform", epochs=2).load_state_dict(state)
    for epochs in (0, -1):
        with pytest.raises(UserError, match=r"epochs must be a positive int"):
            saln.Curator(100, "infobatch", epochs=epochs)
    curator = saln.Curator(100, "uniform", epochs=2)
    with pytest.raises(UserError, match=r"set_epoch takes the epoch, an int >= 0"):
        curator.set_epoch(-1)
    curator.set_epoch(0)
    with pytest.raises(UserError, match=r"as integers on a real device, got .* on meta"):
        curator.loss(torch.rand(3), torch.zeros(3, dtype=torch.long, device="meta"))
    with pytest.raises(TypeError, match=r"save curator\.state_dict\(\)"):
        pickle.dumps(curator)


def test_a_replaced_set_is_still_checked(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line(
        capsys, ["train", "--set", "train.method=standard_matched@nosuch", "--method", "uniform"]
    )
    assert "train.method='standard_matched@nosuch'" in err


# -- tracebacks ------------------------------------------------------------------------------


def test_a_decompression_bomb_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = image_folder(tmp_path / "data")
    Image.new("RGB", (300, 300)).save(data / "train" / "c2" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 300 x 300 > 2x: a bomb by PIL's rule
    for loader in ("resident", "dataloader"):
        argv = ["train", "--dataset", f"imagefolder:{data}", "--no-progress", "--epochs", "1"]
        argv += ["--set", f"data.loader={loader}", "--set", "data.workers=0", "--batch-size", "8"]
        err = one_line(capsys, [*argv, "--out", str(tmp_path / loader), "--method", "standard"])
        assert "bomb.png is too large to decode safely" in err


def test_a_corrupt_image_in_a_worker_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = image_folder(tmp_path / "data")
    (data / "train" / "c1" / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["train", "--dataset", f"imagefolder:{data}", "--no-progress", "--epochs", "1"]
    argv += ["--set", "data.loader=dataloader", "--set", "data.workers=1"]
    argv += ["--set", "data.image_size=8", "--method", "standard", "--out", str(tmp_path / "r")]
    argv += ["--batch-size", "8"]
    err = one_line(capsys, argv)
    assert "cannot read image" in err and "005.png" in err and "worker" not in err


def test_a_damaged_run_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    fit(folder_config(image_folder(tmp_path / "data"), tmp_path), run)
    (run / "config.yaml").write_text("train: {epochs: [unclosed\n")
    err = one_line(capsys, ["report", str(run)])
    assert "config.yaml is damaged" in err
    (run / "summary.json").unlink()  # unfinished: it would resume
    err = one_line(capsys, ["train", "--out", str(run), "--resume"])
    assert "config.yaml is damaged" in err


def test_out_under_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for out in (notes / "sub", notes):
        err = one_line(capsys, ["train", "--epochs", "1", "--no-progress", "--out", str(out)])
        assert "notes.txt is a file, not a folder" in err
        err = one_line(
            capsys, ["compare", "--methods", "standard", "--seeds", "0", "--out", str(out)]
        )
        assert "notes.txt is a file, not a folder" in err
    assert notes.read_text() == "mine\n"


def test_a_full_disk_at_the_lock_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from saln import io

    real = io.os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    err = one_line(
        capsys, ["train", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")]
    )
    monkeypatch.setattr(io.os, "fsync", real)
    assert "out of space on the disk holding" in err
    assert not list((tmp_path / "r").glob("*.tmp")) and not list((tmp_path / "r").glob(".*.tmp"))


def test_sigterm_is_ctrl_c(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real run, stopped by SIGTERM after its first epoch: one line, exit 143, its lock
    owner and temporary files gone (in-process: a thread sends the signal)."""
    import threading

    out = tmp_path / "run"

    def stop_after_an_epoch() -> None:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    argv = ["train", "--epochs", "200", "--no-progress", "--method", "standard", "--out", str(out)]
    argv += ["--set", f"features.cache_dir={tmp_path / 'cache'}", "--batch-size", "256"]
    threading.Thread(target=stop_after_an_epoch, daemon=True).start()
    err = one_line(capsys, argv, code=143)
    assert err.startswith("saln train: terminated; run the same command with --resume")
    assert not (out / ".lock-owner").exists() and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_unwinds_like_ctrl_c_and_the_handler_comes_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stop: int, code: int
) -> None:
    """SIGHUP (a closed terminal) killed a run without unwinding, as SIGTERM once did."""
    import saln.cli

    before = signal.getsignal(stop)

    def stopped(args: argparse.Namespace) -> int:
        os.kill(os.getpid(), stop)
        time.sleep(5)  # the handler raises before this ends
        return 0

    monkeypatch.setattr(saln.cli, "run_train", stopped)
    assert main(["train"]) == code
    assert capsys.readouterr().err.startswith("saln train: terminated; run the same command")
    assert signal.getsignal(stop) == before


def test_an_empty_out_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("train", "compare", "report"):
        argv = [command, "--out", ""] + (["somewhere"] if command == "report" else [])
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert "--out: an empty path: name a folder" in capsys.readouterr().err


def test_damaged_files_are_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = image_folder(tmp_path / "data")
    config = folder_config(data, tmp_path)
    run = tmp_path / "run"
    fit(config, run)
    (run / "summary.json").unlink()
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:100])
    with pytest.raises(UserError) as damaged:
        fit(config, run, resume=True)
    assert "\n" not in str(damaged.value) and "checkpoint.pt cannot be read" in str(damaged.value)
    twice = tmp_path / "c.yaml"
    twice.write_text("train:\n  epochs: 1\n  epochs: 2\n")
    err = one_line(capsys, ["train", "--config", str(twice)])
    assert "key 'epochs' is given twice at line 3, column 3" in err
    archive = tmp_path / "x.tar.gz"
    archive.write_text("not an archive\n")
    err = one_line(capsys, ["subset", str(archive), "--out", str(tmp_path / "sub")])
    assert "is not a readable .tar or .tar.gz archive" in err


def test_a_bad_seed_is_refused_before_a_comparison_makes_its_folder(tmp_path: Path) -> None:
    from saln.experiments.compare import run_comparison
    from tests.test_train import tiny

    with pytest.raises(cfg.ConfigError, match=r"train\.seed must be in"):
        run_comparison(tiny(tmp_path, "uniform"), ["uniform"], [-1], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_a_launched_run_leaves_the_advice_to_its_comparison(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import saln.cli
    from saln.experiments.launch import LAUNCHED_ENV

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(saln.cli, "run_train", interrupted)
    monkeypatch.setenv(LAUNCHED_ENV, "1")
    assert main(["train"]) == 130
    assert capsys.readouterr().err == ""


# -- unclear errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("optim.weight_decay=.nan", r"optim\.weight_decay=nan must be a finite number"),
        ("optim.weight_decay=.inf", r"optim\.weight_decay=inf must be a finite number"),
        ("data.image_size=100000", r"data\.image_size=100000 is larger than saln supports"),
        ("train.seed=100000000000000000000", r"train\.seed must be in \[0, 2\*\*63\)"),
    ],
)
def test_values_that_fail_later_are_refused_naming_the_key(
    setting: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line(capsys, ["train", "--set", setting])
    assert pytest.importorskip("re").search(said, err), err


def test_a_config_that_is_no_yaml_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "c.yaml"
    binary.write_bytes(bytes(range(256)))
    assert "is not text" in one_line(capsys, ["train", "--config", str(binary)])
    assert "is a folder" in one_line(capsys, ["train", "--config", str(tmp_path)])


def test_weights_that_are_no_state_dict_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "w.txt"
    text.write_text("not weights\n")
    garbage = tmp_path / "w.pt"
    garbage.write_bytes(os.urandom(2000))
    listed = tmp_path / "l.pt"
    torch.save([1, 2], listed)
    for path in (text, garbage, listed, tmp_path):
        argv = ["train", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")]
        err = one_line(capsys, [*argv, "--set", f"model.weights={path}"])
        assert str(path) in err and "weights_only" not in err


def test_every_differing_setting_is_named(tmp_path: Path) -> None:
    from tests.test_train import tiny

    run = tmp_path / "run"
    fit(tiny(tmp_path, "uniform", **{"train.epochs": 1}), run)
    changed = {
        "train.epochs": 2, "optim.lr": 0.01, "optim.momentum": 0.5, "train.batch_size": 40,
        "data.val_fraction": 0.2, "train.filter_ratio": 0.5, "optim.weight_decay": 0.001,
    }  # fmt: skip
    with pytest.raises(cfg.ConfigError) as refused:
        fit(tiny(tmp_path, "uniform", **changed), run)
    for key in changed:
        assert key in str(refused.value)


def test_run_files_without_config_are_refused(tmp_path: Path) -> None:
    from tests.test_train import tiny

    run = tmp_path / "run"
    config = tiny(tmp_path, "uniform", **{"train.epochs": 1})
    fit(config, run)
    (run / "config.yaml").unlink()
    with pytest.raises(UserError, match=r"holds a finished run \(summary\.json\) without"):
        expand_and_load(run)
    with pytest.raises(UserError, match=r"run files \(.*summary\.json.*\) but no config\.yaml"):
        fit(config, run)


def expand_and_load(run: Path) -> None:
    from saln.report.aggregate import load_runs

    load_runs([run])
