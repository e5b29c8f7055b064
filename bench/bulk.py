"""File submissions end to end: upload, job, report, against the real service.

    .venv/bin/python bench/bulk.py                       # the full run: ~1 GB NDJSON (700,000
                                                         # records), 100,000-row CSV and XLSX
    .venv/bin/python bench/bulk.py --ndjson-rows 50000 --table-rows 10000 --batch-rows 20000
    .venv/bin/python bench/bulk.py --db sqlite

For each database (a fresh SQLite file under /tmp/credit_hub_bench, or the PostgreSQL database
credit_hub_bench on 127.0.0.1): `credit-hub serve` (one process, its in-process job worker), an
operator and a department. The files are generated before the clock starts (under
/tmp/credit_hub_bench/bulk, reused when their size matches): NDJSON of penalties (~1.4 KB each),
a GB18030 CSV with Chinese headers and an XLSX with national-code headers, every row a new
record. Each file is uploaded with credit_hub.client and followed to its end.

Printed per file: upload time, processing time and rows/s (the job's own timing), and the
server's peak resident memory (VmHWM, reset before each upload). Then `--batch-rows` fresh
records pushed through `POST /v1/records` in batches of 1,000 on one connection, the same
records/s measured, and NDJSON's rate as a share of it (target: >= 80%). Target for memory:
at most 256 MB peak for the 1 GB file, whatever its size.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _server
from bench.data import DEPARTMENT_USCC, penalty
from credit_hub.client import CreditHub
from credit_hub.config import Settings
from credit_hub.standards.registry import Standards

STANDARD = "administrative_penalty"
FILES = _server.WORK / "bulk2"


@dataclass
class Figure:
    database: str
    label: str
    rows: int
    size_mb: float
    upload_s: float
    processing_s: float
    rate: float
    peak_mb: float
    status: str


def _records(start: int, count: int) -> Any:
    rng = random.Random(start)
    for n in range(start, start + count):
        yield penalty(n, subject=n, rng=rng)  # every row a new record of a new subject


def _cell(value: Any) -> str:
    return ";".join(value) if isinstance(value, list) else str(value)


def make_files(ndjson_rows: int, table_rows: int) -> dict[str, tuple[Path, int]]:
    """(path, rows) per format; reused when already made with the same number of rows."""
    FILES.mkdir(parents=True, exist_ok=True)
    props = Standards.load(Settings().schemas_dir).get(STANDARD).current.engine.properties
    names = list(props)
    made: dict[str, tuple[Path, int]] = {}

    ndjson = FILES / f"penalties-{ndjson_rows}.ndjson"
    if not ndjson.exists():
        with ndjson.open("wb") as out:
            for record in _records(1, ndjson_rows):
                out.write(orjson.dumps(record) + b"\n")
    made["ndjson"] = (ndjson, ndjson_rows)

    gb = FILES / f"penalties-{table_rows}-gb18030.csv"
    if not gb.exists():
        with gb.open("w", encoding="gb18030", newline="") as out:
            writer = csv.writer(out)
            writer.writerow([props[n]["title"] for n in names])
            for record in _records(10_000_000, table_rows):
                writer.writerow([_cell(record.get(n, "")) for n in names])
    made["csv-gb18030"] = (gb, table_rows)

    xlsx = FILES / f"penalties-{table_rows}.xlsx"
    if not xlsx.exists():
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet("处罚")
        sheet.append([props[n].get("x-code", n) for n in names])
        for record in _records(20_000_000, table_rows):
            sheet.append([_cell(record[n]) if n in record else None for n in names])
        book.save(xlsx)
    made["xlsx"] = (xlsx, table_rows)
    return made


def upload(server: _server.Server, key: str, label: str, path: Path, rows: int) -> Figure:
    pid = server.process.pid
    _server.reset_peak(pid)
    with CreditHub(server.base_url, key, timeout=600) as hub:
        started = time.perf_counter()
        accepted = hub.upload_file(path, standard=STANDARD)
        uploaded = time.perf_counter() - started
        done = hub.wait_for_submission(accepted.submission_id, poll_seconds=0.5)
    processing = done.timings.processing_seconds or 0.0
    if done.progress.rejected or done.progress.created != rows:
        print(f"  ! {label}: {done.status}, {done.error_summary[:3]} {done.file_error}")
    return Figure(
        server.database,
        label,
        rows,
        path.stat().st_size / 1e6,
        uploaded,
        processing,
        done.progress.rows_read / processing if processing else 0.0,
        _server.status_kb(pid, "VmHWM") / 1024,
        str(done.status),
    )


def push_batches(server: _server.Server, key: str, rows: int) -> float:
    """records/s of POST /v1/records, 1,000 fresh records per batch, one connection."""
    bodies = [
        orjson.dumps({"standard": STANDARD, "records": list(_records(30_000_000 + s, 1000))})
        for s in range(0, rows, 1000)
    ]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.base_url, timeout=300) as client:
        started = time.perf_counter()
        for body in bodies:
            answer = client.post("/v1/records", content=body, headers=headers)
            if answer.status_code != 201:
                raise _server.BenchError(f"batch push: {answer.status_code} {answer.text[:300]}")
        return len(bodies) * 1000 / (time.perf_counter() - started)


def register(server: _server.Server) -> str:
    operator = _server.bootstrap(server)
    answer = httpx.post(
        server.base_url + "/v1/admin/clients",
        json={
            "kind": "department",
            "name": "福州市市场监督管理局",
            "uscc": DEPARTMENT_USCC,
            "standards": [STANDARD],
        },
        headers={"Authorization": f"Bearer {operator}"},
        timeout=30,
    )
    if answer.status_code != 201:
        raise _server.BenchError(f"registering: {answer.status_code} {answer.text}")
    key: str = answer.json()["api_key"]
    return key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--ndjson-rows", type=int, default=700_000)
    parser.add_argument("--table-rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    args = parser.parse_args()
    print(f"generating files under {FILES} ...")
    files = make_files(args.ndjson_rows, args.table_rows)
    figures: list[Figure] = []
    batch_rates: dict[str, float] = {}
    for database in args.db.split(","):
        url = _server.fresh_database(database)
        secrets = _server.secrets_env() if database == "postgres" else {}
        spool = _server.WORK / f"spool-{database}"
        extra = {
            "CREDIT_HUB_SPOOL_DIR": str(spool),
            "CREDIT_HUB_SECRETS_FILE": str(_server.WORK / f"secrets-{database}.json"),
            "CREDIT_HUB_WORKER_POLL_SECONDS": "0.2",
            "CREDIT_HUB_MAINTENANCE_EVERY_HOURS": "0",
        }
        with _server.running(database, url, secrets, workers=1, extra=extra) as server:
            key = register(server)
            for label, (path, rows) in files.items():
                figure = upload(server, key, label, path, rows)
                figures.append(figure)
                print(
                    f"{database:8} {label:12} {rows:>9,} rows {figure.size_mb:>8.1f} MB  "
                    f"upload {figure.upload_s:6.1f} s  processing {figure.processing_s:7.1f} s  "
                    f"{figure.rate:>7,.0f} rows/s  peak {figure.peak_mb:6.0f} MB  {figure.status}"
                )
            batch_rates[database] = push_batches(server, key, args.batch_rows)
            print(
                f"{database:8} POST /v1/records {args.batch_rows:,} records: "
                f"{batch_rates[database]:,.0f} records/s"
            )
    print("\nsummary")
    for database, batch in batch_rates.items():
        ndjson = next(f for f in figures if f.database == database and f.label == "ndjson")
        peak = max(f.peak_mb for f in figures if f.database == database)
        share = ndjson.rate / batch if batch else 0
        print(
            f"  {database}: NDJSON {ndjson.rate:,.0f} rows/s = {share:.0%} of the batch endpoint "
            f"({batch:,.0f}/s; target >= 80%); peak server memory {peak:.0f} MB (target <= 256)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
