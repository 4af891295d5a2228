"""The `lrsearch` command: database, tokens, API, workers, or all at once (`serve`).

Subcommands live in `COMMANDS` (name -> (add arguments, handler)) so new ones
(submit/status/best) slot in without touching the parser plumbing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from search import store
from service.settings import Settings

log = logging.getLogger("lrsearch.cli")

Handler = Callable[[argparse.Namespace, Settings], int]
AddArgs = Callable[[argparse.ArgumentParser], None]
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _settings(args: argparse.Namespace) -> Settings:
    """Environment settings, overridden by global flags when given."""
    overrides = {
        k: v for k, v in (("database_url", args.database_url), ("data_dir", args.data_dir)) if v
    }
    return Settings(**overrides)


# --- db / token -----------------------------------------------------------------------------


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["upgrade"], help="upgrade: create or migrate tables")


def cmd_db(_args: argparse.Namespace, settings: Settings) -> int:
    """Create or migrate lrsearch's and Optuna's tables."""
    store.upgrade(settings.database_url)
    print("database is up to date")
    return 0


def _add_token(parser: argparse.ArgumentParser) -> None:
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


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from service.app import create_app

    settings = _with_address(settings, args)
    if not settings.auth and settings.host not in _LOOPBACK:
        log.warning("auth is off while listening on %s: anyone who can reach it can use it",
                    settings.host)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
    return 0


def _add_worker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-trials", type=int, help="exit after this many trials")
    parser.add_argument("--idle-exit", type=float, help="exit after this many idle seconds")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run trials of queued studies (imports TensorFlow; never done by the API process)."""
    from search.worker import run_worker

    run_worker(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        heartbeat_interval=settings.heartbeat_interval_s,
        grace_period=settings.grace_period_s,
        max_trials=args.max_trials,
        idle_exit_s=args.idle_exit,
    )
    return 0


def _add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    _add_api(parser)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Upgrade the DB, start K worker processes and serve the API here; stop workers on exit."""
    store.upgrade(settings.database_url)
    workers = [_spawn_worker(settings) for _ in range(max(0, args.workers))]
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return cmd_api(args, settings)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(workers)


def _spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LRSEARCH_DATABASE_URL": settings.database_url,
        "LRSEARCH_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env)


def _stop(workers: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """SIGTERM every worker (they finish the current epoch), then kill stragglers."""
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
    for proc in workers:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _with_address(settings: Settings, args: argparse.Namespace) -> Settings:
    update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return settings.model_copy(update=update)


COMMANDS: dict[str, tuple[str, AddArgs, Handler]] = {
    "db": ("database maintenance", _add_db, cmd_db),
    "token": ("manage API tokens", _add_token, cmd_token),
    "api": ("run the HTTP API", _add_api, cmd_api),
    "worker": ("run a training worker", _add_worker, cmd_worker),
    "serve": ("upgrade the DB, run workers and the API", _add_serve, cmd_serve),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser with one subparser per entry of COMMANDS."""
    parser = argparse.ArgumentParser(prog="lrsearch", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="overrides LRSEARCH_DATABASE_URL / DATABASE_URL")
    parser.add_argument("--data-dir", help="overrides LRSEARCH_DATA_DIR")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _handler) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lrsearch` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command][2]
    with contextlib.suppress(KeyboardInterrupt):
        return handler(args, _settings(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
