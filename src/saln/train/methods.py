"""Training methods: a selector (or none) plus how the run is shaped. No if/elif on names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from saln.config import Config, graphed_selection
from saln.registry import Registry
from saln.selection import SELECTORS, Selector


def _no_options(config: Config) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Method:
    """``selector`` None trains on every loaded row. ``matched_epochs`` shortens training to
    (1 - filter_ratio) of the epochs: the same number of trained examples as a selector."""

    name: str
    selector: str | None
    matched_epochs: bool = False
    options: Callable[[Config], dict[str, Any]] = field(default=_no_options)

    def build_selector(self, config: Config) -> Selector | None:
        if self.selector is None:
            return None
        return SELECTORS.build(self.selector, **self.options(config))

    def epochs(self, config: Config) -> int:
        if not self.matched_epochs:
            return config.train.epochs
        return max(1, round(config.train.epochs * (1 - config.train.filter_ratio)))


METHODS: Registry[Method] = Registry("method")

for _method in (
    Method("standard", None),
    Method("standard_matched", None, matched_epochs=True),
    Method("uniform", "uniform"),
    Method(
        "saln",
        "saln",
        options=lambda c: {
            "solver": c.features.solver,
            "cuda_graph": graphed_selection(c.features),
        },
    ),
    Method("loss", "loss"),
    Method("rho_loss", "rho_loss"),
    Method("jest", "jest", options=lambda c: {"n_chunks": c.train.jest_chunks}),
):
    METHODS.register(_method.name)(lambda m=_method: m)
