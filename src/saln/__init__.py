"""saln: data curation during training by per-batch (joint) sample selection.

The flagship method is SALN (spectral analysis joint batch selection): for every batch, the
Fiedler vector of the cosine-similarity graph of fixed reference features decides which
samples are trained on. See docs/methods.md for every method's semantics and cost.
"""

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
