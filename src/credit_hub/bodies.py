"""Reading JSON request bodies fast (orjson) with precise problems for malformed input."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from credit_hub.errors import MalformedJson, UnsupportedMediaType


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "application/json")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"Send JSON (application/json), not {media_type!r}.")


def parse_json(raw: bytes) -> Any:
    """The parsed document; a problem naming line and column when it is not JSON."""
    if not raw.strip():
        raise MalformedJson("The request body is empty; a JSON object is expected.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            line=exc.lineno,
            column=exc.colno,
            position=exc.pos,
        ) from None


async def read_json_body(request: Request) -> Any:
    """The parsed body; the size limit is enforced by the middleware while it streams in."""
    require_json(request)
    return parse_json(await request.body())
