"""Typed training callbacks: progress, TensorBoard. The engine calls every hook on every one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from saln.io import on_terminal


class Callback:
    """Hooks with no-op defaults; override what you need."""

    def on_fit_start(self, info: dict[str, Any]) -> None: ...
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...
    def on_batch_selected(self, epoch: int, step: int, loaded: int, kept: int) -> None: ...
    def on_train_batch_end(self, epoch: int, step: int, rows: int) -> None: ...
    def on_progress(self, epoch: int, step: int, running: dict[str, float]) -> None: ...
    def on_eval_end(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None: ...
    def on_fit_end(self, summary: dict[str, Any]) -> None: ...
    def on_exception(self, error: BaseException) -> None: ...


class ProgressBar(Callback):
    """Epoch and step, with running train loss/accuracy and img/s; val metrics at epoch end."""

    def __init__(self, method: str, epochs: int) -> None:
        self.method, self.epochs = method, epochs
        self.bar: tqdm[Any] | None = None

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.bar = tqdm(
            total=steps,
            desc=f"{self.method} {epoch + 1}/{self.epochs}",
            unit="step",
            leave=False,
            dynamic_ncols=True,
            disable=not on_terminal(),
        )

    def on_train_batch_end(self, epoch: int, step: int, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_progress(self, epoch: int, step: int, running: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{running['loss']:.3f}",
                acc=f"{running['acc']:.3f}",
                img_s=f"{running['rows_per_s']:.0f}",
                refresh=False,
            )

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
        tqdm.write(
            f"{self.method} epoch {epoch + 1}/{self.epochs}: "
            f"train loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:.3f} | "
            f"val loss {metrics['val_loss']:.4f} "
            f"acc {metrics['val_acc']:.3f} | {metrics['train_rows_per_s']:.0f} img/s"
        )

    def on_exception(self, error: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoardLogger(Callback):
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, epoch + 1)
        self.writer.flush()

    def on_fit_end(self, summary: dict[str, Any]) -> None:
        self.writer.close()

    def on_exception(self, error: BaseException) -> None:
        self.writer.close()
