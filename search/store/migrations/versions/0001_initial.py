"""Initial lrsearch tables: tenants, API tokens, studies, datasets.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the four tables and their indexes."""
    op.create_table(
        "lrsearch_tenants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        _ts("created_at"),
    )
    op.create_table(
        "lrsearch_api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("lrsearch_tenants.id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
    )
    op.create_index("ix_lrsearch_api_tokens_tenant_id", "lrsearch_api_tokens", ["tenant_id"])
    op.create_table(
        "lrsearch_studies",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("lrsearch_tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n_trials", sa.Integer, nullable=False),
        sa.Column("trials_claimed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("optuna_study_name", sa.String(64), nullable=False, unique=True),
        sa.Column("error", sa.Text, nullable=True),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        _ts("updated_at"),
    )
    op.create_index("ix_lrsearch_studies_status", "lrsearch_studies", ["status"])
    op.create_index(
        "ix_lrsearch_studies_tenant_created", "lrsearch_studies", ["tenant_id", "created_at", "id"]
    )
    op.create_table(
        "lrsearch_datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("lrsearch_tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("n_train", sa.Integer, nullable=False),
        sa.Column("n_val", sa.Integer, nullable=False),
        sa.Column("input_shape", _JSON, nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("n_classes", sa.Integer, nullable=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_lrsearch_datasets_tenant_id", "lrsearch_datasets", ["tenant_id"])


def downgrade() -> None:
    """Drop the four tables (Optuna's tables are left alone)."""
    op.drop_table("lrsearch_datasets")
    op.drop_table("lrsearch_studies")
    op.drop_table("lrsearch_api_tokens")
    op.drop_table("lrsearch_tenants")
