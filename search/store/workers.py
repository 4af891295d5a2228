"""Workers' liveness rows: a worker registers what it can run when it starts, refreshes
`last_seen` while it lives (one small UPDATE), and deletes its row when it exits cleanly.
A row not seen within the window the reader gives (the grace period) is a dead worker's:
it offers nothing, and registering prunes the rows dead for a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from search.store.engines import DIALECT_INSERTS
from search.store.schema import WorkerRow, utcnow

#: A row unseen this long is deleted when any worker registers (a worker killed -9 left it).
PRUNE_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class LiveWorker:
    """One live worker as readers see it."""

    id: str
    host: str
    pid: int
    started_at: datetime
    last_seen: datetime
    device: str
    plugins: dict[str, str]
    current_trial: str | None = None


def register_worker(
    session: Session,
    worker_id: str,
    *,
    host: str,
    pid: int,
    device: str,
    plugins: dict[str, str],
    now: datetime | None = None,
) -> None:
    """Insert (or refresh) this worker's row, and prune rows dead for a day. Commits."""
    now = now or utcnow()
    session.execute(delete(WorkerRow).where(WorkerRow.last_seen < now - PRUNE_AFTER))
    insert = DIALECT_INSERTS[session.get_bind().dialect.name]
    values = {
        "host": host[:255],
        "pid": pid,
        "device": device[:255],
        "plugins": dict(plugins),
        "last_seen": now,
    }
    stmt = (
        insert(WorkerRow)
        .values(id=worker_id, started_at=now, **values)
        .on_conflict_do_update(index_elements=[WorkerRow.id], set_=values)
    )
    session.execute(stmt)
    session.commit()


def touch_worker(
    session: Session,
    worker_id: str,
    now: datetime | None = None,
    current_trial: str | None = None,
) -> bool:
    """Refresh the row's `last_seen` and the trial it runs now; False when the row is gone
    (pruned: register again). Commits."""
    stmt = (
        update(WorkerRow)
        .where(WorkerRow.id == worker_id)
        .values(last_seen=now or utcnow(), current_trial=current_trial)
        .execution_options(synchronize_session=False)
    )
    result: Any = session.execute(stmt)
    found = int(result.rowcount) == 1
    session.commit()
    return found


def remove_worker(session: Session, worker_id: str) -> None:
    """Delete the row (the worker exits cleanly). Commits."""
    session.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))
    session.commit()


def live_workers(session: Session, within_s: float) -> list[LiveWorker]:
    """Workers seen within the last `within_s` seconds, oldest first."""
    since = utcnow() - timedelta(seconds=within_s)
    stmt = (
        select(WorkerRow)
        .where(WorkerRow.last_seen >= since)
        .order_by(WorkerRow.started_at, WorkerRow.id)
    )
    return [
        LiveWorker(
            id=row.id,
            host=row.host,
            pid=row.pid,
            started_at=row.started_at,
            last_seen=row.last_seen,
            device=row.device,
            plugins={str(k): str(v) for k, v in (row.plugins or {}).items()},
            current_trial=row.current_trial,
        )
        for row in session.scalars(stmt)
    ]


def offered_plugins(session: Session, within_s: float) -> set[str]:
    """The names of the task plugins some live worker offers."""
    return {name for worker in live_workers(session, within_s) for name in worker.plugins}


def count_live_workers(session: Session, within_s: float) -> int:
    """How many workers were seen within the last `within_s` seconds (for /metrics)."""
    since = utcnow() - timedelta(seconds=within_s)
    stmt = select(func.count()).select_from(WorkerRow).where(WorkerRow.last_seen >= since)
    return int(session.scalar(stmt) or 0)
