"""A typed Python client of the lrsearch HTTP API (httpx; no TensorFlow, no database).

    client = Client("http://127.0.0.1:8000")
    study = client.submit(load_spec("examples/digits.yaml"))
    study.wait()                      # live progress bar on stderr
    print(study.best()["export"]["python"])

Every non-2xx answer raises `ApiError` with the problem document's fields; a server that
cannot be reached raises `CannotConnect`, so callers (the CLI) can tell them apart.

One module per concern: errors, transport (the HTTP calls), studies, datasets, progress (the
live line), specs (spec files); `Client` joins the resources' calls.
"""

from __future__ import annotations

from service.client.datasets import DatasetCalls
from service.client.errors import (
    ApiError,
    CannotConnect,
    ClientError,
    FieldProblem,
    InputFileError,
)
from service.client.models import ModelCalls
from service.client.progress import FINAL_STATUSES, ProgressBar, finished_count, format_duration
from service.client.specs import load_spec, parse_spec_text, set_dotted
from service.client.studies import Study, StudyCalls
from service.client.tasks import TaskCalls
from service.client.transport import DEFAULT_URL


class Client(StudyCalls, DatasetCalls, ModelCalls, TaskCalls):
    """The API at `url`; `token` is sent as a Bearer token when the server has auth on.

    `http` lets a caller supply its own httpx.Client (e.g. FastAPI's TestClient); then `url`
    is ignored and that client's base URL is used.
    """


__all__ = [
    "DEFAULT_URL",
    "FINAL_STATUSES",
    "ApiError",
    "CannotConnect",
    "Client",
    "ClientError",
    "FieldProblem",
    "InputFileError",
    "ProgressBar",
    "Study",
    "finished_count",
    "format_duration",
    "load_spec",
    "parse_spec_text",
    "set_dotted",
]
