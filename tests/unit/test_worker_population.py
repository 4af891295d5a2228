"""`--population K` of `lrsearch worker` and `lrsearch serve` (LRSEARCH_WORKER_POPULATION):
read, checked, handed to each worker; and what a population's liveness row shows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from search.worker.config import POPULATION_ENV, WorkerConfig, population_from_env
from search.worker.population import CURRENT_TRIAL_CHARS, describe
from service.cli import main
from service.cli import server as server_cli


@pytest.mark.parametrize(("value", "expected"), [("", 1), (" 4 ", 4), ("1", 1), ("64", 64)])
def test_population_from_the_environment(value: str, expected: int) -> None:
    assert population_from_env({POPULATION_ENV: value}) == expected
    assert population_from_env({}) == 1
    assert WorkerConfig("sqlite://").population == 1


@pytest.mark.parametrize("value", ["0", "-2", "four", "1.5"])
def test_a_bad_population_is_refused_with_the_variable_named(value: str) -> None:
    with pytest.raises(ValueError, match=POPULATION_ENV):
        population_from_env({POPULATION_ENV: value})


def test_serve_hands_the_population_to_each_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spawned: list[dict[str, str]] = []
    monkeypatch.setattr(server_cli, "_spawn_worker", lambda _s, env: spawned.append(env))
    monkeypatch.setattr(server_cli, "cmd_api", lambda _a, _s: 0)
    monkeypatch.setattr(server_cli, "stop_processes", lambda _procs: None)
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    assert main(["--database-url", url, "serve", "--workers", "2", "--population", "4"]) == 0
    assert [e.get(POPULATION_ENV) for e in spawned] == ["4", "4"]
    assert main(["--database-url", url, "serve", "--population", "0"]) == 2


def test_a_population_shows_its_members_in_the_liveness_column() -> None:
    def member(number: int) -> Any:
        return SimpleNamespace(trial=SimpleNamespace(number=number))

    study = "0" * 32
    assert describe(study, [member(3), member(4)]) == f"{study}/3,4"
    long = describe(study, [member(n) for n in range(100, 164)])
    assert len(long) == CURRENT_TRIAL_CHARS and long.endswith("...")
