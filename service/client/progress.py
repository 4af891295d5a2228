"""The live progress line a waiting client draws: trials done / budget, best so far, ETA."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from service.client.display import shown

FINAL_STATUSES = ("completed", "cancelled", "failed")


class ProgressBar:
    """One status line redrawn in place on a terminal (a new line per change elsewhere)."""

    WIDTH = 24

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._first_done: int | None = None
        self._last = ""

    def update(self, status: Mapping[str, Any]) -> None:
        """Redraw from a study status document."""
        line = self.line(status)
        if line == self._last:
            return
        if self.tty:
            pad = max(0, len(self._last) - len(line))
            self.stream.write("\r" + line + " " * pad)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last = line

    def close(self) -> None:
        """End the line so the shell prompt starts on a fresh one."""
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()

    def line(self, status: Mapping[str, Any]) -> str:
        """`[#####.....] 3/10 trials  best 0.1234 (#2)  ETA 1m05s  running, 2 training`."""
        done, budget = finished_count(status), int(status.get("n_trials") or 0)
        filled = 0 if budget <= 0 else min(self.WIDTH, self.WIDTH * done // budget)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        parts = [f"[{bar}] {done}/{budget} trials", f"best {_best(status)}"]
        state = str(status.get("status", ""))
        if state not in FINAL_STATUSES:
            parts.append(f"ETA {self._eta(status, done, budget)}")
        running = int((status.get("progress") or {}).get("running") or 0)
        parts.append(f"{state}, {running} training" if running else state)
        return shown("  ".join(parts))

    def _eta(self, status: Mapping[str, Any], done: int, budget: int) -> str:
        """Remaining trials at the pace seen so far (server start time if usable)."""
        elapsed, base = _elapsed(status.get("started_at")), 0
        if elapsed is None:
            if self._first_done is None:
                self._first_done = done
            elapsed, base = time.monotonic() - self.started, self._first_done
        rate_done = done - base
        if rate_done <= 0 or elapsed <= 0:
            return "?"
        return format_duration(elapsed / rate_done * max(0, budget - done))


def finished_count(status: Mapping[str, Any]) -> int:
    """Trials that count against the budget and are over (retried failures excluded)."""
    progress = status.get("progress") or {}
    return sum(int(progress.get(k) or 0) for k in ("complete", "pruned", "failed"))


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _best(status: Mapping[str, Any]) -> str:
    value = status.get("best_value")
    if value is None:
        return "-"
    return f"{float(value):.4g} (#{status.get('best_trial')})"


def _elapsed(started_at: Any) -> float | None:
    """Seconds since the server's start time, or None when absent or the clocks disagree."""
    if not isinstance(started_at, str):
        return None
    try:
        started = datetime.fromisoformat(started_at)
    except ValueError:
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    elapsed = (datetime.now(UTC) - started).total_seconds()
    return elapsed if elapsed > 0 else None
