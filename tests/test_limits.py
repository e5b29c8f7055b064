"""Limits and hostile input: request rate, JSON nesting, NUL characters, invalid UTF-8, overlong
text, formula cells in error files, SQL- and HTML-looking strings, slow bodies.

Every answer here is a 4xx problem, never a 500, on SQLite and on PostgreSQL (whose text
columns cannot hold NUL: the hub refuses it on both, so both answer the same).
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.db import get_db
from credit_hub.ingest.jobs import JobContext, Worker
from credit_hub.ingest.models import Submission, SubmissionError
from credit_hub.ratelimit import RateLimiter
from credit_hub.records.models import Record, RecordVersion
from tests import conftest, factories
from tests.conftest import Caller

PROBLEM = "https://credit-hub.example/problems/"
STANDARD = "administrative_penalty"
VALIDATE = f"/v1/standards/{STANDARD}/validate"
JSON = {"content-type": "application/json"}


def _app(settings: Settings, session: Session, tmp_path: Path, **overrides: Any) -> FastAPI:
    app = create_app(
        settings.model_copy(
            update={"spool_dir": tmp_path / "spool", "job_chunk_rows": 3} | overrides
        )
    )
    app.dependency_overrides[get_db] = lambda: conftest.TestDatabase(session)
    return app


@pytest.fixture
def hub_app(settings: Settings, session: Session, tmp_path: Path) -> FastAPI:
    return _app(settings, session, tmp_path)


@pytest.fixture
def hub(hub_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(hub_app, raise_server_exceptions=False) as client:
        yield client


def run_jobs(app: FastAPI, session: Session) -> None:
    state = app.state
    context = JobContext.of(state.settings, state.standards, state.keyring, state.clock)
    Worker(conftest.TestDatabase(session), context, name="test").run_until_idle()


def push(hub: TestClient, caller: Caller, records: list[Any], mode: str = "partial") -> Any:
    return hub.post(
        "/v1/records",
        json={"standard": STANDARD, "mode": mode, "records": records},
        headers=caller.headers,
    )


def assert_problem(response: Any, status: int, kind: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    if kind is not None:
        assert body["type"] == PROBLEM + kind
    return body


def stored(session: Session, source_id: str) -> list[RecordVersion]:
    return list(
        session.scalars(
            select(RecordVersion)
            .join(Record, Record.id == RecordVersion.record_id)
            .where(Record.source_id == source_id)
        )
    )


# -- JSON nesting ---------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [40, 300, 1000, 1025, 100_000])
def test_deeply_nested_json_is_a_client_error_on_every_route(
    hub: TestClient, department: Caller, operator: Caller, depth: int
) -> None:
    deep = nested(depth)
    bodies = [
        (
            "/v1/records",
            department,
            f'{{"standard": "{STANDARD}", "records": [{{"violation_facts": {deep}}}]}}',
        ),
        ("/v1/records", department, f'{{"standard": "{STANDARD}", "records": {deep}}}'),
        ("/v1/records", department, f'{{"standard": {deep}, "records": []}}'),
        (VALIDATE, None, f'{{"records": [{{"extra": {deep}}}]}}'),
        (VALIDATE, None, f'{{"records": [{{}}], "x": {deep}}}'),
        ("/v1/admin/clients", operator, f'{{"kind": "agency", "name": "x", "standards": {deep}}}'),
    ]
    for url, caller, body in bodies:
        headers = JSON | (caller.headers if caller else {})
        response = hub.post(url, content=body, headers=headers)
        assert response.status_code in (200, 400, 422), (url, body[:80], response.text[:300])
        assert response.headers["content-type"].endswith("json")
        if response.status_code == 200:  # the validator's report: the record is invalid
            assert response.json()["invalid"] == 1


def test_a_record_field_nested_too_deep_is_rejected_by_code(
    hub: TestClient, department: Caller
) -> None:
    deep = orjson.loads(nested(300))
    response = push(hub, department, [factories.penalty(1, violation_facts=deep)])
    body = assert_problem(response, 422, "records-invalid")
    assert [(e["pointer"], e["code"]) for e in body["errors"]] == [("/violation_facts", "too_deep")]


# -- NUL characters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["violation_facts", "counterpart_name", "decision_doc_no", "penalty_categories"]
)
def test_a_record_with_nul_is_rejected_alone_and_nothing_of_it_is_stored(
    hub: TestClient, department: Caller, session: Session, field: str
) -> None:
    value: Any = ["警告", "罚\x00款"] if field == "penalty_categories" else "罚款\x00伍仟元"
    bad = factories.penalty(1, **{field: value})
    good = factories.penalty(2)
    response = push(hub, department, [bad, good])
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["counts"]["created"] == 1
    assert [(e["index"], e["pointer"], e["code"]) for e in report["errors"]] == [
        (0, f"/{field}", "nul_character")
    ]
    assert "\x00" not in response.text  # never echoed
    assert "\\u0000" not in response.text
    assert stored(session, good["decision_doc_no"])
    assert session.scalar(select(func.count()).select_from(Record)) == 1  # not the NUL one
    atomic = push(hub, department, [factories.penalty(3), bad], mode="atomic")
    assert_problem(atomic, 422, "records-invalid")
    assert not stored(session, factories.penalty(3)["decision_doc_no"])
    assert session.scalar(select(func.count()).select_from(Record)) == 1


def test_nul_in_a_field_name_and_in_the_validator(hub: TestClient, department: Caller) -> None:
    record = factories.penalty(1) | {"extra\x00field": "x"}
    body = assert_problem(push(hub, department, [record]), 422, "records-invalid")
    assert [e["code"] for e in body["errors"]] == ["nul_character"]
    validated = hub.post(
        VALIDATE, json={"records": [factories.penalty(2, legal_rep_name="张\x00三")]}
    )
    assert validated.status_code == 200
    assert [e["code"] for e in validated.json()["errors"]] == ["nul_character"]


def test_nul_anywhere_else_is_refused_before_the_database(
    hub: TestClient, operator: Caller, agency: Caller
) -> None:
    assert_problem(hub.get("/v1/subjects?q=%E7%A4%BA%00%E4%BE%8B", headers=agency.headers), 400)
    assert_problem(hub.get("/v1/records/abc%00def", headers=agency.headers), 400)
    created = hub.post(
        "/v1/admin/clients",
        json={"kind": "agency", "name": "福州\x00", "standards": [STANDARD]},
        headers=operator.headers,
    )
    assert_problem(created, 422, "request-invalid")
    screened = hub.post(
        "/v1/profiles/screen",
        json={"identifiers": ["9135\x00"], "purpose": "procurement", "case_ref": "x"},
        headers=agency.headers,
    )
    assert_problem(screened, 422)


def test_an_escaped_backslash_before_u0000_is_text_not_nul(
    hub: TestClient, department: Caller, session: Session
) -> None:
    text_ = "路径 C:\\u0000\\temp"  # a backslash, then the letters u0000: no NUL
    record = factories.penalty(1, violation_facts=text_)
    assert push(hub, department, [record]).status_code == 201
    assert stored(session, record["decision_doc_no"])[0].data["violation_facts"] == text_
    created = hub.post(
        "/v1/admin/clients",
        content=orjson.dumps({"kind": "bogus", "name": "a\\u0000b", "standards": []}),
        headers=JSON,
    )
    assert created.status_code == 401  # reached the app: no NUL found in the body


def test_a_file_row_with_nul_is_rejected_and_the_job_finishes(
    hub: TestClient, hub_app: FastAPI, department: Caller, session: Session
) -> None:
    records = [factories.penalty(n) for n in range(1, 6)]
    records[1]["violation_facts"] = "事实\x00"
    records[3]["legal_basis"] = '=HYPERLINK("http://x","点击")'  # formula in a rejected row
    records[3]["decision_date"] = "not a date"
    names = list(records[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    for r in records:
        writer.writerow([";".join(r[n]) if isinstance(r[n], list) else r[n] for n in names])
    response = hub.post(
        "/v1/submissions",
        params={"standard": STANDARD},
        content=buffer.getvalue().encode(),
        headers=department.headers | {"content-type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    run_jobs(hub_app, session)
    job = session.get(Submission, uuid.UUID(response.json()["submission_id"]))
    assert job is not None
    assert (job.status, job.created, job.rejected) == ("partially_accepted", 3, 2)
    codes = {
        e.row: [x["code"] for x in e.errors]
        for e in session.scalars(
            select(SubmissionError).where(SubmissionError.submission_id == job.id)
        )
    }
    assert codes[3] == ["nul_character"]
    errors = hub.get(f"/v1/submissions/{job.id}/errors", headers=department.headers)
    assert errors.status_code == 200
    rows = list(csv.reader(io.StringIO(errors.content.decode("utf-8-sig"))))
    cell = rows[2][rows[0].index("legal_basis")]
    assert cell.startswith("'=HYPERLINK")  # neutralized for spreadsheets


# -- invalid UTF-8, overlong text, verbatim strings ----------------------------------------


def test_invalid_utf8_bodies_are_400_problems(
    hub: TestClient, department: Caller, operator: Caller
) -> None:
    raw = b'{"standard": "administrative_penalty", "records": [{"violation_facts": "\xff\xfe"}]}'
    assert_problem(hub.post("/v1/records", content=raw, headers=department.headers | JSON), 400)
    assert_problem(hub.post(VALIDATE, content=b'{"records": ["\xc3\x28"]}', headers=JSON), 400)
    bad = b'{"kind": "agency", "name": "\xed\xa0\x80", "standards": []}'  # a lone surrogate
    created = hub.post("/v1/admin/clients", content=bad, headers=operator.headers | JSON)
    assert created.status_code in (400, 422), created.text  # 422: string_unicode at /name
    assert created.headers["content-type"] == "application/problem+json"


def test_overlong_chinese_text_is_rejected_by_the_standards_max_length(
    hub: TestClient, department: Caller, session: Session, hub_app: FastAPI
) -> None:
    long_facts = factories.penalty(1, violation_facts="违" * 100_000)
    long_doc_no = factories.penalty(2, decision_doc_no="榕" * 5_000)
    good = factories.penalty(3)
    response = push(hub, department, [long_facts, long_doc_no, good])
    assert response.status_code == 201, response.text
    assert {(e["index"], e["pointer"], e["code"]) for e in response.json()["errors"]} >= {
        (0, "/violation_facts", "max_length"),
        (1, "/decision_doc_no", "max_length"),
    }
    assert not stored(session, long_doc_no["decision_doc_no"])
    # The same rows in a file: the rejected row's long source id fits its error row.
    body = b"".join(orjson.dumps(r) + b"\n" for r in (long_facts, long_doc_no))
    upload = hub.post(
        "/v1/submissions",
        params={"standard": STANDARD},
        content=body,
        headers=department.headers | {"content-type": "application/x-ndjson"},
    )
    assert upload.status_code == 202, upload.text
    run_jobs(hub_app, session)
    job = session.get(Submission, uuid.UUID(upload.json()["submission_id"]))
    assert job is not None
    assert (job.status, job.rows_read, job.rejected) == ("rejected", 2, 2)
    error_ids = session.scalars(
        select(SubmissionError.source_id).where(SubmissionError.submission_id == job.id)
    ).all()
    assert max(len(i or "") for i in error_ids) == 200  # cut to fit its column


SQL_AND_HTML = [
    "'; DROP TABLE record; --",
    "Robert'); DELETE FROM audit_event WHERE ('1'='1",
    "<script>alert('x')</script>",
    '<img src=x onerror="alert(1)">&amp;&lt;',
    "%s %(name)s {0} ${jndi:ldap://x} \\ \" '",
]


@pytest.mark.parametrize("text_", SQL_AND_HTML)
def test_sql_and_html_looking_strings_are_stored_and_served_verbatim(
    hub: TestClient, department: Caller, session: Session, text_: str
) -> None:
    record = factories.penalty(1, violation_facts=text_, penalty_content=text_ + " 罚款")
    response = push(hub, department, [record])
    assert response.status_code == 201, response.text
    record_id = response.json()["records"][0]["record_id"]
    (version,) = stored(session, record["decision_doc_no"])
    assert version.data["violation_facts"] == text_.strip()
    read = hub.get(f"/v1/records/{record_id}", headers=department.headers)
    assert read.status_code == 200
    assert read.headers["content-type"] == "application/json"
    assert read.headers["x-content-type-options"] == "nosniff"
    assert read.json()["current"]["data"]["violation_facts"] == text_.strip()


# -- request rate ---------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(2, 3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0  # another key has its own bucket
    now[0] += 0.5
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0


def test_rate_limit_answers_429_with_retry_after_per_client(
    settings: Settings, session: Session, tmp_path: Path, department: Caller, agency: Caller
) -> None:
    app = _app(settings, session, tmp_path, rate_limit_per_second=0.1, rate_limit_burst=3)
    with TestClient(app, raise_server_exceptions=False) as hub:
        answers = [hub.get("/v1/submissions", headers=department.headers) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        body = assert_problem(answers[-1], 429, "rate-limited")
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert body["retry_after_seconds"] == int(answers[-1].headers["retry-after"])
        # Another client keeps its own bucket.
        assert hub.get("/v1/changes?after=now", headers=agency.headers).status_code == 200


def test_rate_limit_by_address_for_public_routes_and_bad_keys(
    settings: Settings, session: Session, tmp_path: Path, department: Caller
) -> None:
    app = _app(settings, session, tmp_path, rate_limit_per_second=0.1, rate_limit_burst=2)
    with TestClient(app, raise_server_exceptions=False) as hub:
        validated = [hub.post(VALIDATE, json={"records": [{}]}) for _ in range(3)]
        assert [v.status_code for v in validated] == [200, 200, 429]
        assert "retry-after" in validated[-1].headers
        wrong = hub.get("/v1/submissions", headers={"Authorization": "Bearer chk_wrong"})
        assert_problem(wrong, 429, "rate-limited")  # the address's bucket is empty
        assert hub.get("/healthz").status_code == 200  # probes are never limited
        assert hub.get("/v1/submissions", headers=department.headers).status_code == 200


def test_rate_limit_zero_turns_it_off(hub: TestClient) -> None:
    assert all(hub.get("/v1/standards").status_code == 200 for _ in range(50))


# -- slow bodies ----------------------------------------------------------------------------


def test_a_body_that_stops_arriving_gets_408(
    settings: Settings, session: Session, tmp_path: Path
) -> None:
    app = _app(settings, session, tmp_path, body_idle_timeout_seconds=0.2)
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b'{"records": [', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if chunks:
            return chunks.pop()
        await asyncio.sleep(3600)  # the client went quiet
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": VALIDATE,
        "raw_path": VALIDATE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def call() -> None:
        await asyncio.wait_for(app(scope, receive, send), 10)

    asyncio.run(call())
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    body = orjson.loads(
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    )
    assert body["type"] == PROBLEM + "request-timeout"
