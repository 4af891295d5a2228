"""How a client command reaches the API: --url/--token flags, else the environment, else
loopback."""

from __future__ import annotations

import argparse
import os

from service.client import DEFAULT_URL, Client


def add_connection(parser: argparse.ArgumentParser) -> None:
    """--url/--token also after the subcommand; SUPPRESS keeps the global value otherwise."""
    parser.add_argument("--url", default=argparse.SUPPRESS, help="API base URL")
    parser.add_argument("--token", default=argparse.SUPPRESS, help="API bearer token")


def client_for(args: argparse.Namespace) -> Client:
    """A client for --url/--token, else LRSEARCH_URL/LRSEARCH_TOKEN, else loopback."""
    url = args.url or os.environ.get("LRSEARCH_URL") or DEFAULT_URL
    token = args.token or os.environ.get("LRSEARCH_TOKEN") or None
    return Client(url, token)
