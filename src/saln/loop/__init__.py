"""saln in the loops people already have: a plain PyTorch loop (:class:`Curator`), with a
reference model's cached losses for ``rho_loss`` and ``jest`` (:func:`reference_losses`);
Lightning's callback lives in :mod:`saln.loop.lightning` (an optional extra)."""

from saln.loop.curator import Curator
from saln.loop.reference import reference_losses

__all__ = ["Curator", "reference_losses"]
