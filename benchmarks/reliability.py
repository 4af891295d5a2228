"""Reliability under faults and bad input, against real processes and real PostgreSQL.

Runs the fault scenarios of tests/faults.py (kill -9 and SIGTERM of a worker mid-trial and of
one training a population of trials, API restarts, trials that raise, the database stopped
mid-study) and then throws bad input at a live API: named bad specs and uploads, path-shaped
ids on every route with an id, and a schemathesis pass (valid and invalid data) over the whole
OpenAPI schema; then hostile NPZ uploads (zip bombs, lying sizes: benchmarks/hostile_uploads.py),
a quota race (16 concurrent creations over two API processes: exactly the quota created), an
error flood, oversized models (refused at submit; over a worker's memory limit while
training) and a worker killed under `lrsearch serve` (benchmarks/hostile_scenarios.py). Each
hostile row reports the peak RSS (VmHWM) of the API and, where one runs, of a worker.

    .venv/bin/python benchmarks/reliability.py [--out benchmarks/out/reliability.json]
        [--fuzz-examples 10] [--skip-outage]

Prints a table, writes JSON, and ends with one line:
faults=<n> lost=<n> double_counted=<n> bad_inputs=<n> server_errors=<n>
(lost, double_counted and server_errors must all be 0; the exit code is 1 otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hostile_scenarios  # noqa: E402  (benchmarks/, this script's folder)
import hostile_uploads  # noqa: E402

from tests import faults  # noqa: E402

Scenario = Callable[[faults.Stage], faults.Outcome]
SHARED: list[Scenario] = [
    faults.kill9_mid_trial,
    faults.sigterm_mid_trial,
    faults.kill9_mid_population,
    faults.sigterm_mid_population,
    faults.api_restart,
    faults.failing_trials,
]
HOSTILE: list[Scenario] = [
    hostile_scenarios.error_flood,
    hostile_scenarios.oversized_at_submit,
    hostile_scenarios.over_worker_memory,
]


def run_shared(scenario: Scenario, root: Path) -> faults.Outcome:
    """One scenario on a fresh database of the shared PostgreSQL."""
    started = time.perf_counter()
    try:
        with faults.shared_pg_database() as url, faults.stage_on(url, root) as stage:
            try:
                outcome = scenario(stage)
            except Exception as exc:
                outcome = _crashed(scenario.__name__, exc, stage.group.logs())
    except Exception as exc:  # the database itself could not be made
        outcome = _crashed(scenario.__name__, exc, "")
    outcome.details["seconds"] = round(time.perf_counter() - started, 1)
    return outcome


def run_outage(root: Path) -> faults.Outcome:
    """The outage scenario on a private cluster (it is stopped and started mid-study)."""
    reason = faults.own_cluster_unavailable()
    if reason:
        return faults.Outcome("database unreachable mid-study", details={"skipped": reason})
    started = time.perf_counter()
    cluster = faults.PgCluster().start()
    try:
        url = cluster.create_database("lrsearch")
        with faults.stage_on(url, root) as stage:
            try:
                outcome = faults.database_outage(stage, cluster)
            except Exception as exc:
                outcome = _crashed("database_outage", exc, stage.group.logs())
    finally:
        cluster.destroy()
    outcome.details["seconds"] = round(time.perf_counter() - started, 1)
    return outcome


def _crashed(name: str, exc: Exception, logs: str) -> faults.Outcome:
    """A scenario that could not finish counts as a failure (with its trials as lost: 1)."""
    outcome = faults.Outcome(name, faults=1, lost=1)
    outcome.problems.append(f"{type(exc).__name__}: {exc}"[:2000])
    outcome.details["traceback"] = traceback.format_exc()[-3000:]
    outcome.details["logs"] = logs[-6000:]
    return outcome


# --- bad input against a live API ------------------------------------------------------------


def run_bad_inputs(root: Path, fuzz_examples: int) -> faults.Outcome:
    """Named bad inputs, path-shaped ids and a schemathesis pass against an API process."""
    out = faults.Outcome("bad input (specs, uploads, ids, schemathesis)")
    with faults.shared_pg_database() as url, faults.stage_on(url, root) as stage:
        _, api = stage.api()
        _named_specs(api, out)
        _named_uploads(api, out)
        _path_ids(api, out)
        out.server_errors += sum(1 for s in api.statuses if s >= 500)
        out.bad_inputs += len(api.statuses)
        sent, errors, failures = _schemathesis(api.url, fuzz_examples)
        out.bad_inputs += sent
        out.server_errors += errors
        out.details["schemathesis"] = {
            "requests": sent,
            "server_errors": errors,
            "failures": failures[:10],
        }
        out.expect(not failures, f"{len(failures)} schemathesis failures")
    return out


def _named_specs(api: faults.Api, out: faults.Outcome) -> None:
    for name, spec, field in faults.BAD_SPECS:
        response = api.request("POST", "/v1/studies", json=spec)
        _expect_problem(out, name, response, 422, field)


def _named_uploads(api: faults.Api, out: faults.Outcome) -> None:
    for name, data, filename, form, field, status in faults.BAD_UPLOADS:
        response = api.request("POST", "/v1/datasets", files={"file": (filename, data)}, data=form)
        _expect_problem(out, name, response, status, field)


def _path_ids(api: faults.Api, out: faults.Outcome) -> None:
    for method, template in faults.ID_ROUTES:
        for bad in faults.TRAVERSAL_IDS:
            response = api.request(method, template.replace("{id}", bad))
            _expect_problem(out, f"{method} {template} {bad[:20]}", response, None, None)


def _expect_problem(
    out: faults.Outcome, name: str, response: Any, status: int | None, field: str | None
) -> None:
    ok = (status is None and 400 <= response.status_code < 500) or response.status_code == status
    ok = ok and response.headers.get("content-type", "").startswith(faults.PROBLEM)
    if ok and field is not None:
        ok = field in {e["field"] for e in response.json().get("errors", [])}
    out.expect(ok, f"{name}: {response.status_code} {response.text[:200]}")


def _schemathesis(url: str, examples: int) -> tuple[int, int, list[str]]:
    """(requests sent, 5xx seen, failures) of a bounded pass over every operation."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis import checks as core_checks
    from schemathesis.core.result import Ok
    from schemathesis.specs.openapi import checks as openapi_checks

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    checks = [
        core_checks.not_a_server_error,
        openapi_checks.status_code_conformance,
        openapi_checks.content_type_conformance,
        openapi_checks.response_schema_conformance,
    ]
    sent, errors, failures = [0], [0], []

    def run_case(case: Any) -> None:
        sent[0] += 1
        response = case.call(base_url=url)
        errors[0] += int(response.status_code >= 500)
        case.validate_response(response, checks=checks)

    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"schema error: {result}")
            continue
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )(given(operation.as_strategy(generation_mode=mode))(run_case))
            try:
                run()
            except Unsatisfiable:
                continue
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:300]}")
    return sent[0], errors[0], failures


