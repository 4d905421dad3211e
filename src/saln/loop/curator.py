"""A saln method in a training loop of your own: one object, three lines.

    curator = Curator(len(train_set), "infobatch", epochs=E, batch_size=64)
    loader = DataLoader(train_set, batch_sampler=curator.batch_sampler)
    for epoch in range(E):
        curator.set_epoch(epoch)
        for images, labels, indices in loader:            # the dataset returns its indices
            per_sample = F.cross_entropy(model(images), labels, reduction="none")
            curator.loss(per_sample, indices).backward()
            ...
        curator.end_epoch()

The semantics are ``saln train``'s (docs/methods.md): model-free selectors choose each
batch's rows in the batch sampler before any image is loaded; InfoBatch plans each epoch's
samples and weights their losses; model-aware selectors (``loss``, ``rho_loss``, ``jest``)
keep the rows with the highest scores of the batch's per-sample losses, and :meth:`loss`
averages over those rows only (one forward of the loaded batch: the learner's losses are the
scores). ``proxy`` chooses before the learner's forward, with a small network of yours
(``Curator(..., "proxy", proxy=net, proxy_optimizer=opt)``); :meth:`select` runs it and,
for every other method, keeps every loaded row, so this loop serves every method:

        kept = curator.select(images, labels, indices)    # the proxy scores and learns
        per_sample = F.cross_entropy(model(images[kept]), labels[kept], reduction="none")
        curator.loss(per_sample, indices[kept]).backward()

Under torchrun each rank gets its own super-batches, and InfoBatch's losses are
summed over ranks at :meth:`end_epoch`, exactly as in ``saln train``; with
``sharded_by="accelerate"`` the sampler yields every process's batches in turn and
``accelerator.prepare(loader)`` deals them, to the same rows. :meth:`loss` refuses a batch
the sampler did not deal this process, so a loader wired wrongly fails at its first step
instead of training the wrong rows. Nothing of torch is patched: the batch sampler is an
ordinary ``Sampler[list[int]]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from saln import distributed
from saln.errors import InvalidInput
from saln.loop.dealing import DealtBatches, every_rank
from saln.selection import SELECTORS, BatchView, Selector, keep_count, tail_keep
from saln.train.assembly import SelectionInputs, assemble_selection
from saln.train.methods import METHODS, Method
from saln.train.proxy import ProxyModel
from saln.train.setup import share_kept


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cpu`` is ``cpu:0`` (Accelerate says the latter), ``cuda`` the current GPU."""
    if a.type != b.type:
        return False
    return a.type == "cpu" or a.index is None or b.index is None or a.index == b.index


