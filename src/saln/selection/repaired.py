"""Model-free selectors that repair SALN's collapse onto outliers, and the class-balance control.

Method cards (docs/methods.md has the long form):

- ``spectral``: SALN's ranking (keep the largest |Fiedler| entries) on a repaired graph:
  centred features, a symmetric kNN graph, the degree-regularised normalised Laplacian
  (:mod:`saln.selection.laplacians`; each an option). ``saln`` stays the paper's algorithm.
- ``spectral_strata``: the batch's spectral embedding (the first ``dims`` non-trivial
  eigenvectors of the repaired Laplacian) cut into ``strata`` by k-means (by quantiles of the
  Fiedler vector when ``dims`` is 1), then ``keep`` rows drawn at random within strata in
  proportion to their sizes, at least one per stratum where ``keep`` allows. Never "top-|v|".
- ``class_stratified``: the same draw with the classes as strata: it isolates what balancing
  the classes alone does (labels are known before training, so it stays model-free).

Each is a pure batched function (CPU and CUDA) plus a thin registered wrapper. A batch too
small for the options (fewer than ``k + 1`` rows, or than the strata need) takes the fallback
its function documents, named in the stats' ``fallback``; a configured batch size that is too
small is refused by :meth:`check_batch_size` before any training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from saln.errors import InvalidInput
from saln.selection.base import (
    SELECTORS,
    BatchedSelector,
    check_keep,
    prefer_unseen,
)
from saln.selection.laplacians import check_graph_options, spectral_embedding
from saln.selection.spectral import MIN_SPECTRAL_ROWS, as_feature_tensor, priority_order
from saln.selection.strata import allocate, kmeans, sample_within, stratum_sizes
from saln.selection.uniform import uniform_select


@dataclass(frozen=True)
class GraphOptions:
    """How a batch's graph is built (:mod:`saln.selection.laplacians`)."""

    centre: bool = True
    graph: str = "knn"
    k: int = 10
    laplacian: str = "regularized"

    def __post_init__(self) -> None:
        check_graph_options(self.graph, self.laplacian, self.k)

    def for_rows(self, n: int) -> tuple[GraphOptions, str | None]:
        """These options for a batch of ``n`` rows: ``k`` lowered to ``n - 1`` (and named as
        the fallback) when the batch is too small for it."""
        if self.graph == "knn" and self.k >= n:
            return GraphOptions(self.centre, self.graph, n - 1, self.laplacian), f"k>=n:k={n - 1}"
        return self, None

    def check_batch_size(self, n: int, selector: str) -> None:
        if self.graph == "knn" and self.k >= n:
            raise InvalidInput(
                f"{selector}: k={self.k} neighbours needs batches of more than k rows, and "
                f"each batch has {n}: lower selection.k or raise train.batch_size"
            )


