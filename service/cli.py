"""The `lrsearch` command: database, tokens, API, workers, or all at once (`serve`).

Subcommands live in `COMMANDS` (name -> (add arguments, handler)) so new ones slot in without
touching the parser plumbing. Client commands (submit, status, trials, best, cancel, datasets,
plot) talk to a running API; their exit codes are EXIT_* below, for shell scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from search import store
from service.client import (
    DEFAULT_URL,
    ApiError,
    CannotConnect,
    Client,
    InputFileError,
    Study,
    load_spec,
)
from service.settings import Settings

log = logging.getLogger("lrsearch.cli")

Handler = Callable[[argparse.Namespace, Settings], int]
AddArgs = Callable[[argparse.ArgumentParser], None]
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

EXIT_OK = 0
EXIT_STUDY_FAILED = 1  # the study ended failed or cancelled
EXIT_USAGE = 2  # bad arguments or an unreadable local file (argparse uses 2 as well)
EXIT_API = 3  # the API refused the request (problem title/detail on stderr)
EXIT_CONNECT = 4  # the API could not be reached


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


def _add_api_command(parser: argparse.ArgumentParser) -> None:
    _add_api(parser)
    parser.add_argument(
        "--processes", type=int, default=1,
        help="API server processes sharing the port (default 1). Each has its own answer "
        "cache and rate-limit window: with N processes a token may create up to N times "
        "the per-minute limit.",
    )


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the HTTP API with uvicorn (in N processes with --processes N)."""
    import uvicorn

    from service.app import create_app

    settings = _with_address(settings, args)
    if not settings.auth and settings.host not in _LOOPBACK:
        log.warning("auth is off while listening on %s: anyone who can reach it can use it",
                    settings.host)
    processes = max(1, getattr(args, "processes", 1))
    if processes == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
        return 0
    # Child processes build the app from the environment: hand them these settings, and
    # migrate once here so that they do not race to create the same tables.
    store.upgrade(settings.database_url)
    os.environ.update(_settings_env(settings))
    uvicorn.run("service.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=processes)
    return 0


def _settings_env(settings: Settings) -> dict[str, str]:
    """LRSEARCH_* variables that rebuild exactly these settings in another process."""
    return {
        f"LRSEARCH_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }


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
        checkpoint_every_s=settings.checkpoint_every_s,
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
        stop_processes(workers)


def _spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LRSEARCH_DATABASE_URL": settings.database_url,
        "LRSEARCH_DATA_DIR": str(settings.data_dir),
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


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _with_address(settings: Settings, args: argparse.Namespace) -> Settings:
    update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return settings.model_copy(update=update)


# --- client commands: talk to a running API over HTTP ------------------------------------------


def _add_connection(parser: argparse.ArgumentParser) -> None:
    """--url/--token also after the subcommand; SUPPRESS keeps the global value otherwise."""
    parser.add_argument("--url", default=argparse.SUPPRESS, help="API base URL")
    parser.add_argument("--token", default=argparse.SUPPRESS, help="API bearer token")


def _client(args: argparse.Namespace) -> Client:
    """A client for --url/--token, else LRSEARCH_URL/LRSEARCH_TOKEN, else loopback."""
    url = args.url or os.environ.get("LRSEARCH_URL") or DEFAULT_URL
    token = args.token or os.environ.get("LRSEARCH_TOKEN") or None
    return Client(url, token)


def _add_wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _wait(study: Study, args: argparse.Namespace) -> int:
    """Show progress until the study ends; 0 when completed, 1 when failed or cancelled."""
    final = study.wait(progress=not args.quiet, poll_s=args.poll)
    return _final_exit(final)


def _final_exit(status: dict[str, Any]) -> int:
    """Tell the shell how a final study ended (running/queued count as fine)."""
    state = status.get("status")
    if state in ("failed", "cancelled"):
        reason = f": {status['error']}" if status.get("error") else ""
        print(f"study {status.get('id')} {state}{reason}", file=sys.stderr)
        return EXIT_STUDY_FAILED
    return EXIT_OK


def _add_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="study spec: .yaml/.yml or .json ('-' reads stdin)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a spec field by dotted key, e.g. --set task.dataset=ID (repeatable)",
    )
    parser.add_argument("--wait", action="store_true", help="follow the study until it ends")
    _add_wait_flags(parser)
    _add_connection(parser)


def cmd_submit(args: argparse.Namespace, _settings: Settings) -> int:
    """Create a study from a spec file; print its id (and follow it with --wait)."""
    spec = _read_spec(args.file, _overrides(args.set))
    with _client(args) as client:
        study = client.submit(spec)
        print(study.id, flush=True)
        return _wait(study, args) if args.wait else EXIT_OK


def _read_spec(file: str, overrides: dict[str, Any]) -> dict[str, Any]:
    from service.client import parse_spec_text, set_dotted

    if file != "-":
        return load_spec(file, overrides)
    spec = parse_spec_text(sys.stdin.read(), where="stdin")
    for key, value in overrides.items():
        set_dotted(spec, key, value)
    return spec


def _overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are YAML scalars (so `4` is a number and `true` a bool)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputFileError(f"--set needs KEY=VALUE, got {pair!r}")
        try:
            out[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def _add_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="study id")
    parser.add_argument("--json", action="store_true", help="print the raw status document")
    parser.add_argument("--wait", action="store_true", help="follow the study until it ends")
    _add_wait_flags(parser)
    _add_connection(parser)


def cmd_status(args: argparse.Namespace, _settings: Settings) -> int:
    """Print a study's status; exit 1 if it failed or was cancelled."""
    with _client(args) as client:
        study = client.study(args.id)
        if args.wait:
            study.wait(progress=not args.quiet, poll_s=args.poll)
    print(json.dumps(study.data, indent=2) if args.json else _status_text(study.data))
    return _final_exit(study.data)


def _status_text(data: dict[str, Any]) -> str:
    progress = data.get("progress") or {}
    done = sum(int(progress.get(k) or 0) for k in ("complete", "pruned", "failed"))
    counts = ", ".join(f"{k} {v}" for k, v in progress.items())
    best = "-"
    if data.get("best_value") is not None:
        best = f"{_num(data['best_value'])} (trial #{data.get('best_trial')})"
    objective = (data.get("spec") or {}).get("objective") or {}
    rows = [
        ("id", data.get("id")),
        ("name", data.get("name")),
        ("status", data.get("status")),
        ("objective", f"{objective.get('direction', '')} {objective.get('metric', '')}".strip()),
        ("trials", f"{done}/{data.get('n_trials')} done ({counts})"),
        ("best", best),
        ("error", data.get("error")),
        ("created", data.get("created_at")),
        ("started", data.get("started_at")),
        ("finished", data.get("finished_at")),
    ]
    return "\n".join(f"{k:<10} {v}" for k, v in rows if v not in (None, ""))


def _add_trials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="study id")
    parser.add_argument(
        "--state", choices=["complete", "pruned", "fail", "running", "waiting"], help="filter"
    )
    parser.add_argument("--order", choices=["number", "value"], default="number",
                        help="value: best first")
    parser.add_argument("--limit", type=int, help="print at most this many trials")
    _add_connection(parser)


