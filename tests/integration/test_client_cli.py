"""The Python client and the `lrsearch` client commands against a real API (uvicorn on a free
loopback port, in a thread) and a real worker thread that trains tiny models. No mocks.

Exit codes are checked both in-process (`service.cli.main` returns them) and through real
subprocesses where the shell-visible code matters (bad spec -> 3, unreachable -> 4, failed -> 1).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pytest
import yaml

from search import store
from search.spec import parse_spec
from search.worker import Worker, WorkerConfig
from service.cli import main
from service.client import ApiError, CannotConnect, Client, load_spec

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TINY_TASK = {"model": {"kind": "mlp", "hidden": [16]}, "epochs": 2, "batch_size": 128}
TINY_SET = [
    "--set",
    "task.model.hidden=[16]",
    "--set",
    "task.epochs=2",
    "--set",
    "task.batch_size=128",
    "--set",
    "n_trials=3",
    "--set",
    "strategies=[constant, step]",
]


# --- a real API and a real worker ------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    url: str
    database_url: str
    data_dir: Path


StartApi = Callable[..., AbstractContextManager[Api]]


@pytest.fixture
def start_api(tmp_path: Path) -> StartApi:
    """Start `create_app(Settings(...))` under uvicorn on a free port; kwargs override settings."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[Api]:
        import uvicorn

        from service.app import create_app
        from service.settings import Settings

        db_url = f"sqlite:///{tmp_path / 'api.db'}"
        values: dict[str, Any] = {
            "database_url": db_url,
            "data_dir": tmp_path / "data",
            "max_running_studies": 100,
        }
        values.update(overrides)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        app = create_app(Settings(**values))  # log_config=None: see test_write_guards.running_api
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            wait_for(lambda: server.started, 60, "the API to start")
            yield Api(f"http://127.0.0.1:{port}", db_url, tmp_path / "data")
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()

    return start


@pytest.fixture
def api(start_api: StartApi) -> Iterator[Api]:
    """The API with auth off."""
    with start_api() as running:
        yield running


