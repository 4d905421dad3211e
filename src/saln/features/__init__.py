"""Reference features: extraction once, an atomic memory-mapped cache."""

from saln.features.cache import FeatureStore
from saln.features.extract import extract_features

__all__ = ["FeatureStore", "extract_features"]
