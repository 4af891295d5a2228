"""Client commands about studies: submit, status, trials, best, cancel and plot."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from service.cli.connection import add_connection, client_for
from service.cli.exit_codes import EXIT_OK, EXIT_STUDY_FAILED
from service.cli.output import format_table
from service.client import InputFileError, Study, load_spec, parse_spec_text, set_dotted
from service.client.display import shown
from service.client.specs import MAX_SPEC_FILE_BYTES
from service.settings import Settings


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
        print(shown(f"study {status.get('id')} {state}{reason}"), file=sys.stderr)
        return EXIT_STUDY_FAILED
    return EXIT_OK


def add_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="study spec: .yaml/.yml or .json ('-' reads stdin)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field by dotted key, e.g. --set task.dataset=ID (repeatable)",
    )
    parser.add_argument("--wait", action="store_true", help="follow the study until it ends")
    _add_wait_flags(parser)
    add_connection(parser)


def cmd_submit(args: argparse.Namespace, _settings: Settings) -> int:
    """Create a study from a spec file; print its id (and follow it with --wait)."""
    spec = _read_spec(args.file, _overrides(args.set))
    with client_for(args) as client:
        study = client.submit(spec)
        print(shown(study.id), flush=True)
        return _wait(study, args) if args.wait else EXIT_OK


def _read_spec(file: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if file != "-":
        return load_spec(file, overrides)
    # One character more than a spec may hold, so an endless stdin (< /dev/zero) still ends.
    spec = parse_spec_text(sys.stdin.read(MAX_SPEC_FILE_BYTES + 1), where="stdin")
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


def add_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="study id")
    parser.add_argument("--json", action="store_true", help="print the raw status document")
    parser.add_argument("--wait", action="store_true", help="follow the study until it ends")
    _add_wait_flags(parser)
    add_connection(parser)


def cmd_status(args: argparse.Namespace, _settings: Settings) -> int:
    """Print a study's status; exit 1 if it failed or was cancelled."""
    with client_for(args) as client:
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
    return "\n".join(f"{k:<10} {shown(v)}" for k, v in rows if v not in (None, ""))


def add_trials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="study id")
    parser.add_argument(
        "--state", choices=["complete", "pruned", "fail", "running", "waiting"], help="filter"
    )
    parser.add_argument(
        "--order", choices=["number", "value"], default="number", help="value: best first"
    )
    parser.add_argument("--limit", type=int, help="print at most this many trials")
    add_connection(parser)


def cmd_trials(args: argparse.Namespace, _settings: Settings) -> int:
    """Print the study's trials as an aligned table (all pages, or --limit rows)."""
    with client_for(args) as client:
        study = client.study(args.id)
        rows: list[list[str]] = []
        for trial in study.trials(state=args.state, order=args.order):
            if args.limit is not None and len(rows) >= args.limit:
                break
            rows.append(_trial_row(trial))
    columns: tuple[str, ...] = TRIAL_COLUMNS
    if any(row[-1] != "-" for row in rows):  # some trial failed: say why, as the last column
        columns += ("reason",)
    else:
        rows = [row[:-1] for row in rows]
    print(format_table(columns, rows, right={0, 3, 4, 5}))
    return EXIT_OK


TRIAL_COLUMNS = ("number", "state", "strategy", "value", "epochs", "seconds")
REASON_CHARS = 300  # a failure's reason on one line, cut here (the API has it whole)


def _trial_row(trial: dict[str, Any]) -> list[str]:
    seconds = trial.get("seconds")
    return [
        str(trial.get("number")),
        str(trial.get("state")),
        str(trial.get("strategy") or "-"),
        _num(trial.get("value")),
        "-" if trial.get("epochs_run") is None else str(trial["epochs_run"]),
        "-" if seconds is None else f"{float(seconds):.1f}",
        _reason(trial.get("fail_reason")),
    ]


def _reason(reason: Any) -> str:
    """A failure's reason on one line (a traceback's last lines, Keras messages span several)."""
    if not reason:
        return "-"
    text = " ".join(str(reason).split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.6g}"


def add_best(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="study id")
    parser.add_argument(
        "--format",
        choices=["json", "export", "python"],
        default="json",
        help="json: the whole best trial; export: its export as JSON "
        "(search.training.keras_export.apply takes it); python: code that rebuilds it",
    )
    add_connection(parser)


def cmd_best(args: argparse.Namespace, _settings: Settings) -> int:
    """Print the best trial's schedule in the chosen format."""
    with client_for(args) as client:
        best = client.study(args.id).best()
    if args.format == "python":
        code = best["export"].get("python") or _snippet(best["export"])
        print(shown(code, newlines=True), end="")
    elif args.format == "export":
        print(json.dumps(best["export"], indent=2))
    else:
        print(json.dumps(best, indent=2))
    return EXIT_OK


def _snippet(export: dict[str, Any]) -> str:
    """Build the Python snippet when the trial predates stored snippets."""
    from search.strategies.export import Export, python_snippet

    return python_snippet(
        Export(
            schedule=export["schedule"],
            callbacks=export["callbacks"] or [],
            initial_lr=float(export["initial_lr"] or 0.0),
            optimizer=export["optimizer"] or {"class_name": "Adam", "config": {}},
            preprocess=export.get("preprocess"),
        )
    )


def add_cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="study id")
    add_connection(parser)


def cmd_cancel(args: argparse.Namespace, _settings: Settings) -> int:
    """Cancel a queued or running study (an already finished one is an API error, exit 3)."""
    with client_for(args) as client:
        data = client.study(args.id).cancel()
    print(shown(f"{data['id']} {data['status']}"))
    return EXIT_OK


def add_plot(parser: argparse.ArgumentParser) -> None:
    from search.plots import PLOT_NAMES

    parser.add_argument("id", help="study id")
    parser.add_argument("name", choices=PLOT_NAMES, help="which plot")
    parser.add_argument("-o", "--output", help="PNG file to write (default: ID-NAME.png)")
    parser.add_argument("-k", type=int, default=5, help="trials drawn by lr/validation")
    add_connection(parser)


def cmd_plot(args: argparse.Namespace, _settings: Settings) -> int:
    """Save one of the study's plots as PNG and print the file name."""
    with client_for(args) as client:
        png = client.study(args.id).plot(args.name, k=args.k)
    path = Path(args.output or f"{args.id}-{args.name}.png")
    try:
        path.write_bytes(png)
    except OSError as exc:
        raise InputFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(path)
    return EXIT_OK