def run_hostile_uploads(root: Path, bound_mib: float = 200) -> faults.Outcome:
    """Zip bombs and lying zips against an API process; its peak RSS growth for each."""
    out = faults.Outcome("hostile uploads (NPZ zip bombs)")
    with faults.shared_pg_database() as url, faults.stage_on(url, root) as stage:
        process, _ = stage.api()
        assert process.proc is not None
        watch = hostile_scenarios.PeakWatch(process.proc.pid)
        rows = hostile_uploads.run(process.url, process.proc.pid, root)
        out.details["api_peak_mib"] = watch.stop().peak_mib
    out.bad_inputs = len(rows)
    out.server_errors = sum(r.status >= 500 for r in rows)
    for r in rows:
        out.expect(r.ok, f"{r.case}: {r.status}, expected {r.expected}")
        out.expect(r.growth < bound_mib * hostile_uploads.MiB, f"{r.case}: API +{r.growth} B")
    out.details["api_peak_growth_mib"] = {r.case: round(r.growth / 2**20, 1) for r in rows}
    return out


def run_quota_race(root: Path, concurrent: int = 16) -> faults.Outcome:
    """`concurrent` creations by one tenant at once, split over two API processes on one
    database, against a rate of 10 a minute and a quota of 6: exactly 6 may be created."""
    out = faults.Outcome("quota race (16 creations, 2 API processes)")
    limits = {"LRSEARCH_RATE_LIMIT_PER_MINUTE": "10", "LRSEARCH_MAX_RUNNING_STUDIES": "6"}
    saved = {name: os.environ.get(name) for name in limits}
    with faults.shared_pg_database() as url, faults.stage_on(url, root) as stage:
        os.environ.update(limits)  # the API processes inherit this environment
        try:
            processes = [stage.api()[0] for _ in range(2)]
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        urls = [p.url for p in processes]
        watches = [hostile_scenarios.PeakWatch(p.proc.pid) for p in processes if p.proc]
        for api_url in urls:  # the default tenant exists before the race
            httpx.get(f"{api_url}/v1/studies", timeout=30).raise_for_status()
        gate = threading.Barrier(concurrent)

        def post(i: int) -> tuple[int, str]:
            gate.wait()
            spec = faults.tiny_spec(3, 2)
            response = httpx.post(f"{urls[i % 2]}/v1/studies", json=spec, timeout=60)
            slug = "" if response.status_code == 201 else response.json().get("type", "")
            return response.status_code, slug.rsplit(":", 1)[-1] or "created"

        with ThreadPoolExecutor(concurrent) as pool:
            results = list(pool.map(post, range(concurrent)))
        for watch in watches:
            watch.stop()
        out.details["api_peak_mib"] = max(w.peak_mib for w in watches)
        out.details["api_peak_growth_mib"] = max(w.growth_mib for w in watches)
    kinds = Counter(kind for _, kind in results)
    out.bad_inputs = concurrent
    out.server_errors = sum(status >= 500 for status, _ in results)
    out.expect(kinds["created"] == 6, f"{kinds['created']} created, the quota is 6: {kinds}")
    out.expect(sum(kinds.values()) - kinds["created"] == 10, f"expected 10 x 429: {kinds}")
    out.details["answers"] = dict(kinds)
    return out


