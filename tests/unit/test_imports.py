"""Import boundaries: the API process never loads TensorFlow/Keras; `search` never imports
`service`."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_API_SCRIPT = textwrap.dedent(
    """
    import sys
    from fastapi.testclient import TestClient
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(database_url=f"sqlite:///{sys.argv[1]}/api.db", data_dir=sys.argv[1])
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        created = client.post("/v1/studies", json={"n_trials": 3, "task": {"epochs": 2}})
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        for path in ("/healthz", "/readyz", "/metrics", "/v1/studies", "/v1/datasets",
                     f"/v1/studies/{study_id}", f"/v1/studies/{study_id}/trials"):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
        assert client.get(f"/v1/studies/{study_id}/best").status_code == 409
        assert client.post(f"/v1/studies/{study_id}/cancel").status_code == 200
    heavy = sorted(m for m in sys.modules
                   if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    assert not heavy, heavy[:10]
    print("ok")
    """
)


def test_api_process_never_imports_tensorflow_or_keras(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _API_SCRIPT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("ok")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_search_never_imports_service() -> None:
    files = sorted((ROOT / "search").rglob("*.py"))
    assert files
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imported_modules(path) if m == "service" or m.startswith("service.")
        )
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}
