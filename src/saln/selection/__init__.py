"""Per-batch selection: the contract, the registry and every selector."""

# Each module registers its selectors on import.
from saln.selection import (  # noqa: F401
    jest,
    loss,
    proxy,
    repaired,
    rho,
    spectral,
    uniform,
)
from saln.selection.base import (
    SELECTORS,
    BatchView,
    Capabilities,
    Selection,
    Selector,
    capabilities,
    check_filter_ratio,
    is_model_free,
    keep_count,
    tail_keep,
)
from saln.selection.spectral import (
    fiedler_vector,
    reference_fiedler,
    reference_select,
    spectral_gap,
    spectral_select,
    spectral_select_with_stats,
)

__all__ = [
    "SELECTORS",
    "BatchView",
    "Capabilities",
    "Selection",
    "Selector",
    "capabilities",
    "check_filter_ratio",
    "fiedler_vector",
    "is_model_free",
    "keep_count",
    "reference_fiedler",
    "reference_select",
    "spectral_gap",
    "spectral_select",
    "spectral_select_with_stats",
    "tail_keep",
]
