"""Request rate per client: a token bucket per API client, or per address without one.

The buckets live in the server process: with `--workers N` each worker keeps its own, so a
client may reach up to N times the configured rate (connections are spread over the workers).
That is what this limit is for: to keep one runaway client from starving the others, at the
cost of a dictionary lookup per request. A hard, hub-wide quota belongs in the reverse proxy.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from fastapi import Request

from credit_hub.errors import RateLimited


class RateLimiter:
    """`per_second` tokens a second, up to `burst` saved; each request takes one."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.per_second = per_second
        self.burst = max(1, burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def take(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds until a token is there."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.per_second)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / self.per_second
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._forget_full(now)
            self._buckets[key] = (tokens - 1, now)
            return 0.0

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: drop those (many addresses).
        refill = self.burst / self.per_second
        for key in [k for k, (_, at) in self._buckets.items() if now - at >= refill]:
            del self._buckets[key]


def make_limiter(per_second: float, burst: int) -> RateLimiter | None:
    """The limiter for these settings; None when `per_second` is 0 (no limit)."""
    return RateLimiter(per_second, burst) if per_second > 0 else None


def limit(request: Request, key: str) -> None:
    """Take a token for `key`, or answer 429 with `Retry-After` (whole seconds, at least 1)."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    wait = limiter.take(key)
    if wait:
        seconds = max(1, math.ceil(wait))
        raise RateLimited(
            f"More than {limiter.per_second:g} requests a second (burst {limiter.burst}); "
            f"retry after {seconds} s.",
            headers={"Retry-After": str(seconds)},
            retry_after_seconds=seconds,
        )


def limit_client(request: Request, client_id: object) -> None:
    limit(request, f"client:{client_id}")


def limit_address(request: Request) -> None:
    """Unauthenticated requests (and failed authentications) count against their address."""
    limit(request, f"ip:{request.client.host if request.client else 'unknown'}")


async def by_address(request: Request) -> None:
    """A route dependency for the routes that need no key (async: no thread-pool hop)."""
    limit_address(request)
