"""A typed Python client of the lrsearch HTTP API (httpx; no TensorFlow, no database).

    client = Client("http://127.0.0.1:8000")
    study = client.submit(load_spec("examples/digits.yaml"))
    study.wait()                      # live progress bar on stderr
    print(study.best()["export"]["python"])

Every non-2xx answer raises `ApiError` with the problem document's fields; a server that
cannot be reached raises `CannotConnect`, so callers (the CLI) can tell them apart.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from search.spec import StudySpec

FINAL_STATUSES = ("completed", "cancelled", "failed")
DEFAULT_URL = "http://127.0.0.1:8000"


# --- errors ----------------------------------------------------------------------------------


class ClientError(Exception):
    """Base of the errors this client raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field of a request, as the API's `errors` list reports it."""

    field: str
    message: str


class ApiError(ClientError):
    """The API answered with an error: the RFC 9457 problem fields, ready to show a user."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[FieldProblem] | None = None,
        type: str = "about:blank",
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type = type
        super().__init__(self.message())

    def message(self) -> str:
        """`status title: detail` followed by one line per bad field."""
        head = f"{self.status} {self.title}" + (f": {self.detail}" if self.detail else "")
        return "\n".join([head, *(f"  {e.field}: {e.message}" for e in self.errors)])

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Read a problem document; a non-problem body still gives status and reason."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text.strip()[:500]
            return cls(response.status_code, response.reason_phrase or "error", text)
        errors = [
            FieldProblem(str(e.get("field", "")), str(e.get("message", "")))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        return cls(
            status=int(body.get("status") or response.status_code),
            title=str(body.get("title") or response.reason_phrase or "error"),
            detail=str(body.get("detail") or ""),
            errors=errors,
            type=str(body.get("type") or "about:blank"),
        )


class CannotConnect(ClientError):
    """No HTTP answer at all: wrong URL, server down, or a network timeout."""


class InputFileError(ClientError):
    """A local file (spec, model, dataset) cannot be read or parsed; nothing was sent."""


# --- the client ------------------------------------------------------------------------------


class Client:
    """The API at `url`; `token` is sent as a Bearer token when the server has auth on.

    `http` lets a caller supply its own httpx.Client (e.g. FastAPI's TestClient); then `url`
    is ignored and that client's base URL is used.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owned = http is None
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only if this client opened it)."""
        if self._owned:
            self._http.close()

    # -- studies --------------------------------------------------------------------------

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

    # -- datasets -------------------------------------------------------------------------

    def upload_dataset(
        self, path: str | Path, target: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """Upload an .npz or a .csv (with its `target` column); returns the dataset record."""
        path = Path(path)
        form = {k: v for k, v in (("target", target), ("name", name)) if v}
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        with handle:
            files = {"file": (path.name, handle, "application/octet-stream")}
            return dict(self.request("POST", "/v1/datasets", files=files, data=form).json())

    def datasets(self) -> list[dict[str, Any]]:
        """The caller's datasets, newest first."""
        return list(self.request("GET", "/v1/datasets").json()["items"])

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """One dataset's record."""
        return dict(self.request("GET", f"/v1/datasets/{dataset_id}").json())

    # -- plumbing -------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; errors become ApiError (an answer) or CannotConnect (no answer)."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise CannotConnect(f"cannot reach {self.url}: {exc}") from None
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Follow `next_cursor` until the API says there is no more."""
        params = dict(params)
        while True:
            page = self.request("GET", path, params=params).json()
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]


@dataclass
class Study:
    """A study on the server; `data` is the last detail document fetched (see `refresh`)."""

    client: Client
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
        """PNG bytes of one plot: lr, validation, history or strategies."""
        path = f"/v1/studies/{self.id}/plots/{name}.png"
        return self.client.request("GET", path, params={"k": k}).content


# --- progress ----------------------------------------------------------------------------------


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
        return "  ".join(parts)

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


# --- spec files ------------------------------------------------------------------------------


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A spec dict from a YAML or JSON file, ready for `Client.submit`.

    Client-side conveniences, resolved here before sending: `task.model.config_file`
    (a path relative to the spec file) is read into `task.model.config`, so a Keras
    `model.to_json()` can live in its own file; `overrides` set dotted keys
    (`{"task.dataset": "abc123"}`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    spec = parse_spec_text(text, json_only=path.suffix.lower() == ".json", where=str(path))
    for key, value in (overrides or {}).items():
        set_dotted(spec, key, value)
    _inline_model_file(spec, path.parent)
    return spec


def parse_spec_text(text: str, *, json_only: bool = False, where: str = "spec") -> dict[str, Any]:
    """Parse JSON (or YAML, a superset) into a mapping; InputFileError says where it broke."""
    import yaml

    try:
        data = json.loads(text) if json_only else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if json_only else "YAML"
        raise InputFileError(f"{where} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise InputFileError(f"{where} must hold a mapping (a study spec), not {kind}")
    return data


def set_dotted(spec: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, creating the intermediate ones."""
    parts = key.split(".")
    if not all(parts):
        raise InputFileError(f"invalid key {key!r}")
    node = spec
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputFileError(f"cannot set {key!r}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def _inline_model_file(spec: dict[str, Any], base: Path) -> None:
    model = (spec.get("task") or {}).get("model")
    if not isinstance(model, dict) or "config_file" not in model:
        return
    model_path = base / str(model.pop("config_file"))
    try:
        model["config"] = model_path.read_text(encoding="utf-8")
    except OSError as exc:
        why = exc.strerror or exc
        raise InputFileError(f"cannot read model file {model_path}: {why}") from None


__all__ = [
    "ApiError",
    "CannotConnect",
    "Client",
    "ClientError",
    "FieldProblem",
    "InputFileError",
    "ProgressBar",
    "Study",
    "load_spec",
]
