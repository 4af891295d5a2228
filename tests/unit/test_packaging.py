"""Packaging: `pip install lrsearch[api]` brings no TensorFlow/Keras, `[worker]` brings both,
and the commands that train say which extra to install when they are missing."""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"tensorflow", "keras", "tf-keras", "tensorflow-cpu"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_base_and_api_dependencies_have_no_tensorflow_or_keras() -> None:
    project = _project()
    api = project["optional-dependencies"]["api"]
    assert not _names([*project["dependencies"], *api]) & HEAVY
    assert {"fastapi", "uvicorn", "optuna-dashboard"} <= _names(api)


def test_worker_extra_brings_tensorflow_and_keras_and_dev_pulls_both_extras() -> None:
    extras = _project()["optional-dependencies"]
    assert {"tensorflow", "keras"} <= _names(extras["worker"])
    self_refs = [Requirement(r) for r in extras["dev"] if Requirement(r).name == "lrsearch"]
    assert [sorted(r.extras) for r in self_refs] == [["api", "worker"]]


def test_keras_pin_holds_the_tested_version() -> None:
    keras = next(
        Requirement(r)
        for r in _project()["optional-dependencies"]["worker"]
        if Requirement(r).name == "keras"
    )
    try:
        installed = metadata.version("keras")
    except metadata.PackageNotFoundError:
        pytest.skip("keras is not installed here")
    assert keras.specifier.contains(installed), (installed, str(keras.specifier))


@pytest.mark.parametrize("argv", [["worker"], ["serve", "--workers", "1"]])
def test_training_commands_without_tensorflow_name_the_extra(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.cli import main

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # find_spec -> None, as if absent
    db = tmp_path / "never.db"
    assert main(["--database-url", f"sqlite:///{db}", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'lrsearch[worker]'" in err, err
    assert "tensorflow" in err and not db.exists(), "nothing is started or migrated"
