"""Commands that run the service itself: the database, tokens, the API, workers, and both
at once (`serve`); `lrsearch dashboard` lives in `dashboard`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from search import store
from service.cli.exit_codes import EXIT_OK, EXIT_USAGE
from service.cli.exposure import refuse_insecure_bind
from service.cli.supervisor import Supervisor
from service.cli.worker_options import (
    add_worker_options,
    worker_env,
    worker_memory_mb,
    worker_population,
)
from service.extras import worker_extra_missing
from service.settings import Settings

log = logging.getLogger("lrsearch.cli")


# --- db / token -----------------------------------------------------------------------------


DB_WAIT_POLL_S = 1.0  # between two reads of the schema's revision by `db wait`
EXIT_DB_NOT_READY = 1  # `db wait` gave up: the schema did not reach this code's head in time


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["upgrade", "wait"],
        help="upgrade: create or migrate tables; wait: until they are at this version's "
        "head (another process migrates), exit 1 after --timeout",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="wait: give up after this many seconds (default 300)",
    )


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    """Create or migrate lrsearch's and Optuna's tables, or wait until another process has."""
    if args.action == "wait":
        return wait_for_schema(settings.database_url, args.timeout)
    store.upgrade(settings.database_url)
    print("database is up to date")
    return 0


def wait_for_schema(url: str, timeout_s: float) -> int:
    """Poll until the schema is at this code's head (a Kubernetes init container runs it
    while the migration Job upgrades); EXIT_OK, or EXIT_DB_NOT_READY after `timeout_s`.

    Reads only: an unreachable database is one more reason to wait, never to migrate."""
    head, seen = store.head_revision(), ""
    deadline = time.monotonic() + timeout_s
    while True:
        state = _schema_state(url)
        if state == head:
            print(f"database schema is at head ({head})")
            return EXIT_OK
        if state != seen:
            log.info("waiting for the database schema: %s, want %s", state, head)
            seen = state
        if time.monotonic() >= deadline:
            print(
                f"error: the database schema did not reach {head} within {timeout_s:g}s "
                f"({state}); has `lrsearch db upgrade` run?",
                file=sys.stderr,
            )
            return EXIT_DB_NOT_READY
        time.sleep(DB_WAIT_POLL_S)


def _schema_state(url: str) -> str:
    """The revision, "no lrsearch tables yet", or why the database cannot be read now."""
    try:
        revision = store.current_revision(url)
    except Exception as exc:
        if not store.is_transient(exc):
            raise
        return f"database unreachable ({type(exc).__name__})"
    return revision or "no lrsearch tables yet"


def add_token(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token (printed once)")
    create.add_argument("--tenant", required=True, help="tenant name (created if absent)")
    revoke = actions.add_parser("revoke", help="revoke a token")
    revoke.add_argument("token")


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    """Create or revoke an API token; only its hash is stored."""
    from service import tokens

    store.upgrade(settings.database_url)
    engine = store.make_engine(settings.database_url)
    try:
        with store.session_factory(engine)() as session:
            if args.action == "create":
                print(tokens.create_token(session, args.tenant))
                return 0
            if tokens.revoke_token(session, args.token):
                print("revoked")
                return 0
            print("unknown or already revoked token", file=sys.stderr)
            return 1
    finally:
        engine.dispose()


# --- api / worker / serve -------------------------------------------------------------------


def _add_api(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface (default: settings.host)")
    parser.add_argument("--port", type=int, help="port (default: settings.port)")


def add_api_command(parser: argparse.ArgumentParser) -> None:
    _add_api(parser)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="API server processes sharing the port (default 1). Each has its own answer "
        "cache; the rate limit and quotas are shared through the database.",
    )


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the HTTP API with uvicorn (in N processes with --processes N)."""
    import uvicorn

    from service.app import create_app

    settings = _with_address(settings, args)
    if _refused("the API", settings):
        return EXIT_USAGE
    processes = max(1, getattr(args, "processes", 1))
    if processes == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
        return 0
    # Child processes build the app from the environment: hand them these settings, and
    # migrate once here so that they do not race to create the same tables.
    store.upgrade(settings.database_url)
    os.environ.update(settings_env(settings))
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=processes,
    )
    return 0


