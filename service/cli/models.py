"""Client commands about model files: upload a `.keras` file, list them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.cli.connection import add_connection, client_for
from service.cli.exit_codes import EXIT_OK
from service.cli.output import format_table
from service.client.display import shown
from service.settings import Settings


def add_models(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    upload = actions.add_parser("upload", help="upload a .keras file; prints its id")
    upload.add_argument("file", help="a .keras file saved by model.save()")
    upload.add_argument("--name", help="label shown in listings (default: file name)")
    add_connection(upload)
    listing = actions.add_parser("list", help="list your model files")
    add_connection(listing)


MODEL_COLUMNS = ("id", "name", "class", "input", "weights", "bytes", "created")


def cmd_models(args: argparse.Namespace, _settings: Settings) -> int:
    """Upload a model file (its id on stdout, a summary on stderr) or list them."""
    with client_for(args) as client:
        if args.action == "upload":
            row = client.upload_model(args.file, name=args.name)
            print(shown(row["id"]))
            print(shown(_summary(row)), file=sys.stderr)
            return EXIT_OK
        rows = [_row(m) for m in client.models()]
    print(format_table(MODEL_COLUMNS, rows, right={4, 5}))
    return EXIT_OK


def _shape(m: dict[str, Any]) -> str:
    shape = m.get("input_shape")
    return "?" if shape is None else "x".join("?" if d is None else str(d) for d in shape)


def _row(m: dict[str, Any]) -> list[str]:
    return [
        str(m["id"]),
        str(m["name"]),
        str(m["class_name"]),
        _shape(m),
        f"~{m['est_params']:,}",
        str(m["size_bytes"]),
        str(m.get("created_at", ""))[:19],
    ]


def _summary(m: dict[str, Any]) -> str:
    return (
        f"model {m['name']!r}: {m['class_name']}, input {_shape(m)}, ~{m['est_params']:,} "
        f"weights; use it with task.model: {{kind: keras_file, id: {m['id']}}}"
    )
