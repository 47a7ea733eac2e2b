"""``pictag`` commands on a trained run folder: evaluate, predict, export, explain, serve."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


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
    from pictag.evaluation.predict_output import (
        expand_inputs,
        format_predictions,
        save_figures,
        save_masks,
    )
    from pictag.evaluation.predictor import Predictor

    files, failed = expand_inputs(args.images)
    predictor = Predictor.from_run(args.run_dir, args.device, args.backend)
    options = {"top_k": args.top_k, "at_least_one": args.at_least_one, "batch_size": args.batch}
    predictions = predictor.predict(files, **options, progress=len(files) > PROGRESS_FROM)
    if args.show:  # drawn before --masks moves the masks' pixels into files
        shown = save_figures(predictions, args.show)
        print(f"{len(shown)} pictures with their labels in {args.show}", file=sys.stderr)
    if args.masks:
        written = save_masks(predictions, args.masks)
        print(f"{len(written)} class-index masks (PNG) in {args.masks}", file=sys.stderr)
    print(format_predictions(predictions, predictor.heads, args.format, args.top_k))
    failed += [p.error for p in predictions if p.error]
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
    parser.add_argument(
        "--masks",
        metavar="OUT_DIR",
        help="segmentation heads: write each image's mask as a class-index PNG "
        "(IMAGE.HEAD.png, the file's own size); JSON then names the file instead of holding it",
    )
    parser.add_argument(
        "--batch",
        type=int,
        help="images per forward pass at most (evened out); default 8 on a CPU, 32 on a GPU",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--backend",
        default="auto",
        # The choices of pictag.evaluation.backends.BACKENDS, spelt out so that the parser does
        # not import torch.
        choices=("auto", "onnxruntime", "openvino", "openvino-fp32", "torch"),
        help="auto: on a CPU with an up-to-date RUN_DIR/model.onnx (pictag export), ONNX Runtime "
        "or OpenVINO, whichever is faster here; openvino: its fastest precision (bf16 on CPUs "
        "with native bf16); openvino-fp32: float32 forced",
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


def cmd_audit(args: argparse.Namespace) -> int:
    from pictag.auditing import AUDIT_HTML, AUDIT_JSON, audit_run

    options = {"folds": args.folds, "out_dir": args.out, "fix_csv": args.fix_csv}
    audit = audit_run(args.run_dir, **options, device=args.device)
    print(audit_text(audit))
    out = Path(args.out or args.run_dir)
    print(f"audit: {out / AUDIT_JSON}\n       {out / AUDIT_HTML}")
    if audit.get("fix_csv"):
        print(f"       {audit['fix_csv']} (the label file with suggestions in new columns)")
    return 0


def audit_text(audit: dict, shown: int = 5) -> str:
    """Counts and the first few findings of each kind, for the terminal."""
    from pictag.evaluation.run_extras import audit_counts

    issues, pairs, count = audit["label_issues"], audit["near_duplicates"], audit_counts(audit)
    lines = [
        f"{audit['n_images']} images: {count['label_issues']} possible label errors, "
        f"{count['near_duplicates']} near-duplicate pairs ({count['across_splits']} across "
        f"splits), {count['outliers']} outliers shown"
    ]
    for item in issues[:shown]:
        lines.append(
            f"  {item['head']}: {item['image']} given {item['given']!r}, suggested "
            f"{item['suggested']!r} (score {item['score']:.3g}, {item['split']})"
        )
    for pair in pairs[:shown]:
        where = " / ".join(pair["splits"])
        lines.append(f"  near-duplicates ({where}): {pair['a']} ~ {pair['b']}")
    return "\n".join(lines)


def _audit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder written by `pictag train`")
    parser.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold heads")
    parser.add_argument("--out", help="folder for audit.json and audit.html (default RUN_DIR)")
    parser.add_argument(
        "--fix-csv",
        action="store_true",
        help="also write a copy of the label CSV with the suggestions in new columns",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


RUN_COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {
    "evaluate": (cmd_evaluate, _evaluate_args, "evaluate a run: report.json and report.html"),
    "predict": (cmd_predict, _predict_args, "label images with a trained run"),
    "export": (cmd_export, _export_args, "export a run to ONNX (and TorchScript), checked"),
    "explain": (cmd_explain, _explain_args, "save a Grad-CAM heat map of a label over an image"),
    "serve": (cmd_serve, _serve_args, "serve a run over HTTP: JSON API and a web page"),
    "audit": (cmd_audit, _audit_args, "find wrong labels, near-duplicates and outliers"),
}
