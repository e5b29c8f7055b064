"""End-to-end ingestion throughput: the real service over HTTP, against its in-process ceiling.

    .venv/bin/python bench/ingest.py [--db sqlite,postgres] [--batches 60] [--clients 2]
        [--workers 2] [--grow N] [--grow-minutes 10] [--memory-records 14600] [--no-analyze]
        [--profile DIR]

    .venv/bin/python bench/ingest.py --batches 30
    .venv/bin/python bench/ingest.py --batches 30 --db sqlite --grow 300000

For each database: a fresh database (a SQLite file under /tmp/credit_hub_bench, or the
PostgreSQL database credit_hub_bench on 127.0.0.1, dropped and created), `credit-hub serve` on a
free port with `--workers`, an operator (`credit-hub admin bootstrap`) and one department.
On PostgreSQL the warm-up is followed by ANALYZE, as autovacuum would do within a minute: a
fresh table without statistics gets plans that scan all of a department's records.

Every request body is generated before the clock starts: batches of 1,000 records, one in ten
of licences, the others penalties of which 220 correct a record pushed a few batches earlier
(about 20% corrections overall, each changing the content); subjects come back every 66,667
records and one record in ten belongs to one of 500 busy subjects. A few untimed batches warm
the workers up first. `--clients` processes push the batches, each on its own keep-alive
connection. Printed: records/s through HTTP, latency p50/p95/p99 per 1,000-record batch, the
summed report counts and the CPU seconds of each side (the machine's cores are shared).

Then, in this process and on the same kind of rows: check_records() alone on the pushed
batches, store() alone on fresh records into the same database (one transaction per batch),
records/s each, and HTTP / min(ceiling). Memory: the server workers' VmRSS before and VmHWM
after one ~20 MB batch, per worker (the increase is the largest one: one worker takes the
batch). `--grow N` keeps pushing new records until N are stored (at most `--grow-minutes`),
then pushes a fresh set of batches and prints their rate next to the empty-store rate.
`--profile DIR` samples each worker with py-spy during the timed push (raw collapsed stacks).

Exits 1 on errors only (a failed set-up, an answer other than 201, a rejected record), never on
a missed target.
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import os
import queue
import random
import subprocess
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _machine, _server
from bench._machine import clear_caches
from bench._server import BenchError, Server
from bench.data import DEPARTMENT_USCC, licence, penalty
from credit_hub.access.service import Principal
from credit_hub.app import GC_YOUNG_THRESHOLD
from credit_hub.config import Settings
from credit_hub.db import make_engine, make_sessionmaker
from credit_hub.ingest.schemas import Mode
from credit_hub.ingest.service import body_digest, check_records, store
from credit_hub.keyring import load_keyring
from credit_hub.standards.registry import Standards

PENALTY = "administrative_penalty"
LICENSING = "administrative_licensing"
BATCH = 1_000
CORRECTIONS = 220  # per penalty batch: nine batches in ten are penalties, so ~20% of all records
BUSY_SUBJECTS = 500
MB = 1024 * 1024

TARGET_RATE = {"sqlite": 15_000, "postgres": 20_000}
TARGET_CEILING_SHARE = 0.5
TARGET_P99_MS = 250
TARGET_MEMORY_MB = 200
TARGET_GROWTH = 0.70


def subject_of(n: int) -> int:
    return 200_000 + n % BUSY_SUBJECTS if n % 10 == 3 else n * 3 % 200_000


def envelope(standard: str, records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"standard": standard, "mode": "partial", "records": records})


@dataclass(frozen=True)
class Fill:
    """New records `start`..`start + size - 1` of one standard, generated where pushed."""

    standard: str
    start: int
    size: int

    @property
    def records(self) -> int:
        return self.size

    def body(self) -> bytes:
        rng = random.Random(self.start)
        make = penalty if self.standard == PENALTY else licence
        numbers = range(self.start, self.start + self.size)
        return envelope(self.standard, [make(n, subject=subject_of(n), rng=rng) for n in numbers])


@dataclass(frozen=True)
class Prepared:
    standard: str
    body: bytes
    records: int
    corrections: int


class Plan:
    """Hands out source numbers. A penalty may be corrected once, `lag` batches after its own
    batch, so that its first version is stored before the correction arrives."""

    def __init__(self, *, lag: int, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.lag = lag
        self.next = {PENALTY: 0, LICENSING: 0}
        self.recent: deque[range] = deque()
        self.correctable: list[int] = []

    def reserve(self, standard: str, size: int) -> Fill:
        start = self.next[standard]
        self.next[standard] += size
        self.recent.append(range(start, start + size) if standard == PENALTY else range(0))
        if len(self.recent) > self.lag:
            self.correctable.extend(self.recent.popleft())
        return Fill(standard, start, size)

    def mixed(self, position: int) -> Fill:
        """The new records of the `position`-th batch of a run: licences at 9, 19, ..."""
        return self.reserve(LICENSING if position % 10 == 9 else PENALTY, BATCH)

    def batch(self, position: int) -> Prepared:
        """The `position`-th batch of a run, with its corrections."""
        if position % 10 == 9:
            return Prepared(LICENSING, self.mixed(position).body(), BATCH, 0)
        fixes = self._take(CORRECTIONS)
        fresh = self.reserve(PENALTY, BATCH - len(fixes))
        rng = random.Random(-fresh.start - 1)
        numbers = range(fresh.start, fresh.start + fresh.size)
        records = [penalty(n, subject=subject_of(n), rng=rng) for n in numbers]
        records += [penalty(n, subject=subject_of(n), rng=rng, revision=1) for n in fixes]
        self.rng.shuffle(records)
        return Prepared(PENALTY, envelope(PENALTY, records), BATCH, len(fixes))

    def _take(self, count: int) -> list[int]:
        pool, picked = self.correctable, []
        for _ in range(min(count, len(pool))):
            at = self.rng.randrange(len(pool))
            pool[at], pool[-1] = pool[-1], pool[at]
            picked.append(pool.pop())
        return picked


# --- pushing from client processes -----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    index: int
    started: float
    seconds: float
    status: int
    counts: dict[str, int] | None
    error: str | None


@dataclass
class PushRun:
    answers: list[Answer]
    wall: float
    records: int
    connections: dict[int, int]
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.records / self.wall if self.wall else 0.0

    def counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for answer in self.answers:
            total.update(answer.counts or {})
        return total

    def latency_ms(self, percent: float) -> float:
        ordered = sorted(a.seconds for a in self.answers if a.status == 201)
        if not ordered:
            return math.nan
        return 1000 * ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 201]


def _client(
    base_url: str,
    key: str,
    jobs: Sequence[Prepared | Fill],
    tasks: Any,
    results: Any,
    go: Any,
    control: Any,
) -> None:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    timeout = httpx.Timeout(600, connect=10)
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as http:
        while True:  # the keep-alive connection is open before the clock starts
            stream = http.get("/healthz").extensions["network_stream"]
            port = stream.get_extra_info("client_addr")[1]
            results.put(("ready", os.getpid(), port))
            if control.recv() == "keep":
                break
            http.close()  # asked to reconnect: its worker holds more than its share
            http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        go.wait()
        cpu = time.process_time()
        while (index := tasks.get()) is not None:
            job = jobs[index]
            body = job.body if isinstance(job, Prepared) else job.body()
            started = time.monotonic()
            try:
                answer = http.post("/v1/records", content=body)
            except httpx.HTTPError as exc:
                seconds = time.monotonic() - started
                results.put(Answer(index, started, seconds, 0, None, repr(exc)))
                continue
            seconds = time.monotonic() - started
            if answer.status_code == 201:
                report = orjson.loads(answer.content)
                # Rejections within a stored batch: say which, by code and pointer.
                summary = str(report["error_summary"][:3]) if report["error_summary"] else None
                results.put(Answer(index, started, seconds, 201, report["counts"], summary))
            else:
                error = answer.text[:4000]
                results.put(Answer(index, started, seconds, answer.status_code, None, error))
        results.put(("done", time.process_time() - cpu))


def _receive(results: Any, clients: list[Any]) -> Any:
    while True:
        try:
            return results.get(timeout=5)
        except queue.Empty as exc:  # every 5 s: check that the clients are alive
            dead = [c.exitcode for c in clients if c.exitcode not in (None, 0)]
            if dead:
                raise BenchError(f"a client process died (exit codes {dead})") from exc


def _cpu(server: Server) -> dict[str, float]:
    used = {"server": sum(_server.cpu_seconds(p) for p in {server.process.pid, *server.workers})}
    if server.database == "postgres":
        used["postgres"] = sum(_server.cpu_seconds(p) for p in _server.postgres_pids())
    return used


def push(
    server: Server,
    key: str,
    jobs: Sequence[Prepared | Fill],
    *,
    clients: int,
    deadline: float | None = None,
    progress: Callable[[Answer], None] | None = None,
    profile: Path | None = None,
    label: str = "push",
) -> PushRun:
    """Push the jobs from `clients` processes (forked: they inherit the bodies), at most two
    requests queued per client; stop handing out jobs once `deadline` has passed."""
    context = multiprocessing.get_context("fork")
    tasks, results, go = context.Queue(), context.Queue(), context.Event()
    pipes = [context.Pipe() for _ in range(clients)]
    processes = [
        context.Process(
            target=_client,
            args=(server.base_url, key, jobs, tasks, results, go, child),
            daemon=True,
        )
        for _, child in pipes
    ]
    for process in processes:
        process.start()
    answers: list[Answer] = []
    spies: list[subprocess.Popen[bytes]] = []
    client_cpu = 0.0
    try:
        _server.spread(
            server,
            lambda: _receive(results, processes),
            {p.pid: parent for p, (parent, _) in zip(processes, pipes, strict=True)},
        )
        connections = server.connections()
        pending = iter(range(len(jobs)))
        in_flight = 0
        for index in islice(pending, 2 * clients):
            tasks.put(index)
            in_flight += 1
        spies = _server.start_spies(server, profile, label)
        before = _cpu(server)
        started = time.monotonic()
        go.set()
        while in_flight:
            answer = _receive(results, processes)
            in_flight -= 1
            answers.append(answer)
            if progress is not None:
                progress(answer)
            if deadline is not None and time.monotonic() > deadline:
                continue
            if (index := next(pending, None)) is not None:
                tasks.put(index)
                in_flight += 1
        after = _cpu(server)
        _server.stop_spies(spies)
        spies = []
        for _ in processes:
            tasks.put(None)
        for _ in processes:
            message = _receive(results, processes)  # ("done", cpu seconds)
            client_cpu += message[1]
    finally:
        _server.stop_spies(spies)
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    wall = max(a.started + a.seconds for a in answers) - started
    cpu = {name: after[name] - before[name] for name in before} | {"clients": client_cpu}
    records = sum(jobs[a.index].records for a in answers if a.status == 201)
    return PushRun(answers, wall, records, connections, cpu)


# --- the in-process ceiling ------------------------------------------------------------------


@dataclass
class Ceiling:
    check_rate: float
    store_rate: float
    stored: int

    @property
    def least(self) -> float:
        return min(self.check_rate, self.store_rate)

    @property
    def serial(self) -> float:
        """Both steps one after the other on one core."""
        return 1 / (1 / self.check_rate + 1 / self.store_rate)


def measure_ceiling(
    server: Server, department_id: UUID, pushed: list[Prepared], fresh: list[Fill]
) -> Ceiling:
    """The ceilings with the collector tuned as a server worker tunes it (app.py's lifespan):
    with Python's default thresholds a 1,000-record batch pays for full collections the
    server never makes (check_records measured at half its rate, store() 11% lower)."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    try:
        return _measure_ceiling(server, department_id, pushed, fresh)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _measure_ceiling(
    server: Server, department_id: UUID, pushed: list[Prepared], fresh: list[Fill]
) -> Ceiling:
    names = {k.removeprefix("CREDIT_HUB_").lower(): v for k, v in server.env.items()}
    settings = Settings(
        database_url=server.url,
        personal_data_key=names["personal_data_key"],
        person_hmac_secret=names["person_hmac_secret"],
        signing_key=names["signing_key"],
    )
    keyring = load_keyring(settings)
    standards = Standards.load(settings.schemas_dir)
    found = {s: standards.resolve(s) for s in (PENALTY, LICENSING)}
    principal = Principal(
        id=department_id,
        kind="department",
        name="bench department",
        uscc=DEPARTMENT_USCC,
        standards=frozenset(found),
        scopes=frozenset(),
        pushes_for=frozenset(),
    )

    decoded = [(found[p.standard], orjson.loads(p.body)["records"]) for p in pushed]
    clear_caches()
    started = time.perf_counter()
    for version, records in decoded:
        _good, rejected, _warnings = check_records(
            version, records, client=principal, keyring=keyring
        )
        if rejected:
            raise BenchError(f"check_records rejected a generated record: {rejected[0]}")
    check_rate = sum(len(r) for _, r in decoded) / (time.perf_counter() - started)

    prepared = []
    for job in fresh:
        body = job.body()
        records = orjson.loads(body)["records"]
        checked, rejected, warnings = check_records(
            found[job.standard], records, client=principal, keyring=keyring
        )
        prepared.append((found[job.standard], body_digest(body), checked, rejected, warnings))
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    stored = 0
    seconds = 0.0
    try:
        for version, digest, checked, rejected, warnings in prepared:
            started = time.perf_counter()
            with factory.begin() as session:
                report, _ = store(
                    session,
                    keyring,
                    version,
                    checked,
                    rejected,
                    warnings,
                    client=principal,
                    mode=Mode.PARTIAL,
                    body_sha256=digest,
                    idempotency_key=None,
                    received=len(checked),
                    received_at=datetime.now(UTC),
                )
            seconds += time.perf_counter() - started
            stored += report.counts.created
            if report.counts.created != len(checked):
                raise BenchError(f"store() created {report.counts.created} of {len(checked)}")
    finally:
        engine.dispose()
    return Ceiling(check_rate, stored / seconds, stored)


# --- memory ----------------------------------------------------------------------------------


@dataclass
class Memory:
    records: int
    body_mb: float
    seconds: float
    before: dict[int, int]  # VmRSS, kB
    peak: dict[int, int]  # VmHWM after the batch, kB
    after: dict[int, int]  # VmRSS after the batch, kB
    peak_reset: bool

    @property
    def increase_mb(self) -> float:
        return max(self.peak[p] - self.before[p] for p in self.before) / 1024


def measure_memory(server: Server, key: str, body: bytes, records: int) -> tuple[Memory, Answer]:
    before = {p: _server.status_kb(p, "VmRSS") for p in server.workers}
    reset = all([_server.reset_peak(p) for p in server.workers])
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    started = time.monotonic()
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=600) as http:
        response = http.post("/v1/records", content=body)
    seconds = time.monotonic() - started
    peak = {p: _server.status_kb(p, "VmHWM") for p in server.workers}
    after = {p: _server.status_kb(p, "VmRSS") for p in server.workers}
    if response.status_code == 201:
        answer = Answer(-1, started, seconds, 201, orjson.loads(response.content)["counts"], None)
    else:
        answer = Answer(-1, started, seconds, response.status_code, None, response.text[:4000])
    memory = Memory(records, len(body) / MB, seconds, before, peak, after, reset)
    return memory, answer


