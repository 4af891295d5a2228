"""Domain storage shared by the API and the workers: our tables, engines, migrations, and
read-only SQL views of Optuna's own tables (which live in the same database).

Our tables are prefixed `lrsearch_` and our Alembic history uses its own version table,
because Optuna already owns `studies` and `alembic_version` in that database.
Every study operation here is one SQL statement, so it is atomic on SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import optuna
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from search.wakeup import announce

log = logging.getLogger("lrsearch.store")
T = TypeVar("T")

SQLITE_TIMEOUT_S = 30
ALEMBIC_VERSION_TABLE = "lrsearch_alembic_version"
# marks a failed trial whose slot was given back for its retry (release_slot runs once)
SLOT_RELEASED = "lrsearch:slot_released"
# the dialects' INSERT constructs, which have ON CONFLICT (the databases lrsearch supports)
DIALECT_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

StudyStatus = Literal["queued", "running", "completed", "cancelled", "failed"]
STUDY_STATUSES: tuple[str, ...] = ("queued", "running", "completed", "cancelled", "failed")
RUNNABLE: tuple[str, ...] = ("queued", "running")
FINAL: tuple[str, ...] = ("completed", "cancelled", "failed")
OPTUNA_STATES: tuple[str, ...] = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def utcnow() -> datetime:
    """Timezone-aware now in UTC: the only clock our tables use."""
    return datetime.now(UTC)


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
    __table_args__ = (
        Index("ix_lrsearch_studies_tenant_created", "tenant_id", "created_at", "id"),
    )

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


# --- engines, Optuna storage, migrations -------------------------------------------------


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever scheme the user wrote."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
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
    """Create or upgrade our tables, then Optuna's (idempotent; run before serving)."""
    _ensure_sqlite_dir(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(url, conn), "head")
    finally:
        engine.dispose()
    storage = optuna_storage(url)
    storage.engine.dispose()
    _ensure_read_indexes(url)


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


# --- study operations used by workers ------------------------------------------------------


def claim_slot(session: Session, study_id: str) -> int | None:
    """Reserve one trial of the study; the slot number (1-based) or None when none is left.

    One UPDATE ... RETURNING, so racing workers never over-claim. Commits. The result is
    truthy exactly when a slot was claimed (usable as the bool `claimed`).
    """
    now = utcnow()
    stmt = (
        update(Study)
        .where(
            Study.id == study_id,
            Study.trials_claimed < Study.n_trials,
            Study.status.in_(RUNNABLE),
        )
        .values(
            trials_claimed=Study.trials_claimed + 1,
            status="running",
            started_at=func.coalesce(Study.started_at, sa.literal(now, UTCDateTime())),
            updated_at=now,
        )
        .returning(Study.trials_claimed)
        .execution_options(synchronize_session=False)
    )
    slot = session.execute(stmt).scalar_one_or_none()
    session.commit()
    return None if slot is None else int(slot)