def cmd_trials(args: argparse.Namespace, _settings: Settings) -> int:
    """Print the study's trials as an aligned table (all pages, or --limit rows)."""
    with _client(args) as client:
        study = client.study(args.id)
        rows: list[list[str]] = []
        for trial in study.trials(state=args.state, order=args.order):
            if args.limit is not None and len(rows) >= args.limit:
                break
            rows.append(_trial_row(trial))
    print(format_table(TRIAL_COLUMNS, rows, right={0, 3, 4, 5}))
    return EXIT_OK


TRIAL_COLUMNS = ("number", "state", "strategy", "value", "epochs", "seconds")


def _trial_row(trial: dict[str, Any]) -> list[str]:
    seconds = trial.get("seconds")
    return [
        str(trial.get("number")),
        str(trial.get("state")),
        str(trial.get("strategy") or "-"),
        _num(trial.get("value")),
        "-" if trial.get("epochs_run") is None else str(trial["epochs_run"]),
        "-" if seconds is None else f"{float(seconds):.1f}",
    ]


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None
) -> str:
    """Columns padded to their widest cell; columns in `right` (numbers) right-aligned."""
    right = right or set()
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        out = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.6g}"


def _add_best(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="study id")
    parser.add_argument(
        "--format", choices=["json", "keras", "python"], default="json",
        help="json: the whole best trial; keras: optimizer/schedule/callbacks as JSON "
        "(search.training.keras_export.apply takes it); python: code that rebuilds them",
    )
    _add_connection(parser)


