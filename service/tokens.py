"""Tenants and API tokens. A token is shown once at creation; only its sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from search import store

TOKEN_PREFIX = "lrs_"


def hash_token(token: str) -> str:
    """Tokens are stored only as sha256 hex, so a leaked table reveals no usable token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_tenant(session: Session, name: str) -> store.Tenant:
    """The tenant with this name, created if absent."""
    return store.get_or_create_tenant(session, name)


def create_token(session: Session, tenant_name: str) -> str:
    """A new token for the tenant (created if absent); the caller must show it now."""
    tenant = create_tenant(session, tenant_name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(store.ApiToken(tenant_id=tenant.id, token_hash=hash_token(token)))
    session.commit()
    return token


def revoke_token(session: Session, token: str) -> bool:
    """Revoke the token; False when it is unknown or already revoked."""
    row = session.scalar(
        select(store.ApiToken).where(store.ApiToken.token_hash == hash_token(token))
    )
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = store.utcnow()
    session.commit()
    return True
