"""The airbench learner: whitening from the training patches, identity-initialised convs, frozen
parts, its shape settings, and the engine's one data-dependent init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saln import config as cfg
from saln.models import DataInitialised, build_learner
from saln.models.airbench import Airbench, ConvGroup, patch_whitening
from saln.train.setup import build_run
from tests.test_train import tiny


def correlated_images(n: int = 256, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Smooth, channel-correlated images: neighbouring pixels and channels move together, as
    in natural images, so the patch covariance is far from the identity."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, size + 1, size + 1, generator=gen)
    smooth = (base[..., 1:, 1:] + base[..., :-1, 1:] + base[..., 1:, :-1] + base[..., :-1, :-1]) / 4
    tint = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    return smooth * tint + 0.05 * torch.randn(n, 3, size, size, generator=gen)


def test_whitened_patches_have_identity_covariance() -> None:
    images = correlated_images()
    filters = patch_whitening(images, eps=1e-6)
    assert filters.shape == (24, 3, 2, 2)
    assert torch.equal(filters[12:], -filters[:12])  # each filter and its negative
    out = torch.nn.functional.conv2d(images.double(), filters[:12].double())
    rows = out.permute(0, 2, 3, 1).reshape(-1, 12)
    rows = rows - rows.mean(0)
    covariance = rows.T @ rows / len(rows)
    raw = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    assert torch.linalg.cond(torch.cov(raw.T.double())) > 100  # far from white before
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=1e-3)


def test_convs_start_as_identities_and_the_frozen_parts_do_not_train() -> None:
    group = ConvGroup(8, 8, depth=2).eval()
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(group.conv2(x), x)  # dirac: the identity
    wider = ConvGroup(4, 8, depth=2).conv1
    assert torch.allclose(wider(x[:, :4])[:, :4], x[:, :4])  # identity on the first channels
    model = Airbench(10, (8, 16, 16))
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert "whiten.weight" in frozen and "whiten.bias" not in frozen
    assert all(
        name in frozen for name, _ in model.named_parameters() if name.endswith("norm1.weight")
    )
    assert model.head.bias is None


@pytest.mark.parametrize(("widths", "depth"), [((8, 16, 16), 2), ((4, 8, 12), 3)])
def test_every_shape_classifies_any_size_it_can(widths: tuple[int, int, int], depth: int) -> None:
    model = build_learner("airbench", 7, widths=list(widths), depth=depth)
    for size in (16, 32):
        assert model(torch.randn(3, 3, size, size)).shape == (3, 7)
    thirds = [m.third for m in model.modules() if isinstance(m, ConvGroup)]
    assert all((t is not None) == (depth == 3) for t in thirds)


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"model.widths": [8, 16]}, r"model\.widths must be three positive ints"),
        ({"model.widths": [8, 0, 16]}, r"model\.widths must be three positive ints"),
        ({"model.widths": "8,x,16"}, r"model\.widths\[1\] must be int"),
        ({"model.depth": 4}, r"model\.depth must be 2 or 3"),
    ],
)
def test_bad_shapes_are_refused_naming_the_key(settings: dict[str, object], said: str) -> None:
    with pytest.raises(cfg.ConfigError, match=said):
        cfg.load(None, {"model.learner": "airbench", **settings})
    with pytest.raises(cfg.ConfigError, match=r"shapes the airbench learner, and model\.learner"):
        cfg.load(None, {"model.learner": "small_cnn", "model.widths": [8, 8, 8]})


def test_the_engine_whitens_from_training_rows_only_once(tmp_path: Path) -> None:
    overrides = {"model.learner": "airbench", "model.widths": [8, 16, 16]}
    ctx = build_run(tiny(tmp_path, "standard", **overrides))
    assert isinstance(ctx.model, DataInitialised) and ctx.one_off["learner_init_s"] > 0
    rows = [int(i) for i in ctx.split.train]
    images = next(ctx.train_data.batches([rows], train=False, seed=0)).images
    assert torch.allclose(ctx.model.whiten.weight, patch_whitening(images), atol=1e-6)
    others = [int(i) for i in ctx.split.val]
    held_out = next(ctx.train_data.batches([others], train=False, seed=0)).images
    assert not torch.allclose(ctx.model.whiten.weight, patch_whitening(held_out), atol=1e-3)


def test_a_few_steps_fit_a_batch() -> None:
    """The network learns: SGD steps on one whitened batch take its loss well down."""
    torch.manual_seed(0)
    images, labels = correlated_images(64, 16), torch.arange(64) % 4
    model = Airbench(4, (24, 32, 32))
    model.init_from_data(images)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=0.5, momentum=0.9)  # the 1/9 head wants a large lr
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]


def test_an_airbench_reference_model_whitens_from_the_holdout_it_trains_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saln.train import reference

    seen: list[list[int]] = []
    real = reference.init_from_data

    def recording(model: DataInitialised, data: object, rows: object) -> float:
        seen.append([int(i) for i in rows])  # type: ignore[attr-defined]
        return real(model, data, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(reference, "init_from_data", recording)
    overrides = {"model.learner": "airbench", "model.widths": [8, 16, 16], "train.epochs": 1}
    ctx = build_run(tiny(tmp_path, "rho_loss", **overrides))
    assert seen == [ctx.split.reference.tolist()] and ctx.ref_losses is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the benchmark would run")
def test_the_side_by_side_refuses_a_machine_without_a_gpu_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks import bench_airbench

    with pytest.raises(SystemExit) as exit_info:
        bench_airbench.main(["--seeds", "1"])
    assert exit_info.value.code == 2
    assert "none is visible: run it on one" in capsys.readouterr().err
