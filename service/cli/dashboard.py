"""`lrsearch dashboard`: optuna-dashboard on the service's database, read-only unless told."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Collection, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from search import store
from service.cli.exit_codes import EXIT_OK, EXIT_USAGE
from service.cli.exposure import refuse_insecure_bind
from service.cli.server import raise_keyboard_interrupt
from service.hosts import normalise_allowed, trusted_host, untrusted_host_detail
from service.settings import Settings


def add_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--allow-writes",
        action="store_true",
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
            {
                "reason": "this dashboard is read-only (start it with --allow-writes to change "
                "studies); use the lrsearch API to cancel or delete studies"
            }
        ).encode()
        start_response(
            "405 Method Not Allowed",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Allow", ", ".join(_READ_METHODS)),
            ],
        )
        return [body]

    return guarded


def trusted_hosts_only(app: WsgiApp, allowed: Collection[str]) -> WsgiApp:
    """Refuse (403) a request whose Host is a domain name not allowed: the dashboard has no
    login, so a web page that rebinds its own name to this address could read every
    tenant's studies (service.hosts)."""
    names = normalise_allowed(allowed)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST")
        if trusted_host(host, names):
            return app(environ, start_response)
        body = json.dumps({"reason": untrusted_host_detail(host or "")}).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (the dashboard polls every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """Serve optuna-dashboard on the service's database (read its studies, all tenants)."""
    import optuna_dashboard

    # No login at all, and every tenant's studies: auth on the API does not cover it.
    if refuse_insecure_bind(
        "the dashboard", args.host, authenticated=False, allowed=settings.allow_insecure
    ):
        return EXIT_USAGE
    storage = store.optuna_storage(settings.database_url)
    app: WsgiApp = optuna_dashboard.wsgi(storage)
    if not args.allow_writes:
        app = read_only(app)
    app = trusted_hosts_only(app, settings.allowed_hosts)
    server = make_server(
        args.host, args.port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    mode = "read-write" if args.allow_writes else "read-only"
    shown = _redacted(settings.database_url)
    print(
        f"optuna-dashboard ({mode}) on http://{args.host}:{args.port}/ for {shown}",
        file=sys.stderr,
        flush=True,
    )
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
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
