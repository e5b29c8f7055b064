"""Dates and instants in requests: ISO 8601 text, as the OpenAPI document says, and nothing else.

Pydantic's lax mode also reads a number (`12`, or the text "12") as seconds since 1970: an
operator asking for the audit events `since=12` got every event since 1970-01-01T00:00:12Z
instead of a 422. These types refuse numbers before pydantic parses the value. An instant must
also say its offset (`Z`, `+08:00`), as RFC 3339's date-time does: one without (`2026-11-26`,
`2026-11-26T08:00:00`) is ambiguous, and reached the database's UTC column as a 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(expected: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number or (isinstance(value, str) and _NUMBER.fullmatch(value)):
            raise ValueError(f"expected an ISO 8601 {expected}, not a number")
        return value

    return check


IsoDate = Annotated[date, BeforeValidator(_not_a_number("date, e.g. 2026-11-26"))]
IsoDateTime = Annotated[
    AwareDatetime, BeforeValidator(_not_a_number("date-time, e.g. 2026-11-26T08:00:00Z"))
]
