"""The `lrsearch` command: database, tokens, API, workers, or all at once (`serve`).

Subcommands live in `COMMANDS` (name -> (add arguments, handler)) so new ones slot in without
touching the parser plumbing; their modules go by command group: `server` (db, token, api,
worker, serve), `dashboard`, `studies` (submit, status, trials, best, cancel, plot), `datasets`,
`models` and `tasks`. Client commands talk to a running API; their exit codes are EXIT_*
(`exit_codes`), for shell scripts.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Callable, Sequence

from service.cli.dashboard import add_dashboard, cmd_dashboard
from service.cli.datasets import add_datasets, cmd_datasets
from service.cli.exit_codes import (
    EXIT_API,
    EXIT_BROKEN_PIPE,
    EXIT_CONNECT,
    EXIT_OK,
    EXIT_STUDY_FAILED,
    EXIT_USAGE,
)
from service.cli.models import add_models, cmd_models
from service.cli.server import (
    add_api_command,
    add_db,
    add_serve,
    add_token,
    add_worker,
    cmd_api,
    cmd_db,
    cmd_serve,
    cmd_token,
    cmd_worker,
)
from service.cli.studies import (
    add_best,
    add_cancel,
    add_plot,
    add_status,
    add_submit,
    add_trials,
    cmd_best,
    cmd_cancel,
    cmd_plot,
    cmd_status,
    cmd_submit,
    cmd_trials,
)
from service.cli.tasks import add_tasks, cmd_tasks
from service.client import DEFAULT_URL, ApiError, CannotConnect, InputFileError
from service.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]
AddArgs = Callable[[argparse.ArgumentParser], None]


def _settings(args: argparse.Namespace) -> Settings:
    """Environment settings, overridden by global flags when given."""
    overrides = {
        k: v for k, v in (("database_url", args.database_url), ("data_dir", args.data_dir)) if v
    }
    return Settings(**overrides)


COMMANDS: dict[str, tuple[str, AddArgs, Handler]] = {
    "db": ("database maintenance", add_db, cmd_db),
    "token": ("manage API tokens", add_token, cmd_token),
    "api": ("run the HTTP API", add_api_command, cmd_api),
    "worker": ("run a training worker", add_worker, cmd_worker),
    "serve": ("upgrade the DB, run workers and the API", add_serve, cmd_serve),
    "submit": ("submit a study spec (YAML or JSON); prints its id", add_submit, cmd_submit),
    "status": ("show a study's status and progress", add_status, cmd_status),
    "trials": ("list a study's trials as a table", add_trials, cmd_trials),
    "best": ("print the best schedule (json, export or python)", add_best, cmd_best),
    "cancel": ("cancel a queued or running study", add_cancel, cmd_cancel),
    "datasets": ("upload or list datasets", add_datasets, cmd_datasets),
    "models": ("upload or list .keras model files", add_models, cmd_models),
    "tasks": ("list the task plugins the live workers offer", add_tasks, cmd_tasks),
    "plot": ("save a plot of a study as PNG", add_plot, cmd_plot),
    "dashboard": ("run optuna-dashboard on the service's database", add_dashboard, cmd_dashboard),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser with one subparser per entry of COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="lrsearch",
        description=__doc__.splitlines()[0],
        epilog="exit codes of client commands: 0 ok, 1 study failed or cancelled, 2 usage "
        "error, 3 API error, 4 cannot connect, 141 the output's reader went away (| head)",
    )
    parser.add_argument("--database-url", help="overrides LRSEARCH_DATABASE_URL / DATABASE_URL")
    parser.add_argument("--data-dir", help="overrides LRSEARCH_DATA_DIR")
    parser.add_argument("--url", help=f"API URL for client commands (LRSEARCH_URL, {DEFAULT_URL})")
    parser.add_argument("--token", help="API token for client commands (LRSEARCH_TOKEN)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _handler) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lrsearch` console script; returns the exit code (EXIT_*)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for quiet in ("alembic", "httpx", "httpcore"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    try:
        code = _run(argv)
        sys.stdout.flush()  # a reader gone early (`| head -1`) shows here, not at exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush cannot fail again (and print
    `Exception ignored ... BrokenPipeError`)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: return the code instead of exiting
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler = COMMANDS[args.command][2]
    try:
        return handler(args, _settings(args))
    except KeyboardInterrupt:
        return 130
    except ApiError as exc:
        print(f"error: {exc.message()}", file=sys.stderr)
        return EXIT_API
    except CannotConnect as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONNECT
    except InputFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


__all__ = [
    "COMMANDS",
    "EXIT_API",
    "EXIT_CONNECT",
    "EXIT_OK",
    "EXIT_STUDY_FAILED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]
