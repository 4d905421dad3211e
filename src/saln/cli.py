"""Command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, get_args, get_type_hints

from saln.config import Config, load, parse_override
from saln.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def registry_names(kind: str) -> list[str]:
    """The valid values of a config field whose metadata names a registry."""
    from saln.train.names import registered_names

    return registered_names(kind)


def config_field(key: str) -> tuple[dataclasses.Field[Any], Any]:
    """The dataclass field behind ``section.name`` and its resolved type."""
    section, _, name = key.partition(".")
    section_type = get_type_hints(Config)[section]
    field = next(f for f in dataclasses.fields(section_type) if f.name == name)
    return field, get_type_hints(section_type)[name]


def flag_type(hint: Any) -> type:
    """bool, int, float or str: what a flag for a field of type ``hint`` parses."""
    options = [k for k in get_args(hint) or (hint,) if k is not type(None)]
    return next(k for k in (bool, int, float, str) if k in options)


def add_setting_flag(p: argparse.ArgumentParser, key: str) -> None:
    """``--name`` for the config key ``section.name``: its type, help and default from the config
    dataclass, and where the values are registered names, those names."""
    field, hint = config_field(key)
    text = field.metadata["help"]
    if field.metadata.get("registry"):
        text += ": " + ", ".join(registry_names(field.metadata["registry"]))
    text += f" [{key}, default {field.default}]"
    flag, kind = f"--{field.name.replace('_', '-')}", flag_type(hint)
    if kind is bool:
        action = argparse.BooleanOptionalAction
        p.add_argument(flag, dest=key, action=action, default=None, help=text)
    else:
        metavar = field.name.upper()
        p.add_argument(flag, dest=key, type=kind, default=None, metavar=metavar, help=text)


def add_config_arguments(p: argparse.ArgumentParser, keys: Sequence[str]) -> None:
    """--config, a flag per key in ``keys``, and --set for any other setting."""
    p.add_argument("--config", default=None, help="YAML config: a file, or a packaged name")
    for key in keys:
        add_setting_flag(p, key)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config value, e.g. --set optim.schedule=cosine (repeatable)",
    )
    p.set_defaults(setting_keys=list(keys))


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults <- --config <- --set <- the flags. Every --set is checked, also one that a
    flag then replaces."""
    from saln.train.names import check_names

    settings: dict[str, object] = dict(parse_override(item) for item in args.set)
    config = load(args.config, settings)
    check_names(config)  # also what a flag then replaces: a typo is a typo
    flags = {key: getattr(args, key) for key in args.setting_keys if getattr(args, key) is not None}
    return load(args.config, {**settings, **flags}) if flags else config


# The settings each command has a flag for; every other one goes through --set.
RUN_FLAGS = (
    "data.dataset",
    "data.data_root",
    "data.download",
    "train.method",
    "train.filter_ratio",
    "train.epochs",
    "train.seed",
    "train.batch_size",
    "train.learner_batch_size",
    "optim.lr",
    "model.learner",
    "features.encoder",
    "train.device",
    "train.progress",
)
FEATURE_FLAGS = (
    "data.dataset",
    "data.data_root",
    "data.download",
    "features.encoder",
    "features.weights",
    "features.image_size",
    "features.batch_size",
    "features.cache_dir",
    "data.loader",
    "data.workers",
    "train.device",
    "train.progress",
)


def run_flags(*left_out: str) -> list[str]:
    return [key for key in RUN_FLAGS if key not in left_out]


def add_features_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="extract and cache reference features")
    add_config_arguments(p, FEATURE_FLAGS)
    p.set_defaults(handler=run_features)


