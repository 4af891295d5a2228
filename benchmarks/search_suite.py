"""Search quality that carries over: lrsearch against what users do instead, on a task suite.

Tasks (`benchmarks/suite/tasks.py`) are split once, in code, into dev tasks (where lrsearch's
defaults and methods may be chosen) and test tasks (only reported). On every task and search
seed, every contender gets the same budget (N trials x E epochs) and the same search space
(the study's strategy families and ranges):

- fixed baselines at the optimizer's Keras default rate: constant, linear decay to zero,
  warm-up + cosine; and keras.optimizers.ScheduleFreeAdamW at its averaged weights;
- Keras Tuner RandomSearch and Hyperband; hand-written Optuna TPE + MedianPruner and TPE +
  HyperbandPruner (`benchmarks/suite/peers.py`);
- lrsearch through the real service with its defaults (`lrsearch serve`, HTTP only).

Each contender's chosen configuration (lrsearch: `/best`'s export through `apply()`) is
retrained in a plain Keras fit from 5 fresh seeds: (a) the mean final-epoch val_loss, (b) the
mean best-epoch val_loss; (c) the epochs each search spent, and the epochs lrsearch had spent
when its choice at that point would already have beaten the best searching peer's (a).

    .venv/bin/pip install -e '.[bench]'          # Keras Tuner
    .venv/bin/python benchmarks/search_suite.py [--quick] [--seeds 3] [--trials 16]
        [--tasks a,b] [--split dev|test] [--jobs 2] [--out benchmarks/out/suite.jsonl]

Results are appended to --out as they come (an interrupted run resumes; --fresh starts over).
Last line, over the test tasks: rank_final=R1 rank_best=R2 wins=W/T epochs_ratio=E
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("LRSEARCH_TF_THREADS", "1")  # the same for every contender

from suite import report, tasks, units

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    # a plain `kill` unwinds like Ctrl-C: each study's `lrsearch serve` is stopped on the
    # way out (without this its server and worker outlived the suite)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = _parser().parse_args()
    chosen = tasks.by_name(
        args.tasks.split(",") if args.tasks else (list(tasks.QUICK) if args.quick else None),
        args.split,
    )
    count = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    seeds = list(range(args.first_seed, args.first_seed + count))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for path in _shard_paths(out, args.jobs):
            path.unlink(missing_ok=True)
    started = time.perf_counter()
    if args.fill_beat:
        _fill_beat(out, chosen)
    if args.report_only or args.fill_beat:
        _report(units.read_records(_shard_paths(out, max(args.jobs, 1))), chosen, 0.0)
        return
    if args.shard is not None:
        _run_shard(args, chosen, seeds, out)
        return
    if args.jobs > 1:
        _run_parallel(args, out)
    else:
        _run_shard(args, chosen, seeds, out)
    records = units.read_records(_shard_paths(out, max(args.jobs, 1)))
    if args.variant:
        records = [
            {**r, "contender": units.LRSEARCH} if r["contender"] == args.variant else r
            for r in records
            if r["contender"] != units.LRSEARCH
        ]
    _report(records, chosen, time.perf_counter() - started)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4 tasks, 1 seed (about 15 minutes)")
    p.add_argument("--seeds", type=int, default=None, help="search seeds (default 3; quick 1)")
    p.add_argument(
        "--first-seed", type=int, default=0, help="run seeds from this one (resume a seed alone)"
    )
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    p.add_argument("--split", choices=("dev", "test"), default=None)
    p.add_argument("--jobs", type=int, default=2, help="parallel processes, 1 TF thread each")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "suite.jsonl"))
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    p.add_argument("--list", action="store_true", help="print the suite and exit")
    p.add_argument(
        "--contenders",
        default="",
        help="comma-separated subset: baselines, peers, lrsearch (default: all)",
    )
    p.add_argument(
        "--label", default=units.LRSEARCH, help="record lrsearch under this name (a dev variant)"
    )
    p.add_argument(
        "--lrsearch-spec",
        default="{}",
        help="JSON merged into lrsearch's study spec (a dev variant)",
    )
    p.add_argument(
        "--skip-beat",
        action="store_true",
        help="do not retrain lrsearch's earlier choices (epochs to beat the peers)",
    )
    p.add_argument(
        "--variant", default="", help="report: read the records labelled so as lrsearch's"
    )
    p.add_argument("--report-only", action="store_true", help="print the tables of --out")
    p.add_argument(
        "--fill-beat",
        action="store_true",
        help="add the epochs-to-beat measure to lrsearch records of --out run with --skip-beat"
        " (once the peers' records are in the same file), then report",
    )
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/n", internal
    args, _ = p.parse_known_args()
    if args.list:
        print(tasks.describe())
        raise SystemExit(0)
    return p


def _fill_beat(out: Path, chosen: list[tasks.Task]) -> None:
    """Measure epochs-to-beat where a record lacks it (lrsearch ran before or beside its
    peers); --out is rewritten with the completed records."""
    records = units.read_records([out])
    by_name = {t.name: t for t in chosen}
    for rec in records:
        task = by_name.get(rec["task"])
        if task is None or rec["contender"] != units.LRSEARCH or "epochs_to_beat" in rec:
            continue
        same_task = [r for r in records if r["task"] == task.name]
        rec["epochs_to_beat"] = units.epochs_to_beat(task, same_task, rec["seed"], {})
        _log(f"{task.name} seed {rec['seed']}: epochs to beat {rec['epochs_to_beat']}")
    out.write_text("".join(_json(r) + "\n" for r in records))


def _shard_paths(out: Path, jobs: int) -> list[Path]:
    return [out] + [out.with_suffix(f".shard{i}.jsonl") for i in range(jobs)]


def _run_parallel(args: argparse.Namespace, out: Path) -> None:
    """One child process per shard of the units, each with its own lrsearch service."""
    argv = [a for a in sys.argv[1:] if a != "--fresh"]
    children = [
        subprocess.Popen([sys.executable, __file__, *argv, "--shard", f"{i}/{args.jobs}"])
        for i in range(args.jobs)
    ]
    try:
        codes = [c.wait() for c in children]
    finally:  # interrupted: each shard stops its own service as it exits
        for child in children:
            child.terminate()
    if any(codes):
        raise SystemExit(f"a shard failed: exit codes {codes}")


def _run_shard(
    args: argparse.Namespace, chosen: list[tasks.Task], seeds: list[int], out: Path
) -> None:
    index, count = (int(x) for x in args.shard.split("/")) if args.shard else (0, 1)
    path = out if args.shard is None else out.with_suffix(f".shard{index}.jsonl")
    existing = units.read_records(_shard_paths(out, max(args.jobs, 1)))
    plan = [(t, s) for s in seeds for t in chosen][index::count]
    unit_plan = _plan(args)
    todo = [(t, s) for t, s in plan if _missing(existing, t, s, unit_plan)]
    if not todo:
        return
    from contextlib import nullcontext

    from suite.lrsearch_runner import service

    uploads: dict[str, str] = {}
    needs_service = units.LRSEARCH in unit_plan.contenders
    with service() if needs_service else nullcontext("") as base, path.open("a") as sink:

        def emit(rec: dict[str, Any]) -> None:
            sink.write(_json(rec) + "\n")
            sink.flush()

        for task, seed in todo:
            have = [r for r in existing if r["task"] == task.name and r["seed"] == seed]
            units.run_unit(task, seed, args.trials, base, uploads, have, emit, _log, unit_plan)


def _plan(args: argparse.Namespace) -> units.Plan:
    groups = {
        "baselines": units.BASELINES,
        "peers": units.peers.SEARCHING_PEERS,
        "lrsearch": (units.LRSEARCH,),
    }
    names = [n for g in args.contenders.split(",") if g for n in groups[g]] or units.CONTENDERS
    return units.Plan(
        frozenset(names),
        args.label,
        json.loads(args.lrsearch_spec),
        epochs_to_beat=not args.skip_beat,
    )


def _missing(existing: list[dict[str, Any]], task: tasks.Task, seed: int, plan: units.Plan) -> bool:
    have = {r["contender"] for r in existing if r["task"] == task.name and r["seed"] == seed}
    return not plan.wanted(seed) <= have


def _report(records: list[dict[str, Any]], chosen: list[tasks.Task], wall_s: float) -> None:
    names = {t.name for t in chosen}
    records = [r for r in records if r["task"] in names and r["contender"] in units.CONTENDERS]
    table = report.per_task(records)
    splits = {t.name: t.split for t in tasks.TASKS}
    report.print_tasks(table, splits)
    summary: dict[str, Any] = {}
    for split in ("dev", "test"):
        in_split = [t.name for t in chosen if t.split == split]
        if not in_split:
            continue
        print(f"\n## {split} tasks: mean ranks\n")
        report.print_contender_ranks(table, in_split)
        summary = report.split_summary(table, in_split)
        print(f"\n{split}: " + " ".join(f"{k}={_fmt(v)}" for k, v in summary.items()))
    print(f"\nwall time of this invocation: {wall_s / 60:.1f} min")
    test = report.split_summary(table, [t.name for t in chosen if t.split == "test"])
    if test:
        print(
            f"rank_final={test['rank_final']:.2f} rank_best={test['rank_best']:.2f}"
            f" wins={test['wins']}/{test['tasks']} epochs_ratio={test['epochs_ratio']:.3f}"
        )
    else:
        print("rank_final=n/a rank_best=n/a wins=0/0 epochs_ratio=n/a (no test task run)")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _json(rec: dict[str, Any]) -> str:
    import json
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(rec))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
