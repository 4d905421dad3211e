"""The engine: every method trains, selection sizes, holdout isolation, resume, timing, records."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from saln import config as cfg
from saln.train import METHODS, Callback, TrainingDiverged, fit
from saln.train.engine import evaluate
from saln.train.setup import build_run

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path: Path, method: str, **overrides: Any) -> cfg.Config:
    """Digits at 16 px, a small CNN, pixel features: seconds per run."""
    base = {
        "data.image_size": 16,
        "data.val_fraction": 0.15,
        "data.reference_fraction": 0.15,
        "features.encoder": "pixels",
        "features.image_size": 8,
        "features.cache_dir": str(tmp_path / "cache"),
        "optim.lr": 0.05,
        "train.method": method,
        "train.epochs": 2,
        "train.batch_size": 50,
        "train.progress": False,
        "reference.epochs": 2,
    }
    return cfg.load(None, {**base, **overrides})


class Recorder(Callback):
    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def on_batch_selected(self, epoch: int, step: int, loaded: int, kept: int) -> None:
        self.sizes.append((loaded, kept))


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_and_lowers_the_loss(tmp_path: Path, method: str) -> None:
    # A cosine schedule ends on a small step, so the final model is not at the mercy of one
    # noisy 10-row step; every method then clears the margin by about 1 nat (measured).
    config = tiny(tmp_path, method, **{"train.epochs": 5, "optim.schedule": "cosine"})
    ctx = build_run(config)
    initial_loss, _ = evaluate(ctx, ctx.split.val)  # the same initial learner as the run's
    recorder = Recorder()
    summary = fit(config, tmp_path / "run", callbacks=[recorder])
    assert summary.final_val_loss < initial_loss - 0.3
    selecting = METHODS.build(method).selector is not None
    loaded, kept = (50, 10) if selecting else (50, 50)
    full = [s for s in recorder.sizes if s[0] == loaded]
    assert full and all(k == kept for _, k in full), recorder.sizes[:5]
    assert summary.kept_batch == kept and summary.loaded_batch == loaded
    expected_epochs = 1 if method == "standard_matched" else 5  # round(5 * 0.2) = 1
    assert summary.epochs == expected_epochs


@pytest.mark.parametrize("method", ["standard", "saln", "jest"])
def test_fixed_learner_batch_convention(tmp_path: Path, method: str) -> None:
    recorder = Recorder()
    summary = fit(
        tiny(tmp_path, method, **{"train.learner_batch_size": 12}),
        tmp_path / "run",
        callbacks=[recorder],
    )
    loaded = 12 if method == "standard" else math.ceil(12 / 0.2)
    assert summary.convention == "fixed_learner_batch"
    assert all(k == 12 for n, k in recorder.sizes if n == loaded)
    n_train = len(json.loads((tmp_path / "run" / "split.json").read_text())["train"])
    assert summary.steps == 2 * math.ceil(n_train / loaded)


def test_holdout_and_val_never_reach_the_learner(tmp_path: Path) -> None:
    fit(tiny(tmp_path, "rho_loss"), tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    counts = np.load(tmp_path / "run" / "selection_counts.npy")
    assert counts[split["reference"]].sum() == 0 and counts[split["val"]].sum() == 0
    assert counts[split["train"]].sum() > 0


class KillAt(Callback):
    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step

    def on_train_batch_end(self, epoch: int, step: int, rows: int) -> None:
        if (epoch, step) == (self.epoch, self.step):
            raise KeyboardInterrupt("killed")


@pytest.mark.parametrize("method", ["saln", "loss", "infobatch", "uniform+coverage", "proxy"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path: Path, method: str) -> None:
    name, _, coverage = method.partition("+")
    config = tiny(tmp_path, name, **{"train.epochs": 3, "train.coverage": bool(coverage)})
    whole = fit(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "killed", callbacks=[KillAt(epoch=1, step=3)])
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(cfg.ConfigError, match=r"unfinished run .* --resume"):
        fit(config, tmp_path / "killed")
    with open(tmp_path / "killed" / "metrics.jsonl", "a") as metrics:
        metrics.write('{"epoch": 2, "train_lo')  # as if killed while appending a row
    resumed = fit(config, tmp_path / "killed", resume=True)
    rows = [
        [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in ("whole", "killed")
    ]
    for key in ("train_loss", "val_loss", "val_acc", "examples", "distinct_trained_total"):
        assert [r[key] for r in rows[0]] == [r[key] for r in rows[1]], key
    assert whole.test_acc_last == resumed.test_acc_last
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_timings_add_up_to_the_wall_time(tmp_path: Path) -> None:
    fit(tiny(tmp_path, "loss", **{"train.epochs": 3}), tmp_path / "run")
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        parts = sum(row[f"time_{k}"] for k in ("data", "selection", "step", "eval", "checkpoint"))
        # The bookkeeping between phases (hooks, divergence checks, the record) is untimed: 30-60
        # ms an epoch here, twice that on a loaded machine. A selection or step phase left
        # untimed (each a quarter of the epoch or more) would still exceed the bound.
        assert abs(parts - row["epoch_wall_s"]) <= 0.05 * row["epoch_wall_s"] + 0.1, row


def test_records_have_the_documented_fields(tmp_path: Path) -> None:
    summary = fit(tiny(tmp_path, "saln"), tmp_path / "run")
    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["method"] == "saln"
    env = json.loads((run / "env.json").read_text())
    assert {"torch", "device", "git_sha", "git_dirty", "python"} <= set(env)
    split = json.loads((run / "split.json").read_text())
    assert {"train", "val", "reference", "seed"} <= set(split)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "time_data",
        "time_selection",
        "time_step",
        "time_eval",
        "examples",
        "steps",
        "train_rows_per_s",
        "distinct_trained_total",
        "class_histogram",
        "gap_median",
    } <= set(row)
    assert sum(row["class_histogram"]) == row["examples"]
    assert {
        "best_val_acc",
        "final_val_acc",
        "test_acc_last",
        "test_acc_best",
        "test_loss_best",
        "one_off",
        "train_time_s",
        "total_time_s",
        "examples_trained",
        "steps",
        "share_ever_trained",
        "class_entropy_trained",
    } <= set(summary.to_dict())
    assert "feature_extraction_s" in summary.one_off
    spectral = json.loads((run / "spectral.json").read_text())
    assert len(spectral["abs_fiedler_kept"]) > 0
    example = json.loads((run / "selection_example.json").read_text())
    assert len(example["kept_positions"]) == 10 and len(example["indices"]) == 50


def test_a_different_config_in_the_out_dir_is_refused(tmp_path: Path) -> None:
    fit(tiny(tmp_path, "uniform"), tmp_path / "run")
    with pytest.raises(
        cfg.ConfigError, match=r"different config \(optim.lr: 0.05 -> 0.1\).*--overwrite"
    ):
        fit(tiny(tmp_path, "uniform", **{"optim.lr": 0.1}), tmp_path / "run")
    again = fit(tiny(tmp_path, "uniform"), tmp_path / "run")  # same config: already complete
    assert again.method == "uniform"
    replaced = fit(tiny(tmp_path, "uniform", **{"optim.lr": 0.1}), tmp_path / "run", overwrite=True)
    assert replaced.method == "uniform"


def test_a_failed_set_up_leaves_no_run_folder_and_keeps_the_run_it_would_replace(
    tmp_path: Path,
) -> None:
    broken = tiny(tmp_path, "saln", **{"features.encoder": "no_such_encoder"})
    with pytest.raises(ValueError, match="unknown encoder 'no_such_encoder'"):
        fit(broken, tmp_path / "new")
    assert not (tmp_path / "new").exists()  # no empty run for a report to list as incomplete
    kept = fit(tiny(tmp_path, "uniform", **{"train.tensorboard": True}), tmp_path / "run")
    with pytest.raises(ValueError, match="unknown encoder"):
        fit(broken, tmp_path / "run", overwrite=True)
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == kept.to_dict()
    fit(tiny(tmp_path, "standard"), tmp_path / "run", overwrite=True)
    assert not (tmp_path / "run" / "tensorboard").exists()  # the old run's curves went with it


def test_a_run_written_before_a_config_key_existed_is_still_the_same_run(tmp_path: Path) -> None:
    """A key added to Config later reads as its default, and launch-only switches may change."""
    fit(tiny(tmp_path, "uniform"), tmp_path / "run")
    saved = tmp_path / "run" / "config.yaml"
    older = yaml.safe_load(saved.read_text())
    del older["features"]["cuda_graph"]
    saved.write_text(yaml.safe_dump(older))
    assert fit(tiny(tmp_path, "uniform"), tmp_path / "run").method == "uniform"
    assert fit(tiny(tmp_path, "uniform", **{"train.progress": True}), tmp_path / "run")


class Poison(Callback):
    def __init__(self, model_ref: list[torch.nn.Module]) -> None:
        self.model_ref = model_ref

    def on_train_batch_end(self, epoch: int, step: int, rows: int) -> None:
        if (epoch, step) == (1, 2):
            with torch.no_grad():
                next(self.model_ref[0].parameters()).fill_(float("nan"))


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saln.train import engine

    holder: list[torch.nn.Module] = []
    real = engine.build_run
    monkeypatch.setattr(
        engine, "build_run", lambda *a, **k: (ctx := real(*a, **k), holder.append(ctx.model))[0]
    )
    with pytest.raises(
        TrainingDiverged, match=r"NaN/inf at epoch 2, step 4; the checkpoint of epoch 1"
    ):
        fit(
            tiny(tmp_path, "standard", **{"train.epochs": 3}),
            tmp_path / "run",
            callbacks=[Poison(holder)],
        )
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert len(state["history"]) == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_methods_whose_inputs_cannot_be_built_say_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(
        cfg.ConfigError, match="method 'saln' needs reference features from encoder 'resnet50'"
    ):
        fit(tiny(tmp_path, "saln", **{"features.encoder": "resnet50"}), tmp_path / "a")
    with pytest.raises(
        cfg.ConfigError, match=r"method 'jest' needs a reference model .*reference_fraction"
    ):
        fit(tiny(tmp_path, "jest", **{"data.reference_fraction": 0.0}), tmp_path / "b")


def test_a_filter_ratio_that_keeps_no_row_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        cfg.ConfigError, match=r"batch_size=4 with train.filter_ratio=0.8: .*keeps 0"
    ):
        fit(tiny(tmp_path, "saln", **{"train.batch_size": 4}), tmp_path / "run")


@pytest.mark.parametrize(
    "setting", [{"train.batch_size": 5000}, {"train.learner_batch_size": 1000}]
)
def test_a_step_larger_than_the_training_split_is_refused(
    tmp_path: Path, setting: dict[str, int]
) -> None:
    refused = r"loads \d+ rows but the training split has \d+ rows: lower train\."
    with pytest.raises(cfg.ConfigError, match=refused):
        fit(tiny(tmp_path, "uniform", **setting), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_one_trained_row_per_step_is_refused_for_a_batchnorm_learner(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match=r"trains 1 row .*batch_size >= 10"):
        fit(tiny(tmp_path, "saln", **{"train.batch_size": 5}), tmp_path / "run")
    with pytest.raises(cfg.ConfigError, match=r"\(train.learner_batch_size=1\).*size >= 2$"):
        fit(tiny(tmp_path, "loss", **{"train.learner_batch_size": 1}), tmp_path / "run")


@pytest.mark.parametrize("method", ["saln", "loss"])
def test_short_tails_train_a_learner_whose_last_maps_are_one_pixel(
    tmp_path: Path, method: str
) -> None:
    # torchvision's ResNet-18 at 16 px ends in 1x1 maps, where BatchNorm cannot train on one
    # row. The training split leaves a short tail whose 20% share is one row: it trains two.
    recorder = Recorder()
    overrides = {"model.learner": "resnet18", "train.epochs": 1}
    summary = fit(tiny(tmp_path, method, **overrides), tmp_path / "run", callbacks=[recorder])
    loaded, kept = recorder.sizes[-1]
    assert loaded * 10 // 50 == 1 and kept == 2
    assert math.isfinite(summary.final_train_loss)


@pytest.mark.slow
def test_a_compiled_learner_trains_as_an_eager_one_and_saves_plain_weights(
    tmp_path: Path,
) -> None:
    # The same run with and without torch.compile: its fused kernels round differently, so
    # equal to a few decimals (measured: train loss 1.87877 against 1.87886), not bit for bit.
    # Batches of 67 cut the 1005 training rows evenly: one shape, compiled once.
    one_shape = {"train.epochs": 1, "train.batch_size": 67}
    runs = {
        compiled: fit(
            tiny(tmp_path, "standard", **{"train.compile": compiled, **one_shape}),
            tmp_path / f"compiled-{compiled}",
        )
        for compiled in (False, True)
    }
    for key, tolerance in (("final_train_loss", 0.01), ("final_val_loss", 0.05)):
        got, expected = getattr(runs[True], key), getattr(runs[False], key)
        assert got == pytest.approx(expected, abs=tolerance), key
    # torch.compile wraps the learner: its checkpoints must still load into a plain one.
    plain = build_run(tiny(tmp_path, "standard")).model
    for name in ("checkpoint.pt", "best_model.pt"):
        state = torch.load(tmp_path / "compiled-True" / name, weights_only=False)
        plain.load_state_dict(state.get("model", state))  # strict: the same keys, no prefix


def test_cli_train_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import saln.cli

    args = [
        sys.executable,
        "-m",
        "saln",
        "train",
        "--method",
        "uniform",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "data.image_size=16",
        "--no-progress",
    ]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "uniform: best val acc" in done.stdout
    # A misspelt key is a user's error: one line, no traceback (in this process: it trains
    # nothing, and an exception would fail the test).
    assert saln.cli.main(["train", "--set", "train.epoch=2"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err


def test_progress_reports_running_loss_accuracy_and_throughput(tmp_path: Path) -> None:
    class Seen(Callback):
        def __init__(self) -> None:
            self.events: list[dict[str, float]] = []

        def on_progress(self, epoch: int, step: int, running: dict[str, float]) -> None:
            self.events.append(running)

    seen = Seen()
    config = tiny(
        tmp_path, "standard", **{"train.progress": True, "train.batch_size": 16, "train.epochs": 1}
    )
    fit(config, tmp_path / "run", callbacks=[seen])
    assert len(seen.events) >= 2  # every 25 steps of ~60
    assert all(
        math.isfinite(e["loss"]) and 0 <= e["acc"] <= 1 and e["rows_per_s"] > 0 for e in seen.events
    )


def test_a_failed_set_up_leaves_nothing_to_resume(tmp_path: Path) -> None:
    from saln.data import DataError

    broken = tiny(tmp_path, "uniform", **{"data.dataset": f"imagefolder:{tmp_path / 'missing'}"})
    with pytest.raises(DataError, match="no folder"):
        fit(broken, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert (
        fit(tiny(tmp_path, "uniform", **{"train.epochs": 1}), tmp_path / "run").method == "uniform"
    )


@pytest.mark.parametrize(
    ("device", "message"), [("gpu0", "is not a device"), ("cuda", "CUDA is not available")]
)
def test_bad_devices_are_named(tmp_path: Path, device: str, message: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(cfg.ConfigError, match=message):
        fit(tiny(tmp_path, "uniform", **{"train.device": device}), tmp_path / "run")


def test_the_tracker_resolves_selected_positions_at_the_epoch_end() -> None:
    from saln.train.tracking import SelectionTracker

    tracker = SelectionTracker(np.array([0, 1, 2, 0, 1, 2]), num_classes=3)
    tracker.start_epoch()
    tracker.record(torch.tensor([5, 0, 3]), torch.tensor([2, 0]))  # rows 3 and 5
    tracker.record(torch.tensor([1, 2, 4]))  # all three
    row = tracker.end_epoch()
    assert row["class_histogram"] == [1, 2, 2]  # labels of rows 3, 5, 1, 2, 4
    assert row["distinct_trained_epoch"] == 5 and tracker.epochs_kept.tolist() == [0, 1, 1, 1, 1, 1]


@contextlib.contextmanager
def no_host_syncs(device: str) -> Iterator[None]:
    """Raise on any GPU-to-host sync inside the block (nothing to check on CPU)."""
    if device != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("method", ["loss", "rho_loss", "jest"])
def test_model_aware_steps_keep_their_share_without_a_host_sync(
    tmp_path: Path, method: str, device: str
) -> None:
    """Scoring, selecting and training a step queue GPU work without one host sync; the CPU
    case runs the same calls, so a renamed one fails here, not first on a GPU."""
    from saln.train.placement import row_choice, train_rows

    config = tiny(tmp_path, method, **{"train.device": device, "data.loader": "resident"})
    ctx = build_run(config)
    plan = ctx.sampler.plan_epoch()
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    choose_rows = row_choice(ctx, 0)
    batches = ctx.train_data.batches(plan.rows[:3], train=True, seed=0)
    first = next(batches)  # warm-up: allocations, cuDNN autotuning
    choose_rows(ctx, first, gen, 0, 0)
    kept = []
    with no_host_syncs(device):
        for step, batch in enumerate(batches, start=1):
            rows = choose_rows(ctx, batch, gen, 0, step)
            assert rows.positions is not None
            images, labels, indices = batch
            train_rows(ctx, images[rows.positions], labels[rows.positions], indices, rows)
            kept.append(rows.positions)
    # 10 of each loaded 50 (filter ratio 0.8), distinct rows
    assert [len(set(p.tolist())) for p in kept] == [10, 10]


def test_cuda_graphs_are_refused_where_they_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match=r"one process on a CUDA device.*=auto or false"):
        build_run(tiny(tmp_path, "standard", **{"train.device": "cpu", "train.cuda_graphs": True}))
    with pytest.raises(cfg.ConfigError, match=r"eager SGD steps.*optim.optimizer=sgd"):
        tiny(tmp_path, "standard", **{"train.cuda_graphs": True, "optim.optimizer": "adamw"})
    with pytest.raises(cfg.ConfigError, match=r"run is on cpu: set train.device=cuda"):
        build_run(tiny(tmp_path, "saln", **{"train.device": "cpu", "features.cuda_graph": True}))
    with pytest.raises(cfg.ConfigError, match=r"set features.solver=lanczos or auto"):
        tiny(tmp_path, "saln", **{"features.cuda_graph": True, "features.solver": "exact"})
    with pytest.raises(cfg.ConfigError, match=r"train.cuda_graphs='yes' must be true, false or"):
        tiny(tmp_path, "standard", **{"train.cuda_graphs": "yes"})


def test_cuda_graphs_auto_turns_on_only_where_graphs_can_replay(tmp_path: Path) -> None:
    auto = tiny(tmp_path, "saln")
    assert auto.train.cuda_graphs == "auto" and auto.features.cuda_graph == "auto"
    assert cfg.graphed_steps(auto, "cuda", 1)
    assert not cfg.graphed_steps(auto, "cpu", 1)
    assert not cfg.graphed_steps(auto, "cuda", 2)  # DDP's hooks cannot be captured
    for other in ({"train.compile": True}, {"optim.optimizer": "adamw"}):
        assert not cfg.graphed_steps(tiny(tmp_path, "saln", **other), "cuda", 1)
    off = tiny(tmp_path, "saln", **{"train.cuda_graphs": False})
    assert not cfg.graphed_steps(off, "cuda", 1)
    assert cfg.graphed_selection(auto.features)
    exact = tiny(tmp_path, "saln", **{"features.solver": "exact"})
    assert not cfg.graphed_selection(exact.features)
    assert not cfg.graphed_selection(
        tiny(tmp_path, "saln", **{"features.cuda_graph": False}).features
    )
    # On CPU, auto runs eagerly and says so.
    fit(auto, tmp_path / "run")
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["cuda_graphs"] == {"train_steps": False, "lanczos_solves": False}


@pytest.fixture
def same_cudnn_kernels() -> Iterator[None]:
    """Eager and graphed runs must pick the same kernels to be compared closely."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def cuda_batches(sizes: list[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(n, 3, 16, 16, generator=gen).cuda(),
            torch.randint(0, 10, (n,), generator=gen).cuda(),
        )
        for n in sizes
    ]


