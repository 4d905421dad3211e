"""Datasets, splits, transforms and the two loading pipelines."""

from saln.data.datasets import DATASETS, DataError, DatasetBundle, ImageSource, build_dataset
from saln.data.loaders import PIPELINES, Batch, build_pipeline
from saln.data.splits import Split, stratified_split

__all__ = [
    "DATASETS",
    "PIPELINES",
    "Batch",
    "DataError",
    "DatasetBundle",
    "ImageSource",
    "Split",
    "build_dataset",
    "build_pipeline",
    "stratified_split",
]
