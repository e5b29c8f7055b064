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
        diff = [
            d for d in compare_metadata(context, Base.metadata) if not _is_search_infrastructure(d)
        ]
    assert diff == []


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
