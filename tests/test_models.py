"""Learners, encoders and weights handling (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saln.models import (
    ENCODERS,
    LEARNERS,
    InputTooSmall,
    WeightsError,
    build_encoder,
    build_learner,
    check_input_size,
    classifier_weight,
)


@pytest.mark.parametrize("name", LEARNERS.names())
def test_every_learner_gets_the_dataset_head(name: str) -> None:
    model = build_learner(name, num_classes=7).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert classifier_weight(model.state_dict()).shape[0] == 7


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_pretrained_unavailable_offline_is_an_error_not_random_weights(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        WeightsError, match=r"not in torchvision's cache.*--weights PATH.*efficientnet_lite0"
    ):
        build_learner(name, 10, pretrained=True)
    with pytest.raises(WeightsError, match="--weights PATH"):
        build_encoder(name)


def test_local_weights_load_and_replace_head(tmp_path: Path) -> None:
    source = build_learner("resnet18", 1000)
    path = tmp_path / "r18.pt"
    torch.save(source.state_dict(), path)
    model = build_learner("resnet18", 5, weights=str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 5


def test_torchvision_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / Path(ResNet18_Weights.DEFAULT.url).name
    cached.parent.mkdir(parents=True)
    reference = build_learner("resnet18", 1000)
    torch.save(reference.state_dict(), cached)
    encoder = build_encoder("resnet18")
    assert encoder.dim == 512
    x = torch.rand(2, 3, 64, 64)
    trunk = torch.nn.Sequential(*list(reference.children())[:-1]).eval()
    assert torch.allclose(encoder.module(x), trunk(x).flatten(1), atol=1e-5)


def test_bad_weights_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="is not a weights file saln can read"):
        build_learner("small_cnn", 3, weights=str(bad))
    with pytest.raises(WeightsError, match="does not exist"):
        build_learner("small_cnn", 3, weights=str(tmp_path / "none.pt"))
    torch.save(build_learner("small_cnn", 3).state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(WeightsError, match="do not fit ResNet"):
        build_learner("resnet18", 3, weights=str(tmp_path / "cnn.pt"))


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown learner 'vit'; valid names: airbench, efficientnet_lite0"
    ):
        build_learner("vit", 10)
    with pytest.raises(ValueError, match="unknown encoder 'clip'; valid names: efficientnet_lite0"):
        build_encoder("clip")


def test_encoders_are_frozen_and_pool() -> None:
    for name in ("pixels", "efficientnet_lite0"):
        encoder = build_encoder(name, image_size=32)
        out = encoder.module(torch.rand(2, 3, 32, 32))
        assert out.shape == (2, encoder.dim)
        assert not any(p.requires_grad for p in encoder.module.parameters())
    assert set(ENCODERS.names()) >= {"pixels", "efficientnet_lite0", "resnet50"}


def test_an_image_size_the_layers_shrink_to_nothing_names_the_smallest_that_fits() -> None:
    # small_cnn pools twice by 2 before its last 3x3 block: 4 px is the smallest that fits.
    model = build_learner("small_cnn", num_classes=3)
    with pytest.raises(InputTooSmall, match=r"data.image_size=3 is too small .* >= 4"):
        check_input_size(model, 3, "data.image_size", "the learner small_cnn")
    assert model.training  # the probe leaves the mode as it found it
    check_input_size(model, 4, "data.image_size", "the learner small_cnn")
    encoder = build_encoder("efficientnet_lite0", pretrained=False).module
    with pytest.raises(InputTooSmall, match=r"features.image_size=8 .* >= \d+"):
        check_input_size(encoder, 8, "features.image_size", "the encoder efficientnet_lite0")
