"""`lrsearch tasks`: the task plugins the live workers offer, and their devices."""

from __future__ import annotations

import argparse
import json
from typing import Any

from service.cli.connection import add_connection, client_for
from service.cli.exit_codes import EXIT_OK
from service.cli.output import format_table
from service.client.display import shown
from service.settings import Settings

TASK_COLUMNS = ("plugin", "versions", "workers", "devices")


def add_tasks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the raw document")
    add_connection(parser)


def cmd_tasks(args: argparse.Namespace, _settings: Settings) -> int:
    """A table of the plugins on offer, then a line on the live workers' devices."""
    with client_for(args) as client:
        offer = client.tasks()
    if args.json:
        print(json.dumps(offer, indent=2))
        return EXIT_OK
    print(format_table(TASK_COLUMNS, [_row(p) for p in offer["plugins"]], right={2}))
    print(shown(_devices(offer)))
    return EXIT_OK


def _row(plugin: dict[str, Any]) -> list[str]:
    return [
        str(plugin["name"]),
        ", ".join(plugin["versions"]),
        str(plugin["workers"]),
        ", ".join(plugin["devices"]),
    ]


def _devices(offer: dict[str, Any]) -> str:
    devices = ", ".join(f"{d['device']} x{d['workers']}" for d in offer["devices"]) or "none"
    return f"{offer['workers']} live worker(s) (seen within {offer['live_within_s']:g}s): {devices}"