# --- one database ----------------------------------------------------------------------------


@dataclass
class Figures:
    database: str
    run: PushRun | None = None
    ceiling: Ceiling | None = None
    memory: Memory | None = None
    grown: PushRun | None = None
    grown_size: int = 0
    errors: list[str] = field(default_factory=list)


def register(server: Server, operator_key: str) -> tuple[UUID, str]:
    body = {
        "kind": "department",
        "name": "福州市市场监督管理局",
        "uscc": DEPARTMENT_USCC,
        "standards": [PENALTY, LICENSING],
    }
    answer = httpx.post(
        server.base_url + "/v1/admin/clients",
        json=body,
        headers={"authorization": f"Bearer {operator_key}"},
        timeout=30,
    )
    if answer.status_code != 201:
        raise BenchError(f"registering the department: {answer.status_code} {answer.text}")
    created = answer.json()
    return UUID(created["id"]), created["api_key"]


def _report_run(label: str, run: PushRun, expected: Counter[str], errors: list[str]) -> None:
    counts = run.counts()
    failures = run.failures()
    print(
        f"  {label}: {run.records:,} records stored in {len(run.answers) - len(failures)} of "
        f"{len(run.answers)} batches, {run.wall:.2f} s -> {run.rate:,.0f} records/s through HTTP"
    )
    print(
        f"    latency per 1,000-record batch: p50 {run.latency_ms(50):.0f} ms, "
        f"p95 {run.latency_ms(95):.0f} ms, p99 {run.latency_ms(99):.0f} ms, "
        f"max {run.latency_ms(100):.0f} ms"
    )
    print(
        "    counts: "
        + ", ".join(
            f"{k} {counts[k]:,}"
            for k in ("received", "created", "updated", "unchanged", "rejected")
        )
        + f"  (planned: created {expected['created']:,}, updated {expected['updated']:,})"
    )
    cores = os.cpu_count() or 1
    busy = ", ".join(f"{k} {v:.1f}" for k, v in run.cpu.items())
    print(
        f"    CPU seconds: {busy} (wall {run.wall:.1f} s x {cores} cores = "
        f"{run.wall * cores:.1f} core-s)"
    )
    print(f"    connections held per worker pid at the start: {run.connections}")
    if (
        len(run.connections) > 1
        and max(run.connections.values()) - min(run.connections.values()) > 1
    ):
        print("    WARNING: the kernel gave the keep-alive connections to the workers unevenly;")
        print("    one worker serves several clients, so fewer processes did the work.")
    for answer in failures[:5]:
        print(f"    ERROR answer {answer.status}: {answer.error}")
    if failures:
        statuses = Counter(a.status for a in failures)
        errors.append(f"{label}: {len(failures)} failed answer(s) {dict(statuses)}")
    if counts["rejected"]:
        errors.append(f"{label}: {counts['rejected']} record(s) rejected")
        for answer in [a for a in run.answers if a.status == 201 and a.error][:3]:
            print(f"    REJECTED in a stored batch: {answer.error}")


