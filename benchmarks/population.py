"""Fused population training: trials per minute for K members per graph vs solo trials.

For the digits MLP and CNN, the same planned trials (strategies and parameters sampled once)
are trained with K = 1 (today's solo path: `Trainer.run`, one trial after another) and with
K = 2, 4, 8, 16 (`Trainer.run_many`, K members fused in one graph), all in this process.
Each K's graph is traced and compiled before it is timed (one warm-up population of the
first K planned trials, shown as `warm s`: a worker pays the tracing once per study and K).
`seconds` is the median of `--repeats` timed runs of the whole plan (one run takes a second or
two, so another process's moment moves it). Every member is compared with the same trial
trained solo: within tolerance when its
recorded LR equals solo's (rel 1e-6) and its final value is within max(1e-3, 1e-2 * |solo|)
(float sums run in another order), or when both diverged. A trial at a rate on the edge of
chaos can amplify that float noise beyond the tolerance: its solo value moves as much when
only TensorFlow's summation order changes (TF_ENABLE_ONEDNN_OPTS=0). Memory: RSS after
each K and the process's peak (VmHWM; it only grows).

    .venv/bin/python benchmarks/population.py [--quick] [--trials 16] [--epochs 5] [--repeats 3]

Last line: speedup=<trials/min at the best K over K=1, the lower of the two models>
same=<members within tolerance>/<members>.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import optuna
from trial_overhead import planned_trials  # the same planned trials, sampled once

from search.data import Dataset, load_digits
from search.spec import StudySpec, parse_spec
from search.training.population import fusable
from search.training.population.stacked import grouped_conv_trains
from search.training.trainer import Trainer

optuna.logging.set_verbosity(optuna.logging.WARNING)
RTOL, ATOL, LR_RTOL = 1e-2, 1e-3, 1e-6


def train(
    trainer: Trainer, spec: StudySpec, data: Dataset, plan: list[dict[str, Any]], k: int
) -> tuple[float, list[tuple[float | None, list[float]]]]:
    """Seconds for the plan in populations of k (k = 1: solo `run`), and per trial its
    value (None: it failed) and recorded LR."""
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    for params in plan:
        study.enqueue_trial(params)
    started = time.perf_counter()
    for first in range(0, len(plan), k):
        trials = [study.ask() for _ in plan[first : first + k]]
        for trial, result in zip(trials, trainer.run_many(trials, spec, data), strict=True):
            if isinstance(result, float):
                study.tell(trial, result)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
    seconds = time.perf_counter() - started
    return seconds, [(t.value, list(t.user_attrs.get("lr", []))) for t in study.trials]


def agrees(solo: tuple[float | None, list[float]], fused: tuple[float | None, list[float]]) -> bool:
    (a, lr_a), (b, lr_b) = solo, fused
    if a is None or b is None:
        return a is None and b is None
    same_lr = len(lr_a) == len(lr_b) and all(
        abs(x - y) <= LR_RTOL * abs(x) for x, y in zip(lr_a, lr_b, strict=True)
    )
    return same_lr and abs(a - b) <= max(ATOL, RTOL * abs(a))


def max_diff(solo: list[tuple[float | None, list[float]]], fused: list[Any]) -> float:
    diffs = [abs(a - b) for (a, _), (b, _) in zip(solo, fused, strict=True) if a and b]
    return max(diffs, default=0.0)


def memory_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_model(
    model: dict[str, Any], data: Dataset, ks: list[int], n: int, epochs: int, repeats: int = 1
) -> tuple[float, int, int]:
    task = {"epochs": epochs, "model": model}
    spec = parse_spec({"task": task, "pruner": "none"})
    plan = planned_trials(spec, n, len(data.x_train))
    trainer = Trainer()
    print(f"\n{model['kind']}: {n} trials x {epochs} epochs, strategies {sorted(spec.strategies)}")
    if not fusable(spec, data):  # e.g. a model with dropout
        print("  (not fused here: the members train one after another, see fusable())")
    elif model["kind"] == "cnn":
        how = "grouped convolutions" if grouped_conv_trains() else "batched matmuls (im2col)"
        print(f"  (stacked convolutions here: {how})")
    print(f"{'K':>3}{'seconds':>9}{'trials/min':>12}{'warm s':>8}{'max|dv|':>10}{'same':>7}"
          f"{'RSS MiB':>9}{'VmHWM':>8}")  # fmt: skip
    base, best, same, members = 0.0, 0.0, 0, 0
    solo: list[Any] = []
    for k in ks:
        started = time.perf_counter()
        train(trainer, spec, data, plan[:k], k)
        warm = time.perf_counter() - started
        seconds, got = train(trainer, spec, data, plan, k)
        # one run takes a second or two, so another process's moment moves it: the median
        times = [seconds] + [train(trainer, spec, data, plan, k)[0] for _ in range(repeats - 1)]
        seconds = statistics.median(times)
        rate = 60 * n / seconds
        if k == 1:
            solo, base = got, rate
        ok = sum(agrees(a, b) for a, b in zip(solo, got, strict=True))
        same, members = same + ok, members + n
        best = max(best, rate)
        print(f"{k:>3}{seconds:>9.2f}{rate:>12.1f}{warm:>8.2f}{max_diff(solo, got):>10.2e}"
              f"{ok:>4}/{n:<2}{memory_mib('VmRSS'):>9.0f}{memory_mib('VmHWM'):>8.0f}")  # fmt: skip
    print(f"{model['kind']} speedup (best K over K=1): {best / base:.2f}")
    return best / base, same, members


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 trials, K up to 8, 3 epochs, 1 run")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--ks", default="1,2,4,8,16")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per K (median)")
    args = parser.parse_args()
    n, epochs, ks = args.trials, args.epochs, [int(k) for k in args.ks.split(",")]
    if args.quick:
        n, epochs, ks, args.repeats = 8, 3, [k for k in ks if k <= 8], 1
    load = os.getloadavg()
    print(f"cpus={os.cpu_count()} load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    data = load_digits()
    results = [
        bench_model({"kind": "mlp", "hidden": [64, 32]}, data, ks, n, epochs, args.repeats),
        bench_model(
            {"kind": "cnn", "filters": [16, 32], "dense": 64}, data, ks, n, epochs, args.repeats
        ),
    ]
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    same = sum(r[1] for r in results)
    members = sum(r[2] for r in results)
    print(f"speedup={min(r[0] for r in results):.2f} same={same}/{members}")


if __name__ == "__main__":
    main()