def fresh_learner() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The same small CNN and fused SGD every call."""
    from saln.models import build_learner

    torch.manual_seed(0)
    model = build_learner("small_cnn", 10).cuda()
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, fused=True)


@pytest.mark.gpu
def test_graphed_steps_train_as_eager_steps_do(same_cudnn_kernels: None) -> None:
    """The same model, data and learning-rate change, stepped eagerly and from CUDA graphs."""
    from saln.train.graphs import WARMUP_STEPS, GraphedStep
    from saln.train.step import train_step

    batches = cuda_batches([12, 12, 12, 12, 5], seed=0)  # four 12-row batches, an epoch's last
    finals, losses = [], []
    for graphed in (False, True):
        model, optimizer = fresh_learner()
        graphs = GraphedStep(model, optimizer, autocast=False)
        seen = []
        for _epoch in range(2):
            for x, y in batches:
                step = graphs(x, y) if graphed else train_step(model, optimizer, x, y, False)
                seen.append(float(step[0]))
            optimizer.param_groups[0]["lr"] = 0.01  # a schedule's next epoch
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        losses.append(seen)
        if graphed:  # the 12-row shape was captured (after its warm-up), the 5-row one was not
            assert [key[0][0] for key in graphs._cache.graphs] == [12]
            assert graphs._warm[(5, 3, 16, 16)] == 2 < WARMUP_STEPS
    assert np.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    assert torch.allclose(finals[0], finals[1], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_graphed_weighted_steps_train_as_eager_ones_do(same_cudnn_kernels: None) -> None:
    """InfoBatch's step (per-row loss weights in, per-row losses out), eagerly and from CUDA
    graphs: the same losses each step and the same final weights."""
    from saln.train.graphs import GraphedWeightedStep
    from saln.train.step import weighted_train_step

    batches = cuda_batches([12] * 6, seed=2)
    weights = [torch.rand(12, generator=torch.Generator().manual_seed(i)).cuda() + 0.5
               for i in range(6)]  # fmt: skip
    finals, losses = [], []
    for graphed in (False, True):
        model, optimizer = fresh_learner()
        graphs = GraphedWeightedStep(model, optimizer, autocast=False)
        seen = []
        for (x, y), w in zip(batches, weights, strict=True):
            if graphed:
                out = graphs(x, y, w, 1.0)
            else:
                out = weighted_train_step(model, optimizer, x, y, w, False)
            seen.append(out[2].cpu())
        if graphed:
            assert len(graphs._cache.graphs) == 1 and not graphs.eager_only  # it did replay
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        losses.append(torch.stack(seen))
    assert torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    assert torch.allclose(finals[0], finals[1], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_graphed_scoring_passes_score_as_eager_ones_do(same_cudnn_kernels: None) -> None:
    """Loss selection (score 16 rows, train the 4 highest) with eager and with graphed scoring
    and steps: the same scores, the same kept rows, the same weights and running stats."""
    from saln.train.graphs import GraphedScorer, GraphedStep
    from saln.train.step import score_losses, train_step

    batches = cuda_batches([16] * 8, seed=1)
    scores, finals = [], []
    for graphed in (False, True):
        model, optimizer = fresh_learner()
        step = GraphedStep(model, optimizer, autocast=False)
        score = GraphedScorer(model, autocast=False)
        seen = []
        for x, y in batches:
            losses = score(x, y) if graphed else score_losses(model, x, y, False)
            kept = losses.topk(4).indices
            if graphed:
                step(x[kept], y[kept])
            else:
                train_step(model, optimizer, x[kept], y[kept], False)
            seen.append(losses.cpu())
        if graphed:
            assert len(score._cache.graphs) == 1 and not score.eager_only  # it did replay
        scores.append(torch.stack(seen))
        state = model.state_dict().values()  # weights, running stats and batch counts
        finals.append(torch.cat([t.detach().flatten().float() for t in state]))
    assert torch.allclose(scores[0], scores[1], rtol=1e-4, atol=1e-5)
    assert torch.allclose(finals[0], finals[1], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_a_failed_step_capture_warns_and_trains_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host sync inside the step makes the real capture fail; training goes on eagerly."""
    from saln.models import build_learner
    from saln.train import graphs
    from saln.train.step import train_step

    def syncing(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, correct = train_step(*args, **kwargs)
        float(loss_sum)  # a host sync: not allowed while a stream is being captured
        return loss_sum, correct

    monkeypatch.setattr(graphs, "train_step", syncing)
    model = build_learner("small_cnn", 10).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, fused=True)
    step = graphs.GraphedStep(model, optimizer, autocast=False)
    x, y = torch.randn(12, 3, 16, 16, device="cuda"), torch.randint(0, 10, (12,), device="cuda")
    for _ in range(graphs.WARMUP_STEPS):
        step(x, y)
    with pytest.warns(RuntimeWarning, match="train.cuda_graphs: capturing a CUDA graph failed"):
        step(x, y)
    before = [p.detach().clone() for p in model.parameters()]
    loss_sum, _ = step(x, y)
    assert step.eager_only and not step._cache.graphs and torch.isfinite(loss_sum)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def count_host_syncs(config: cfg.Config, out: Path) -> tuple[Counter[str], int]:
    """Synchronising CUDA calls during a whole run, by the line that made them, and its steps."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = fit(config, out, overwrite=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    where = Counter(
        f"{Path(w.filename).name}:{w.lineno}"
        for w in caught
        if "synchronizing CUDA operation" in str(w.message)
    )
    return where, summary.steps


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["standard", "saln", "loss", "jest", "infobatch"])
def test_host_syncs_do_not_grow_with_the_number_of_steps(tmp_path: Path, method: str) -> None:
    """Whole runs through the engine on CUDA, once with 4x the steps: planning, evaluation and
    checkpoints may synchronise per epoch, but nothing may per step (it would idle the GPU)."""
    runs = {}
    for batch in (100, 25):
        config = tiny(
            tmp_path,
            method,
            **{
                "train.device": "cuda",
                "data.loader": "resident",
                "train.batch_size": batch,
                "train.check_every": 10_000,  # the divergence check's sync, off for this count
            },
        )
        runs[batch] = count_host_syncs(config, tmp_path / f"run-{batch}")
    (few, few_steps), (many, many_steps) = runs[100], runs[25]
    assert many_steps >= 3 * few_steps
    extra = sum(many.values()) - sum(few.values())
    assert extra < (many_steps - few_steps) / 4, f"syncs by line: {(many - few).most_common(5)}"


def test_parallel_runs_of_a_seed_train_one_reference_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rho_loss and jest of one seed, started together, share one reference model."""
    import threading
    import time

    from saln.data import build_dataset, stratified_split
    from saln.train import reference

    config = tiny(tmp_path, "jest")
    bundle = build_dataset("digits")
    split = stratified_split(bundle.train.labels, 0.15, 0.15, 0)
    trained = []

    def slow_training(*args: Any) -> tuple[torch.Tensor, dict[str, float]]:
        trained.append(1)
        time.sleep(0.5)  # long enough for the other thread to arrive while this one trains
        return torch.arange(len(bundle.train), dtype=torch.float32), {"reference_training_s": 0.5}

    monkeypatch.setattr(reference, "train_reference", slow_training)
    results: list[tuple[torch.Tensor, dict[str, float]]] = []
    unused: Any = None  # the data pipeline: only the replaced training would read it

    def run() -> None:
        results.append(
            reference.reference_losses(config, bundle, split, unused, torch.device("cpu"))
        )

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(trained) == 1 and len(results) == 2
    assert torch.equal(results[0][0], results[1][0])


