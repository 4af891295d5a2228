"""What the live workers offer (`/v1/tasks`)."""

from __future__ import annotations

from typing import Any

from service.client.transport import Transport


class TaskCalls(Transport):
    """The `/v1/tasks` resource, mixed into `Client`."""

    def tasks(self) -> dict[str, Any]:
        """The task plugins the live workers offer (name, versions, workers, devices) and
        their devices: a spec's `task.plugin` must be one of these plugins."""
        return dict(self.request("GET", "/v1/tasks").json())