def release_slot(session: Session, study_id: str, failed_trial_id: int) -> bool:
    """Give back the slot of a failed trial that is retried elsewhere. Never below 0. Commits.

    Once per failed trial: a marker on that trial is written in the same transaction, so a
    release repeated after a lost commit acknowledgement does nothing (it would otherwise let
    the study run one trial over its budget). True when the slot was given back by this call.
    """
    marked = _mark_trial_once(session, failed_trial_id, SLOT_RELEASED)
    if marked:
        stmt = (
            update(Study)
            .where(Study.id == study_id, Study.trials_claimed > 0)
            .values(trials_claimed=Study.trials_claimed - 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.execute(stmt)
        announce(session)  # an idle worker can take the slot now
    session.commit()
    return marked


def _mark_trial_once(session: Session, trial_id: int, key: str) -> bool:
    """Add system attribute `key` to an Optuna trial unless it is there (Optuna's unique
    (trial_id, key) decides under concurrency); True when this call added it."""
    insert = DIALECT_INSERTS[session.get_bind().dialect.name]
    stmt = (
        insert(_o_system_attrs)
        .values(trial_id=trial_id, key=key, value_json="true")
        .on_conflict_do_nothing()
        .returning(_o_system_attrs.c.trial_id)  # a row only when inserted (rowcount: -1)
    )
    return session.execute(stmt).first() is not None


def reclaim_slots(
    session: Session, study_id: str, *, claimed: int, used: int, idle_since: datetime
) -> bool:
    """Give back slots that were claimed but never became a trial; True when done. Commits.

    A worker that died (or lost the database for good) between its claim and `study.ask`
    leaves `trials_claimed` above the trials that exist, and the study would end short.
    Conditional on the row being unchanged since it was read, so two sweepers heal once.
    """
    if used >= claimed:
        return False
    stmt = (
        update(Study)
        .where(
            Study.id == study_id,
            Study.status.in_(RUNNABLE),
            Study.trials_claimed == claimed,
            Study.updated_at == idle_since,
        )
        .values(trials_claimed=used, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    done = _rowcount(session.execute(stmt)) == 1
    session.commit()
    return done


def runnable_studies(session: Session, limit: int) -> list[Study]:
    """Queued or running studies with unclaimed trials, oldest first."""
    stmt = (
        select(Study)
        .where(Study.status.in_(RUNNABLE), Study.trials_claimed < Study.n_trials)
        .order_by(Study.created_at, Study.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def finish_study(
    session: Session, study_id: str, status: StudyStatus, error: str | None = None
) -> bool:
    """Move a queued/running study to a final status; False if it had already finished.

    Commits. The first caller wins, so a cancel is never overwritten by a late completion.
    """
    if status not in FINAL:
        raise ValueError(f"not a final status: {status!r}")
    now = utcnow()
    stmt = (
        update(Study)
        .where(Study.id == study_id, Study.status.in_(RUNNABLE))
        .values(status=status, finished_at=now, error=error, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    done = _rowcount(session.execute(stmt)) == 1
    session.commit()
    return done


def close_budget(session: Session, study_id: str) -> None:
    """Claim no more trials (the study's timeout passed): n_trials drops to trials_claimed.

    Running trials finish; the study completes when they have. The requested budget stays
    in the spec. Commits.
    """
    stmt = (
        update(Study)
        .where(
            Study.id == study_id,
            Study.status.in_(RUNNABLE),
            Study.trials_claimed < Study.n_trials,
        )
        .values(n_trials=Study.trials_claimed, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)
    session.commit()


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


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


# --- read-only views of Optuna's tables ----------------------------------------------------
# Declared here (not imported from optuna.storages._rdb, which is private) with only the
# columns we read. The Enum types match Optuna's, so PostgreSQL compares native enums.

_optuna_md = MetaData()
_o_studies = sa.Table(
    "studies", _optuna_md,
    sa.Column("study_id", Integer, primary_key=True),
    sa.Column("study_name", String(512)),
)
_o_trials = sa.Table(
    "trials", _optuna_md,
    sa.Column("trial_id", Integer, primary_key=True),
    sa.Column("number", Integer),
    sa.Column("study_id", Integer),
    sa.Column(
        "state",
        Enum("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING", name="trialstate"),
    ),
    sa.Column("datetime_start", DateTime),
    sa.Column("datetime_complete", DateTime),
)
_o_values = sa.Table(
    "trial_values", _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("objective", Integer),
    sa.Column("value", Float(precision=53)),
    sa.Column("value_type", Enum("FINITE", "INF_POS", "INF_NEG", name="trialvaluetype")),
)
_o_user_attrs = sa.Table(
    "trial_user_attributes", _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("key", String(512)),
    sa.Column("value_json", Text),
)
_o_system_attrs = sa.Table(
    "trial_system_attributes", _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("key", String(512)),
    sa.Column("value_json", Text),
)
_o_params = sa.Table(
    "trial_params", _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("param_name", String(512)),
    sa.Column("param_value", Float(precision=53)),
    sa.Column("distribution_json", Text),
)
_o_intermediate = sa.Table(
    "trial_intermediate_values", _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("step", Integer),
    sa.Column("intermediate_value", Float(precision=53)),
    sa.Column(
        "intermediate_value_type",
        Enum("FINITE", "INF_POS", "INF_NEG", "NAN", name="trialintermediatevaluetype"),
    ),
)

_o_heartbeats = sa.Table(
    "trial_heartbeats", _optuna_md,
    sa.Column("trial_heartbeat_id", Integer, primary_key=True),
    sa.Column("trial_id", Integer),
    sa.Column("heartbeat", DateTime),
)

_SPECIAL = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}


@dataclass(frozen=True)
class Progress:
    """Trial counts of one study; `retried` failures are not counted as `failed`."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
    running: int = 0
    waiting: int = 0
    remaining: int = 0


@dataclass(frozen=True)
class TrialRecord:
    """One Optuna trial as stored: state, objective value, attrs and intermediate values."""

    trial_id: int
    number: int
    state: str
    value: float | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    intermediate: list[tuple[int, float]] = field(default_factory=list)


def _optuna_study_id(name: str) -> sa.ScalarSelect[int]:
    return (
        select(_o_studies.c.study_id).where(_o_studies.c.study_name == name).scalar_subquery()
    )


def study_progress(session: Session, study: Study) -> Progress:
    """Trial counts by state from ONE grouped query (cost independent of trial count)."""
    successor = _o_system_attrs.alias("successor")
    stmt = (
        select(_o_trials.c.state, func.count(), func.count(successor.c.trial_id))
        .select_from(_o_trials)
        .outerjoin(
            successor,
            sa.and_(
                successor.c.trial_id == _o_trials.c.trial_id,
                successor.c.key == "failed_trial",
            ),
        )
        .where(_o_trials.c.study_id == _optuna_study_id(study.optuna_study_name))
        .group_by(_o_trials.c.state)
    )
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    retries = 0
    for state, n, n_successors in session.execute(stmt):
        counts[str(state)] = int(n)
        retries += int(n_successors)
    return _progress(counts, retries, study.n_trials)


def _progress(counts: dict[str, int], retries: int, n_trials: int) -> Progress:
    """Each retry successor stands for one failed trial that should not count as failed."""
    retried = min(retries, counts["FAIL"])
    failed = counts["FAIL"] - retried
    used = counts["COMPLETE"] + counts["PRUNED"] + failed + counts["RUNNING"] + counts["WAITING"]
    return Progress(
        complete=counts["COMPLETE"],
        pruned=counts["PRUNED"],
        failed=failed,
        retried=retried,
        running=counts["RUNNING"],
        waiting=counts["WAITING"],
        remaining=max(0, n_trials - used),
    )


def _trial_select() -> sa.Select[Any]:
    return select(
        _o_trials.c.trial_id,
        _o_trials.c.number,
        _o_trials.c.state,
        _o_values.c.value,
        _o_values.c.value_type,
        _o_trials.c.datetime_start,
        _o_trials.c.datetime_complete,
    ).select_from(
        _o_trials.outerjoin(
            _o_values,
            sa.and_(_o_values.c.trial_id == _o_trials.c.trial_id, _o_values.c.objective == 0),
        )
    )


def _value_sort_key(direction: str) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    """(has-no-value flag, signed value): ascending order puts the best trials first."""
    missing = sa.case((_o_values.c.value.is_(None), 1), else_=0)
    sign = -1.0 if direction == "maximize" else 1.0
    return missing, func.coalesce(_o_values.c.value, 0.0) * sign


ValueCursor = tuple[int, float, int]


def trials_page(
    session: Session,
    study: Study,
    *,
    state: str | None = None,
    order: Literal["number", "value"] = "number",
    limit: int = 50,
    after: int | ValueCursor | None = None,
) -> list[TrialRecord]:
    """A keyset page of trials with attrs of just those trials.

    order="number": `after` is the last trial number. order="value": best first by the
    study direction; trials without a value come last; `after` is `value_cursor(last)`.
    """
    stmt = _trial_select().where(
        _o_trials.c.study_id == _optuna_study_id(study.optuna_study_name)
    )
    if state is not None:
        stmt = stmt.where(_o_trials.c.state == state.upper())
    if order == "value":
        missing, signed = _value_sort_key(study.direction)
        if isinstance(after, tuple):
            stmt = stmt.where(sa.tuple_(missing, signed, _o_trials.c.number) > sa.tuple_(*after))
        stmt = stmt.order_by(missing, signed, _o_trials.c.number)
    else:
        if isinstance(after, int):
            stmt = stmt.where(_o_trials.c.number > after)
        stmt = stmt.order_by(_o_trials.c.number)
    return _records(session, session.execute(stmt.limit(limit)).all())


def value_cursor(record: TrialRecord, direction: str) -> ValueCursor:
    """The keyset position of a trial in order=value (matches `_value_sort_key`)."""
    if record.value is None or not math.isfinite(record.value):
        return (1, 0.0, record.number)
    sign = -1.0 if direction == "maximize" else 1.0
    return (0, record.value * sign, record.number)


def get_trial(session: Session, study: Study, number: int) -> TrialRecord | None:
    """One trial of the study by number, or None."""
    stmt = _trial_select().where(
        _o_trials.c.study_id == _optuna_study_id(study.optuna_study_name),
        _o_trials.c.number == number,
    )
    records = _records(session, session.execute(stmt).all())
    return records[0] if records else None


def best_trial(session: Session, study: Study) -> TrialRecord | None:
    """The best COMPLETE trial by the study direction (ties: lowest number), or None."""
    records = _records(session, session.execute(_best_select(study)).all())
    return records[0] if records else None


def best_value(session: Session, study: Study) -> tuple[int, float | None] | None:
    """(number, value) of the best COMPLETE trial, without loading its attributes."""
    row = session.execute(_best_select(study)).first()
    return None if row is None else (int(row.number), _stored_value(row.value, row.value_type))


def _best_select(study: Study) -> sa.Select[Any]:
    value = _o_values.c.value
    ordered = value.desc() if study.direction == "maximize" else value.asc()
    return (
        _trial_select()
        .where(
            _o_trials.c.study_id == _optuna_study_id(study.optuna_study_name),
            _o_trials.c.state == "COMPLETE",
            value.is_not(None),
        )
        .order_by(ordered, _o_trials.c.number)
        .limit(1)
    )


def _records(session: Session, rows: Sequence[sa.Row[Any]]) -> list[TrialRecord]:
    """Attach user attrs, params and intermediate values, querying only these trials."""
    ids = [row.trial_id for row in rows]
    attrs = _user_attrs(session, ids)
    params = _params(session, ids)
    steps = _intermediate(session, ids)
    return [
        TrialRecord(
            trial_id=row.trial_id,
            number=row.number,
            state=str(row.state).lower(),
            value=_stored_value(row.value, row.value_type),
            datetime_start=_as_utc(row.datetime_start),
            datetime_complete=_as_utc(row.datetime_complete),
            user_attrs=attrs.get(row.trial_id, {}),
            params=params.get(row.trial_id, {}),
            intermediate=steps.get(row.trial_id, []),
        )
        for row in rows
    ]


def _user_attrs(session: Session, ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    if not ids:
        return out
    stmt = select(_o_user_attrs).where(_o_user_attrs.c.trial_id.in_(ids))
    for row in session.execute(stmt):
        out.setdefault(row.trial_id, {})[row.key] = _json(row.value_json)
    return out


def _params(session: Session, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Optuna's own params in external form (categorical indices decoded)."""
    out: dict[int, dict[str, Any]] = {}
    if not ids:
        return out
    stmt = select(_o_params).where(_o_params.c.trial_id.in_(ids))
    for row in session.execute(stmt):
        dist = optuna.distributions.json_to_distribution(row.distribution_json)
        out.setdefault(row.trial_id, {})[row.param_name] = dist.to_external_repr(row.param_value)
    return out


def _intermediate(session: Session, ids: list[int]) -> dict[int, list[tuple[int, float]]]:
    out: dict[int, list[tuple[int, float]]] = {}
    if not ids:
        return out
    stmt = (
        select(_o_intermediate)
        .where(_o_intermediate.c.trial_id.in_(ids))
        .order_by(_o_intermediate.c.trial_id, _o_intermediate.c.step)
    )
    for row in session.execute(stmt):
        value = _stored_value(row.intermediate_value, row.intermediate_value_type)
        out.setdefault(row.trial_id, []).append((row.step, math.nan if value is None else value))
    return out


def _stored_value(value: float | None, value_type: Any) -> float | None:
    if value_type is None:
        return None
    special = _SPECIAL.get(str(value_type))
    return special if special is not None else value


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _as_utc(value: datetime | None) -> datetime | None:
    """Optuna stores naive UTC datetimes."""
    return None if value is None else value.replace(tzinfo=UTC)


# --- a study with its trials' version (the API's answer cache) ----------------------------


@dataclass(frozen=True)
class TrialsVersion:
    """Changes whenever a trial of the study is added or changes state; O(1) to read.

    Why it is enough: Optuna numbers a study's trials 0..n-1 under a lock on the study row,
    never deletes one, and only moves a trial forward (WAITING -> RUNNING -> finished); a
    finished trial's values and attributes can no longer change. So with the same last number
    and the same RUNNING and WAITING counts, the finished trials are the same set, and every
    answer computed from finished trials (progress counts, the best trial, a page holding
    only finished trials) is still exact.
    """

    last_number: int  # -1 while the study has no trial
    running: int
    waiting: int


def study_with_trials_version(
    session: Session, study_id: str, tenant_id: str | None = None
) -> tuple[Study, TrialsVersion] | None:
    """The study row (None when absent or another tenant's) and its TrialsVersion, in ONE
    statement: index look-ups only (trials (study_id, number) and (study_id, state)), so its
    cost does not grow with the number of trials."""
    params = {"study_id": study_id}
    if tenant_id is not None:
        params["tenant_id"] = tenant_id
    row = session.execute(_versioned_study_stmt(tenant_id is not None), params).first()
    if row is None:
        return None
    study, last_number, running, waiting = row
    version = TrialsVersion(
        last_number=-1 if last_number is None else int(last_number),
        running=int(running or 0),
        waiting=int(waiting or 0),
    )
    return study, version


@functools.cache
def _versioned_study_stmt(by_tenant: bool) -> sa.Select[Any]:
    """Built once (the hot path of every study read): only parameters change per call."""
    optuna_id = _o_studies.c.study_id
    last = (
        select(_o_trials.c.number)
        .where(_o_trials.c.study_id == optuna_id)
        .order_by(_o_trials.c.number.desc())
        .limit(1)
        .scalar_subquery()
    )

    def count(state: str) -> sa.ScalarSelect[int]:
        return (
            select(func.count())
            .select_from(_o_trials)
            .where(_o_trials.c.study_id == optuna_id, _o_trials.c.state == state)
            .scalar_subquery()
        )

    stmt = (
        select(Study, last, count("RUNNING"), count("WAITING"))
        .outerjoin(_o_studies, _o_studies.c.study_name == Study.optuna_study_name)
        .where(Study.id == sa.bindparam("study_id"))
    )
    if by_tenant:
        stmt = stmt.where(Study.tenant_id == sa.bindparam("tenant_id"))
    return stmt


# --- service-wide counts (metrics) ---------------------------------------------------------


def trial_state_counts(session: Session, optuna_study_name: str | None = None) -> dict[str, int]:
    """Trials by Optuna state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), all present.

    For one Optuna study, or the whole database when no name is given. One grouped query.
    """
    stmt = select(_o_trials.c.state, func.count()).group_by(_o_trials.c.state)
    if optuna_study_name is not None:
        stmt = stmt.where(_o_trials.c.study_id == _optuna_study_id(optuna_study_name))
    counts = dict.fromkeys(OPTUNA_STATES, 0)
    counts.update({str(state): int(n) for state, n in session.execute(stmt)})
    return counts


def running_trial_counts(session: Session, optuna_study_names: Sequence[str]) -> dict[str, int]:
    """RUNNING trials per Optuna study name (absent names have none). One grouped query."""
    if not optuna_study_names:
        return {}
    stmt = (
        select(_o_studies.c.study_name, func.count())
        .select_from(_o_trials.join(_o_studies, _o_studies.c.study_id == _o_trials.c.study_id))
        .where(
            _o_studies.c.study_name.in_(list(optuna_study_names)),
            _o_trials.c.state == "RUNNING",
        )
        .group_by(_o_studies.c.study_name)
    )
    return {str(name): int(n) for name, n in session.execute(stmt)}


def study_status_counts(session: Session) -> dict[str, int]:
    """Studies by status over all tenants (one grouped query)."""
    stmt = select(Study.status, func.count()).group_by(Study.status)
    counts = dict.fromkeys(STUDY_STATUSES, 0)
    counts.update({status: int(n) for status, n in session.execute(stmt)})
    return counts


def queue_depth(session: Session) -> int:
    """Trial slots not yet claimed by any worker, over runnable studies."""
    stmt = select(func.coalesce(func.sum(Study.n_trials - Study.trials_claimed), 0)).where(
        Study.status.in_(RUNNABLE), Study.trials_claimed < Study.n_trials
    )
    return int(session.scalar(stmt) or 0)


# --- what the worker's sweep heals ---------------------------------------------------------


def orphan_running_trials(
    session: Session, optuna_study_name: str, older_than_s: float
) -> list[int]:
    """Trial ids RUNNING without any heartbeat, started more than `older_than_s` ago.

    A worker that died between `study.ask` and its first heartbeat leaves such a trial;
    Optuna's stale check skips trials without a heartbeat, so it would stay RUNNING forever.
    Optuna writes `datetime_start` as naive local time, so the cutoff is too.
    """
    cutoff = datetime.now() - timedelta(seconds=older_than_s)
    beats = select(_o_heartbeats.c.trial_id).where(
        _o_heartbeats.c.trial_id == _o_trials.c.trial_id
    )
    stmt = select(_o_trials.c.trial_id).where(
        _o_trials.c.study_id == _optuna_study_id(optuna_study_name),
        _o_trials.c.state == "RUNNING",
        _o_trials.c.datetime_start < cutoff,
        ~beats.exists(),
    )
    return [int(trial_id) for trial_id in session.scalars(stmt)]


def has_retry(session: Session, optuna_study_name: str, failed_number: int) -> bool:
    """Whether a trial of the study already carries `failed_trial == failed_number`.

    Makes queuing a retry idempotent: a retried `add_trial` whose first attempt did commit
    (the answer was lost with the connection) must not queue a second copy.
    """
    stmt = (
        select(func.count())
        .select_from(
            _o_system_attrs.join(_o_trials, _o_trials.c.trial_id == _o_system_attrs.c.trial_id)
        )
        .where(
            _o_trials.c.study_id == _optuna_study_id(optuna_study_name),
            _o_system_attrs.c.key == "failed_trial",
            _o_system_attrs.c.value_json == json.dumps(failed_number),
        )
    )
    return int(session.scalar(stmt) or 0) > 0