def _refused(what: str, settings: Settings) -> bool:
    return refuse_insecure_bind(
        what, settings.host, authenticated=settings.auth, allowed=settings.allow_insecure
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """LRSEARCH_* variables that rebuild exactly these settings in another process (a list
    of paths joined with ':', as LRSEARCH_DATA_ROOTS reads it)."""
    return {
        f"LRSEARCH_{name.upper()}": os.pathsep.join(map(str, v)) if isinstance(v, list) else str(v)
        for name, v in settings.model_dump().items()
        if v is not None
    }


def add_worker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-trials", type=int, help="exit after this many trials")
    parser.add_argument("--idle-exit", type=float, help="exit after this many idle seconds")
    add_worker_options(parser)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run trials of queued studies (imports TensorFlow; never done by the API process)."""
    if message := worker_extra_missing():
        print(message, file=sys.stderr)
        return EXIT_USAGE
    from search.training.devices import Placement, configure_devices
    from search.worker import run_worker

    try:
        memory_mb, population = worker_memory_mb(args), worker_population(args)
        if Placement.from_env().requested:  # placed on a GPU: fail now, not in a trial
            configure_devices()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run_worker(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        heartbeat_interval=settings.heartbeat_interval_s,
        grace_period=settings.grace_period_s,
        max_trials=args.max_trials,
        idle_exit_s=args.idle_exit,
        checkpoint_every_s=settings.checkpoint_every_s,
        data_roots=settings.data_roots,
        memory_limit_mb=memory_mb,
        population=population,
    )
    return 0


def add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--gpus",
        type=_gpu_indexes,
        default=(),
        help="GPU indexes to place the workers on, round-robin, e.g. 0,1 (LRSEARCH_GPU_INDEX "
        "of each worker; default: every worker sees every GPU)",
    )
    parser.add_argument(
        "--gpu-memory-mb",
        type=int,
        help="GPU memory limit of each worker in MiB (LRSEARCH_GPU_MEMORY_MB), so that "
        "several workers share a GPU safely (default: memory growth)",
    )
    add_worker_options(parser)
    _add_api(parser)


def _gpu_indexes(text: str) -> tuple[int, ...]:
    try:
        indexes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: GPU indexes such as 0,1") from None
    if not indexes or min(indexes) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: GPU indexes such as 0,1")
    return indexes


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Upgrade the DB, start K worker processes, restart any that dies (`Supervisor`) and
    serve the API here; stop the workers on exit."""
    if _refused("the API", _with_address(settings, args)):
        return EXIT_USAGE
    if args.workers > 0 and (message := worker_extra_missing()):
        print(message, file=sys.stderr)
        return EXIT_USAGE
    from search.training.devices import placements

    if args.gpu_memory_mb is not None and args.gpu_memory_mb < 1:
        print("error: --gpu-memory-mb must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        each_worker = worker_env(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store.upgrade(settings.database_url)
    places = placements(max(0, args.workers), args.gpus, args.gpu_memory_mb)
    spawns = [_worker_spawner(settings, {**place.env(), **each_worker}) for place in places]
    supervisor = Supervisor(spawns)
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        with supervisor:
            return cmd_api(args, settings)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_processes(supervisor.stop())


def _worker_spawner(
    settings: Settings, placement: dict[str, str]
) -> Callable[[], subprocess.Popen[bytes]]:
    """Start one worker with this GPU placement, again on every restart."""
    return lambda: _spawn_worker(settings, placement)


def _spawn_worker(settings: Settings, placement: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LRSEARCH_DATABASE_URL": settings.database_url,
        "LRSEARCH_DATA_DIR": str(settings.data_dir),
        **placement,
    }
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env)


def stop_processes(procs: Sequence[subprocess.Popen[Any]], timeout_s: float = 30.0) -> None:
    """SIGTERM every process (workers finish the current epoch), then kill stragglers."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _with_address(settings: Settings, args: argparse.Namespace) -> Settings:
    update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return settings.model_copy(update=update)
