"""Search quality at an equal training budget: lrsearch against the tools users have today.

On digits, for each model and seed, every contender searches the same LR-strategy space (the
nine families and their default ranges) with the same total number of training epochs:

- reference: Adam at 1e-3, constant (one run of E epochs);
- Keras Tuner RandomSearch (N trials) and Hyperband (max_epochs=E, stopped at the budget),
  the space written as a HyperModel that builds the same Keras schedules and callbacks;
- plain Optuna: random sampling, no pruning, lrsearch's Trainer, in memory (N trials);
- lrsearch with its defaults (TPE, pruning, seeded first trials) through the real service:
  `lrsearch serve --workers 1` on a temporary SQLite file (or --database-url), HTTP only.

The budget is N x E epochs. Epochs are counted as trained (a pruned trial counts the epochs it
ran); trials are taken in order while their cumulative epochs fit the budget. A trial's value
is its final validation loss; pruned and diverged trials have none.

    .venv/bin/python benchmarks/search_quality.py [--models mlp,cnn] [--seeds 3] [--trials 20]
        [--epochs 10] [--database-url URL] [--out benchmarks/out/search_quality.json]

Last line: epochs_ratio=<lrsearch's epochs to reach RandomSearch's final best / RandomSearch's
own epochs to it>, summed over models and seeds (target <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("LRSEARCH_TF_THREADS", "1")  # the same for every contender

import optuna

from search.data import Dataset, load_digits
from search.outcome import TrialOutcome
from search.space import repair, run_shape
from search.spec import StudySpec, parse_spec
from search.strategies import RunShape, get_strategy
from search.training.trainer import Trainer
from service.cli.server import stop_processes
from service.client import ApiError, Client
from service.demo import free_port, start_server, wait_ready

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Hyperband's resumed models cannot restore their optimizer's slots: Keras says so per trial
warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")

MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"kind": "mlp", "hidden": [64, 32]},
    "cnn": {"kind": "cnn", "filters": [16, 32], "dense": 64},
}
CONTENDERS = (
    "reference (Adam 1e-3)",
    "keras-tuner RandomSearch",
    "keras-tuner Hyperband",
    "optuna random, no pruning",
    "lrsearch (service, defaults)",
)
REFERENCE, KT_RANDOM, KT_HYPERBAND, OPTUNA_RANDOM, LRSEARCH = CONTENDERS


@dataclass
class TrialRun:
    """One training run: epochs actually trained and final validation loss (None: no value)."""

    epochs: int
    value: float | None


@dataclass
class Run:
    """One contender on one model and seed: its trials in the order they ran."""

    contender: str
    model: str
    seed: int
    wall_s: float
    trials: list[TrialRun] = field(default_factory=list)

    def within(self, budget: int) -> list[TrialRun]:
        """The trials, in order, whose cumulative epochs fit the budget."""
        out, used = [], 0
        for t in self.trials:
            used += t.epochs
            if used > budget:
                break
            out.append(t)
        return out

    def best(self, budget: int) -> float:
        values = [t.value for t in self.within(budget) if t.value is not None]
        return min(values) if values else math.inf

    def epochs(self, budget: int) -> int:
        return sum(t.epochs for t in self.within(budget))

    def epochs_to(self, target: float, budget: int) -> int | None:
        """Cumulative epochs until a trial's final value reaches the target (None: never)."""
        used = 0
        for t in self.within(budget):
            used += t.epochs
            if t.value is not None and t.value <= target + 1e-12:
                return used
        return None


def study_spec(model: str, epochs: int, seed: int, **extra: Any) -> dict[str, Any]:
    """The StudySpec every contender shares (digits, batch 64, Adam, all nine strategies)."""
    task = {"dataset": "digits", "model": MODELS[model], "epochs": epochs, "batch_size": 64}
    return {"name": f"quality-{model}-{seed}", "task": task, "seed": seed, **extra}


def final_value(history: dict[str, list[float]]) -> float | None:
    values = history.get("val_loss") or []
    return float(values[-1]) if values and math.isfinite(values[-1]) else None


# --- lrsearch's Trainer in this process (reference, plain Optuna) ---------------------------


