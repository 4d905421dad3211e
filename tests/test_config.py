"""Config: YAML <- overrides, strict keys and types, the shipped configs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from saln import config as cfg
from saln.cli import csv_list

REPO = Path(__file__).resolve().parents[1]


def test_defaults_follow_the_paper() -> None:
    c = cfg.Config()
    assert (c.optim.optimizer, c.optim.lr, c.optim.momentum) == ("sgd", 0.001, 0.9)
    assert (c.train.epochs, c.train.filter_ratio, c.train.batch_size) == (25, 0.8, 64)


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  method: loss\noptim:\n  lr: 1\n")
    c = cfg.load(path, {"train.epochs": 3})
    assert c.train.epochs == 3 and c.train.method == "loss" and c.optim.lr == 1.0


def test_round_trip_through_yaml() -> None:
    c = cfg.load(None, {"train.learner_batch_size": 16, "model.weights": "w.pt"})
    import yaml

    assert cfg.from_dict(yaml.safe_load(c.to_yaml())) == c


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.epoch": 3}, r"unknown config key 'train.epoch'; did you mean 'epochs'"),
        ({"trian.epochs": 3}, r"unknown config section 'trian'; did you mean 'train'"),
        ({"optim.lr": "fast"}, r"optim.lr must be float, got 'fast'"),
        ({"train.epochs": 2.5}, r"train.epochs must be int"),
        ({"train.amp": "yes"}, r"train.amp must be bool"),
        ({"train.filter_ratio": 1.0}, r"filter_ratio=1.0 must be in \[0, 1\)"),
        ({"train.epochs": 0}, r"train.epochs must be positive"),
        (
            {"optim.schedule": "linear"},
            r"optim.schedule='linear' is not one of constant, cosine, step",
        ),
        ({"epochs": 3}, r"must be section.key"),
        ({"data.workers": -1}, r"data.workers must be >= 0"),
        ({"train.seed": -1}, r"train.seed must be in \[0, 2\*\*63\), got -1"),
    ],
)
def test_invalid_keys_and_values_are_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(None, overrides)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="does not exist"):
        cfg.load(tmp_path / "nope.yaml")
    broken = tmp_path / "b.yaml"
    broken.write_text("train: [1, 2\n")
    with pytest.raises(cfg.ConfigError, match="not valid YAML"):
        cfg.load(broken)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    c = cfg.load(REPO / "configs" / name)
    assert c.train.filter_ratio == 0.8


def test_override_parsing() -> None:
    assert cfg.parse_override("optim.lr=0.1") == ("optim.lr", 0.1)
    assert cfg.parse_override("model.weights=null") == ("model.weights", None)
    with pytest.raises(cfg.ConfigError, match=r"section.key=value"):
        cfg.parse_override("optim.lr")


@pytest.mark.parametrize(
    ("text", "message"),
    [("0,0,1", "0 given more than once"), (",", "at least one"), ("0,x", "list of int")],
)
def test_seed_lists_refuse_repeats_and_junk(text: str, message: str) -> None:
    # A repeated seed would be averaged as another seed: a spread of zero that is not there.
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        csv_list(int)(text)
    assert csv_list(int)(" 2, 0 ,1") == [2, 0, 1]


@pytest.mark.parametrize(
    ("text", "value"), [("1e-3", 0.001), ("1E+2", 100.0), (".5", 0.5), ("5.", 5.0)]
)
def test_a_float_in_any_notation_is_a_float(tmp_path: Path, text: str, value: float) -> None:
    """YAML 1.1 reads 1e-3 (no dot) as a string; a float field takes it as the number."""
    path = tmp_path / "c.yaml"
    path.write_text(f"optim:\n  lr: {text}\n")
    assert cfg.load(path).optim.lr == value
    assert cfg.load(None, dict([cfg.parse_override(f"optim.lr={text}")])).optim.lr == value
    with pytest.raises(cfg.ConfigError, match=r"train\.epochs must be int"):
        cfg.load(None, {"train.epochs": text})  # an int field is not given a float


def test_a_key_given_twice_in_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(cfg.ConfigError, match="key 'epochs' is given twice"):
        cfg.load(path)


def test_every_set_is_checked_even_where_a_flag_replaces_it() -> None:
    from saln.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--set", "train.epochs=abc", "--epochs", "3"])
    with pytest.raises(cfg.ConfigError, match=r"train\.epochs must be int, got 'abc'"):
        config_from_args(args)


def test_training_needs_a_validation_split() -> None:
    with pytest.raises(cfg.ConfigError, match=r"data.val_fraction=0.0 must be in \(0, 1\)"):
        cfg.load(None, {"data.val_fraction": 0})


def test_a_retired_key_is_refused_from_a_user_and_dropped_from_a_stored_run() -> None:
    """train.jest_chunks did nothing (JEST never received an interaction), yet changing it
    refused a resume. It is gone: a user's --set names why; a run that recorded it still loads."""
    with pytest.raises(cfg.ConfigError, match=r"train\.jest_chunks was removed: it never changed"):
        cfg.load(None, {"train.jest_chunks": 4})
    stored = {"train": {"method": "jest", "jest_chunks": 16}}
    assert cfg.from_dict(stored, stored=True) == cfg.from_dict({"train": {"method": "jest"}})


def test_only_the_settings_every_method_reads_set_runs_apart() -> None:
    """A proxy's resolution matters between two proxy runs, not between a proxy run and its
    uniform control (uniform runs the same at any resolution); the filter ratio always does."""
    assert ("selection", "proxy_resolution") in cfg.unshared_settings({"proxy", "uniform"})
    assert ("selection", "proxy_widths") in cfg.unshared_settings({"saln", "uniform"})
    assert ("selection", "strata") in cfg.unshared_settings({"spectral_strata", "uniform"})
    assert ("selection", "proxy_resolution") not in cfg.unshared_settings({"proxy"})
    shared = {("train", "filter_ratio"), ("selection", "k"), ("optim", "lr")}
    assert not shared & cfg.unshared_settings({"proxy", "uniform"})


def test_every_method_a_setting_names_as_its_reader_is_registered() -> None:
    """A misspelt ``read_by`` would leave the setting out of every comparison unnoticed."""
    from dataclasses import fields

    from saln.train import METHODS

    config = cfg.Config()
    readers = {
        name
        for section in fields(config)
        for key in fields(getattr(config, section.name))
        for name in key.metadata.get("read_by", ())
    }
    assert readers and readers <= set(METHODS.names()), readers - set(METHODS.names())
