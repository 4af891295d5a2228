"""tune()'s progress: a tqdm bar when tqdm is importable (`tqdm.auto`: a widget in Jupyter, a
text bar in a terminal), else one plain line per finished trial on stderr."""

from __future__ import annotations

import sys
from typing import IO, Any


class TuneProgress:
    """Trials done out of the budget, with the best value so far."""

    def __init__(self, total: int, *, enabled: bool = True, stream: IO[str] | None = None):
        self.total, self.enabled = total, enabled
        self._stream = stream or sys.stderr
        self._bar: Any = None
        self._done = 0
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc="lrsearch", unit="trial", file=self._stream)

    @property
    def uses_tqdm(self) -> bool:
        return self._bar is not None

    def update(self, done: int, best: float | None) -> None:
        """Show `done` finished trials (pruned and failed ones count) and the best value."""
        if not self.enabled or done == self._done:
            return
        step, self._done = done - self._done, done
        best_text = "-" if best is None else f"{best:.4g}"
        if self._bar is not None:
            self._bar.set_postfix_str(f"best {best_text}", refresh=False)
            self._bar.update(step)
            return
        print(
            f"lrsearch: {done}/{self.total} trials, best {best_text}", file=self._stream, flush=True
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
