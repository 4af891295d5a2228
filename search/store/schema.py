"""lrsearch's own tables (prefixed `lrsearch_`), their column types, and the names and
clocks every part of the store shares."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

StudyStatus = Literal["queued", "running", "completed", "cancelled", "failed"]
STUDY_STATUSES: tuple[str, ...] = ("queued", "running", "completed", "cancelled", "failed")
RUNNABLE: tuple[str, ...] = ("queued", "running")
FINAL: tuple[str, ...] = ("completed", "cancelled", "failed")
OPTUNA_STATES: tuple[str, ...] = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def utcnow() -> datetime:
    """Timezone-aware now in UTC: the only clock our tables use."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> str:
    """A random 32-char hex id (never derived from user input)."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware UTC datetimes (SQLite drops tzinfo otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of lrsearch's own tables (Alembic's target metadata)."""


class Tenant(Base):
    """Who owns studies and datasets; tokens authenticate as one tenant."""

    __tablename__ = "lrsearch_tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token, stored only as its sha256 hex digest."""

    __tablename__ = "lrsearch_api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("lrsearch_tenants.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Study(Base):
    """One study as users see it; its trials live in Optuna's study `optuna_study_name`."""

    __tablename__ = "lrsearch_studies"
    __table_args__ = (Index("ix_lrsearch_studies_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("lrsearch_tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    n_trials: Mapped[int] = mapped_column(Integer)
    trials_claimed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    optuna_study_name: Mapped[str] = mapped_column(String(64), unique=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def direction(self) -> str:
        """The study's optimisation direction, as stored in its spec."""
        return str(self.spec.get("objective", {}).get("direction") or "minimize")

    @property
    def dataset_ref(self) -> str:
        """The dataset the spec trains on ("digits" or an uploaded dataset id)."""
        return str(self.spec.get("task", {}).get("dataset", "digits"))


class StoredDataset(Base):
    """An uploaded dataset, normalised to NPZ at `data_dir / path`."""

    __tablename__ = "lrsearch_datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("lrsearch_tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))
    n_train: Mapped[int] = mapped_column(Integer)
    n_val: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[list[int]] = mapped_column(JsonType)
    task: Mapped[str] = mapped_column(String(32))
    n_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: A dataset registered by path (search.data.references): where its files are and how
    #: to read them; None for an upload, stored at `path` under the data directory.
    source: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)


class StoredModel(Base):
    """An uploaded `.keras` model file, stored at `data_dir / path`."""

    __tablename__ = "lrsearch_models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("lrsearch_tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(255))
    class_name: Mapped[str] = mapped_column(String(64))
    keras_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    input_shape: Mapped[list[int | None] | None] = mapped_column(JsonType, nullable=True)
    est_params: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerRow(Base):
    """A live worker process and what it can run, refreshed while it lives (`last_seen`)
    and deleted when it exits cleanly; the API reads it to refuse a study no worker can
    run, and `lrsearch tasks` to list what the workers offer."""

    __tablename__ = "lrsearch_workers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: What it trains on: "CPU", or its GPUs ("GPU:0 NVIDIA H200").
    device: Mapped[str] = mapped_column(String(255))
    #: Its installed task plugins, {name: version}.
    plugins: Mapped[dict[str, str]] = mapped_column(JsonType)
    #: The trial it trains now, "<study id>/<trial number>" (None when idle).
    current_trial: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RateEvent(Base):
    """One study creation request counted against a rate key's sliding window (created or
    refused alike). In the database, not in an API process, so every replica counts the same
    requests; rows older than the window are pruned as the key is used."""

    __tablename__ = "lrsearch_rate_events"
    __table_args__ = (Index("ix_lrsearch_rate_events_key_at", "rate_key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rate_key: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
