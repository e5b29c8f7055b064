"""POST /v1/submissions end to end: each format, bad files, the jobs, the report, the error file.

Jobs run here in the test's transaction: the test drives a Worker bound to the test session.
Crashes of real worker processes are in test_jobs_live.py.
"""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from credit_hub.app import create_app
from credit_hub.clock import FixedClock
from credit_hub.config import Settings
from credit_hub.db import get_db
from credit_hub.ingest.jobs import JobContext, Worker, claim, process
from credit_hub.ingest.models import Submission, SubmissionError
from credit_hub.records.models import Record, RecordVersion
from tests import conftest, factories
from tests.conftest import Caller

URL = "/v1/submissions"
STANDARD = "administrative_penalty"
PROBLEM = "https://credit-hub.example/problems/"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 5, 6, 9, 0, tzinfo=UTC))


@pytest.fixture
def hub_app(settings: Settings, session: Session, tmp_path: Path, clock: FixedClock) -> FastAPI:
    app = create_app(
        settings.model_copy(update={"spool_dir": tmp_path / "spool", "job_chunk_rows": 3}),
        clock=clock,
    )
    app.dependency_overrides[get_db] = lambda: conftest.TestDatabase(session)
    return app


@pytest.fixture
def hub(hub_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(hub_app, raise_server_exceptions=False) as client:
        yield client


def worker(app: FastAPI, session: Session) -> Worker:
    state = app.state
    context = JobContext.of(state.settings, state.standards, state.keyring, state.clock)
    return Worker(conftest.TestDatabase(session), context, name="test")


def run_jobs(app: FastAPI, session: Session) -> int:
    return worker(app, session).run_until_idle()


def headers_of(app: FastAPI, style: str) -> dict[str, str]:
    props = app.state.standards.get(STANDARD).current.engine.properties
    if style == "chinese":
        return {name: p["title"] for name, p in props.items()}
    if style == "codes":
        return {name: p.get("x-code", name) for name, p in props.items()}
    return {name: name for name in props}


def cell(value: Any) -> str:
    return ";".join(value) if isinstance(value, list) else str(value)


def table(app: FastAPI, records: list[dict[str, Any]], style: str = "snake") -> list[list[str]]:
    names = list(dict.fromkeys(k for r in records for k in r))
    titles = headers_of(app, style)
    return [[titles[n] for n in names]] + [[cell(r.get(n, "")) for n in names] for r in records]


def csv_bytes(rows: list[list[str]], encoding: str = "utf-8", newline: str = "\r\n") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows(rows)
    return buffer.getvalue().encode(encoding)


def ndjson_bytes(records: list[Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def xlsx_bytes(sheets: dict[str, list[list[Any]]], merge: str | None = None) -> bytes:
    book = openpyxl.Workbook()
    first = True
    for title, rows in sheets.items():
        sheet = book.active if first else book.create_sheet()
        assert sheet is not None
        first = False
        sheet.title = title
        for row in rows:
            sheet.append(row)
        if merge:
            sheet.merge_cells(merge)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def upload(
    hub: TestClient,
    caller: Caller,
    content: bytes,
    *,
    media_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
    **params: str,
) -> Any:
    return hub.post(
        URL,
        content=content,
        params={"standard": STANDARD} | params,
        headers=caller.headers | {"Content-Type": media_type} | (headers or {}),
    )


def count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def status_of(hub: TestClient, caller: Caller, submission_id: str) -> dict[str, Any]:
    response = hub.get(f"{URL}/{submission_id}", headers=caller.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# -- each format ----------------------------------------------------------------------------


def test_ndjson_upload_is_queued_then_processed_in_chunks(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    records = [factories.penalty(n) for n in range(1, 8)]
    response = upload(hub, department, ndjson_bytes(records), media_type="application/x-ndjson")
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == accepted["status_url"]
    assert accepted["status"] == "queued"
    assert accepted["format"] == "ndjson"
    assert status_of(hub, department, accepted["submission_id"])["status"] == "queued"
    assert count(session, Record) == 0

    assert run_jobs(hub_app, session) == 1
    done = status_of(hub, department, accepted["submission_id"])
    assert done["status"] == "accepted"
    assert done["progress"] | {"rows_per_second": None} == {
        "rows_read": 7,
        "accepted": 7,
        "rejected": 0,
        "created": 7,
        "updated": 0,
        "unchanged": 0,
        "bytes_read": len(ndjson_bytes(records)),
        "fraction": 1.0,
        "rows_per_second": None,
        "eta_seconds": None,
    }
    assert done["counts"]["created"] == 7
    assert done["timings"]["finished_at"] is not None
    assert done["receipt"]["key_id"]
    assert count(session, Record) == count(session, RecordVersion) == 7
    # The records carry the file's submission id; the spool file is gone.
    stored = session.get(Submission, uuid.UUID(done["submission_id"]))
    assert stored is not None
    assert stored.file_path is None
    versions = session.scalars(select(RecordVersion.submission_id)).all()
    assert {str(v) for v in versions} == {done["submission_id"]}


def test_gb18030_csv_with_chinese_headers_as_a_multipart_form(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    records = [factories.penalty(n) for n in range(1, 5)]
    content = csv_bytes(table(hub_app, records, "chinese"), "gb18030")
    response = hub.post(
        URL,
        files={"file": ("处罚.csv", content, "text/csv")},
        data={"standard": STANDARD, "mode": "partial"},
        headers=department.headers,
    )
    assert response.status_code == 202, response.text
    assert response.json()["encoding"] == "gb18030"
    assert response.json()["filename"] == "处罚.csv"
    run_jobs(hub_app, session)
    done = status_of(hub, department, response.json()["submission_id"])
    assert done["status"] == "accepted", done
    assert done["progress"]["created"] == 4
    assert done["columns"]["mapped"]["统一社会信用代码"] == "counterpart_uscc"
    assert done["columns"]["unknown"] == []


def test_utf8_bom_csv_with_national_codes_and_an_unknown_column(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    rows = table(hub_app, [factories.penalty(1), factories.penalty(2)], "codes")
    rows[0].append("内部编号")
    rows[1].append("A-1")
    rows[2].append("A-2")
    response = upload(hub, department, csv_bytes(rows, "utf-8-sig"), media_type="text/csv")
    assert response.status_code == 202, response.text
    assert response.json()["encoding"] == "utf-8-sig"
    run_jobs(hub_app, session)
    done = status_of(hub, department, response.json()["submission_id"])
    assert done["status"] == "accepted"
    assert done["columns"]["unknown"] == ["内部编号"]
    assert done["columns"]["mapped"]["CF_XDR_SHXYM"] == "counterpart_uscc"


def test_xlsx_upload_with_dates_and_numbers_as_cells(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    records = [factories.penalty(n) for n in range(1, 5)]
    rows: list[list[Any]] = table(hub_app, records, "chinese")
    date_column = rows[0].index("处罚决定日期")
    fine_column = rows[0].index("罚款金额（万元）")
    for row in rows[1:]:
        row[date_column] = datetime(2026, 4, 2)
        row[fine_column] = 0.5
    response = upload(
        hub,
        department,
        xlsx_bytes({"处罚": rows}),
        headers={},
        filename="处罚.xlsx",
    )
    assert response.status_code == 202, response.text
    assert response.json()["format"] == "xlsx"
    run_jobs(hub_app, session)
    done = status_of(hub, department, response.json()["submission_id"])
    assert done["status"] == "accepted", done
    assert done["progress"]["created"] == 4
    data = session.scalars(select(RecordVersion.data)).first()
    assert data is not None
    assert data["decision_date"] == "2026-04-02"


# -- the report and the error file -----------------------------------------------------------


def test_partial_keeps_good_rows_and_the_error_file_round_trips(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    records = [factories.penalty(n) for n in range(1, 7)]
    records[1] = factories.penalty(2, counterpart_uscc="914403001922038217")  # bad check digit
    records[4] = factories.penalty(5, legal_basis='=HYPERLINK("http://x")', decision_date="x")
    content = csv_bytes(table(hub_app, records, "chinese"), "gb18030")
    response = upload(hub, department, content, media_type="text/csv")
    submission_id = response.json()["submission_id"]
    run_jobs(hub_app, session)
    done = status_of(hub, department, submission_id)
    assert done["status"] == "partially_accepted"
    assert (done["progress"]["accepted"], done["progress"]["rejected"]) == (4, 2)
    summary = {(e["code"], e["pointer"]): e["count"] for e in done["error_summary"]}
    assert summary[("format.uscc", "/counterpart_uscc")] == 1
    assert count(session, Record) == 4

    errors = hub.get(f"{URL}/{submission_id}/errors", headers=department.headers)
    assert errors.status_code == 200
    assert errors.headers["content-type"].startswith("text/csv")
    text = errors.content.decode("gb18030")
    got = list(csv.reader(io.StringIO(text)))
    assert got[0][-4:] == ["_row", "_error_codes", "_error_fields", "_error_messages"]
    assert got[0][:3] == table(hub_app, records, "chinese")[0][:3]
    assert [r[-4] for r in got[1:]] == ["3", "6"]  # file rows: the header is row 1
    assert "统一社会信用代码" in got[1][-2]  # the field as the upload named it
    basis = got[0].index("处罚依据")
    assert got[2][basis].startswith("'=")  # neutralized for spreadsheets

    # Fix the two rows in the error file itself and upload it again.
    fixed_uscc = factories.make_uscc(1002)
    uscc_column = got[0].index("统一社会信用代码")
    date_column = got[0].index("处罚决定日期")
    got[1][uscc_column] = fixed_uscc
    got[2][date_column] = "2026/04/02"
    again = upload(hub, department, csv_bytes(got, "gb18030"), media_type="text/csv")
    assert again.status_code == 202
    run_jobs(hub_app, session)
    redone = status_of(hub, department, again.json()["submission_id"])
    assert redone["status"] == "accepted", redone
    assert redone["progress"]["created"] == 2
    assert redone["columns"]["ignored"] == [
        "_row",
        "_error_codes",
        "_error_fields",
        "_error_messages",
    ]
    stored = session.scalars(select(RecordVersion.data)).all()
    assert any(d["legal_basis"] == '=HYPERLINK("http://x")' for d in stored)
    assert count(session, Record) == 6


def test_error_file_as_ndjson_by_accept_and_resubmitted(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    bad = factories.penalty(2, counterpart_uscc="914403001922038217")
    content = ndjson_bytes([factories.penalty(1), bad]) + b'{"truncated": \n'
    submission_id = upload(hub, department, content).json()["submission_id"]
    run_jobs(hub_app, session)
    done = status_of(hub, department, submission_id)
    assert done["progress"]["rejected"] == 2
    errors = hub.get(
        f"{URL}/{submission_id}/errors",
        headers=department.headers | {"Accept": "application/x-ndjson"},
    )
    lines = [orjson.loads(line) for line in errors.content.splitlines()]
    assert [line["_row"] for line in lines] == [2, 3]
    assert lines[0]["_errors"][0]["code"] == "format.uscc"
    assert lines[1]["_line"] == '{"truncated":'
    fixed = dict(lines[0], counterpart_uscc=factories.make_uscc(1002))
    again = upload(hub, department, ndjson_bytes([fixed]))
    run_jobs(hub_app, session)
    assert status_of(hub, department, again.json()["submission_id"])["status"] == "accepted"
    csv_answer = hub.get(f"{URL}/{submission_id}/errors?format=csv", headers=department.headers)
    assert csv_answer.text.splitlines()[0].endswith("_error_messages")


def test_atomic_stores_nothing_when_a_row_fails(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    records = [factories.penalty(n) for n in range(1, 8)]
    records[5] = factories.penalty(6, counterpart_uscc="914403001922038217")
    response = upload(hub, department, ndjson_bytes(records), mode="atomic")
    run_jobs(hub_app, session)
    done = status_of(hub, department, response.json()["submission_id"])
    assert done["status"] == "rejected"
    assert done["progress"]["rejected"] == 1
    assert done["progress"]["accepted"] == 0
    assert count(session, Record) == 0
    assert count(session, SubmissionError) == 1

    good = upload(hub, department, ndjson_bytes(records[:5]), mode="atomic")
    run_jobs(hub_app, session)
    assert status_of(hub, department, good.json()["submission_id"])["status"] == "accepted"
    assert count(session, Record) == 5


def test_a_source_id_repeated_across_chunks_is_rejected_like_in_a_batch(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    records = [factories.penalty(n) for n in range(1, 6)]
    records.append(factories.penalty(1, fine_amount_wan="0.9"))  # chunk 2 repeats chunk 1
    response = upload(hub, department, ndjson_bytes(records))
    run_jobs(hub_app, session)
    done = status_of(hub, department, response.json()["submission_id"])
    assert (done["progress"]["created"], done["progress"]["rejected"]) == (5, 1)
    assert done["error_summary"][0]["code"] == "duplicate_source_id"
    assert count(session, RecordVersion) == 5


def test_mixed_line_endings_bad_widths_and_a_truncated_last_row(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    rows = table(hub_app, [factories.penalty(n) for n in range(1, 5)])
    lines = [",".join(f'"{c}"' for c in row) for row in rows]
    lines[2] += ',"extra"'  # too many cells
    content = lines[0] + "\r\n" + lines[1] + "\n" + lines[2] + "\r\n" + lines[3] + "\r"
    content += lines[4][: len(lines[4]) // 2]  # cut inside a quoted cell
    response = upload(hub, department, content.encode(), media_type="text/csv")
    assert response.status_code == 202, response.text
    run_jobs(hub_app, session)
    done = status_of(hub, department, response.json()["submission_id"])
    assert done["status"] == "partially_accepted"
    assert (done["progress"]["created"], done["progress"]["rejected"]) == (2, 2)
    codes = {e["code"] for e in done["error_summary"]}
    assert "row_width" in codes


def test_a_header_only_file_fails_with_a_report(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    content = csv_bytes(table(hub_app, [factories.penalty(1)])[:1])
    response = upload(hub, department, content, media_type="text/csv")
    assert response.status_code == 202
    run_jobs(hub_app, session)
    done = status_of(hub, department, response.json()["submission_id"])
    assert done["status"] == "failed"
    assert done["file_error"]["code"] == "no_rows"


def test_a_worker_that_dies_between_chunks_is_taken_over_after_its_lease(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session, clock: FixedClock
) -> None:
    records = [factories.penalty(n) for n in range(1, 11)]
    submission_id = upload(hub, department, ndjson_bytes(records)).json()["submission_id"]
    first = worker(hub_app, session)
    job_id = claim(first.db, first.ctx, "dying-worker")
    assert job_id is not None
    checks = iter([False, False, True])

    def crash_on_third_chunk() -> bool:
        if next(checks):
            raise SystemExit("killed")  # not an Exception: nothing is cleaned up
        return False

    with pytest.raises(SystemExit):
        process(first.db, first.ctx, job_id, "dying-worker", should_stop=crash_on_third_chunk)
    stuck = status_of(hub, department, submission_id)
    assert (stuck["status"], stuck["progress"]["rows_read"]) == ("running", 6)
    assert worker(hub_app, session).run_until_idle() == 0  # the lease still holds
    clock.advance(seconds=hub_app.state.settings.job_lease_seconds + 1)
    assert worker(hub_app, session).run_until_idle() == 1
    done = status_of(hub, department, submission_id)
    assert done["status"] == "accepted"
    assert done["attempts"] == 2
    assert done["progress"]["created"] == 10
    assert count(session, Record) == count(session, RecordVersion) == 10


# -- refused at upload ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "params", "code"),
    [
        (b"", {}, "empty"),
        (b"\xef\xbb\xbf\r\n", {}, "empty"),
        ("名称,编号\r\n甲,1\r\n".encode(), {}, "no_known_columns"),
        (
            "行政相对人名称,统一社会信用代码\r\n甲,1\r\n".encode("gb18030"),
            {"encoding": "utf-8"},
            "encoding",
        ),
        (b"PK\x03\x04 not really a zip", {}, "xlsx"),
        (b"a,b\r\n", {"encoding": "latin-1"}, "encoding"),
    ],
)
def test_unreadable_files_are_refused_with_a_problem(
    hub: TestClient,
    department: Caller,
    session: Session,
    content: bytes,
    params: dict[str, str],
    code: str,
) -> None:
    response = upload(hub, department, content, **params)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == PROBLEM + "file-unreadable"
    assert problem["code"] == code
    assert count(session, Submission) == 0


def test_wrongly_declared_gb18030_names_the_likely_encoding(
    hub: TestClient, hub_app: FastAPI, department: Caller
) -> None:
    content = csv_bytes(table(hub_app, [factories.penalty(1)], "chinese"), "utf-8")
    problem = upload(hub, department, content, encoding="gb18030").json()
    assert problem["code"] in ("encoding", "no_known_columns")
    assert "reads as utf-8" in problem["detail"]


def test_xlsx_with_several_sheets_needs_a_sheet_name(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    rows: list[list[Any]] = table(hub_app, [factories.penalty(1)], "chinese")
    content = xlsx_bytes({"说明": [["本表为示例"]], "处罚": rows})
    problem = upload(hub, department, content).json()
    assert problem["code"] == "several_sheets"
    response = upload(hub, department, content, sheet="处罚")
    assert response.status_code == 202
    run_jobs(hub_app, session)
    assert status_of(hub, department, response.json()["submission_id"])["status"] == "accepted"


def test_xlsx_with_merged_cells_is_refused(
    hub: TestClient, hub_app: FastAPI, department: Caller
) -> None:
    rows: list[list[Any]] = table(hub_app, [factories.penalty(1), factories.penalty(2)])
    problem = upload(hub, department, xlsx_bytes({"s": rows}, merge="A2:A3")).json()
    assert problem["code"] == "merged_cells"
    assert "A2:A3" in problem["detail"]


def test_a_zip_bomb_disguised_as_xlsx_is_refused_unopened(
    hub: TestClient, department: Caller
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (50 * 1024 * 1024))
    problem = upload(hub, department, buffer.getvalue(), format="xlsx").json()
    assert problem["code"] == "xlsx_suspicious"


def test_an_upload_over_the_limit_is_413(
    settings: Settings, session: Session, department: Caller, tmp_path: Path
) -> None:
    app = create_app(settings.model_copy(update={"spool_dir": tmp_path, "max_upload_bytes": 1000}))
    app.dependency_overrides[get_db] = lambda: conftest.TestDatabase(session)
    with TestClient(app, raise_server_exceptions=False) as client:
        big = ndjson_bytes([factories.penalty(n) for n in range(1, 5)])
        response = upload(client, department, big)
        assert response.status_code == 413
        assert response.json()["type"] == PROBLEM + "payload-too-large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: stopped while streaming
            yield big

        streamed = client.post(
            URL, content=chunks(), params={"standard": STANDARD}, headers=department.headers
        )
        assert streamed.status_code == 413
    assert list(tmp_path.iterdir()) == []


def test_refused_before_the_body_for_a_standard_not_registered(
    hub: TestClient, session: Session
) -> None:
    from credit_hub.access.models import ClientKind
    from tests.conftest import register

    caller = register(session, ClientKind.DEPARTMENT, uscc=factories.DEPARTMENT_USCC, standards=[])
    response = upload(hub, caller, b'{"a": 1}\n')
    assert response.status_code == 403
    agency = register(session, ClientKind.AGENCY)
    assert upload(hub, agency, b'{"a": 1}\n').status_code == 403


# -- ownership, listing, idempotency ----------------------------------------------------------


def test_another_department_sees_404_and_the_list_is_paginated(
    hub: TestClient,
    hub_app: FastAPI,
    department: Caller,
    other_department: Caller,
    clock: FixedClock,
) -> None:
    ids = []
    for n in range(3):
        clock.advance(seconds=1)
        ids.append(
            upload(hub, department, ndjson_bytes([factories.penalty(n + 1)])).json()[
                "submission_id"
            ]
        )
    assert hub.get(f"{URL}/{ids[0]}", headers=other_department.headers).status_code == 404
    assert hub.get(f"{URL}/{ids[0]}/errors", headers=other_department.headers).status_code == 404
    assert hub.get(URL, headers=other_department.headers).json()["items"] == []
    first = hub.get(URL, params={"limit": 2}, headers=department.headers).json()
    assert [i["submission_id"] for i in first["items"]] == ids[::-1][:2]
    second = hub.get(
        URL, params={"limit": 2, "cursor": first["next_cursor"]}, headers=department.headers
    ).json()
    assert [i["submission_id"] for i in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None


def test_a_batch_push_is_readable_as_a_submission(hub: TestClient, department: Caller) -> None:
    bad = factories.penalty(2, counterpart_uscc="914403001922038217")
    body = {"standard": STANDARD, "records": [factories.penalty(1), bad]}
    pushed = hub.post("/v1/records", json=body, headers=department.headers)
    location = pushed.headers["location"]
    found = hub.get(location, headers=department.headers).json()
    assert found["kind"] == "batch"
    assert found["status"] == "partially_accepted"
    assert found["progress"]["rejected"] == 1
    errors = hub.get(f"{location}/errors", headers=department.headers)
    assert orjson.loads(errors.content.splitlines()[0])["_row"] == 1


def test_an_idempotency_key_replays_the_first_upload(
    hub: TestClient, department: Caller, session: Session, tmp_path: Path
) -> None:
    content = ndjson_bytes([factories.penalty(1)])
    key = {"Idempotency-Key": "upload-2026-05-06-1"}
    first = upload(hub, department, content, headers=key)
    again = upload(hub, department, content, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["submission_id"] == first.json()["submission_id"]
    other = upload(hub, department, ndjson_bytes([factories.penalty(2)]), headers=key)
    assert other.status_code == 409
    assert count(session, Submission) == 1
    assert len(list((tmp_path / "spool").iterdir())) == 1
