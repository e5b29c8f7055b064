"""record_version.superseded_at dropped: the versions stored after one say when it ended

Every correction rewrote its record's previous version row only to stamp the instant it was
superseded, the instant the next version's `created_at` already holds. At a million records
that rewrite reached a cold page per correction (SQLite) or copied a ~1.5 KB row
(PostgreSQL). An `as_of` profile now takes the highest-numbered version created by then, and
the record history shows the next version's `created_at` as a version's end. The downgrade
fills the column back from it.

Revision ID: d8e4a1c6b203
Revises: c5d1f8e2a7b6
Create Date: 2026-11-26 03:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import credit_hub.db

revision: str = "d8e4a1c6b203"
down_revision: str | None = "c5d1f8e2a7b6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite 3.35 and later drop a column with ALTER TABLE: no batch copy of the table.
    op.drop_column("record_version", "superseded_at")


def downgrade() -> None:
    op.add_column(
        "record_version",
        sa.Column("superseded_at", credit_hub.db.UtcDateTime(timezone=True), nullable=True),
    )
    op.execute(
        "UPDATE record_version SET superseded_at = ("
        "SELECT n.created_at FROM record_version n "
        "WHERE n.record_id = record_version.record_id AND n.version = record_version.version + 1)"
    )
