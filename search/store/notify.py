"""Wake idle workers when there is new work, through PostgreSQL's LISTEN/NOTIFY.

Why: an idle worker polls for runnable studies every `poll_s` (1 s), so a new study, or a slot
given back for a retry, waited up to a second for a worker. On PostgreSQL whoever adds work
also sends a NOTIFY in the same transaction (delivered at commit, never for a rolled-back
one), and an idle worker's wait ends at once. The database stays the only coordination point,
and polling stays as the fallback: on SQLite, or while the listening connection is down, a
worker simply waits `poll_s` as before. A notification only shortens a wait, so a lost one
costs at most that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger("lrsearch.store.notify")
CHANNEL = "lrsearch_work"
_STOP_CHECK_S = 0.25  # how often a listening wait looks at the stop event
_RECONNECT_AFTER_S = 10.0
_CONNECT_TIMEOUT_S = 5


def announce(session: Session) -> None:
    """Tell idle workers there is work, once this session's transaction commits (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


class Wakeup:
    """An idle wait that a NOTIFY on `CHANNEL` ends early; a plain wait where there is none."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Any = None  # a psycopg connection in autocommit mode, LISTENing
        self._failed_at = float("-inf")

    def wait(self, stop: threading.Event, timeout_s: float) -> bool:
        """Wait up to `timeout_s`; True when woken by a notification, False on timeout/stop."""
        conn = self._listening()
        if conn is None:
            stop.wait(timeout_s)
            return False
        deadline = time.monotonic() + timeout_s
        try:
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # consumed whole: the generator holds the connection's lock until it ends
                if list(conn.notifies(timeout=min(left, _STOP_CHECK_S), stop_after=1)):
                    list(conn.notifies(timeout=0))  # those queued too: one look answers all
                    return True
        except Exception as exc:  # the database went away: poll until it is back
            log.warning("work notifications lost (%s); polling every %.1fs", exc, timeout_s)
            self.close()
            self._failed_at = time.monotonic()
            stop.wait(max(0.0, deadline - time.monotonic()))
        return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken
                self._conn.close()
            self._conn = None

    def _listening(self) -> Any:
        """The LISTENing connection: opened on first use, re-opened after a failure."""
        if self._conn is not None or self._engine.dialect.name != "postgresql":
            return self._conn
        if time.monotonic() - self._failed_at < _RECONNECT_AFTER_S:
            return None
        try:
            import psycopg

            url = self._engine.url.set(drivername="postgresql")
            conn = psycopg.connect(
                url.render_as_string(hide_password=False),
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_S,  # an unreachable host must not hang the loop
            )
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:
            log.warning("cannot listen for work notifications (%s); polling", exc)
            self._failed_at = time.monotonic()
            return None
        self._conn = conn
        return conn
