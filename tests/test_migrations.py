"""Alembic owns the schema: the migrations build exactly what the models describe, both ways."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from credit_hub import migrate
from credit_hub.access.models import ClientKind
from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.db import make_engine, new_id
from credit_hub.models import Base
from credit_hub.subjects import search
from credit_hub.subjects.models import Subject, SubjectKind, SubjectName
from tests import factories
from tests.live import SERVER_DATABASE_URL, dedicated_settings, new_client, sessions_on


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        dialect = connection.dialect.name
        diff = [
            d
            for d in compare_metadata(context, Base.metadata)
            if not _is_search_infrastructure(d) and not _elsewhere_only(d, dialect)
        ]
    assert diff == []


def _elsewhere_only(diff: object, dialect: str) -> bool:
    """An index the models keep for another database only (`info={"only_on": ...}`)."""
    if not (isinstance(diff, tuple) and diff[0] == "add_index"):
        return False
    # Alembic reports a copy of the model's index, without its `info`: find the model's own.
    table = Base.metadata.tables[diff[1].table.name]
    only_on = next(i.info.get("only_on") for i in table.indexes if i.name == diff[1].name)
    return only_on is not None and only_on != dialect


def _is_search_infrastructure(diff: object) -> bool:
    # Full-text tables, trigram indexes and PostgreSQL's name numbers are created by
    # hand-written migrations, not by models.
    text = repr(diff)
    return any(
        name in text
        for name in (
            "subject_name_fts",
            "search_seq",  # PostgreSQL's numbering of names, and its indexes
            "ix_subject_name_trgm_by_block",
            "ix_subject_name_name_prefix",
        )
    )


def test_upgrade_then_downgrade_on_a_fresh_sqlite(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(settings)
    fresh = make_engine(settings)
    assert "record_version" in inspect(fresh).get_table_names()
    migrate.upgrade(settings, "head")  # idempotent
    command.downgrade(migrate.alembic_config(settings), "base")
    assert "record_version" not in inspect(fresh).get_table_names()
    fresh.dispose()


def test_versions_keep_their_ends_through_a_downgrade_and_back(tmp_path: Path) -> None:
    # d8e4a1c6b203 dropped record_version.superseded_at (a version ends where the next one
    # begins); its downgrade must fill the column back from the stored versions.
    with dedicated_settings(tmp_path, "credit_hub_test_superseded") as settings:
        with sessions_on(settings) as sessions:
            department = new_client(sessions, ClientKind.DEPARTMENT)[1]
        auth = {"Authorization": f"Bearer {department}"}
        with TestClient(create_app(settings)) as client:
            for fine in ("1", "2", "3"):
                record = factories.penalty(1, fine_amount_wan=fine)
                answer = client.post(
                    "/v1/records",
                    json={"standard": "administrative_penalty", "records": [record]},
                    headers=auth,
                )
                assert answer.status_code == 201, answer.text
        config = migrate.alembic_config(settings)
        command.downgrade(config, "c5d1f8e2a7b6")
        engine = make_engine(settings)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT version, created_at, superseded_at FROM record_version "
                        "ORDER BY version"
                    )
                ).all()
            assert [r.version for r in rows] == [1, 2, 3]
            assert [r.superseded_at for r in rows] == [rows[1].created_at, rows[2].created_at, None]
            command.upgrade(config, "head")
            columns = [c["name"] for c in inspect(engine).get_columns("record_version")]
            assert "superseded_at" not in columns
        finally:
            engine.dispose()


def test_postgresql_writes_large_documents_with_lz4_and_reads_them_after_a_downgrade(
    tmp_path: Path,
) -> None:
    # e2b7c4f91a58: a push's report (~200 bytes per record) is compressed with lz4; values
    # written before or after a change of method stay readable.
    if not SERVER_DATABASE_URL:
        pytest.skip("PostgreSQL compresses large values; SQLite does not")
    with dedicated_settings(tmp_path, "credit_hub_test_lz4") as settings:
        with sessions_on(settings) as sessions:
            department = new_client(sessions, ClientKind.DEPARTMENT)[1]
        auth = {"Authorization": f"Bearer {department}"}
        records = [factories.penalty(n) for n in range(60)]
        with TestClient(create_app(settings)) as client:
            pushed = client.post(
                "/v1/records",
                json={"standard": "administrative_penalty", "records": records},
                headers=auth,
            )
            assert pushed.status_code == 201, pushed.text
        engine = make_engine(settings)
        try:
            assert _compression(engine, "submission", "report") == "l"
            assert _compression(engine, "record_version", "data") == "l"
            with engine.connect() as connection:
                method, created = connection.execute(
                    text(
                        "SELECT pg_column_compression(report), report->'counts'->>'created' "
                        "FROM submission"
                    )
                ).one()
            assert (method, created) == ("lz4", "60")
            command.downgrade(migrate.alembic_config(settings), "d8e4a1c6b203")
            assert _compression(engine, "submission", "report") == ""
            with engine.connect() as connection:
                outcomes = connection.execute(
                    text("SELECT jsonb_array_length(report->'records') FROM submission")
                ).scalar()
            assert outcomes == 60
        finally:
            engine.dispose()


def _compression(engine: Engine, table: str, column: str) -> str:
    """pg_attribute.attcompression: 'l' for lz4, 'p' for pglz, '' for the server's default."""
    with engine.connect() as connection:
        return str(
            connection.execute(
                text(
                    "SELECT attcompression FROM pg_attribute "
                    "WHERE attrelid = CAST(:table AS regclass) AND attname = :column"
                ),
                {"table": table, "column": column},
            ).scalar()
        )