def run_trainer(
    contender: str, spec: StudySpec, data: Dataset, n_trials: int, enqueue: list[dict[str, Any]]
) -> Run:
    """Trials through lrsearch's Trainer, no pruning; the sampler the spec names."""
    from search.study_policy import make_sampler

    study = optuna.create_study(
        sampler=make_sampler(spec, spec.seed), pruner=optuna.pruners.NopPruner()
    )
    for params in enqueue:
        study.enqueue_trial(params)
    started = time.perf_counter()
    study.optimize(Trainer().objective(spec, data), n_trials=n_trials, catch=(Exception,))
    run = Run(contender, spec.task.model.kind, spec.seed or 0, time.perf_counter() - started)
    for t in study.trials:
        value = t.value if t.state == optuna.trial.TrialState.COMPLETE else None
        epochs = TrialOutcome.from_attrs(t.user_attrs).epochs_run or 0
        run.trials.append(TrialRun(epochs, value))
    return run


# --- Keras Tuner ------------------------------------------------------------------------------


def kt_hypermodel(spec: StudySpec, data: Dataset, run: RunShape, log: list[TrialRun]) -> Any:
    """The lrsearch space as a Keras Tuner HyperModel building the same schedules/callbacks."""
    import keras_tuner as kt
    import tensorflow as tf

    from search.training.keras_export import (
        build_schedule_and_callbacks,
        make_optimizer,
        optimizer_config,
    )
    from search.training.models import build_model, loss_and_metrics

    opt_cfg = optimizer_config(spec.task.optimizer, spec.task.momentum)
    seed = spec.seed or 0

    class LrHyperModel(kt.HyperModel):
        def __init__(self) -> None:
            super().__init__()
            self.callbacks: dict[int, list[Any]] = {}

        def build(self, hp: Any) -> Any:
            strategy_id = hp.Choice("strategy", list(spec.strategies))
            params: dict[str, Any] = {}
            for sid in spec.strategies:
                with hp.conditional_scope("strategy", [sid]):
                    for p in get_strategy(sid).space(run):
                        value = _kt_param(hp, f"{sid}.{p.name}", p)
                        if sid == strategy_id:
                            params[p.name] = value
            params = repair(strategy_id, params, run)
            export = get_strategy(strategy_id).export(params, run, "val_loss", opt_cfg)
            learning_rate, callbacks = build_schedule_and_callbacks(export.as_dict())
            model = build_model(spec.task.model, data, seed)
            loss, metrics = loss_and_metrics(data, model)
            model.compile(
                optimizer=make_optimizer(opt_cfg, learning_rate), loss=loss, metrics=metrics
            )
            self.callbacks = {id(model): callbacks}  # only the model about to be fitted
            return model

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            train = (
                tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
                .shuffle(len(data.x_train), seed=seed)
                .batch(spec.task.batch_size)
                .prefetch(tf.data.AUTOTUNE)
            )
            callbacks = [*kwargs.pop("callbacks", []), *self.callbacks.pop(id(model), [])]
            history = model.fit(
                train,
                validation_data=(data.x_val, data.y_val),
                epochs=kwargs["epochs"],
                initial_epoch=kwargs.get("initial_epoch", 0),
                callbacks=callbacks,
                verbose=0,
                shuffle=False,  # already shuffled, with the same seed as the Trainer's
            )
            log.append(TrialRun(len(history.history.get("loss", [])), final_value(history.history)))
            return history

    return LrHyperModel()


def _kt_param(hp: Any, name: str, p: Any) -> Any:
    if p.kind == "bool":
        return hp.Boolean(name)
    if p.kind == "int":
        log = p.log and p.low > 0 and p.high > p.low
        return hp.Int(
            name, int(p.low), int(max(p.high, p.low)), sampling="log" if log else "linear"
        )
    return hp.Float(name, p.low, p.high, sampling="log" if p.log else "linear")


def run_keras_tuner(
    contender: str, spec: StudySpec, data: Dataset, n_trials: int, budget: int
) -> Run:
    """RandomSearch (n_trials) or Hyperband (until the epoch budget is spent), in a tmp dir."""
    import keras_tuner as kt

    run = run_shape(spec, len(data.x_train))
    log: list[TrialRun] = []
    hypermodel = kt_hypermodel(spec, data, run, log)
    seed = spec.seed or 0
    with tempfile.TemporaryDirectory(prefix="kt-") as tmp:
        common = {
            "objective": "val_loss",
            "seed": seed,
            "directory": tmp,
            "project_name": "lr",
            "overwrite": True,
        }
        started = time.perf_counter()
        if contender == KT_RANDOM:
            tuner: Any = _no_tensorboard(kt.RandomSearch)(hypermodel, max_trials=n_trials, **common)
        else:
            tuner = _no_tensorboard(kt.Hyperband)(
                hypermodel,
                max_epochs=spec.task.epochs,
                factor=3,
                hyperband_iterations=1000,
                **common,
            )
            _stop_at_budget(tuner, lambda: sum(t.epochs for t in log) >= budget)
        tuner.search(epochs=spec.task.epochs, verbose=0)
        wall = time.perf_counter() - started
    return Run(contender, spec.task.model.kind, seed, wall, log)