def cmd_best(args: argparse.Namespace, _settings: Settings) -> int:
    """Print the best trial's schedule in the chosen format."""
    with _client(args) as client:
        best = client.study(args.id).best()
    if args.format == "python":
        print(best.get("python") or _snippet(best), end="")
    elif args.format == "keras":
        print(json.dumps(keras_export(best), indent=2))
    else:
        print(json.dumps(best, indent=2))
    return EXIT_OK


def keras_export(best: dict[str, Any]) -> dict[str, Any]:
    """The export as `search.training.keras_export.apply` takes it (schedule, callbacks,
    optimizer)."""
    return {
        "schedule": best.get("keras"),
        "callbacks": best.get("callbacks") or [],
        "initial_lr": best.get("initial_lr"),
        "optimizer": best.get("optimizer"),
    }


def _snippet(best: dict[str, Any]) -> str:
    """Build the Python snippet when the trial predates stored snippets."""
    from search.strategies.base import Export
    from search.strategies.export import python_snippet

    export = keras_export(best)
    return python_snippet(
        Export(
            schedule=export["schedule"],
            callbacks=export["callbacks"],
            initial_lr=float(export["initial_lr"] or 0.0),
            optimizer=export["optimizer"] or {"class_name": "Adam", "config": {}},
        )
    )


def _add_cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="study id")
    _add_connection(parser)


def cmd_cancel(args: argparse.Namespace, _settings: Settings) -> int:
    """Cancel a queued or running study (an already finished one is an API error, exit 3)."""
    with _client(args) as client:
        data = client.study(args.id).cancel()
    print(f"{data['id']} {data['status']}")
    return EXIT_OK


def _add_datasets(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    upload = actions.add_parser("upload", help="upload a .csv or .npz; prints its id")
    upload.add_argument("file", help="dataset file (.csv needs --target)")
    upload.add_argument("--target", help="CSV column to predict")
    upload.add_argument("--name", help="label shown in listings (default: file name)")
    _add_connection(upload)
    listing = actions.add_parser("list", help="list your datasets")
    _add_connection(listing)


DATASET_COLUMNS = ("id", "name", "format", "task", "classes", "train", "val", "input", "created")


def cmd_datasets(args: argparse.Namespace, _settings: Settings) -> int:
    """Upload a dataset (its id on stdout, a summary on stderr) or list them as a table."""
    with _client(args) as client:
        if args.action == "upload":
            row = client.upload_dataset(args.file, target=args.target, name=args.name)
            print(row["id"])
            print(_dataset_summary(row), file=sys.stderr)
            return EXIT_OK
        rows = [_dataset_row(d) for d in client.datasets()]
    print(format_table(DATASET_COLUMNS, rows, right={4, 5, 6}))
    return EXIT_OK


def _dataset_row(d: dict[str, Any]) -> list[str]:
    return [
        str(d["id"]), str(d["name"]), str(d["format"]), str(d["task"]),
        "-" if d.get("n_classes") is None else str(d["n_classes"]),
        str(d["n_train"]), str(d["n_val"]),
        "x".join(str(n) for n in d.get("input_shape") or []),
        str(d.get("created_at", ""))[:19],
    ]


def _dataset_summary(d: dict[str, Any]) -> str:
    classes = f", {d['n_classes']} classes" if d.get("n_classes") else ""
    shape = "x".join(str(n) for n in d.get("input_shape") or [])
    return (
        f"dataset {d['name']!r}: {d['task']}{classes}, {d['n_train']} train / {d['n_val']} "
        f"validation rows, input {shape}; use it with task.dataset: {d['id']}"
    )


def _add_plot(parser: argparse.ArgumentParser) -> None:
    from search.plots import PLOT_NAMES

    parser.add_argument("id", help="study id")
    parser.add_argument("name", choices=PLOT_NAMES, help="which plot")
    parser.add_argument("-o", "--output", help="PNG file to write (default: ID-NAME.png)")
    parser.add_argument("-k", type=int, default=5, help="trials drawn by lr/validation")
    _add_connection(parser)


def cmd_plot(args: argparse.Namespace, _settings: Settings) -> int:
    """Save one of the study's plots as PNG and print the file name."""
    with _client(args) as client:
        png = client.study(args.id).plot(args.name, k=args.k)
    path = Path(args.output or f"{args.id}-{args.name}.png")
    try:
        path.write_bytes(png)
    except OSError as exc:
        raise InputFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(path)
    return EXIT_OK


def _add_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--allow-writes", action="store_true",
        help="let the dashboard change the database (notes, renames, deletes, schema "
        "migration); off by default because it bypasses the API's bookkeeping",
    )


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """The dashboard's page makes parallel API calls; serve them concurrently."""

    daemon_threads = True


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_READ_METHODS = ("GET", "HEAD", "OPTIONS")


