"""Issue 14 item 12: writes are refused before their body is read (a foreign Origin with
auth off, no token with auth on); `lrsearch trials` shows why trials failed; a closed stdout
(`| head -1`) ends the CLI quietly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from search import store
from service.cli import main
from tests.conftest import AuthClient, ClientFactory
from tests.servers import ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextmanager
def running_api(tmp_path: Path, **overrides: Any) -> Iterator[str]:
    """create_app under uvicorn in a thread on a free loopback port; its URL."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'api.db'}",
        "data_dir": tmp_path / "data",
        **overrides,
    }
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: uvicorn would bind its log handlers to the sys.stderr of the moment,
    # which under capsys is a capture stream closed after the test (later tests then fail)
    config = uvicorn.Config(create_app(Settings(**values)), log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# --- (d) cross-site writes with auth off -----------------------------------------------------


def test_a_write_from_another_origin_is_refused_with_auth_off(app_client: TestClient) -> None:
    spec = {"n_trials": 2, "task": {"epochs": 1}}
    evil = app_client.post("/v1/studies", json=spec, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403, evil.text
    body = evil.json()
    assert body["type"].endswith("cross-site-request") and "evil.example" in body["detail"]
    upload = app_client.post(
        "/v1/datasets",
        files={"file": ("x.csv", b"a,b\n1,2\n", "text/csv")},
        headers={"Origin": "null"},
    )
    assert upload.status_code == 403
    assert app_client.get("/v1/studies").json()["items"] == [], "nothing was created"
    same = app_client.post("/v1/studies", json=spec, headers={"Origin": "http://localhost"})
    assert same.status_code == 201, same.text
    assert app_client.post("/v1/studies", json=spec).status_code == 201  # CLI: no Origin
    reads = app_client.get("/v1/studies", headers={"Origin": "https://evil.example"})
    assert reads.status_code == 200


# --- DNS rebinding with auth off: only loopback names, IP addresses and allowed names ----------

REBOUND = {"Host": "evil.example:8765", "Origin": "http://evil.example:8765"}


def test_a_rebound_host_name_is_refused_on_reads_and_writes_with_auth_off(
    app_client: TestClient,
) -> None:
    spec = {"n_trials": 2, "task": {"epochs": 1}}
    for response in (
        app_client.get("/v1/studies", headers=REBOUND),
        app_client.post("/v1/studies", json=spec, headers=REBOUND),
        app_client.post(
            "/v1/datasets", files={"file": ("x.csv", b"a,b\n1,2\n", "text/csv")}, headers=REBOUND
        ),
    ):
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["type"].endswith("untrusted-host"), body
        assert "evil.example:8765" in body["detail"] and "LRSEARCH_ALLOWED_HOSTS" in body["detail"]
    assert app_client.get("/v1/studies").json()["items"] == [], "nothing was created"


@pytest.mark.parametrize(
    "host",
    [
        "localhost:8765",
        "LOCALHOST.",
        "127.0.0.1:8000",
        "127.8.9.10",
        "[::1]:8765",
        "10.1.2.3:8000",  # a kubelet probe: the pod's IP
        "[fd00::7]",
    ],
)
def test_loopback_names_and_ip_addresses_are_answered_with_auth_off(
    app_client: TestClient, host: str
) -> None:
    created = app_client.post(
        "/v1/studies", json={"n_trials": 2}, headers={"Host": host, "Origin": f"http://{host}"}
    )
    assert created.status_code == 201, created.text
    assert app_client.get("/v1/studies", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io"])
def test_names_that_merely_look_local_are_refused(app_client: TestClient, host: str) -> None:
    assert app_client.get("/healthz", headers={"Host": host}).status_code == 403


def test_a_name_in_allowed_hosts_is_answered(client_factory: ClientFactory) -> None:
    with client_factory(allowed_hosts="api.internal, Dash.Example") as client:
        for host in ("api.internal:8000", "dash.example"):
            created = client.post("/v1/studies", json={"n_trials": 2}, headers={"Host": host})
            assert created.status_code == 201, created.text
        refused = client.get("/v1/studies", headers={"Host": "other.internal:8000"})
        assert refused.status_code == 403


def test_with_auth_on_the_host_name_is_not_checked(auth_client: AuthClient) -> None:
    client = auth_client.client
    headers = {**REBOUND, **auth_client.headers()}
    assert client.get("/v1/studies", headers=headers).status_code == 200
    created = client.post("/v1/studies", json={"n_trials": 2}, headers=headers)
    assert created.status_code == 201, created.text
    anonymous = client.post("/v1/studies", json={"n_trials": 2}, headers=REBOUND)
    assert anonymous.status_code == 401, "the token, not the Host, protects an auth-on API"


# --- (e) authentication before the body ------------------------------------------------------


def test_an_anonymous_upload_gets_its_401_before_the_body_is_read(tmp_path: Path) -> None:
    declared = 45 * 1024 * 1024
    with running_api(tmp_path, auth=True) as url:
        port = int(url.rsplit(":", 1)[1])
        for auth in ("", "Authorization: Bearer lrs_not_a_token\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(
                    (
                        "POST /v1/datasets HTTP/1.1\r\nHost: x\r\n"
                        "Content-Type: multipart/form-data; boundary=b\r\n"
                        f"{auth}Content-Length: {declared}\r\n\r\n"
                    ).encode()
                    + b"--b\r\n"
                )
                # Only 5 bytes of 45 MiB were sent: an answer now means nothing waited for them.
                head = conn.recv(4096).decode(errors="replace")
            assert head.startswith("HTTP/1.1 401"), head[:200]
            assert "www-authenticate: bearer" in head.lower()


# --- (c) and (b): the CLI --------------------------------------------------------------------


def add_failed_trial(db_url: str, study_id: str, reason: str) -> None:
    """A failed trial of the study, as a worker leaves one, with this reason."""
    storage = store.optuna_storage(db_url)
    try:
        study = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage)
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL,
                user_attrs={"strategy": "constant", "fail_reason": reason, "fail_kind": "error"},
            )
        )
    finally:
        storage.engine.dispose()


def test_trials_shows_why_trials_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_api(tmp_path) as url:
        created = httpx.post(f"{url}/v1/studies", json={"n_trials": 2, "task": {"epochs": 1}})
        study_id = created.json()["id"]
        assert main(["--url", url, "trials", study_id]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["number", "state", "strategy", "value", "epochs", "seconds"]
        add_failed_trial(
            f"sqlite:///{tmp_path / 'api.db'}", study_id, "out of memory:\n  the model needs 9 GiB"
        )
        assert main(["--url", url, "trials", study_id]) == 0
        out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "reason"
    assert out[1].endswith("out of memory: the model needs 9 GiB"), out


def test_a_closed_stdout_ends_the_cli_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.pop("DATABASE_URL", None)
    with running_api(tmp_path) as url:
        study_id = httpx.post(f"{url}/v1/studies", json={"n_trials": 2}).json()["id"]
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written, as after `head -1`
        try:
            done = subprocess.run(
                [sys.executable, "-m", "service.cli", "--url", url, "status", study_id],
                cwd=ROOT,
                env=env,
                stdout=write,
                stderr=subprocess.PIPE,
                timeout=60,
            )
        finally:
            os.close(write)
    err = done.stderr.decode(errors="replace")
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert done.returncode == 141