def _no_tensorboard(cls: type) -> type:
    """The tuner without its TensorBoard hook, which imports tensorboard (not installed) even
    when no TensorBoard callback is used."""
    return type(cls.__name__, (cls,), {"_configure_tensorboard_dir": lambda *_a, **_k: None})


def _stop_at_budget(tuner: Any, spent: Callable[[], bool]) -> None:
    """Make the oracle answer STOPPED once the epoch budget is spent."""
    from keras_tuner.engine import trial as kt_trial

    create = tuner.oracle.create_trial

    def create_trial(tuner_id: str) -> Any:
        if spent():
            return kt_trial.Trial(tuner.oracle.get_space(), status=kt_trial.TrialStatus.STOPPED)
        return create(tuner_id)

    tuner.oracle.create_trial = create_trial


# --- lrsearch through the service -------------------------------------------------------------


@contextmanager
def service(database_url: str | None, workers: int = 1) -> Iterator[str]:
    """`lrsearch serve --workers N` on loopback; yields its base URL."""
    root = Path(tempfile.mkdtemp(prefix="lrsearch-quality-"))
    port = free_port()
    tf_threads = os.environ["LRSEARCH_TF_THREADS"]
    server = start_server(root, port, workers, database_url, tf_threads)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, timeout_s=180, server=server, log=root / "serve.log")
        yield base
    finally:
        stop_processes([server], timeout_s=60)
        shutil.rmtree(root, ignore_errors=True)


def run_lrsearch(base: str, spec: dict[str, Any], budget: int, timeout_s: float) -> Run:
    """POST the study, poll until its finished trials spend the budget, then cancel it.

    One keep-alive client: a bare `httpx.get` per poll costs ~40 ms of CPU (a new client and
    TLS context each time), taken from the worker being timed."""
    with Client(base) as client:
        study = client.submit(spec)
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        trials: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            trials = list(study.trials(page_size=500))
            if _finished_epochs(trials) >= budget or study.refresh().done:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"study {study.id} did not spend {budget} epochs in {timeout_s:.0f}s")
        wall = time.perf_counter() - started
        try:
            study.cancel()
        except ApiError as exc:  # it ended on its own in the meantime
            if exc.status != 409:
                raise
        while study.refresh().progress["running"]:
            time.sleep(0.5)  # the worker is free again before the next contender starts
    run = Run(LRSEARCH, spec["task"]["model"]["kind"], spec["seed"], wall)
    for t in _finished(trials):
        value = t["value"] if t["state"] == "complete" else None
        run.trials.append(TrialRun(int(t.get("epochs_run") or 0), value))
    return run


