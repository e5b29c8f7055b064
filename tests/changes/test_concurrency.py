"""With real commits: a reader paging through the feed while pushes run sees every change
exactly once, in commit order; outbox rows survive a deliverer killed mid-delivery.

Like tests/ingest/test_concurrency.py, this module builds its own database (a temp SQLite file,
or a separate PostgreSQL database next to CREDIT_HUB_TEST_DATABASE_URL).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from credit_hub.access import service as access
from credit_hub.access.models import ClientKind
from credit_hub.access.service import Principal
from credit_hub.app import create_app
from credit_hub.changes import webhooks
from credit_hub.changes.models import ChangeEvent, Delivery
from credit_hub.config import Settings
from credit_hub.keyring import load_keyring
from tests import factories
from tests.live import BIN, dedicated_settings, environment, sessions_on

DATABASE_NAME = "credit_hub_test_changes"
WRITERS = 6
ROUNDS = 5


@pytest.fixture(scope="module")
def hub_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with dedicated_settings(
        tmp_path_factory.mktemp("changes"),
        DATABASE_NAME,
        webhooks_worker=False,
        webhooks_allow_loopback=True,
    ) as settings:
        yield settings


@pytest.fixture(scope="module")
def sessions(hub_settings: Settings) -> Iterator[sessionmaker[Session]]:
    with sessions_on(hub_settings) as made:
        yield made


def new_client(sessions: sessionmaker[Session], kind: ClientKind) -> tuple[Principal, str]:
    with sessions.begin() as session:
        client = access.create_client(
            session,
            kind=kind,
            name=f"test {kind}",
            uscc=factories.DEPARTMENT_USCC if kind == ClientKind.DEPARTMENT else None,
            standards=["administrative_penalty"],
            scopes=[],
            pushes_for=[],
        )
        _, key = access.issue_key(session, client)
        return Principal.of(client), key


def test_a_reader_sees_every_change_once_in_commit_order_while_pushes_run(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    _, department_key = new_client(sessions, ClientKind.DEPARTMENT)
    _, agency_key = new_client(sessions, ClientKind.AGENCY)
    app = create_app(hub_settings)
    writing = threading.Event()
    writing.set()
    start = threading.Barrier(WRITERS + 1)

    def write(worker: int) -> list[list[str]]:
        """Each push's changed record ids, in the order the push reported them."""
        pushes = []
        # No `with`: the lifespan's shutdown would dispose the engine under the other threads.
        client = TestClient(app, raise_server_exceptions=False)
        try:
            start.wait(timeout=30)
            for round_ in range(ROUNDS):
                # Overlapping keys: new records and corrections of others' records.
                records = [
                    factories.penalty(n, fine_amount_wan=f"{worker}.{round_}{n}")
                    for n in range(worker * 3, worker * 3 + 6)
                ]
                response = client.post(
                    "/v1/records",
                    json={"standard": "administrative_penalty", "records": records},
                    headers={"Authorization": f"Bearer {department_key}"},
                )
                assert response.status_code == 201, response.text
                pushes.append(
                    [
                        o["record_id"]
                        for o in response.json()["records"]
                        if o["outcome"] != "unchanged"
                    ]
                )
        finally:
            client.close()
        return pushes

    def read() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        headers = {"Authorization": f"Bearer {agency_key}"}
        client = TestClient(app, raise_server_exceptions=False)
        try:
            start.wait(timeout=30)
            while True:
                done = not writing.is_set()  # read once more after the writers finished
                params: dict[str, Any] = {"limit": 7} | ({"after": cursor} if cursor else {})
                response = client.get("/v1/changes", params=params, headers=headers)
                assert response.status_code == 200, response.text
                page = response.json()
                seen.extend(page["changes"])
                cursor = page["next_cursor"]
                if done and not page["has_more"]:
                    return seen
        finally:
            client.close()

    try:
        with ThreadPoolExecutor(WRITERS + 1) as pool:
            reader = pool.submit(read)
            writers = [pool.submit(write, n) for n in range(WRITERS)]
            pushes = [p for w in writers for p in w.result(timeout=300)]
            writing.clear()
            seen = reader.result(timeout=300)
    finally:
        app.state.engine.dispose()
    changed = sum(len(p) for p in pushes)
    assert changed > WRITERS * ROUNDS  # the pushes did change records
    ids = [c["id"] for c in seen]
    assert len(ids) == len(set(ids)) == changed  # every change, exactly once
    with sessions() as session:
        stored = session.execute(
            select(ChangeEvent.position, ChangeEvent.event_id).order_by(ChangeEvent.position)
        ).all()
    assert [p for p, _ in stored] == list(range(1, len(stored) + 1))  # gap-free
    assert ids == [str(e) for _, e in stored]  # in commit (position) order
    # Each push's changes are one block, in its order: positions follow commits.
    order = [c["record"]["id"] for c in seen]
    for records in pushes:
        if records:
            first = next(i for i in range(len(order)) if order[i : i + len(records)] == records)
            assert order[first : first + len(records)] == records