def _planned(batches: list[Prepared]) -> Counter[str]:
    corrections = sum(b.corrections for b in batches)
    return Counter(created=sum(b.records for b in batches) - corrections, updated=corrections)


def run_database(database: str, args: argparse.Namespace, figures: Figures) -> None:
    print(f"\n=== {database}: fresh database, {args.workers} worker(s), {args.clients} client(s)")
    url = _server.fresh_database(database)
    limits = {"CREDIT_HUB_MAX_BATCH_RECORDS": "20000", "CREDIT_HUB_MAX_BODY_BYTES": "64000000"}
    # No in-process maintenance a minute in: it would end the publication of the generated
    # penalties decided years ago, and their planned corrections would then be refused
    # (record_expired), as they must be.
    limits["CREDIT_HUB_MAINTENANCE_EVERY_HOURS"] = "0"
    secrets = _server.secrets_env()
    with _server.running(database, url, secrets, workers=args.workers, extra=limits) as server:
        print(f"  server pid {server.process.pid}, workers {server.workers}, {server.base_url}")
        department_id, key = register(server, _server.bootstrap(server))

        plan = Plan(lag=2 * args.clients)
        warm = 2 * max(args.workers, args.clients)
        warmup = [plan.batch(i) for i in range(warm)]
        batches = [plan.batch(warm + i) for i in range(args.batches)]
        size = sum(len(b.body) for b in batches)
        print(
            f"  generated {len(batches)} batches ({size / MB:.1f} MB, "
            f"{sum(b.standard == LICENSING for b in batches)} of licences, "
            f"{sum(b.corrections for b in batches) / sum(b.records for b in batches):.0%} "
            f"corrections) and {warm} warm-up batches"
        )
        stored = 0
        warmed = push(server, key, warmup, clients=args.clients)
        _report_run("warm-up (untimed)", warmed, _planned(warmup), figures.errors)
        stored += warmed.counts()["created"]
        if database == "postgres" and args.analyze:
            _server.analyze(url)
            print("  ANALYZE after the warm-up (as autovacuum would; --no-analyze skips it)")

        run = push(
            server,
            key,
            batches,
            clients=args.clients,
            profile=args.profile,
            label="empty",
        )
        figures.run = run
        _report_run("timed push", run, _planned(batches), figures.errors)
        stored += run.counts()["created"]

        fresh = [plan.mixed(i) for i in range(args.batches)]
        ceiling = measure_ceiling(server, department_id, batches, fresh)
        figures.ceiling = ceiling
        stored += ceiling.stored
        print(
            f"  ceiling, one process: check_records {ceiling.check_rate:,.0f} records/s, "
            f"store {ceiling.store_rate:,.0f} records/s ({ceiling.stored:,} new records); "
            f"both in series {ceiling.serial:,.0f} records/s"
        )
        print(f"  HTTP / min(ceiling) = {run.rate / ceiling.least:.2f}")

        big = plan.reserve(PENALTY, args.memory_records).body()
        memory, answer = measure_memory(server, key, big, args.memory_records)
        figures.memory = memory
        stored += (answer.counts or {}).get("created", 0)
        print(
            f"  memory: one batch of {memory.records:,} records ({memory.body_mb:.1f} MB) took "
            f"{memory.seconds:.1f} s, answer {answer.status}"
        )
        for pid in memory.before:
            print(
                f"    worker {pid}: VmRSS before {memory.before[pid] / 1024:.0f} MB, "
                f"VmHWM after {memory.peak[pid] / 1024:.0f} MB, "
                f"VmRSS after {memory.after[pid] / 1024:.0f} MB"
            )
        print(
            f"    increase: +{memory.increase_mb:.0f} MB (largest per worker, peak - before; "
            f"peak {'reset before the batch' if memory.peak_reset else 'since start'}); "
            f"sum of workers {sum(memory.before.values()) / 1024:.0f} -> "
            f"{sum(memory.peak.values()) / 1024:.0f} MB"
        )
        if answer.status != 201:
            print(f"    ERROR answer {answer.status}: {answer.error}")
            figures.errors.append(f"memory batch: answer {answer.status}")

        if args.grow > stored:
            stored += grow(server, key, plan, args, stored, figures)
            figures.grown_size = stored
            grown_batches = [plan.batch(i) for i in range(args.batches)]
            grown = push(
                server,
                key,
                grown_batches,
                clients=args.clients,
                profile=args.profile,
                label="grown",
            )
            figures.grown = grown
            label = f"timed push at {stored:,} records"
            _report_run(label, grown, _planned(grown_batches), figures.errors)
            share = grown.rate / run.rate if run.rate else math.nan
            print(f"  rate at {stored:,} records: {share:.0%} of the empty store")


