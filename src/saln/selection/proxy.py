"""proxy: selection by a small proxy model (airbench96_faster's method, Jordan 2024).

Method card. A proxy learner (``selection.proxy_learner``, default the airbench learner at a
quarter of the learner's widths) is trained online on the same loaded super-batches as the
learner: each step it scores every loaded row without grad, the learner trains on the
``keep`` rows with the highest proxy loss, and every ``selection.proxy_every`` steps (4) the
proxy trains on the rows it kept. The selection itself is the top-``keep`` of those losses, as
``loss``'s is of the learner's.

Cost: the proxy's forward over every loaded row each step and its backward on the kept rows
every k-th step, all timed as selection (its share of the step is each run's
``selection_share_of_step``), plus its FLOPs per step in the summary. It pays only when that is
well under what the learner saves by training ``keep`` rows: on a GPU a 32/64/64 proxy for a
128/384/512 learner (airbench96_faster: -21% time to 96%); on a CPU the full-resolution early
layers dominate a narrow network's cost, so ``selection.proxy_resolution`` scores downsampled
images. ``selection.proxy_pass: first`` runs the proxy over the whole seeded schedule before
training (a one-off cost) and replays its choices: the same rows as the online form, since the
proxy sees the same batches in the same order.
"""

from __future__ import annotations

from saln.selection.base import SELECTORS
from saln.selection.loss import LossSelector


@SELECTORS.register("proxy")
def proxy_selector() -> LossSelector:
    """The loaded rows with the highest proxy loss: ``loss``'s top-``keep``, of the losses the
    run's proxy scored (the run scores with its proxy, not the learner)."""
    return LossSelector(name="proxy")
