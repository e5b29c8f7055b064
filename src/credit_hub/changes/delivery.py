"""The webhook worker: claims due outbox rows, renders each event for its agency, signs it,
posts it, and records the outcome (retry with backoff, give up, disable the subscription).

Claiming sets the row's `next_attempt_at` a lease ahead, in a short transaction of its own
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several workers share the outbox): a worker that
dies mid-batch leaves its rows to be picked up again when the lease runs out. Delivery is
therefore at least once; receivers de-duplicate on X-CreditHub-Event-Id.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import structlog
from sqlalchemy import bindparam, select, update

from credit_hub.access.models import Client
from credit_hub.access.service import Principal
from credit_hub.changes import service
from credit_hub.changes.models import Delivery, DeliveryStatus, Subscription
from credit_hub.changes.webhooks import UnsafeDestination, check_destination, sign
from credit_hub.clock import Clock
from credit_hub.config import Settings
from credit_hub.db import Database, table
from credit_hub.keyring import Keyring

log = structlog.get_logger()

MAX_RESPONSE_BYTES = 64 * 1024
DNS_TTL_SECONDS = 30.0
USER_AGENT = "credit-hub-webhooks/1"


def make_http_client(settings: Settings, transport: httpx.BaseTransport | None = None) -> Any:
    """The one outgoing client: explicit timeouts, redirects never followed."""
    timeout = httpx.Timeout(
        connect=settings.webhooks_connect_timeout,
        read=settings.webhooks_read_timeout,
        write=settings.webhooks_read_timeout,
        pool=settings.webhooks_read_timeout,
    )
    size = max(settings.webhooks_concurrency, 1)
    return httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        transport=transport,
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        headers={"User-Agent": USER_AGENT},
    )


@dataclass(slots=True)
class Job:
    delivery_id: uuid.UUID
    subscription_id: uuid.UUID
    position: int
    attempts: int
    url: str = ""
    secret: bytes = b""
    event_id: str = ""
    body: bytes | None = None  # None: suppressed (no longer visible to the agency)


@dataclass(slots=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None


class Deliverer:
    def __init__(
        self,
        db: Database,
        http: httpx.Client,
        keyring: Keyring,
        settings: Settings,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.http = http
        self.keyring = keyring
        self.settings = settings
        self.clock = clock or Clock()
        self._pool = ThreadPoolExecutor(
            max(settings.webhooks_concurrency, 1), thread_name_prefix="webhook"
        )
        self._dns: dict[str, tuple[float, str | None]] = {}
        self._dns_lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- one round --------------------------------------------------------------------------

    def _due(self, now: datetime) -> Any:
        return (
            select(Delivery.id, Delivery.subscription_id, Delivery.position, Delivery.attempts)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.next_attempt_at <= now,
                Subscription.disabled_at.is_(None),
            )
        )

    def run_once(self) -> int:
        """Claim, deliver and record one batch; the number of deliveries handled."""
        now = self.clock.now()
        # A read-only look first: an idle worker never takes SQLite's write lock.
        with self.db.read() as session:
            if session.execute(self._due(now).limit(1)).first() is None:
                return 0
        with self.db.write() as session:
            claimed = session.execute(
                self._due(now)
                .order_by(Delivery.next_attempt_at)
                .limit(self.settings.webhooks_batch)
                .with_for_update(skip_locked=True, of=Delivery)
            ).all()
            if not claimed:
                return 0
            lease = now + timedelta(seconds=self.settings.webhooks_lease_seconds)
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_([c.id for c in claimed]))
                .values(next_attempt_at=lease)
                .execution_options(synchronize_session=False)
            )
        jobs = [Job(c.id, c.subscription_id, c.position, c.attempts) for c in claimed]
        with self.db.read() as session:
            self._render(session, jobs, now)
        outcomes = list(self._pool.map(self._send, jobs))
        with self.db.write() as session:
            self._record(session, jobs, outcomes, self.clock.now())
        return len(jobs)

    def _render(self, session: Any, jobs: list[Job], now: datetime) -> None:
        today = now.date()
        rows = session.execute(
            select(Subscription, Client)
            .join(Client, Client.id == Subscription.client_id)
            .where(Subscription.id.in_({j.subscription_id for j in jobs}))
        ).all()
        subscriptions = {s.id: (s, Principal.of(c), c.disabled_at is None) for s, c in rows}
        changes = service.rows_at(session, [j.position for j in jobs], today)
        secrets: dict[uuid.UUID, bytes] = {}
        bodies: dict[tuple[int, frozenset[str]], bytes] = {}
        for job in jobs:
            subscription, principal, enabled = subscriptions[job.subscription_id]
            row = changes.get(job.position)
            if row is None or not enabled or not principal.may_use(row.standard):
                continue  # suppressed: the agency may no longer see this change
            if job.subscription_id not in secrets:
                secret = self.keyring.decrypt(subscription.secret_enc)
                secrets[job.subscription_id] = secret or b""
            key = (job.position, principal.scopes)
            if key not in bodies:
                event = service.render(row, principal, self.keyring, today)
                bodies[key] = orjson.dumps(event)
            job.url = subscription.url
            job.secret = secrets[job.subscription_id]
            job.event_id = str(row.event_id)
            job.body = bodies[key]

    def _destination_error(self, url: str) -> str | None:
        host = httpx.URL(url).host
        moment = time.monotonic()
        with self._dns_lock:
            cached = self._dns.get(host)
        if cached is not None and moment - cached[0] < DNS_TTL_SECONDS:
            return cached[1]
        error = None
        try:
            check_destination(
                url,
                allow_loopback=self.settings.webhooks_allow_loopback,
                allow_private=self.settings.webhooks_allow_private,
            )
        except UnsafeDestination as exc:
            error = f"refused: {exc}"
        with self._dns_lock:
            self._dns[host] = (moment, error)
        return error

    def _send(self, job: Job) -> Outcome | None:
        if job.body is None:
            return None
        # DNS is checked again at delivery time: the name may point elsewhere now.
        if (refused := self._destination_error(job.url)) is not None:
            return Outcome(False, error=refused)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-CreditHub-Event-Id": job.event_id,
            "X-CreditHub-Delivery-Id": str(job.delivery_id),
            "X-CreditHub-Timestamp": timestamp,
            "X-CreditHub-Signature": sign(job.secret, timestamp, job.body),
        }
        try:
            with self.http.stream("POST", job.url, content=job.body, headers=headers) as response:
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        break
                status = response.status_code
        except httpx.TimeoutException as exc:
            return Outcome(False, error=f"timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        if 200 <= status < 300:
            return Outcome(True, status)
        if 300 <= status < 400:
            return Outcome(False, status, "redirect (never followed)")
        return Outcome(False, status, f"HTTP {status}")

    def _backoff(self, attempts: int) -> float:
        base = self.settings.webhooks_retry_base_seconds * 2.0 ** max(attempts - 1, 0)
        return min(base, self.settings.webhooks_retry_max_seconds) * random.uniform(0.8, 1.2)

    def _record(
        self, session: Any, jobs: list[Job], outcomes: list[Outcome | None], now: datetime
    ) -> None:
        updates: list[dict[str, Any]] = []
        runs: dict[uuid.UUID, list[bool]] = defaultdict(list)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome is None:
                updates.append(
                    {
                        "b_id": job.delivery_id,
                        "status": DeliveryStatus.SUPPRESSED.value,
                        "attempts": job.attempts,
                        "next_attempt_at": now,
                        "last_attempt_at": None,
                        "delivered_at": None,
                        "response_status": None,
                        "error": "no longer visible to the agency",
                    }
                )
                continue
            attempts = job.attempts + 1
            runs[job.subscription_id].append(outcome.ok)
            if outcome.ok:
                status, next_at = DeliveryStatus.DELIVERED, now
            elif attempts >= self.settings.webhooks_max_attempts:
                status, next_at = DeliveryStatus.FAILED, now
            else:
                status = DeliveryStatus.PENDING
                next_at = now + timedelta(seconds=self._backoff(attempts))
            updates.append(
                {
                    "b_id": job.delivery_id,
                    "status": status.value,
                    "attempts": attempts,
                    "next_attempt_at": next_at,
                    "last_attempt_at": now,
                    "delivered_at": now if outcome.ok else None,
                    "response_status": outcome.status,
                    "error": outcome.error,
                }
            )
            if not outcome.ok:
                log.info(
                    "webhook_delivery_failed",
                    delivery_id=str(job.delivery_id),
                    subscription_id=str(job.subscription_id),
                    attempts=attempts,
                    error=outcome.error,
                )
        deliveries = table(Delivery)
        session.connection().execute(
            deliveries.update()
            .where(deliveries.c.id == bindparam("b_id"))
            .values(
                status=bindparam("status"),
                attempts=bindparam("attempts"),
                next_attempt_at=bindparam("next_attempt_at"),
                last_attempt_at=bindparam("last_attempt_at"),
                delivered_at=bindparam("delivered_at"),
                response_status=bindparam("response_status"),
                error=bindparam("error"),
            ),
            updates,
        )
        self._count_failures(session, runs, now)

    def _count_failures(
        self, session: Any, runs: dict[uuid.UUID, list[bool]], now: datetime
    ) -> None:
        """Consecutive failed attempts per subscription; a long enough run disables it."""
        subscriptions = table(Subscription)
        for subscription_id, results in runs.items():
            if all(results) and results:
                trailing = 0
            elif any(results):
                trailing = len(results) - 1 - max(i for i, ok in enumerate(results) if ok)
            else:
                trailing = -1
            value: Any = (
                subscriptions.c.consecutive_failures + len(results) if trailing < 0 else trailing
            )
            session.execute(
                subscriptions.update()
                .where(subscriptions.c.id == subscription_id)
                .values(consecutive_failures=value)
            )
        failing = [s for s, results in runs.items() if not results[-1]]
        if failing:
            limit = self.settings.webhooks_disable_after
            disabled = session.execute(
                subscriptions.update()
                .where(
                    subscriptions.c.id.in_(failing),
                    subscriptions.c.consecutive_failures >= limit,
                    subscriptions.c.disabled_at.is_(None),
                )
                .values(
                    disabled_at=now,
                    disabled_reason=f"disabled after {limit} consecutive failed deliveries",
                )
                .returning(subscriptions.c.id)
            ).all()
            for (subscription_id,) in disabled:
                log.warning("webhook_subscription_disabled", subscription_id=str(subscription_id))

    # -- loops --------------------------------------------------------------------------------

    def run_forever(
        self, stop: threading.Event, on_error: Callable[[], None] | None = None
    ) -> None:
        """Deliver until `stop` is set; an error is logged and the loop goes on. An idle worker
        looks for due deliveries less and less often (from `webhooks_poll_seconds`, doubling up
        to `webhooks_idle_poll_seconds`), and as often as it can while there is work: each look
        is a read transaction, and every server process runs a worker (five looks a second
        took ~2% of a busy server's CPU)."""
        wait = self.settings.webhooks_poll_seconds
        while not stop.is_set():
            try:
                handled = self.run_once()
            except Exception as exc:  # never let one bad round stop the worker
                log.error("webhook_worker_error", error=type(exc).__name__, message=str(exc)[:300])
                handled = 0
                if on_error:
                    on_error()
                stop.wait(1.0)
            if handled:
                wait = self.settings.webhooks_poll_seconds
            else:
                stop.wait(wait)
                wait = min(2 * wait, max(self.settings.webhooks_idle_poll_seconds, wait))


class DeliveryThread:
    """The in-process worker a server starts in its lifespan."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=deliverer.run_forever, args=(self.stop_event,), name="webhooks", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        self.deliverer.close()
