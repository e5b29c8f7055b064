"""The change feed's lag and the webhook delivery rate while ingestion runs at full speed.

    .venv/bin/python bench/changes.py [--db sqlite|postgres] [--batches 40] [--size 500]
        [--deliverers 1] [--workers 1]

A fresh database, `credit-hub serve` on 127.0.0.1 (its in-process webhook thread off), one
department, one agency with a webhook subscription to a fast local receiver (a raw asyncio HTTP
server in its own process answering 204), and `--deliverers` processes of `credit-hub webhooks
deliver`. A pushing process sends `--batches` batches of `--size` new penalties back to back,
noting when each request left and when its answer (after the commit) came back; a reader in
this process polls GET /v1/changes?after=...&limit=1000 and notes when each change first
appears. Lag of a change = first seen - answer received (a lower bound of commit-to-visible;
the answer leaves right after the commit) and first seen - request sent (an upper bound).
Printed: lag p50/p99/max, webhook deliveries/s while pushing and overall, and the totals.

Exits 1 when the set-up fails or a change or a delivery is missing, never on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import data
from bench._server import (
    BIN,
    PG_ADMIN,
    ROOT,
    BenchError,
    analyze,
    bootstrap,
    free_port,
    running,
    secrets_env,
)

PENALTY = "administrative_penalty"
WORK = Path("/tmp/credit_hub_bench_changes")  # not bench/_server's folder: benches run at once
PG_DATABASE = "credit_hub_bench_changes"


def fresh_database(kind: str) -> str:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    if kind == "sqlite":
        return f"sqlite:///{WORK / 'bench.db'}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {PG_DATABASE}")
    return f"postgresql://postgres@127.0.0.1:5432/{PG_DATABASE}"


# -- a fast receiver --------------------------------------------------------------------------


class _Hook(asyncio.Protocol):
    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, chunk: bytes) -> None:
        self.buffer += chunk
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            with self.counter.get_lock():
                self.counter.value += 1
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


def _receive(port: int, counter: Any) -> None:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: _Hook(counter), "127.0.0.1", port, backlog=1024)
    )
    loop.run_until_complete(server.serve_forever())


# -- the pusher -------------------------------------------------------------------------------


def _push(base_url: str, key: str, batches: int, size: int, first: int, results: Any) -> None:
    bodies = [
        {"standard": PENALTY, "records": data.penalty_batch(size, start=b * size, seed=b)}
        for b in range(first, first + batches)
    ]
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for body in bodies:
            sent = time.time()
            answer = client.post(
                "/v1/records", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            acked = time.time()
            if answer.status_code != 201:
                results.put(("error", f"{answer.status_code} {answer.text[:300]}"))
                return
            ids = [o["record_id"] for o in answer.json()["records"] if o["outcome"] != "unchanged"]
            results.put(("batch", ids, sent, acked))
    results.put(("done",))


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--deliverers", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    hook_port = free_port()
    receiver = context.Process(target=_receive, args=(hook_port, counter), daemon=True)
    receiver.start()
    url = fresh_database(args.db)
    secrets = secrets_env()
    extra = {
        "CREDIT_HUB_WEBHOOKS_WORKER": "false",
        "CREDIT_HUB_WEBHOOKS_ALLOW_LOOPBACK": "true",
        "CREDIT_HUB_WEBHOOKS_POLL_SECONDS": "0.05",
        "CREDIT_HUB_WEBHOOKS_CONCURRENCY": str(args.concurrency),
    }
    deliverers: list[subprocess.Popen[bytes]] = []
    try:
        with running(
            f"changes-{args.db}", url, secrets, workers=args.workers, extra=extra
        ) as server:
            operator = bootstrap(server)
            admin = {"Authorization": f"Bearer {operator}"}
            clients = {}
            for kind, name in (("department", "福州市市场监督管理局"), ("agency", "银行")):
                body: dict[str, Any] = {"kind": kind, "name": name, "standards": [PENALTY]}
                if kind == "department":
                    body["uscc"] = data.DEPARTMENT_USCC
                answer = httpx.post(
                    server.base_url + "/v1/admin/clients", json=body, headers=admin, timeout=30
                )
                if answer.status_code != 201:
                    raise BenchError(f"registering a {kind}: {answer.status_code} {answer.text}")
                clients[kind] = answer.json()["api_key"]
            agency = {"Authorization": f"Bearer {clients['agency']}"}
            answer = httpx.post(
                server.base_url + "/v1/subscriptions",
                json={"url": f"http://127.0.0.1:{hook_port}/hook"},
                headers=agency,
                timeout=30,
            )
            if answer.status_code != 201:
                raise BenchError(f"subscribing: {answer.status_code} {answer.text}")
            log = (WORK / "deliverer.log").open("wb")

            def start_deliverers() -> None:
                for _ in range(args.deliverers):
                    deliverers.append(
                        subprocess.Popen(
                            [str(BIN / "credit-hub"), "webhooks", "deliver"],
                            cwd=ROOT,
                            env=server.env,
                            stdout=log,
                            stderr=log,
                        )
                    )

            start_deliverers()
            results = context.Queue()
            pusher = context.Process(
                target=_push,
                args=(server.base_url, clients["department"], args.batches, args.size, 0, results),
            )
            seen: dict[str, float] = {}
            stop = threading.Event()

            def read() -> None:
                cursor = None
                with httpx.Client(base_url=server.base_url, timeout=60) as client:
                    while not stop.is_set():
                        params: dict[str, Any] = {"limit": 1000}
                        if cursor:
                            params["after"] = cursor
                        page = client.get("/v1/changes", params=params, headers=agency).json()
                        moment = time.time()
                        for change in page["changes"]:
                            seen.setdefault(change["record"]["id"], moment)
                        cursor = page["next_cursor"]
                        if not page["has_more"]:
                            stop.wait(0.02)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            started = time.time()
            pusher.start()
            pushed: list[tuple[list[str], float, float]] = []
            while True:
                message = results.get(timeout=600)
                if message[0] == "error":
                    raise BenchError(f"a push failed: {message[1]}")
                if message[0] == "done":
                    break
                pushed.append((message[1], message[2], message[3]))
            pushing_done = time.time()
            delivered_while_pushing = counter.value
            pusher.join(timeout=30)
            expected = sum(len(ids) for ids, _, _ in pushed)
            deadline = time.time() + 120
            last_count, last_change = counter.value, time.time()
            while time.time() < deadline and (len(seen) < expected or counter.value < expected):
                time.sleep(0.01)
                if counter.value != last_count:
                    last_count, last_change = counter.value, time.time()
            all_delivered = last_change
            total = counter.value
            stop.set()
            reader.join(timeout=30)
            # Delivery capacity: a backlog pushed while no deliverer runs, then drained.
            for process in deliverers:
                process.terminate()
                process.wait(timeout=20)
            deliverers.clear()
            before = counter.value
            backlog_pusher = context.Process(
                target=_push,
                args=(
                    server.base_url,
                    clients["department"],
                    args.batches,
                    args.size,
                    args.batches,
                    results,
                ),
            )
            backlog_pusher.start()
            backlog = 0
            while (message := results.get(timeout=600))[0] == "batch":
                backlog += len(message[1])
            if message[0] == "error":
                raise BenchError(f"a push failed: {message[1]}")
            backlog_pusher.join(timeout=30)
            if args.db == "postgres":
                analyze(url)  # as autovacuum would by now: fresh tables get poor plans
            start_deliverers()
            deadline = time.time() + 300
            while counter.value == before and time.time() < deadline:
                time.sleep(0.001)
            drain_first = time.time()
            while counter.value < before + backlog and time.time() < deadline:
                time.sleep(0.005)
            drain_seconds = time.time() - drain_first
            drained = counter.value - before
    finally:
        for process in deliverers:
            process.terminate()
        for process in deliverers:
            process.wait(timeout=20)
        receiver.kill()

    lag_low = [seen[r] - acked for ids, _, acked in pushed for r in ids if r in seen]
    lag_high = [seen[r] - sent for ids, sent, _ in pushed for r in ids if r in seen]
    push_seconds = pushing_done - started
    print(
        f"database: {args.db}; {len(pushed)} batches of {args.size}; server workers "
        f"{args.workers}; deliverer processes {args.deliverers}"
    )
    print(
        f"ingestion: {expected} changes in {push_seconds:.1f} s = "
        f"{expected / push_seconds:,.0f} records/s"
    )
    print(f"feed: {len(seen)}/{expected} changes seen")
    for label, lags in (("after the answer", lag_low), ("after the request", lag_high)):
        if lags:
            print(
                f"feed lag {label}: p50 {_percentile(lags, 50) * 1000:.0f} ms, "
                f"p99 {_percentile(lags, 99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
            )
    print(
        f"webhooks: {total}/{expected} delivered; while pushing "
        f"{delivered_while_pushing / push_seconds:,.0f}/s; overall "
        f"{total / max(all_delivered - started, 1e-9):,.0f}/s "
        f"(last delivery {all_delivered - pushing_done:.1f} s after the last push)"
    )
    rate = drained / max(drain_seconds, 1e-9)
    print(
        f"webhook capacity: a backlog of {backlog} drained in {drain_seconds:.2f} s = "
        f"{rate:,.0f} deliveries/s ({drained} delivered)"
    )
    lag_met = bool(lag_low) and _percentile(lag_low, 99) < 1.0
    print(
        f"targets: feed p99 lag < 1 s: {'met' if lag_met else 'MISSED'}; "
        f">= 2,000 deliveries/s: {'met' if rate >= 2000 else 'MISSED'}"
    )
    ok = len(seen) == expected and total >= expected and drained >= backlog
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
