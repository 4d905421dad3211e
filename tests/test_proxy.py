"""Method proxy: selection by a small proxy model, online and in two passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from saln import config as cfg
from saln.selection import SELECTORS, BatchView
from saln.train import placement
from saln.train.engine import fit
from saln.train.proxy import build_proxy, proxy_widths
from saln.train.step import frozen_batchnorm
from tests.test_train import tiny

PROXY = {"train.filter_ratio": 0.5, "selection.proxy_every": 2, "train.epochs": 2}


def test_the_kept_rows_are_the_top_proxy_losses_of_a_hand_checked_batch() -> None:
    config = cfg.load(None, {"model.learner": "airbench", "model.widths": [16, 32, 32],
                             "selection.proxy_resolution": 12, "data.image_size": 16})  # fmt: skip
    assert proxy_widths(config) == [4, 8, 8]  # a quarter of the learner's
    proxy = build_proxy(config, 10, torch.device("cpu"), rows_per_step=4)
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    losses = proxy.score(images, labels)
    small = F.interpolate(images, size=(12, 12), mode="bilinear", antialias=True)
    with torch.no_grad(), frozen_batchnorm(proxy.model):  # by hand, at the proxy's resolution
        by_hand = F.cross_entropy(proxy.model(small), labels, reduction="none")
    assert torch.allclose(losses, by_hand)
    view = BatchView(indices=torch.arange(8), labels=labels, losses=losses)
    kept = SELECTORS.build("proxy").select(view, 3).positions
    assert set(kept.tolist()) == set(torch.argsort(by_hand, descending=True)[:3].tolist())


def test_the_proxy_trains_every_kth_call_only() -> None:
    proxy = build_proxy(cfg.load(None, {"selection.proxy_every": 3}), 10, torch.device("cpu"), 4)
    before = [p.detach().clone() for p in proxy.model.parameters()]
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    changed = []
    for _ in range(6):
        proxy.learn(images, labels)
        now = [p.detach().clone() for p in proxy.model.parameters()]
        changed.append(any(not torch.equal(a, b) for a, b in zip(before, now, strict=True)))
        before = now
    assert changed == [False, False, True, False, False, True]


def kept_rows(config: cfg.Config, out: Path) -> dict[tuple[int, int], list[int]]:
    """Every step's kept positions, as the row choice returned them."""
    seen: dict[tuple[int, int], list[int]] = {}

    def recording(choice: Any) -> Any:
        def choose(ctx: Any, batch: Any, gen: Any, epoch: int, step: int) -> Any:
            rows = choice(ctx, batch, gen, epoch, step)
            seen[(epoch, step)] = rows.positions.tolist()
            return rows

        return choose

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(placement.PLACEMENTS, "step", recording(placement.score_and_select))
        patch.setattr(placement, "replayed_rows", recording(placement.replayed_rows))
        fit(config, out)
    return seen


def test_two_passes_replay_what_the_first_pass_chose_the_online_rows(tmp_path: Path) -> None:
    from saln.train.proxy_pass import cached_first_pass

    online = kept_rows(tiny(tmp_path, "proxy", **PROXY), tmp_path / "online")
    first = tiny(tmp_path, "proxy", **PROXY, **{"selection.proxy_pass": "first"})
    replayed = kept_rows(first, tmp_path / "first")
    from saln.data import build_dataset

    data = build_dataset("digits", "data", False).train.fingerprint()
    chosen, seconds = cached_first_pass(first, data, 0, 1, lambda: pytest.fail("not cached"))
    assert {k: v.tolist() for k, v in chosen.items()} == replayed
    assert replayed == online  # the pass's proxy saw the online proxy's batches, in order
    summary = fit(first, tmp_path / "first", resume=True)
    assert summary.one_off["proxy_pass_s"] == pytest.approx(seconds)


def test_a_proxy_run_records_its_cost(tmp_path: Path) -> None:
    summary = fit(tiny(tmp_path, "proxy", **PROXY, **{"selection.proxy_resolution": 12}),
                  tmp_path / "run")  # fmt: skip
    assert summary.selection_flops_per_step and summary.selection_flops_per_step > 0
    assert summary.selection_share_of_step > 0 and "proxy_init_s" in summary.one_off
    assert summary.kept_batch == 25 and summary.loaded_batch == 50


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"selection.proxy_every": 0}, "selection.proxy_every"),
        ({"selection.proxy_widths": [8, 16]}, "selection.proxy_widths"),
        ({"selection.proxy_widths": [8, 0, 16]}, "selection.proxy_widths"),
        ({"selection.proxy_learner": "small_cnn", "selection.proxy_widths": [4, 8, 8]},
         "selection.proxy_learner=airbench"),
        ({"selection.proxy_resolution": 0}, "selection.proxy_resolution"),
        ({"selection.proxy_pass": "second"}, "selection.proxy_pass"),
    ],
)  # fmt: skip
def test_bad_proxy_settings_are_refused_naming_the_key(
    settings: dict[str, object], said: str
) -> None:
    with pytest.raises(cfg.ConfigError, match=said):
        cfg.load(None, settings)
