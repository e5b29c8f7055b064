"""The summaries' query as the database plans it."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from credit_hub.profiles import queries


def test_sqlite_reads_summaries_from_the_subject_index_alone(session: Session) -> None:
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        pytest.skip("PostgreSQL reads the rows; its index is (subject_id, standard)")
    executed: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        executed.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", note)
    try:
        queries.visible_facts(
            session,
            [uuid.uuid4(), uuid.uuid4()],
            standards=["administrative_penalty", "administrative_licensing"],
            on=date(2026, 11, 27),
        )
    finally:
        event.remove(connection, "before_cursor_execute", note)
    [(statement, parameters)] = executed
    plan = [
        row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
    ]
    assert any("COVERING INDEX ix_record_subject_facts" in step for step in plan), plan
    assert not any(step.startswith("SCAN record") for step in plan), plan
