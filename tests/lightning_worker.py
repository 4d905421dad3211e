"""examples/lightning_loop.py under a recording callback: ``python tests/lightning_worker.py OUT
METHOD EPOCHS DEVICES`` writes what each process trained to ``OUT/rankR.json`` (Lightning's
ddp launches this script again for the other ranks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from lightning_loop import build, test_accuracy


class Record(pl.Callback):
    """Each epoch's planned pool and the global indices of every batch trained."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pool = sorted(pl_module.curator.pool.indices.tolist())
        self.epochs.append({"pool": pool, "batches": []})

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.epochs[-1]["batches"].append(batch[2].tolist())


def run(out: Path, method: str, epochs: int, devices: int) -> dict[str, Any]:
    record = Record()
    trainer, module, loader = build(method, epochs, devices, [record])
    trainer.fit(module, loader)
    found = {
        "epochs": record.epochs,
        "accuracy": test_accuracy(module),
        "world_size": trainer.world_size,
        "logged": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(found))
    return found


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
