"""Set-based writes: values bound before a transaction are stored exactly as bound at write time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from credit_hub import bulk
from credit_hub.config import Settings
from credit_hub.db import make_engine, new_id, table
from credit_hub.subjects.models import Subject, SubjectKind

_BOUND = ("id", "kind", "uscc", "name", "name_seen_on", "created_at", "updated_at")


def _row(name: str) -> dict[str, Any]:
    return {
        "id": new_id(),
        "kind": SubjectKind.ORGANIZATION,
        "uscc": None,
        "name": name,
        "name_seen_on": date(2026, 4, 2),
        "created_at": datetime(2026, 11, 25, 14, 30, 1, 123456, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 25, 14, 30, 1, 123456, tzinfo=UTC),
    }


def test_rows_bound_early_store_what_a_plain_insert_stores(session: Session) -> None:
    subjects = table(Subject)
    dialect = session.get_bind().dialect
    plain, early = _row("平常绑定商行"), _row("提前绑定商行")
    early_id = early["id"]
    bound = bulk.bind_rows(dialect, subjects, [early], _BOUND)
    if dialect.name == "sqlite":  # ready for the driver: text, as SQLAlchemy would send it
        assert bound[0]["id"] == early_id.hex
        assert bound[0]["name_seen_on"] == "2026-04-02"
    else:  # PostgreSQL's paths send Python values
        assert bound[0]["id"] == early_id

    assert bulk.insert_rows(session, subjects, [plain]) == 1
    assert bulk.insert_rows(session, subjects, bound, bound=_BOUND) == 1

    read = {
        row.name: row
        for row in session.execute(
            select(subjects).where(subjects.c.id.in_([plain["id"], early_id]))
        )
    }
    assert read["提前绑定商行"].id == early_id
    for column in ("kind", "name_seen_on", "created_at", "updated_at"):
        assert getattr(read["提前绑定商行"], column) == getattr(read["平常绑定商行"], column)
    raw = session.execute(
        text("SELECT name, CAST(created_at AS TEXT) AS at FROM subject WHERE name LIKE '%绑定商行'")
    ).all()
    assert len({at for _, at in raw}) == 1  # byte for byte the same stored value


def test_updates_take_bound_values_too(session: Session) -> None:
    subjects = table(Subject)
    dialect = session.get_bind().dialect
    row = _row("更新前商行")
    bulk.insert_rows(session, subjects, [row])
    columns = ("name", "name_seen_on")
    change = bulk.bind_rows(
        dialect, subjects, [{"name": "更新后商行", "name_seen_on": date(2027, 1, 31)}], columns
    )[0] | {"id": row["id"]}  # the key is bound at write time
    assert bulk.update_rows(session, subjects, [change], key=["id"], bound=columns) == 1
    found = session.execute(
        select(subjects.c.name, subjects.c.name_seen_on).where(subjects.c.id == row["id"])
    ).one()
    assert (found.name, found.name_seen_on) == ("更新后商行", date(2027, 1, 31))


def test_dates_are_bound_as_sqlalchemy_binds_them(session: Session) -> None:
    subjects = table(Subject)
    dialect = session.get_bind().dialect
    days: list[Any] = [date(1, 1, 1), date(999, 12, 31), date(2024, 2, 29), date(9999, 12, 31)]
    days += [None, datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC)]  # a datetime: its day
    impl = subjects.c.name_seen_on.type.dialect_impl(dialect)
    theirs = impl.bind_processor(dialect)
    expected = days if theirs is None else [theirs(day) for day in days]
    assert bulk._bound_values(subjects, dialect, "name_seen_on", days) == expected
    if dialect.name == "sqlite":
        assert expected[-1] == "2026-11-25"


def test_uuid_columns_store_what_sqlalchemy_stores(session: Session) -> None:
    """Ids and nullable references, bound in bulk, read back as the same UUIDs and as NULL;
    on SQLite as the 32 hex digits SQLAlchemy's own Uuid type writes."""
    subjects = table(Subject)
    parent, child, orphan = _row("母公司商行"), _row("并入商行"), _row("独立商行")
    child["merged_into_id"] = parent["id"]
    parent["merged_into_id"] = orphan["merged_into_id"] = None
    assert bulk.insert_rows(session, subjects, [parent]) == 1
    assert bulk.insert_rows(session, subjects, [child, orphan]) == 2

    ids = [parent["id"], child["id"], orphan["id"]]
    read: dict[Any, Any] = dict(
        session.execute(
            select(subjects.c.id, subjects.c.merged_into_id).where(subjects.c.id.in_(ids))
        ).all()
    )
    assert read == {parent["id"]: None, child["id"]: parent["id"], orphan["id"]: None}
    if session.get_bind().dialect.name == "sqlite":
        raw: dict[Any, Any] = dict(
            session.execute(
                text("SELECT id, merged_into_id FROM subject WHERE id IN (:a, :b, :c)"),
                {"a": ids[0].hex, "b": ids[1].hex, "c": ids[2].hex},
            ).all()
        )
        assert raw == {ids[0].hex: None, ids[1].hex: ids[0].hex, ids[2].hex: None}


# -- claim_rows (PostgreSQL): insert the new rows, lock the stored ones ---------------------------

_PROBE = Table(
    "claim_probe",
    MetaData(),
    Column("key", String(16), primary_key=True),
    Column("value", Integer, nullable=False),
)


@pytest.fixture
def probe_engine(settings: Settings) -> Iterator[Engine]:
    """A table of its own, committed for real (a second connection must see its rows)."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("claim_rows() is PostgreSQL's; SQLite's single writer needs no row locks")
    engine = make_engine(settings, pool_size=2)
    _PROBE.drop(engine, checkfirst=True)
    _PROBE.create(engine)
    yield engine
    _PROBE.drop(engine)
    engine.dispose()


def test_claim_inserts_new_rows_and_locks_stored_ones_untouched(probe_engine: Engine) -> None:
    with Session(probe_engine) as setup, setup.begin():
        bulk.insert_rows(setup, _PROBE, [{"key": "b", "value": 1}])
    rows = [{"key": "a", "value": 10}, {"key": "b", "value": 20}, {"key": "c", "value": 30}]
    with Session(probe_engine) as claimer:
        with claimer.begin():
            assert sorted(bulk.claim_rows(claimer, _PROBE, rows, key=["key"], returning="key")) == [
                "a",
                "c",
            ]
            with probe_engine.connect() as other:
                with pytest.raises(OperationalError) as held:  # locked until the commit
                    other.execute(
                        text("SELECT key FROM claim_probe WHERE key = 'b' FOR UPDATE NOWAIT")
                    )
                assert getattr(held.value.orig, "sqlstate", None) == "55P03"
        with probe_engine.connect() as other:
            locked = other.execute(
                text("SELECT key FROM claim_probe WHERE key = 'b' FOR UPDATE NOWAIT")
            ).scalar_one()
            assert locked == "b"
            stored = {
                key: value for key, value in other.execute(select(_PROBE.c.key, _PROBE.c.value))
            }
    assert stored == {"a": 10, "b": 1, "c": 30}  # the stored row kept its value
