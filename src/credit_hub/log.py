"""Logging set-up (structlog) and the ASGI middleware every request passes through.

The middleware here is plain ASGI rather than BaseHTTPMiddleware: it costs microseconds, not
tens of microseconds, and it can stop an oversized body while it streams in.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog

from credit_hub.errors import PROBLEM_MEDIA_TYPE, PayloadTooLarge

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
    """Request id (echoed or made), security headers, and the body-size limit."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_limits: dict[str, int]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
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
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await _send_too_large(send_with_headers, scope["path"], limit)
                return
            received = 0

            async def counting_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _BodyTooLarge(
                            f"The body exceeds the limit of {limit} bytes for this route.",
                            limit_bytes=limit,
                        )
                return message

            try:
                await self.app(scope, counting_receive, send_with_headers)
            except _BodyTooLarge:
                if not response_started:
                    await _send_too_large(send_with_headers, scope["path"], limit)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
            request_id_var.reset(token)


class _BodyTooLarge(PayloadTooLarge):
    """Raised from `receive` when a streamed body passes the limit; rendered as a 413."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_too_large(send: Send, path: str, limit: int) -> None:
    problem = PayloadTooLarge(f"The body exceeds the limit of {limit} bytes for this route.")
    body = orjson.dumps(problem.body(path) | {"limit_bytes": limit})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
