"""Predictions for new images from a run folder: what the CLI, the HTTP server and the Python API
share.

    predictor = Predictor.from_run("runs/cars")
    for prediction in predictor.predict(["a.jpg", "b.jpg"]):
        print(prediction.source, prediction.heads["brand"].labels)

Images go through the run's own pipeline (``decode_image`` then ``eval_transform``, its
normalisation done per batch), as in evaluation, so a prediction equals the evaluation of the
same file. A file that cannot be read
gives a prediction with ``error`` set and the rest of the batch goes on.

On a CPU the model runs through ONNX Runtime when ``RUN_DIR/model.onnx`` (written by ``pictag
export``) is up to date with the run -- 3-4x faster than eager PyTorch for EfficientNet-Lite0 on
2 cores -- or through OpenVINO when that is faster still on this CPU
(:mod:`pictag.evaluation.backends`), else in eager PyTorch with channels-last memory;
``predictor.backend`` says which. :meth:`Predictor.predict` decodes the next batch on its
threads while the model runs the current ones: an exported model takes two batches at once,
each on its share of the threads, when torch's thread budget has two or more (ONNX Runtime in
a session per batch, :meth:`pictag.models.onnx_runner.OnnxRunner.concurrent`; OpenVINO in a
stream per batch, :meth:`pictag.models.openvino_runner.OpenVinoRunner.concurrent`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pictag.data.images import DEFAULT_MAX_PIXELS, ImageError
from pictag.data.schema import Head
from pictag.data.transforms import (
    Preprocess,
    decode_image_sized,
    eval_crop,
    eval_transform,
    normalized_batch,
)
from pictag.evaluation.backends import Runner, backend_name, select_runner
from pictag.evaluation.image_inputs import ImageInput, as_list, as_source, source_name
from pictag.evaluation.inference import CPU_BATCH, forward_logits, probabilities, resolve_device
from pictag.evaluation.prediction import HeadPrediction, Prediction, head_prediction
from pictag.evaluation.prefetch import DECODE_THREADS, batches, in_flight, prefetched
from pictag.heads import Params, get_kind
from pictag.run import load_run, read_run_info

__all__ = ["HeadPrediction", "ImageInput", "Loaded", "Prediction", "Predictor"]

# (source name, uint8 image cropped for the model or error message, the file's upright
# (width, height)); batches are normalised whole, in numpy (model_input).
Loaded = tuple[str, "torch.Tensor | str", "tuple[int, int] | None"]
Probs = dict[str, np.ndarray]  # head name -> probabilities [B, C]

# Images per model call when the caller names none: CPU_BATCH on a CPU (also a fresh ONNX
# Runtime session's first calls touch a quarter of the new memory: Lite0, 17,000 page faults
# against 69,000); a GPU needs larger batches to fill it.
GPU_BATCH = 32


class Predictor:
    """A loaded model that labels images.

    Args:
        model: Returns ``{head: logits}``; None with ``load_model``.
        heads: Head name -> head (kinds and label names).
        preprocess: The run's preprocessing.
        params: Head name -> decision parameters (thresholds); heads left out use their
            kind's defaults.
        device: Where ``model`` is.
        max_pixels: Larger images are refused (decompression bombs).
        runner: An exported copy of the model to run instead (CPU only): ONNX Runtime's or
            OpenVINO's.
        load_model: Builds the model on first use of :attr:`model` when ``model`` is None (with
            a ``runner`` only callers needing PyTorch, e.g. Grad-CAM, need it; building
            EfficientNet-Lite0 costs ~1 s on 2 cores).

    Attributes:
        backend: What computes the predictions: ``onnxruntime``, ``openvino`` or ``torch``.
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        heads: dict[str, Head],
        preprocess: Preprocess,
        params: Mapping[str, Params] | None = None,
        device: str | torch.device = "cpu",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        runner: Runner | None = None,
        load_model: Callable[[], torch.nn.Module] | None = None,
    ) -> None:
        self.device = torch.device(device)
        if runner is not None and self.device.type != "cpu":
            raise ValueError(f"an exported model's runner runs on the CPU, not on {self.device}")
        if model is None and load_model is None:
            raise ValueError("Predictor needs a model or a load_model function")
        self.runner = runner
        self.backend = backend_name(runner)
        self._model = None if model is None else self._prepare(model)
        self._load_model = load_model
        self._model_lock = threading.Lock()
        self.heads = heads
        self.preprocess = preprocess
        self.params = {
            name: dict((params or {}).get(name) or get_kind(head.kind).default_params(head, None))
            for name, head in heads.items()
        }
        self.max_pixels = max_pixels
        self.transform = eval_transform(preprocess)
        self.crop = eval_crop(preprocess)

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch model (in eval mode, channels-last, on :attr:`device`)."""
        with self._model_lock:  # a server's threads may ask at once: build it once
            if self._model is None:
                self._model = self._prepare(self._load_model())
        return self._model

    def _prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        # Channels-last convolutions are ~1.7x faster on CPU and on GPU tensor cores.
        return model.to(self.device, memory_format=torch.channels_last).eval()

    @classmethod
    def from_run(
        cls, run_dir: str | Path, device: str | torch.device = "cpu", backend: str = "auto"
    ) -> Predictor:
        """Load the model, heads, preprocessing and tuned decisions of a run folder.

        Args:
            run_dir: Folder with ``model.safetensors`` and ``pictag.json``.
            device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
            backend: ``auto`` (on a CPU with an up-to-date ``RUN_DIR/model.onnx``, ONNX Runtime
                or OpenVINO, whichever is faster here; else PyTorch), ``onnxruntime``,
                ``openvino``, ``openvino-fp32`` (fail if it cannot be used) or ``torch``; see
                :mod:`pictag.evaluation.backends`.

        Raises:
            ValueError: ``backend`` is unknown, or an exported-model backend was asked for on
                a GPU, without an up-to-date ``model.onnx``, or failing its parity check.
        """
        device = resolve_device(device)
        info = read_run_info(run_dir)
        runner = select_runner(run_dir, info.meta, device, backend)
        # With an exported model the PyTorch model is built only if someone asks for it.
        model = None if runner is not None else load_run(run_dir, device).model
        return cls(
            model,
            info.heads,
            info.preprocess,
            info.params,
            device,
            info.config.data.max_pixels,
            runner,
            load_model=lambda: load_run(run_dir, device).model,
        )

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int | None = None,
        at_least_one: bool = False,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> list[Prediction]:
        """Predict every head for one image or a list of them.

        Args:
            images: A path, a PIL image, encoded bytes or a binary file object, or a list of them.
            top_k: Keep only the ``top_k`` best scores per head; a tag head (multilabel) then
                also decides exactly its ``top_k`` most probable labels, whatever the
                thresholds.
            at_least_one: Tag heads: when no label passes its threshold, take the most probable.
            batch_size: Images per forward pass at most (with two in flight, the batches are
                evened out so that the last two finish together); by default
                :data:`CPU_BATCH` on a CPU, :data:`GPU_BATCH` on a GPU.
            progress: Show a progress bar (on stderr).

        Returns:
            One prediction per image, in input order.
        """
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if batch_size is None:
            batch_size = CPU_BATCH if self.device.type == "cpu" else GPU_BATCH
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = as_list(images)
        # Names first: an unsupported input type fails here, before any work is done.
        named = [(source_name(i, image), image) for i, image in enumerate(items)]
        call, streams = self._model_call(-(-len(named) // batch_size))
        chunks = batches(named, batch_size, streams)
        results: list[Prediction] = []
        with (
            tqdm(total=len(items), unit="img", disable=not progress, leave=False) as bar,
            ThreadPoolExecutor(DECODE_THREADS) as pool,
            ThreadPoolExecutor(streams) as model_pool,
        ):
            # The decode pool also stacks and normalises each batch; up to `streams` batches
            # are in the model at once while this thread assembles the finished ones.
            prepared = prefetched(self._load, chunks, pool, self._with_input)
            # closing: an error here stops the decoding ahead before the pools wait for it.
            with closing(in_flight(prepared, call, model_pool, streams)) as finished:
                for loaded, probs in finished:
                    results.extend(self.assemble(loaded, probs or {}, top_k, at_least_one))
                    bar.update(len(loaded))
        return results

    def _model_call(self, count: int) -> tuple[Callable[[torch.Tensor], Probs], int]:
        """The model call for ``count`` batches and how many may run at once: an exported
        model's concurrent call (:data:`pictag.models.onnx_runner.STREAMS`) when there is more
        than one batch, else :meth:`probabilities`, one at a time."""
        concurrent = getattr(self.runner, "concurrent", None)  # a user's runner may lack it
        if concurrent is None or count < 2:
            return self.probabilities, 1
        return concurrent()

    def load(self, images: Sequence[ImageInput]) -> list[Loaded]:
        """Decode and crop images in this thread: what a server's workers do before the
        model call it shares with other requests.

        Returns:
            ``(source name, uint8 image, size)`` or ``(source name, error message, None)`` per
            image; :meth:`model_input` makes the model's input of them.
        """
        return [self._load((source_name(i, image), image)) for i, image in enumerate(images)]

    def _load(self, item: tuple[str, ImageInput]) -> Loaded:
        source, image = item
        try:
            pixels, size = self._decode(image, source)
            return source, self.crop(pixels), size
        except ImageError as err:
            return source, str(err), None

    def _decode(self, image: ImageInput, source: str) -> tuple[torch.Tensor, tuple[int, int]]:
        return decode_image_sized(as_source(image, source), self.preprocess, self.max_pixels)

    def batch_probabilities(self, loaded: Sequence[Loaded]) -> dict[str, np.ndarray]:
        """Head name -> probabilities ``[B, C]`` of the images of ``loaded`` that could be read
        (none: an empty dict)."""
        batch = self.model_input(loaded)
        return {} if batch is None else self.probabilities(batch)

    def model_input(self, loaded: Sequence[Loaded]) -> torch.Tensor | None:
        """The normalised batch ``[B, 3, H, W]`` of the images of ``loaded`` that could be read
        (None if none could): what :meth:`probabilities` takes, made on any thread."""
        good = [tensor for _, tensor, _ in loaded if isinstance(tensor, torch.Tensor)]
        return self.normalize(good) if good else None

    def normalize(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The float batch of uint8 images ``[3, H, W]`` (a list or a stacked batch), normalised
        bit for bit as :attr:`transform` normalises each (:func:`normalized_batch`)."""
        return normalized_batch(images, self.preprocess)

    def _with_input(self, loaded: list[Loaded]) -> tuple[list[Loaded], torch.Tensor | None]:
        return loaded, self.model_input(loaded)

    def assemble(
        self,
        loaded: Sequence[Loaded],
        probs: Mapping[str, np.ndarray],
        top_k: int | None = None,
        at_least_one: bool = False,
    ) -> list[Prediction]:
        """Predictions from :meth:`load`'s output and the probabilities of its readable images
        (in order); unreadable images get a prediction with ``error`` set."""
        results, row = [], 0
        for source, tensor, size in loaded:
            if isinstance(tensor, str):
                results.append(Prediction(source, {}, tensor))
                continue
            heads = {
                name: head_prediction(
                    head, probs[name][row], self.params[name], top_k, at_least_one, size
                )
                for name, head in self.heads.items()
            }
            results.append(Prediction(source, heads))
            row += 1
        return results

    def probabilities(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Head name -> probabilities ``[B, C]`` of a batch of images ``[B, C, H, W]`` cropped
        for the model (the model call): float ones already normalised (:attr:`transform`'s
        output), or uint8 ones (:meth:`load`'s), normalised here at once -- bit for bit what
        :attr:`transform` does to each, with a quarter of the bytes to stack and queue."""
        if images.dtype == torch.uint8:
            images = self.normalize(images)
        if self.runner is not None:
            return self.runner(images)
        logits = forward_logits(self.model, images.to(self.device), False, True)
        return probabilities(self.heads, {k: v.cpu().numpy() for k, v in logits.items()})
