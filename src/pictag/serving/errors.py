"""Every error the server sends has one JSON shape: ``{"error": code, "detail": message}``.

``code`` is short and stable (for programs), ``detail`` names the problem and the fix (for
people). Bad input is refused with a 4xx before it can reach the model; an exception nobody
expected is logged with its traceback and answered with a generic 500, as a last resort.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pictag.serving.limits import BodyTimeout, RequestTooLarge

LOG = logging.getLogger("pictag.serving")

# Starlette's own HTTP errors (routing, multipart syntax) -> our codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_content_type",
}


class InputError(Exception):
    """A request the server refuses; becomes a JSON response with ``status``.

    Args:
        status: HTTP status (4xx, or 503 when busy).
        code: Stable machine-readable name of the problem, e.g. ``not_an_image``.
        detail: What is wrong and how to fix it.
        headers: Extra response headers (``Retry-After``).
    """

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same shape."""
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestTooLarge, _too_large)
    app.add_exception_handler(BodyTimeout, _too_slow)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    LOG.info("%s %s -> %d %s: %s", request.method, request.url.path, exc.status, exc.code, exc)
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    LOG.info("%s %s -> 413: %s", request.method, request.url.path, exc)
    # The rest of the body is never read: close the connection rather than reuse it.
    return error_response(413, "request_too_large", str(exc), {"Connection": "close"})


async def _too_slow(request: Request, exc: Exception) -> JSONResponse:
    LOG.info("%s %s -> 408: %s", request.method, request.url.path, exc)
    # The client stalled mid-body: close the connection; it cannot be reused.
    return error_response(408, "body_timeout", str(exc), {"Connection": "close"})


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = " ".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(422, "invalid_parameter", "; ".join(problems) or "invalid parameters")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = str(exc.detail)
    if exc.status_code == 400:  # from Starlette's multipart parser
        detail = f"the multipart body cannot be parsed: {detail}"
    return error_response(exc.status_code, code, detail, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    LOG.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, "internal_error", "the server failed on this request; the details are in its log"
    )
