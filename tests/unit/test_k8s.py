"""The Kubernetes manifests (deploy/k8s), checked without a cluster.

`kubectl kustomize` renders the base and every overlay; every core resource validates against
Kubernetes' own schemas in strict mode, offline (`kubernetes-validate`, no unknown field,
every type right); KEDA's objects, which those schemas lack, are checked structurally. Then
the rendered manifests are held against the code: every `lrsearch ...` command parses with
the real CLI, probes hit the app's routes, the autoscaler's query is the store's own
statement, env names are real settings; the pods are non-root on read-only root filesystems,
with limits, and wait for the migration Job. The workers, KEDA and the network policies:
test_k8s_scaling.py. Without kubectl or kubernetes-validate the tests skip and say why,
except under CI=true, where they fail (CI must have both).
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from tests.unit.k8s_manifests import (
    LRSEARCH_COMPONENTS,
    ROOT,
    SCHEMA_VERSIONS,
    SECRET_TEMPLATE,
    TARGETS,
    component,
    config_map,
    containers,
    env_of,
    find,
    find_workloads,
    lrsearch_workloads,
    one,
    parse_lrsearch,
    pod_spec,
    render,
    validator,
)
from tests.unit.test_compose import api_paths, env_read_by_code, settings_env_names

# === rendering and schemas ==================================================================


@pytest.mark.parametrize("target", TARGETS)
def test_renders_with_unique_names(target: str) -> None:
    docs = render(target)
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), keys
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "lrsearch"
    }


@pytest.mark.parametrize("target", TARGETS)
def test_core_resources_validate_strictly_against_kubernetes_schemas(target: str) -> None:
    kv = validator()
    docs = render(target)
    versions = [kv.utils.latest_version() if v == "latest" else v for v in SCHEMA_VERSIONS]
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: not in Kubernetes' schemas (checked below)
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc.message}")
        checked += 1
    assert checked >= 12


def test_secret_template_validates_and_nothing_secret_is_rendered() -> None:
    kv = validator()
    template = yaml.safe_load(SECRET_TEMPLATE.read_text())
    kv.validate(template, SCHEMA_VERSIONS[0], strict=True)
    assert template["metadata"]["name"] == "lrsearch-database"
    assert set(template["stringData"]) == {"url", "postgres-password"}
    assert all("CHANGE-ME" in v for v in template["stringData"].values()), "placeholders only"
    for target in TARGETS:
        assert not find(render(target), "Secret"), f"{target} must not carry (or reset) a Secret"


def test_database_url_form_suits_lrsearch_and_keda() -> None:
    """KEDA's driver (pgx) takes postgresql://, not SQLAlchemy's postgresql+psycopg://;
    lrsearch turns the first into the second."""
    from search import store

    url = yaml.safe_load(SECRET_TEMPLATE.read_text())["stringData"]["url"]
    assert url.startswith("postgresql://")
    assert store.normalise_url(url).startswith("postgresql+psycopg://")
    assert ".svc.cluster.local:" in url, "KEDA resolves the host from its own namespace"


# === the code the manifests must agree with =================================================


@pytest.mark.parametrize("target", TARGETS)
def test_lrsearch_commands_parse_with_the_real_cli(target: str) -> None:
    seen = set()
    for workload in lrsearch_workloads(render(target)):
        for container in containers(workload):
            assert "command" not in container, "the image's entrypoint is `lrsearch`"
            args = parse_lrsearch(container["args"])
            seen.add((args.command, getattr(args, "action", None)))
    assert {("api", None), ("worker", None), ("db", "upgrade"), ("db", "wait")} <= seen


@pytest.mark.parametrize("target", TARGETS)
def test_environment_names_are_real_settings(target: str) -> None:
    docs = render(target)
    known = set(settings_env_names()) | env_read_by_code()
    for workload in lrsearch_workloads(docs):
        for container in containers(workload):
            names = {k for k in env_of(container, docs) if k.startswith("LRSEARCH_")}
            assert not names - known, f"{container['name']}: {sorted(names - known)}"


def test_env_validates_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import Settings

    for var in list(os.environ):
        if var.startswith("LRSEARCH_") or var == "DATABASE_URL":
            monkeypatch.delenv(var)
    for key, value in config_map(render("base")).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert str(settings.data_dir) == "/data" and settings.auth is True


def test_api_probes_hit_the_apps_routes() -> None:
    api = one(render("base"), "Deployment", "lrsearch-api")
    (container,) = pod_spec(api)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = parse_lrsearch(container["args"])
    assert args.host == "0.0.0.0" and ports["http"] == args.port == 8000
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= api_paths()
    service = one(render("base"), "Service", "lrsearch-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


# === pods: limits, non-root, read-only root filesystem ======================================


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_requests_and_limits(target: str) -> None:
    for workload in find_workloads(render(target)):
        for container in containers(workload):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), (
                    f"{workload['metadata']['name']}/{container['name']}: no {kind}"
                )


def dockerfile_uids() -> set[int]:
    text = (ROOT / "Dockerfile").read_text()
    return {int(uid) for uid in re.findall(r"useradd\b[^\n]*--uid (\d+)", text)}


@pytest.mark.parametrize("target", TARGETS)
def test_pods_run_non_root_on_a_read_only_root_filesystem(target: str) -> None:
    docs = render(target)
    assert dockerfile_uids() == {10001}, "the images' user (Dockerfile) is uid 10001"
    for workload in find_workloads(docs):
        spec, name = pod_spec(workload), workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        if component(workload) in LRSEARCH_COMPONENTS:
            assert spec["securityContext"]["runAsUser"] == 10001, name
        for container in containers(workload):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be writable"


def test_caches_are_written_under_tmp() -> None:
    """Matplotlib (the API's plots), Keras and anything keyed on HOME write under /tmp."""
    env = config_map(render("base"))
    for name in ("MPLCONFIGDIR", "KERAS_HOME", "HOME"):
        assert env[name].startswith("/tmp"), name


def test_shared_data_volume_is_read_write_many_at_the_data_dir() -> None:
    docs = render("base")
    (pvc,) = find(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert config_map(docs)["LRSEARCH_DATA_DIR"] == "/data"
    for name in ("lrsearch-api", "lrsearch-worker"):
        workload = one(docs, "Deployment", name)
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod_spec(workload)["volumes"]
            if "persistentVolumeClaim" in v
        }
        main = pod_spec(workload)["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
        assert claims[mounts["/data"]] == pvc["metadata"]["name"], name


# === the migration Job and the wait ========================================================


def test_the_migration_job_upgrades_and_every_pod_waits_for_it() -> None:
    docs = render("base")
    job = one(docs, "Job", "lrsearch-migrate")
    (migrate,) = pod_spec(job)["containers"]
    assert (parse_lrsearch(migrate["args"]).command, migrate["args"][1]) == ("db", "upgrade")
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"]["backoffLimit"] >= 3, "a database still starting must not fail it"
    url = env_of(migrate, docs)["LRSEARCH_DATABASE_URL"]
    for workload in find(docs, "Deployment"):
        (wait,) = pod_spec(workload)["initContainers"]
        args = parse_lrsearch(wait["args"])
        assert (args.command, args.action) == ("db", "wait"), workload["metadata"]["name"]
        assert args.timeout >= 300
        assert env_of(wait, docs)["LRSEARCH_DATABASE_URL"] == url, "the same database"
        main = pod_spec(workload)["containers"][0]
        assert wait["image"] == main["image"], "waits with the code it will run"
