"""Run records: the run folder, its typed epoch records and summary, and the environment.

Training writes them; reports and experiments only read them. This layer sits below both.
"""

from saln.runs.store import RunStore

__all__ = ["RunStore"]
