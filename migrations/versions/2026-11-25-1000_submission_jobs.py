"""file submissions and background jobs

Revision ID: 5b2e8c4d1f60
Revises: 4c1d2e7a9b30
Create Date: 2026-11-25 10:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import credit_hub.db

revision: str = "5b2e8c4d1f60"
down_revision: str | None = "4c1d2e7a9b30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("submission", schema=None) as batch_op:
        batch_op.add_column(sa.Column("format", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("encoding", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("filename", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("file_path", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("size_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("options", JSON, nullable=True))
        batch_op.add_column(
            sa.Column("rows_read", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("bytes_read", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("rows_total", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("lease_until", credit_hub.db.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("started_at", credit_hub.db.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_submission_status_created_at", ["status", "created_at"], unique=False
        )

    op.create_table(
        "submission_error",
        sa.Column("submission_id", sa.Uuid(), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.String(length=200), nullable=True),
        sa.Column("errors", JSON, nullable=False),
        sa.Column("cells_enc", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submission.id"],
            name=op.f("fk_submission_error_submission_id_submission"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("submission_id", "row", name=op.f("pk_submission_error")),
    )


def downgrade() -> None:
    op.drop_table("submission_error")
    with op.batch_alter_table("submission", schema=None) as batch_op:
        batch_op.drop_index("ix_submission_status_created_at")
        for column in (
            "started_at",
            "attempts",
            "lease_until",
            "claimed_by",
            "rows_total",
            "bytes_read",
            "rows_read",
            "options",
            "size_bytes",
            "file_path",
            "filename",
            "encoding",
            "format",
        ):
            batch_op.drop_column(column)
