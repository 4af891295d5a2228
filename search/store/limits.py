"""Per-tenant limits that every API process shares: the study creation rate and the quota
of active studies, each checked and spent in one transaction under the tenant's lock.

Why in the database: several API replicas share one database, and a check in one process
(or a count read before an insert without a lock) let 16 concurrent creations through a
limit of 10. The lock is `SELECT ... FOR NO KEY UPDATE` on the tenant's row on PostgreSQL; on
SQLite, a write to that row, which takes the database's single write lock until commit.
Either way, a second request of the same tenant waits until the first has committed, and
then counts what it wrote.
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from search.store.schema import RateEvent, Tenant, as_utc, utcnow

#: The rate limit's sliding window.
RATE_WINDOW_S = 60.0


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Hold the tenant's lock until this session's transaction ends (commit or rollback).

    On SQLite the transaction must not have read yet (pysqlite begins it at this write), so
    its reads afterwards see every commit made before the lock was taken.
    """
    if session.get_bind().dialect.name == "postgresql":
        # FOR NO KEY UPDATE: serialises these checks without blocking the foreign-key checks
        # of other inserts that name the tenant (datasets, models, tokens)
        lock = select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        session.execute(lock)
    else:
        stmt = update(Tenant).where(Tenant.id == tenant_id).values(name=Tenant.name)
        session.execute(stmt.execution_options(synchronize_session=False))


def take_rate_slot(
    session: Session,
    tenant_id: str,
    rate_key: str,
    per_window: int,
    window_s: float = RATE_WINDOW_S,
) -> int | None:
    """Count one request against `rate_key` unless its window is full. Commits.

    None when counted; otherwise the seconds until the oldest request leaves the window
    (at least 1), and nothing is counted. `rate_key` must belong to `tenant_id`, whose
    lock serialises the count and the insert. The clock is the API host's: replicas
    should keep theirs in sync (NTP), as they would for any timestamp.
    """
    try:
        lock_tenant(session, tenant_id)
        now = utcnow()  # read under the lock: the window's events are in the order taken
        cutoff = now - timedelta(seconds=window_s)
        session.execute(
            delete(RateEvent)
            .where(RateEvent.rate_key == rate_key, RateEvent.at <= cutoff)
            .execution_options(synchronize_session=False)
        )
        in_window = select(func.count(), func.min(RateEvent.at)).where(
            RateEvent.rate_key == rate_key, RateEvent.at > cutoff
        )
        count, oldest = session.execute(in_window).one()
        if count >= per_window:
            session.commit()  # keeps the pruning, ends the lock
            frees_at = as_utc(oldest) + timedelta(seconds=window_s)
            return max(1, math.ceil((frees_at - now).total_seconds()))
        session.add(RateEvent(rate_key=rate_key, at=now))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return None
