"""Webhook subscriptions and delivery: signatures a receiver can verify, retries with backoff,
disabling after a run of failures, redelivery, scopes, and the SSRF guard."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from credit_hub.access.models import ClientKind
from credit_hub.changes.delivery import Deliverer
from credit_hub.changes.models import Delivery, Subscription
from credit_hub.changes.webhooks import UnsafeDestination, check_destination
from credit_hub.errors import PROBLEM_BASE
from tests import factories
from tests.changes.conftest import HOOK_URL, Receiver, changes
from tests.changes.test_feed import LICENSING
from tests.conftest import Caller, pushed, register

TOLERANCE = 300


class Rejected(Exception):
    pass


class ReceiverVerifier:
    """What docs/change-feed.md tells a receiver to do: check the timestamp is recent, the
    signature over "<timestamp>.<body>", and that the event id was not seen before."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.seen: set[str] = set()

    def accept(self, headers: httpx.Headers | dict[str, str], body: bytes, now: float) -> Any:
        timestamp = headers["X-CreditHub-Timestamp"]
        if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE:
            raise Rejected("stale timestamp")
        mac = hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256)
        given = headers["X-CreditHub-Signature"].split(",")
        if not any(hmac.compare_digest("v1=" + mac.hexdigest(), g.strip()) for g in given):
            raise Rejected("bad signature")
        event = orjson.loads(body)
        if event["id"] in self.seen:
            return None  # a redelivery: acknowledge, do nothing
        self.seen.add(event["id"])
        return event


def subscribe(client: TestClient, agency: Caller, **body: Any) -> Any:
    response = client.post(
        "/v1/subscriptions", json={"url": HOOK_URL} | body, headers=agency.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def deliveries(session: Session, subscription_id: str) -> list[Delivery]:
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.subscription_id == uuid.UUID(subscription_id))
            .order_by(Delivery.position)
        )
    )


def test_events_are_signed_and_a_receiver_can_verify_them(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    receiver: Receiver,
    deliverer: Deliverer,
    session: Session,
) -> None:
    created = subscribe(app_client, agency)
    assert created["secret"].startswith("whsec_")
    pushed(app_client, department, [factories.penalty(1), factories.penalty(2)])
    assert deliverer.run_once() == 2
    assert deliverer.run_once() == 0
    assert len(receiver.requests) == 2
    verifier = ReceiverVerifier(created["secret"])
    feed = {c["id"]: c for c in changes(app_client, agency.headers)["changes"]}
    for request in receiver.requests:  # sent concurrently: in any order
        event = verifier.accept(request.headers, request.content, time.time())
        assert event == feed[request.headers["X-CreditHub-Event-Id"]]  # the feed's JSON
        assert request.headers["Content-Type"] == "application/json"
    assert verifier.seen == set(feed)
    request = receiver.requests[0]
    # A redelivery of the same event is recognized by its id.
    assert verifier.accept(request.headers, request.content, time.time()) is None
    # A tampered body, a wrong secret, a replay outside the tolerance: rejected.
    tampered = request.content.replace(b"0.5", b"0.0")
    assert tampered != request.content
    with pytest.raises(Rejected, match="signature"):
        ReceiverVerifier(created["secret"]).accept(request.headers, tampered, time.time())
    with pytest.raises(Rejected, match="signature"):
        ReceiverVerifier("whsec_another").accept(request.headers, request.content, time.time())
    with pytest.raises(Rejected, match="timestamp"):
        ReceiverVerifier(created["secret"]).accept(
            request.headers, request.content, time.time() + TOLERANCE + 60
        )
    # Re-signing with a new timestamp needs the secret.
    forged = dict(request.headers) | {"x-credithub-timestamp": str(int(time.time()) + 5)}
    with pytest.raises(Rejected, match="signature"):
        ReceiverVerifier(created["secret"]).accept(
            httpx.Headers(forged), request.content, time.time()
        )
    log = app_client.get(
        f"/v1/subscriptions/{created['id']}/deliveries", headers=agency.headers
    ).json()
    assert [d["status"] for d in log] == ["delivered", "delivered"]
    assert all(d["response_status"] == 204 and d["attempts"] == 1 for d in log)


