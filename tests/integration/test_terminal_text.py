"""Names and other text a terminal shows: a study name must be printable (as dataset and model
names are), and the CLI escapes control characters in whatever the server sends back (old
rows, failure reasons, error details), so a name cannot retitle the window, clear the screen
or forge output lines."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from search import store
from service.cli import main
from tests.integration.test_write_guards import add_failed_trial, running_api

HOSTILE = "evil\x1b]0;PWNED\x07\x1b[2J\r\nfake\u202e"
RAW = ("\x1b", "\x07", "\r", "\u202e")


@pytest.mark.parametrize("name", [HOSTILE, "tab\there", "bidi\u202eexe.txt", "bell\x07"])
def test_a_study_name_must_be_printable(app_client: TestClient, name: str) -> None:
    refused = app_client.post("/v1/studies", json={"name": name, "n_trials": 2})
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [
        {"field": "name", "message": "must be printable text (no NUL or control characters)"}
    ]
    ok = app_client.post("/v1/studies", json={"name": "Café run 1 — ü", "n_trials": 2})
    assert ok.status_code == 201, ok.text


def _hostile_old_row(db_url: str, study_id: str) -> None:
    """What a row written before the rule (or by hand) may hold: escapes in name and error,
    and a failed trial whose reason has them."""
    engine = store.make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.update(store.Study)
                .where(store.Study.id == study_id)
                .values(name=HOSTILE, status="failed", error=HOSTILE)
            )
    finally:
        engine.dispose()
    add_failed_trial(db_url, study_id, HOSTILE)


def test_the_cli_escapes_control_characters_in_server_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_api(tmp_path) as url:
        study_id = httpx.post(f"{url}/v1/studies", json={"n_trials": 2}).json()["id"]
        _hostile_old_row(f"sqlite:///{tmp_path / 'api.db'}", study_id)
        assert main(["--url", url, "status", study_id]) == 1
        status = capsys.readouterr()
        assert main(["--url", url, "trials", study_id]) == 0
        trials = capsys.readouterr()
        spec = tmp_path / "bad.json"
        spec.write_text('{"n_trials": 2, "bogus\\u001b[2J\\r\\nfake": 1}')
        assert main(["--url", url, "submit", str(spec)]) == 3
        refused = capsys.readouterr()
    for shown in (status.out, status.err, trials.out, refused.err):
        assert not any(c in shown for c in RAW), repr(shown)
    assert "name       evil\\x1b]0;PWNED\\x07\\x1b[2J\\r\\nfake\\u202e" in status.out
    assert "failed: evil\\x1b]0;PWNED" in status.err
    assert trials.out.splitlines()[1].endswith("evil\\x1b]0;PWNED\\x07\\x1b[2J fake\\u202e")
    assert "  bogus\\x1b[2J\\r\\nfake: " in refused.err
