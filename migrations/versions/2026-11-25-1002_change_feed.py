"""change feed, watch lists, webhook subscriptions and outbox

Revision ID: 8d4a0e6f3b82
Revises: 6c3f9d5e2a71
Create Date: 2026-11-25 10:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "8d4a0e6f3b82"
down_revision: str | None = "6c3f9d5e2a71"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
