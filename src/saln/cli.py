"""Command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from saln.config import Config, load, parse_override

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
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--cache-dir", default=".cache/saln", help="where feature files are kept")
    p.add_argument("--loader", default="auto", help="auto | resident | dataloader")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.set_defaults(handler=run_features)


def run_features(args: argparse.Namespace) -> int:
    from saln.data import build_dataset
    from saln.features import extract_features
    from saln.train.setup import resolve_device

    device = resolve_device(args.device, flag="--device")
    bundle = build_dataset(args.dataset, args.data_root, args.download)
    store = extract_features(
        bundle.train,
        args.encoder,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=device,
        cache_dir=args.cache_dir,
        weights=args.weights,
        download=args.download,
        loader=args.loader,
        workers=args.workers,
    )
    how = f"extracted at {store.meta['images_per_second']:.0f} img/s" if store.fresh else "cached"
    print(f"{len(store)} x {store.dim} features in {store.path} ({how})")
    return 0


# Shortcut flags -> dotted config keys; anything else goes through --set section.key=value.
TRAIN_FLAGS = {
    "dataset": ("data.dataset", str, "cifar10 | pets | digits | imagefolder:PATH"),
    "data_root": ("data.data_root", str, "where torchvision datasets live"),
    "method": (
        "train.method",
        str,
        "standard | standard_matched | uniform | saln | loss | rho_loss | jest",
    ),
    "filter_ratio": ("train.filter_ratio", float, "fraction of each loaded batch that is dropped"),
    "epochs": ("train.epochs", int, "training epochs"),
    "seed": ("train.seed", int, "seed of the learner init, order and augmentation"),
    "batch_size": ("train.batch_size", int, "loaded batch (the paper's convention)"),
    "learner_batch_size": (
        "train.learner_batch_size",
        int,
        "rows trained per step (JEST's convention)",
    ),
    "lr": ("optim.lr", float, "learning rate"),
    "learner": ("model.learner", str, "learner architecture"),
    "encoder": ("features.encoder", str, "reference-feature encoder for saln"),
    "device": ("train.device", str, "auto | cpu | cuda"),
}


def add_config_arguments(p: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    p.add_argument("--config", default=None, help="YAML config (see configs/)")
    for flag, (key, kind, text) in TRAIN_FLAGS.items():
        if flag in exclude:
            continue
        p.add_argument(
            f"--{flag.replace('_', '-')}",
            dest=flag,
            type=kind,
            default=None,
            help=f"{text} [{key}]",
        )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config value, e.g. --set optim.schedule=cosine (repeatable)",
    )
    p.add_argument("--download", action="store_true", help="fetch missing datasets/weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, object] = dict(parse_override(item) for item in args.set)
    for flag, (key, _, _) in TRAIN_FLAGS.items():
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    if args.download:
        overrides["data.download"] = True
    if args.no_progress:
        overrides["train.progress"] = False
    return load(args.config, overrides)


def flat_config(config: Config) -> dict[str, Any]:
    """The whole resolved config as ``section.key`` overrides: what each run of a comparison
    starts from before its method, seed or ratio is set."""
    return {f"{s}.{k}": v for s, values in config.to_dict().items() for k, v in values.items()}


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one method and record the run")
    add_config_arguments(p)
    p.add_argument("--out", default=None, help="run directory (default runs/<method>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from saln.train import distributed, fit

    config = config_from_args(args)
    out = args.out or f"runs/{config.train.method}-seed{config.train.seed}"
    info = distributed.compute_init(config.train.device)  # a no-op outside torchrun
    summary = fit(config, out, resume=args.resume, overwrite=args.overwrite)
    distributed.shutdown()  # only on success: after an error torchrun stops the other ranks
    if info.rank != 0:
        return 0
    print(
        f"{summary['method']}: best val acc {summary['best_val_acc']:.4f}, test acc "
        f"{summary['test_acc_best']:.4f} (best-val model) / {summary['test_acc_last']:.4f} (last), "
        f"train time {summary['train_time_s']:.1f} s -> {out}"
    )
    return 0


DEMO_CONFIG = "configs/demo.yaml"


def default_config() -> str:
    """configs/demo.yaml from the working directory, else from the source checkout."""
    from pathlib import Path

    for candidate in (Path(DEMO_CONFIG), Path(__file__).resolve().parents[2] / DEMO_CONFIG):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"{DEMO_CONFIG} not found here; pass --config FILE")


def csv_list(kind: type) -> Callable[[str], list[Any]]:
    """A comma-separated list, each item once: a repeated seed would be averaged as if it
    were another one (a spread of zero that is not there)."""

    def parse(text: str) -> list[Any]:
        try:
            items = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, got {text!r}"
            ) from None
        if not items:
            raise argparse.ArgumentTypeError(f"expected at least one {kind.__name__}")
        repeated = sorted({str(x) for x in items if items.count(x) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(f"{', '.join(repeated)} given more than once")
        return items

    return parse


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    from saln.report.compare import DEFAULT_METHODS

    p = sub.add_parser(
        "compare", help="train every method x seed and write the report (the main job)"
    )
    add_config_arguments(p, exclude=frozenset({"method", "seed"}))  # per run: --methods, --seeds
    add_run_grid_arguments(p, list(DEFAULT_METHODS), "")
    p.add_argument(
        "--out", default="runs/compare", help="comparison directory (runs/ and the report)"
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="target val accuracy, a fraction (default: standard's best - 0.01, else all runs')",
    )
    p.set_defaults(handler=run_compare)


def add_run_grid_arguments(p: argparse.ArgumentParser, methods: list[str], note: str) -> None:
    """--methods, --seeds and --nproc: the runs a comparison or a sweep trains, and how."""
    p.add_argument(
        "--methods",
        type=csv_list(str),
        default=methods,
        help=f"comma-separated (default {','.join(methods)}{note})",
    )
    p.add_argument(
        "--seeds", type=csv_list(int), default=[0], help="comma-separated seeds (default 0)"
    )
    p.add_argument("--nproc", type=int, default=1, help="processes per run, launched with torchrun")


def run_compare(args: argparse.Namespace) -> int:
    from saln.report.compare import print_table, run_comparison

    if args.config is None:
        args.config = default_config()
    flat = flat_config(config_from_args(args))
    report = run_comparison(None, args.methods, args.seeds, args.out, flat, args.target, args.nproc)
    print_table(report)
    print(f"report: {report['report']} (also report.html, summary.csv, summary.json)")
    return 0


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="compare methods at several filter ratios: accuracy against share kept"
    )
    # per run: --methods, --seeds; per comparison: --ratios
    add_config_arguments(p, exclude=frozenset({"method", "seed", "filter_ratio"}))
    p.add_argument(
        "--ratios",
        type=csv_list(float),
        default=[0.5, 0.8, 0.9],
        help="comma-separated filter ratios, one comparison each (default 0.5,0.8,0.9)",
    )
    add_run_grid_arguments(p, ["standard", "uniform", "saln"], "; standard runs once")
    p.add_argument(
        "--out", default="runs/sweep", help="sweep directory (one comparison per ratio in it)"
    )
    p.set_defaults(handler=run_sweep_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    from saln.report.sweep import run_sweep

    if args.config is None:
        args.config = default_config()
    flat = flat_config(config_from_args(args))
    result = run_sweep(None, args.ratios, args.methods, args.seeds, args.out, flat, args.nproc)
    print(result["table"])
    print(f"sweep: {result['report']} (also sweep.json, sweep.png; a report per ratio)")
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a report from stored runs (no training)")
    p.add_argument(
        "runs", nargs="+", help="run directories, or comparison directories holding runs/"
    )
    p.add_argument(
        "--out", default=None, help="where to write the report (default: the first path)"
    )
    p.add_argument("--target", type=float, default=None, help="target val accuracy, a fraction")
    p.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from saln.report.compare import build_report, print_table

    report = build_report([Path(p) for p in args.runs], args.out or args.runs[0], args.target)
    print_table(report)
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"report: {report['report']}")
    return 0


def add_subset_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "subset", help="copy a per-class slice of an image-folder archive (real data, small)"
    )
    p.add_argument(
        "archive",
        help=".tar/.tar.gz with <root>/<split>/<class>/<file> members "
        "(e.g. ../shared/data/cifar10-jpeg.tar.gz)",
    )
    p.add_argument(
        "--out", required=True, help="new folder; train on it with --dataset imagefolder:OUT"
    )
    p.add_argument(
        "--per-class", default="train=500,test=200", help="files per class and split, SPLIT=N,..."
    )
    p.set_defaults(handler=run_subset)


def run_subset(args: argparse.Namespace) -> int:
    from pathlib import Path

    from saln.data.archive import extract_per_class, parse_per_class

    root = extract_per_class(Path(args.archive), Path(args.out), parse_per_class(args.per_class))
    counts = {
        split.name: sum(1 for f in split.rglob("*") if f.is_file()) for split in root.iterdir()
    }
    print(f"{root}: " + ", ".join(f"{n} {split}" for split, n in sorted(counts.items())))
    return 0


PARSERS = [
    add_features_parser,
    add_train_parser,
    add_compare_parser,
    add_report_parser,
    add_sweep_parser,
    add_subset_parser,
]


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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv or ["compare"])  # no arguments: the main job
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        # Our errors name the problem and the fix; a traceback would only bury that.
        print(f"saln {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