def run_dead_worker(root: Path) -> faults.Outcome:
    started = time.perf_counter()
    try:
        outcome = hostile_scenarios.dead_worker_under_serve(root)
    except Exception as exc:
        log = root / "serve" / "serve.log"
        outcome = _crashed("dead worker under serve", exc, log.read_text() if log.exists() else "")
    outcome.details["seconds"] = round(time.perf_counter() - started, 1)
    return outcome


def _mib(details: dict[str, Any], key: str) -> str:
    """A peak RSS column: the peak in MiB, and for the API its growth while attacked."""
    peak = details.get(f"{key}_peak_mib")
    if peak is None:
        return "-"
    growth = details.get(f"{key}_peak_growth_mib")
    if isinstance(growth, dict):  # per upload
        growth = max(growth.values(), default=0)
    return f"{peak:.0f}" + ("" if growth is None else f" (+{growth:.0f})")


# --- report ----------------------------------------------------------------------------------


def table(outcomes: list[faults.Outcome]) -> str:
    head = (
        f"{'scenario':<50} {'faults':>6} {'lost':>5} {'double':>6} {'bad in':>7} "
        f"{'5xx':>4} {'secs':>6} {'API MiB':>11} {'worker MiB':>10}  result"
    )
    lines = [head, "-" * len(head)]
    for o in outcomes:
        result = "skipped" if "skipped" in o.details else ("ok" if o.ok else "FAILED")
        lines.append(
            f"{o.name[:50]:<50} {o.faults:>6} {o.lost:>5} {o.double_counted:>6} "
            f"{o.bad_inputs:>7} {o.server_errors:>4} "
            f"{o.details.get('seconds', 0):>6} {_mib(o.details, 'api'):>11} "
            f"{_mib(o.details, 'worker'):>10}  {result}"
        )
        lines += [f"    ! {p[:160]}" for p in o.problems[:5]]
        if "skipped" in o.details:
            lines.append(f"    - {o.details['skipped']}")
    return "\n".join(lines)


def totals(outcomes: list[faults.Outcome]) -> dict[str, int]:
    return {
        "faults": sum(o.faults for o in outcomes),
        "lost": sum(o.lost for o in outcomes),
        "double_counted": sum(o.double_counted for o in outcomes),
        "bad_inputs": sum(o.bad_inputs for o in outcomes),
        "server_errors": sum(o.server_errors for o in outcomes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "reliability.json"))
    parser.add_argument("--fuzz-examples", type=int, default=10)
    parser.add_argument("--skip-outage", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lrsearch-reliability-") as tmp:
        root = Path(tmp)
        outcomes: list[faults.Outcome] = []
        for i, scenario in enumerate(SHARED):
            outcomes.append(run_shared(scenario, root / f"s{i}"))
            print(table(outcomes[-1:]).splitlines()[-1], flush=True)
        if not args.skip_outage:
            outcomes.append(run_outage(root / "outage"))
        started = time.perf_counter()
        outcomes.append(run_bad_inputs(root / "bad", args.fuzz_examples))
        outcomes[-1].details["seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        outcomes.append(run_hostile_uploads(root / "hostile"))
        outcomes[-1].details["seconds"] = round(time.perf_counter() - started, 1)
        print(f"API peak RSS growth (MiB): {outcomes[-1].details['api_peak_growth_mib']}")
        started = time.perf_counter()
        outcomes.append(run_quota_race(root / "quota"))
        outcomes[-1].details["seconds"] = round(time.perf_counter() - started, 1)
        print(f"quota race answers: {outcomes[-1].details['answers']}")
        for i, scenario in enumerate(HOSTILE):
            outcomes.append(run_shared(scenario, root / f"h{i}"))
            print(table(outcomes[-1:]).splitlines()[-1], flush=True)
        outcomes.append(run_dead_worker(root / "dead"))
        print(table(outcomes[-1:]).splitlines()[-1], flush=True)
    summary = totals(outcomes)
    report = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "totals": summary,
        "scenarios": json.loads(faults.as_json(outcomes)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(table(outcomes))
    print(f"\nwrote {args.out}")
    failed = any(not o.ok for o in outcomes if "skipped" not in o.details)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