def read_only(app: WsgiApp) -> WsgiApp:
    """Refuse every request that could write (a dashboard delete would orphan our study row)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() in _READ_METHODS:
            return app(environ, start_response)
        body = json.dumps(
            {"reason": "this dashboard is read-only (start it with --allow-writes to change "
             "studies); use the lrsearch API to cancel or delete studies"}
        ).encode()
        start_response("405 Method Not Allowed", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Allow", ", ".join(_READ_METHODS)),
        ])
        return [body]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (the dashboard polls every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """Serve optuna-dashboard on the service's database (read its studies, all tenants)."""
    import optuna_dashboard

    if args.host not in _LOOPBACK:
        log.warning("the dashboard has no authentication and shows every tenant's studies; "
                    "listening on %s exposes them", args.host)
    storage = store.optuna_storage(settings.database_url)
    app: WsgiApp = optuna_dashboard.wsgi(storage)
    if not args.allow_writes:
        app = read_only(app)
    server = make_server(args.host, args.port, app,
                         server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    mode = "read-write" if args.allow_writes else "read-only"
    shown = _redacted(settings.database_url)
    print(f"optuna-dashboard ({mode}) on http://{args.host}:{args.port}/ for {shown}",
          file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        storage.engine.dispose()
    return EXIT_OK


def _redacted(url: str) -> str:
    """The database URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(store.normalise_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "the configured database"


COMMANDS: dict[str, tuple[str, AddArgs, Handler]] = {
    "db": ("database maintenance", _add_db, cmd_db),
    "token": ("manage API tokens", _add_token, cmd_token),
    "api": ("run the HTTP API", _add_api_command, cmd_api),
    "worker": ("run a training worker", _add_worker, cmd_worker),
    "serve": ("upgrade the DB, run workers and the API", _add_serve, cmd_serve),
    "submit": ("submit a study spec (YAML or JSON); prints its id", _add_submit, cmd_submit),
    "status": ("show a study's status and progress", _add_status, cmd_status),
    "trials": ("list a study's trials as a table", _add_trials, cmd_trials),
    "best": ("print the best schedule (json, keras or python)", _add_best, cmd_best),
    "cancel": ("cancel a queued or running study", _add_cancel, cmd_cancel),
    "datasets": ("upload or list datasets", _add_datasets, cmd_datasets),
    "plot": ("save a plot of a study as PNG", _add_plot, cmd_plot),
    "dashboard": ("run optuna-dashboard on the service's database", _add_dashboard,
                  cmd_dashboard),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser with one subparser per entry of COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="lrsearch",
        description=__doc__.splitlines()[0],
        epilog="exit codes of client commands: 0 ok, 1 study failed or cancelled, 2 usage "
        "error, 3 API error, 4 cannot connect",
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


if __name__ == "__main__":
    raise SystemExit(main())
