"""Every error the API returns is ``{"error": {"code", "message"}}`` with a stable code: a
``NiyantaError`` maps through its own ``code`` and ``http_status``; invalid input (a body that is
not JSON or does not validate, a bad query parameter) is 422 ``invalid_input``; an unknown route
or method keeps its HTTP status; anything unexpected is a logged 500 ``internal_error``."""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from niyanta.errors import NiyantaError

log = structlog.get_logger("niyanta.coordinator")

MAX_DETAILS = 5


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:MAX_DETAILS]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid input"


async def _niyanta_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NiyantaError)
    if exc.http_status >= 500:
        log.warning("api.error", path=request.url.path, code=exc.code, error=exc.message)
    return error_response(exc.http_status, exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_input", _validation_message(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    try:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    except ValueError:
        code = f"http_{exc.status_code}"
    return error_response(exc.status_code, code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("api.unexpected_error", path=request.url.path)
    return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NiyantaError, _niyanta_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
