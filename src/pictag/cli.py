"""The ``pictag`` command: each subcommand parses its flags and calls one library function.

| command      | function                                  |
|--------------|-------------------------------------------|
| check-data   | pictag.data.validate.check_data           |
| train        | pictag.training.trainer.train             |
| demo         | pictag.demo.run_demo                      |
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from pictag.config import Config, ConfigError, load_config
from pictag.data.validate import DataCheckError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pictag`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.handler(args)
    except DataCheckError as err:
        print(f"pictag {args.command}: the data checks found problems:\n{err}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"pictag {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pictag", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (handler, add_args, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_args(command)
        command.set_defaults(handler=handler)
    return parser


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config (data, heads, model, train)")
    parser.add_argument("--images", action="append", help="image folder (repeatable)")
    parser.add_argument("--labels", help="CSV/TSV label file or COCO instances JSON")
    parser.add_argument(
        "--head",
        action="append",
        metavar="NAME:KIND[:SEP]",
        help="a head, e.g. tags:multilabel or tags:multilabel:, (repeatable)",
    )
    parser.add_argument("--format", help="folder | csv | voc | coco | filename | builtin")
    parser.add_argument("--pattern", help="file-name regex with one named group per head")
    parser.add_argument("--policy", choices=("strict", "skip"), help="what to do with bad rows")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (if any), then the quick-start flags, then ``--set`` overrides."""
    values: dict[str, object] = {}
    if args.images:
        values["data.images"] = list(args.images)
    for flag in ("labels", "format", "pattern", "policy"):
        if getattr(args, flag):
            values[f"data.{flag}"] = getattr(args, flag)
    for spec in args.head or []:
        name, _, rest = spec.partition(":")
        kind, _, separator = rest.partition(":")
        values[f"heads.{name}.kind"] = kind or "multiclass"
        if separator:
            values[f"heads.{name}.separator"] = separator
    return load_config(args.config, list(args.set), values)


def cmd_check_data(args: argparse.Namespace) -> int:
    from pictag.data.sources import read_samples
    from pictag.data.validate import apply_policy, check_data, format_report

    config = config_from_args(args)
    source = read_samples(config.data, config.heads)
    report = check_data(source, config.data, decode=not args.no_decode)
    print(format_report(report))
    if report.errors() and config.data.policy == "skip":
        kept = apply_policy(report, "skip", Path(args.out))
        print(
            f"skip policy: {len(kept)} images kept; dropped rows listed in {args.out}/skipped.csv"
        )
        return 0
    return 1 if report.errors() else 0


def _check_args(parser: argparse.ArgumentParser) -> None:
    _data_args(parser)
    parser.add_argument("--no-decode", action="store_true", help="do not open the images")
    parser.add_argument("--out", default=".", help="folder for skipped.csv (skip policy)")


def cmd_train(args: argparse.Namespace) -> int:
    from pictag.training.trainer import train

    if args.resume:
        result = train(Config(), args.resume, resume=True)
    else:
        if not args.out:
            raise ConfigError("train needs --out RUN_DIR (or --resume RUN_DIR)")
        result = train(config_from_args(args), args.out)
    print(f"best epoch {result.best_epoch}: score {result.best_score:.4f} -> {result.run_dir}")
    return 0


def _train_args(parser: argparse.ArgumentParser) -> None:
    _data_args(parser)
    parser.add_argument("--out", help="run folder to write")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")


def cmd_demo(args: argparse.Namespace) -> int:
    from pictag.demo import run_demo

    print(run_demo(Path(args.out), tasks=args.task, epochs=args.epochs, data_only=args.data_only))
    return 0


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=".pictag-cache/demo", help="where data and runs go")
    parser.add_argument(
        "--task",
        action="append",
        choices=("digits", "multilabel", "multioutput"),
        help="task(s) to run (default: all three)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    parser.add_argument("--data-only", action="store_true", help="build the data, print stats")


Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {
    "check-data": (cmd_check_data, _check_args, "check images and labels before training"),
    "train": (cmd_train, _train_args, "train a model and write a run folder"),
    "demo": (cmd_demo, _demo_args, "build the built-in digits data and train on it"),
}

if __name__ == "__main__":
    sys.exit(main())
