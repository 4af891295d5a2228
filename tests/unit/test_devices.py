"""Placing workers on GPUs (search.training.devices) and `lrsearch serve --gpus`.

Machines here have no GPU: the GPU calls are checked against a recording stand-in for
`tf.config`, and the same placement code runs for real on TensorFlow's logical CPU devices in
a subprocess (the test process itself never imports TensorFlow).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from search.training import devices
from search.training.devices import Placement, place, placements
from service.cli import main
from service.cli import server as server_cli

ROOT = Path(__file__).resolve().parents[2]


# --- the placement read from the environment ------------------------------------------------


@pytest.mark.parametrize(
    ("index", "memory", "expected"),
    [("", "", Placement()), ("1", "", Placement(1)), (" 0 ", "2048", Placement(0, 2048))],
)
def test_placement_from_env(
    monkeypatch: pytest.MonkeyPatch, index: str, memory: str, expected: Placement
) -> None:
    monkeypatch.setenv("LRSEARCH_GPU_INDEX", index)
    monkeypatch.setenv("LRSEARCH_GPU_MEMORY_MB", memory)
    assert Placement.from_env() == expected
    assert Placement.from_env().requested == (expected != Placement())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LRSEARCH_GPU_INDEX", "-1"),
        ("LRSEARCH_GPU_INDEX", "first"),
        ("LRSEARCH_GPU_MEMORY_MB", "0"),
        ("LRSEARCH_GPU_MEMORY_MB", "1.5"),
    ],
)
def test_malformed_placement_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Placement.from_env()


def test_workers_spread_round_robin_over_the_gpus() -> None:
    spread = placements(5, (0, 1), 512)
    assert [p.index for p in spread] == [0, 1, 0, 1, 0]
    assert spread[1].env() == {"LRSEARCH_GPU_INDEX": "1", "LRSEARCH_GPU_MEMORY_MB": "512"}
    assert placements(2, (), None) == [Placement(), Placement()]
    assert Placement().env() == {}


# --- the GPU calls, against a recording tf.config -------------------------------------------


@dataclass
class FakeConfig:
    """The parts of `tf.config` placement uses, recording what is asked of them."""

    devices: list[Any]
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    initialised: bool = False

    def list_physical_devices(self, device_type: str) -> list[Any]:
        return [d for d in self.devices if d.device_type == device_type]

    def set_visible_devices(self, chosen: list[Any], device_type: str) -> None:
        if self.initialised:
            raise RuntimeError("Visible devices cannot be modified after being initialized")
        self.calls.append(("visible", [d.name for d in chosen], device_type))

    def set_logical_device_configuration(self, device: Any, configs: list[Any]) -> None:
        self.calls.append(("logical", device.name, [c.memory_limit for c in configs]))

    def LogicalDeviceConfiguration(self, memory_limit: int | None = None) -> Any:
        return SimpleNamespace(memory_limit=memory_limit)

    @property
    def experimental(self) -> Any:
        return SimpleNamespace(
            set_memory_growth=lambda d, on: self.calls.append(("growth", d.name, on))
        )


def fake_tf(n_gpus: int, initialised: bool = False) -> Any:
    gpus = [
        SimpleNamespace(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(n_gpus)
    ]
    cpu = SimpleNamespace(name="/physical_device:CPU:0", device_type="CPU")
    return SimpleNamespace(config=FakeConfig([cpu, *gpus], initialised=initialised))


def test_k_workers_on_one_gpu_each_get_a_memory_capped_logical_device() -> None:
    tf = fake_tf(2)
    chosen = place(tf, "GPU", Placement(index=1, memory_mb=512))
    assert [d.name for d in chosen] == ["/physical_device:GPU:1"]
    assert tf.config.calls == [
        ("visible", ["/physical_device:GPU:1"], "GPU"),
        ("logical", "/physical_device:GPU:1", [512]),
    ], "a memory limit and memory growth cannot be combined"


def test_without_a_placement_every_gpu_grows_as_before() -> None:
    tf = fake_tf(2)
    assert len(place(tf, "GPU", Placement())) == 2
    assert tf.config.calls == [
        ("growth", "/physical_device:GPU:0", True),
        ("growth", "/physical_device:GPU:1", True),
    ]


def test_an_index_beyond_the_gpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="LRSEARCH_GPU_INDEX=2, but TensorFlow sees 2 GPU"):
        place(fake_tf(2), "GPU", Placement(index=2))


def test_no_gpu_means_cpu_and_a_memory_limit_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    tf = fake_tf(0)
    with caplog.at_level(logging.WARNING, logger="lrsearch.training.devices"):
        assert place(tf, "GPU", Placement(memory_mb=512)) == []
    assert tf.config.calls == [] and "LRSEARCH_GPU_MEMORY_MB is set" in caplog.text


def test_too_late_to_place_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    tf = fake_tf(1, initialised=True)
    with caplog.at_level(logging.WARNING, logger="lrsearch.training.devices"):
        assert len(place(tf, "GPU", Placement(index=0, memory_mb=256))) == 1
    assert "not applied" in caplog.text


# --- the same code on TensorFlow's logical CPU devices, for real ----------------------------

_CPU_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    import keras
    from search.training.devices import Placement, configure_devices, place

    (cpu,) = tf.config.list_physical_devices("CPU")
    chosen = place(tf, "CPU", Placement.from_env())
    assert chosen == [cpu], chosen
    assert tf.config.get_visible_devices("CPU") == [cpu]
    assert len(tf.config.get_logical_device_configuration(cpu)) == 1
    try:
        place(tf, "CPU", Placement(index=1))
    except ValueError as exc:
        assert "LRSEARCH_GPU_INDEX=1, but TensorFlow sees 1 CPU" in str(exc), exc
    else:
        raise AssertionError("index 1 of one CPU was accepted")
    try:
        configure_devices()  # LRSEARCH_GPU_INDEX=0 on a machine without a GPU
    except ValueError as exc:
        assert "sees 0 GPU" in str(exc), exc
    else:
        raise AssertionError("a GPU index without a GPU was accepted")
    (logical,) = tf.config.list_logical_devices("CPU")  # initialises the devices
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    with tf.device(logical.name):
        model.fit(np.zeros((8, 4)), np.zeros((8, 2)), epochs=1, verbose=0)
    assert place(tf, "CPU", Placement(index=0)) == [cpu]  # too late now: logged, not raised
    print("ok")
    """
)


