"""deploy/k8s: the workers (grace period, GPUs, KEDA's scaling on the queue), the API's
disruption budget and the network policies, on the rendered manifests (see k8s_manifests)."""

from __future__ import annotations

import pytest

from tests.unit.k8s_manifests import (
    Doc,
    component,
    env_of,
    find,
    lrsearch_workloads,
    one,
    pod_spec,
    render,
)

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
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(gpu)[
        "tolerations"
    ]
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
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
POSTGRES_TRIGGER_METADATA = {
    "query",
    "targetQueryValue",
    "activationTargetQueryValue",
    "connectionFromEnv",
    "host",
    "port",
    "userName",
    "passwordFromEnv",
    "dbName",
    "sslmode",
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
        "connection",
        url_ref["name"],
        url_ref["key"],
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
        "name": "lrsearch-database",
        "key": "postgres-password",
    }
