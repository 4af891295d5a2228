"""Spec files are read on the client: nothing in one may hang the CLI or fill its memory
(a YAML alias bomb, `config_file: /dev/zero`, a FIFO, an endless stdin), and each such file
is a clear error with exit 2 (a bad local file) before anything is sent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from search.spec import MAX_MODEL_JSON_CHARS
from service.app import JSON_BODY_LIMIT
from service.client import InputFileError, load_spec
from service.client.specs import MAX_SPEC_FILE_BYTES
from tests.integration.test_client_cli import ROOT, cli_env, cli_process, closed_port

#: Each case ends in about a second; the old code hung or ran for tens of seconds.
QUICK_S = 30


def _submit(spec: Path) -> subprocess.CompletedProcess[str]:
    """`lrsearch submit SPEC` against a port nothing listens on: exit 4 would mean the spec
    was read and sent; exit 2 means it was refused locally."""
    result: subprocess.CompletedProcess[str] = cli_process(
        "submit", str(spec), url=f"http://127.0.0.1:{closed_port()}", timeout=QUICK_S
    )
    return result


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ["n_trials: 2", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    spec = tmp_path / "laughs.yaml"
    spec.write_text("\n".join(lines) + "\n")
    result = _submit(spec)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "anchors and aliases" in result.stderr and "line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_anchor_alone_is_refused_too(tmp_path: Path) -> None:
    spec = tmp_path / "anchor.yaml"
    spec.write_text("n_trials: &n 2\nname: '*not an alias & not an anchor'\n")
    with pytest.raises(InputFileError, match="anchors and aliases"):
        load_spec(spec)
    spec.write_text("n_trials: 2\nname: '*not an alias & not an anchor'\n")
    assert load_spec(spec)["name"] == "*not an alias & not an anchor"


@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_a_model_file_that_is_not_a_regular_file_is_exit_2(tmp_path: Path, source: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"task:\n  model: {{kind: keras_json, config_file: {source}}}\n")
    result = _submit(spec)
    assert result.returncode == 2, result.stderr[-2000:]
    where = source if source.startswith("/") else tmp_path / source
    assert f"cannot read model file {where}" in result.stderr
    assert "not a regular file" in result.stderr and "Traceback" not in result.stderr


def test_a_model_file_is_capped_at_the_apis_limit(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("task:\n  model: {kind: keras_json, config_file: model.json}\n")
    (tmp_path / "model.json").write_text("x" * MAX_MODEL_JSON_CHARS)
    assert len(load_spec(spec)["task"]["model"]["config"]) == MAX_MODEL_JSON_CHARS
    (tmp_path / "model.json").write_text("é" * (MAX_MODEL_JSON_CHARS + 1))
    result = _submit(spec)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"longer than {MAX_MODEL_JSON_CHARS} characters" in result.stderr


def test_a_model_file_outside_the_spec_folder_is_read(tmp_path: Path) -> None:
    """The user's own file on the user's own machine, sent to the server they chose: any path
    they can read is fine (relative paths start at the spec's folder)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.json").write_text('{"class_name": "Sequential"}')
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "spec.yaml"
    spec.write_text("task:\n  model: {kind: keras_json, config_file: ../models/m.json}\n")
    assert load_spec(spec)["task"]["model"]["config"] == '{"class_name": "Sequential"}'


@pytest.mark.parametrize("content", [b"n_trials: 2\nname: \xff\xfe\n", None])
def test_an_unreadable_spec_file_is_exit_2(tmp_path: Path, content: bytes | None) -> None:
    spec = tmp_path / "spec.json"
    if content is None:  # larger than the API would take as a body
        spec.write_text('{"name": "' + "x" * MAX_SPEC_FILE_BYTES + '"}')
    else:
        spec.write_bytes(content)
    result = _submit(spec)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert ("not UTF-8 text" if content else f"larger than {MAX_SPEC_FILE_BYTES}") in result.stderr


def test_an_endless_spec_is_exit_2() -> None:
    for argv, stdin in ((["/dev/zero"], None), (["-"], "/dev/zero")):
        with open(stdin or os.devnull, "rb") as source:
            result = subprocess.run(
                [sys.executable, "-m", "service.cli", "submit", *argv],
                cwd=ROOT,
                env=cli_env(f"http://127.0.0.1:{closed_port()}"),
                stdin=source,
                capture_output=True,
                text=True,
                timeout=QUICK_S,
            )
        assert result.returncode == 2, (argv, result.stderr[-2000:])
        assert "Traceback" not in result.stderr


def test_the_spec_cap_is_the_apis_body_limit() -> None:
    assert MAX_SPEC_FILE_BYTES == JSON_BODY_LIMIT
