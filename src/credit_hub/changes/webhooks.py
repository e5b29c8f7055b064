"""Webhook subscriptions: registration (with the SSRF checks), secrets, signatures, the outbox
rows `emit()` writes, the delivery log and manual redelivery."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from credit_hub import bulk
from credit_hub.access.models import Client
from credit_hub.access.service import Principal
from credit_hub.changes.models import Delivery, DeliveryStatus, Subscription, Watch
from credit_hub.db import new_id, table, utcnow
from credit_hub.errors import PROBLEM_BASE, NotFound, RequestInvalid
from credit_hub.keyring import Keyring

SECRET_PREFIX = "whsec_"
MAX_SUBSCRIPTIONS = 10
CHUNK = 500


class WebhookUrlRefused(RequestInvalid):
    type = PROBLEM_BASE + "webhook-url-refused"
    title = "The webhook URL is not allowed"


class UnsafeDestination(Exception):
    """The URL is not HTTPS, or resolves to an address the hub must not call."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-CreditHub-Signature value: v1=hex(HMAC-SHA256(secret, "<timestamp>.<body>"))."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if (
        address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    ):
        return "private"
    return None


def check_destination(url: str, *, allow_loopback: bool, allow_private: bool) -> None:
    """Raise UnsafeDestination unless the URL is HTTPS (or HTTP to loopback, when allowed) and
    every address its host resolves to is public (or allowed by configuration)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeDestination(f"not a URL: {exc}") from None
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise UnsafeDestination("the URL must be https://host/...")
    if parts.username or parts.password:
        raise UnsafeDestination("credentials in the URL are not allowed")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeDestination(f"the host {host!r} does not resolve") from None
    kinds = {_refused(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])) for info in infos}
    if parts.scheme == "http" and not (allow_loopback and kinds == {"loopback"}):
        raise UnsafeDestination("plain http is allowed only to loopback in development")
    if "loopback" in kinds and not allow_loopback:
        raise UnsafeDestination("the host resolves to a loopback address")
    if "private" in kinds and not allow_private:
        raise UnsafeDestination("the host resolves to a private or reserved address")


def _check_url(url: str, settings: Any) -> None:
    try:
        check_destination(
            url,
            allow_loopback=settings.webhooks_allow_loopback,
            allow_private=settings.webhooks_allow_private,
        )
    except UnsafeDestination as exc:
        message = f"Refused: {exc}."
        raise WebhookUrlRefused(
            message, errors=[{"pointer": "/url", "code": "url.refused", "message": message}]
        ) from None


def _check_standards(client: Principal, standards: Sequence[str]) -> None:
    unknown = sorted(set(standards) - client.standards)
    if unknown:
        message = f"Not registered to read: {', '.join(unknown)}."
        raise RequestInvalid(
            message,
            errors=[{"pointer": "/standards", "code": "standards.not_allowed", "message": message}],
        )


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def create(
    session: Session,
    client: Principal,
    keyring: Keyring,
    settings: Any,
    *,
    url: str,
    secret: str | None,
    standards: Sequence[str],
    watched_only: bool,
    description: str | None,
) -> tuple[Subscription, str]:
    _check_url(url, settings)
    _check_standards(client, standards)
    count = session.scalar(
        select(func.count()).select_from(Subscription).where(Subscription.client_id == client.id)
    )
    if (count or 0) >= MAX_SUBSCRIPTIONS:
        message = f"At most {MAX_SUBSCRIPTIONS} subscriptions per agency."
        raise RequestInvalid(message, errors=[{"code": "subscriptions.max", "message": message}])
    secret = secret or new_secret()
    subscription = Subscription(
        client_id=client.id,
        url=url,
        secret_enc=keyring.encrypt(secret.encode()),
        standards=sorted(set(standards)),
        watched_only=watched_only,
        description=description,
    )
    session.add(subscription)
    session.flush()
    return subscription, secret


def get(session: Session, client: Principal, subscription_id: uuid.UUID) -> Subscription:
    found = session.get(Subscription, subscription_id)
    if found is None or found.client_id != client.id:
        raise NotFound(f"No subscription {subscription_id}.")
    return found


def list_for(session: Session, client: Principal) -> Sequence[Subscription]:
    return session.scalars(
        select(Subscription)
        .where(Subscription.client_id == client.id)
        .order_by(Subscription.created_at)
    ).all()


def update_one(
    session: Session,
    subscription: Subscription,
    client: Principal,
    settings: Any,
    changes: dict[str, Any],
) -> Subscription:
    if "url" in changes:
        _check_url(changes["url"], settings)
        subscription.url = changes["url"]
    if "standards" in changes:
        _check_standards(client, changes["standards"])
        subscription.standards = sorted(set(changes["standards"]))
    if "watched_only" in changes:
        subscription.watched_only = changes["watched_only"]
    if "description" in changes:
        subscription.description = changes["description"]
    if "enabled" in changes:
        if changes["enabled"]:
            subscription.disabled_at = None
            subscription.disabled_reason = None
            subscription.consecutive_failures = 0
        elif subscription.disabled_at is None:
            subscription.disabled_at = utcnow()
            subscription.disabled_reason = "disabled by the agency"
    subscription.updated_at = utcnow()
    session.flush()
    return subscription


def rotate_secret(
    session: Session, subscription: Subscription, keyring: Keyring, secret: str | None
) -> str:
    secret = secret or new_secret()
    subscription.secret_enc = keyring.encrypt(secret.encode())
    subscription.updated_at = utcnow()
    session.flush()
    return secret


def delete(session: Session, subscription: Subscription) -> None:
    session.execute(table(Delivery).delete().where(Delivery.subscription_id == subscription.id))
    session.delete(subscription)
    session.flush()


def deliveries(
    session: Session,
    subscription: Subscription,
    *,
    status: str | None,
    before: uuid.UUID | None,
    limit: int,
) -> Sequence[Delivery]:
    """The delivery log, newest first."""
    stmt = select(Delivery).where(Delivery.subscription_id == subscription.id)
    if status:
        stmt = stmt.where(Delivery.status == status)
    if before:
        stmt = stmt.where(Delivery.id < before)
    return session.scalars(stmt.order_by(Delivery.id.desc()).limit(limit)).all()


def redeliver(
    session: Session, subscription: Subscription, delivery_id: uuid.UUID, now: datetime
) -> Delivery:
    """Queue a delivery again, whatever became of it; the receiver sees the same event id."""
    found = session.get(Delivery, delivery_id)
    if found is None or found.subscription_id != subscription.id:
        raise NotFound(f"No delivery {delivery_id} for this subscription.")
    found.status = DeliveryStatus.PENDING
    found.next_attempt_at = now
    found.error = None
    session.flush()
    return found


# -- the outbox ---------------------------------------------------------------------------------


def enqueue(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """One outbox row per (change, subscription that wants it), in the change's transaction.
    Scopes and masking are applied when the event is rendered for delivery."""
    subscriptions = session.execute(
        select(
            Subscription.id,
            Subscription.client_id,
            Subscription.standards,
            Subscription.watched_only,
            Client.standards.label("client_standards"),
        )
        .join(Client, Client.id == Subscription.client_id)
        .where(Subscription.disabled_at.is_(None), Client.disabled_at.is_(None))
    ).all()
    if not subscriptions:
        return
    watchers = sorted({s.client_id for s in subscriptions if s.watched_only})
    watched: set[tuple[uuid.UUID, str]] = set()
    if watchers:
        keys = sorted({e["subject_key"] for e in events})
        for start in range(0, len(keys), CHUNK):
            watched.update(
                (client_id, key)
                for client_id, key in session.execute(
                    select(Watch.client_id, Watch.subject_key).where(
                        Watch.client_id.in_(watchers),
                        Watch.subject_key.in_(keys[start : start + CHUNK]),
                    )
                )
            )
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "subscription_id": s.id,
            "position": e["position"],
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for s in subscriptions
        for e in events
        if e["standard"] in (s.client_standards or ())
        and (not s.standards or e["standard"] in s.standards)
        and (not s.watched_only or (s.client_id, e["subject_key"]) in watched)
    ]
    if rows:
        bulk.insert_rows(session, table(Delivery), rows)
