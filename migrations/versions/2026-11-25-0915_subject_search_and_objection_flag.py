"""subject name search index and the record's objection flag

Search by name uses a real index on both databases: SQLite FTS5 with the trigram tokenizer
(an external-content table over subject_name, kept in step by triggers), PostgreSQL pg_trgm
(a GIN index) plus a C-collated B-tree for short prefixes.

Revision ID: 4c1d2e7a9b30
Revises: f9a814dc4d89
Create Date: 2026-11-25 09:15:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4c1d2e7a9b30"
down_revision: str | None = "f9a814dc4d89"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UP = [
    "CREATE VIRTUAL TABLE subject_name_fts USING fts5("
    "name, content='subject_name', content_rowid='rowid', tokenize='trigram')",
    "INSERT INTO subject_name_fts(rowid, name) SELECT rowid, name FROM subject_name",
    "CREATE TRIGGER subject_name_fts_insert AFTER INSERT ON subject_name BEGIN "
    "INSERT INTO subject_name_fts(rowid, name) VALUES (new.rowid, new.name); END",
    "CREATE TRIGGER subject_name_fts_delete AFTER DELETE ON subject_name BEGIN "
    "INSERT INTO subject_name_fts(subject_name_fts, rowid, name) "
    "VALUES ('delete', old.rowid, old.name); END",
    "CREATE TRIGGER subject_name_fts_update AFTER UPDATE OF name ON subject_name BEGIN "
    "INSERT INTO subject_name_fts(subject_name_fts, rowid, name) "
    "VALUES ('delete', old.rowid, old.name); "
    "INSERT INTO subject_name_fts(rowid, name) VALUES (new.rowid, new.name); END",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS subject_name_fts_update",
    "DROP TRIGGER IF EXISTS subject_name_fts_delete",
    "DROP TRIGGER IF EXISTS subject_name_fts_insert",
    "DROP TABLE IF EXISTS subject_name_fts",
]
POSTGRES_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_subject_name_name_trgm ON subject_name USING gin (name gin_trgm_ops)",
    'CREATE INDEX ix_subject_name_name_prefix ON subject_name (name COLLATE "C")',
]
POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_subject_name_name_prefix",
    "DROP INDEX IF EXISTS ix_subject_name_name_trgm",
]


def upgrade() -> None:
    with op.batch_alter_table("record", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("under_objection", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    statements = SQLITE_UP if op.get_bind().dialect.name == "sqlite" else POSTGRES_UP
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRES_DOWN
    for statement in statements:
        op.execute(statement)
    with op.batch_alter_table("record", schema=None) as batch_op:
        batch_op.drop_column("under_objection")
