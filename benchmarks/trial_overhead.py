"""Per-trial overhead: naive build-compile-fit per trial vs lrsearch's Trainer (one shared graph).

Both runs train the same 20 trials (same strategies, parameters, seeds and epochs) on digits in
this process. Then a second pass of 50 trials with the Trainer prints peak RSS after 5 and 50.

    .venv/bin/python benchmarks/trial_overhead.py [--trials 20] [--epochs 5] [--out FILE]

Last line: ratio=<trainer seconds / naive seconds> (target <= 0.6).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import optuna

from search.data import load_digits
from search.space import run_shape, suggest
from search.spec import StudySpec, parse_spec
from search.training.trainer import Trainer

optuna.logging.set_verbosity(optuna.logging.WARNING)


def planned_trials(spec: StudySpec, n: int, n_train: int) -> list[dict[str, Any]]:
    """n parameter sets sampled once, so both contenders train exactly the same trials."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=42))
    out = []
    for _ in range(n):
        trial = study.ask()
        suggest(trial, spec, run_shape(spec, n_train))
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def timed_study(
    trainer: Trainer, spec: StudySpec, data: Any, plan: list[dict[str, Any]]
) -> tuple[float, optuna.Study]:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    for params in plan:
        study.enqueue_trial(params)
    started = time.perf_counter()
    study.optimize(trainer.objective(spec, data), n_trials=len(plan), catch=(Exception,))
    return time.perf_counter() - started, study


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--memory-trials", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/out/trial_overhead.json")
    args = parser.parse_args()

    data = load_digits()
    spec = parse_spec(
        {
            "task": {"epochs": args.epochs, "model": {"kind": "mlp", "hidden": [64, 32]}},
            "pruner": "none",
        }
    )
    plan = planned_trials(spec, args.trials, len(data.x_train))
    naive_s, naive = timed_study(Trainer(reuse=False), spec, data, plan)
    fast_s, fast = timed_study(Trainer(reuse=True), spec, data, plan)
    same = sum(
        1
        for a, b in zip(naive.trials, fast.trials, strict=True)
        if a.value is not None and b.value is not None and abs(a.value - b.value) < 1e-3
    )

    trainer = Trainer(reuse=True)
    memory_plan = planned_trials(spec, args.memory_trials, len(data.x_train))
    rss: dict[int, float] = {}
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    for i, params in enumerate(memory_plan, start=1):
        study.enqueue_trial(params)
        study.optimize(trainer.objective(spec, data), n_trials=1, catch=(Exception,))
        if i in (5, args.memory_trials):
            rss[i] = peak_rss_mib()

    rows = [("naive build-compile-fit", naive_s), ("lrsearch Trainer", fast_s)]
    print(f"{'contender':<26}{'trials':>7}{'seconds':>10}{'s/trial':>9}")
    for name, seconds in rows:
        print(f"{name:<26}{args.trials:>7}{seconds:>10.2f}{seconds / args.trials:>9.3f}")
    print(f"same final value (|diff| < 1e-3): {same}/{args.trials} trials")
    growth = rss[args.memory_trials] / rss[5]
    print(
        f"peak RSS after 5 trials: {rss[5]:.0f} MiB; after {args.memory_trials}: "
        f"{rss[args.memory_trials]:.0f} MiB (x{growth:.3f})"
    )
    result = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "trials": args.trials,
        "epochs": args.epochs,
        "naive_s": naive_s,
        "trainer_s": fast_s,
        "ratio": fast_s / naive_s,
        "same_values": same,
        "rss_mib": rss,
        "rss_growth": growth,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"ratio={fast_s / naive_s:.3f}")


if __name__ == "__main__":
    main()
