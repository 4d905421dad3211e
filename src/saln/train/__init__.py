"""Training: methods, the engine, callbacks and checkpoints."""

from saln.train.callbacks import Callback
from saln.train.engine import TrainingDiverged, fit
from saln.train.methods import METHODS, Method

__all__ = ["METHODS", "Callback", "Method", "TrainingDiverged", "fit"]
