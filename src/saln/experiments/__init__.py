"""Experiments: grids of training runs (compare, sweep), each followed by its report."""