def test_exclusive_makes_a_second_process_wait(tmp_path: Path) -> None:
    import multiprocessing
    import time

    from saln.io import exclusive

    lock, held = tmp_path / "x.lock", tmp_path / "held"

    def hold() -> None:
        with exclusive(lock):
            held.touch()
            time.sleep(1.0)

    child = multiprocessing.get_context("fork").Process(target=hold)
    child.start()
    while not held.exists():
        time.sleep(0.01)
    start = time.perf_counter()
    with exclusive(lock):
        waited = time.perf_counter() - start
    child.join()
    assert waited > 0.5


def test_the_first_non_finite_step_is_found_after_the_fact() -> None:
    from saln.train.tracking import EpochAccumulator

    acc = EpochAccumulator(torch.device("cpu"), capacity=5)
    assert acc.bad_step() is None
    for step, loss in enumerate([1.0, 2.0, math.nan, 3.0, math.inf]):
        acc.add(torch.tensor(loss), torch.tensor(1), 4, step)
    assert acc.bad_step() == 2 and acc.steps == 5


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_log_gets_one_plain_line_per_epoch_and_no_bar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With stderr redirected (``saln compare > log 2>&1``) each epoch once left a frozen
    ``\\r... 0%|  | 0/16`` bar in the log; bars belong on a terminal."""
    import io

    from saln.io import on_terminal
    from saln.train.callbacks import ProgressBar

    assert on_terminal(_Stream(tty=True)) and not on_terminal(_Stream(tty=False))
    assert not on_terminal(object())  # a stream without isatty is a log
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = ProgressBar("uniform", epochs=2)
    bar.on_epoch_start(0, steps=16)
    for step in range(16):
        bar.on_train_batch_end(0, step, rows=10)
    metrics = {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4}
    bar.on_epoch_end(0, {**metrics, "train_rows_per_s": 100.0})
    assert "\r" not in log.getvalue() and "%|" not in log.getvalue()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "uniform epoch 1/2: train loss 1.0000" in out


def test_a_run_leaves_the_callers_torch_state_as_it_was(tmp_path: Path) -> None:
    """fit seeds the global RNG every epoch and may set deterministic algorithms; the caller's
    generator state and flags are theirs, restored afterwards."""
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    fit(
        tiny(tmp_path, "uniform", **{"train.epochs": 1, "train.deterministic": True}),
        tmp_path / "r",
    )
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.figures
def test_drawing_a_report_leaves_matplotlib_alone(tmp_path: Path) -> None:
    """No backend switched when the plotting modules load (they once called
    ``matplotlib.use``), no pyplot figure left open by a drawing."""
    import importlib

    import matplotlib
    import matplotlib.pyplot as plt

    import saln.report.plots as plots
    import saln.report.visualize as visualize

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        importlib.reload(plots)
        importlib.reload(visualize)
        assert matplotlib.get_backend() == "svg"
        figures = plt.get_fignums()
        fig, ax = plots.subplots(figsize=(2.0, 2.0))
        ax.plot([0, 1], [1, 0])
        plots.save(fig, tmp_path / "p.png")
        assert plt.get_fignums() == figures
        assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        matplotlib.use(before)


def test_label_smoothing_trains_on_the_smoothed_targets() -> None:
    """The step's loss against the formula: (1 - e) * CE + e * mean over classes of -log p."""
    from saln.train.step import train_step

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 1])
    logp = torch.log_softmax(model(x), dim=1).detach()
    by_hand = 0.8 * -logp[torch.arange(6), y] + 0.2 * -logp.mean(dim=1)
    loss_sum, _ = train_step(model, optimizer, x, y, False, label_smoothing=0.2)
    assert float(loss_sum) == pytest.approx(float(by_hand.sum()), rel=1e-6)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(cfg.ConfigError, match=r"optim\.label_smoothing"):
            cfg.load(None, {"optim.label_smoothing": bad})


