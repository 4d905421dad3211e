"""airbench's training recipe as config keys: decoupled units, the triangle schedule and
progress, lookahead, the alternating flip and translation, the whitening bias's epochs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from saln import config as cfg
from saln.data import build_dataset
from saln.data.flip_translate import FlipTranslate, alternating_flips, translate
from saln.data.loaders import build_pipeline
from saln.models.airbench import Airbench
from saln.train.callbacks import Callback
from saln.train.engine import fit
from saln.train.lookahead import Lookahead, lookahead_decay
from saln.train.schedules import (
    LR_SCHEDULES,
    EpochProgress,
    LearningRates,
    Progress,
    coupled_hyperparameters,
    param_groups,
)
from tests.test_train import KillAt, tiny

RECIPE = {
    "model.learner": "airbench",
    "model.widths": [8, 16, 16],
    "model.whiten_bias_epochs": 1,
    "data.augment": "flip_translate",
    "data.loader": "resident",
    "optim.decoupled": True,
    "optim.lr": 100.0,  # per 1024 examples: 0.64 a step at batch 50
    "optim.weight_decay": 0.01,
    "optim.momentum": 0.85,
    "optim.nesterov": True,
    "optim.bias_lr_scale": 16.0,
    "optim.label_smoothing": 0.2,
    "optim.schedule": "triangle",
    "optim.lookahead": 2,
    "eval.tta": 2,
}


# Fewer training rows (about 500 digits) where a test checks wiring, not learning.
SMALLER = {"data.val_fraction": 0.5, "data.reference_fraction": 0.2}


def recipe(tmp_path: Path, method: str = "standard", **overrides: Any) -> cfg.Config:
    return tiny(tmp_path, method, **{**RECIPE, **overrides})


def test_decoupled_units_convert_as_airbench_worked_them() -> None:
    # airbench94: lr 11.5 and weight decay 0.0153 per 1024 examples, momentum 0.85, batch 1024.
    # Its SGD (summed loss) steps lr 11.5 / (1024 * (1 + 1 / 0.15)) = 0.0014648 per example and
    # decays the weights by 0.0153 * 1024 / 7850.67 = 0.0019957 per step.
    lr, decay = coupled_hyperparameters(11.5, 0.0153, 0.85, 1024)
    assert lr == pytest.approx(1024 * 0.0014648, rel=1e-4)  # a mean loss: x the batch
    assert lr * decay == pytest.approx(0.0019957, rel=1e-4)
    half_lr, half_decay = coupled_hyperparameters(11.5, 0.0153, 0.85, 512)
    assert half_lr == pytest.approx(lr / 2) and half_decay == decay  # per example: unchanged


def test_norm_biases_get_the_scaled_lr_and_the_same_decay_per_step() -> None:
    model = Airbench(10, (8, 16, 16))
    optim = cfg.load(None, {"optim.lr": 0.1, "optim.weight_decay": 0.01}).optim
    scaled = cfg.load(None, {"optim.lr": 0.1, "optim.weight_decay": 0.01,
                              "optim.bias_lr_scale": 64.0}).optim  # fmt: skip
    assert len(param_groups(model, optim, 32)) == 1
    others, biases = param_groups(model, scaled, 32)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in biases["params"]} == {
        n for n, p in model.named_parameters() if "norm" in n and n.endswith("bias")
    }
    assert biases["lr"] == pytest.approx(6.4) and others["lr"] == pytest.approx(0.1)
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(0.1 * 0.01)


def test_the_triangle_rises_to_one_at_its_peak_and_falls_to_its_end() -> None:
    optim = cfg.Config().optim  # 0.2, 0.23, 0.07
    factor = LR_SCHEDULES["triangle"]
    at = [factor(Progress(0, 10, p * 10), optim) for p in (0.0, 0.115, 0.23, 0.615, 1.0)]
    assert at == pytest.approx([0.2, 0.6, 1.0, 0.535, 0.07])


def test_the_schedules_and_augmentations_the_config_accepts_are_the_registered_ones() -> None:
    from saln.data.loaders import TRAIN_AUGMENTS

    assert set(LR_SCHEDULES) == set(cfg.LR_SCHEDULES)
    assert set(TRAIN_AUGMENTS.names()) == set(cfg.AUGMENTATIONS)
    optim = cfg.Config().optim
    for name, factor in LR_SCHEDULES.items():  # only a per-step schedule moves within an epoch
        moves = factor(Progress(1, 4, 0.1), optim) != factor(Progress(1, 4, 0.9), optim)
        assert moves == (name in cfg.PER_STEP_SCHEDULES), name


def test_epoch_schedules_keep_their_torch_values() -> None:
    model = nn.Linear(2, 2)
    for name, torch_schedule in [
        ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7)),
        ("step", lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 5], gamma=0.1)),
    ]:
        reference = torch.optim.SGD(model.parameters(), lr=0.5)
        scheduler = torch_schedule(reference)
        reference.step()  # torch wants an optimizer step before each scheduler step
        ours = torch.optim.SGD(model.parameters(), lr=0.5)
        rates = LearningRates(ours, cfg.load(None, {"optim.schedule": name}).optim, 32)
        for epoch in range(7):
            rates.set(Progress(epoch, 7, 0.5))
            assert ours.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"])
            scheduler.step()


def progress_and_lr(config: cfg.Config, out: Path) -> list[tuple[float, float]]:
    """(progress before the step, the lr of a full step there) for every step of a run of
    ``config`` (a short last batch steps in proportion to its rows: that share taken out)."""
    from saln.train import engine

    seen: list[tuple[float, float]] = []
    original = EpochProgress.advance

    def advance(self: EpochProgress) -> None:  # the lr is set just before this
        seen.append((self.now().fraction, pending[0]))
        original(self)

    pending = [0.0]
    original_set = LearningRates.set

    def set_rate(self: LearningRates, progress: Progress, rows: int | None = None) -> None:
        original_set(self, progress, rows)
        share = 1.0 if rows is None else min(1.0, rows / self.rows_per_step)
        pending[0] = self.optimizer.param_groups[0]["lr"] / share

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochProgress, "advance", advance)
        patch.setattr(LearningRates, "set", set_rate)
        engine.fit(config, out)
    return seen


def test_infobatch_shortened_epochs_see_standards_lr_at_the_same_progress(tmp_path: Path) -> None:
    settings = {"train.epochs": 2, "optim.lookahead": None}  # InfoBatch prunes epoch 2
    standard = progress_and_lr(recipe(tmp_path, **settings), tmp_path / "standard")
    pruned = progress_and_lr(recipe(tmp_path, "infobatch", **settings), tmp_path / "infobatch")
    assert len(pruned) < len(standard)  # epoch 2 is shortened
    progress, lr = np.array(standard).T
    # standard's lr is piecewise linear between its steps (epoch 1's, at the triangle's peak,
    # are the pruned run's own), but flat past its last step: a pruned step can land there
    # (how many rows InfoBatch keeps depends on the losses, so on the machine's arithmetic)
    for at, rate in [(at, rate) for at, rate in pruned if at <= progress[-1]]:
        assert rate == pytest.approx(float(np.interp(at, progress, lr)), rel=1e-6)
    assert pruned[-1][0] > 0.9  # and it reaches the schedule's end
    base = coupled_hyperparameters(100.0, 0.01, 0.85, 50)[0]
    for at, rate in pruned:  # the triangle 0.2 -> 1 at 23% -> 0.07, by progress
        assert rate == pytest.approx(base * np.interp(at, [0, 0.23, 1], [0.2, 1, 0.07]))


def test_lookahead_matches_a_hand_computed_ema() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead = Lookahead(model, every=2)
    weights, average = [], 1.0
    for step, (w, progress) in enumerate([(2.0, 0.25), (3.0, 0.5), (5.0, 0.75), (7.0, 1.0)]):
        with torch.no_grad():
            model.weight.fill_(w)  # as if the optimizer had stepped there
        lookahead.after_step(progress)
        if step % 2 == 1:  # every second step: average <- d avg + (1 - d) w; w <- average
            d = 0.95**5 * progress**3
            average = d * average + (1 - d) * w
            w = average
        weights.append(float(model.weight.detach()))
        assert weights[-1] == pytest.approx(w)
    assert lookahead_decay(0.5) == pytest.approx(0.7737809 * 0.125)
    with torch.no_grad():
        model.weight.fill_(11.0)
    lookahead.finish()  # the end: the weights become the average
    assert float(model.weight.detach()) == pytest.approx(average)


def test_odd_epochs_flip_every_image_the_even_ones_did_not() -> None:
    first = torch.rand(1000, generator=torch.Generator().manual_seed(0)) < 0.5
    assert 0.4 < first.float().mean() < 0.6  # one random flip per image
    assert torch.equal(alternating_flips(first, 0), first)
    assert torch.equal(alternating_flips(first, 1), ~first)
    assert torch.equal(alternating_flips(first, 2), first)


def test_translation_is_a_crop_of_the_reflect_padded_image() -> None:
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    gen = torch.Generator().manual_seed(3)
    out = translate(x, 2, gen)
    dy, dx = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(3))
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    for i in range(2):
        crop = padded[i, :, int(dy[i]) : int(dy[i]) + 6, int(dx[i]) : int(dx[i]) + 6]
        assert np.array_equal(out[i].numpy(), crop)


def test_the_resident_loader_flips_by_index_and_epoch() -> None:

    source = build_dataset("digits", "data", False).train
    pipeline = build_pipeline("resident", source, 16, torch.device("cpu"),
                              augment="flip_translate", seed=5)  # fmt: skip
    rows = [[3, 7, 11, 200]]
    augment = pipeline.augment[True]  # type: ignore[attr-defined]
    assert isinstance(augment, FlipTranslate)
    with pytest.MonkeyPatch.context() as patch:  # no shift: the flips alone are compared
        patch.setattr("saln.data.flip_translate.TRANSLATE_PX", 0)
        even = next(pipeline.batches(rows, train=True, seed=1, epoch=0)).images
        odd = next(pipeline.batches(rows, train=True, seed=2, epoch=1)).images
    assert torch.allclose(odd, even.flip(-1))


def test_the_whitening_bias_trains_for_its_epochs_only(tmp_path: Path) -> None:
    class Bias(Callback):
        def __init__(self) -> None:
            self.values: list[torch.Tensor] = []

        def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
            self.values.append(model_ref[0].whiten.bias.detach().clone())

    model_ref: list[Airbench] = []
    from saln.train import setup

    build = setup.build_run

    def keep_model(*args: Any, **kwargs: Any) -> Any:
        ctx = build(*args, **kwargs)
        model_ref.append(ctx.model)
        return ctx

    bias = Bias()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("saln.train.engine.build_run", keep_model)
        fit(recipe(tmp_path, **{"train.epochs": 3, "optim.lookahead": None}),
            tmp_path / "run", callbacks=[bias])  # fmt: skip
    first, second, third = bias.values
    assert not torch.equal(first, torch.zeros_like(first))  # trained in epoch 1
    assert torch.equal(second, first) and torch.equal(third, first)  # frozen after


def test_the_recipe_resumes_after_a_kill_to_the_uninterrupted_result(tmp_path: Path) -> None:
    config = recipe(tmp_path, **{"train.epochs": 3})
    whole = fit(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "killed", callbacks=[KillAt(epoch=1, step=3)])
    resumed = fit(config, tmp_path / "killed", resume=True)
    losses = [
        [json.loads(row)["val_loss"] for row in (tmp_path / d / "metrics.jsonl").open()]
        for d in ("whole", "killed")
    ]
    assert losses[0] == losses[1]
    assert whole.test_acc_last == resumed.test_acc_last
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["lookahead"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["lookahead"]
    assert a["steps"] == b["steps"] > 0
    assert all(torch.equal(a["average"][k], b["average"][k]) for k in a["average"])
    assert whole.tta == 2 and math.isfinite(whole.final_val_loss)
    assert whole.final_val_acc > 0.4  # the recipe learns digits (chance: 0.1) in three epochs


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"optim.lookahead": 0}, "optim.lookahead"),
        ({"optim.triangle": [0.2, 1.5, 0.1]}, "optim.triangle"),
        ({"optim.triangle": [0.2, 0.3]}, "optim.triangle"),
        ({"optim.bias_lr_scale": 0}, "optim.bias_lr_scale"),
        ({"optim.schedule": "onecycle"}, "optim.schedule"),
        ({"data.augment": "flip_translate", "data.loader": "dataloader"}, "data.loader=resident"),
        ({"data.augment": "mixup"}, "data.augment"),
        ({"model.whiten_bias_epochs": 3}, "model.whiten_bias_epochs"),
        ({"model.learner": "airbench", "model.whiten_bias_epochs": -1}, "whiten_bias_epochs"),
    ],
)
def test_bad_recipe_settings_are_refused_naming_the_key(
    settings: dict[str, object], said: str
) -> None:
    with pytest.raises(cfg.ConfigError, match=said):
        cfg.validate(cfg.load(None, settings))


def test_a_short_last_batch_takes_a_step_in_proportion_in_decoupled_units() -> None:
    # A summed loss (airbench's) gives 64 rows a sixteenth of a 1024-row step's gradient; with
    # the mean loss saln trains on, the lr carries that share instead.
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.5)
    decoupled = cfg.load(None, {"optim.decoupled": True, "optim.schedule": "constant"}).optim
    rates = LearningRates(optimizer, decoupled, rows_per_step=1024)
    rates.set(Progress(0, 1), rows=64)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.5 / 16)
    rates.set(Progress(0, 1), rows=1024)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.5)
    plain = LearningRates(optimizer, cfg.Config().optim, rows_per_step=1024)
    plain.set(Progress(0, 1), rows=64)  # torch's units: a step is a step
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.5)


def test_a_comparison_runs_each_kind_of_method_on_the_recipe_each_decayed_to_its_end(
    tmp_path: Path,
) -> None:
    """The methods whose schedules are laid out differently (InfoBatch's shortened epochs, the
    budget controls' fewer epochs) and the proxy: every one ends on the triangle's end (the
    others are standard's layout, checked by test_every_method_trains_and_lowers_the_loss)."""
    from saln.experiments.compare import train_grid
    from saln.runs import RunStore

    config = recipe(tmp_path, **{"train.filter_ratio": 0.5, "train.epochs": 2, **SMALLER,
                                 "reference.epochs": 1, "optim.lookahead": 5})  # fmt: skip
    methods = ["proxy", "infobatch", "standard_matched@0.5", "standard_matched@infobatch"]
    train_grid(config, methods, [0], tmp_path / "cmp", nproc=1)  # compare, without its report
    for method in methods:
        run = tmp_path / "cmp" / "runs" / f"{method}-seed0"
        summary = RunStore(run).require_summary()
        keep = summary.kept_batch or 50
        peak = coupled_hyperparameters(100.0, 0.01, 0.85, keep)[0]
        last_lr = RunStore(run).metrics()[-1].lr
        assert 0 < last_lr < 0.15 * peak, method  # the triangle's end, whatever the budget
        assert summary.tta == 2 and math.isfinite(summary.final_val_loss), method
