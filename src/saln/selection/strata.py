"""Stratified sampling inside a batch: pure, batched functions (CPU and CUDA).

A batch's rows carry a stratum each (a class, or a cluster of the spectral embedding);
:func:`allocate` splits ``keep`` across the strata in proportion to their sizes, at least one
row per stratum where ``keep`` allows, and :func:`sample_within` draws that many rows of each
stratum uniformly at random. :func:`kmeans` makes the strata of an embedding.
"""

from __future__ import annotations

import torch


def draw(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform [0, 1) numbers on ``device`` from ``generator`` wherever it lives, so a CPU
    generator seeds a CUDA batch's draw the same way it seeds a CPU one."""
    where = device if generator is None else generator.device
    return torch.rand(shape, generator=generator, device=where).to(device)


def stratum_sizes(strata: torch.Tensor, count: int) -> torch.Tensor:
    """Rows per stratum (b, count) of stratum ids (b, n) in ``0..count-1``."""
    sizes = torch.zeros(strata.shape[0], count, dtype=torch.long, device=strata.device)
    return sizes.scatter_add_(1, strata, torch.ones_like(strata))


def allocate(
    sizes: torch.Tensor, keep: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rows to keep per stratum (b, s), summing to ``keep`` in every batch: one per non-empty
    stratum first when ``keep`` covers them all, the rest in proportion to what each has left
    (largest remainders round up, equal remainders in a random order: breaking ties by the
    stratum's index would favour the first classes in every batch). Never more than a stratum
    holds."""
    nonempty = sizes > 0
    covered = (nonempty.sum(-1, keepdim=True) <= keep).long()
    base = nonempty.long() * covered
    room = (sizes - base).double()
    rest = keep - base.sum(-1, keepdim=True)
    quota = rest * room / room.sum(-1, keepdim=True).clamp_min(1)
    counts = base + quota.floor().long()
    short = keep - counts.sum(-1, keepdim=True)
    remainder = torch.where(counts < sizes, quota - quota.floor(), torch.full_like(quota, -1.0))
    # ranks of the remainders, largest first, ties shuffled: the first ``short`` get one more
    shuffled = draw(tuple(remainder.shape), generator, remainder.device).argsort(dim=-1)
    by_remainder = torch.sort(remainder.gather(-1, shuffled), dim=-1, descending=True, stable=True)
    order = shuffled.gather(-1, by_remainder.indices)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(
        order.shape[-1], device=order.device).expand_as(order))  # fmt: skip
    return counts + (rank < short).long()


def sample_within(
    strata: torch.Tensor,
    counts: torch.Tensor,
    generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Positions (b, keep): ``counts[s]`` rows of each stratum ``s``, uniformly at random
    within it (with ``seen``, from its rows not yet trained in this cycle first), in a random
    order. Every batch's counts must sum to the same ``keep``."""
    b, n = strata.shape
    keys = draw((b, n), generator, strata.device)
    if seen is not None:  # still in [0, 1): unseen rows in [0, 0.5), seen ones after them
        keys = (keys + seen.to(keys.device, keys.dtype)) / 2
    order = torch.sort(strata.double() + keys, dim=-1).indices  # strata in turn, shuffled within
    grouped = strata.gather(1, order)
    starts = torch.cumsum(stratum_sizes(strata, counts.shape[1]), dim=1) - stratum_sizes(
        strata, counts.shape[1]
    )
    rank = torch.arange(n, device=strata.device).expand(b, n) - starts.gather(1, grouped)
    chosen = rank < counts.gather(1, grouped)
    keep = int(counts[0].sum())
    picked = order[chosen].view(b, keep)
    shuffle = draw((b, keep), generator, strata.device).argsort(dim=-1)
    return picked.gather(1, shuffle)


def kmeans(
    points: torch.Tensor, clusters: int, generator: torch.Generator | None = None, rounds: int = 6
) -> torch.Tensor:
    """Cluster ids (b, n) of points (b, n, m): k-means++ seeding, then ``rounds`` Lloyd steps,
    every batch at once. An emptied cluster keeps its centre (so it may stay empty)."""
    b, n, _ = points.shape
    rows = torch.arange(b, device=points.device)

    def pick(weights: torch.Tensor) -> torch.Tensor:
        """One point per batch, with probability proportional to ``weights`` (b, n)."""
        cumulative = weights.cumsum(-1)
        u = draw((b, 1), generator, points.device) * cumulative[:, -1:]
        return torch.searchsorted(cumulative, u).squeeze(1).clamp_max(n - 1)

    centres = [points[rows, pick(torch.ones(b, n, device=points.device))]]
    nearest = (points - centres[0].unsqueeze(1)).square().sum(-1)
    for _ in range(1, clusters):
        centres.append(points[rows, pick(nearest.clamp_min(0) + 1e-12)])
        nearest = torch.minimum(nearest, (points - centres[-1].unsqueeze(1)).square().sum(-1))
    centre = torch.stack(centres, dim=1)  # (b, clusters, m)
    for _ in range(rounds):
        ids = torch.cdist(points, centre).argmin(-1)
        onehot = torch.nn.functional.one_hot(ids, clusters).to(points.dtype)  # (b, n, clusters)
        sizes = onehot.sum(1)
        sums = onehot.transpose(1, 2) @ points
        centre = torch.where(sizes.unsqueeze(-1) > 0, sums / sizes.clamp_min(1).unsqueeze(-1),
                             centre)  # fmt: skip
    return torch.cdist(points, centre).argmin(-1)
