"""The HTTP server of a trained run: FastAPI routes over :class:`Predictor`.

    app = create_app(Predictor.from_run("runs/cars"), Limits(max_images=8))
    uvicorn.run(app, host="127.0.0.1", port=8000)

| route          | what                                                           |
|----------------|----------------------------------------------------------------|
| GET /          | a web page: drop an image, see each head's labels and scores   |
| POST /predict  | images (multipart ``files`` or JSON base64) -> predictions     |
| POST /explain  | one image + head (+ label) -> Grad-CAM overlay PNG             |
| GET /model     | heads, kinds, labels, thresholds, preprocessing, limits        |
| GET /health    | liveness and load                                              |
| GET /docs      | OpenAPI (Swagger UI)                                           |

The model runs in a small thread pool so the event loop stays free to answer ``/health`` and
turn away requests over the limits while images are being decoded and classified.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from pictag.data.images import ImageError
from pictag.evaluation.predictor import Predictor
from pictag.heads import get_kind
from pictag.run import read_run_info
from pictag.serving.errors import InputError, install_handlers
from pictag.serving.explain import Explanation, explain
from pictag.serving.limits import BodySizeLimit, Limits
from pictag.serving.schemas import (
    EXPLAIN_BODY,
    PREDICT_BODY,
    ErrorOut,
    Health,
    ModelInfo,
    PredictResponse,
)
from pictag.serving.uploads import (
    Upload,
    check_header,
    decode_problem,
    diagnose,
    read_explain_form,
    read_images,
)
from pictag.version import __version__

T = TypeVar("T")
# The page runs only its own inline script and shows only images it made (blob:) or was sent.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
_ERRORS = {status: {"model": ErrorOut} for status in (400, 413, 415, 422, 503)}


class Service:
    """The predictor with its limits, admission gate and worker threads."""

    def __init__(self, predictor: Predictor, limits: Limits, info: Mapping[str, Any]) -> None:
        self.predictor = predictor
        self.limits = limits
        self.max_pixels = min(limits.max_image_pixels, predictor.max_pixels)
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="pictag-model")
        self.slots = asyncio.Semaphore(limits.max_concurrency)
        self.active = 0
        self.info = model_info(predictor, limits, info)
        self.summary = {key: self.info[key] for key in ("name", "checkpoint_id", "version")}

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of ``max_concurrency`` places, or answer 503 at once when all are taken."""
        if self.slots.locked():
            raise InputError(
                503,
                "busy",
                f"the server is already handling {self.limits.max_concurrency} requests, its "
                "limit; retry in a moment",
                {"Retry-After": "1"},
            )
        async with self.slots:
            self.active += 1
            try:
                yield
            finally:
                self.active -= 1

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(function, *args))

    def predict(
        self, uploads: list[Upload], top_k: int | None, at_least_one: bool
    ) -> list[dict[str, Any]]:
        """Predictions as dicts; the first unusable image fails the request with its 4xx."""
        for upload in uploads:
            check_header(upload, self.max_pixels)
        options = {"top_k": top_k, "at_least_one": at_least_one}
        try:
            predictions = self.predictor.predict([u.file() for u in uploads], **options)
        except Exception as err:
            # A decoder that raises something other than ImageError on hostile bytes: find the
            # image and blame it; if every image decodes, the fault is ours (a 500).
            for upload in uploads:
                problem = decode_problem(upload, self.max_pixels)
                if problem is not None:
                    raise problem from err
            raise
        for upload, prediction in zip(uploads, predictions, strict=True):
            if prediction.error:
                raise diagnose(upload, self.max_pixels, prediction.error)
        return [prediction.to_dict() for prediction in predictions]

    def check_choice(self, head: str, label: str | None) -> None:
        heads = self.predictor.heads
        if head not in heads:
            raise InputError(
                422,
                "unknown_head",
                f"unknown head {head!r}; this model's heads: {', '.join(heads)}",
            )
        if label is not None and label not in heads[head].labels:
            shown = ", ".join(heads[head].labels[:50])
            raise InputError(
                422, "unknown_label", f"head {head!r} has no label {label!r}; its labels: {shown}"
            )

    def explain(self, upload: Upload, head: str, label: str | None) -> Explanation:
        check_header(upload, self.max_pixels)
        try:
            return explain(self.predictor, upload.file(), head, label)
        except ImageError as err:
            raise diagnose(upload, self.max_pixels, str(err)) from err
        except ValueError as err:  # head and label were checked: the model has no feature map
            raise InputError(501, "cannot_explain", f"Grad-CAM is not available: {err}") from err


