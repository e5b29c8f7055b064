"""PostgreSQL: drop the plain B-tree on subject_name.name, which no query there uses

On PostgreSQL, name search reads the pg_trgm GIN index (substrings) and the `COLLATE "C"`
B-tree (prefixes); the plain B-tree on `name` only cost every new name an index entry, about
1.8 ms of a 1,000-record push (bench/ingest.py). SQLite keeps it: its prefix search reads it.

Revision ID: a3c7e9d15b40
Revises: 9e5b1f7c4a93
Create Date: 2026-11-25 17:30:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a3c7e9d15b40"
down_revision: str | None = "9e5b1f7c4a93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_subject_name_name")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX IF NOT EXISTS ix_subject_name_name ON subject_name (name)")
