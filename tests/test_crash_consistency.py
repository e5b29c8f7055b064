"""Crash consistency: the real service, killed with SIGKILL at random moments while departments
push batches and upload files, loses no acknowledged record and half-stores nothing.

The run: `credit-hub serve --workers 1` (one process: SIGKILL takes the server, its job worker
and its open transactions at once) on a dedicated database (a temp SQLite file, or a separate
PostgreSQL database next to CREDIT_HUB_TEST_DATABASE_URL). Pusher threads send partial and
atomic batches with an Idempotency-Key, some of them corrections of their earlier records, and
retry with the same key after a connection error; an uploader thread sends NDJSON and CSV files
the same way. The main thread starts the server, lets it work for a random moment, kills it,
and again, CRASH_KILLS times (default 20). After a last start the clients finish, the jobs
drain, and the database must show:

* every record whose push was acknowledged (2xx received) stored once, holding the content of
  the last acknowledged push of it, with one version per acknowledged change (a retry that
  reached a server which had committed before dying is a replay, not a second version);
* nothing of a record that was rejected, and every atomic batch that was given up after a
  crash stored whole or not at all;
* every file submission final with a report (never left `running`), its rows stored once;
* the audit chain verifies.

`CREDIT_HUB_CRASH_KILLS` and `CREDIT_HUB_CRASH_SEED` change the run; `bench/crash.py` runs many
more kills.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from credit_hub.access import service as access
from credit_hub.access.models import ClientKind
from credit_hub.audit.service import verify
from credit_hub.config import Settings
from credit_hub.db import make_engine, make_sessionmaker
from credit_hub.ingest.models import Submission
from credit_hub.records.models import Record, RecordVersion
from tests import factories
from tests.live import BIN, dedicated_settings, environment, free_port

DATABASE_NAME = "credit_hub_test_crash"
STANDARD = "administrative_penalty"
KILLS = int(os.environ.get("CREDIT_HUB_CRASH_KILLS", "20"))
SEED = int(os.environ.get("CREDIT_HUB_CRASH_SEED") or time.time_ns() % 1_000_000)
PUSHERS = 3
BATCH_RECORDS = 12
FINAL_STATES = {"accepted", "partially_accepted", "rejected", "failed"}
BAD_USCC = "914403001922038217"  # wrong check character: rejected with format.uscc


# -- what the clients sent and what they were told -----------------------------------------


@dataclass
class Ledger:
    """Everything the clients know: acknowledged content, rejected and given-up records."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # source_id -> the content (violation_facts, fine) of each acknowledged change, in order
    acknowledged: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # source ids of a push not acknowledged: stored or not, but at most once
    uncertain: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)  # acknowledged as rejected: never stored
    abandoned_atomic: list[list[str]] = field(default_factory=list)  # all or none
    uploads: list[tuple[str, str, list[str], str | None]] = field(default_factory=list)
    acknowledged_pushes: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)


def _facts(tag: str) -> str:
    return f"当事人销售超过保质期的预包装食品，货值金额360元。（{tag}）"


def _retrying(stop_retrying: threading.Event, ledger: Ledger, call: Any) -> httpx.Response | None:
    """Call until the server answers; None when told to give up on connection errors."""
    while True:
        try:
            return call()  # type: ignore[no-any-return]
        except httpx.TransportError:
            with ledger.lock:
                ledger.retries += 1
            if stop_retrying.is_set():
                return None
            time.sleep(0.05)  # the server is down or restarting


