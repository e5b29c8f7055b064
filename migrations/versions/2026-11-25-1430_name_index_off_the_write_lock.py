"""SQLite: the trigram name index leaves the database for a file of its own

The FTS5 table `subject_name_fts` and the triggers that kept it in step with `subject_name`
made every push index its new names under SQLite's one write lock. The index now lives in
`<database>-search`, kept by a background thread (credit_hub.sqlite_search) and rebuilt there
from `subject_name` when missing, so this migration only drops it. PostgreSQL keeps its pg_trgm
index: nothing changes there. Downgrading recreates the table and its triggers and fills it.

Revision ID: 9e5b1f7c4a93
Revises: 8d4a0e6f3b82
Create Date: 2026-11-25 14:30:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9e5b1f7c4a93"
down_revision: str | None = "8d4a0e6f3b82"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UP = [
    "DROP TRIGGER IF EXISTS subject_name_fts_update",
    "DROP TRIGGER IF EXISTS subject_name_fts_delete",
    "DROP TRIGGER IF EXISTS subject_name_fts_insert",
    "DROP TABLE IF EXISTS subject_name_fts",
]
# As 2026-11-25-0915_subject_search_and_objection_flag created them.
SQLITE_DOWN = [
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
