"""Command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from saln.registry import Registry

COMMANDS: Registry[None] = Registry("command")
Handler = Callable[[argparse.Namespace], int]


def add_features_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="extract and cache reference features")
    p.add_argument("--dataset", required=True, help="cifar10 | pets | digits | imagefolder:PATH")
    p.add_argument(
        "--encoder",
        default="efficientnet_lite0",
        help="efficientnet_lite0 | resnet50 | resnet18 | pixels",
    )
    p.add_argument("--data-root", default="data", help="where torchvision datasets live")
    p.add_argument(
        "--download", action="store_true", help="download the dataset/weights if missing"
    )
    p.add_argument("--weights", default=None, help="local state dict for the encoder")
    p.add_argument("--image-size", type=int, default=224, help="encoder input size, pixels")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--cache-dir", default=".cache/saln", help="where feature files are kept")
    p.add_argument("--loader", default="auto", help="auto | resident | dataloader")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.set_defaults(handler=run_features)


def run_features(args: argparse.Namespace) -> int:
    from saln.data import build_dataset
    from saln.features import extract_features

    bundle = build_dataset(args.dataset, args.data_root, args.download)
    store = extract_features(
        bundle.train,
        args.encoder,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=args.cache_dir,
        weights=args.weights,
        download=args.download,
        loader=args.loader,
        workers=args.workers,
    )
    rate = store.meta.get("images_per_second")
    print(
        f"{len(store)} x {store.dim} features in {store.path}"
        + (f" ({rate:.0f} img/s)" if rate else " (cached)")
    )
    return 0


PARSERS = [add_features_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saln",
        description="Data curation during training: SALN and the baselines to judge it by.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        build_parser().print_help()
        return 2
    try:
        return handler(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # Our errors name the problem and the fix; a traceback would only bury that.
        print(f"saln {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
