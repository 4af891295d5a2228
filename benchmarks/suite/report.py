"""Tables and the summary line: per task, per split, and over the test tasks.

(a) `final`: the mean, over search seeds, of the retrained mean final-epoch val_loss;
(b) `min`: the same for the retrains' best epoch; epochs: what each search trained;
ranks per task on (a) and (b) among all contenders (1 = best), then their means per split.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from . import peers, tasks
from .units import BASELINES, CONSTANT, CONTENDERS, LRSEARCH


def per_task(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """task -> contender -> {final, min, epochs, seeds, epochs_to_beat}, means over seeds.
    Baselines do not search: their one record stands for every seed."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        grouped[(r["task"], r["contender"])].append(r)
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (task, contender), rows in grouped.items():
        beat = [r.get("epochs_to_beat") for r in rows]
        out[task][contender] = {
            "final": statistics.fmean(r["final"] for r in rows),
            "min": statistics.fmean(r["min"] for r in rows),
            "epochs": statistics.fmean(r["epochs"] for r in rows),
            "budget": statistics.fmean(_budget_of(r) for r in rows),
            "seeds": len(rows),
            "finals": [r["final"] for r in rows],
            "beat": beat,
        }
    return out


def _budget_of(record: dict[str, Any]) -> float:
    """A search's budget in epochs: its trials times the task's epochs (NaN for a baseline,
    which does not search)."""
    trials = record.get("trials")
    if not trials:
        return math.nan
    return len(trials) * tasks.by_name([record["task"]])[0].epochs


def ranks(results: dict[str, dict[str, float]], key: str) -> dict[str, float]:
    """Rank of each contender on `key` (1 = lowest; ties share the mean rank)."""
    names = list(results)
    return dict(zip(names, tie_ranks([results[c][key] for c in names]), strict=True))


def tie_ranks(values: list[float]) -> list[float]:
    """1-based rank of each value (1 = lowest), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            out[k] = (i + j) / 2 + 1
        i = j + 1
    return out


def print_tasks(table: dict[str, dict[str, dict[str, float]]], splits: dict[str, str]) -> None:
    for task in table:
        results = table[task]
        r_final, r_min = ranks(results, "final"), ranks(results, "min")
        print(f"\n### {task} ({splits[task]})\n")
        print(
            "| contender | (a) retrained final | (b) retrained min | rank a | rank b |"
            " epochs | seeds |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for contender in CONTENDERS:
            if contender not in results:
                continue
            v = results[contender]
            print(
                f"| {contender} | {v['final']:.4f} | {v['min']:.4f} | {r_final[contender]:g} |"
                f" {r_min[contender]:g} | {v['epochs']:.0f} | {v['seeds']} |"
            )
        if LRSEARCH in results:
            per_seed = ", ".join(f"{x:.4f}" for x in results[LRSEARCH]["finals"])
            print(
                f"\nlrsearch final per seed: {per_seed}; epochs to beat the best peer:"
                f" {results[LRSEARCH]['beat']}"
            )


def split_summary(
    table: dict[str, dict[str, dict[str, float]]], tasks: list[str]
) -> dict[str, Any]:
    """lrsearch's mean ranks, wins, and the epochs ratio over these tasks."""
    complete = [t for t in tasks if t in table and LRSEARCH in table[t]]
    if not complete:
        return {}
    rank_final = statistics.fmean(ranks(table[t], "final")[LRSEARCH] for t in complete)
    rank_min = statistics.fmean(ranks(table[t], "min")[LRSEARCH] for t in complete)
    wins = sum(ranks(table[t], "final")[LRSEARCH] == 1 for t in complete)
    within = sum(_within_best(table[t], "min", 0.02) for t in complete)
    not_worse = sum(
        table[t][LRSEARCH]["final"] <= table[t].get(CONSTANT, {}).get("final", math.inf)
        for t in complete
    )
    spent, peer_epochs, unreached = 0.0, 0.0, 0
    for t in complete:
        mine = table[t][LRSEARCH]
        searching = [table[t][p]["epochs"] for p in peers.SEARCHING_PEERS if p in table[t]]
        peers_spend = statistics.fmean(searching) if searching else math.inf
        for beat in mine["beat"]:  # never reached: counted as the peers' whole spend
            unreached += beat is None
            spent += peers_spend if beat is None else beat
            peer_epochs += peers_spend
    budget_share = statistics.fmean(
        table[t][LRSEARCH]["epochs"] / table[t][LRSEARCH]["budget"] for t in complete
    )
    return {
        "tasks": len(complete),
        "rank_final": rank_final,
        "rank_best": rank_min,
        "wins": wins,
        "within_2pct_min": within,
        "not_worse_than_default": not_worse,
        "epochs_ratio": spent / peer_epochs if peer_epochs else math.inf,
        "unreached": unreached,
        "epochs_share": budget_share,
    }


def _within_best(results: dict[str, dict[str, float]], key: str, tolerance: float) -> bool:
    best = min(v[key] for v in results.values())
    return results[LRSEARCH][key] <= best * (1 + tolerance) if best > 0 else False


def print_contender_ranks(table: dict[str, dict[str, dict[str, float]]], tasks: list[str]) -> None:
    """Every contender's mean rank on (a) and (b) over these tasks."""
    print("| contender | mean rank (a) | mean rank (b) | tasks |")
    print("|---|---:|---:|---:|")
    for contender in CONTENDERS:
        have = [t for t in tasks if t in table and contender in table[t]]
        if not have:
            continue
        ra = statistics.fmean(ranks(table[t], "final")[contender] for t in have)
        rb = statistics.fmean(ranks(table[t], "min")[contender] for t in have)
        print(f"| {contender} | {ra:.2f} | {rb:.2f} | {len(have)} |")


__all__ = ["BASELINES", "per_task", "print_contender_ranks", "print_tasks", "split_summary"]
