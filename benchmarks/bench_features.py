"""Feature-extraction throughput against the encoder's pure inference throughput, in one run.

    python -m benchmarks.bench_features [--images 1000] [--image-size 128] [--out PATH]

Extraction runs the real path (real CIFAR-10 JPEGs from ../shared/data, decode, eval
transform, encoder, float16 cache write) with each loader; pure inference runs the same encoder
on random tensors of the same shape already on the device. The ratio is what the data path
costs: 1.0 means extraction is as fast as the model allows. Two ratios: end to end (with the
one-off setup: the resident loader decodes every file first) and the encode loop alone (is
the model kept fed once the data is ready?).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tests.conftest import CIFAR_ARCHIVE, unpack_cifar_subset

from benchmarks.common import RESULTS, machine, write_json
from saln.data import build_dataset, decode
from saln.data.gpu import normalise
from saln.features import extract_features
from saln.models import build_encoder


def inference_rate(
    encoder: str, n: int, size: int, batch: int, device: torch.device, pretrained: bool = True
) -> float:
    module = build_encoder(encoder, image_size=size, pretrained=pretrained).module.to(device)
    x = normalise(torch.rand(batch, 3, size, size, device=device))  # image-like values
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
    if device.type == "cuda":
        module, x = (
            module.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    with torch.inference_mode(), autocast:
        module(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(max(1, n // batch)):
            module(x).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return max(1, n // batch) * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000, help="CIFAR-10 train images to extract")
    parser.add_argument("--image-size", type=int, default=128, help="encoder input, pixels")
    parser.add_argument("--batch-size", type=int, default=100, help="images per forward")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument(
        "--no-pretrained",
        action="store_true",
        help="random weights (throughput does not depend on them; e.g. resnet50 offline)",
    )
    parser.add_argument("--archive", type=Path, default=CIFAR_ARCHIVE, help="cifar10-jpeg.tar.gz")
    parser.add_argument(
        "--loaders",
        default="resident,dataloader",
        help="comma-separated: auto is the choice `saln features` makes for these images",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    payload: dict[str, Any] = {
        "benchmark": "features",
        "machine": machine(),
        "device": str(device),
        "encoder": args.encoder,
        "image_size": args.image_size,
        "images": args.images,
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = unpack_cifar_subset(Path(tmp), {"train": args.images // 10}, args.archive)
        (root / "test").mkdir()
        for cls in (root / "train").iterdir():
            (root / "test" / cls.name).mkdir()
            (root / "test" / cls.name / "x.jpg").hardlink_to(next(cls.iterdir()))
        source = build_dataset(f"imagefolder:{root}").train
        rows = []
        for loader in args.loaders.split(","):
            shape = (
                args.encoder,
                len(source),
                args.image_size,
                args.batch_size,
                device,
                not args.no_pretrained,
            )
            # Decoded images are kept per process by file signature: every loader after the
            # first (in --loaders order) encodes images already decoded, so say which row paid.
            decoded_before = decode.kept_decoded(source, args.image_size, None)[1] is not None
            before = inference_rate(*shape)
            start = time.perf_counter()
            store = extract_features(
                source,
                args.encoder,
                image_size=args.image_size,
                batch_size=args.batch_size,
                device=device,
                cache_dir=Path(tmp) / loader,
                loader=loader,
                progress=False,
                pretrained=not args.no_pretrained,
            )
            rate = len(source) / (time.perf_counter() - start)
            pure = (before + inference_rate(*shape)) / 2  # bracket the extraction: drift cancels
            steady = store.meta["encode_images_per_second"]
            rows.append(
                {
                    "loader": loader,
                    "path": store.meta["loader"],
                    "decoded_before": decoded_before,
                    "extraction_img_per_s": rate,
                    "pure_inference_img_per_s": pure,
                    "ratio": rate / pure,
                    "setup_s": store.meta["setup_seconds"],
                    "encode_img_per_s": steady,
                    "encode_ratio": steady / pure,
                }
            )
            print(
                f"{loader:10s} ({store.meta['loader']}) extraction {rate:8.1f} img/s (ratio"
                f" {rate / pure:.2f}; setup"
                f" {store.meta['setup_seconds']:.1f} s) | encode loop {steady:8.1f} img/s (ratio"
                f" {steady / pure:.2f}) | inference {pure:8.1f} img/s",
                flush=True,
            )
        payload["rows"] = rows
    out = write_json(payload, args.out or RESULTS / f"features_{device.type}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
