"""How much does lrsearch's selection leave on the table? `/best` against the best of its top five.

For each (task, seed), run lrsearch's study through the real service (as `search_suite.py`
does), then retrain its five best exploring trials (by their single run on the study's seed)
from the suite's 5 fresh seeds, like any contender's choice, and compare with what `/best`
returned. The gap to the best of those five bounds what any rule choosing among them could
gain; a small gap says the losses are in what the exploring trials find, not in the choice.
A dev tool: run it on dev tasks (the default), where defaults may be chosen.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/selection_oracle.py [--seeds 3] [--tasks a,b]

Last line: oracle_gap_mean=<mean % by which /best's retrained value trails the best of the
five> best_of_top=<studies where /best was that best>/<studies>
"""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("LRSEARCH_TF_THREADS", "1")

from suite import lrsearch_runner, peers, retrain, tasks
from suite.dev_cli import dev_tool_args
from suite.units import spec_for

from search.selection import replicate_slots
from search.space import run_shape

TOP = 5


def main() -> None:
    args, chosen = dev_tool_args(__doc__ or "")
    rows: list[tuple[str, int, float, float, str]] = []
    with lrsearch_runner.service() as base:
        uploads: dict[str, str] = {}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for task in chosen:
                rows.append(_study(base, task, seed, args.trials, uploads))
    print("| task | seed | /best retrained | best of top five | that candidate | gap |")
    print("|---|---:|---:|---:|---|---:|")
    gaps = []
    for name, seed, returned, oracle, which in rows:
        gap = max(0.0, returned / oracle - 1) if oracle > 0 else 0.0
        gaps.append(gap)
        print(f"| {name} | {seed} | {returned:.4f} | {oracle:.4f} | {which} | {100 * gap:.1f}% |")
    hits = sum(g == 0.0 for g in gaps)
    print(f"oracle_gap_mean={100 * statistics.fmean(gaps):.2f}% best_of_top={hits}/{len(gaps)}")


def _study(
    base: str, task: tasks.Task, seed: int, n_trials: int, uploads: dict[str, str]
) -> tuple[str, int, float, float, str]:
    """(task, seed, /best's retrained value, the best of the top five's, which one)."""
    data = task.data()
    spec = spec_for(task, data, n_trials, seed)
    result, trials = lrsearch_runner.search(base, task, data, n_trials, seed, uploads)
    assert result.export is not None
    returned = _retrained(spec, data, result.export)
    run = run_shape(spec, len(data.x_train))
    explorers = _explorers(trials, n_trials - replicate_slots(n_trials))
    oracle, which = math.inf, ""
    for t in explorers[:TOP]:
        value = _retrained(spec, data, peers.export_of(spec, t["strategy"], t["params"], run))
        if value < oracle:
            oracle, which = value, f"#{t['number']} {t['strategy']}"
    print(f"{task.name} seed {seed}: /best {returned:.4f}, best of top {TOP} {oracle:.4f}")
    return task.name, seed, returned, min(oracle, returned), which


def _explorers(trials: list[dict[str, Any]], n_exploring: int) -> list[dict[str, Any]]:
    """Completed exploring trials (not the replicate slots), one per configuration, best first."""
    seen, out = set(), []
    for t in sorted(trials, key=lambda t: t["number"]):
        key = json.dumps([t["strategy"], t["params"]], sort_keys=True)
        if t["number"] < n_exploring and key not in seen and t["state"] == "complete":
            seen.add(key)
            out.append(t)
    return sorted(out, key=lambda t: float(t["value"]))


def _retrained(spec: Any, data: Any, export: dict[str, Any]) -> float:
    """The suite's (a): mean final val_loss over its fresh retrain seeds (a diverged one: inf)."""
    return retrain.summary(retrain.curves(spec, data, export))["final"]


if __name__ == "__main__":
    main()
