"""The worker, by lifecycle: `loop` (claim and run), `trial_run` (one trial, from its study
to its tell), `heartbeat` (while it trains), `retries`, `sweep` (dead workers, leaked slots,
finishing studies), over the `resources` one worker shares and its `config`."""

from search.worker.config import WorkerConfig
from search.worker.loop import Worker, run_worker

__all__ = ["Worker", "WorkerConfig", "run_worker"]
