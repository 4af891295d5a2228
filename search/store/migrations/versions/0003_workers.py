"""Workers' liveness rows: what each live worker runs on and which task plugins it offers.

Revision ID: 0003_workers
Revises: 0002_workloads
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_workers"
down_revision: str | Sequence[str] | None = "0002_workloads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create lrsearch_workers."""
    op.create_table(
        "lrsearch_workers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("device", sa.String(255), nullable=False),
        sa.Column("plugins", _JSON, nullable=False),
        sa.Column("current_trial", sa.String(64), nullable=True),
    )
    op.create_index("ix_lrsearch_workers_last_seen", "lrsearch_workers", ["last_seen"])


def downgrade() -> None:
    """Drop lrsearch_workers."""
    op.drop_index("ix_lrsearch_workers_last_seen", "lrsearch_workers")
    op.drop_table("lrsearch_workers")
