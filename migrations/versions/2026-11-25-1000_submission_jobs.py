"""file submissions and background jobs

Revision ID: 5b2e8c4d1f60
Revises: 4c1d2e7a9b30
Create Date: 2026-11-25 10:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "5b2e8c4d1f60"
down_revision: str | None = "4c1d2e7a9b30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
