"""The API's errors as RFC 9457 problem documents, and the body size limit.

Every error, whoever raises it (a route, FastAPI's validation, Starlette's routing, the
database driver), leaves as ``application/problem+json`` with a short ``detail``: never
the input that was sent, never a traceback (those go to the log, for operators).
"""

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.signup.schemas import Problem

PROBLEM = "application/problem+json"
logger = logging.getLogger(__name__)


def problem(
    status: int, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, **extra)
    content = body.model_dump(mode="json", exclude_none=True)
    return JSONResponse(content, status, headers=headers, media_type=PROBLEM)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """Answers 413 for a declared length over ``limit`` without reading the body, and
    stops reading a body sent without one as soon as it passes ``limit``."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            too_large = BodyTooLarge(self.limit)
            return await problem(413, too_large.detail)(scope, receive, send)
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


def install(app: FastAPI, retry_after: int, body_limit: int) -> None:
    """Problem documents for every error the app can meet; the body limit in front."""
    wait = {"Retry-After": str(retry_after)}

    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        headers = {**wait, **(exc.headers or {})} if exc.status_code == 503 else exc.headers
        return problem(exc.status_code, str(exc.detail), headers)

    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"][:200], "type": e["type"]}
            for e in exc.errors()[:20]
        ]
        return problem(422, "the request does not match the schema", errors=errors)

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        cause = getattr(exc, "orig", None) or exc  # the driver's words, without SQL parameters
        logger.warning("%s %s: database unavailable: %s", request.method, request.url.path, cause)
        return problem(503, "the database did not answer; try again later", wait)

    # Starlette re-raises it: the server logs it
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        return problem(500, "internal error; the operators have the details in the log")

    # Starlette types every handler as taking any Exception; it calls each with its class only.
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(sa.exc.OperationalError, database_down)
    app.add_exception_handler(sa.exc.TimeoutError, database_down)
    app.add_exception_handler(Exception, internal)
    app.add_middleware(BodyLimit, limit=body_limit)


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route answers, as problem documents."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            **({"headers": RETRY_AFTER} if status == 503 else {}),
        }
        for status in statuses
    }


def with_problem_schema(app: FastAPI) -> None:
    """Add the ``Problem`` schema the error responses refer to, to the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()  # FastAPI keeps it in app.openapi_schema
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem.pop("$defs", {}), Problem=problem)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
