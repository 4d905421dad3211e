"""The registered names a config may hold (method, learner, encoder, solver, ...), and the check
that every such setting names a registered entry, made before a run touches anything."""

from __future__ import annotations

import dataclasses
from typing import Any

from saln.config import Config, ConfigError
from saln.errors import InvalidInput
from saln.registry import Registry

# Values a registry-named setting may hold without being registered.
SPECIAL = {"solver": {"auto"}, "loader": {"auto"}}


def registries() -> dict[str, Registry[Any]]:
    """Each registry by the name config fields give it in their metadata."""
    from saln.data.datasets import DATASETS
    from saln.data.loaders import PIPELINES
    from saln.models import ENCODERS, LEARNERS
    from saln.selection.laplacians import LAPLACIANS
    from saln.selection.schedule import RAMPS
    from saln.selection.solvers import SOLVERS
    from saln.train.methods import METHODS

    return {
        "dataset": DATASETS,
        "loader": PIPELINES,
        "learner": LEARNERS,
        "encoder": ENCODERS,
        "solver": SOLVERS,
        "method": METHODS,
        "ramp": RAMPS,
        "laplacian": LAPLACIANS,
    }


def registered_names(kind: str) -> list[str]:
    """The valid values of a setting whose metadata names registry ``kind``."""
    names = list(registries()[kind].names())
    return [f"{n}:PATH" if (kind, n) == ("dataset", "imagefolder") else n for n in names]


def check_names(config: Config) -> None:
    """Every registry-named setting names a registered entry (``section.key`` in the error)."""
    found = registries()
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        for setting in dataclasses.fields(values):
            kind = setting.metadata.get("registry")
            value = getattr(values, setting.name)
            if kind is None or value is None or value in SPECIAL.get(kind, ()):
                continue
            name = value.partition(":")[0] if kind == "dataset" else value
            try:
                found[kind].get(name)
            except InvalidInput as err:
                also = "".join(f", or {v}" for v in sorted(SPECIAL.get(kind, ())))
                key = f"{section.name}.{setting.name}"
                raise ConfigError(f"{key}={value!r}: {err}{also}") from None
