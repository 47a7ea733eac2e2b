"""The ``pictag`` command: each subcommand parses its flags and calls one library function.

| command      | function                                  |
|--------------|-------------------------------------------|
| config       | pictag.config.load_config                 |
| config --sch | pictag.config_schema.config_json_schema   |
| check-data   | pictag.data.validate.check_data           |
| train        | pictag.training.trainer.train             |
| lr-find      | pictag.training.lr_find.lr_find           |
| demo         | pictag.demo.run_demo                      |
| evaluate     | pictag.evaluation.evaluate.evaluate_run   |
| predict      | pictag.evaluation.predictor.Predictor     |
| export       | pictag.export.export_run                  |
| explain      | pictag.serving.explain.explain            |
| serve        | pictag.serving.server.serve               |
| audit        | pictag.auditing.audit_run                 |
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from pictag.allocator import keep_freed_memory
from pictag.cli.resume import check_resume_alone, resume_hint
from pictag.cli.run_commands import RUN_COMMANDS, Handler
from pictag.cli.startup import import_torch_frozen
from pictag.config import Config, ConfigError, config_to_dict, load_config
from pictag.data.validate import DataCheckError
from pictag.demo import DEMO_TASKS


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (the command line when None) and run the command; returns the exit
    status."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed command, errors reported as messages and exit statuses."""
    # Under torchrun the other ranks log warnings only, so messages are not printed N times.
    quiet = os.environ.get("RANK", "0") != "0"
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    try:
        # Log lines go above the progress bars instead of onto the end of a bar's line.
        with logging_redirect_tqdm():
            return args.handler(args)
    except DataCheckError as err:
        print(f"pictag {args.command}: the data checks found problems:\n{err}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, ValueError, ConnectionError) as err:
        print(f"pictag {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{resume_hint(args)}", file=sys.stderr)
        return 130


# Commands that import torch (with import_torch_frozen) only once their config has passed its
# checks, so that a mistake in it is reported in a fraction of a second, or never import it.
TORCH_LATER = frozenset({"config", "check-data", "train", "lr-find"})
# Commands whose eager PyTorch steps allocate large activations again and again: glibc's malloc
# keeps freed memory for them (pictag.allocator). Here and not in the library: the setting holds
# for the rest of the process, which the command owns and a program calling the API does not.
KEEPS_FREED_MEMORY = frozenset({"train", "lr-find", "audit"})


def console_main() -> int:
    """Entry point of the ``pictag`` console script and ``python -m pictag``: parse the command
    line, import torch quickly (:func:`import_torch_frozen`), run the command and exit quickly."""
    args = build_parser().parse_args()  # --help and bad flags end here, before torch
    if args.command in KEEPS_FREED_MEMORY:
        keep_freed_memory()
    if args.command not in TORCH_LATER:
        try:
            import_torch_frozen()
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    status = run(args)
    # A process that imported torch spends 1-1.5 s at exit on a last garbage collection over its
    # millions of objects. Frozen, they are skipped: atexit handlers (and weakref finalizers)
    # still run, and an object still closes when its last reference goes, but one left in a
    # reference cycle is not finalized; pictag closes its files with `with`. Not in main():
    # tests call it in-process.
    gc.freeze()
    return status


# Plain text: argparse prints it as it is (the module docstring is reStructuredText).
DESCRIPTION = (
    "pictag: train, evaluate, export and serve image classifiers (classes, tags, several heads "
    "on one backbone). `pictag COMMAND --help` for one command's flags."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pictag", description=DESCRIPTION)
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
    if getattr(args, "budget", None):
        values["train.budget"] = args.budget
    for spec in args.head or []:
        name, _, rest = spec.partition(":")
        kind, _, separator = rest.partition(":")
        values[f"heads.{name}.kind"] = kind or "multiclass"
        if separator:
            values[f"heads.{name}.separator"] = separator
    config = load_config(args.config, list(args.set), values)
    from pictag.heads import check_config  # deferred: the head kinds import torch

    check_config(config)
    return config


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from pictag.config_schema import config_json_schema

    if args.schema:
        print(json.dumps(config_json_schema(), indent=2))
    else:  # the defaults, or CONFIG with the flags applied: checked, as training would see it
        print(yaml.safe_dump(config_to_dict(config_from_args(args)), sort_keys=False), end="")
    return 0


def _config_args(parser: argparse.ArgumentParser) -> None:
    _data_args(parser)
    parser.add_argument(
        "--schema", action="store_true", help="print the JSON Schema of config files (editors)"
    )


def cmd_check_data(args: argparse.Namespace) -> int:
    from pictag.data.sources import read_samples
    from pictag.data.validate import apply_policy, check_data, format_report

    config = config_from_args(args)
    source = read_samples(config.data, config.heads)
    report = check_data(
        source, config.data, decode=not args.no_decode, near_duplicates=config.data.near_duplicates
    )
    print(format_report(report))
    if report.errors() and config.data.policy == "skip":
        kept = apply_policy(report, "skip", Path(args.out) if args.out else None)
        where = "not written (--out DIR writes them to skipped.csv)"
        if args.out:
            where = f"listed in {Path(args.out) / 'skipped.csv'}"
        print(f"skip policy: {len(kept)} images kept; dropped rows {where}")
        return 0
    return 1 if report.errors() else 0


def _check_args(parser: argparse.ArgumentParser) -> None:
    _data_args(parser)
    parser.add_argument("--no-decode", action="store_true", help="do not open the images")
    parser.add_argument(
        "--out", help="folder to write skipped.csv in (skip policy); default: no file"
    )


def cmd_train(args: argparse.Namespace) -> int:
    if not args.resume and not args.out:
        raise ConfigError("train needs --out RUN_DIR (or --resume RUN_DIR)")
    if args.resume:
        check_resume_alone(args)
    # The config first: a mistake in it is reported before torch takes seconds to import.
    config = Config() if args.resume else config_from_args(args)
    import_torch_frozen()
    from pictag.training.announce import result_line
    from pictag.training.trainer import train

    run_dir = args.resume or args.out
    result = train(config, run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        epochs_run = sum(1 for record in result.history if record.get("epoch", 0) > 0)
        print(result_line(result.best_epoch, result.best_score, epochs_run, result.run_dir))
    return 0


def _train_args(parser: argparse.ArgumentParser) -> None:
    _data_args(parser)
    parser.add_argument("--out", help="run folder to write")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument(
        "--budget",
        help="train.budget: a wall-clock budget (90s, 5m, 1h30m) for the probe and the epochs "
        "that fit; auto (5m on a CPU) or off",
    )


def cmd_lr_find(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    import_torch_frozen()
    from pictag.training.lr_find import lr_find

    options = {"start_lr": args.start_lr, "end_lr": args.end_lr, "num_iter": args.steps}
    result = lr_find(config, args.out, **options)
    ended = f"; stopped early: {result.stopped}" if result.stopped else ""
    print(
        f"suggested train.lr: {result.suggestion:.2g} (where the smoothed loss falls fastest; "
        f"{len(result.lrs)} steps{ended})\nplot: {result.plot_path}\nvalues: {result.csv_path}"
    )
    return 0


def _lr_find_args(parser: argparse.ArgumentParser) -> None:
    _data_args(parser)
    parser.add_argument("--out", default="lr-find", help="folder for lr_find.png and .csv")
    parser.add_argument("--start-lr", type=float, default=1e-7, help="first train.lr of the sweep")
    parser.add_argument("--end-lr", type=float, default=10.0, help="last train.lr of the sweep")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep")


def cmd_demo(args: argparse.Namespace) -> int:
    from pictag.demo import run_demo

    print(run_demo(Path(args.out), tasks=args.task, epochs=args.epochs, data_only=args.data_only))
    return 0


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=".pictag-cache/demo", help="where data and runs go")
    parser.add_argument(
        "--task",
        action="append",
        choices=DEMO_TASKS,
        help="task(s) to run (default: all)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    parser.add_argument("--data-only", action="store_true", help="build the data, print stats")


COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {
    "config": (cmd_config, _config_args, "check a config and print it as YAML, or --schema"),
    "check-data": (cmd_check_data, _check_args, "check images and labels before training"),
    "train": (cmd_train, _train_args, "train a model and write a run folder"),
    "lr-find": (cmd_lr_find, _lr_find_args, "sweep the learning rate; plot and suggest train.lr"),
    "demo": (cmd_demo, _demo_args, "build the built-in digits data and train on it"),
    **RUN_COMMANDS,
}

if __name__ == "__main__":
    sys.exit(main())
