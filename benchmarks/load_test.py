"""Load test of ``pictag serve`` on loopback: N concurrent clients send M requests of real JPEGs.

    python benchmarks/load_test.py --clients 4 32 --requests 1000

The server is the real command (``python -m pictag serve RUN_DIR``) in its own process, so the
clients' threads do not share its interpreter. The clients are threads with one ``httpx.Client``
(keep-alive) each, posting the MIML scene JPEGs of ``../shared/data/miml-scenes/test`` in turn
as multipart uploads, at each ``--clients`` count in turn against one server. Reported per
count: throughput (requests/s, images/s), latency p50/p90/p99, errors by kind (a 503 when the
server's queue is full counts as one), the mean images per model call (dynamic batching, from
``/health``), the CPU share the server and the
machine's other processes took, and for comparison the same images through ``Predictor.predict``
in this process one per call (sequential: no HTTP, but no overlap of one image's decoding with
another's inference either). Bounded: loopback only, at most ``--requests`` requests, a
per-request timeout and a deadline for the whole run.

By default the run is EfficientNet-Lite0 (the bundled ImageNet weights) with an untrained
five-tag head, written to a temporary folder (the speed does not depend on the head's weights),
measured twice: eager PyTorch, then ONNX Runtime after ``pictag export``. Pass ``--run RUN_DIR``
to load-test a trained run as it is.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from bench_utils import MIML_TAGS, LoadMeter, dataset_dir, environment, write_result
from pictag.config import config_from_dict
from pictag.data.schema import Head
from pictag.evaluation.predictor import Predictor
from pictag.run import build_model, run_meta, save_model
from pictag.serving.limits import Limits

HOST = "127.0.0.1"  # loopback only, by design
START_TIMEOUT_S = 180


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run folder (default: Lite0 + a 5-tag head)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[4, 32], help="concurrent clients, each in turn"
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per client count")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument(
        "--max-queue", type=int, default=Limits().max_queue, help="the server's queue limit"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole run")
    parser.add_argument(
        "--baseline", type=int, default=50, help="images for the in-process comparison"
    )
    return parser.parse_args()


def default_run(folder: Path) -> Path:
    """EfficientNet-Lite0 with ImageNet weights and an untrained multilabel head."""
    config = config_from_dict({"heads": {"tags": {"kind": "multilabel", "columns": MIML_TAGS}}})
    heads = {"tags": Head("tags", "multilabel", tuple(MIML_TAGS))}
    torch.manual_seed(0)
    model, pre = build_model(config.model, heads, config.heads)
    save_model(folder, model.state_dict(), run_meta(config, heads, pre))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(run: Path, port: int, max_queue: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "pictag", "serve", str(run), "--host", HOST]
    command += ["--port", str(port), "--max-queue", str(max_queue), "--device", "cpu"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.terminate()
    sys.exit(f"the server did not answer /health within {START_TIMEOUT_S} s")


@dataclass
class Tally:
    """Requests handed out to the clients and their outcomes, shared by the client threads."""

    total: int
    taken: int = 0
    records: list[tuple[float, str]] = field(default_factory=list)  # (seconds, outcome)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        """The next request's index, or None when all have been handed out."""
        with self.lock:
            if self.taken >= self.total:
                return None
            self.taken += 1
            return self.taken - 1

    def add(self, seconds: float, outcome: str) -> None:
        with self.lock:
            self.records.append((seconds, outcome))


def client_loop(
    url: str, images: list[tuple[str, bytes]], per_request: int, tally: Tally, args: Any
) -> None:
    """Post requests until the tally runs out or the deadline passes."""
    stop_at = time.monotonic() + args.deadline
    with httpx.Client(timeout=args.timeout) as client:
        while time.monotonic() < stop_at and (index := tally.take()) is not None:
            chosen = [images[(index * per_request + k) % len(images)] for k in range(per_request)]
            files = [("files", (name, data, "image/jpeg")) for name, data in chosen]
            start = time.perf_counter()
            try:
                response = client.post(url, files=files)
                outcome = "ok" if response.status_code == 200 else f"http_{response.status_code}"
            except httpx.HTTPError as err:
                outcome = type(err).__name__
            tally.add(time.perf_counter() - start, outcome)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def load(
    url: str, images: list[tuple[str, bytes]], args: argparse.Namespace, clients: int
) -> dict[str, Any]:
    tally = Tally(args.requests)
    threads = [
        threading.Thread(
            target=client_loop, args=(url, images, args.images_per_request, tally, args)
        )
        for _ in range(clients)
    ]
    with LoadMeter() as meter:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    latencies = [seconds for seconds, outcome in tally.records if outcome == "ok"]
    errors = Counter(outcome for _, outcome in tally.records if outcome != "ok")
    done = len(latencies)
    return {
        "clients": clients,
        "requests": len(tally.records),
        "ok": done,
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "requests_per_s": round(done / meter.wall_s, 2),
        "images_per_s": round(done * args.images_per_request / meter.wall_s, 2),
        "latency_ms": _latency(latencies),
        "meter": meter.to_dict(),
    }


