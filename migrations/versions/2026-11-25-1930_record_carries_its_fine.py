"""record.fine_amount_wan: the current version's fine, where summaries read it

Screening summarizes the records of up to 1,000 subjects. It read each record's current
version only for the fine in its JSON document: about 5,000 wide rows per screening, fetched
one by one. The record row now carries the fine (as the version's exact decimal text), so that
summaries read the record table alone. Filled here from each record's current version.

Revision ID: c5d1f8e2a7b6
Revises: a3c7e9d15b40
Create Date: 2026-11-25 19:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c5d1f8e2a7b6"
down_revision: str | None = "a3c7e9d15b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("record", sa.Column("fine_amount_wan", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE record SET fine_amount_wan = v.data ->> 'fine_amount_wan' "
            "FROM record_version v WHERE v.record_id = record.id AND v.version = record.version "
            "AND v.data ->> 'fine_amount_wan' IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE record SET fine_amount_wan = ("
            "SELECT json_extract(v.data, '$.fine_amount_wan') FROM record_version v "
            "WHERE v.record_id = record.id AND v.version = record.version)"
        )


def downgrade() -> None:
    with op.batch_alter_table("record") as batch:
        batch.drop_column("fine_amount_wan")
