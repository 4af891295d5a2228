"""Model-file calls of the client: upload a `.keras` file, list them, read one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.client.transport import Transport


class ModelCalls(Transport):
    """The `/v1/models` resource, mixed into `Client`."""

    def upload_model(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """Upload a `.keras` file (from `model.save()`); returns the model record, whose id
        goes into `task.model: {kind: keras_file, id: ...}`."""
        return self._upload("/v1/models", path, {"name": name} if name else {})

    def models(self) -> list[dict[str, Any]]:
        """The caller's model files, newest first."""
        return list(self.request("GET", "/v1/models").json()["items"])

    def model(self, model_id: str) -> dict[str, Any]:
        """One model file's record."""
        return dict(self.request("GET", f"/v1/models/{model_id}").json())
