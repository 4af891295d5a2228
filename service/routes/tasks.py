"""What the live workers offer: their task plugins (with versions) and devices, aggregated.

Nothing about single workers (hosts, pids) is shown: tenants see what can run, not where.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from search import store
from service.deps import SessionDep, SettingsDep, TenantDep

router = APIRouter(tags=["tasks"])


class OfferedPlugin(BaseModel):
    """A task plugin some live worker offers."""

    name: str
    versions: list[str]
    workers: int
    devices: list[str]


class DeviceCount(BaseModel):
    """Live workers training on one kind of device."""

    device: str
    workers: int


class Offer(BaseModel):
    """What the live workers (seen within `live_within_s`) can run."""

    workers: int
    live_within_s: float
    plugins: list[OfferedPlugin]
    devices: list[DeviceCount]


@router.get("/tasks", response_model=Offer)
def list_tasks(session: SessionDep, settings: SettingsDep, _caller: TenantDep) -> dict[str, Any]:
    """The task plugins the live workers offer (a `task.plugin` must be one of them) and the
    devices they train on."""
    window = float(settings.grace_period_s)
    return offer_json(store.live_workers(session, window), window)


def offer_json(workers: list[store.LiveWorker], window: float) -> dict[str, Any]:
    """Live workers aggregated by plugin and by device."""
    versions: dict[str, set[str]] = {}
    devices: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    for worker in workers:
        for name, version in worker.plugins.items():
            versions.setdefault(name, set()).add(version)
            devices.setdefault(name, set()).add(worker.device)
            counts[name] += 1
    by_device = Counter(worker.device for worker in workers)
    return {
        "workers": len(workers),
        "live_within_s": window,
        "plugins": [
            {
                "name": name,
                "versions": sorted(versions[name]),
                "workers": counts[name],
                "devices": sorted(devices[name]),
            }
            for name in sorted(versions)
        ],
        "devices": [{"device": d, "workers": n} for d, n in sorted(by_device.items())],
    }