def run_features(args: argparse.Namespace) -> int:
    from saln.data import build_dataset
    from saln.train.components import resolve_device
    from saln.train.setup import load_features

    config = config_from_args(args)
    device = resolve_device(config.train.device)
    bundle = build_dataset(config.data.dataset, config.data.data_root, config.data.download)
    store = load_features(config, bundle, device)
    how = f"extracted at {store.meta['images_per_second']:.0f} img/s" if store.fresh else "cached"
    print(f"{len(store)} x {store.dim} features in {store.path} ({how})")
    return 0


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one method and record the run")
    add_config_arguments(p, RUN_FLAGS)
    p.add_argument(
        "--out", type=folder, default=None, help="run directory (default runs/<method>-seed<seed>)"
    )
    p.add_argument("--resume", action="store_true", help="continue an unfinished run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from saln import distributed
    from saln.train import fit

    config = config_from_args(args)
    out = args.out or f"runs/{config.train.method}-seed{config.train.seed}"
    info = distributed.compute_init(config.train.device)  # a no-op outside torchrun
    summary = fit(config, out, resume=args.resume, overwrite=args.overwrite)
    distributed.shutdown()  # only on success: after an error torchrun stops the other ranks
    if info.rank != 0:
        return 0
    print(
        f"{summary.method}: best val acc {summary.best_val_acc:.4f}, test acc "
        f"{summary.test_acc_best:.4f} (best-val model) / {summary.test_acc_last:.4f} (last), "
        f"train time {summary.train_time_s:.1f} s -> {out}"
    )
    return 0


def folder(text: str) -> str:
    """A folder argument: an empty one would write into the working directory itself."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a folder")
    return text


DEMO_CONFIG = "demo"  # packaged with saln: the bundled default


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
    from saln.experiments.compare import DEFAULT_METHODS, FRONTIER

    p = sub.add_parser(
        "compare", help="train every method x seed and write the report (the main job)"
    )
    add_config_arguments(p, run_flags("train.method", "train.seed"))  # per run: --methods, --seeds
    # three seeds, so that every method gets a verdict (about 4 minutes on the bundled default)
    add_run_grid_arguments(p, list(DEFAULT_METHODS), "", [0, 1, 2])
    p.add_argument(
        "--out",
        type=folder,
        default="runs/compare",
        help="comparison directory (runs/ and the report)",
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="target val accuracy, a fraction (default: standard's best - 0.01, else all runs')",
    )
    p.add_argument(
        "--frontier",
        type=csv_list(float),
        default=list(FRONTIER),
        help="standard's compute frontier: with standard in --methods, also train "
        "standard_matched@F, standard for the share F of its epochs, for each F (default "
        f"{','.join(map(str, FRONTIER))}); each method is judged against it",
    )
    p.add_argument(
        "--no-frontier", dest="frontier", action="store_const", const=[], help="train no frontier"
    )
    p.set_defaults(handler=run_compare)


def add_run_grid_arguments(
    p: argparse.ArgumentParser, methods: list[str], note: str, seeds: list[int]
) -> None:
    """--methods, --seeds and --nproc: the runs a comparison or a sweep trains, and how."""
    p.add_argument(
        "--methods",
        type=csv_list(str),
        default=methods,
        help=f"comma-separated (default {','.join(methods)}{note})",
    )
    shown = ",".join(map(str, seeds))
    p.add_argument(
        "--seeds", type=csv_list(int), default=seeds, help=f"comma-separated (default {shown})"
    )
    p.add_argument("--nproc", type=int, default=1, help="processes per run, launched with torchrun")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain runs in --out made with another config (else they are refused)",
    )


def run_compare(args: argparse.Namespace) -> int:
    from saln.experiments.compare import run_comparison, with_frontier
    from saln.report.build import print_table

    if args.config is None:
        args.config = DEMO_CONFIG
    base = config_from_args(args)
    methods = with_frontier(args.methods, args.frontier)
    report = run_comparison(
        base, methods, args.seeds, args.out, args.target, args.nproc, args.overwrite
    )
    print_table(report)
    print(f"report: {report['report']} (also report.html, summary.csv, summary.json)")
    return 0


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="compare methods at several filter ratios: accuracy against share kept"
    )
    # per run: --methods, --seeds; per comparison: --ratios
    add_config_arguments(p, run_flags("train.method", "train.seed", "train.filter_ratio"))
    p.add_argument(
        "--ratios",
        type=csv_list(float),
        default=[0.5, 0.8, 0.9],
        help="comma-separated filter ratios, one comparison each (default 0.5,0.8,0.9)",
    )
    add_run_grid_arguments(p, ["standard", "uniform", "saln"], "; standard runs once", [0])
    p.add_argument(
        "--out",
        type=folder,
        default="runs/sweep",
        help="sweep directory (one comparison per ratio in it)",
    )
    p.set_defaults(handler=run_sweep_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    from saln.experiments.sweep import run_sweep

    if args.config is None:
        args.config = DEMO_CONFIG
    base = config_from_args(args)
    result = run_sweep(
        base, args.ratios, args.methods, args.seeds, args.out, args.nproc, args.overwrite
    )
    print(result["table"])
    print(f"sweep: {result['report']} (also sweep.json, sweep.png; a report per ratio)")
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a report from stored runs (no training)")
    p.add_argument(
        "runs", nargs="+", help="run directories, or comparison directories holding runs/"
    )
    p.add_argument(
        "--out",
        type=folder,
        default=None,
        help="where to write the report (default: the first path)",
    )
    p.add_argument("--target", type=float, default=None, help="target val accuracy, a fraction")
    p.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from saln.report.build import build_report, print_table

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
        "--out",
        type=folder,
        required=True,
        help="new folder; train on it with --dataset imagefolder:OUT",
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


# What a command may fail with for a reason the user can fix: printed as one line, exit 2.
# Anything else (a ValueError from numpy, say) is a bug in saln and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``kill``) or SIGHUP (the terminal closed): ended like
    Ctrl-C, so every write in progress is abandoned cleanly, locks are released and temporary
    files removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


STOPS = (signal.SIGTERM, signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv or ["compare"])  # no arguments: the main job
    handler: Handler = args.handler
    # The command line owns its process: SIGTERM unwinds like Ctrl-C (not in the library),
    # and the handler it replaced comes back when the command returns.
    own = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _terminate) for s in STOPS} if own else {}
    try:
        return run_handler(handler, args)
    finally:
        for stop, handler_before in previous.items():
            if handler_before is not None:
                signal.signal(stop, handler_before)


def run_handler(handler: Handler, args: argparse.Namespace) -> int:
    """The command, with what a user can fix printed as one line (exit 2)."""
    try:
        return handler(args)
    except USER_ERRORS as err:
        # Our errors name the problem and the fix; a traceback would only bury that.
        print(f"saln {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno != errno.ENAMETOOLONG:
            raise
        print(
            f"saln {args.command}: error: a name in {err.filename} is longer than the file "
            "system allows (255 bytes a folder or file name): choose a shorter one",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as stop:
        from saln.experiments.launch import LAUNCHED_ENV

        code, what = (130, "interrupted")
        if isinstance(stop, Terminated):
            code, what = 128 + stop.signum, "terminated"
        if not os.environ.get(LAUNCHED_ENV):  # a launched run's comparison advises instead
            print(f"saln {args.command}: {what}; {RESUMING[args.command]}", file=sys.stderr)
        return code


RESUMING = {  # what an interrupted command leaves, by command
    "train": "run the same command with --resume to continue from the last checkpoint",
    "compare": "run the same command again: complete runs are kept, the unfinished one resumes",
    "sweep": "run the same command again: complete runs are kept, the unfinished one resumes",
    "features": "run it again: nothing half-written was kept",
    "report": "run it again",
    "subset": "run it again with a new --out",
}


if __name__ == "__main__":
    sys.exit(main())