def test_postgresql_numbers_stored_names_in_id_order_and_new_ones_after_them(
    tmp_path: Path,
) -> None:
    # a7c1e9d3f5b2: names stored before it are numbered (search_seq) in the order of their
    # ids, their search positions until then, whatever order they were written in.
    if not SERVER_DATABASE_URL:
        pytest.skip("PostgreSQL numbers names for its search; SQLite searches by rowid")
    with dedicated_settings(tmp_path, "credit_hub_test_search_seq") as settings:
        config = migrate.alembic_config(settings)
        command.downgrade(config, "f3a9d2c7b814")
        engine = make_engine(settings)
        try:
            names = [f"编号测试{i}有限公司" for i in range(5)]
            with sessions_on(settings) as sessions, sessions() as session:
                for i in reversed(range(5)):  # written last first
                    _add_name(session, names[i], uuid.UUID(int=i + 1))
                session.commit()
            command.upgrade(config, "head")
            with sessions_on(settings) as sessions, sessions() as session:
                _add_name(session, "编号测试新", uuid.UUID(int=0))  # lowest id, written after
                session.commit()
                numbered = session.execute(
                    text("SELECT name FROM subject_name ORDER BY search_seq")
                ).scalars()
                assert list(numbered) == [*names, "编号测试新"]
                hits, _ = search.search(
                    session, "编号测试", limit=10, cursor=None, include_persons=False
                )
                assert [hit.matched_name for hit in hits] == [*names, "编号测试新"]
            command.downgrade(config, "f3a9d2c7b814")
            assert "search_seq" not in [
                c["name"] for c in inspect(engine).get_columns("subject_name")
            ]
            indexes = [i["name"] for i in inspect(engine).get_indexes("subject_name")]
            assert "ix_subject_name_name_trgm" in indexes
        finally:
            engine.dispose()


def _add_name(session: Session, name: str, name_id: uuid.UUID) -> None:
    subject = Subject(id=new_id(), kind=SubjectKind.ORGANIZATION, name=name)
    session.add(subject)
    session.flush()
    day = date(2026, 1, 2)
    session.add(
        SubjectName(
            id=name_id, subject_id=subject.id, name=name, first_seen_on=day, last_seen_on=day
        )
    )
    session.flush()
