"""Study calls of the client: submit, look up and list studies, and `Study`, one study on the
server (wait for it, read its trials and best schedule, cancel, delete, plot)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from service.client.progress import FINAL_STATUSES, ProgressBar
from service.client.transport import Transport

if TYPE_CHECKING:
    from search.spec import StudySpec


class StudyCalls(Transport):
    """The `/v1/studies` resource, mixed into `Client`."""

    def submit(self, spec: Mapping[str, Any] | StudySpec) -> Study:
        """Create a study from a spec (dict or StudySpec); the API validates every field."""
        body = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
        created = self.request("POST", "/v1/studies", json=body).json()
        return self.study(str(created["id"]))

    def study(self, study_id: str) -> Study:
        """A study by id (fetched now, so an unknown id raises ApiError 404)."""
        study = Study(self, study_id)
        study.refresh()
        return study

    def studies(self, status: str | None = None, page_size: int = 50) -> Iterator[Study]:
        """Every study of the caller, newest first, page by page."""
        params: dict[str, Any] = {"limit": page_size}
        if status:
            params["status"] = status
        for item in self._pages("/v1/studies", params):
            yield Study(self, str(item["id"]), dict(item))  # a summary; refresh() for more


@dataclass
class Study:
    """A study on the server; `data` is the last detail document fetched (see `refresh`)."""

    client: Transport
    id: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.data.get("status", "unknown"))

    @property
    def name(self) -> str:
        return str(self.data.get("name", ""))

    @property
    def progress(self) -> dict[str, int]:
        return dict(self.data.get("progress") or {})

    @property
    def best_value(self) -> float | None:
        value = self.data.get("best_value")
        return None if value is None else float(value)

    @property
    def done(self) -> bool:
        """The study reached a final status (completed, cancelled or failed)."""
        return self.status in FINAL_STATUSES

    def refresh(self) -> Study:
        """Fetch the current status, progress and best value."""
        self.data = dict(self.client.request("GET", f"/v1/studies/{self.id}").json())
        return self

    def wait(
        self,
        progress: bool = True,
        poll_s: float = 1.0,
        timeout: float | None = None,
        stream: IO[str] | None = None,
    ) -> dict[str, Any]:
        """Poll until the study is final and return its status document.

        With `progress`, draws one live line on stderr (trials done / budget, best so far,
        ETA). Raises TimeoutError after `timeout` seconds.
        """
        bar = ProgressBar(stream or sys.stderr) if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                self.refresh()
                if bar:
                    bar.update(self.data)
                if self.done:
                    return self.data
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"study {self.id} is still {self.status} after {timeout}s")
                time.sleep(poll_s)
        finally:
            if bar:
                bar.close()

    def trials(
        self, state: str | None = None, order: str = "number", page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every trial (optionally of one state), following the API's cursor page by page."""
        params: dict[str, Any] = {"order": order, "limit": page_size}
        if state:
            params["state"] = state
        yield from self.client._pages(f"/v1/studies/{self.id}/trials", params)

    def trial(self, number: int) -> dict[str, Any]:
        """One trial with its per-epoch learning rates and metrics."""
        return dict(self.client.request("GET", f"/v1/studies/{self.id}/trials/{number}").json())

    def best(self) -> dict[str, Any]:
        """The best finished trial and its Keras export (ApiError 409 while none finished)."""
        return dict(self.client.request("GET", f"/v1/studies/{self.id}/best").json())

    def cancel(self) -> dict[str, Any]:
        """Stop the study (ApiError 409 if it already ended); returns the new status."""
        self.data = dict(self.client.request("POST", f"/v1/studies/{self.id}/cancel").json())
        return self.data

    def delete(self) -> None:
        """Delete the study and its trials."""
        self.client.request("DELETE", f"/v1/studies/{self.id}")

    def plot(self, name: str, k: int = 5) -> bytes:
        """PNG bytes of one plot: lr, validation, history, strategies or range."""
        path = f"/v1/studies/{self.id}/plots/{name}.png"
        return self.client.request("GET", path, params={"k": k}).content
