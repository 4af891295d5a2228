"""Model files and datasets by reference: the lrsearch_models table, and the `source` of a
dataset registered by path (NULL for uploads, stored under the data directory).

Revision ID: 0002_workloads
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_workloads"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create lrsearch_models; add lrsearch_datasets.source."""
    op.create_table(
        "lrsearch_models",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("lrsearch_tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("class_name", sa.String(64), nullable=False),
        sa.Column("keras_version", sa.String(32), nullable=True),
        sa.Column("input_shape", _JSON, nullable=True),
        sa.Column("est_params", sa.BigInteger, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lrsearch_models_tenant_id", "lrsearch_models", ["tenant_id"])
    with op.batch_alter_table("lrsearch_datasets") as batch:
        batch.add_column(sa.Column("source", _JSON, nullable=True))


def downgrade() -> None:
    """Drop what upgrade added."""
    with op.batch_alter_table("lrsearch_datasets") as batch:
        batch.drop_column("source")
    op.drop_index("ix_lrsearch_models_tenant_id", "lrsearch_models")
    op.drop_table("lrsearch_models")
