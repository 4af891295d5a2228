"""Can an early epoch tell which trials will end best? The premise of any earlier pruning.

Multi-fidelity search (Hyperband, successive halving, a median rule from a quarter of the run)
judges a trial at an early "rung" and stops it there; that saves epochs only where a trial's
value at the rung ranks the trials as their final values do. For each (task, seed) this runs
lrsearch's study through the real service (as `search_suite.py` does) and measures, over its
completed exploring trials (not the replicate slots), at rungs of 20%, 33% and 50% of the run:

- rho: Spearman's rank correlation between the value at the rung and the final value;
- outside: whether the trial with the best final value was in the worse half at the rung
  (a median rule judging there would have stopped the eventual best).

The completed trials are the survivors of the study's own pruning (from half the run), so
their spread is narrower than an unpruned search's: a low rho here is the harder fact.

A dev tool: run it on dev tasks (the default), where defaults may be chosen; on test tasks
it may only report.

    .venv/bin/python benchmarks/rung_fidelity.py [--seeds 3] [--tasks a,b]

Last line: rho_20=<mean> rho_33=<mean> rho_50=<mean> outside_20=<k>/<n> outside_33=<k>/<n>
outside_50=<k>/<n>
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("LRSEARCH_TF_THREADS", "1")

from suite import lrsearch_runner
from suite.dev_cli import dev_tool_args
from suite.report import tie_ranks

from search.selection import replicate_slots

#: Rungs as shares of the run (the decay-aware pruner's median rule starts at the last).
RUNGS = (0.2, 1 / 3, 0.5)
#: Fewer completed exploring trials than this give no correlation worth reading.
MIN_TRIALS = 4

Row = tuple[str, int, int, list[tuple[float, bool]]]


def main() -> None:
    args, chosen = dev_tool_args(__doc__ or "")
    rows: list[Row] = []
    with lrsearch_runner.service() as base:
        uploads: dict[str, str] = {}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for task in chosen:
                data = task.data()
                _, trials = lrsearch_runner.search(base, task, data, args.trials, seed, uploads)
                curves = completed_curves(trials, args.trials - replicate_slots(args.trials))
                if len(curves) >= MIN_TRIALS:
                    rows.append((task.name, seed, len(curves), at_rungs(curves, task.epochs)))
                print(f"{task.name} seed {seed}: {len(curves)} completed exploring trials")
    print(report(rows))


def completed_curves(trials: list[dict[str, Any]], n_exploring: int) -> list[list[float]]:
    """Per-epoch values of the completed exploring trials that have every epoch."""
    curves = []
    for t in trials:
        if t["state"] != "complete" or t["number"] >= n_exploring:
            continue
        values = [v["value"] for v in sorted(t["intermediate_values"], key=lambda v: v["step"])]
        if values and all(v is not None and math.isfinite(v) for v in values):
            curves.append([float(v) for v in values])
    length = max((len(c) for c in curves), default=0)
    return [c for c in curves if len(c) == length]


def at_rungs(curves: list[list[float]], epochs: int) -> list[tuple[float, bool]]:
    """(rho, eventual best in the worse half) at each rung; lower values are better."""
    finals = [c[-1] for c in curves]
    best = min(range(len(curves)), key=lambda i: finals[i])
    out = []
    for share in RUNGS:
        step = min(len(curves[0]), max(1, int(epochs * share))) - 1
        at = [c[step] for c in curves]
        out.append((spearman(at, finals), tie_ranks(at)[best] > (len(at) + 1) / 2))
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (0 when either is constant)."""
    ra, rb = tie_ranks(a), tie_ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    sa = math.sqrt(sum((x - ma) ** 2 for x in ra))
    sb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (sa * sb) if sa > 0 and sb > 0 else 0.0


def report(rows: list[Row]) -> str:
    """The table, one row per study, and the summary line."""
    head = " | ".join(f"rho at {share:.0%} (best outside)" for share in RUNGS)
    lines = [f"| task | seed | trials | {head} |", "|---|---:|---:|" + "---:|" * len(RUNGS)]
    for name, seed, n, cells in rows:
        text = " | ".join(f"{rho:+.2f}{' (yes)' if outside else ''}" for rho, outside in cells)
        lines.append(f"| {name} | {seed} | {n} | {text} |")
    summary = []
    for i, share in enumerate(RUNGS):
        rhos = [cells[i][0] for *_, cells in rows]
        summary.append(f"rho_{round(share * 100)}={statistics.fmean(rhos) if rhos else 0:.2f}")
    for i, share in enumerate(RUNGS):
        outside = sum(cells[i][1] for *_, cells in rows)
        summary.append(f"outside_{round(share * 100)}={outside}/{len(rows)}")
    lines.append(" ".join(summary))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
