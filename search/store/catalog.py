"""Tenants, studies and datasets as the API lists and reads them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from search.store.schema import RUNNABLE, StoredDataset, StoredModel, Study, Tenant

# --- tenants -------------------------------------------------------------------------------


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant with this name, created if absent (safe against a concurrent creator)."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is not None:
        return tenant
    tenant = Tenant(name=name)
    session.add(tenant)
    try:
        session.commit()
    except sa.exc.IntegrityError:
        session.rollback()
        return session.scalars(select(Tenant).where(Tenant.name == name)).one()
    return tenant


# --- study queries used by the API ---------------------------------------------------------


def get_study(session: Session, study_id: str, tenant_id: str | None = None) -> Study | None:
    """The study, or None when absent or owned by another tenant."""
    stmt = select(Study).where(Study.id == study_id)
    if tenant_id is not None:
        stmt = stmt.where(Study.tenant_id == tenant_id)
    return session.scalar(stmt)


def list_studies(
    session: Session,
    tenant_id: str,
    *,
    status: str | None = None,
    limit: int = 50,
    after: tuple[datetime, str] | None = None,
) -> list[Study]:
    """A page of the tenant's studies, newest first; `after` is the last (created_at, id)."""
    stmt = select(Study).where(Study.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Study.status == status)
    if after is not None:
        created, last_id = after
        stmt = stmt.where(
            sa.or_(
                Study.created_at < created,
                sa.and_(Study.created_at == created, Study.id < last_id),
            )
        )
    stmt = stmt.order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def count_active_studies(session: Session, tenant_id: str) -> int:
    """How many queued or running studies the tenant has (its quota)."""
    stmt = select(func.count()).where(Study.tenant_id == tenant_id, Study.status.in_(RUNNABLE))
    return int(session.scalar(stmt) or 0)


def active_studies_using(session: Session, tenant_id: str, dataset_id: str) -> int:
    """How many queued or running studies of the tenant train on this dataset."""
    stmt = select(func.count()).where(
        Study.tenant_id == tenant_id,
        Study.status.in_(RUNNABLE),
        Study.spec[("task", "dataset")].as_string() == dataset_id,
    )
    return int(session.scalar(stmt) or 0)


# --- datasets ------------------------------------------------------------------------------


def get_dataset(session: Session, dataset_id: str, tenant_id: str) -> StoredDataset | None:
    """The tenant's dataset, or None when absent or another tenant's."""
    stmt = select(StoredDataset).where(
        StoredDataset.id == dataset_id, StoredDataset.tenant_id == tenant_id
    )
    return session.scalar(stmt)


def list_datasets(session: Session, tenant_id: str) -> list[StoredDataset]:
    """The tenant's datasets, newest first (bounded by the per-tenant quota)."""
    stmt = (
        select(StoredDataset)
        .where(StoredDataset.tenant_id == tenant_id)
        .order_by(StoredDataset.created_at.desc(), StoredDataset.id.desc())
    )
    return list(session.scalars(stmt))


def count_datasets(session: Session, tenant_id: str) -> int:
    """How many datasets the tenant stores (its quota)."""
    stmt = select(func.count()).where(StoredDataset.tenant_id == tenant_id)
    return int(session.scalar(stmt) or 0)


# --- model files -----------------------------------------------------------------------------


def get_model(session: Session, model_id: str, tenant_id: str) -> StoredModel | None:
    """The tenant's model file, or None when absent or another tenant's."""
    stmt = select(StoredModel).where(StoredModel.id == model_id, StoredModel.tenant_id == tenant_id)
    return session.scalar(stmt)


def list_models(session: Session, tenant_id: str) -> list[StoredModel]:
    """The tenant's model files, newest first (bounded by the per-tenant quota)."""
    stmt = (
        select(StoredModel)
        .where(StoredModel.tenant_id == tenant_id)
        .order_by(StoredModel.created_at.desc(), StoredModel.id.desc())
    )
    return list(session.scalars(stmt))


def count_models(session: Session, tenant_id: str) -> int:
    """How many model files the tenant stores (its quota)."""
    stmt = select(func.count()).where(StoredModel.tenant_id == tenant_id)
    return int(session.scalar(stmt) or 0)


def active_studies_using_model(session: Session, tenant_id: str, model_id: str) -> int:
    """How many queued or running studies of the tenant train this model file."""
    stmt = select(func.count()).where(
        Study.tenant_id == tenant_id,
        Study.status.in_(RUNNABLE),
        Study.spec[("task", "model", "id")].as_string() == model_id,
    )
    return int(session.scalar(stmt) or 0)