@pytest.mark.parametrize("method", ["standard", "infobatch"])
def test_a_runs_steps_train_with_its_label_smoothing(tmp_path: Path, method: str) -> None:
    """optim.label_smoothing reaches the step a run trains with (and the weighted one)."""
    ctx = build_run(tiny(tmp_path, method, **{"optim.label_smoothing": 0.3}))
    batch = next(ctx.train_data.batches([[0, 1, 2, 3, 4, 5, 6, 7]], train=False, seed=0))
    ctx.model.train()
    with torch.no_grad():
        logp = torch.log_softmax(ctx.model(batch.images), dim=1)
    rows = torch.arange(8)
    expected = float((0.7 * -logp[rows, batch.labels] + 0.3 * -logp.mean(dim=1)).sum())
    if method == "standard":
        loss_sum, _ = ctx.step(batch.images, batch.labels, 1.0)
    else:
        loss_sum, _, _ = ctx.weighted_step(batch.images, batch.labels, torch.ones(8), 1.0)
    assert float(loss_sum) == pytest.approx(expected, rel=1e-4)


def test_tta_levels_against_their_views() -> None:
    """Level 1 is the mean over the image and its mirror; level 2 adds +-1 px shifts, built
    here by explicit indexing; a network blind to mirror and shift sees no change."""
    from saln.train.step import tta_logits

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(2, 3, 6, 6)
    net(x)

    def mirror_mean(v: torch.Tensor) -> torch.Tensor:
        return (net(v) + net(v[..., torch.arange(5, -1, -1)])) / 2

    rows = torch.tensor([1, 0, 1, 2, 3, 4])  # index 0 reflects row 1: shifted down/right by 1
    down = x[..., rows, :][..., :, rows]
    up = x[..., [1, 2, 3, 4, 5, 4], :][..., :, [1, 2, 3, 4, 5, 4]]
    with torch.no_grad():
        assert torch.equal(tta_logits(net, x, 0), net(x))
        assert torch.allclose(tta_logits(net, x, 1), mirror_mean(x))
        by_hand = 0.5 * mirror_mean(x) + 0.25 * (mirror_mean(down) + mirror_mean(up))
        assert torch.allclose(tta_logits(net, x, 2), by_hand, atol=1e-6)
        flat = torch.rand(2, 3, 1, 1).expand(2, 3, 6, 6)  # one colour: every view the same
        levels = [tta_logits(net, flat, level) for level in (0, 1, 2)]
    assert all(torch.allclose(levels[0], other, atol=1e-6) for other in levels[1:])


def test_a_run_records_its_tta_and_refuses_a_bad_level(tmp_path: Path) -> None:
    config = tiny(tmp_path, "standard", **{"eval.tta": 2, "train.epochs": 1})
    assert fit(config, tmp_path / "run").tta == 2
    with pytest.raises(cfg.ConfigError, match=r"eval\.tta=3 must be one of 0 \(none\)"):
        cfg.load(None, {"eval.tta": 3})
