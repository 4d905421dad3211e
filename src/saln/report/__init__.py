"""Run records and comparison reports."""

from saln.report.store import RunStore

__all__ = ["RunStore"]
