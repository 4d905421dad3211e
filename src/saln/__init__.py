"""saln: data curation during training by per-batch (joint) sample selection.

The flagship method is SALN (spectral analysis joint batch selection): for every batch, the
Fiedler vector of the cosine-similarity graph of fixed reference features decides which
samples are trained on. See docs/methods.md for every method's semantics and cost.

The names below load on first use (PEP 562): a process that needs one module (``import
saln.runs.lock`` to hold a folder) does not import torchvision and the training stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saln.features import FeatureStore, extract_features
    from saln.loop import Curator
    from saln.registry import Registry
    from saln.sampling import SelectiveBatchSampler
    from saln.selection import (
        SELECTORS,
        BatchView,
        Selection,
        Selector,
        fiedler_vector,
        keep_count,
        reference_select,
        spectral_select,
    )

__version__ = "0.1.0"

__all__ = [
    "SELECTORS",
    "BatchView",
    "Curator",
    "FeatureStore",
    "Registry",
    "Selection",
    "SelectiveBatchSampler",
    "Selector",
    "__version__",
    "extract_features",
    "fiedler_vector",
    "keep_count",
    "reference_select",
    "spectral_select",
]

_MODULE_OF = {
    name: module
    for module, names in {
        "saln.features": ("FeatureStore", "extract_features"),
        "saln.loop": ("Curator",),
        "saln.registry": ("Registry",),
        "saln.sampling": ("SelectiveBatchSampler",),
        "saln.selection": ("SELECTORS", "BatchView", "Selection", "Selector", "fiedler_vector",
                           "keep_count", "reference_select", "spectral_select"),
    }.items()
    for name in names
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'saln' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
