"""Soak: mixed pushes, uploads and reads against the real service for a long while.

    .venv/bin/python bench/soak.py [--minutes 10] [--db sqlite] [--workers 2] [--clients 6]
        [--interval 30] [--warmup-minutes 1] [--probe DIR]

A fresh database (`bench/_server.py`: a SQLite file under /tmp/credit_hub_bench, or the
PostgreSQL database credit_hub_bench on 127.0.0.1), `credit-hub serve --workers N` on a free
port, an operator, a department and an agency. Then `--clients` threads, each on its own
keep-alive connection, loop over a weighted mix until the time is up:

    45%  push a batch of 50 penalties (partial; one in five corrects records pushed before)
    25%  read a profile of a subject pushed before (purpose and case_ref, audited)
    15%  search subjects by a name fragment
    10%  read the department's submissions list
     5%  upload an NDJSON file of 500 rows (the job runs in the server's worker thread)

Every `--interval` seconds one line: requests/s by kind, errors so far, latency p50/p99, and
the resident memory (VmRSS) of each server worker process. At the end: the totals, every
distinct error (status and problem type), uploads finished, and memory growth measured from the
end of `--warmup-minutes` to the end (on PostgreSQL, ANALYZE runs then, as autovacuum would).
Targets: zero errors, growth under 10 %.
`--probe DIR`: every worker also writes its memory breakdown (smaps, SQLite's allocator, glibc's
heap, Python objects and caches) to DIR/<pid>.jsonl every 15 s; see bench/_memprobe.
Exits 1 when any request failed (a 5xx, an unexpected 4xx, a connection error) or an upload
did not finish.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _server
from bench.data import DEPARTMENT_USCC, penalty, uscc

STANDARD = "administrative_penalty"
BATCH = 50
FILE_ROWS = 500
MIX = [("push", 45), ("profile", 25), ("search", 15), ("list", 10), ("upload", 5)]
OK = {"push": {201}, "profile": {200}, "search": {200}, "list": {200}, "upload": {202}}


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.uploads: list[str] = []
        self.pushed: list[int] = []  # record numbers stored: read and corrected later
        self.subjects: list[str] = []  # their subjects' USCCs: profiles read

    def add(self, kind: str, seconds: float, error: str | None = None) -> None:
        with self.lock:
            self.count[kind] += 1
            self.latencies.append(seconds)
            if error:
                self.errors[f"{kind}: {error}"] += 1

    def take(self) -> tuple[Counter[str], list[float]]:
        with self.lock:
            count, latencies = self.count, self.latencies
            self.count, self.latencies = Counter(), []
        return count, latencies


def register(server: _server.Server) -> tuple[str, str]:
    operator = {"Authorization": f"Bearer {_server.bootstrap(server)}"}
    keys = []
    for body in (
        {"kind": "department", "name": "福州市市场监督管理局", "uscc": DEPARTMENT_USCC},
        {"kind": "agency", "name": "福州市公共资源交易中心"},
    ):
        answer = httpx.post(
            server.base_url + "/v1/admin/clients",
            json=body | {"standards": [STANDARD]},
            headers=operator,
            timeout=30,
        )
        if answer.status_code != 201:
            raise _server.BenchError(f"registering: {answer.status_code} {answer.text}")
        keys.append(answer.json()["api_key"])
    return keys[0], keys[1]


def client_loop(
    base_url: str,
    department: str,
    agency: str,
    worker: int,
    numbers: Any,
    stats: Stats,
    until: float,
) -> None:
    rng = random.Random(worker)
    kinds = [k for k, w in MIX for _ in range(w)]
    dept = {"Authorization": f"Bearer {department}"}
    reader = {"Authorization": f"Bearer {agency}"}
    with httpx.Client(base_url=base_url, timeout=120) as client:
        while time.monotonic() < until:
            kind = rng.choice(kinds)
            with stats.lock:
                known = stats.pushed[-5000:]
                subjects = stats.subjects[-5000:]
            if kind in ("profile", "search") and not known:
                kind = "push"
            started = time.perf_counter()
            try:
                if kind == "push":
                    fresh = [next(numbers) for _ in range(BATCH)]
                    old = rng.sample(known, min(len(known), BATCH // 5)) if known else []
                    corrections = [
                        penalty(n, subject=n, rng=rng, revision=rng.randint(1, 9)) for n in old
                    ]
                    new = [penalty(n, subject=n, rng=rng) for n in fresh]
                    records = corrections + new
                    answer = client.post(
                        "/v1/records",
                        content=orjson.dumps({"standard": STANDARD, "records": records}),
                        headers=dept | {"content-type": "application/json"},
                    )
                    if answer.status_code == 201:
                        with stats.lock:
                            stats.pushed.extend(fresh)
                            stats.subjects.extend(r["counterpart_uscc"] for r in new)
                elif kind == "profile":
                    answer = client.get(
                        f"/v1/subjects/{rng.choice(subjects)}/profile",
                        params={"purpose": "procurement", "case_ref": f"SOAK-{worker}"},
                        headers=reader,
                    )
                elif kind == "search":
                    answer = client.get(
                        "/v1/subjects", params={"q": f"示例第{rng.choice(known)}号"}, headers=reader
                    )
                elif kind == "list":
                    answer = client.get("/v1/submissions", params={"limit": 20}, headers=dept)
                else:
                    rows = [penalty(next(numbers), subject=0, rng=rng) for _ in range(FILE_ROWS)]
                    for row in rows:
                        row["counterpart_uscc"] = uscc(10_000_000 + rng.randrange(10**6))
                    answer = client.post(
                        "/v1/submissions",
                        params={"standard": STANDARD},
                        content=b"".join(orjson.dumps(r) + b"\n" for r in rows),
                        headers=dept | {"content-type": "application/x-ndjson"},
                    )
                    if answer.status_code == 202:
                        with stats.lock:
                            stats.uploads.append(answer.json()["submission_id"])
                error = None
                if answer.status_code not in OK[kind]:
                    problem = answer.json().get("type", "") if answer.content else ""
                    error = f"{answer.status_code} {problem} {answer.text[:200]}"
                elif kind == "push" and answer.json()["counts"]["rejected"]:
                    error = f"rejected records: {answer.json()['errors'][:2]}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            stats.add(kind, time.perf_counter() - started, error)


def rss_mb(server: _server.Server) -> list[float]:
    return [_server.status_kb(pid, "VmRSS") / 1024 for pid in server.workers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--interval", type=float, default=30)
    parser.add_argument("--warmup-minutes", type=float, default=1)
    parser.add_argument(
        "--probe",
        type=Path,
        default=None,
        help="write per-worker memory samples into this folder (bench/_memprobe)",
    )
    args = parser.parse_args()

    if args.db == "sqlite":  # its own file: another benchmark's fresh database is not ours
        folder = _server.WORK / "soak-sqlite"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        url = f"sqlite:///{folder / 'bench.db'}"
    else:
        url = _server.fresh_database(args.db)
    secrets = _server.secrets_env() if args.db == "postgres" else {}
    extra = {
        "CREDIT_HUB_MAINTENANCE_EVERY_HOURS": "0",
        "CREDIT_HUB_SPOOL_DIR": str(_server.WORK / "soak-spool"),
        "CREDIT_HUB_SECRETS_FILE": str(_server.WORK / "soak-secrets.json"),
    }
    if args.probe is not None:
        extra |= {
            "PYTHONPATH": os.pathsep.join(
                p
                for p in (
                    str(Path(__file__).resolve().parent / "_memprobe"),
                    os.environ.get("PYTHONPATH", ""),
                )
                if p
            ),
            "CREDIT_HUB_BENCH_PROBE": str(args.probe.resolve()),
        }
    with _server.running(args.db, url, secrets, workers=args.workers, extra=extra) as server:
        department, agency = register(server)
        stats = Stats()
        numbers = itertools.count(1)  # shared: next() on a count is atomic under the GIL
        started = time.monotonic()
        until = started + args.minutes * 60
        threads = [
            threading.Thread(
                target=client_loop,
                args=(server.base_url, department, agency, n, numbers, stats, until),
                daemon=True,
            )
            for n in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        print(
            f"soak: {args.db}, {args.workers} workers (pids {server.workers}), "
            f"{args.clients} clients, {args.minutes:g} min; start RSS MB {rss_mb(server)}"
        )
        timeline: list[tuple[float, float, list[float]]] = []
        totals: Counter[str] = Counter()
        last = started
        analyzed = args.db != "postgres"
        while time.monotonic() < until:
            time.sleep(min(args.interval, max(0.1, until - time.monotonic())))
            if not analyzed and time.monotonic() - started >= args.warmup_minutes * 60:
                # As autovacuum would (it is off on this machine's cluster): without statistics
                # the planner scans a department's records on every push as the tables grow.
                _server.analyze(url)
                analyzed = True
            count, latencies = stats.take()
            totals += count
            now = time.monotonic()
            at, span, last = now - started, max(now - last, 1e-3), now
            rate = sum(count.values()) / span
            memory = rss_mb(server)
            timeline.append((at, rate, memory))
            quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0] * 99
            kinds = " ".join(f"{k}={count[k] / span:.1f}" for k, _ in MIX)
            print(
                f"{at:7.0f}s  {rate:6.1f} req/s ({kinds})  errors {sum(stats.errors.values())}  "
                f"p50 {quantiles[49] * 1000:.0f} ms p99 {quantiles[98] * 1000:.0f} ms  "
                f"RSS MB {[round(m, 1) for m in memory]}",
                flush=True,
            )
        for thread in threads:
            thread.join()
        totals += stats.take()[0]  # the requests still in flight at the end
        # The uploads drain: every job must end.
        dept = {"Authorization": f"Bearer {department}"}
        unfinished: list[str] = []
        deadline = time.monotonic() + 300
        statuses: Counter[str] = Counter()
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            for submission_id in stats.uploads:
                while True:
                    status = client.get(f"/v1/submissions/{submission_id}", headers=dept).json()[
                        "status"
                    ]
                    if status not in ("queued", "running") or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                statuses[status] += 1
                if status != "accepted":
                    unfinished.append(f"{submission_id}: {status}")

    elapsed = time.monotonic() - started
    warm = [m for at, _, m in timeline if at >= args.warmup_minutes * 60]
    growth: list[float] = []
    if len(warm) >= 2:
        growth = [(end - begin) / begin * 100 for begin, end in zip(warm[0], warm[-1], strict=True)]
    peak = [max(m[i] for _, _, m in timeline) for i in range(len(timeline[0][2]))]
    # A plateau or a leak: the growth over the second half of the time after warm-up alone.
    late = warm[len(warm) // 2 :]
    late_growth = (
        [(end - begin) / begin * 100 for begin, end in zip(late[0], late[-1], strict=True)]
        if len(late) >= 2
        else []
    )
    errors = sum(stats.errors.values())
    by_kind = defaultdict(int, totals)
    print(
        f"\ntotal {sum(totals.values())} requests in {elapsed:.0f} s "
        f"({sum(totals.values()) / elapsed:.1f}/s): "
        + ", ".join(f"{k} {by_kind[k]}" for k, _ in MIX)
    )
    print(f"records pushed (new) {len(stats.pushed)}; uploads {dict(statuses)}")
    print(f"errors {errors}" + "".join(f"\n  {n} x {e}" for e, n in stats.errors.most_common(20)))
    if unfinished:
        print("uploads not accepted:\n  " + "\n  ".join(unfinished[:20]))
    begin, end = ([round(m, 1) for m in warm[i]] if warm else "-" for i in (0, -1))
    print(
        f"memory (RSS MB) after warm-up {begin}, end {end}, peak {[round(m, 1) for m in peak]}; "
        f"growth after warm-up {[f'{g:+.1f} %' for g in growth]} (target < 10 %), "
        f"over its second half {[f'{g:+.1f} %' for g in late_growth]}"
    )
    return 1 if errors or unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
