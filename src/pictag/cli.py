"""The ``pictag`` command: each subcommand parses its flags and calls one library function.

| command      | function                                  |
|--------------|-------------------------------------------|
| config       | pictag.config.load_config                 |
| config --sch | pictag.config_schema.config_json_schema   |
| check-data   | pictag.data.validate.check_data           |
| train        | pictag.training.trainer.train             |
| demo         | pictag.demo.run_demo                      |
| evaluate     | pictag.evaluation.evaluate.evaluate_run   |
| predict      | pictag.evaluation.predictor.Predictor     |
| export       | pictag.export.export_run                  |
| explain      | pictag.serving.explain.explain            |
| serve        | pictag.serving.server.serve               |
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pictag.config import Config, ConfigError, config_to_dict, load_config
from pictag.data.validate import DataCheckError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pictag`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Under torchrun the other ranks log warnings only, so messages are not printed N times.
    quiet = os.environ.get("RANK", "0") != "0"
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
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
    report = check_data(source, config.data, decode=not args.no_decode)
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
    # The config first: a mistake in it is reported before torch takes seconds to import.
    config = Config() if args.resume else config_from_args(args)
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pictag.evaluation.evaluate import REPORT_HTML, REPORT_JSON, evaluate_run, summary_table

    options = {"split": args.split, "tta": args.tta, "out_dir": args.out, "device": args.device}
    report = evaluate_run(args.run_dir, args.data, **options)
    out = Path(args.out or args.run_dir)
    print(summary_table(report))
    print(f"report: {out / REPORT_JSON}\n        {out / REPORT_HTML}")
    return 0


def _evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder written by `pictag train`")
    parser.add_argument("--data", help="another split file (CSV) or data config (YAML)")
    parser.add_argument(
        "--split",
        choices=("test", "val", "train", "all"),
        help="default: test; with --data CONFIG, all its images the run did not train on",
    )
    parser.add_argument("--tta", action="store_true", help="also average flipped images (photos)")
    parser.add_argument("--out", help="folder for report.json and report.html (default RUN_DIR)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


PROGRESS_FROM = 64  # images from which `predict` shows a progress bar


def cmd_predict(args: argparse.Namespace) -> int:
    from pictag.evaluation.predict_output import expand_inputs, format_predictions, save_figures
    from pictag.evaluation.predictor import Predictor

    files, failed = expand_inputs(args.images)
    predictor = Predictor.from_run(args.run_dir, args.device, args.backend)
    options = {"top_k": args.top_k, "at_least_one": args.at_least_one, "batch_size": args.batch}
    predictions = predictor.predict(files, **options, progress=len(files) > PROGRESS_FROM)
    print(format_predictions(predictions, predictor.heads, args.format, args.top_k))
    failed += [p.error for p in predictions if p.error]
    if args.show:
        shown = save_figures(predictions, args.show)
        print(f"{len(shown)} pictures with their labels in {args.show}", file=sys.stderr)
    for message in failed:
        print(f"pictag predict: {message}", file=sys.stderr)
    return 1 if failed else 0


def _predict_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder written by `pictag train`")
    parser.add_argument("images", nargs="+", help="image files, folders (recursive) or globs")
    parser.add_argument("--format", default="table", choices=("table", "json", "csv"))
    parser.add_argument("--top-k", type=int, help="keep the K best scores (multilabel: K labels)")
    parser.add_argument(
        "--at-least-one", action="store_true", help="multilabel: never predict no label"
    )
    parser.add_argument("--show", metavar="OUT_DIR", help="save each image with its labels")
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "onnxruntime", "torch"),
        help="auto: ONNX Runtime on a CPU when RUN_DIR/model.onnx is up to date (pictag export)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    from pictag.export import ParityError, export_run

    try:
        result = export_run(args.run_dir, args.onnx, args.torchscript, args.tolerance)
    except ParityError as err:
        print(f"pictag export: parity check failed, file not kept:\n{err}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder written by `pictag train`")
    parser.add_argument("--onnx", metavar="PATH", help="ONNX file (default RUN_DIR/model.onnx)")
    parser.add_argument("--torchscript", metavar="PATH", help="also write a TorchScript file")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="max |probability difference| from PyTorch; a file above it is not kept",
    )


def cmd_explain(args: argparse.Namespace) -> int:
    from pictag.evaluation.predictor import Predictor
    from pictag.serving.explain import default_output, explain

    predictor = Predictor.from_run(args.run_dir, args.device)
    result = explain(predictor, args.image, args.head, args.label)
    out = Path(args.out) if args.out else default_output(args.image, args.head, result.label)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.png)
    print(f"{result.caption} -> {out}")
    return 0


def _explain_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder written by `pictag train`")
    parser.add_argument("image", help="image file")
    parser.add_argument("--head", required=True, help="head to explain")
    parser.add_argument("--label", help="label to explain (default: the most probable one)")
    parser.add_argument(
        "--out", help="PNG to write (default: <image stem>.gradcam-<head>-<label>.png here)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


# Flags of `pictag serve` -> their field of Limits, and help.
SERVE_LIMITS = (
    ("--max-batch", "max_images", "most images per request"),
    ("--max-queue", "max_queue", "requests in the server at once; one more gets 503"),
    ("--batch-images", "batch_images", "most images per model call (dynamic batching)"),
    ("--batch-wait-ms", "batch_wait_ms", "how long an idle model waits for others to join"),
    ("--body-timeout", "body_timeout_s", "seconds a client may take to send a request body"),
    ("--body-idle", "body_idle_s", "longest pause in a request body, in seconds"),
)


def cmd_serve(args: argparse.Namespace) -> int:
    from pictag.serving.limits import Limits, minimum
    from pictag.serving.server import serve

    for flag, field, _ in SERVE_LIMITS:
        least = minimum(field)
        if getattr(args, field) < least:
            raise ValueError(f"{flag} must be at least {least}, got {getattr(args, field)}")
    limits = Limits(**{field: getattr(args, field) for _, field, _ in SERVE_LIMITS})
    serve(args.run_dir, args.host, args.port, limits, args.device)
    return 0


def _serve_args(parser: argparse.ArgumentParser) -> None:
    from pictag.serving.limits import Limits  # no web framework import: `pictag --help` stays fast

    default = Limits()
    parser.add_argument("run_dir", help="run folder written by `pictag train`")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface (0.0.0.0 opens it to the network)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    for flag, field, text in SERVE_LIMITS:
        value = getattr(default, field)
        parser.add_argument(flag, dest=field, type=int, default=value, help=f"{text} ({value})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {
    "config": (cmd_config, _config_args, "check a config and print it as YAML, or --schema"),
    "check-data": (cmd_check_data, _check_args, "check images and labels before training"),
    "train": (cmd_train, _train_args, "train a model and write a run folder"),
    "demo": (cmd_demo, _demo_args, "build the built-in digits data and train on it"),
    "evaluate": (cmd_evaluate, _evaluate_args, "evaluate a run: report.json and report.html"),
    "predict": (cmd_predict, _predict_args, "label images with a trained run"),
    "export": (cmd_export, _export_args, "export a run to ONNX (and TorchScript), checked"),
    "explain": (cmd_explain, _explain_args, "save a Grad-CAM heat map of a label over an image"),
    "serve": (cmd_serve, _serve_args, "serve a run over HTTP: JSON API and a web page"),
}

if __name__ == "__main__":
    sys.exit(main())
