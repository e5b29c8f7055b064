"""Logging set-up (structlog) and the ASGI middleware every request passes through.

The middleware here is plain ASGI rather than BaseHTTPMiddleware: it costs microseconds, not
tens of microseconds, and it can stop an oversized body while it streams in.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException

from credit_hub.errors import PROBLEM_MEDIA_TYPE, BadRequest, PayloadTooLarge, Problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def configure_logging(level: str = "info", json_lines: bool = False) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def current_request_id() -> str | None:
    return request_id_var.get()


class RequestContextMiddleware:
    """Request id (echoed or made), security headers, body size and idle limits, and NUL
    characters refused where PostgreSQL could not store them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_limits: dict[str, int],
        body_idle_seconds: float = 30.0,
        nul_checked_paths: tuple[str, ...] = ("/v1/records", "/v1/standards/"),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # A client that sends nothing of its body for this long gets 408 (0: wait forever).
        self.body_idle_seconds = body_idle_seconds
        # Routes that reject NUL per record (422 with the record's index) instead of here.
        self.nul_checked_paths = nul_checked_paths
        # Longest prefix first: an upload route may take more than the JSON routes.
        self.body_limits = sorted(body_limits.items(), key=lambda kv: -len(kv[0]))

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.body_limits:
            if path.startswith(prefix):
                return limit
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID_OK.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        limit = self._limit_for(scope["path"])
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        try:
            if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
                # PostgreSQL text cannot hold NUL: refuse it here, the same on every database.
                nul = BadRequest("The URL holds a NUL character (%00), which no value may hold.")
                await _send_problem(send_with_headers, nul, scope["path"])
                return
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await _send_too_large(send_with_headers, scope["path"], limit)
                return
            received = 0
            body_done = False
            scan_nul = _is_json(_header(scope, b"content-type")) and not scope["path"].startswith(
                self.nul_checked_paths
            )
            carry = b""

            async def counting_receive() -> Message:
                nonlocal received, body_done, carry
                if body_done or not self.body_idle_seconds:
                    message = await receive()  # e.g. a streaming response listening for close
                else:
                    try:
                        message = await asyncio.wait_for(receive(), self.body_idle_seconds)
                    except TimeoutError:
                        raise StarletteHTTPException(
                            408, f"No body data for {self.body_idle_seconds:g} s."
                        ) from None
                if message["type"] == "http.request":
                    chunk = message.get("body", b"")
                    body_done = not message.get("more_body", False)
                    received += len(chunk)
                    if received > limit:
                        raise _BodyTooLarge(
                            f"The body exceeds the limit of {limit} bytes for this route.",
                            limit_bytes=limit,
                        )
                    if scan_nul:
                        window = carry + chunk
                        if b"\\u0000" in window and _NUL_ESCAPE.search(window):
                            # PostgreSQL text cannot hold NUL: the same 422 on every database.
                            raise StarletteHTTPException(
                                422, "The body holds a NUL character (\\u0000) in a string."
                            )
                        carry = window[-8:]
                return message

            try:
                await self.app(scope, counting_receive, send_with_headers)
            except _BodyTooLarge:
                if not response_started:
                    await _send_too_large(send_with_headers, scope["path"], limit)
            except Exception as exc:
                # Rendered here, not by the server's error middleware outside this one: the 500
                # then carries the request id and the security headers like every answer, and
                # the log line names the request. Only the class: a message may quote payloads.
                structlog.get_logger().error(
                    "unhandled_exception", error=type(exc).__name__, path=scope["path"]
                )
                if response_started:
                    raise
                problem = Problem("An unexpected error occurred; it has been logged.")
                await _send_problem(send_with_headers, problem, scope["path"])
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
            request_id_var.reset(token)


# \u0000 preceded by an even number of backslashes (an odd number escapes the backslash).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class _BodyTooLarge(PayloadTooLarge):
    """Raised from `receive` when a streamed body passes the limit; rendered as a 413."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_too_large(send: Send, path: str, limit: int) -> None:
    problem = PayloadTooLarge(f"The body exceeds the limit of {limit} bytes for this route.")
    await _send_problem(send, problem, path, limit_bytes=limit)


async def _send_problem(send: Send, problem: Problem, path: str, **extra: Any) -> None:
    """Answer from the middleware itself, before the app reads anything; closes the connection."""
    body = orjson.dumps(problem.body(path) | extra)
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
