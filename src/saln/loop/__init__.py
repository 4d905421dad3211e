"""saln in the loops people already have: a plain PyTorch loop (:class:`Curator`)."""

from saln.loop.curator import Curator

__all__ = ["Curator"]
