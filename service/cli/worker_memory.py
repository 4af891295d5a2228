"""`--memory-mb` of `lrsearch worker` and `lrsearch serve`: each worker's own memory limit
(LRSEARCH_WORKER_MEMORY_MB); a trial that takes its worker past it fails as out of memory."""

from __future__ import annotations

import argparse

ENV = "LRSEARCH_WORKER_MEMORY_MB"  # search.worker.config.MEMORY_ENV (not imported: it is heavy)


def add_memory_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-mb",
        type=int,
        help=f"memory limit of each worker in MiB ({ENV}): a trial that takes its worker "
        "past it fails as out of memory (default: none)",
    )


def worker_memory_mb(args: argparse.Namespace) -> int | None:
    """The flag, else the environment; ValueError when either is not a number >= 1."""
    from search.worker.config import memory_limit_from_env

    if args.memory_mb is None:
        return memory_limit_from_env()
    return memory_limit_from_env({ENV: str(args.memory_mb)})


def memory_env(args: argparse.Namespace) -> dict[str, str]:
    """What `serve` sets in each worker's environment (checked here, before any starts)."""
    limit = worker_memory_mb(args)
    return {} if limit is None else {ENV: str(limit)}


__all__ = ["add_memory_limit", "memory_env", "worker_memory_mb"]
