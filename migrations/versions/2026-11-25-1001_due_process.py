"""due process: access codes, objections, repairs, retention

Revision ID: 6c3f9d5e2a71
Revises: 5b2e8c4d1f60
Create Date: 2026-11-25 10:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import credit_hub.db

revision: str = "6c3f9d5e2a71"
down_revision: str | None = "5b2e8c4d1f60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UtcDateTime = credit_hub.db.UtcDateTime


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("withheld_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("purged_at", UtcDateTime(timezone=True), nullable=True))

    op.create_table(
        "access_code",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("used_at", UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["issued_by"], ["client.id"], name=op.f("fk_access_code_issued_by_client")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_access_code_subject_id_subject")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_code")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_access_code_code_hash")),
    )
    with op.batch_alter_table("access_code", schema=None) as batch_op:
        batch_op.create_index("ix_access_code_subject_id", ["subject_id"], unique=False)

    op.create_table(
        "subject_session",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("access_code_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["access_code_id"],
            ["access_code.id"],
            name=op.f("fk_subject_session_access_code_id_access_code"),
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_subject_session_subject_id_subject")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_subject_session_token_hash")),
    )
    with op.batch_alter_table("subject_session", schema=None) as batch_op:
        batch_op.create_index("ix_subject_session_subject_id", ["subject_id"], unique=False)

    op.create_table(
        "objection",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("record_version", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("department_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attachments", _json(), nullable=False),
        sa.Column("filed_by_kind", sa.String(length=16), nullable=False),
        sa.Column("filed_by_id", sa.Uuid(), nullable=True),
        sa.Column("filed_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("answered_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("answered_by", sa.Uuid(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("remedy", sa.String(length=16), nullable=True),
        sa.Column("corrected_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["answered_by"], ["client.id"], name=op.f("fk_objection_answered_by_client")
        ),
        sa.ForeignKeyConstraint(
            ["department_id"], ["client.id"], name=op.f("fk_objection_department_id_client")
        ),
        sa.ForeignKeyConstraint(
            ["filed_by_id"], ["client.id"], name=op.f("fk_objection_filed_by_id_client")
        ),
        sa.ForeignKeyConstraint(
            ["record_id"], ["record.id"], name=op.f("fk_objection_record_id_record")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_objection_subject_id_subject")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objection")),
    )
    with op.batch_alter_table("objection", schema=None) as batch_op:
        batch_op.create_index("ix_objection_record_id", ["record_id"], unique=False)
        batch_op.create_index("ix_objection_subject_id", ["subject_id"], unique=False)
        batch_op.create_index(
            "ix_objection_department_id_status", ["department_id", "status"], unique=False
        )
        batch_op.create_index(
            "uq_objection_open_record",
            ["record_id"],
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )

    op.create_table(
        "repair",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("department_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("corrective_actions", sa.Text(), nullable=False),
        sa.Column("commitment", sa.Text(), nullable=False),
        sa.Column("evidence", _json(), nullable=False),
        sa.Column("filed_by_kind", sa.String(length=16), nullable=False),
        sa.Column("filed_by_id", sa.Uuid(), nullable=True),
        sa.Column("filed_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("decide_by", sa.Date(), nullable=False),
        sa.Column("case_due_on", sa.Date(), nullable=False),
        sa.Column("decided_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("decision_reasons", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["client.id"], name=op.f("fk_repair_decided_by_client")
        ),
        sa.ForeignKeyConstraint(
            ["department_id"], ["client.id"], name=op.f("fk_repair_department_id_client")
        ),
        sa.ForeignKeyConstraint(
            ["filed_by_id"], ["client.id"], name=op.f("fk_repair_filed_by_id_client")
        ),
        sa.ForeignKeyConstraint(
            ["record_id"], ["record.id"], name=op.f("fk_repair_record_id_record")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_repair_subject_id_subject")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repair")),
    )
    with op.batch_alter_table("repair", schema=None) as batch_op:
        batch_op.create_index("ix_repair_record_id", ["record_id"], unique=False)
        batch_op.create_index("ix_repair_subject_id", ["subject_id"], unique=False)
        batch_op.create_index(
            "ix_repair_department_id_status", ["department_id", "status"], unique=False
        )
        batch_op.create_index(
            "uq_repair_pending_record",
            ["record_id"],
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )


def downgrade() -> None:
    op.drop_table("repair")
    op.drop_table("objection")
    op.drop_table("subject_session")
    op.drop_table("access_code")
    with op.batch_alter_table("record", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
        batch_op.drop_column("withheld_reason")
