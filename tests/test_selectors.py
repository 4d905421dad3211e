"""The contract every registered selector keeps, plus each method's own known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saln
from saln.selection.base import KNOWN_NEEDS, BatchView, check_keep
from saln.selection.jest import chunk_sizes, jest_select, no_interaction
from tests.conftest import clustered_features

N = 40


def full_view(seed: int = 0) -> BatchView:
    gen = torch.Generator().manual_seed(seed)
    return BatchView(
        indices=torch.arange(100, 100 + N),
        labels=torch.randint(0, 5, (N,), generator=gen),
        features=torch.from_numpy(clustered_features(1, N, 16, seed=seed)[0]),
        losses=torch.rand(N, generator=gen) * 3,
        ref_losses=torch.rand(N, generator=gen),
    )


@pytest.fixture(params=saln.SELECTORS.names())
def selector(request: pytest.FixtureRequest) -> saln.Selector:
    return saln.SELECTORS.build(request.param)


@pytest.mark.parametrize("filter_ratio", [0.0, 0.5, 0.8, 0.95])
def test_contract(selector: saln.Selector, filter_ratio: float) -> None:
    keep = saln.keep_count(N, filter_ratio)
    view = full_view()
    first = selector.select(view, keep, generator=torch.Generator().manual_seed(3))
    again = selector.select(view, keep, generator=torch.Generator().manual_seed(3))
    pos = first.positions
    assert pos.dtype == torch.int64 and pos.shape == (keep,)
    assert len(set(pos.tolist())) == keep
    assert int(pos.min()) >= 0 and int(pos.max()) < N
    assert torch.equal(pos, again.positions)
    if filter_ratio == 0.0:
        assert sorted(pos.tolist()) == list(range(N))
    assert isinstance(selector, saln.Selector)
    assert selector.needs <= KNOWN_NEEDS


def test_missing_inputs_are_named(selector: saln.Selector) -> None:
    if not selector.needs:
        pytest.skip("needs nothing")
    unknown = torch.full((N,), -1)  # the sampler's stand-in where no labels were given
    view = BatchView(indices=torch.arange(N), labels=unknown)
    with pytest.raises(ValueError, match=f"selector '{selector.name}' needs"):
        selector.select(view, 5)


def test_unknown_selector_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown selector 'spectra'; valid names: class_strat"):
        saln.SELECTORS.build("spectra")


def test_loss_keeps_the_largest_losses() -> None:
    view = full_view()
    pos = saln.SELECTORS.build("loss").select(view, 5).positions
    assert pos.tolist() == torch.argsort(view.losses, descending=True)[:5].tolist()  # type: ignore[arg-type]


def test_rho_loss_keeps_the_largest_reducible_losses() -> None:
    losses = torch.tensor([2.0, 2.0, 0.5, 3.0])
    ref = torch.tensor([1.9, 0.1, 0.0, 2.9])  # reducible: 0.1, 1.9, 0.5, 0.1
    view = BatchView(indices=torch.arange(4), labels=torch.zeros(4), losses=losses, ref_losses=ref)
    assert saln.SELECTORS.build("rho_loss").select(view, 2).positions.tolist() == [1, 2]


def test_jest_samples_proportional_to_exp_learnability() -> None:
    scores = torch.tensor([0.0, 1.0, 2.0])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([jest_select(scores, 1, generator=gen) for _ in range(6000)]).ravel()
    freq = torch.bincount(draws, minlength=3).double() / draws.numel()
    expected = torch.softmax(scores.double(), 0)
    assert torch.allclose(freq, expected, atol=0.02)


@pytest.mark.parametrize("chunked", [False, True])
def test_jest_keeps_pairs_with_the_without_replacement_law(chunked: bool) -> None:
    """keep = 2 of 3: P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j), p = softmax(s),
    for the one-draw path and for the chunk loop (forced by a plugged-in zero interaction)."""
    scores = torch.tensor([0.0, 1.0, 2.0])
    p = torch.softmax(scores.double(), 0)
    gen = torch.Generator().manual_seed(0)
    zero = (lambda s, chosen: torch.zeros_like(s)) if chunked else no_interaction
    dropped = torch.tensor(
        [
            3 - int(jest_select(scores, 2, generator=gen, interaction=zero).sum())
            for _ in range(4000)
        ]
    )
    freq = torch.bincount(dropped, minlength=3).double() / len(dropped)
    pair = ((1, 2), (0, 2), (0, 1))  # the rows kept when row 0, 1 or 2 is dropped
    expected = torch.stack([p[j] * p[k] / (1 - p[j]) + p[k] * p[j] / (1 - p[k]) for j, k in pair])
    assert torch.allclose(freq, expected, atol=0.025)


def test_jest_chunks_cover_keep() -> None:
    assert chunk_sizes(51, 16) == [4, 4, 4] + [3] * 13
    assert sum(chunk_sizes(5, 16)) == 5 and len(chunk_sizes(5, 16)) == 5
    pos = jest_select(torch.randn(100), 51, generator=torch.Generator().manual_seed(1))
    assert len(set(pos.tolist())) == 51


def test_uniform_is_uniform() -> None:
    sel = saln.SELECTORS.build("uniform")
    gen = torch.Generator().manual_seed(0)
    counts = np.zeros(10)
    for _ in range(3000):
        view = BatchView(indices=torch.arange(10), labels=torch.zeros(10))
        counts[sel.select(view, 3, generator=gen).positions.numpy()] += 1
    assert np.allclose(counts / 3000, 0.3, atol=0.03)


def test_diverged_scores_fail_clearly() -> None:
    view = BatchView(
        indices=torch.arange(4),
        labels=torch.zeros(4),
        losses=torch.tensor([1.0, float("nan"), 0.0, 1.0]),
    )
    with pytest.raises(ValueError, match="NaN or inf"):
        saln.SELECTORS.build("loss").select(view, 2)


@pytest.mark.parametrize("keep", [0, 41, 2.5, True])
def test_bad_keep_is_rejected(keep: object) -> None:
    with pytest.raises((ValueError, TypeError), match="keep"):
        check_keep(keep, N)  # type: ignore[arg-type]
