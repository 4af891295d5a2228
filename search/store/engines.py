"""Engines for SQLite and PostgreSQL, Optuna's storage on the same database, migrations,
and which database errors are worth retrying."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("lrsearch.store")
T = TypeVar("T")

SQLITE_TIMEOUT_S = 30
ALEMBIC_VERSION_TABLE = "lrsearch_alembic_version"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# the dialects' INSERT constructs, which have ON CONFLICT (the databases lrsearch supports)
DIALECT_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever scheme the user wrote."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _engine_kwargs(url: str) -> dict[str, Any]:
    """Pre-ping everywhere (the DB may restart); SQLite waits on locks instead of failing."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if _is_sqlite(url):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_TIMEOUT_S}
    return kwargs


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; busy_timeout and FKs are per connection."""
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for our tables, tuned for SQLite or PostgreSQL."""
    url = normalise_url(url)
    engine = sa.create_engine(url, **_engine_kwargs(url))
    if _is_sqlite(url):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (handlers read them afterwards)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def optuna_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    failed_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.RDBStorage:
    """Optuna's storage on the same database, so trials and studies share one DB.

    `failed_trial_callback` is passed as Optuna's `heartbeat_stale_trial_callback`
    (the old name is deprecated in Optuna 5).
    """
    url = normalise_url(url)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; we rely on them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=_engine_kwargs(url),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=failed_trial_callback,
        )
    if _is_sqlite(url):
        _begin_immediate(storage.engine)
    return storage


def _begin_immediate(engine: Engine) -> None:
    """Every transaction on this SQLite engine takes the write lock when it begins.

    Optuna reads a row and then updates it under `SELECT ... FOR UPDATE`, which SQLite
    ignores, and pysqlite only begins a transaction at the first write: two workers could both
    read the same queued trial as WAITING and both run it (seen in 12 of 30 tries). With
    BEGIN IMMEDIATE the read and the write are one atomic step; WAL readers are not blocked.
    """

    def on_connect(dbapi_conn: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, record)
        dbapi_conn.isolation_level = None  # no implicit BEGIN from pysqlite: ours below

    def on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened while Optuna set up its tables lack the hooks


def _ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder (the default lives in ./var)."""
    if not _is_sqlite(url):
        return
    database = sa.engine.make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def alembic_config(url: str, connection: sa.Connection | None = None) -> Config:
    """Alembic config built in code, so no alembic.ini is needed at runtime."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = ALEMBIC_VERSION_TABLE
    return cfg


def upgrade(url: str) -> None:
    """Create or upgrade Optuna's tables and their read indexes, then ours (idempotent; run
    before serving). Ours come last, so our version table at head (`at_head`) means that
    the whole schema is in place."""
    _ensure_sqlite_dir(url)
    storage = optuna_storage(url)
    storage.engine.dispose()
    _ensure_read_indexes(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(url, conn), "head")
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest migration of lrsearch's tables this code ships."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision our version table records (None before the first upgrade). Reads only."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            options = {"version_table": ALEMBIC_VERSION_TABLE}
            return MigrationContext.configure(conn, opts=options).get_current_revision()
    finally:
        engine.dispose()


def at_head(url: str) -> bool:
    """Whether `upgrade` has finished for this code's migrations (what a pod waits for)."""
    return current_revision(url) == head_revision()


READ_INDEXES = {
    "lrsearch_ix_trials_study_number": "trials (study_id, number)",
    "lrsearch_ix_trials_study_state": "trials (study_id, state)",
}


def _ensure_read_indexes(url: str) -> None:
    """Indexes on Optuna's trials table for the API's reads (a trial by number, counts by
    state), so a 10,000-trial study answers about as fast as a 100-trial one."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for name, target in READ_INDEXES.items():
                conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {name} ON {target}"))
    finally:
        engine.dispose()


# --- transient database errors -------------------------------------------------------------

_TRANSIENT: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,  # connection refused or dropped, server shutting down, locked
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,  # no pooled connection came back in time
)


def is_transient(exc: BaseException) -> bool:
    """True when the database was unreachable or busy, so the same call may succeed later.

    Looks through the exception chain: Optuna wraps SQLAlchemy's errors in its own
    StorageInternalError, and bad data (IntegrityError, DataError) is never transient.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSIENT):
            return True
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        if _is_psycopg_operational(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_psycopg_operational(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # SQLite-only installs
        return False
    return isinstance(exc, psycopg.OperationalError)


def retry_transient(
    fn: Callable[[], T],
    *,
    deadline_s: float = 120.0,
    what: str = "database call",
    stop: threading.Event | None = None,
) -> T:
    """Call `fn`, retrying transient database errors with backoff for up to `deadline_s`.

    Why: a database restart must not fail a trial that is training fine. Only calls that are
    safe to repeat may be wrapped (reads, idempotent writes, Optuna's report/attrs/tell with
    skip_if_finished). Non-transient errors, and the last transient one, are raised.
    """
    started, delay = time.monotonic(), 0.25
    while True:
        try:
            return fn()
        except Exception as exc:
            spent = time.monotonic() - started
            if not is_transient(exc) or spent + delay > deadline_s or (stop and stop.is_set()):
                raise
            log.warning("%s failed (%s); retrying in %.2fs", what, _first_line(exc), delay)
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _first_line(exc: BaseException) -> str:
    """The deepest cause's first line: Optuna's wrapper message says nothing useful."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
