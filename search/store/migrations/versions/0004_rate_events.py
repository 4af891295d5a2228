"""Study creation requests per rate key, so every API replica counts the same window.

Revision ID: 0004_rate_events
Revises: 0003_workers
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_rate_events"
down_revision: str | Sequence[str] | None = "0003_workers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create lrsearch_rate_events."""
    op.create_table(
        "lrsearch_rate_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rate_key", sa.String(80), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lrsearch_rate_events_key_at", "lrsearch_rate_events", ["rate_key", "at"])


def downgrade() -> None:
    """Drop lrsearch_rate_events."""
    op.drop_index("ix_lrsearch_rate_events_key_at", "lrsearch_rate_events")
    op.drop_table("lrsearch_rate_events")