def _latency(seconds: list[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    summary = {f"p{q}": percentile(seconds, q) for q in (50, 90, 99)}
    summary["mean"] = statistics.fmean(seconds)
    return {key: round(1000 * value, 1) for key, value in summary.items()}


def in_process_sequential(run: Path, images: list[tuple[str, bytes]], count: int) -> dict[str, Any]:
    """The same images through Predictor directly, one per call: no HTTP and no overlap of one
    image's decoding with another's inference (which the server's worker threads give)."""
    predictor = Predictor.from_run(run, "cpu")
    predictor.predict([images[0][1]])  # warm-up
    with LoadMeter() as meter:
        for i in range(count):
            predictor.predict([images[i % len(images)][1]])
    return {
        "backend": predictor.backend,
        "images": count,
        "images_per_s": round(count / meter.wall_s, 2),
        **meter.to_dict(),
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), to tell the server's CPU use from
    that of the other processes on the machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(run: Path, images: list[tuple[str, bytes]], args: argparse.Namespace) -> dict:
    """Start the server on ``run``, load it at each client count, stop it; then the in-process
    comparison."""
    port = free_port()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(run, port, args.max_queue, Path(tmp) / "server.log")
        try:
            base = f"http://{HOST}:{port}"
            backend = httpx.get(f"{base}/model", timeout=10).json()["backend"]
            for name, data in images[:3]:  # warm-up: first calls allocate and plan
                httpx.post(f"{base}/predict", files=[("files", (name, data, "image/jpeg"))])
            for clients in args.clients:
                results.append(load_once(base, server.pid, images, args, clients))
        finally:
            server.terminate()
            server.wait(10)
    sequential = in_process_sequential(run, images, args.baseline)
    for result in results:
        result["server_vs_in_process"] = round(
            result["images_per_s"] / sequential["images_per_s"], 3
        )
    return {"backend": backend, "server": results, "in_process_sequential": sequential}


def load_once(
    base: str, pid: int, images: list[tuple[str, bytes]], args: argparse.Namespace, clients: int
) -> dict[str, Any]:
    """One load at ``clients`` concurrent clients, with the server's CPU share and batching."""
    health = httpx.get(f"{base}/health", timeout=10).json()
    before = cpu_seconds(pid)
    result = load(f"{base}/predict", images, args, clients)
    after = cpu_seconds(pid)
    later = httpx.get(f"{base}/health", timeout=10).json()
    calls = later["batches"] - health["batches"]
    done = later["images"] - health["images"]
    result["model_calls"] = calls
    result["images_per_model_call"] = round(done / calls, 2) if calls else None
    meter = result["meter"]
    if before is not None and after is not None and meter["others_cpu_share"] is not None:
        share = (after - before) / (meter["wall_s"] * (os.cpu_count() or 1))
        meter["server_cpu_share"] = round(share, 3)
        meter["others_cpu_share"] = round(max(0.0, meter["others_cpu_share"] - share), 3)
    return result


def export_onnx(run: Path) -> str | None:
    """``pictag export RUN`` (writes ``RUN/model.onnx``); None when it worked, else why not."""
    command = [sys.executable, "-m", "pictag", "export", str(run)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else (done.stderr or done.stdout)[-2000:]


def main() -> None:
    args = parse_args()
    if min(*args.clients, args.requests, args.images_per_request) < 1:
        sys.exit("--clients, --requests and --images-per-request must be at least 1")
    folder = dataset_dir("miml-scenes") / "test"
    images = [(path.name, path.read_bytes()) for path in sorted(folder.glob("*.jpg"))]
    passes = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            passes.append(measure(args.run, images, args))
        else:
            # The same run twice: eager PyTorch, then ONNX Runtime once it has been exported.
            run = default_run(Path(tmp) / "lite0-run")
            passes.append(measure(run, images, args))
            problem = export_onnx(run)
            if problem:
                passes.append({"backend": "onnxruntime", "skipped": f"export failed: {problem}"})
            else:
                passes.append(measure(run, images, args))
    payload = {
        "benchmark": "load_test",
        "settings": {
            "run": str(args.run) if args.run else "EfficientNet-Lite0 + untrained 5-tag head",
            "images": f"miml-scenes/test ({len(images)} JPEG, 224x224)",
            "clients": args.clients,
            "requests": args.requests,
            "images_per_request": args.images_per_request,
            "server_max_queue": args.max_queue,
            "server_limits": Limits().to_dict(),
        },
        "passes": passes,
        "environment": environment(),
    }
    counts = "-".join(str(c) for c in args.clients)
    path = write_result(f"load_test_c{counts}_b{args.images_per_request}", payload)
    for one in passes:
        if "skipped" in one:
            print(f"{one['backend']}: skipped ({one['skipped'][:200]})")
            continue
        sequential = one["in_process_sequential"]
        for result in one["server"]:
            latency = result["latency_ms"] or {}
            print(
                f"{one['backend']}, {result['clients']} clients: {result['ok']}/"
                f"{result['requests']} ok, {result['errors']} errors "
                f"{result['errors_by_kind']}; {result['requests_per_s']} req/s, "
                f"{result['images_per_s']} img/s, {result['images_per_model_call']} images per "
                f"model call (in-process, one image per call: {sequential['images_per_s']} "
                f"img/s); latency p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms"
            )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
