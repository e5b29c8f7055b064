"""RFC 9457 problem details: the Problem hierarchy and the handlers that render every error.

    Problem (500 internal-error)
    ├── BadRequest (400)
    │   ├── MalformedJson
    │   └── MalformedBody
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    │   └── StandardNotFound
    ├── MethodNotAllowed (405)
    ├── NotAcceptable (406)
    ├── RequestTimeout (408)
    ├── Conflict (409)
    │   └── IdempotencyKeyReused
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── RequestInvalid (422)
    │   └── RecordsInvalid
    ├── RateLimited (429)
    └── ServiceUnavailable (503)

Every `type` URI below is a published contract: never rename one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import psycopg
import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger()

PROBLEM_BASE = "https://credit-hub.example/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    type: ClassVar[str] = PROBLEM_BASE + "internal-error"
    title: ClassVar[str] = "Internal Server Error"
    status: ClassVar[int] = 500

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        return body | self.extensions


class BadRequest(Problem):
    type = PROBLEM_BASE + "bad-request"
    title = "Bad request"
    status = 400


class MalformedJson(BadRequest):
    type = PROBLEM_BASE + "malformed-json"
    title = "The request body is not valid JSON"


class MalformedBody(BadRequest):
    type = PROBLEM_BASE + "malformed-body"
    title = "The request body does not have the expected shape"


class Unauthorized(Problem):
    type = PROBLEM_BASE + "unauthorized"
    title = "Missing, unknown or revoked credentials"
    status = 401

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extensions)


class Forbidden(Problem):
    type = PROBLEM_BASE + "forbidden"
    title = "Not allowed for this client"
    status = 403


class NotFound(Problem):
    type = PROBLEM_BASE + "not-found"
    title = "Not found"
    status = 404


class StandardNotFound(NotFound):
    type = PROBLEM_BASE + "standard-not-found"
    title = "No such published standard or version"


class MethodNotAllowed(Problem):
    type = PROBLEM_BASE + "method-not-allowed"
    title = "Method not allowed"
    status = 405


class NotAcceptable(Problem):
    type = PROBLEM_BASE + "not-acceptable"
    title = "No acceptable representation"
    status = 406


class RequestTimeout(Problem):
    type = PROBLEM_BASE + "request-timeout"
    title = "The request body did not arrive in time"
    status = 408


class Conflict(Problem):
    type = PROBLEM_BASE + "conflict"
    title = "The request conflicts with the current state"
    status = 409


class IdempotencyKeyReused(Conflict):
    type = PROBLEM_BASE + "idempotency-key-reused"
    title = "This Idempotency-Key was already used with a different request body"


class PayloadTooLarge(Problem):
    type = PROBLEM_BASE + "payload-too-large"
    title = "The request body is larger than allowed"
    status = 413


class UnsupportedMediaType(Problem):
    type = PROBLEM_BASE + "unsupported-media-type"
    title = "Unsupported media type"
    status = 415


class RequestInvalid(Problem):
    type = PROBLEM_BASE + "request-invalid"
    title = "The request is not valid"
    status = 422


class RecordsInvalid(RequestInvalid):
    type = PROBLEM_BASE + "records-invalid"
    title = "Records do not conform to their standard"


class RateLimited(Problem):
    type = PROBLEM_BASE + "rate-limited"
    title = "Too many requests"
    status = 429


class ServiceUnavailable(Problem):
    type = PROBLEM_BASE + "service-unavailable"
    title = "Service unavailable"
    status = 503


_BY_STATUS: dict[int, type[Problem]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: RequestInvalid,
    429: RateLimited,
    503: ServiceUnavailable,
}


def invalid_field(pointer: str, code: str, message: str, **extensions: Any) -> RequestInvalid:
    """A 422 about one place in the body, named by its RFC 6901 pointer."""
    return RequestInvalid(
        message, errors=[{"pointer": pointer, "code": code, "message": message}], **extensions
    )


def invalid_parameter(parameter: str, code: str, message: str) -> RequestInvalid:
    """A 422 about one query or path parameter."""
    return RequestInvalid(
        message, errors=[{"parameter": parameter, "code": code, "message": message}]
    )


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901: '/'-joined reference tokens with '~' and '/' escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def problem_json(problem: Problem, instance: str | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(instance),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def _request_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's validation errors as {pointer or parameter, code, message} items."""
    found: list[dict[str, Any]] = []
    for error in errors:
        loc = list(error.get("loc", ()))
        where = loc[0] if loc else "body"
        item: dict[str, Any] = {"code": str(error.get("type", "invalid")), "message": error["msg"]}
        if where == "body":
            item["pointer"] = json_pointer(loc[1:])
        else:
            item["in"] = where
            item["parameter"] = ".".join(str(p) for p in loc[1:])
        found.append(item)
    return found


async def _problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_json(exc, request.url.path)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx") or {}
        problem: Problem = MalformedJson(
            f"The body is not valid JSON: {ctx.get('error', 'parse error')}."
        )
    else:
        problem = RequestInvalid(
            f"{len(errors)} problem(s) in the request.", errors=_request_errors(errors)
        )
    return problem_json(problem, request.url.path)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cls = _BY_STATUS.get(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if cls is None:
        body = {"type": "about:blank", "title": detail or "Error", "status": exc.status_code}
        return JSONResponse(body, exc.status_code, media_type=PROBLEM_MEDIA_TYPE)
    if cls is BadRequest and detail == "There was an error parsing the body":
        # FastAPI's answer to a JSON body that is not UTF-8: the same problem as bad syntax.
        cls, detail = MalformedJson, "The body is not valid JSON: it is not UTF-8 text."
    elif cls is MethodNotAllowed:
        detail = f"{request.method} is not allowed on {request.url.path}."
    elif cls is NotFound and detail == "Not Found":
        detail = f"Nothing is published at {request.url.path}."
    response = problem_json(cls(detail), request.url.path)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    # Log the exception class and the request id only: payloads may hold personal data.
    log.error("unhandled_exception", error=type(exc).__name__, path=request.url.path)
    return problem_json(Problem("An unexpected error occurred; it has been logged."))


async def _database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    # The database is down, restarting, out of space or (SQLite) locked past the busy timeout:
    # the client may retry, unlike after a bug. The driver's message stays in the log only.
    log.error("database_unavailable", error=type(exc).__name__, path=request.url.path)
    problem = ServiceUnavailable(
        f"The database did not answer ({type(exc).__name__}); try again shortly. A push "
        "retried with the same Idempotency-Key is stored at most once.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        retry_after_seconds=DATABASE_RETRY_AFTER_SECONDS,
    )
    return problem_json(problem, request.url.path)


# What a database that cannot answer raises: SQLAlchemy's wrapper of the DBAPI's
# OperationalError, a pool that found no connection in time, and psycopg's own error from the
# statements run on its connections directly (pg_loop, COPY).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
)
DATABASE_RETRY_AFTER_SECONDS = 5


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _problem_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


def problem_responses(*problems: type[Problem]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the problems a route may answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for cls in problems:
        entry = out.setdefault(
            cls.status,
            {
                "description": cls.title,
                "content": {
                    PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            },
        )
        if entry["description"] != cls.title and cls.title not in entry["description"]:
            entry["description"] += f"; {cls.title}"
    return out
