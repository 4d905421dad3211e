"""Phase timing that is real on GPU: CUDA events, resolved with one sync per epoch."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Accumulates seconds per named phase. On CUDA each phase is bracketed by CUDA events (no
    host sync inside the loop) and ``totals()`` synchronises once. Events time the GPU's
    timeline, so a phase counts both its kernels and any idle gap while the host prepares it
    (a DataLoader wait shows up as data time), and the phases partition the epoch."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((name, start, end))
            return
        begin = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - begin

    def totals(self) -> dict[str, float]:
        if self._events:
            torch.cuda.synchronize()
            for name, start, end in self._events:
                self.seconds[name] += start.elapsed_time(end) / 1e3
            self._events.clear()
        return dict(self.seconds)