def pusher(
    base_url: str,
    key: str,
    worker: int,
    ledger: Ledger,
    stop: threading.Event,
    give_up: threading.Event,
) -> None:
    rng = random.Random(SEED * 31 + worker)
    numbers = itertools.count(worker * 1_000_000 + 1)
    mine: list[list[int]] = []  # acknowledged batches of this thread: corrected later
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for batch_no in itertools.count():
            if stop.is_set():
                return
            tag = f"w{worker}-b{batch_no}"
            correcting = bool(mine) and rng.random() < 0.3
            ns = rng.choice(mine) if correcting else [next(numbers) for _ in range(BATCH_RECORDS)]
            mode = "atomic" if rng.random() < 0.4 else "partial"
            records = [
                factories.penalty(
                    n, violation_facts=_facts(tag), fine_amount_wan=str(rng.randint(1, 500))
                )
                for n in ns
            ]
            bad = None
            if mode == "partial" and not correcting and rng.random() < 0.5:
                bad = rng.randrange(len(records))
                records[bad]["counterpart_uscc"] = BAD_USCC
            ids = [r["decision_doc_no"] for r in records]
            body = {"standard": STANDARD, "mode": mode, "records": records}
            push_headers = headers | {"Idempotency-Key": f"crash-{SEED}-{tag}"}

            def send(body: Any = body, push_headers: Any = push_headers) -> httpx.Response:
                return client.post("/v1/records", json=body, headers=push_headers)

            # A given-up atomic batch (after one connection error) must be all or nothing.
            abandon = mode == "atomic" and not correcting and rng.random() < 0.5
            try:
                response = send()
            except httpx.TransportError:
                response = None
                if abandon:
                    with ledger.lock:
                        ledger.abandoned_atomic.append(ids)
                        ledger.uncertain.update(ids)
                    continue
                response = _retrying(give_up, ledger, send)
            with ledger.lock:
                if response is None:
                    ledger.uncertain.update(ids)
                    return
                if response.status_code not in (200, 201):
                    ledger.errors.append(f"{tag}: {response.status_code} {response.text[:500]}")
                    return
                ledger.acknowledged_pushes += 1
                report = response.json()
                rejected = {e["source_id"] for e in report["errors"]}
                if bad is not None and rejected != {ids[bad]}:
                    ledger.errors.append(f"{tag}: rejected {rejected}, expected {ids[bad]}")
                for record, source_id in zip(records, ids, strict=True):
                    if source_id in rejected:
                        ledger.rejected.add(source_id)
                        continue
                    content = (record["violation_facts"], record["fine_amount_wan"])
                    history = ledger.acknowledged[source_id]
                    if not history or history[-1] != content:
                        history.append(content)
            if not correcting:
                mine.append([n for n, s in zip(ns, ids, strict=True) if s not in rejected])
            time.sleep(rng.uniform(0, 0.05))


