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

Images are decoded on a small thread pool and classified in batches gathered across concurrent
requests (:mod:`pictag.serving.service`), so the event loop stays free to answer ``/health`` and
turn away requests over the limits while the model works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from pictag.evaluation.predictor import Predictor
from pictag.run import read_run_info
from pictag.serving.errors import install_handlers
from pictag.serving.limits import BodyLimits, Limits
from pictag.serving.schemas import (
    EXPLAIN_BODY,
    PREDICT_BODY,
    ErrorOut,
    Health,
    ModelInfo,
    PredictResponse,
)
from pictag.serving.service import Service
from pictag.serving.uploads import read_explain_form, read_images
from pictag.version import __version__

# The page runs only its own inline script and shows only images it made (blob:) or was sent.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
_ERRORS = {status: {"model": ErrorOut} for status in (400, 408, 413, 415, 422, 503)}


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
        await service.close()

    app = FastAPI(
        title="pictag",
        version=__version__,
        summary=f"Image classification with the run {service.info['name']!r}",
        lifespan=lifespan,
    )
    app.add_middleware(
        BodyLimits,
        max_bytes=limits.max_request_bytes,
        idle_s=limits.body_idle_s,
        total_s=limits.body_timeout_s,
    )
    install_handlers(app)
    app.state.service = service

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        """Whether the server is up, how many requests it holds, and how it batches them."""
        return service.health()

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
        async with service.admit():
            uploads = await read_images(request, limits.max_images)
            predictions = await service.predict(uploads, top_k, at_least_one)
        return JSONResponse({"predictions": predictions, "model": service.summary})

    @app.post(
        "/explain",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **_ERRORS, 501: {"model": ErrorOut}},
        openapi_extra={"requestBody": EXPLAIN_BODY},
    )
    async def explain_image(request: Request) -> Response:
        """Grad-CAM heat map over the image for one head's label, as PNG."""
        async with service.admit():
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