def repaired_select(
    features: Any,
    keep: int,
    options: GraphOptions = GraphOptions(),
    seen: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Positions (b, keep) of the largest |Fiedler| entries of each batch's repaired graph,
    largest first (with ``seen``, rows not yet trained in this cycle first), and stats (``gap``,
    ``abs_fiedler``, ``fallback``). Fewer than 3 rows: the first ``keep`` positions."""
    x = as_feature_tensor(features)
    b, n, _ = x.shape
    check_keep(keep, n)
    if keep == n or n < MIN_SPECTRAL_ROWS:
        first = torch.arange(n, device=x.device).expand(b, n)[:, :keep].contiguous()
        return first, {"fallback": "keep_all" if keep == n else "n<3:first_positions"}
    options, fallback = options.for_rows(n)
    vectors, values = spectral_embedding(x, 1, **vars(options))
    magnitude = vectors[..., 0].abs()
    gap = (values[..., 1] - values[..., 0]) / values[..., 0].abs().clamp_min(1e-30)
    stats = {"gap": gap, "abs_fiedler": magnitude, "fallback": fallback}
    return priority_order(prefer_unseen(magnitude, seen))[:, :keep].contiguous(), stats


@dataclass(frozen=True)
class StrataOptions:
    """``strata`` per batch from ``dims`` eigenvectors: k clusters from the k - 1 non-trivial
    eigenvectors, as spectral clustering takes them."""

    strata: int = 10
    dims: int = 9

    def __post_init__(self) -> None:
        for name in ("strata", "dims"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name}={value!r} must be a positive int")
        if self.strata < 2:
            raise InvalidInput(f"strata={self.strata}: stratifying needs at least 2 strata")

    def check_batch_size(self, n: int, selector: str) -> None:
        if self.dims > n - 2 or self.strata > n:
            raise InvalidInput(
                f"{selector}: dims={self.dims} eigenvectors and strata={self.strata} need "
                f"batches of at least {max(self.dims + 2, self.strata)} rows, and each batch has "
                f"{n}: lower selection.dims / selection.strata or raise train.batch_size"
            )


def strata_of_embedding(
    rows: torch.Tensor, strata: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Stratum ids (b, n): quantile bins of a one-column embedding, else k-means."""
    if rows.shape[-1] == 1:
        rank = rows[..., 0].argsort(dim=-1).argsort(dim=-1)
        return rank * strata // rows.shape[1]
    return kmeans(rows, strata, generator)


def spectral_strata_select(
    features: Any,
    keep: int,
    options: GraphOptions = GraphOptions(),
    strata: StrataOptions = StrataOptions(),
    generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Positions (b, keep), drawn within the strata of each batch's spectral embedding in
    proportion to their sizes; stats ``strata_sizes`` (b, strata) and ``fallback``. A batch too
    small for ``dims`` eigenvectors uses ``n - 2`` of them (fewer than 4 rows: uniform)."""
    x = as_feature_tensor(features)
    b, n, _ = x.shape
    check_keep(keep, n)
    if n < 4:
        seen = None if seen is None else seen.cpu()
        positions = uniform_select(n, keep, batches=b, generator=generator, seen=seen)
        return positions.to(x.device), {"fallback": "n<4:uniform"}
    options, fallback = options.for_rows(n)
    dims, count = min(strata.dims, n - 2), min(strata.strata, n)
    if (dims, count) != (strata.dims, strata.strata):
        fallback = (fallback + ";" if fallback else "") + f"small:dims={dims},strata={count}"
    rows, _ = spectral_embedding(x, dims, **vars(options))
    ids = strata_of_embedding(rows, count, generator)
    sizes = stratum_sizes(ids, count)
    positions = sample_within(ids, allocate(sizes, keep, generator), generator, seen)
    return positions, {"strata_sizes": sizes, "fallback": fallback}


def class_stratified_select(
    labels: torch.Tensor,
    keep: int,
    generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Positions (b, keep) drawn uniformly within each class of labels (b, n), in proportion
    to the class's share of the batch, at least one per class where ``keep`` allows."""
    labels = torch.as_tensor(labels)
    batched = labels if labels.ndim == 2 else labels.unsqueeze(0)
    check_keep(keep, batched.shape[1])
    if bool((batched < 0).any()):
        raise InvalidInput(
            "selector 'class_stratified' needs every row's class label (got -1): pass labels= "
            "to SelectiveBatchSampler"
        )
    _, ids = torch.unique(batched, return_inverse=True)
    sizes = stratum_sizes(ids, int(ids.max()) + 1)
    return sample_within(ids, allocate(sizes, keep, generator), generator, seen)


@SELECTORS.register("spectral")
@dataclass(frozen=True)
class RepairedSpectralSelector(BatchedSelector):
    """SALN's top-|Fiedler| ranking on a repaired graph (model-free)."""

    options: GraphOptions = GraphOptions()
    name: str = "spectral"
    needs: frozenset[str] = frozenset({"features"})

    def check_batch_size(self, n: int) -> None:
        self.options.check_batch_size(n, self.name)

    def select_many(
        self,
        features: torch.Tensor,
        keep: int,
        *,
        generator: torch.Generator | None = None,
        seen: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        return repaired_select(features, keep, self.options, seen)


@SELECTORS.register("spectral_strata")
@dataclass(frozen=True)
class SpectralStrataSelector(BatchedSelector):
    """Random rows within the strata of the batch's spectral embedding (model-free)."""

    options: GraphOptions = GraphOptions()
    strata: StrataOptions = StrataOptions()
    name: str = "spectral_strata"
    needs: frozenset[str] = frozenset({"features"})

    def check_batch_size(self, n: int) -> None:
        self.options.check_batch_size(n, self.name)
        self.strata.check_batch_size(n, self.name)

    def select_many(
        self,
        features: torch.Tensor,
        keep: int,
        *,
        generator: torch.Generator | None = None,
        seen: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        return spectral_strata_select(features, keep, self.options, self.strata, generator, seen)


@SELECTORS.register("class_stratified")
@dataclass(frozen=True)
class ClassStratifiedSelector(BatchedSelector):
    """Random rows within each class, in proportion to the class's share (model-free)."""

    name: str = "class_stratified"
    needs: frozenset[str] = frozenset({"labels"})

    def select_many(
        self,
        features: torch.Tensor,
        keep: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        seen: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if labels is None:
            raise InvalidInput(
                "selector 'class_stratified' needs labels: pass labels= to SelectiveBatchSampler"
            )
        return class_stratified_select(labels, keep, generator, seen), {}