def test_failures_retry_with_backoff_then_disable_the_subscription(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    receiver: Receiver,
    deliverer: Deliverer,
    session: Session,
    hub_settings: Any,
) -> None:
    created = subscribe(app_client, agency)
    pushed(app_client, department, [factories.penalty(1)])
    answers = iter(
        [
            httpx.Response(500),
            httpx.Response(302, headers={"Location": "http://169.254.169.254/"}),
        ]
    )
    receiver.answer = lambda _: next(answers)
    assert deliverer.run_once() == 1
    (delivery,) = deliveries(session, created["id"])
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, 500)
    assert deliverer.run_once() == 1
    session.refresh(delivery)
    assert (delivery.attempts, delivery.response_status) == (2, 302)
    assert delivery.error == "redirect (never followed)"
    assert len(receiver.requests) == 2  # the redirect was not followed

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("the receiver hangs", request=request)

    receiver.answer = hang
    assert deliverer.run_once() == 1
    session.refresh(delivery)
    assert delivery.error is not None
    assert delivery.error.startswith("timeout")
    subscription = session.get(Subscription, uuid.UUID(created["id"]))
    assert subscription is not None
    session.refresh(subscription)
    assert subscription.consecutive_failures == 3
    assert subscription.disabled_at is not None  # webhooks_disable_after = 3
    assert deliverer.run_once() == 0  # nothing goes to a disabled subscription
    read = app_client.get(f"/v1/subscriptions/{created['id']}", headers=agency.headers).json()
    assert read["disabled_reason"] == "disabled after 3 consecutive failed deliveries"
    # Re-enabled, the pending delivery resumes and succeeds.
    receiver.answer = lambda _: httpx.Response(200)
    response = app_client.patch(
        f"/v1/subscriptions/{created['id']}", json={"enabled": True}, headers=agency.headers
    )
    assert response.status_code == 200
    assert response.json()["consecutive_failures"] == 0
    assert deliverer.run_once() == 1
    session.refresh(delivery)
    assert (delivery.status, delivery.attempts) == ("delivered", 4)


