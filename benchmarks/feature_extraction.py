"""Feature extraction speed on a CPU: eager PyTorch (NCHW and channels-last) against ONNX Runtime.

What the linear probe spends its time on: pooled backbone features of every training image,
computed once. Each runtime gets the same random batches; the rounds interleave the runtimes so
that load from other processes hits them alike, and the best round is the headline (the least
disturbed), with the median beside it. ONNX Runtime runs the graph that
``pictag.models.onnx_features`` exports (TorchScript with the "same" padding fixed), and for
comparison ``torch.export``'s. When the result below was measured, pictag exported with
``torch.export`` and the comparison was the plain TorchScript graph (padding computed at run
time); on a quiet machine the fixed-padding and ``torch.export`` graphs both ran Lite0 at ~100
img/s.

Result (2-core CPU, tf_efficientnet_lite0 offline weights, 224 px, batch 32, fp32; best of 5
rounds while other processes held 55-77 % of the CPUs, so absolute rates are low and only the
ratios carry over): eager NCHW 7.9 img/s, eager channels-last 13.4 (1.7x), ONNX Runtime 75.3
(9.5x NCHW, 5.6x channels-last); the TorchScript exporter's graph 49.5. A second run gave
6.3 / 10.1 / 49.1 / 38.1. Export plus parity check took 22 s under that load (the export
alone 8 s when quieter), once per run folder: it pays for itself after a few hundred images.

Run from the repository root:
    python benchmarks/feature_extraction.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch
from torch import nn

from bench_utils import LoadMeter, environment, write_result
from pictag.models.backbone import create_backbone
from pictag.models.onnx_export import export_backbone_onnx
from pictag.models.onnx_features import onnx_feature_extractor

Forward = Callable[[torch.Tensor], torch.Tensor]


def eager(backbone: nn.Module, channels_last: bool) -> Forward:
    """Eager PyTorch in fp32, as ``extract_features`` runs it without ONNX Runtime."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    backbone = copy.deepcopy(backbone).to(memory_format=fmt).eval()  # own copy: own layout

    @torch.no_grad()
    def forward(images: torch.Tensor) -> torch.Tensor:
        return backbone(images.contiguous(memory_format=fmt))

    return forward


def torch_export_onnx(backbone: nn.Module, input_size: tuple[int, int, int], tmp: Path) -> Forward:
    """ONNX Runtime on ``torch.export``'s graph, with the same session settings."""
    path = export_backbone_onnx(backbone, input_size, tmp / "torch_export.onnx", dynamo=True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def rate(forward: Forward, batches: list[torch.Tensor]) -> float:
    """Images per second over ``batches`` (after one warm-up batch)."""
    forward(batches[0])
    start = time.perf_counter()
    for images in batches:
        forward(images)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    pretrained = "offline" if args.model == "tf_efficientnet_lite0" else False
    backbone, _ = create_backbone(args.model, pretrained, image_size=args.size)
    backbone.eval()
    input_size = (3, args.size, args.size)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(args.batch, *input_size, generator=generator) for _ in range(2)]
    batches = (batches * args.batches)[: args.batches]

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        onnx_forward = onnx_feature_extractor(backbone, input_size, Path(tmp))
        export_s = time.perf_counter() - start
        if onnx_forward is None:
            raise SystemExit("ONNX Runtime feature extractor unavailable (see the log)")
        runtimes = {
            "eager_nchw": eager(backbone, channels_last=False),
            "eager_channels_last": eager(backbone, channels_last=True),
            "onnxruntime": onnx_forward,
            "onnxruntime_torch_export": torch_export_onnx(backbone, input_size, Path(tmp)),
        }
        rates: dict[str, list[float]] = {name: [] for name in runtimes}
        loads = []
        for round_index in range(args.rounds):
            with LoadMeter() as meter:
                for name, forward in runtimes.items():
                    rates[name].append(rate(forward, batches))
            loads.append(meter.others_cpu_share)
            line = ", ".join(f"{n} {r[-1]:.1f}" for n, r in rates.items())
            print(f"round {round_index + 1}: {line} img/s (others' CPU share {loads[-1]})")

    best = {name: max(values) for name, values in rates.items()}
    result = {
        "setup": {
            "model": args.model,
            "pretrained": pretrained,
            "image_size": args.size,
            "batch": args.batch,
            "timed_batches_per_round": args.batches,
            "rounds": args.rounds,
            "dtype": "float32",
        },
        "images_per_s_best": {n: round(v, 1) for n, v in best.items()},
        "images_per_s_median": {n: round(statistics.median(v), 1) for n, v in rates.items()},
        "images_per_s_rounds": {n: [round(x, 1) for x in v] for n, v in rates.items()},
        "speedup_vs_eager_nchw_best": {
            n: round(v / best["eager_nchw"], 2) for n, v in best.items()
        },
        "onnx_export_and_check_s": round(export_s, 1),
        "others_cpu_share_per_round": loads,
        "environment": {**environment(), "onnxruntime": onnxruntime.__version__},
    }
    print(f"best: {result['images_per_s_best']}")
    print(f"speed-up vs eager NCHW: {result['speedup_vs_eager_nchw_best']}")
    print(f"wrote {write_result('feature_extraction', result)}")


if __name__ == "__main__":
    main()
