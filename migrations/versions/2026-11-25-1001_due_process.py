"""due process: access codes, objections, repairs, retention

Revision ID: 6c3f9d5e2a71
Revises: 5b2e8c4d1f60
Create Date: 2026-11-25 10:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "6c3f9d5e2a71"
down_revision: str | None = "5b2e8c4d1f60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
