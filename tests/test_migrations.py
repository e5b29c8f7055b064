"""Alembic owns the schema: the migrations build exactly what the models describe, both ways."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from credit_hub import migrate
from credit_hub.config import Settings
from credit_hub.db import make_engine
from credit_hub.models import Base


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
    # Full-text tables and triggers are created by hand-written migrations, not by models.
    text = repr(diff)
    return any(
        name in text
        for name in ("subject_name_fts", "ix_subject_name_name_trgm", "ix_subject_name_name_prefix")
    )


def test_upgrade_then_downgrade_on_a_fresh_sqlite(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(settings)
    fresh = make_engine(settings)
    assert "record_version" in inspect(fresh).get_table_names()
    migrate.upgrade(settings, "head")  # idempotent
    from alembic import command

    command.downgrade(migrate.alembic_config(settings), "base")
    assert "record_version" not in inspect(fresh).get_table_names()
    fresh.dispose()
