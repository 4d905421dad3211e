"""Sampling: which indices each step loads, decided before any image is.

:class:`SelectiveBatchSampler` composes the parts: :class:`Dealer` (the epoch's order cut into
super-batches and dealt to ranks), :class:`SelectionCall` (a model-free selector with the
inputs it needs), :class:`CoverageCycle` (rows kept since the cycle began) and the feature
source. :class:`EpochPool` and :class:`EpochPlan` serve epoch-level methods and the engine.
"""

from saln.sampling.coverage import CoverageCycle
from saln.sampling.dealing import Dealer
from saln.sampling.features import FeatureSource, as_feature_source
from saln.sampling.order import (
    EpochPlan,
    EpochPool,
    batch_count,
    cut_batches,
    epoch_seed,
    interleave,
    interleave_stats,
    shuffled,
)
from saln.sampling.sampler import SelectiveBatchSampler
from saln.sampling.selecting import SelectionCall

__all__ = [
    "CoverageCycle",
    "Dealer",
    "EpochPlan",
    "EpochPool",
    "FeatureSource",
    "SelectionCall",
    "SelectiveBatchSampler",
    "as_feature_source",
    "batch_count",
    "cut_batches",
    "epoch_seed",
    "interleave",
    "interleave_stats",
    "shuffled",
]
