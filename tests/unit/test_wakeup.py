"""Idle workers woken by work notifications: a real PostgreSQL LISTEN/NOTIFY, SQLite polls."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from search import store
from search.store.notify import Wakeup, announce


def announce_later(url: str, delay_s: float, *, commit: bool = True) -> threading.Thread:
    """Another process's transaction, as the API's would be: announce, then commit (or not)."""

    def run() -> None:
        time.sleep(delay_s)
        engine = store.make_engine(url)
        with Session(engine) as session:
            announce(session)
            if commit:
                session.commit()
            else:
                session.rollback()
        engine.dispose()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def timed_wait(wakeup: Wakeup, stop: threading.Event, timeout_s: float) -> tuple[bool, float]:
    started = time.monotonic()
    woken = wakeup.wait(stop, timeout_s)
    return woken, time.monotonic() - started


@pytest.fixture
def listener(pg_url: str) -> Iterator[tuple[Wakeup, threading.Event]]:
    """A worker's wake-up on a fresh PostgreSQL database, and its stop event."""
    engine = store.make_engine(pg_url)
    wakeup = Wakeup(engine)
    try:
        yield wakeup, threading.Event()
    finally:
        wakeup.close()
        engine.dispose()


@pytest.mark.postgres
def test_a_committed_announcement_ends_an_idle_wait_at_once(
    listener: tuple[Wakeup, threading.Event], pg_url: str
) -> None:
    wakeup, stop = listener
    assert timed_wait(wakeup, stop, 0.3) == (False, pytest.approx(0.3, abs=0.2))
    sender = announce_later(pg_url, 0.5)
    woken, waited = timed_wait(wakeup, stop, 20)
    sender.join()
    assert woken and waited < 5
    # each announcement is consumed: three wake a wait at most three times, then waits time out.
    # Usually one look answers all three, but PostgreSQL may deliver a late one a moment after.
    for _ in range(3):
        announce_later(pg_url, 0).join()
    assert wakeup.wait(stop, 5) is True
    extra_wakes = 0
    while timed_wait(wakeup, stop, 0.3)[0]:
        extra_wakes += 1
        assert extra_wakes <= 2, "a consumed notification woke the wait again"


@pytest.mark.postgres
def test_a_rolled_back_announcement_wakes_nobody(
    listener: tuple[Wakeup, threading.Event], pg_url: str
) -> None:
    wakeup, stop = listener
    wakeup.wait(stop, 0.01)  # listening from now on
    sender = announce_later(pg_url, 0.2, commit=False)
    woken, waited = timed_wait(wakeup, stop, 1.5)
    sender.join()
    assert not woken and waited >= 1.4


@pytest.mark.postgres
def test_stop_ends_a_listening_wait(listener: tuple[Wakeup, threading.Event]) -> None:
    wakeup, stop = listener
    threading.Timer(0.3, stop.set).start()
    woken, waited = timed_wait(wakeup, stop, 30)
    assert not woken and waited < 3


def test_on_sqlite_a_wait_is_a_plain_poll_interval(sqlite_url: str) -> None:
    engine = store.make_engine(sqlite_url)
    wakeup, stop = Wakeup(engine), threading.Event()
    with Session(engine) as session:
        announce(session)  # nothing to send: no error either
        session.commit()
    woken, waited = timed_wait(wakeup, stop, 0.3)
    assert not woken and waited == pytest.approx(0.3, abs=0.2)
    engine.dispose()
