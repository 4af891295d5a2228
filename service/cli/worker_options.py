"""Options of each worker that `lrsearch worker` and `lrsearch serve` share: `--memory-mb`
(its own memory limit: a trial that takes it past the limit fails as out of memory) and
`--population` (how many trials of one study it claims and trains together)."""

from __future__ import annotations

import argparse

# search.worker.config.MEMORY_ENV and POPULATION_ENV (not imported here: it is heavy)
ENV = "LRSEARCH_WORKER_MEMORY_MB"
POPULATION_ENV = "LRSEARCH_WORKER_POPULATION"


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-mb",
        type=int,
        help=f"memory limit of each worker in MiB ({ENV}): a trial that takes its worker "
        "past it fails as out of memory (default: none)",
    )
    parser.add_argument(
        "--population",
        type=int,
        help=f"trials of one study each worker claims and trains together ({POPULATION_ENV}; "
        "default 1: one trial at a time)",
    )


def worker_memory_mb(args: argparse.Namespace) -> int | None:
    """The flag, else the environment; ValueError when either is not a number >= 1."""
    from search.worker.config import memory_limit_from_env

    if args.memory_mb is None:
        return memory_limit_from_env()
    return memory_limit_from_env({ENV: str(args.memory_mb)})


def worker_population(args: argparse.Namespace) -> int:
    """The flag, else the environment, else 1; ValueError when either is not a number >= 1."""
    from search.worker.config import population_from_env

    if args.population is None:
        return population_from_env()
    return population_from_env({POPULATION_ENV: str(args.population)})


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    """What `serve` sets in each worker's environment (checked here, before any starts): the
    population only when the flag gives one (else the workers read the inherited variable)."""
    limit, population = worker_memory_mb(args), worker_population(args)
    env = {} if limit is None else {ENV: str(limit)}
    return env if args.population is None else {**env, POPULATION_ENV: str(population)}


__all__ = ["add_worker_options", "worker_env", "worker_memory_mb", "worker_population"]
