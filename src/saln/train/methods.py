"""Training methods: a selector (or none) plus how the run is shaped. No if/elif on names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from saln.config import Config, ConfigError, graphed_selection
from saln.registry import Registry
from saln.runs.records import RunLabel, budget_epochs
from saln.selection import SELECTORS, Selector
from saln.selection.repaired import GraphOptions, StrataOptions
from saln.selection.schedule import SelectionSchedule
from saln.train.epochwise import PLANNERS, Planner


def _no_options(config: Config) -> dict[str, Any]:
    return {}


def _graph_options(config: Config) -> GraphOptions:
    s = config.selection
    return GraphOptions(s.centre, s.graph, s.k, s.laplacian)


def _strata_options(config: Config) -> dict[str, Any]:
    s = config.selection
    return {"options": _graph_options(config), "strata": StrataOptions(s.strata, s.dims)}


# Where a method chooses its rows: in the sampler, before any image is loaded (model-free
# selectors, and no selection at all); in the step, from the learner's losses on the loaded
# rows (model-aware selectors); or a whole epoch ahead, from what earlier epochs recorded
# (epoch-level methods, whose planner also weights the rows' losses).
PLACES = ("sampler", "step", "epoch")


@dataclass(frozen=True)
class Method:
    """``selector`` None trains on every loaded row. ``matched_epochs`` shortens training to
    (1 - filter_ratio) of the epochs: the same number of trained examples as a selector.
    ``selects_in`` is one of :data:`PLACES`; ``planner`` names the epoch planner of an
    epoch-level method (:data:`saln.train.epochwise.PLANNERS`)."""

    name: str
    selector: str | None
    selects_in: str = "sampler"
    planner: str = "every_epoch"
    matched_epochs: bool = False
    options: Callable[[Config], dict[str, Any]] = field(default=_no_options)
    scored_by: str = "learner"  # a step-level method's scoring model: learner, or proxy

    def __post_init__(self) -> None:
        if self.selects_in not in PLACES:
            raise ValueError(f"method {self.name}: selects_in must be one of {PLACES}")

    def filter_ratio(self, config: Config) -> float:
        """The share of each loaded batch this method drops: 0 without a selector."""
        return self.ratio_of(config.train.filter_ratio)

    def ratio_of(self, filter_ratio: float) -> float:
        return filter_ratio if self.selector is not None else 0.0

    def build_planner(self, **inputs: Any) -> Planner:
        """This method's epoch planner (:data:`saln.train.epochwise.PLANNERS`): InfoBatch's
        for an epoch-level method, a no-op for the others."""
        return PLANNERS.build(self.planner, **inputs)

    def build_selector(self, config: Config) -> Selector | None:
        if self.selector is None:
            return None
        return SELECTORS.build(self.selector, **self.options(config))

    def schedule(self, config: Config) -> SelectionSchedule:
        """The filter ratio of each epoch: ``train.select_from``, ``select_until`` and
        ``ratio_ramp`` shape it for a method with a selector, in the paper's batch convention."""
        t = config.train
        try:
            schedule = SelectionSchedule(
                self.filter_ratio(config), t.epochs, t.select_from, t.select_until, t.ratio_ramp
            )
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if schedule.is_default:
            return schedule
        if self.selector is None:
            own = " (its annealing is train.infobatch_delta)" if self.selects_in == "epoch" else ""
            raise ConfigError(
                f"train.select_from/select_until/ratio_ramp schedule a selector, and method "
                f"{self.name!r} has none: leave them at 0, 1 and constant for it{own}"
            )
        if t.learner_batch_size is not None:
            raise ConfigError(
                "train.select_from/select_until/ratio_ramp change the rows trained per epoch, "
                "and train.learner_batch_size fixes them: use one or the other"
            )
        return schedule

    def check_coverage(self, config: Config) -> None:
        """``train.coverage`` steers a model-free selector, which chooses in the sampler."""
        if config.train.coverage and (self.selector is None or self.selects_in != "sampler"):
            raise ConfigError(
                f"train.coverage steers a model-free selector (uniform, saln, spectral, "
                f"spectral_strata, class_stratified), and method {self.name!r} has none: set "
                "train.coverage=false for it"
            )

    def epochs(self, config: Config, train_rows: int) -> int:
        """Epochs to train; a matched method trains the examples of its budget: those another
        method measured (``train.budget_examples``), or a share of the epochs (a frontier point,
        ``train.budget_fraction``), else (1 - filter_ratio) of the epochs."""
        t = config.train
        if not self.matched_epochs:
            return t.epochs
        if t.budget_fraction is not None:
            return max(1, round(t.epochs * t.budget_fraction))
        if t.budget_examples is not None:
            return budget_epochs(t.budget_examples, train_rows)
        return max(1, round(t.epochs * (1 - t.filter_ratio)))


def for_grid(config: Config, method: Method) -> Config:
    """``config`` for ``method`` in a grid of several: a selection schedule applies to the
    methods with a selector, and the others (standard, InfoBatch) train as they always do."""
    if method.selector is not None:
        return config
    unscheduled = replace(
        config.train, select_from=0.0, select_until=1.0, ratio_ramp="constant", coverage=False
    )
    return replace(config, train=unscheduled)


def method_label(config: Config) -> str:
    """The name a run is reported under: a budget-matched standard names whose budget it has
    (``standard_matched@infobatch``), a selector with coverage says so (``uniform+coverage``)."""
    t = config.train
    if t.budget_of:
        return str(RunLabel(t.method, budget_of=t.budget_of))
    return str(RunLabel(t.method, coverage=t.coverage))


METHODS: Registry[Method] = Registry("method")

for _method in (
    Method("standard", None),
    Method("standard_matched", None, matched_epochs=True),
    Method("uniform", "uniform"),
    Method(
        "saln",
        "saln",
        options=lambda c: {
            "solver": c.features.solver,
            "cuda_graph": graphed_selection(c.features),
        },
    ),
    Method("spectral", "spectral", options=lambda c: {"options": _graph_options(c)}),
    Method("spectral_strata", "spectral_strata", options=_strata_options),
    Method("class_stratified", "class_stratified"),
    Method("loss", "loss", selects_in="step"),
    Method("rho_loss", "rho_loss", selects_in="step"),
    Method("jest", "jest", selects_in="step"),
    Method("proxy", "proxy", selects_in="step", scored_by="proxy"),
    Method("infobatch", None, selects_in="epoch", planner="infobatch"),
):
    METHODS.register(_method.name)(lambda m=_method: m)
