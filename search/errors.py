"""Domain errors, one flat module, classified by what should happen next.

`SpecError` and friends are the caller's fault (the API maps them to 4xx, `QuotaExceeded` to
429);
`TrialDiverged` fails one trial and the search goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

#: At most this many bad fields are kept and listed (a 422 says how many more there were), so
#: a flood of bad fields costs a short answer, not memory proportional to the flood.
MAX_LISTED_ERRORS = 50


@dataclass(frozen=True)
class FieldError:
    """One bad field: its dotted path and why it is bad."""

    field: str
    message: str


class LRSearchError(Exception):
    """Base of every error lrsearch raises on purpose."""


class SpecError(LRSearchError, ValueError):
    """A study spec (or part of it) is invalid; lists the first MAX_LISTED_ERRORS bad fields
    and counts the rest in `more`."""

    def __init__(self, errors: list[FieldError], more: int = 0) -> None:
        self.errors = errors[:MAX_LISTED_ERRORS]
        self.more = more + len(errors) - len(self.errors)
        listed = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(f"{listed}; and {self.more} more" if self.more else listed)


class QuotaExceeded(LRSearchError):
    """A tenant already holds as much as it may at once (queued or running studies)."""


class DatasetError(LRSearchError, ValueError):
    """Data cannot be used for training (shape, NaN, types, too small...); `field` is the
    request field to blame (the uploaded file unless a form field is at fault)."""

    def __init__(self, message: str, *, field: str = "file") -> None:
        super().__init__(message)
        self.field = field


class ModelError(LRSearchError, ValueError):
    """A model cannot be built or does not fit the data."""


class PluginError(LRSearchError, ValueError):
    """A task plugin is missing, cannot be loaded, or raised while building its model or data
    (the message names the plugin and keeps its own)."""


class StrategyError(LRSearchError, ValueError):
    """Strategy parameters break a constraint (bounds, run length)."""


class TrialDiverged(LRSearchError):
    """The loss became NaN or infinite: the trial fails with this reason."""


class TrialStopped(LRSearchError):
    """Training was asked to stop (cancel or shutdown) before the end."""