# -- outbox durability across a kill ------------------------------------------------------------


class Hook(BaseHTTPRequestHandler):
    hang = threading.Event()  # set: hold every request until released
    release = threading.Event()
    received: list[str] = []  # noqa: RUF012  (shared by the server's threads on purpose)
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.hang.is_set():
            with Hook.lock:
                Hook.received.append("hung")
            Hook.release.wait(30)
            status = 503
        else:
            with Hook.lock:
                Hook.received.append(orjson.loads(body)["id"])
            status = 204
        try:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass  # the deliverer was killed meanwhile

    def log_message(self, format: str, *args: Any) -> None:
        pass


def deliverer_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = environment(
        settings,
        CREDIT_HUB_WEBHOOKS_ALLOW_LOOPBACK="true",
        CREDIT_HUB_WEBHOOKS_LEASE_SECONDS="2",
        CREDIT_HUB_WEBHOOKS_POLL_SECONDS="0.1",
        CREDIT_HUB_WEBHOOKS_CONCURRENCY="4",
    )
    command = [str(BIN / "credit-hub"), "webhooks", "deliver"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling another process's progress


def test_outbox_survives_a_deliverer_killed_mid_delivery(
    hub_settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    _, department_key = new_client(sessions, ClientKind.DEPARTMENT)
    agency, _ = new_client(sessions, ClientKind.AGENCY)
    with sessions.begin() as session:
        subscription, _ = webhooks.create(
            session,
            agency,
            load_keyring(hub_settings),
            hub_settings,
            url=url,
            secret=None,
            standards=[],
            watched_only=False,
            description=None,
        )
        subscription_id = subscription.id
    app = create_app(hub_settings)
    client = TestClient(app, raise_server_exceptions=False)
    try:
        response = client.post(
            "/v1/records",
            json={
                "standard": "administrative_penalty",
                "records": [factories.penalty(n) for n in range(500, 520)],
            },
            headers={"Authorization": f"Bearer {department_key}"},
        )
        assert response.status_code == 201, response.text
    finally:
        client.close()
        app.state.engine.dispose()

    def delivered() -> int:
        with sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.subscription_id == subscription_id)
                    .where(Delivery.status == "delivered")
                )
                or 0
            )

    log = tmp_path / "deliverer.log"
    Hook.hang.set()
    first = deliverer_process(hub_settings, log)
    try:
        wait_for(lambda: len(Hook.received) >= 1, 30, "the first delivery attempt")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert delivered() == 0  # killed before any answer: nothing recorded, nothing lost
    Hook.hang.clear()
    Hook.release.set()
    second = deliverer_process(hub_settings, log)
    try:
        wait_for(lambda: delivered() == 20, 60, "all 20 deliveries after the restart")
    finally:
        second.terminate()
        second.wait(timeout=20)
        server.shutdown()
        server.server_close()
    with sessions() as session:
        positions = session.scalars(
            select(Delivery.position).where(Delivery.subscription_id == subscription_id)
        ).all()
        mine = {
            str(e)
            for e in session.scalars(
                select(ChangeEvent.event_id).where(ChangeEvent.position.in_(positions))
            )
        }
    assert len(mine) == 20
    received = {r for r in Hook.received if r != "hung"}
    assert received == mine  # every event arrived (at least once), none invented
    assert second.returncode == 0, log.read_text()