def test_backoff_grows_and_attempts_run_out(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    receiver: Receiver,
    deliverer: Deliverer,
    session: Session,
    hub_settings: Any,
) -> None:
    hub_settings.webhooks_retry_base_seconds = 10.0
    hub_settings.webhooks_disable_after = 100
    created = subscribe(app_client, agency)
    pushed(app_client, department, [factories.penalty(1)])
    receiver.answer = lambda _: httpx.Response(503)
    waits = []
    (delivery,) = deliveries(session, created["id"])
    for _ in range(hub_settings.webhooks_max_attempts):
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(next_attempt_at=deliverer.clock.now())
        )
        before = deliverer.clock.now()
        assert deliverer.run_once() == 1
        session.refresh(delivery)
        waits.append((delivery.next_attempt_at - before).total_seconds())
    assert delivery.status == "failed"
    # 10 s, 20 s, 40 s, 80 s (+-20 % jitter); the last attempt gives up.
    for wait, nominal in zip(waits, (10, 20, 40, 80), strict=False):
        assert nominal * 0.75 < wait < nominal * 1.25 + 1
    # A manual redeliver queues it again, with the same event id.
    receiver.answer = lambda _: httpx.Response(204)
    response = app_client.post(
        f"/v1/subscriptions/{created['id']}/deliveries/{delivery.id}/redeliver",
        headers=agency.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    assert deliverer.run_once() == 1
    session.refresh(delivery)
    assert delivery.status == "delivered"
    ids = {r.headers["X-CreditHub-Event-Id"] for r in receiver.requests}
    assert len(ids) == 1


def test_events_respect_the_receiving_agencys_scopes(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    privileged_agency: Caller,
    receiver: Receiver,
    deliverer: Deliverer,
    session: Session,
) -> None:
    licensing_only = register(session, ClientKind.AGENCY, name="人社局", standards=[LICENSING])
    for caller in (agency, privileged_agency, licensing_only):
        subscribe(app_client, caller, description=caller.client.name)
    record = factories.person_penalty(1)
    pushed(app_client, department, [record])
    assert deliverer.run_once() == 2  # the licensing-only agency gets no outbox row
    by_url_secret = {
        r.headers["X-CreditHub-Signature"]: orjson.loads(r.content) for r in receiver.requests
    }
    bodies = list(by_url_secret.values())
    clear = [b for b in bodies if b["data"]["person_id_no"] == record["person_id_no"]]
    assert len(clear) == 1  # only the agency holding personal_data sees the ID number
    # A watched-only subscription gets only watched subjects' events.
    watcher = register(session, ClientKind.AGENCY, name="银行")
    only = subscribe(app_client, watcher, watched_only=True)
    uscc = factories.make_uscc(880)
    app_client.put(f"/v1/watchlist/{uscc}", headers=watcher.headers)
    pushed(
        app_client, department, [factories.penalty(5), factories.penalty(6, counterpart_uscc=uscc)]
    )
    assert len(deliveries(session, only["id"])) == 1


def test_subscription_urls_are_checked(
    app_client: TestClient, agency: Caller, hub_settings: Any
) -> None:
    for url in ("ftp://example.com/x", "https://user:pw@127.0.0.1/", "not a url"):
        response = app_client.post("/v1/subscriptions", json={"url": url}, headers=agency.headers)
        assert response.status_code == 422, url
        assert response.json()["type"] == PROBLEM_BASE + "webhook-url-refused"
    hub_settings.webhooks_allow_loopback = False
    for url in ("http://127.0.0.1:8080/hook", "https://127.0.0.1/hook", "https://[::1]/"):
        response = app_client.post("/v1/subscriptions", json={"url": url}, headers=agency.headers)
        assert response.status_code == 422, url


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.8/hook",
        "https://192.168.1.1/",
        "https://169.254.169.254/latest/meta-data",
        "https://[fe80::1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://0.0.0.0/",
        "http://8.8.8.8/",
    ],
)
def test_private_and_link_local_destinations_are_refused(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        check_destination(url, allow_loopback=True, allow_private=False)


def test_public_https_destination_is_allowed() -> None:
    check_destination("https://8.8.8.8/hook", allow_loopback=False, allow_private=False)


def test_secret_rotation_and_deletion(
    app_client: TestClient, agency: Caller, privileged_agency: Caller
) -> None:
    created = subscribe(app_client, agency, secret="s" * 32)
    assert created["secret"] == "s" * 32
    url = f"/v1/subscriptions/{created['id']}"
    rotated = app_client.post(f"{url}/secret", json={}, headers=agency.headers)
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    # Another agency cannot see it.
    assert app_client.get(url, headers=privileged_agency.headers).status_code == 404
    assert [
        s["id"] for s in app_client.get("/v1/subscriptions", headers=agency.headers).json()
    ] == [created["id"]]
    assert app_client.delete(url, headers=agency.headers).status_code == 204
    assert app_client.get(url, headers=agency.headers).status_code == 404


class _Stop(threading.Event):
    """A stop event that records how long the worker waited each time, and stops it after
    `rounds` waits."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.rounds = rounds

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if len(self.waits) >= self.rounds:
            self.set()
        return self.is_set()


def test_an_idle_worker_looks_less_often_and_goes_round_while_there_is_work(
    deliverer: Deliverer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing is due in the outbox: each round finds nothing, and the waits double.
    stop = _Stop(rounds=5)
    deliverer.run_forever(stop)
    assert stop.waits == [0.2, 0.4, 0.8, 1.0, 1.0]
    # Rounds that handle deliveries go on at once; the first idle one waits the shortest again.
    handled = iter([0, 0, 3, 2, 0, 0])
    monkeypatch.setattr(deliverer, "run_once", lambda: next(handled))
    stop = _Stop(rounds=4)
    deliverer.run_forever(stop)
    assert stop.waits == [0.2, 0.4, 0.2, 0.4]