def grow(
    server: Server, key: str, plan: Plan, args: argparse.Namespace, stored: int, figures: Figures
) -> int:
    """Push new records until `args.grow` are stored or time is up: the number stored."""
    jobs = [plan.mixed(i) for i in range(math.ceil((args.grow - stored) / BATCH))]
    print(f"  growing the store from {stored:,} to {args.grow:,} records ({len(jobs)} batches)")
    total = 0
    mark = 100_000
    began = time.monotonic()

    def progress(answer: Answer) -> None:
        nonlocal total, mark
        total += (answer.counts or {}).get("created", 0)
        while stored + total >= mark:
            elapsed = time.monotonic() - began
            print(f"    {stored + total:,} records stored ({elapsed:.0f} s)", flush=True)
            mark += 100_000

    deadline = began + args.grow_minutes * 60
    run = push(server, key, jobs, clients=args.clients, deadline=deadline, progress=progress)
    print(f"    filled {run.records:,} records in {run.wall:.0f} s ({run.rate:,.0f} records/s)")
    if run.records < sum(j.size for j in jobs):
        print(f"    stopped after {args.grow_minutes} minutes")
    for answer in run.failures()[:5]:
        print(f"    ERROR answer {answer.status}: {answer.error}")
    if run.failures():
        figures.errors.append(f"growth fill: {len(run.failures())} failed answer(s)")
    return total


