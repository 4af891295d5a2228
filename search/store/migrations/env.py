"""Alembic environment for lrsearch's own tables.

Optuna keeps its tables (and its own `alembic_version`) in the same database, so we use a
separate version table and ignore every table that is not ours when autogenerating.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from search.store import ALEMBIC_VERSION_TABLE, Base, make_engine

config = context.config
target_metadata = Base.metadata


def _only_ours(_obj: Any, name: str | None, type_: str, _reflected: bool, _compare: Any) -> bool:
    """Autogenerate must never touch Optuna's tables."""
    return type_ != "table" or name in target_metadata.tables


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=config.attributes.get("version_table", ALEMBIC_VERSION_TABLE),
        include_object=_only_ours,
        render_as_batch=True,
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    """Emit SQL for the configured URL without connecting."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate over the caller's connection when given, else a fresh engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
