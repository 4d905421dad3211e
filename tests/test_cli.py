"""The command line: flags generated from the config dataclasses, packaged configs, an install."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from saln import config as cfg
from saln.cli import FEATURE_FLAGS, RUN_FLAGS, build_parser, config_from_args, registry_names
from saln.data.datasets import DATASETS

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("features", "train", "compare", "sweep")


def subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def flag_help(command: str, flag: str) -> str:
    action = next(a for a in subparser(command)._actions if flag in a.option_strings)
    return str(action.help)


@pytest.mark.parametrize("command", COMMANDS)
def test_without_flags_every_command_reads_the_config_defaults(command: str) -> None:
    args = build_parser().parse_args([command])
    assert config_from_args(args) == cfg.Config()


def test_features_and_train_extract_the_same_features_by_default() -> None:
    features = config_from_args(build_parser().parse_args(["features"])).features
    train = config_from_args(build_parser().parse_args(["train"])).features
    assert features == train == cfg.Config().features
    assert features.image_size == 64


@pytest.mark.parametrize("command", COMMANDS)
def test_every_dataset_is_named_in_every_dataset_help(command: str) -> None:
    text = flag_help(command, "--dataset")
    for name in DATASETS.names():
        assert name in text, (command, name)
    assert "fashion_mnist" in text and "imagefolder:PATH" in text


# A value other than the default for each flag's setting.
EXAMPLES = {
    "data.dataset": "cifar10",
    "data.data_root": "elsewhere",
    "data.download": True,
    "data.loader": "resident",
    "data.workers": 5,
    "train.method": "uniform",
    "train.filter_ratio": 0.5,
    "train.epochs": 3,
    "train.seed": 4,
    "train.batch_size": 32,
    "train.learner_batch_size": 16,
    "train.device": "cpu",
    "train.progress": False,
    "optim.lr": 0.25,
    "model.learner": "resnet18",
    "features.encoder": "pixels",
    "features.weights": "w.pt",
    "features.image_size": 32,
    "features.batch_size": 100,
    "features.cache_dir": "cache",
}


@pytest.mark.parametrize("key", sorted(set(RUN_FLAGS) | set(FEATURE_FLAGS)))
def test_each_flag_names_its_key_and_default_and_sets_it(key: str) -> None:
    section, name = key.split(".")
    command = "features" if key in FEATURE_FLAGS else "train"
    flag = "--" + name.replace("_", "-")
    default = getattr(getattr(cfg.Config(), section), name)
    assert f"[{key}, default {default}]" in flag_help(command, flag)
    value = EXAMPLES[key]
    assert value != default
    argv = {True: [flag], False: [f"--no-{flag[2:]}"]}.get(value, [flag, str(value)])  # type: ignore[call-overload]
    args = build_parser().parse_args([command, *argv])
    assert getattr(getattr(config_from_args(args), section), name) == value


def test_a_flag_wins_over_set_and_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n")
    argv = ["train", "--config", str(path), "--set", "train.epochs=5", "--epochs", "3"]
    assert config_from_args(build_parser().parse_args(argv)).train.epochs == 3


def test_registered_names_are_listed_for_registry_fields() -> None:
    from saln.train import METHODS

    assert registry_names("method") == METHODS.names()
    assert all(name in flag_help("train", "--method") for name in METHODS.names())


def test_packaged_configs_load_by_name_and_the_checkout_path_is_the_same_file() -> None:
    assert "demo" in cfg.packaged_configs()
    assert cfg.load("demo") == cfg.load("demo.yaml") == cfg.load(REPO / "configs" / "demo.yaml")
    with pytest.raises(cfg.ConfigError, match=r"packaged config: .*demo"):
        cfg.load("no_such_config")


def make_venv_that_sees_our_packages(env_dir: Path) -> str:
    """A new venv whose interpreter imports torch and the rest from this interpreter's site
    packages, and the venv's own before them, so only saln is installed there. A venv's
    ``system_site_packages`` would not do: from inside a venv it sees the *base* interpreter's
    packages (no torch, an old setuptools), not this one's."""
    venv.create(env_dir, with_pip=False)
    [own] = (env_dir / "lib").glob("python*/site-packages")
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (own / "_saln_test_parent.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return str(env_dir / "bin" / "python")


def test_the_test_venv_sees_this_interpreters_packages(tmp_path: Path) -> None:
    """The check the install test stands on, cheap: the venv imports what this one does, from
    inside a venv as well as outside one (it once saw the base interpreter's packages)."""
    python = make_venv_that_sees_our_packages(tmp_path / "venv")
    code = (
        "import importlib.util, setuptools, sys; assert importlib.util.find_spec('torch'); "
        "print(setuptools.__version__, sys.prefix)"
    )
    shown = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    import setuptools

    version, prefix = shown.stdout.split()
    assert version == setuptools.__version__ and Path(prefix) == tmp_path / "venv"


@pytest.mark.slow
def test_a_plain_install_runs_from_an_empty_folder(tmp_path: Path) -> None:
    """``pip install .`` (not editable) carries the configs: the commands work from anywhere."""
    env_dir = tmp_path / "venv"
    python = make_venv_that_sees_our_packages(env_dir)
    install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    checkout = tmp_path / "checkout"  # a copy, so the build leaves nothing in the repository
    skip = shutil.ignore_patterns("*.egg-info", "__pycache__")
    shutil.copytree(REPO / "src", checkout / "src", ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, checkout / name)
    built = subprocess.run(
        [*install, "--no-build-isolation", "--no-index", str(checkout)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = list((env_dir / "lib").glob("python*/site-packages/saln/configs/demo.yaml"))
    assert installed, "the configs are not in the installed package"  # a copy, not the checkout
    saln = str(env_dir / "bin" / "saln")
    trained = subprocess.run(
        [saln, "train", "--config", "demo", "--method", "standard", "--epochs", "1",
         "--no-progress", "--out", "run", "--set", f"features.cache_dir={tmp_path / 'cache'}"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (empty / "run" / "summary.json").exists()
    env_json = json.loads((empty / "run" / "env.json").read_text())
    assert env_json["git_sha"] is None  # the installed copy ran, not the checkout's code


def test_an_internal_error_keeps_its_traceback_and_a_user_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import saln.cli

    def broken(args: argparse.Namespace) -> int:
        raise TypeError("unsupported operand type(s) for *: 'int' and 'NoneType'")

    monkeypatch.setattr(saln.cli, "run_report", broken)
    with pytest.raises(TypeError):  # a bug is not shown as a usage error
        saln.cli.main(["report", "somewhere"])

    def numpy_inside(args: argparse.Namespace) -> int:  # a ValueError, but not a refusal
        import numpy as np

        np.zeros(3).reshape(2, 2)
        return 0

    monkeypatch.setattr(saln.cli, "run_report", numpy_inside)
    with pytest.raises(ValueError, match="reshape"):
        saln.cli.main(["report", "somewhere"])

    def refused(args: argparse.Namespace) -> int:
        raise cfg.ConfigError("train.epochs must be positive, got 0")

    monkeypatch.setattr(saln.cli, "run_report", refused)
    assert saln.cli.main(["report", "somewhere"]) == 2
    assert capsys.readouterr().err == ("saln report: error: train.epochs must be positive, got 0\n")


def test_ctrl_c_says_how_to_resume_in_one_line_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import saln.cli

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(saln.cli, "run_train", interrupted)
    assert saln.cli.main(["train"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--out", "--config", "--data-root"])
def test_a_name_longer_than_the_file_system_allows_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    from saln.cli import main

    long = str(tmp_path / ("x" * 300))
    argv = ["train", "--epochs", "1", "--no-progress", flag, long]
    if flag == "--data-root":
        argv += ["--dataset", "cifar10", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    said = "not found under" if flag == "--data-root" else "longer than the file system allows"
    assert err.count("\n") == 1 and said in err, err


def test_a_download_without_network_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.error
    import urllib.request

    from saln.data import DataError, build_dataset

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"the download failed .*name resolution.*"):
        build_dataset("cifar10", str(tmp_path / "data"), download=True)
