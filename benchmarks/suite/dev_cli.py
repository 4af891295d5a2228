"""The command line the suite's dev tools share (selection_oracle.py, rung_fidelity.py,
cooldown_fidelity.py)."""

from __future__ import annotations

import argparse

from .tasks import Task, by_name


def dev_tool_args(doc: str) -> tuple[argparse.Namespace, list[Task]]:
    """--seeds (from --first-seed), --trials and --tasks (the dev tasks unless named), and
    the tasks chosen."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--tasks", default="", help="comma-separated task names (default: dev)")
    args = p.parse_args()
    chosen = by_name(args.tasks.split(",") if args.tasks else None, None if args.tasks else "dev")
    return args, chosen
