"""saln in Lightning and Accelerate loops, with the real libraries on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from saln.sampling import EpochPool, SelectiveBatchSampler

pl = pytest.importorskip("pytorch_lightning")
HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
sys.path.insert(0, str(HERE))


def dealt(pool: list[int], epoch: int, rank: int, world_size: int) -> list[list[int]]:
    """The batches ``saln train`` gives ``rank`` from an epoch's pool (seed 0, 64 rows)."""
    sampler = SelectiveBatchSampler(
        EpochPool(np.asarray(pool), seed=0), 64, None, rank=rank, world_size=world_size
    )
    sampler.set_epoch(epoch)
    return sampler.plan_epoch().rows


@pytest.mark.slow
@pytest.mark.dist
def test_lightning_ddp_deals_each_process_its_batches_and_plans_alike(tmp_path: Path) -> None:
    worker = [sys.executable, str(HERE / "lightning_worker.py"), str(tmp_path), "infobatch", "3"]
    done = subprocess.run([*worker, "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for epoch in range(3):
        pool = ranks[0]["epochs"][epoch]["pool"]
        assert ranks[1]["epochs"][epoch]["pool"] == pool  # both ranks' losses, one plan
        trained = [ranks[r]["epochs"][epoch]["batches"] for r in range(2)]
        for rank in range(2):
            assert trained[rank] == dealt(pool, epoch, rank, 2)
        rows = [i for batches in trained for batch in batches for i in batch]
        assert len(rows) == len(set(rows)) > len(pool) - 2 * 64  # disjoint; a short tail dropped
    assert len(ranks[0]["epochs"][1]["pool"]) < 1500  # pruned
    assert ranks[0]["logged"]["saln/kept_share"] < 1.0
    assert min(r["accuracy"] for r in ranks) > 0.6  # ten classes: chance is 0.1


def test_lightning_trains_the_rows_the_curator_deals(tmp_path: Path) -> None:
    from lightning_loop import main

    from lightning_worker import run

    found = run(tmp_path, "infobatch", 3, 1)
    for epoch, record in enumerate(found["epochs"]):
        assert record["batches"] == dealt(record["pool"], epoch, 0, 1)
    assert len(found["epochs"][1]["pool"]) < 1500
    assert found["accuracy"] > 0.6
    assert main(["--method", "spectral_strata", "--epochs", "2"]) > 0.6  # the example as shipped


class StopAfter(pl.Callback):  # type: ignore[misc]
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


@pytest.mark.parametrize("method", ["infobatch", "proxy"])
def test_a_resumed_lightning_run_ends_where_an_uninterrupted_one_does(
    tmp_path: Path, method: str
) -> None:
    """InfoBatch's losses and the proxy's weights and optimizer travel in Lightning's
    checkpoint: the third epoch, planned or scored from them, trains the same rows to the same
    weights."""
    from lightning_loop import build

    trainer, whole, loader = build(method, 3, 1)
    trainer.fit(whole, loader)
    keep = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer, first, loader = build(method, 3, 1, [keep, StopAfter(2)])
    trainer.fit(first, loader)
    trainer, resumed, loader = build(method, 3, 1, [pl.callbacks.ModelCheckpoint(tmp_path)])
    trainer.fit(resumed, loader, ckpt_path=tmp_path / "last.ckpt")
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"max_epochs": 5}, r"Trainer\(max_epochs=5\) and Curator\(epochs=3\) differ"),
        ({"strategy": "ddp", "devices": 2}, "use_distributed_sampler=False"),  # Lightning's default
    ],
)
def test_lightning_refuses_a_trainer_that_would_train_other_rows(
    setting: dict[str, Any], match: str
) -> None:
    from saln import Curator
    from saln.loop.lightning import check_trainer

    trainer = pl.Trainer(accelerator="cpu", logger=False, **{"max_epochs": 3, **setting})
    with pytest.raises(ValueError, match=match):
        check_trainer(trainer, Curator(100, "infobatch", epochs=3))


@pytest.mark.parametrize("method", ["infobatch", "proxy"])
def test_the_three_example_loops_train_alike(method: str) -> None:
    """A plain loop, Accelerate and Lightning with the same Curator train the same rows with
    the same weights: the same test accuracy to the last digit."""
    pytest.importorskip("accelerate")
    import accelerate_loop
    import custom_loop
    import lightning_loop

    args = ["--method", method, "--epochs", "3"]
    accuracies = {loop.main(args) for loop in (custom_loop, accelerate_loop, lightning_loop)}
    assert len(accuracies) == 1 and accuracies.pop() > 0.6  # ten classes: chance is 0.1
