"""The per-trial memory guard (search.worker.memory_guard): its watchdog stops the block that
went over the limit, and only that block; the limit's setting is checked."""

from __future__ import annotations

import time

import pytest

from search.outcome import FailureKind
from search.worker.config import memory_limit_from_env
from search.worker.memory_guard import MemoryGuard, TrialOutOfMemory, rss_bytes

MIB = 1024 * 1024


class FakeMemory:
    def __init__(self, mib: int) -> None:
        self.mib = mib

    def __call__(self) -> int:
        return self.mib * MIB


def spin(seconds: float) -> None:
    """Python instructions for a while (an async exception arrives between them)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.001)


def test_a_block_that_goes_over_the_limit_is_stopped_with_the_measured_memory() -> None:
    memory = FakeMemory(900)
    guard = MemoryGuard(1000, every_s=0.01, read_rss=memory)
    started = time.monotonic()
    with pytest.raises(TrialOutOfMemory), guard.watching():
        spin(0.1)
        memory.mib = 1234
        spin(5.0)
    assert time.monotonic() - started < 2.0
    assert guard.tripped == (
        "out of memory: worker RSS 1234 MiB over the limit 1000 MiB (LRSEARCH_WORKER_MEMORY_MB)"
    )


def test_under_the_limit_or_without_one_nothing_happens_and_nothing_arrives_later() -> None:
    memory = FakeMemory(999)
    guard = MemoryGuard(1000, every_s=0.01, read_rss=memory)
    with guard.watching():
        spin(0.1)
    assert guard.tripped is None
    memory.mib = 5000  # over it after the block: not the block's concern
    spin(0.1)
    with MemoryGuard(None, every_s=0.01, read_rss=memory).watching():
        spin(0.1)
    assert guard.over_limit() is not None


def test_a_trip_at_the_very_end_of_a_block_is_withdrawn_not_raised_later() -> None:
    memory = FakeMemory(2000)
    guard = MemoryGuard(1000, every_s=0.001, read_rss=memory)
    stopped = 0
    for _ in range(50):
        try:
            with guard.watching():
                deadline = time.monotonic() + 0.002
                while time.monotonic() < deadline and guard.tripped is None:
                    pass
        except TrialOutOfMemory:
            stopped += 1  # delivered within the with statement: the caller's to handle
        spin(0.005)  # a late exception would surface here, outside any block
    assert stopped < 50  # some trips were withdrawn at the block's end


def test_the_process_rss_is_read_from_proc() -> None:
    assert 10 * MIB < rss_bytes() < 64 * 1024 * MIB


def test_memory_errors_of_python_and_tensorflow_are_out_of_memory() -> None:
    class ResourceExhaustedError(Exception):  # TensorFlow's, matched by name
        pass

    class Sub(ResourceExhaustedError):
        pass

    assert FailureKind.of_exception(MemoryError()) is FailureKind.OUT_OF_MEMORY
    assert FailureKind.of_exception(Sub("OOM when allocating")) is FailureKind.OUT_OF_MEMORY
    assert FailureKind.of_exception(ValueError()) is FailureKind.ERROR
    assert not FailureKind.OUT_OF_MEMORY.interrupted  # counts towards failing the study


@pytest.mark.parametrize(
    ("value", "expected"), [("", None), ("  ", None), ("4096", 4096), (" 512 ", 512)]
)
def test_the_limit_setting(value: str, expected: int | None) -> None:
    assert memory_limit_from_env({"LRSEARCH_WORKER_MEMORY_MB": value}) == expected
    assert memory_limit_from_env({}) is None


@pytest.mark.parametrize("value", ["0", "-5", "4GB", "1.5"])
def test_a_bad_limit_setting_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="LRSEARCH_WORKER_MEMORY_MB"):
        memory_limit_from_env({"LRSEARCH_WORKER_MEMORY_MB": value})