class Curator:
    """One saln method for a loop of your own.

    ``train``: the number of samples (the loop trains on indices ``0..N-1``) or the global
    indices it trains on (a split). ``features``: an (N, d) table by global index, for
    ``saln``, ``spectral`` and ``spectral_strata``; ``labels`` (N,) for ``class_stratified``;
    ``ref_losses`` (N,) a reference model's per-sample losses, for ``rho_loss`` and ``jest``.
    ``options`` go to the selector (e.g. ``{"solver": "exact"}`` for saln). ``sharded_by``:
    ``"saln"`` (each process is dealt its own batches: torchrun, Lightning) or
    ``"accelerate"`` (``accelerator.prepare(loader)`` deals them). The process group is read
    at each :meth:`set_epoch`, so one that starts after the Curator is built (Lightning's) is
    followed. ``proxy``/``proxy_optimizer``: method ``proxy``'s scoring network and its
    optimizer (yours: its lr schedule too), trained on its kept rows every ``proxy_every``-th
    step; under torchrun its gradients are averaged across processes, so every process's proxy
    holds the same weights. :meth:`select` runs it.
    """

    def __init__(
        self,
        train: int | Sequence[int] | np.ndarray,
        method: str = "uniform",
        *,
        epochs: int,
        batch_size: int = 64,
        filter_ratio: float = 0.8,
        seed: int = 0,
        features: Any = None,
        labels: Any = None,
        ref_losses: torch.Tensor | None = None,
        prune_ratio: float = 0.5,
        delta: float = 0.875,
        coverage: bool = False,
        options: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        sharded_by: str = "saln",
        proxy: torch.nn.Module | None = None,
        proxy_optimizer: torch.optim.Optimizer | None = None,
        proxy_every: int = 4,
    ) -> None:
        self.method: Method = METHODS.build(method)
        self.proxy = self._proxy(proxy, proxy_optimizer, proxy_every)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise InvalidInput(f"epochs must be a positive int (the loop's epochs), got {epochs!r}")
        self.device, self.epochs = torch.device(device), epochs
        self.indices = np.arange(train) if isinstance(train, int) else np.asarray(train)
        self.size = int(self.indices.max(initial=-1)) + 1
        self.selector = self._selector(options or {})
        self.ref_losses = self._reference(ref_losses)
        self._check_tables(features, labels)
        ratio = self.method.ratio_of(filter_ratio)
        self.keep = keep_count(batch_size, ratio)
        self.batch_size = batch_size
        deal_all = every_rank(sharded_by)
        inputs = SelectionInputs(
            indices=self.indices,
            batch_size=batch_size,
            filter_ratio=ratio,
            seed=seed,
            epochs=epochs,
            dataset_size=self.size,
            device=self.device,
            features=features,
            labels=labels,
            coverage=coverage,
            share=None if deal_all else lambda kept: share_kept(kept, self.device),
            every_rank=deal_all,
            prune_ratio=prune_ratio,
            delta=delta,
        )
        parts = assemble_selection(self.method, self.selector, inputs)
        self.pool, self.sampler, self.planner = parts.pool, parts.sampler, parts.planner
        self.batch_sampler = DealtBatches(self.sampler)
        self._follow_process_group()
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.step = 0, 0
        self.last_kept: torch.Tensor | None = None  # the rows :meth:`loss` trained, by position
        self.chosen: torch.Tensor | None = None  # the global indices :meth:`select` kept

    def _proxy(
        self, model: torch.nn.Module | None, optimizer: torch.optim.Optimizer | None, every: int
    ) -> ProxyModel | None:
        if self.method.scored_by != "proxy":
            if model is not None or optimizer is not None:
                raise InvalidInput(
                    f"method {self.method.name!r} scores without a proxy: pass proxy= only "
                    "with method 'proxy'"
                )
            return None
        if not isinstance(model, torch.nn.Module) or not isinstance(
            optimizer, torch.optim.Optimizer
        ):
            raise InvalidInput(
                "method 'proxy' scores with a small network of yours: pass proxy=<an nn.Module "
                "mapping images to logits> and proxy_optimizer=<an optimizer of its parameters>"
            )
        return ProxyModel(model, optimizer, every=every)

    def _selector(self, options: dict[str, Any]) -> Selector | None:
        if self.method.selector is None:
            if options:
                raise InvalidInput(f"method {self.method.name!r} has no selector to pass options")
            return None
        return SELECTORS.build(self.method.selector, **options)

    def _reference(self, ref_losses: torch.Tensor | None) -> torch.Tensor | None:
        needs = self.selector is not None and "ref_losses" in self.selector.needs
        if needs and ref_losses is None:
            raise InvalidInput(
                f"method {self.method.name!r} scores against a reference model: pass "
                "ref_losses=, its per-sample losses on the training set (N,), by global index"
            )
        if ref_losses is None:
            return None
        table = torch.as_tensor(ref_losses).to(self.device, torch.float32)
        if table.ndim != 1 or len(table) < self.size:
            raise InvalidInput(
                f"ref_losses must be one loss per sample (N,) with N >= {self.size}, got shape "
                f"{tuple(table.shape)}"
            )
        return table

    def _check_tables(self, features: Any, labels: Any) -> None:
        for what, table in (("features", features), ("labels", labels)):
            if table is not None and len(table) < self.size:
                raise InvalidInput(
                    f"{what} have {len(table)} rows and the training set indexes up to "
                    f"{self.size - 1}: pass the {what} of the whole dataset, one row per index"
                )

    @property
    def rank(self) -> int:
        return self.sampler.rank

    @property
    def world_size(self) -> int:
        return self.sampler.world_size

    def _follow_process_group(self) -> None:
        rank, world_size = distributed.rank(), distributed.world_size()
        if (rank, world_size) != (self.sampler.rank, self.sampler.world_size):
            self.sampler.set_world(rank, world_size)

    def to(self, device: str | torch.device) -> Curator:
        """Keep the losses' weights and references on ``device`` (where the loss is)."""
        self.device = torch.device(device)
        if self.ref_losses is not None:
            self.ref_losses = self.ref_losses.to(self.device)
        if self.proxy is not None:  # in place: the optimizer keeps its parameters
            self.proxy.model.to(self.device)
        self.planner.to(self.device)
        return self

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch, as ``DistributedSampler.set_epoch``: it plans the epoch."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidInput(f"set_epoch takes the epoch, an int >= 0 (0 first), got {epoch!r}")
        self._follow_process_group()
        self.epoch, self.step = epoch, 0
        self.sampler.set_epoch(epoch)
        self.planner.before_epoch(epoch)

    def loss(self, per_sample: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The scalar to backpropagate, from the loaded batch's per-sample losses (``reduction=
        'none'``) and its global indices: their mean over the rows the method trains, each
        with its weight."""
        indices = self._check_step(per_sample, indices)
        if self.proxy is not None:
            return self._chosen_loss(per_sample, indices)
        self.batch_sampler.take(indices.tolist())
        self.step += 1
        self.last_kept = None
        if self.method.selects_in == "epoch":
            weights = self.planner.weights(indices)
            self.planner.record(indices, per_sample.detach())
            if weights is not None:
                return (per_sample * weights.to(per_sample.device)).mean()
        if self.method.selects_in == "step" and self.keep < self.batch_size:
            self.last_kept = self._select_in_step(per_sample.detach(), indices)
            return per_sample[self.last_kept].mean()
        return per_sample.mean()

    def select(
        self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor
    ) -> torch.Tensor:
        """The positions of the loaded batch to forward the learner on. Method ``proxy``: the
        rows with the highest proxy loss (the proxy trains on them every ``proxy_every``-th
        call); pass their losses to :meth:`loss`. Any other method: every row (it chose in the
        sampler already, or chooses in :meth:`loss`), so one loop serves every method."""
        labels = torch.as_tensor(labels)
        if not isinstance(images, torch.Tensor) or labels.ndim != 1 or len(images) != len(labels):
            raise InvalidInput(
                "curator.select takes the loaded batch's images (B, ...), labels (B,) and "
                f"global indices (B,); got {type(images).__name__} of {len(images)} rows and "
                f"labels of shape {tuple(labels.shape)}"
            )
        if self.proxy is None:
            return torch.arange(len(labels), device=labels.device)
        indices = self._check_indices(indices, labels, "labels")
        proxy_device = next(self.proxy.model.parameters()).device
        if not same_device(images.device, proxy_device):
            raise InvalidInput(
                f"the images are on {images.device} and the proxy on {proxy_device}: move the "
                "proxy to the images' device (curator.to(device) does)"
            )
        self.batch_sampler.take(indices.tolist())
        self.step += 1
        positions = self._select_in_step(self.proxy.score(images, labels), indices)
        self.proxy.learn(images[positions], labels[positions])
        self.last_kept, self.chosen = positions, indices[positions]
        return positions

    def _chosen_loss(self, per_sample: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        chosen, self.chosen = self.chosen, None
        if chosen is None or not torch.equal(indices.cpu(), chosen.cpu()):
            raise InvalidInput(
                "with method 'proxy' call kept = curator.select(images, labels, indices) first, "
                "then curator.loss(per_sample, indices[kept]) with the kept rows' losses"
            )
        return per_sample.mean()

    def _select_in_step(self, scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        assert self.selector is not None
        ref = None if self.ref_losses is None else self.ref_losses[indices.to(self.device)]
        view = BatchView(
            indices=indices,
            labels=torch.full_like(indices, -1),
            losses=scores,
            ref_losses=ref,
            epoch=self.epoch,
            step=self.step,
        )
        keep = tail_keep(len(indices), self.keep, self.batch_size)
        positions = self.selector.select(view, keep, generator=self.generator).positions
        return positions.to(scores.device)

    def _check_step(self, per_sample: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if not isinstance(per_sample, torch.Tensor) or per_sample.ndim != 1:
            shape = tuple(per_sample.shape) if isinstance(per_sample, torch.Tensor) else "?"
            raise InvalidInput(
                f"Curator.loss takes one loss per row (B,), got shape {shape}: compute the "
                "loss with reduction='none'"
            )
        return self._check_indices(indices, per_sample, "losses")

    def _check_indices(self, indices: torch.Tensor, rows: torch.Tensor, what: str) -> torch.Tensor:
        """The batch's global indices, one per row of ``rows`` (``what``: losses or labels)."""
        indices = torch.as_tensor(indices)
        if indices.device.type == "meta" or indices.dtype.is_floating_point:
            raise InvalidInput(
                f"indices must be the batch's global indices as integers on a real device, got "
                f"{indices.dtype} on {indices.device}: pass the indices the dataset returned"
            )
        if indices.shape != rows.shape:
            raise InvalidInput(
                f"{len(rows)} {what} for {len(indices)} indices: pass the batch's global "
                f"indices, one per row"
            )
        if not same_device(rows.device, self.device):
            raise InvalidInput(
                f"the {what} are on {rows.device} and the Curator on {self.device}: "
                f"pass device={str(rows.device)!r} to Curator"
            )
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= self.size):
            raise InvalidInput(
                f"indices must be global dataset indices in [0, {self.size}), got "
                f"{int(indices.min())}..{int(indices.max())}"
            )
        return indices

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "a Curator is not picklable (it holds its sampler's and generator's live state): "
            "save curator.state_dict() with torch.save and load it into a new Curator with "
            "load_state_dict"
        )

    def end_epoch(self) -> dict[str, Any]:
        """Call after each epoch: InfoBatch's losses of every rank become the next plan's
        scores. Returns the epoch's planning statistics (kept share, ...)."""
        return self.planner.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        """What a resumed loop needs: the planner's losses, the coverage cycle, the model-aware
        selection's random stream (JEST draws from it), and what the state belongs to."""
        return {
            "planner": self.planner.state_dict(),
            "sampler": self.sampler.state_dict(),
            "generator": self.generator.get_state(),
            "proxy": None if self.proxy is None else self.proxy.state_dict(),
            "method": self.method.name,
            "size": self.size,
            "samples": len(self.indices),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {"method": self.method.name, "size": self.size, "samples": len(self.indices)}
        theirs = {key: state.get(key, value) for key, value in mine.items()}
        if theirs != mine:
            raise InvalidInput(
                f"this state is of a Curator with {theirs}, and this one has {mine}: load it "
                "into a Curator built with the same method and training set"
            )
        self.planner.load_state_dict(state["planner"])
        self.sampler.load_state_dict(state["sampler"])
        if self.proxy is not None and state.get("proxy"):
            self.proxy.load_state_dict(state["proxy"])
        if "generator" in state:
            # a checkpoint format may hand it back as an array
            self.generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8))