# --- the summary -----------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def summarize(results: list[Figures], machine_rates: tuple[float, float]) -> None:
    print("\n=== summary")
    print(_machine.describe(*machine_rates))
    header = (
        f"{'db':<9}{'HTTP rec/s':>11}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'check/s':>10}"
        f"{'store/s':>10}{'HTTP/ceil':>10}{'RSS MB before->peak':>22}{'grown':>16}"
    )
    print(header)
    for f in results:
        if f.run is None:
            print(f"{f.database:<9} failed: {'; '.join(f.errors)}")
            continue
        run, ceiling, memory = f.run, f.ceiling, f.memory
        check = f"{ceiling.check_rate:,.0f}" if ceiling else "-"
        stored = f"{ceiling.store_rate:,.0f}" if ceiling else "-"
        share = f"{run.rate / ceiling.least:.2f}" if ceiling else "-"
        rss = "-"
        if memory:
            before = max(memory.before.values()) / 1024
            rss = f"{before:.0f}->{before + memory.increase_mb:.0f} (+{memory.increase_mb:.0f})"
        grown = "-"
        if f.grown:
            kept = f.grown.rate / run.rate if run.rate else math.nan
            grown = f"{kept:.0%} at {f.grown_size / 1000:,.0f}k"
        print(
            f"{f.database:<9}{run.rate:>11,.0f}{run.latency_ms(50):>8.0f}{run.latency_ms(95):>8.0f}"
            f"{run.latency_ms(99):>8.0f}{check:>10}{stored:>10}{share:>10}{rss:>22}{grown:>16}"
        )
    print(
        f"targets: HTTP >= {TARGET_RATE['sqlite']:,} rec/s on SQLite, "
        f">= {TARGET_RATE['postgres']:,} on PostgreSQL; HTTP >= {TARGET_CEILING_SHARE} x "
        f"min(ceiling); p99 <= {TARGET_P99_MS} ms; memory +<= {TARGET_MEMORY_MB} MB; "
        f"growth >= {TARGET_GROWTH:.0%}"
    )
    for f in results:
        if f.run is None:
            continue
        verdicts = [f"rate {_verdict(f.run.rate >= TARGET_RATE[f.database])}"]
        if f.ceiling:
            share = f.run.rate / f.ceiling.least
            verdicts.append(f"ceiling share {_verdict(share >= TARGET_CEILING_SHARE)}")
        verdicts.append(f"p99 {_verdict(f.run.latency_ms(99) <= TARGET_P99_MS)}")
        if f.memory:
            verdicts.append(f"memory {_verdict(f.memory.increase_mb <= TARGET_MEMORY_MB)}")
        if f.grown:
            growth = f.grown.rate / f.run.rate if f.run.rate else 0.0
            verdicts.append(f"growth {_verdict(growth >= TARGET_GROWTH)}")
        print(f"  {f.database}: " + ", ".join(verdicts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--batches", type=int, default=60, help="timed batches of 1,000")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=2, help="server workers")
    parser.add_argument("--grow", type=int, default=0, help="then fill the store to N records")
    parser.add_argument("--grow-minutes", type=float, default=10, help="time limit of the fill")
    parser.add_argument("--memory-records", type=int, default=14_600, help="~20 MB batch")
    parser.add_argument(
        "--analyze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ANALYZE PostgreSQL after the warm-up",
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of each worker here")
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL",
    )
    args = parser.parse_args()
    _server.SPY_GIL = args.profile_gil
    databases = [d.strip() for d in args.db.split(",") if d.strip()]
    machine_rate = _machine.validate_rate()
    print(_machine.describe(machine_rate))
    results = []
    for database in databases:
        figures = Figures(database)
        results.append(figures)
        try:
            run_database(database, args, figures)
        except BenchError as exc:
            print(f"  ERROR: {exc}")
            figures.errors.append(str(exc))
        except Exception as exc:  # report it and go on with the next database
            print("  ERROR: " + "".join(traceback.format_exception(exc)[-12:]))
            figures.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    summarize(results, (machine_rate, _machine.validate_rate()))
    errors = [f"{f.database}: {e}" for f in results for e in f.errors]
    for error in errors:
        print(f"error: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
