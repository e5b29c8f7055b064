"""Authentication and authorization as FastAPI dependencies: `Authorization: Bearer <key>`.

A key's principal is remembered in the server process for `auth_cache_seconds` (1 s by
default), so that a client sending many requests costs one key query a second, not one per
request. Revoking a key or changing a client through this process forgets every remembered
principal at once; the other worker processes stop accepting the key within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from credit_hub.access.models import ClientKind
from credit_hub.access.service import Principal, authenticate, hash_key
from credit_hub.db import Database, DbDep
from credit_hub.errors import Forbidden, Unauthorized
from credit_hub.ratelimit import limit_address, limit_client

_bearer = HTTPBearer(auto_error=False, description="An API key issued by an operator")


class PrincipalCache:
    """Principals of recently seen keys, by the key's digest, for at most `ttl` seconds."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[float, Principal]] = {}  # by hash_key()
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        if self.ttl <= 0:
            return None
        entry = self._entries.get(hash_key(key))
        if entry is None or self.clock() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[hash_key(key)] = (self.clock(), principal)

    def forget_all(self) -> None:
        with self._lock:
            self._entries.clear()


def forget_principals(request: Request) -> None:
    """After a key or client changed: no remembered principal outlives it in this process."""
    cache: PrincipalCache = request.app.state.principals
    cache.forget_all()


def _authenticate(db: Database, key: str) -> Principal | None:
    with db.read() as session:
        return authenticate(session, key)


def principal_of(request: Request, db: Database, key: str) -> Principal | None:
    """The key's principal (remembered or looked up), from a worker thread."""
    cache: PrincipalCache = request.app.state.principals
    principal = cache.get(key)
    if principal is None:
        principal = _authenticate(db, key)
        if principal is not None:
            cache.put(key, principal)
    return principal


def admit(request: Request, principal: Principal | None) -> Principal:
    """401 (counted against the address) without a principal; the client's rate otherwise."""
    if principal is None:
        limit_address(request)  # guessing keys costs the guesser's address its rate
        raise Unauthorized("The API key is unknown, revoked, or its client is disabled.")
    limit_client(request, principal.id)
    request.state.principal = principal
    return principal


async def current_client(
    request: Request,
    db: DbDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # async: a remembered key is answered on the event loop, without a thread-pool hop.
    if credentials is None or credentials.scheme.lower() != "bearer":
        limit_address(request)
        raise Unauthorized("Send `Authorization: Bearer <api key>`.")
    key = credentials.credentials
    cache: PrincipalCache = request.app.state.principals
    principal = cache.get(key)
    if principal is None:
        principal = await run_in_threadpool(principal_of, request, db, key)
    return admit(request, principal)


ClientDep = Annotated[Principal, Depends(current_client)]


async def _of_kind(
    request: Request,
    db: Database,
    credentials: HTTPAuthorizationCredentials | None,
    kind: ClientKind,
) -> Principal:
    client = await current_client(request, db, credentials)
    if client.kind != kind:
        raise Forbidden(f"This operation is for {kind} clients; this key is a {client.kind}'s.")
    return client


def _require(kind: ClientKind) -> object:
    # current_client called, not depended on: one dependency less to solve per request
    # (FastAPI's solving costs ~20 µs a dependency, on every profile read).
    async def dependency(
        request: Request,
        db: DbDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return await _of_kind(request, db, credentials, kind)

    return dependency


async def agency(request: Request, db: Database) -> Principal:
    """What `AgencyDep` answers, called by a handler that solves no dependencies for it (the
    profile read); its route declares `BEARER_SECURITY` in its OpenAPI entry."""
    return await _of_kind(request, db, await _bearer(request), ClientKind.AGENCY)


# The OpenAPI security requirement of a route that authenticates with `agency`.
BEARER_SECURITY: list[dict[str, list[str]]] = [{_bearer.scheme_name: []}]

DepartmentDep = Annotated[Principal, Depends(_require(ClientKind.DEPARTMENT))]
AgencyDep = Annotated[Principal, Depends(_require(ClientKind.AGENCY))]
OperatorDep = Annotated[Principal, Depends(_require(ClientKind.OPERATOR))]
