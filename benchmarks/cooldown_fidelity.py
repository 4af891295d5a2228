"""Does a short cooldown let an early rung judge? The premise of cooldown branching (item 3).

`rung_fidelity.py` found that a trial's raw value early in its run ranks the trials poorly
(dev: Spearman's rho 0.24 at 20% of the run, 0.40 at 33%, 0.68 at 50%): a trial still at a
high rate looks worse than one already decaying, whatever it will reach. Cooldown branching
(Hägele et al. 2024) would judge each trial at a rung by a short branch that decays its
current rate linearly to zero (a tenth of the run) from the rung's weights and optimizer state,
i.e. by the value it would reach if it were annealed there. This measures whether that
annealed value ranks the trials as their final values do, before anything is built on it.

For each (task, seed), lrsearch's study runs through the real service (as `search_suite.py`
does); then every configuration its exploring trials tried (pruned ones too: a judge must rank
them all) is trained in a plain Keras fit (`apply()` of its export, one fixed seed for all
configurations, as a study's trials share one): once for the whole run (its final value, and
its raw value at each rung), and once per rung up to the rung and then down the cooldown.
Rungs at 20%, 33% and 50% of the run; per rung and study, Spearman's rho of the raw and of
the annealed value against the final value, and whether the configuration with the best
final value was in the worse half (a median rule there would have stopped it).

A dev tool: run it on dev tasks (the default), where methods may be chosen.

    .venv/bin/python benchmarks/cooldown_fidelity.py [--seeds 3] [--first-seed 0] [--tasks a,b]

Last line: per rung, the mean rho raw and annealed, and the eventual best outside, e.g.
raw_33=0.40 cool_33=0.61 out_raw_33=4/18 out_cool_33=2/18
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("LRSEARCH_TF_THREADS", "1")

import keras
from rung_fidelity import spearman
from suite import lrsearch_runner, peers, retrain
from suite.dev_cli import dev_tool_args
from suite.report import tie_ranks
from suite.units import spec_for

from search.selection import replicate_slots
from search.space import run_shape

#: Rungs as shares of the run (as rung_fidelity.py).
RUNGS = (0.2, 1 / 3, 0.5)
#: The cooldown's length as a share of the run (the short end of Hägele et al.'s 10-20%).
COOLDOWN = 0.1
#: One initialisation and batch order for every configuration of a study (a study's own).
FIT_SEED = 2001

Cells = list[tuple[float, float, bool, bool]]  # per rung: rho raw, rho cool, outside raw, cool


def main() -> None:
    args, chosen = dev_tool_args(__doc__ or "")
    rows: list[tuple[str, int, int, Cells]] = []
    with lrsearch_runner.service() as base:
        uploads: dict[str, str] = {}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for task in chosen:
                data = task.data()
                spec = spec_for(task, data, args.trials, seed)
                _, trials = lrsearch_runner.search(base, task, data, args.trials, seed, uploads)
                run = run_shape(spec, len(data.x_train))
                exports = [
                    peers.export_of(spec, t["strategy"], t["params"], run)
                    for t in _explorers(trials, args.trials - replicate_slots(args.trials))
                ]
                measured = [_measure(spec, data, e, task.epochs) for e in exports]
                rows.append((task.name, seed, len(measured), _cells(measured, task.epochs)))
                print(f"{task.name} seed {seed}: {len(measured)} configurations", flush=True)
    print(_report(rows))


def _explorers(trials: list[dict[str, Any]], n_exploring: int) -> list[dict[str, Any]]:
    """Every configuration the exploring trials tried, once (failed ones left out)."""
    seen, out = set(), []
    for t in sorted(trials, key=lambda t: t["number"]):
        key = repr([t["strategy"], sorted(t["params"].items())])
        if t["number"] < n_exploring and t["state"] in ("complete", "pruned") and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _measure(
    spec: Any, data: Any, export: dict[str, Any], epochs: int
) -> tuple[list[float], list[float]]:
    """(the whole run's val_loss per epoch, the annealed value at each rung)."""
    curve = _fit(spec, data, export, epochs, cooldown=None)
    cooldown = max(1, round(epochs * COOLDOWN))
    annealed = [_fit(spec, data, export, _rung(share, epochs), cooldown)[-1] for share in RUNGS]
    return curve, annealed


def _rung(share: float, epochs: int) -> int:
    return min(epochs, max(1, int(epochs * share)))


def _fit(
    spec: Any, data: Any, export: dict[str, Any], epochs: int, cooldown: int | None
) -> list[float]:
    """val_loss per epoch of `epochs` epochs of the export's schedule (NaN once diverged),
    then, with `cooldown`, that many epochs more at a rate falling linearly from the
    current one to zero (the optimizer's state carried on)."""
    from search.training.keras_export import apply

    optimizer, callbacks = apply(export)
    model, train = retrain.compiled(spec, data, FIT_SEED, optimizer)
    stop = keras.callbacks.TerminateOnNaN()
    history = model.fit(
        train, validation_data=(data.x_val, data.y_val), epochs=epochs,
        callbacks=[*callbacks, stop], verbose=0,
    )  # fmt: skip
    values = [float(v) for v in history.history.get("val_loss", [])]
    if cooldown is None or len(values) < epochs or not math.isfinite(values[-1]):
        return values + [math.nan] * (epochs - len(values))
    steps = cooldown * math.ceil(len(data.x_train) / spec.task.batch_size)
    optimizer.learning_rate = Cooldown(
        float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
        int(keras.ops.convert_to_numpy(optimizer.iterations)),
        steps,
    )
    model.make_train_function(force=True)  # the new schedule is read when traced
    more = model.fit(
        train, validation_data=(data.x_val, data.y_val), epochs=cooldown, callbacks=[stop],
        verbose=0,
    )  # fmt: skip
    tail = [float(v) for v in more.history.get("val_loss", [])]
    return values + (tail if len(tail) == cooldown else [math.nan])


class Cooldown(keras.optimizers.schedules.LearningRateSchedule):
    """From `start` at optimizer step `at`, linearly to zero over `steps` steps."""

    def __init__(self, start: float, at: int, steps: int) -> None:
        self.start, self.at, self.steps = start, at, steps

    def __call__(self, step: Any) -> Any:
        done = (keras.ops.cast(step, "float32") - self.at) / float(self.steps)
        return self.start * keras.ops.clip(1.0 - done, 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {"start": self.start, "at": self.at, "steps": self.steps}


def _cells(measured: list[tuple[list[float], list[float]]], epochs: int) -> Cells:
    """Per rung: rho raw and annealed against the final value, and whether the eventual best
    was in the worse half by each (a diverged value ranks last)."""
    worst = lambda v: v if math.isfinite(v) else math.inf  # noqa: E731
    finals = [worst(curve[-1]) for curve, _ in measured]
    best = min(range(len(finals)), key=lambda i: finals[i])
    out = []
    for i, share in enumerate(RUNGS):
        raw = [worst(curve[_rung(share, epochs) - 1]) for curve, _ in measured]
        cool = [worst(annealed[i]) for _, annealed in measured]
        half = (len(finals) + 1) / 2
        out.append(
            (
                spearman(raw, finals),
                spearman(cool, finals),
                tie_ranks(raw)[best] > half,
                tie_ranks(cool)[best] > half,
            )
        )
    return out


def _report(rows: list[tuple[str, int, int, Cells]]) -> str:
    head = " | ".join(f"{share:.0%} raw / cooled" for share in RUNGS)
    lines = [f"| task | seed | configs | {head} |", "|---|---:|---:|" + "---:|" * len(RUNGS)]
    for name, seed, n, cells in rows:
        text = " | ".join(
            f"{r:+.2f}{'*' if o else ''} / {c:+.2f}{'*' if oc else ''}" for r, c, o, oc in cells
        )
        lines.append(f"| {name} | {seed} | {n} | {text} |")
    lines.append("(* the configuration with the best final value was in the worse half there)")
    summary = []
    for i, share in enumerate(RUNGS):
        pct = round(share * 100)
        raw = statistics.fmean(cells[i][0] for *_, cells in rows) if rows else 0.0
        cool = statistics.fmean(cells[i][1] for *_, cells in rows) if rows else 0.0
        out_raw = sum(cells[i][2] for *_, cells in rows)
        out_cool = sum(cells[i][3] for *_, cells in rows)
        summary.append(
            f"raw_{pct}={raw:.2f} cool_{pct}={cool:.2f} "
            f"out_raw_{pct}={out_raw}/{len(rows)} out_cool_{pct}={out_cool}/{len(rows)}"
        )
    lines.append(" ".join(summary))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
