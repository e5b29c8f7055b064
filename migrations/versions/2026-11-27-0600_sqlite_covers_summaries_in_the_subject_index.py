"""SQLite: the record index by subject covers what summaries read

A screening summarizes the records of up to 1,000 subjects, about 5,000 rows. SQLite found them
by the index (subject_id, standard), then looked each row up in the table by rowid: 5,000
random reads of a table that grows with the hub, and half of the query's time. The index now
carries every column the summary filters on or reads (status, withheld_reason, the publication
window, under_objection, decision_date, fine_amount_wan), so the query reads the index alone;
it still serves every lookup by subject. In-process at 1M / 3M records, 1,000 random subjects:
33-35 / 40-50 ms before, 18-20 / 19-21 ms after.

PostgreSQL keeps (subject_id, standard): an index-only scan there needs the visibility map,
which a table taking pushes all day keeps partly unset, and its screening was not measured
to need it.

Revision ID: b8e4d2a6c913
Revises: a7c1e9d3f5b2
Create Date: 2026-11-27 06:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b8e4d2a6c913"
down_revision: str | None = "a7c1e9d3f5b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COVERED = (
    "subject_id, standard, status, withheld_reason, publish_from, publish_until, "
    "under_objection, decision_date, fine_amount_wan"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"CREATE INDEX ix_record_subject_facts ON record ({COVERED})")
    op.execute("DROP INDEX ix_record_subject_id_standard")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE INDEX ix_record_subject_id_standard ON record (subject_id, standard)")
    op.execute("DROP INDEX ix_record_subject_facts")
