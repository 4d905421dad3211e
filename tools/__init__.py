"""Scripts that run GPU sessions and publish results into docs/: ``python -m tools.NAME``."""