@contextmanager
def worker_thread(api: Api) -> Iterator[Worker]:
    worker = Worker(
        WorkerConfig(
            api.database_url, api.data_dir, heartbeat_interval=1, grace_period=10, poll_s=0.2
        )
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive(), "worker did not stop"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`lrsearch ARGV` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_env(url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if url:
        env["LRSEARCH_URL"] = url
    return env


def cli_process(*argv: str, url: str | None = None, timeout: float = 120) -> Any:
    """`python -m service.cli ARGV` as a real process (its exit code is what a shell sees)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *argv],
        cwd=ROOT,
        env=cli_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_csv(path: Path, rows: int = 60) -> Path:
    lines = ["a,b,c,label"] + [
        f"{i * 0.05:.2f},{(i % 7) * 0.3:.2f},{((i * 13) % 11) * 0.1:.2f},{i % 2}"
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def is_png_with_content(data: bytes) -> bool:
    pixels = mpimg.imread(io.BytesIO(data), format="png")
    return bool(pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels[..., :3].var() > 0)


# --- the Python client -----------------------------------------------------------------------


def test_client_round_trip_with_a_real_worker(api: Api, tmp_path: Path) -> None:
    with Client(api.url) as client:
        dataset = client.upload_dataset(
            tiny_csv(tmp_path / "tiny.csv"), target="label", name="tiny"
        )
        assert dataset["task"] == "classification" and dataset["name"] == "tiny"
        assert [d["id"] for d in client.datasets()] == [dataset["id"]]

        spec = parse_spec(
            {
                "name": "round-trip",
                "n_trials": 3,
                "seed": 0,
                "strategies": ["constant", "exponential"],
                "task": {**TINY_TASK, "dataset": dataset["id"], "batch_size": 16},
            }
        )
        study = client.submit(spec)  # a StudySpec; dicts are tested through the CLI
        assert study.status == "queued" and study.name == "round-trip"
        with pytest.raises(TimeoutError):
            study.wait(progress=False, poll_s=0.05, timeout=0.3)
        with pytest.raises(ApiError) as not_yet:
            study.best()
        assert not_yet.value.status == 409

        bar = io.StringIO()
        with worker_thread(api):
            final = study.wait(progress=True, poll_s=0.2, timeout=300, stream=bar)
        assert final["status"] == "completed" and study.done
        assert "3/3 trials" in bar.getvalue() and "best" in bar.getvalue()

        numbers = [t["number"] for t in study.trials(page_size=2)]  # two pages via the cursor
        assert numbers == [0, 1, 2]
        by_value = list(study.trials(order="value", state="complete", page_size=1))
        best = study.best()
        assert by_value[0]["number"] == best["trial_number"] == final["best_trial"]
        assert best["strategy"] in ("constant", "exponential")
        assert "keras" in best["export"]["python"]
        assert client.study(study.id).refresh().status == "completed"
        assert is_png_with_content(study.plot("history"))

        with pytest.raises(ApiError) as finished:
            study.cancel()
        assert finished.value.status == 409 and "completed" in finished.value.detail


def test_client_errors_carry_the_problem_fields(api: Api, tmp_path: Path) -> None:
    with Client(api.url) as client:
        with pytest.raises(ApiError) as bad:
            client.submit({"n_trials": 0, "strategies": ["bogus"]})
        error = bad.value
        assert error.status == 422 and error.title == HTTPStatus(422).phrase
        assert {e.field for e in error.errors} == {"n_trials", "strategies.0"}
        assert "strategies.0: unknown strategy" in str(error)
        with pytest.raises(ApiError) as missing:
            client.study("0123456789abcdef")
        assert missing.value.status == 404 and missing.value.errors == []

        queued = client.submit({"n_trials": 2, "task": {"epochs": 2}})
        assert queued.cancel()["status"] == "cancelled"
        assert [s.id for s in client.studies(status="cancelled")] == [queued.id]
    with Client(f"http://127.0.0.1:{closed_port()}") as nowhere, pytest.raises(CannotConnect):
        nowhere.datasets()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    from service.client import ProgressBar

    term = Terminal()
    bar = ProgressBar(term)
    running = {
        "status": "running",
        "n_trials": 4,
        "best_value": 0.25,
        "best_trial": 1,
        "progress": {"complete": 2, "pruned": 0, "failed": 0, "running": 1},
    }
    bar.update(running)
    bar.update(running)  # unchanged: not redrawn
    bar.update(
        {
            **running,
            "status": "completed",
            "progress": {"complete": 3, "pruned": 1, "failed": 0, "running": 0},
        }
    )
    bar.close()
    first, second = term.getvalue().split("\r")[1:]
    assert first.startswith("[############............] 2/4 trials  best 0.25 (#1)  ETA ")
    assert first.rstrip().endswith("running, 1 training")
    assert second.rstrip() == "[########################] 4/4 trials  best 0.25 (#1)  completed"
    assert second.endswith("\n") and len(second) > len(first)  # padded over the longer line
    assert term.getvalue().count("\n") == 1


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_submit_wait_then_status_trials_best_plot_cancel(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with worker_thread(api):
        code, out, err = cli(
            capsys,
            "--url",
            api.url,
            "submit",
            str(EXAMPLES / "digits.yaml"),
            *TINY_SET,
            "--wait",
            "--poll",
            "0.2",
        )
    assert code == 0, err
    study_id = out.strip()
    assert len(study_id) == 32 and "3/3 trials" in err

    code, out, _ = cli(capsys, "status", study_id, "--url", api.url)  # --url after the command
    assert code == 0 and "completed" in out and "3/3 done" in out
    code, out, _ = cli(capsys, "--url", api.url, "status", study_id, "--json")
    assert json.loads(out)["spec"]["task"]["model"]["hidden"] == [16]

    code, out, _ = cli(capsys, "--url", api.url, "trials", study_id)
    lines = out.rstrip("\n").splitlines()
    assert code == 0 and lines[0].split() == [
        "number",
        "state",
        "strategy",
        "value",
        "epochs",
        "seconds",
    ]
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1  # aligned columns
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2"]
    _, out, _ = cli(
        capsys, "--url", api.url, "trials", study_id, "--order", "value", "--limit", "1"
    )
    assert len(out.strip().splitlines()) == 2

    _, out, _ = cli(capsys, "--url", api.url, "best", study_id)
    best = json.loads(out)
    _, out, _ = cli(capsys, "--url", api.url, "best", study_id, "--format", "export")
    export = json.loads(out)
    assert export == best["export"]
    assert set(export) == {
        "schedule",
        "callbacks",
        "initial_lr",
        "optimizer",
        "python",
        "preprocess",
    }
    assert export["preprocess"] is None  # the spec asked for none
    from search.training.keras_export import apply

    optimizer, callbacks = apply(export)
    assert type(optimizer).__name__ == "Adam" and isinstance(callbacks, list)
    _, out, _ = cli(capsys, "--url", api.url, "best", study_id, "--format", "python")
    assert out == best["export"]["python"]
    namespace: dict[str, Any] = {}
    exec(compile(out, "<best>", "exec"), namespace)  # the printed snippet really runs
    assert "optimizer" in namespace and "callbacks" in namespace

    png = tmp_path / "history.png"
    code, out, _ = cli(capsys, "--url", api.url, "plot", study_id, "history", "-o", str(png))
    assert code == 0 and out.strip() == str(png) and is_png_with_content(png.read_bytes())
    code, _, err = cli(capsys, "--url", api.url, "plot", study_id, "bogus")
    assert code == 2 and "invalid choice" in err
    code, _, err = cli(capsys, "--url", api.url, "plot", study_id, "range")  # a known plot:
    assert code == 3 and "no learning-rate range test" in err  # 2 epochs: too short for one

    code, _, err = cli(capsys, "--url", api.url, "cancel", study_id)
    assert code == 3 and "409 Conflict" in err and "already completed" in err


def test_cli_wait_exits_1_when_the_study_is_cancelled(api: Api, tmp_path: Path) -> None:
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps({"name": "doomed", "n_trials": 2, "task": TINY_TASK}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "submit", str(spec), "--wait", "--poll", "0.2"],
        cwd=ROOT,
        env=cli_env(api.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Client(api.url) as client:
            wait_for(lambda: any(True for _ in client.studies()), 60, "the study to be created")
            study = next(iter(client.studies()))
            assert study.cancel()["status"] == "cancelled"  # no worker: it was still queued
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert out.strip() == study.id and f"study {study.id} cancelled" in err


def test_cli_a_study_with_no_completed_trial_exits_1_with_the_reasons(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both trials of a 2-trial study fail (its data file is gone): `submit --wait` and
    `status` exit 1 and say why (it used to be "completed", exit 0)."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(
        data,
        x_train=rng.normal(size=(64, 4)),
        y_train=np.arange(64) % 2,
        x_val=rng.normal(size=(16, 4)),
        y_val=np.arange(16) % 2,
    )
    with Client(api.url) as client:
        dataset = client.upload_dataset(data)["id"]
    for stored in api.data_dir.rglob("*.npz"):
        stored.unlink()
    spec = tmp_path / "study.json"
    task = {**TINY_TASK, "dataset": dataset, "epochs": 1, "batch_size": 16}
    body = {"n_trials": 2, "strategies": ["constant"], "range_test": False, "task": task}
    spec.write_text(json.dumps(body))
    with worker_thread(api):
        code, out, err = cli(
            capsys, "--url", api.url, "submit", str(spec), "--wait", "--poll", "0.2", "-q"
        )
    study_id = out.strip()
    assert code == 1, err
    assert f"study {study_id} failed: no trial completed (2 failed): " in err
    code, out, err = cli(capsys, "--url", api.url, "status", study_id)
    assert code == 1 and "failed" in out and "no trial completed" in err


def test_cli_bad_spec_exits_3_with_the_field_errors(api: Api, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"n_trials": 0, "strategies": ["bogus"], "task": {"epochs": 0}}))
    result = cli_process("submit", str(spec), url=api.url)
    assert result.returncode == 3, result.stderr
    assert f"422 {HTTPStatus(422).phrase}: the study spec is invalid" in result.stderr
    for field in ("n_trials", "strategies.0", "task.epochs"):
        assert f"  {field}: " in result.stderr
    assert result.stdout == ""


def test_cli_unreachable_api_exits_4() -> None:
    result = cli_process("--url", f"http://127.0.0.1:{closed_port()}", "status", "abc")
    assert result.returncode == 4, result.stderr
    assert "cannot reach" in result.stderr


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = ["--url", f"http://127.0.0.1:{closed_port()}"]
    assert cli(capsys, "submit")[0] == 2
    code, _, err = cli(capsys, *nowhere, "submit", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    code, _, err = cli(capsys, *nowhere, "submit", str(broken))
    assert code == 2 and "not valid YAML" in err
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    code, _, err = cli(capsys, *nowhere, "submit", str(listed))
    assert code == 2 and "must hold a mapping" in err
    code, _, err = cli(capsys, *nowhere, "submit", str(EXAMPLES / "digits.yaml"), "--set", "x")
    assert code == 2 and "KEY=VALUE" in err
    assert cli(capsys, "best", "abc", "--format", "xml")[0] == 2
    code, _, err = cli(capsys, *nowhere, "datasets", "upload", str(tmp_path / "none.csv"))
    assert code == 2 and "cannot read" in err


def test_cli_datasets_upload_list_and_api_errors(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    wine = str(EXAMPLES / "wine.csv")
    code, out, err = cli(
        capsys,
        "--url",
        api.url,
        "datasets",
        "upload",
        wine,
        "--target",
        "cultivar",
        "--name",
        "wine",
    )
    assert code == 0, err
    dataset_id = out.strip()
    assert "3 classes" in err and dataset_id in err

    code, out, _ = cli(capsys, "--url", api.url, "datasets", "list")
    header, row = out.strip().splitlines()
    assert header.split()[:4] == ["id", "name", "format", "task"]
    assert row.split()[:5] == [dataset_id, "wine", "csv", "classification", "3"]

    code, _, err = cli(capsys, "--url", api.url, "datasets", "upload", wine)
    assert code == 3 and "  target: " in err  # a CSV needs its target column
    code, _, err = cli(capsys, "--url", api.url, "status", "0123456789abcdef")
    assert code == 3 and "404 Not Found" in err


def test_cli_models_upload_list_and_a_refused_file(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.keras_files import DENSE, archive, sequential

    good, bad = tmp_path / "net.keras", tmp_path / "bad.keras"
    good.write_bytes(archive(sequential(DENSE)))
    bad.write_bytes(b"not a zip")
    code, out, err = cli(capsys, "--url", api.url, "models", "upload", str(good), "--name", "net")
    assert code == 0, err
    model_id = out.strip()
    assert len(model_id) == 32 and f"kind: keras_file, id: {model_id}" in err
    code, out, _ = cli(capsys, "models", "list", "--url", api.url)
    header, row = out.strip().splitlines()
    assert header.split()[:4] == ["id", "name", "class", "input"]
    assert row.split()[:4] == [model_id, "net", "Sequential", "8"]
    code, _, err = cli(capsys, "--url", api.url, "models", "upload", str(bad))
    assert code == 3 and "file: not a .keras file" in err
    with Client(api.url) as client:
        assert [m["id"] for m in client.models()] == [model_id]
        assert client.model(model_id)["name"] == "net"


def test_cli_sends_the_token_from_flag_or_environment(
    start_api: StartApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import tokens

    with start_api(auth=True) as running:
        engine = store.make_engine(running.database_url)
        try:
            with store.session_factory(engine)() as session:
                token = tokens.create_token(session, "alice")
        finally:
            engine.dispose()
        code, _, err = cli(capsys, "--url", running.url, "datasets", "list")
        assert code == 3 and "401 Unauthorized" in err
        assert cli(capsys, "--url", running.url, "datasets", "list", "--token", token)[0] == 0
        monkeypatch.setenv("LRSEARCH_URL", running.url)
        monkeypatch.setenv("LRSEARCH_TOKEN", token)
        code, out, _ = cli(capsys, "datasets", "list")
        assert code == 0 and out.split() == [
            "id",
            "name",
            "format",
            "task",
            "classes",
            "train",
            "val",
            "input",
            "created",
        ]


# --- examples ----------------------------------------------------------------------------------


def test_every_example_is_a_valid_spec_the_api_accepts(api: Api) -> None:
    with Client(api.url) as client:
        wine = client.upload_dataset(EXAMPLES / "wine.csv", target="cultivar", name="wine")
        specs = {
            "digits.yaml": load_spec(EXAMPLES / "digits.yaml"),
            "csv_upload.yaml": load_spec(
                EXAMPLES / "csv_upload.yaml", {"task.dataset": wine["id"]}
            ),
            "user_model.yaml": load_spec(EXAMPLES / "user_model.yaml"),
        }
        parsed = {name: parse_spec(spec) for name, spec in specs.items()}
        assert parsed["digits.yaml"].task.dataset == "digits"
        assert parsed["csv_upload.yaml"].task.dataset == wine["id"]
        model = parsed["user_model.yaml"].task.model
        assert model.kind == "keras_json" and json.loads(model.config)["class_name"] == "Sequential"
        for spec in specs.values():  # the API's checks too (datasets, ranges against the run)
            study = client.submit(spec)
            assert study.cancel()["status"] == "cancelled"
        unreplaced = load_spec(EXAMPLES / "csv_upload.yaml")
        with pytest.raises(ApiError) as placeholder:
            client.submit(unreplaced)
        assert [e.field for e in placeholder.value.errors] == ["task.dataset"]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