def _finished(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials in number order up to the first one still running (the budget counts in order)."""
    out = []
    for t in sorted(trials, key=lambda t: t["number"]):
        if t["state"] in ("running", "waiting"):
            break
        out.append(t)
    return out


def _finished_epochs(trials: list[dict[str, Any]]) -> int:
    return sum(int(t.get("epochs_run") or 0) for t in _finished(trials))


# --- report -----------------------------------------------------------------------------------


def summarise(runs: list[Run], model: str, budget: int) -> list[dict[str, Any]]:
    """One row per contender: best (mean, sd), epochs, trials, wall, epochs to RS's best."""
    targets = {
        r.seed: r.best(budget) for r in runs if r.model == model and r.contender == KT_RANDOM
    }
    rows = []
    for contender in CONTENDERS:
        mine = [r for r in runs if r.model == model and r.contender == contender]
        if not mine:
            continue
        bests = [r.best(budget) for r in mine]
        to_target = [r.epochs_to(targets[r.seed], budget) for r in mine if r.seed in targets]
        reached = [e for e in to_target if e is not None]
        rows.append(
            {
                "contender": contender,
                "best_mean": statistics.fmean(bests),
                "best_sd": statistics.stdev(bests) if len(bests) > 1 else 0.0,
                "best_per_seed": bests,
                "epochs": statistics.fmean(r.epochs(budget) for r in mine),
                "trials": statistics.fmean(len(r.within(budget)) for r in mine),
                "wall_s": statistics.fmean(r.wall_s for r in mine),
                "epochs_to_rs_best": to_target,
                "reached": f"{len(reached)}/{len(to_target)}",
                # a seed that never reaches it counts the whole budget (a lower bound)
                "epochs_to_rs_best_sum": sum(e if e is not None else budget for e in to_target),
            }
        )
    return rows


def print_table(model: str, budget: int, rows: list[dict[str, Any]]) -> None:
    print(f"\n{model}: budget {budget} epochs per contender and seed; value = final val_loss")
    head = f"{'contender':<30}{'best val_loss':>20}{'epochs':>8}{'trials':>8}{'wall s':>9}"
    print(head + f"{'epochs to RS best':>26}")
    for r in rows:
        best = f"{r['best_mean']:.4f} ± {r['best_sd']:.4f}"
        per_seed = ",".join("-" if e is None else str(e) for e in r["epochs_to_rs_best"])
        to_target = f"{r['epochs_to_rs_best_sum'] / max(1, len(r['epochs_to_rs_best'])):.0f}"
        print(
            f"{r['contender']:<30}{best:>20}{r['epochs']:>8.0f}{r['trials']:>8.1f}"
            f"{r['wall_s']:>9.1f}{to_target:>8} ({per_seed}; {r['reached']})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mlp", help="comma-separated: mlp,cnn")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20, help="N: trials of the non-pruning")
    parser.add_argument("--epochs", type=int, default=10, help="E: epochs of one full trial")
    parser.add_argument("--database-url", help="for the service (default: a temp SQLite file)")
    parser.add_argument("--study-timeout", type=float, default=3600)
    parser.add_argument("--out", default="benchmarks/out/search_quality.json")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop servers, drop the DB
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")

    from search.training.devices import configure_devices

    configure_devices()
    data = load_digits()
    budget = args.trials * args.epochs
    runs: list[Run] = []
    started = time.perf_counter()
    with service(args.database_url) as base:
        for model in models:
            for seed in range(args.seeds):
                runs += contenders_on(model, seed, args, data, budget, base)
    total_s = time.perf_counter() - started

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "tf_threads": os.environ["LRSEARCH_TF_THREADS"],
        "args": vars(args),
        "budget_epochs": budget,
        "total_s": total_s,
        "tables": {},
        "runs": [asdict(r) for r in runs],
    }
    lr_sum = rs_sum = 0
    for model in models:
        rows = summarise(runs, model, budget)
        print_table(model, budget, rows)
        result["tables"][model] = rows
        by = {r["contender"]: r for r in rows}
        lr_sum += by[LRSEARCH]["epochs_to_rs_best_sum"]
        rs_sum += by[KT_RANDOM]["epochs_to_rs_best_sum"]
        others = [r["best_mean"] for r in rows if r["contender"] != LRSEARCH]
        wins = by[LRSEARCH]["best_mean"] <= min(others)
        print(f"{model}: lrsearch best is at least as good as every other row: {wins}")
        result["tables"][model + "_lrsearch_best_wins"] = wins
    ratio = lr_sum / rs_sum if rs_sum else math.inf
    result["epochs_ratio"] = ratio
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\ntotal {total_s:.0f}s; JSON in {args.out}")
    print(f"epochs_ratio={ratio:.3f}")


def contenders_on(
    model: str, seed: int, args: argparse.Namespace, data: Dataset, budget: int, base: str
) -> list[Run]:
    """All five contenders on one model and seed, each announced as it finishes."""
    plain = parse_spec(study_spec(model, args.epochs, seed, sampler="random", pruner="none"))
    reference = [{"strategy": "constant", "constant.initial_lr": 1e-3}]
    jobs: list[tuple[str, Callable[[], Run]]] = [
        (REFERENCE, lambda: run_trainer(REFERENCE, plain, data, 1, reference)),
        (KT_RANDOM, lambda: run_keras_tuner(KT_RANDOM, plain, data, args.trials, budget)),
        (KT_HYPERBAND, lambda: run_keras_tuner(KT_HYPERBAND, plain, data, args.trials, budget)),
        (OPTUNA_RANDOM, lambda: run_trainer(OPTUNA_RANDOM, plain, data, args.trials, [])),
        (
            LRSEARCH,
            lambda: run_lrsearch(
                base,
                # as many slots as could fit (a trial trains at least one epoch)
                study_spec(model, args.epochs, seed, n_trials=min(budget, 10000)),
                budget,
                args.study_timeout,
            ),
        ),
    ]
    runs = []
    for name, job in jobs:
        run = job()
        print(
            f"[{model} seed {seed}] {name:<30} best {run.best(budget):.4f}"
            f"  epochs {run.epochs(budget):>4}  trials {len(run.within(budget)):>3}"
            f"  wall {run.wall_s:6.1f}s",
            flush=True,
        )
        runs.append(run)
    return runs


if __name__ == "__main__":
    main()
