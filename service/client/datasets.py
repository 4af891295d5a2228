"""Dataset calls of the client: upload an .npz or .csv, list them, read one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.client.transport import Transport


class DatasetCalls(Transport):
    """The `/v1/datasets` resource, mixed into `Client`."""

    def upload_dataset(
        self, path: str | Path, target: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """Upload an .npz or a .csv (with its `target` column); returns the dataset record."""
        form = {k: v for k, v in (("target", target), ("name", name)) if v}
        return self._upload("/v1/datasets", path, form)

    def datasets(self) -> list[dict[str, Any]]:
        """The caller's datasets, newest first."""
        return list(self.request("GET", "/v1/datasets").json()["items"])

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """One dataset's record."""
        return dict(self.request("GET", f"/v1/datasets/{dataset_id}").json())
