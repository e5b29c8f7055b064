"""PostgreSQL: the large documents are compressed with lz4 instead of pglz

A value over about 2 KB is compressed before PostgreSQL stores it out of line (TOAST), with
pglz unless the column says otherwise. The report of a 1,000-record push (~200 KB of JSON,
every record's outcome) was compressed with pglz on every push: the submission's update took
~7 ms of a batch, ~4 ms with lz4 (bench/ingest.py's batches, in-process). lz4 also
decompresses several times faster when a report, a large record or a file's errors are read.
Values stored before keep their pglz form (PostgreSQL reads both); new ones are written with
lz4. Skipped on a server built without lz4 (`default_toast_compression` does not offer it),
and on SQLite, which does not compress.

Revision ID: e2b7c4f91a58
Revises: d8e4a1c6b203
Create Date: 2026-11-26 13:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e2b7c4f91a58"
down_revision: str | None = "d8e4a1c6b203"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns whose values pass 2 KB: reports, record documents, a file's rejected rows.
COLUMNS = (
    ("submission", "report"),
    ("record_version", "data"),
    ("record_version", "originals"),
    ("submission_error", "errors"),
)


def _lz4_available() -> bool:
    offered = op.get_bind().exec_driver_sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    return bool(offered.scalar())


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or (method == "lz4" and not _lz4_available()):
        return
    for table, column in COLUMNS:
        # Only the column's setting changes: no stored value is rewritten, no table is scanned.
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("default")
