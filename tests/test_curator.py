"""The Curator: a saln method in a plain loop keeps the rows ``saln train`` keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saln import Curator
from saln.loop.dealing import DealtBatches
from saln.sampling import SelectiveBatchSampler
from saln.train.setup import build_run
from tests.test_train import tiny

EPOCHS = 3


def planned(sampler: object, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    return [list(rows) for rows in sampler]  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["uniform", "saln", "spectral_strata", "class_stratified"])
def test_a_model_free_method_keeps_the_rows_saln_train_keeps(tmp_path: Path, method: str) -> None:
    ctx = build_run(tiny(tmp_path, method, **{"train.epochs": EPOCHS}))
    features = None if ctx.features is None else ctx.features.numpy()
    curator = Curator(
        ctx.split.train, method, epochs=EPOCHS, batch_size=50, features=features,
        labels=ctx.bundle.train.labels,
    )  # fmt: skip
    for epoch in range(EPOCHS):
        ctx.sampler.set_epoch(epoch)
        curator.set_epoch(epoch)
        assert list(curator.batch_sampler) == ctx.sampler.plan_epoch().rows


def test_infobatch_plans_what_saln_train_plans_from_the_same_losses(tmp_path: Path) -> None:
    ctx = build_run(tiny(tmp_path, "infobatch", **{"train.epochs": 8}))
    curator = Curator(ctx.split.train, "infobatch", epochs=8, batch_size=50)
    scores = np.full(len(ctx.bundle.train), np.nan)
    scores[ctx.split.train] = np.random.default_rng(0).gamma(1.0, 1.0, len(ctx.split.train))
    for planner in (ctx.planner, curator.planner):
        planner.load_state_dict({"scores": scores})
    ctx.planner.before_epoch(2)
    ctx.sampler.set_epoch(2)
    curator.set_epoch(2)
    assert list(curator.batch_sampler) == ctx.sampler.plan_epoch().rows


def test_infobatch_weights_the_kept_low_loss_rows_and_records_every_loss() -> None:
    curator = Curator(100, "infobatch", epochs=8, batch_size=10, prune_ratio=0.5)
    scores = np.where(np.arange(100) < 50, 0.1, 5.0)  # the first half below the mean
    curator.planner.load_state_dict({"scores": scores})
    curator.set_epoch(1)
    batch = torch.as_tensor(next(iter(curator.batch_sampler)))
    per_sample = torch.rand(len(batch), requires_grad=True)
    loss = curator.loss(per_sample, batch)
    weights = torch.where(batch < 50, 2.0, 1.0)
    assert float(loss.detach()) == pytest.approx(float((per_sample * weights).mean().detach()))
    stats = curator.end_epoch()
    assert 0.6 < stats["kept_share"] < 0.9  # about half of the low-loss half left out


def test_a_model_aware_method_trains_the_highest_losses_of_the_loaded_batch() -> None:
    curator = Curator(100, "loss", epochs=1, batch_size=10, filter_ratio=0.8)
    curator.set_epoch(0)
    batch = torch.as_tensor(next(iter(curator.batch_sampler)))
    assert len(batch) == 10  # loaded whole: the step chooses
    per_sample = torch.arange(10, dtype=torch.float32)
    loss = curator.loss(per_sample, batch)
    assert curator.last_kept is not None and sorted(curator.last_kept.tolist()) == [8, 9]
    assert float(loss) == pytest.approx(8.5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.loss(torch.tensor(1.0), torch.arange(4)), r"reduction='none'"),
        (lambda c: c.loss(torch.rand(3), torch.arange(4)), "3 losses for 4 indices"),
        (lambda c: c.loss(torch.rand(2), torch.tensor([5, 100])), r"in \[0, 100\), got 5..100"),
        (
            lambda c: Curator(100, "uniform", epochs=1, device="meta").loss(
                torch.rand(2), torch.arange(2)
            ),
            "the losses are on cpu and the Curator on meta: pass device='cpu'",
        ),
        (
            lambda c: Curator(100, "saln", epochs=1, features=np.ones((50, 4))),
            "features have 50 rows and the training set indexes up to 99",
        ),
        (lambda c: Curator(100, "rho_loss", epochs=1), "pass ref_losses="),
        (lambda c: Curator(100, "unknown", epochs=1), "unknown method 'unknown'"),
    ],
)
def test_bad_input_says_what_to_pass(call: object, match: str) -> None:
    curator = Curator(100, "loss", epochs=1, batch_size=10)
    with pytest.raises(ValueError, match=match):
        call(curator)  # type: ignore[operator]


@pytest.mark.parametrize("selector", ["uniform", "saln"])
def test_every_rank_deals_each_rank_the_rows_it_would_plan_alone(selector: str) -> None:
    table = torch.randn(1000, 8, generator=torch.Generator().manual_seed(1))
    made = {"batch_size": 40, "selector": selector, "features": table, "seed": 2}
    every = SelectiveBatchSampler(1000, world_size=3, every_rank=True, **made)  # type: ignore[arg-type]
    alone = [SelectiveBatchSampler(1000, rank=r, world_size=3, **made) for r in range(3)]  # type: ignore[arg-type]
    for epoch in range(2):
        rows = planned(every, epoch)
        assert len(rows) == len(every) == 24  # 25 super-batches, as many for each of 3 ranks
        for rank, sampler in enumerate(alone):
            assert rows[rank::3] == planned(sampler, epoch)
        if selector == "saln":  # per-batch statistics follow the batches
            gaps = every.plan_epoch().stats["gap"]
            assert torch.equal(gaps[1::3], alone[1].plan_epoch().stats["gap"])


def test_a_step_is_refused_unless_its_batch_is_the_next_one_dealt() -> None:
    curator = Curator(100, "uniform", epochs=1, batch_size=10)
    curator.set_epoch(0)
    batches = [torch.as_tensor(b) for b in curator.batch_sampler]
    curator.loss(torch.rand(2), batches[0])
    with pytest.raises(ValueError, match="skipped 1 of the batches dealt to it"):
        curator.loss(torch.rand(2), batches[2])  # a second sharding took every other batch
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        curator.loss(torch.rand(2), torch.tensor([0, 1]))  # never dealt: a loader of its own
    theirs = DealtBatches(
        SelectiveBatchSampler(100, 10, "uniform", rank=1, world_size=2, every_rank=True)
    )
    first = next(iter(theirs))  # dealt to process 0: accelerate did not prepare the loader
    with pytest.raises(ValueError, match="got a batch dealt to another process"):
        theirs.take(first)


def test_sharded_by_names_the_loaders_it_knows() -> None:
    with pytest.raises(ValueError, match=r"sharded_by must be one of \['accelerate', 'saln'\]"):
        Curator(100, "uniform", epochs=1, sharded_by="horovod")


def test_to_moves_infobatch_weights_and_reference_losses() -> None:
    curator = Curator(100, "rho_loss", epochs=1, ref_losses=torch.rand(100)).to("meta")
    assert curator.ref_losses is not None and curator.ref_losses.device.type == "meta"
    pruning = Curator(100, "infobatch", epochs=4).to("meta")
    pruning.set_epoch(0)
    assert pruning.planner.weights(torch.arange(3)).device.type == "meta"


def test_reference_losses_are_each_samples_loss_computed_once(tmp_path: Path) -> None:
    from torch import nn
    from torch.utils.data import TensorDataset

    from saln.loop import reference_losses

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3))
    x, y = torch.randn(70, 5), torch.randint(0, 3, (70,))
    data = TensorDataset(x, y, torch.arange(70))
    cache = tmp_path / "ref.pt"
    losses = reference_losses(model, data, batch_size=16, cache=cache)
    model.eval()
    expected = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    torch.testing.assert_close(losses, expected.detach())
    assert torch.equal(reference_losses(model, data, cache=cache), losses)  # read back
    with torch.no_grad():
        model[0].bias.add_(1.0)  # other weights: the cache is stale, so it is recomputed
    changed = reference_losses(model, data, cache=cache)
    torch.testing.assert_close(changed, nn.functional.cross_entropy(model(x), y, reduction="none"))
    with pytest.raises(ValueError, match="reduction='none'"):
        reference_losses(model, data, loss_fn=nn.functional.cross_entropy)
    curator = Curator(70, "rho_loss", epochs=1, ref_losses=changed)
    assert curator.ref_losses is not None and torch.equal(curator.ref_losses, changed)


def proxy_curator(seed: int = 0, **overrides: object) -> Curator:
    """Method proxy on 200 rows of 6 features, 20 a batch, half kept, the proxy trained on
    every other step."""
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    options: dict[str, object] = {
        "epochs": 2, "batch_size": 20, "filter_ratio": 0.5, "proxy": net,
        "proxy_optimizer": torch.optim.SGD(net.parameters(), lr=0.5), "proxy_every": 2,
    }  # fmt: skip
    return Curator(200, "proxy", **{**options, **overrides})  # type: ignore[arg-type]


DATA = torch.randn(200, 6, generator=torch.Generator().manual_seed(3))
TARGETS = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(4))


def test_proxy_keeps_the_top_proxy_losses_and_trains_the_proxy_every_kth_step() -> None:
    import torch.nn.functional as F

    curator = proxy_curator()
    assert curator.proxy is not None
    net = curator.proxy.model
    curator.set_epoch(0)
    for step, rows in enumerate(curator.batch_sampler, start=1):
        indices = torch.as_tensor(rows)
        before = [p.detach().clone() for p in net.parameters()]
        with torch.no_grad():  # by hand: the proxy's losses before it learns
            by_hand = F.cross_entropy(net(DATA[indices]), TARGETS[indices], reduction="none")
        kept = curator.select(DATA[indices], TARGETS[indices], indices)
        assert set(kept.tolist()) == set(torch.topk(by_hand, 10).indices.tolist())
        learned = any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
        assert learned == (step % 2 == 0)
        per_sample = torch.rand(10)
        assert float(curator.loss(per_sample, indices[kept])) == pytest.approx(
            float(per_sample.mean())
        )


def test_a_proxy_curator_resumes_to_the_uninterrupted_choice() -> None:
    def run_epoch(curator: Curator, epoch: int) -> list[list[int]]:
        curator.set_epoch(epoch)
        chosen = []
        for rows in curator.batch_sampler:
            indices = torch.as_tensor(rows)
            kept = curator.select(DATA[indices], TARGETS[indices], indices)
            curator.loss(torch.rand(len(kept)), indices[kept])
            chosen.append(sorted(indices[kept].tolist()))
        curator.end_epoch()
        return chosen

    whole = proxy_curator()
    run_epoch(whole, 0)
    state = whole.state_dict()
    expected = run_epoch(whole, 1)
    resumed = proxy_curator(seed=5)  # another proxy init: the state must replace it
    resumed.load_state_dict(state)
    assert run_epoch(resumed, 1) == expected


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Curator(100, "proxy", epochs=1), "pass proxy=<an nn.Module"),
        (lambda: proxy_curator(proxy_every=0), "proxy_every must be an int >= 1"),
        (
            lambda: Curator(100, "loss", epochs=1, proxy=torch.nn.Linear(2, 2)),
            "scores without a proxy: pass proxy= only with method 'proxy'",
        ),
    ],
)
def test_a_proxy_curator_refuses_bad_input_naming_the_argument(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_a_proxy_curator_refuses_a_loss_of_rows_it_did_not_choose() -> None:
    curator = proxy_curator()
    curator.set_epoch(0)
    indices = torch.as_tensor(next(iter(curator.batch_sampler)))
    with pytest.raises(ValueError, match=r"call kept = curator\.select"):
        curator.loss(torch.rand(20), indices)  # every loaded row: select was not called
    kept = curator.select(DATA[indices], TARGETS[indices], indices)
    with pytest.raises(ValueError, match=r"call kept = curator\.select"):
        curator.loss(torch.rand(20), indices)  # the loaded rows, not the kept ones
    assert len(kept) == 10


def test_select_keeps_every_row_for_a_method_without_a_proxy() -> None:
    curator = Curator(100, "loss", epochs=1, batch_size=10)
    assert torch.equal(curator.select(torch.rand(4, 3), torch.arange(4), torch.arange(4)),
                       torch.arange(4))  # fmt: skip