def _file(rng: random.Random, ns: list[int], tag: str, bad: int | None) -> tuple[bytes, str]:
    records = [factories.penalty(n, violation_facts=_facts(tag)) for n in ns]
    if bad is not None:
        records[bad]["counterpart_uscc"] = BAD_USCC
    if rng.random() < 0.5:
        return b"".join(orjson.dumps(r) + b"\n" for r in records), "application/x-ndjson"
    names = list(records[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    for r in records:
        writer.writerow([";".join(r[n]) if isinstance(r[n], list) else r[n] for n in names])
    return buffer.getvalue().encode(), "text/csv"


def uploader(
    base_url: str, key: str, ledger: Ledger, stop: threading.Event, give_up: threading.Event
) -> None:
    rng = random.Random(SEED * 31 + 99)
    numbers = itertools.count(50_000_001)
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for upload_no in itertools.count():
            if stop.is_set():
                return
            tag = f"u{upload_no}"
            ns = [next(numbers) for _ in range(rng.randint(150, 400))]
            mode = "atomic" if rng.random() < 0.3 else "partial"
            bad = rng.randrange(len(ns)) if rng.random() < 0.5 else None
            content, media_type = _file(rng, ns, tag, bad)
            headers = {
                "Authorization": f"Bearer {key}",
                "Content-Type": media_type,
                "Idempotency-Key": f"crash-{SEED}-{tag}",
            }

            def send(content: bytes = content, headers: Any = headers, mode: str = mode) -> Any:
                return client.post(
                    "/v1/submissions",
                    params={"standard": STANDARD, "mode": mode},
                    content=content,
                    headers=headers,
                )

            response = _retrying(give_up, ledger, send)
            ids = [factories.penalty(n)["decision_doc_no"] for n in ns]
            bad_id = ids[bad] if bad is not None else None
            with ledger.lock:
                if response is None:
                    ledger.uncertain.update(ids)
                    return
                if response.status_code not in (200, 202):
                    ledger.errors.append(f"{tag}: {response.status_code} {response.text[:500]}")
                    return
                ledger.uploads.append((response.json()["submission_id"], mode, ids, bad_id))
            time.sleep(rng.uniform(0.2, 0.8))


# -- the database and the server --------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with dedicated_settings(tmp_path_factory.mktemp("crash"), DATABASE_NAME) as settings:
        yield settings


class Service:
    """`credit-hub serve --workers 1` on one port, started and killed again and again."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.env = environment(
            settings,
            CREDIT_HUB_WORKER_POLL_SECONDS="0.2",
            CREDIT_HUB_JOB_CHUNK_ROWS="50",  # several chunks per file: kills land mid-job
            CREDIT_HUB_JOB_LEASE_SECONDS="2",  # a killed worker's job is taken over soon
        )

    def start(self) -> None:
        command = [
            str(BIN / "credit-hub"),
            *("serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
            "--no-migrate",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log_path.read_text()[-5000:]
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.log_path.read_text()[-5000:]
            time.sleep(0.05)  # polling for readiness

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# -- the run and the checks ----------------------------------------------------------------


@dataclass
class Stored:
    records: dict[str, list[RecordVersion]]
    submissions: dict[str, Submission]
    audit_ok: bool
    audit_checked: int
    audit_problem: str | None


def read_back(sessions: sessionmaker[Session], department_id: uuid.UUID) -> Stored:
    with sessions() as session:
        rows = session.execute(
            select(Record.source_id, RecordVersion)
            .join(RecordVersion, RecordVersion.record_id == Record.id)
            .where(Record.department_id == department_id)
            .order_by(Record.source_id, RecordVersion.version)
        ).all()
        records: dict[str, list[RecordVersion]] = defaultdict(list)
        for source_id, version in rows:
            records[source_id].append(version)
        submissions = {
            str(s.id): s
            for s in session.scalars(
                select(Submission).where(Submission.client_id == department_id)
            )
        }
        report = verify(session)
        session.expunge_all()
    return Stored(records, submissions, report.ok, report.checked, report.reason)


def run_with_kills(settings: Settings, log_path: Path, kills: int) -> dict[str, Any]:
    """Push, upload and kill; then check everything. Returns the figures of the run."""
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            client = access.create_client(
                session,
                kind=ClientKind.DEPARTMENT,
                name="福州市市场监督管理局",
                uscc=factories.DEPARTMENT_USCC,
                standards=[STANDARD],
                scopes=[],
                pushes_for=[],
            )
            _, key = access.issue_key(session, client)
            department_id = client.id
        service = Service(settings, log_path)
        ledger = Ledger()
        stop, give_up = threading.Event(), threading.Event()
        rng = random.Random(SEED)
        threads = [
            threading.Thread(
                target=pusher, args=(service.base_url, key, n, ledger, stop, give_up), daemon=True
            )
            for n in range(PUSHERS)
        ]
        threads.append(
            threading.Thread(
                target=uploader, args=(service.base_url, key, ledger, stop, give_up), daemon=True
            )
        )
        started = time.monotonic()
        try:
            service.start()
            for thread in threads:
                thread.start()
            for _ in range(kills):
                time.sleep(rng.uniform(0.1, 1.2))  # a random moment of pushing and uploading
                service.kill()
                time.sleep(rng.choice((0, 0, 0.1, 0.5)))
                service.start()
            time.sleep(1)
            stop.set()  # no new pushes; in-flight ones retry until answered
            for thread in threads:
                thread.join(timeout=60)
            give_up.set()
            assert not any(t.is_alive() for t in threads), "a client hung"
            deadline = time.monotonic() + 90
            while True:  # the queue drains: every job reaches a final state
                with sessions() as session:
                    pending = session.scalars(
                        select(Submission.status).where(
                            Submission.client_id == department_id,
                            Submission.status.in_(("queued", "running")),
                        )
                    ).all()
                if not pending:
                    break
                assert time.monotonic() < deadline, f"jobs stuck: {pending}"
                time.sleep(0.2)
        finally:
            stop.set()
            give_up.set()
            service.stop()
        elapsed = time.monotonic() - started
        assert ledger.errors == []
        stored = read_back(sessions, department_id)
    finally:
        engine.dispose()
    return check(ledger, stored) | {
        "seed": SEED,
        "kills": kills,
        "seconds": round(elapsed, 1),
        "acknowledged_pushes": ledger.acknowledged_pushes,
        "retries": ledger.retries,
        "audit_events": stored.audit_checked,
    }


def check(ledger: Ledger, stored: Stored) -> dict[str, Any]:
    problems: list[str] = []
    # Acknowledged records: once, with the acknowledged content, one version per change.
    for source_id, history in ledger.acknowledged.items():
        versions = stored.records.get(source_id, [])
        got = [(v.data["violation_facts"], Decimal(v.data["fine_amount_wan"])) for v in versions]
        want = [(facts, Decimal(fine)) for facts, fine in history]
        if source_id in ledger.uncertain:  # a later push of it was not acknowledged
            ok = got[: len(want)] == want and len(got) <= len(want) + 1
        else:
            ok = got == want
        if not ok:
            problems.append(f"{source_id}: stored {got}, acknowledged {want}")
        if [v.version for v in versions] != list(range(1, len(versions) + 1)):
            problems.append(f"{source_id}: versions {[v.version for v in versions]}")
    for source_id in ledger.rejected:
        if source_id in stored.records:
            problems.append(f"{source_id}: rejected but stored")
    # Given-up pushes: at most once; atomic batches whole or not at all.
    for source_id in ledger.uncertain - ledger.acknowledged.keys():
        if len(stored.records.get(source_id, [])) > 1:
            problems.append(f"{source_id}: unacknowledged push stored twice")
    half = [
        ids
        for ids in ledger.abandoned_atomic
        if 0 < sum(i in stored.records for i in ids) < len(ids)
    ]
    problems += [f"atomic batch half stored: {ids}" for ids in half]
    # Files: final with a report; the rows it reports stored once, the bad row never.
    statuses: dict[str, int] = defaultdict(int)
    upload_rows = 0
    for submission_id, mode, ids, bad_id in ledger.uploads:
        job = stored.submissions[submission_id]
        statuses[job.status] += 1
        if job.status not in FINAL_STATES or job.report is None or job.receipt is None:
            problems.append(
                f"upload {submission_id}: {job.status}, report {job.report is not None}"
            )
            continue
        kept = [i for i in ids if i in stored.records]
        if any(len(stored.records[i]) != 1 for i in kept):
            problems.append(f"upload {submission_id}: a row stored twice")
        if bad_id is not None and bad_id in stored.records:
            problems.append(f"upload {submission_id}: the bad row was stored")
        expected = {
            ("accepted", "partial"): len(ids),
            ("accepted", "atomic"): len(ids),
            ("partially_accepted", "partial"): len(ids) - 1,
            ("rejected", "atomic"): 0,
        }.get((job.status, mode))
        if job.status == "failed":
            expected = job.created  # interrupted too often: the committed chunks stay, once
            if mode == "atomic" and expected:
                problems.append(f"upload {submission_id}: a failed atomic job stored rows")
        if expected is None or len(kept) != expected or job.created != len(kept):
            problems.append(
                f"upload {submission_id} ({mode}, {job.status}): {len(kept)} stored, "
                f"{job.created} reported, {expected} expected"
            )
        if job.status != "failed" and job.rows_read != len(ids):
            problems.append(f"upload {submission_id}: {job.rows_read} of {len(ids)} rows read")
        upload_rows += len(kept)
    stuck = [s for s in stored.submissions.values() if s.status not in FINAL_STATES]
    problems += [f"submission {s.id} left {s.status}" for s in stuck]
    if not stored.audit_ok:
        problems.append(f"audit chain: {stored.audit_problem}")
    assert problems == [], "\n".join(problems[:50])
    return {
        "records_checked": len(ledger.acknowledged) + len(ledger.rejected),
        "records_stored": len(stored.records),
        "versions_stored": sum(len(v) for v in stored.records.values()),
        "atomic_batches_given_up": len(ledger.abandoned_atomic),
        "uploads": dict(statuses),
        "upload_rows_stored": upload_rows,
    }


def test_sigkill_loses_no_acknowledged_record(hub_settings: Settings, tmp_path: Path) -> None:
    figures = run_with_kills(hub_settings, tmp_path / "server.log", KILLS)
    print(
        f"\ncrash consistency ({'sqlite' if hub_settings.is_sqlite else 'postgresql'}): {figures}"
    )
    assert figures["kills"] >= min(KILLS, 20)
    assert figures["acknowledged_pushes"] > KILLS  # the kills hit a working service
    assert figures["uploads"], "no file was uploaded"