def model_info(predictor: Predictor, limits: Limits, info: Mapping[str, Any]) -> dict[str, Any]:
    """What ``GET /model`` returns (see :class:`pictag.serving.schemas.ModelInfo`)."""
    heads = []
    for name, head in predictor.heads.items():
        decision = get_kind(head.kind).export_meta(head, predictor.params[name])
        heads.append(
            {
                "name": name,
                "kind": head.kind,
                "labels": list(head.labels),
                "thresholds": decision.get("thresholds"),
                "decision": decision,
            }
        )
    return {
        "name": info.get("name", "model"),
        "checkpoint_id": info.get("checkpoint_id"),
        "version": __version__,
        "backbone": info.get("backbone"),
        "backend": predictor.backend,
        "heads": heads,
        "preprocess": predictor.preprocess.to_dict(),
        "limits": limits.to_dict(),
    }


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """Name, checkpoint id and backbone of a run folder, from its ``pictag.json``."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    return {
        "name": run_dir.resolve().name,
        "checkpoint_id": info.checkpoint_id,
        "backbone": info.config.model.backbone,
    }


def app_from_run(
    run_dir: str | Path, limits: Limits | None = None, device: str = "auto"
) -> FastAPI:
    """Load a run folder and build its app."""
    return create_app(Predictor.from_run(run_dir, device), limits, info=run_info(run_dir))


def create_app(
    predictor: Predictor, limits: Limits | None = None, *, info: Mapping[str, Any] | None = None
) -> FastAPI:
    """The FastAPI app serving ``predictor``.

    Args:
        predictor: The loaded model; it is shared by all requests (read-only).
        limits: What a request may hold; the defaults of :class:`Limits` when None.
        info: ``name``, ``checkpoint_id`` and ``backbone`` to report (see :func:`run_info`).
    """
    limits = limits or Limits()
    service = Service(predictor, limits, info or {})
    page = resources.files("pictag.serving").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="pictag",
        version=__version__,
        summary=f"Image classification with the run {service.info['name']!r}",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_request_bytes)
    install_handlers(app)
    app.state.service = service

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        """Whether the server is up, and how many requests it is handling."""
        return {
            "status": "ok",
            "active_requests": service.active,
            "max_concurrency": limits.max_concurrency,
        }

    @app.get("/model", response_model=ModelInfo)
    async def model() -> dict[str, Any]:
        """Heads, their kinds, labels and thresholds, the preprocessing, and the limits."""
        return service.info

    @app.post(
        "/predict",
        responses={200: {"model": PredictResponse}, **_ERRORS},
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def predict(
        request: Request,
        top_k: int | None = Query(None, ge=1, description="Keep the K best scores per head"),
        at_least_one: bool = Query(False, description="Multilabel: never decide no label"),
    ) -> JSONResponse:
        """Predict every head for one or more images; the same shape for every task kind."""
        async with service.slot():
            uploads = await read_images(request, limits.max_images)
            predictions = await service.run(service.predict, uploads, top_k, at_least_one)
        return JSONResponse({"predictions": predictions, "model": service.summary})

    @app.post(
        "/explain",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **_ERRORS, 501: {"model": ErrorOut}},
        openapi_extra={"requestBody": EXPLAIN_BODY},
    )
    async def explain_image(request: Request) -> Response:
        """Grad-CAM heat map over the image for one head's label, as PNG."""
        async with service.slot():
            upload, head, label = await read_explain_form(request)
            service.check_choice(head, label)
            result = await service.run(service.explain, upload, head, label)
        headers = {
            "X-Pictag-Head": quote(result.head),  # headers are latin-1: percent-encode names
            "X-Pictag-Label": quote(result.label),
            "X-Pictag-Probability": f"{result.probability:.6f}",
        }
        return Response(result.png, media_type="image/png", headers=headers)

    return app
