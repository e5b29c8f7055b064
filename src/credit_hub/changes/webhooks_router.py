"""Agencies' webhook subscriptions (`/v1/subscriptions`): register, sign, inspect, redeliver."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from credit_hub.access.auth import AgencyDep
from credit_hub.changes import webhooks
from credit_hub.changes.models import Subscription
from credit_hub.changes.schemas import (
    DeliveryRead,
    SecretRead,
    SecretRotate,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionRead,
    SubscriptionUpdate,
)
from credit_hub.clock import ClockDep
from credit_hub.db import ReadSessionDep, SessionDep
from credit_hub.errors import (
    Forbidden,
    MalformedJson,
    NotFound,
    RequestInvalid,
    Unauthorized,
    problem_responses,
)

_READ = problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid)
_WRITE = problem_responses(MalformedJson, Unauthorized, Forbidden, NotFound, RequestInvalid)

router = APIRouter(prefix="/v1/subscriptions", tags=["changes"])


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionCreated,
    responses=problem_responses(MalformedJson, Unauthorized, Forbidden, RequestInvalid),
)
def create_subscription(
    body: SubscriptionCreate, request: Request, session: SessionDep, client: AgencyDep
) -> Any:
    """Register an HTTPS endpoint. Each change the agency may see is POSTed to it as the same
    JSON as a feed item, signed: `X-CreditHub-Signature: v1=<hex HMAC-SHA256 of
    "<X-CreditHub-Timestamp>.<body>">` with the secret answered here (once). Addresses that
    resolve to private, loopback or link-local networks are refused."""
    state = request.app.state
    subscription, secret = webhooks.create(
        session,
        client,
        state.keyring,
        state.settings,
        url=body.url,
        secret=body.secret,
        standards=body.standards,
        watched_only=body.watched_only,
        description=body.description,
    )
    return SubscriptionRead.model_validate(subscription).model_dump() | {"secret": secret}


@router.get(
    "",
    response_model=list[SubscriptionRead],
    responses=problem_responses(Unauthorized, Forbidden),
)
def list_subscriptions(session: ReadSessionDep, client: AgencyDep) -> Any:
    """This agency's subscriptions."""
    return webhooks.list_for(session, client)


@router.get(
    "/{subscription_id}",
    response_model=SubscriptionRead,
    responses=_READ,
)
def get_subscription(subscription_id: uuid.UUID, session: ReadSessionDep, client: AgencyDep) -> Any:
    """One subscription, with its failure count and why it was disabled, if it was."""
    return webhooks.get(session, client, subscription_id)


@router.patch(
    "/{subscription_id}",
    response_model=SubscriptionRead,
    responses=_WRITE,
)
def update_subscription(
    subscription_id: uuid.UUID,
    body: SubscriptionUpdate,
    request: Request,
    session: SessionDep,
    client: AgencyDep,
) -> Subscription:
    """Change the URL or filters; `enabled: true` re-enables a disabled subscription (its
    pending deliveries resume; changes made while it was disabled are in the feed)."""
    found = webhooks.get(session, client, subscription_id)
    changes = body.model_dump(exclude_unset=True)
    return webhooks.update_one(session, found, client, request.app.state.settings, changes)


@router.delete("/{subscription_id}", status_code=204, responses=_READ)
def delete_subscription(
    subscription_id: uuid.UUID, session: SessionDep, client: AgencyDep
) -> Response:
    """Remove a subscription and its delivery log."""
    webhooks.delete(session, webhooks.get(session, client, subscription_id))
    return Response(status_code=204)


@router.post(
    "/{subscription_id}/secret",
    response_model=SecretRead,
    responses=_WRITE,
)
def rotate_subscription_secret(
    subscription_id: uuid.UUID,
    body: SecretRotate,
    request: Request,
    session: SessionDep,
    client: AgencyDep,
) -> Any:
    """Set a new signing secret (given, or generated and answered once)."""
    found = webhooks.get(session, client, subscription_id)
    return {
        "secret": webhooks.rotate_secret(session, found, request.app.state.keyring, body.secret)
    }


@router.get(
    "/{subscription_id}/deliveries",
    response_model=list[DeliveryRead],
    responses=_READ,
)
def list_deliveries(
    subscription_id: uuid.UUID,
    session: SessionDep,
    client: AgencyDep,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed|suppressed)$")] = None,
    before: Annotated[
        uuid.UUID | None, Query(description="The last id of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The delivery log, newest first: attempts, the receiver's status code, the last error."""
    found = webhooks.get(session, client, subscription_id)
    return webhooks.deliveries(session, found, status=status, before=before, limit=limit)


@router.post(
    "/{subscription_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryRead,
    responses=_READ,
)
def redeliver(
    subscription_id: uuid.UUID,
    delivery_id: uuid.UUID,
    session: SessionDep,
    client: AgencyDep,
    clock: ClockDep,
) -> Any:
    """Queue a delivery again now (same event id), whatever its status."""
    found = webhooks.get(session, client, subscription_id)
    return webhooks.redeliver(session, found, delivery_id, clock.now())