@pytest.mark.slow
def test_placement_runs_on_tensorflows_logical_cpu_devices() -> None:
    env = {
        "LRSEARCH_GPU_INDEX": "0",
        "LRSEARCH_GPU_MEMORY_MB": "256",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", _CPU_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**_base_env(), **env},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().endswith("ok")


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}


# --- the command line -----------------------------------------------------------------------


def test_serve_places_its_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spawned: list[dict[str, str]] = []
    monkeypatch.setattr(server_cli, "_spawn_worker", lambda _s, env: spawned.append(env))
    monkeypatch.setattr(server_cli, "cmd_api", lambda _a, _s: 0)
    monkeypatch.setattr(server_cli, "stop_processes", lambda _procs: None)
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    argv = ["--database-url", url, "serve", "--workers", "3", "--gpus", "0,1"]
    assert main([*argv, "--gpu-memory-mb", "512"]) == 0
    assert [e["LRSEARCH_GPU_INDEX"] for e in spawned] == ["0", "1", "0"]
    assert {e["LRSEARCH_GPU_MEMORY_MB"] for e in spawned} == {"512"}
    spawned.clear()
    assert main(["--database-url", url, "serve", "--workers", "2"]) == 0
    assert spawned == [{}, {}], "no placement asked: the workers' environment is unchanged"


@pytest.mark.parametrize("flags", [["--gpus", "a"], ["--gpus", "-1"], ["--gpu-memory-mb", "0"]])
def test_serve_refuses_bad_gpu_flags(flags: list[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    assert main(["--database-url", url, "serve", *flags]) == 2


def test_a_worker_placed_on_a_missing_gpu_exits_before_any_trial(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_gpu() -> list[str]:
        raise ValueError("LRSEARCH_GPU_INDEX=3, but TensorFlow sees 0 GPU device(s)")

    monkeypatch.setenv("LRSEARCH_GPU_INDEX", "3")
    monkeypatch.setattr(devices, "configure_devices", no_gpu)
    assert main(["--database-url", "sqlite://", "worker"]) == 2
    assert "sees 0 GPU" in capsys.readouterr().err
