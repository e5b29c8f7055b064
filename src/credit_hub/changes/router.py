"""Agencies follow changes: the feed (`/v1/changes`) and the watch list (`/v1/watchlist`)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from credit_hub.access.auth import AgencyDep
from credit_hub.changes import service, watchlist
from credit_hub.changes.schemas import (
    ChangePage,
    WatchlistBulk,
    WatchlistBulkReport,
    WatchlistPage,
    WatchRead,
)
from credit_hub.clock import ClockDep
from credit_hub.db import DbDep, ReadSessionDep, SessionDep
from credit_hub.errors import (
    Forbidden,
    MalformedJson,
    NotFound,
    RequestInvalid,
    Unauthorized,
    problem_responses,
)

router = APIRouter(tags=["changes"])


@router.get(
    "/v1/changes",
    response_model=ChangePage,
    responses=problem_responses(Unauthorized, Forbidden, RequestInvalid),
)
def list_changes(
    request: Request,
    db: DbDep,
    client: AgencyDep,
    clock: ClockDep,
    after: Annotated[
        str | None,
        Query(description="A cursor from a previous page or change; `now` starts at the head"),
    ] = None,
    limit: Annotated[int, Query(ge=1, description="Changes per page (at most 1000)")] = 100,
    standard: Annotated[str | None, Query(description="Only this standard")] = None,
    watched: Annotated[bool, Query(description="Only subjects on the watch list")] = False,
) -> Response:
    """The changes to records this agency may see, oldest first, in commit order.

    Page with `next_cursor` until `has_more` is false, then poll with the last `next_cursor`:
    each change appears exactly once, in the order it was committed, and a cursor stays valid
    across restarts. Only standards the agency is registered for; never repaired records (a
    `repaired` change says to drop it) nor anything about minors; `data` is masked exactly as
    in a profile. A malformed, unknown or pruned cursor answers 422.
    """
    maximum = request.app.state.settings.changes_max_limit
    if limit > maximum:
        message = f"limit is at most {maximum}."
        raise RequestInvalid(
            message,
            errors=[{"parameter": "limit", "code": "limit.too_large", "message": message}],
        )
    with db.read() as session:
        page = service.read_feed(
            session,
            client,
            request.app.state.keyring,
            after=after,
            limit=limit,
            standard=standard,
            watched=watched,
            today=clock.today(),
        )
    return Response(orjson.dumps(page), media_type="application/json")


@router.get(
    "/v1/watchlist",
    response_model=WatchlistPage,
    responses=problem_responses(Unauthorized, Forbidden, RequestInvalid),
)
def list_watchlist(
    session: ReadSessionDep,
    client: AgencyDep,
    after: Annotated[str | None, Query(description="The last key of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Any:
    """The subjects this agency follows, by key."""
    return watchlist.list_page(session, client, after=after, limit=limit)


@router.put(
    "/v1/watchlist/{key}",
    response_model=WatchRead,
    responses=problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid),
)
def watch_subject(key: str, request: Request, session: SessionDep, client: AgencyDep) -> Any:
    """Follow a subject: a USCC (even one the hub does not know yet), an organization code, a
    registration number or a subject id. Idempotent."""
    limit = request.app.state.settings.watchlist_max
    return {"key": watchlist.watch(session, client, key, limit=limit)}


@router.delete(
    "/v1/watchlist/{key}",
    status_code=204,
    responses=problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid),
)
def unwatch_subject(key: str, session: SessionDep, client: AgencyDep) -> Response:
    """Stop following a subject."""
    watchlist.unwatch(session, client, key)
    return Response(status_code=204)


@router.post(
    "/v1/watchlist",
    response_model=WatchlistBulkReport,
    responses=problem_responses(MalformedJson, Unauthorized, Forbidden, RequestInvalid),
)
def bulk_watchlist(
    body: WatchlistBulk, request: Request, session: SessionDep, client: AgencyDep
) -> Any:
    """Add, remove or replace up to 100,000 keys at once. Keys no subject has are listed by
    index in `not_found` (USCCs are always accepted); a malformed key fails the request."""
    limit = request.app.state.settings.watchlist_max
    return watchlist.bulk(session, client, body.keys, mode=body.mode, limit=limit)
