"""search.plugins without TensorFlow: discovery from installed distributions' metadata,
loading (and every way it can go wrong, as a PluginError), arguments through the plugin's
own pydantic model, and the spec's rules for `task.plugin`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from search.errors import PluginError, SpecError
from search.plugins import IN_PROCESS, call, installed_plugins, load_plugin
from search.spec import parse_spec
from tests.plugins import _dist_info

PLAIN = """
from pydantic import BaseModel, ConfigDict


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = 2


class Good:
    Args = Args

    def build_model(self, args): return ("model", args.depth)
    def datasets(self, args, batch_size, seed): return ("train", "val")
    def loss(self, args): return "mse"


class NoData:
    def build_model(self, args): return None
    def loss(self, args): return "mse"


good = Good()
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "plain_tasks.py").write_text(PLAIN)
    _dist_info(
        tmp_path,
        "plain-tasks",
        "1.2.3",
        {
            "good": "plain_tasks:Good",
            "good-instance": "plain_tasks:good",
            "no-data": "plain_tasks:NoData",
            "missing-module": "no_such_module_here:Task",
            IN_PROCESS: "plain_tasks:Good",
            "bad name!": "plain_tasks:Good",
        },
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("plain_tasks", None)


def test_discovery_reads_metadata_only(site: Path) -> None:
    found = installed_plugins()
    assert {"good", "good-instance", "no-data", "missing-module"} <= set(found)
    assert IN_PROCESS not in found and "bad name!" not in found  # reserved, invalid
    info = found["good"]
    assert (info.version, info.distribution, info.target) == (
        "1.2.3",
        "plain-tasks",
        "plain_tasks:Good",
    )
    assert info.as_json() == {"name": "good", "version": "1.2.3", "distribution": "plain-tasks"}
    assert "plain_tasks" not in sys.modules  # nothing of it was imported


def test_loading_a_class_or_an_instance(site: Path) -> None:
    loaded = load_plugin("good")
    assert loaded.plugin.build_model(loaded.parse_args({"depth": 3})) == ("model", 3)
    assert load_plugin("good-instance").info.name == "good-instance"


def test_every_way_loading_fails_is_a_plugin_error(site: Path) -> None:
    with pytest.raises(PluginError, match=r"'nowhere' is not installed here \(installed: "):
        load_plugin("nowhere")
    with pytest.raises(PluginError, match="cannot be loaded: ModuleNotFoundError"):
        load_plugin("missing-module")
    with pytest.raises(PluginError, match=r"has no datasets\(\) method"):
        load_plugin("no-data")


def test_arguments_go_through_the_plugins_model(site: Path) -> None:
    loaded = load_plugin("good")
    with pytest.raises(SpecError) as bad:
        loaded.parse_args({"depth": "deep", "colour": "red"})
    assert {e.field for e in bad.value.errors} == {
        "task.plugin_args.depth",
        "task.plugin_args.colour",
    }


def test_call_names_the_plugin_and_keeps_its_message() -> None:
    def broken() -> None:
        raise OSError("bucket gs://x is gone")

    with pytest.raises(PluginError) as failed:
        call("shapes", "datasets()", broken)
    assert (
        str(failed.value)
        == "task plugin 'shapes': datasets() raised OSError: bucket gs://x is gone"
    )


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"plugin": "x", "dataset": "abc"}, "task.dataset"),
        ({"plugin": "x", "model": {"kind": "cnn"}}, "task.model"),
        ({"plugin": "x", "preprocess": {"standardize": True}}, "task.preprocess"),
        ({"plugin_args": {"a": 1}}, "task.plugin_args"),
        ({"plugin": "no spaces"}, "task.plugin"),
        ({"plugin": "x", "plugin_args": {"big": "y" * 100_001}}, "task.plugin_args"),
    ],
)
def test_spec_rules_of_a_plugin_task(task: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as bad:
        parse_spec({"task": task})
    assert field in {e.field for e in bad.value.errors}


def test_a_stored_plugin_spec_parses_again() -> None:
    spec = parse_spec({"task": {"plugin": "example-blobs", "plugin_args": {"n_train": 10}}})
    assert parse_spec(spec.model_dump(mode="json")) == spec  # defaults are not "set" mistakes
