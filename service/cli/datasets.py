"""Client commands about datasets: upload one, list them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.cli.connection import add_connection, client_for
from service.cli.exit_codes import EXIT_OK
from service.cli.output import format_table
from service.client.display import shown
from service.settings import Settings


def add_datasets(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    upload = actions.add_parser("upload", help="upload a .csv or .npz; prints its id")
    upload.add_argument("file", help="dataset file (.csv needs --target)")
    upload.add_argument("--target", help="CSV column to predict")
    upload.add_argument("--name", help="label shown in listings (default: file name)")
    add_connection(upload)
    listing = actions.add_parser("list", help="list your datasets")
    add_connection(listing)


DATASET_COLUMNS = ("id", "name", "format", "task", "classes", "train", "val", "input", "created")


def cmd_datasets(args: argparse.Namespace, _settings: Settings) -> int:
    """Upload a dataset (its id on stdout, a summary on stderr) or list them as a table."""
    with client_for(args) as client:
        if args.action == "upload":
            row = client.upload_dataset(args.file, target=args.target, name=args.name)
            print(shown(row["id"]))
            print(shown(_dataset_summary(row)), file=sys.stderr)
            return EXIT_OK
        rows = [_dataset_row(d) for d in client.datasets()]
    print(format_table(DATASET_COLUMNS, rows, right={4, 5, 6}))
    return EXIT_OK


def _dataset_row(d: dict[str, Any]) -> list[str]:
    return [
        str(d["id"]),
        str(d["name"]),
        str(d["format"]),
        str(d["task"]),
        "-" if d.get("n_classes") is None else str(d["n_classes"]),
        str(d["n_train"]),
        str(d["n_val"]),
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
