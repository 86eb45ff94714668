"""Running coalmine like a real operator: least privilege, high availability, metrics.

The operator runs as its own ServiceAccount with a token from the TokenRequest API, so the real
API server enforces the ClusterRole from deploy/; two replicas share the work through peering.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from coalmine import kube as k
from coalmine.kube import ForbiddenError, Kube
from devenv import cluster, paths
from devenv.manifests import deployment
from devenv.operator import OperatorProcess
from devenv.waiting import wait_for

from .conftest import Cluster
from .rollouts import Rollouts, adopting_manifest, manifest, router_weight, user_routing_object

DEPLOY = paths.REPO_ROOT / "deploy"
RBAC = (
    DEPLOY / "operator" / "namespace.yaml",
    DEPLOY / "operator" / "serviceaccount.yaml",
    DEPLOY / "operator" / "peering.yaml",
    DEPLOY / "clusterrole.yaml",
    DEPLOY / "clusterrolebinding.yaml",
)
SECRETS = k.Resource("", "v1", "secrets", "Secret")
STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 50},
    {"pause": {}},
]


@pytest.fixture(scope="module")
def service_account_kubeconfig(kube: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig holding a token of the operator's own ServiceAccount (TokenRequest API)."""
    for manifest_file in RBAC:
        cluster.kubectl("apply", "--server-side", "-f", str(manifest_file))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=30s"
    )
    token = cluster.kubectl(
        "create", "token", "coalmine", "-n", "coalmine-system", "--duration=2h"
    ).strip()
    ca = base64.b64encode((paths.STATE_DIR / "pki" / "ca.crt").read_bytes()).decode()
    target = tmp_path_factory.mktemp("sa") / "kubeconfig"
    target.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": paths.API_SERVER_URL,
                            "certificate-authority-data": ca,
                        },
                    }
                ],
                "users": [{"name": "coalmine", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "coalmine"}}],
                "current-context": "sa",
            }
        )
    )
    return target


def metrics_of(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def step_numbers(rollouts: Rollouts, name: str) -> list[str]:
    return [m.split(" ")[1] for r, m in rollouts.events(name) if r == "StepCompleted"]


@pytest.mark.usefixtures("quiet_session_operator")
def test_the_operator_works_with_only_its_cluster_role(
    kube: Cluster, namespace: str, rollouts: Rollouts, service_account_kubeconfig: Path
) -> None:
    sa = Kube.connect(str(service_account_kubeconfig))
    with pytest.raises(ForbiddenError):
        sa.list(SECRETS, namespace)
    with pytest.raises(ForbiddenError):
        sa.create(SECRETS, namespace, {"metadata": {"name": "stolen"}, "stringData": {"a": "b"}})

    process = OperatorProcess({"KUBECONFIG": str(service_account_kubeconfig)})
    try:
        user_routing_object(kube, namespace, "gatewayAPI", "shop")
        rollouts.create(manifest("shop", "v1", router="gatewayAPI", steps=STEPS))
        rollouts.wait_phase("shop", "Healthy")
        rollouts.set_template("shop", "v2")
        canary = rollouts.wait_phase("shop", "Paused", currentStepIndex=1)["canaryRevision"]
        rollouts.control("shop", "promote-full")
        rollouts.wait_phase("shop", "Healthy", stableRevision=canary)
        assert router_weight(kube, namespace, "gatewayAPI", "shop") == 0
        # The incident controls and adoption need nothing beyond the ClusterRole either.
        token = rollouts.control("shop", "restart")
        rollouts.wait("shop", lambda s: s["controls"].get("restart") == token, "restart handled")
        _adopt_with_only_the_cluster_role(kube, namespace, rollouts)
        _refuse_a_taken_service_with_only_the_cluster_role(kube, namespace, rollouts)
        rollouts.delete("shop")
        wait_for(rollouts.names, until=lambda n: n == [], timeout=30, message="finalized")
    finally:
        process.stop()
    # A namespace an earlier test left terminating refuses new objects with a 403 too (the
    # NamespaceLifecycle admission, not RBAC): this operator serves every namespace.
    log = "\n".join(
        line
        for line in process.log.read_text().splitlines()
        if "because it is being terminated" not in line
    )
    assert "Forbidden" not in log, process.tail()
    assert " 403" not in log, process.tail()


def _adopt_with_only_the_cluster_role(kube: Cluster, namespace: str, rollouts: Rollouts) -> None:
    """A Deployment adopted, scaled down, then back up when its rollout is deleted."""
    kube.raw.create(k.DEPLOYMENTS, namespace, deployment("plain", "example.com/plain:1", 2))
    rollouts.create(adopting_manifest("adopter", "plain"))
    rollouts.wait("adopter", lambda s: (s.get("adoption") or {}).get("replicas") == 0, "scaled")
    rollouts.delete("adopter")
    wait_for(rollouts.names, until=lambda n: "adopter" not in n, timeout=60, message="let go")
    plain = kube.raw.fetch(k.DEPLOYMENTS, namespace, "plain") or {}
    assert plain["spec"]["replicas"] == 2
    assert "coalmine.dev/adopted-by" not in plain["metadata"].get("labels", {})


def _refuse_a_taken_service_with_only_the_cluster_role(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    """A Service name already taken: the operator reads who has it (a GET, past its cache) to
    say so on the rollout; the shipped role once lacked that verb, and the rollout said nothing."""
    kube.raw.create(
        k.SERVICES,
        namespace,
        {
            "metadata": {"name": "taken"},
            "spec": {"selector": {"app": "elsewhere"}, "ports": [{"port": 80}]},
        },
    )
    rollouts.create(manifest("taken", "v1"))
    rollouts.wait(
        "taken",
        lambda s: any(
            c.get("type") == "Ready"
            and c.get("status") == "False"
            and c.get("reason") == "OwnershipConflict"
            for c in s.get("conditions") or []
        ),
        "Ready=False with reason OwnershipConflict",
    )
    rollouts.delete("taken")
    wait_for(rollouts.names, until=lambda n: "taken" not in n, timeout=30, message="finalized")


@pytest.mark.usefixtures("quiet_session_operator")
def test_two_replicas_one_active_and_the_other_takes_over(
    kube: Cluster, namespace: str, rollouts: Rollouts, service_account_kubeconfig: Path
) -> None:
    common = {"COALMINE_STANDALONE": "false", "COALMINE_PEERING_LIFETIME": "5"}
    active = OperatorProcess(
        {**common, "COALMINE_PEERING_PRIORITY": "200", "COALMINE_METRICS_PORT": "9511"}
    )
    # Started together, the harder case: each may not see the other's keep-alive yet.
    standby = OperatorProcess(
        {**common, "COALMINE_PEERING_PRIORITY": "100", "COALMINE_METRICS_PORT": "9512"}
    )
    try:
        wait_for(
            lambda: cluster.kubectl("get", "clusterkopfpeering", "coalmine", "-o", "json"),
            until=lambda peering: '"priority": 100' in peering and '"priority": 200' in peering,
            timeout=30,
            message="both replicas' keep-alives in the peering object",
        )
        user_routing_object(kube, namespace, "gatewayAPI", "shop")
        rollouts.create(manifest("shop", "v1", router="gatewayAPI", steps=STEPS))
        rollouts.wait_phase("shop", "Healthy")
        rollouts.set_template("shop", "v2")
        rollouts.wait_phase("shop", "Paused", currentStepIndex=1)
        ours = f'namespace="{namespace}"'
        assert ours in metrics_of(9511), "the active replica reports the rollout"
        assert ours not in metrics_of(9512), "the standby acted on the rollout"
        assert sample(metrics_of(9512), "coalmine_reconciles_total") == 0, "the standby acted"

        active.kill()
        killed = time.monotonic()
        rollouts.control("shop", "promote")
        rollouts.wait_phase("shop", "Paused", currentStepIndex=3, timeout=60)
        takeover = time.monotonic() - killed
        print(f"takeover: {takeover:.1f} s from SIGKILL of the active replica to weight confirmed")
        assert router_weight(kube, namespace, "gatewayAPI", "shop") == 50
        assert sample(metrics_of(9512), "coalmine_reconciles_total") > 0

        rollouts.control("shop", "promote")
        rollouts.wait_phase("shop", "Healthy", timeout=60)
        # Each step exactly once. (Events carry whole seconds: two steps completed within one
        # second may list in either order, hence sorted.)
        assert sorted(step_numbers(rollouts, "shop")) == ["1/4", "2/4", "3/4", "4/4"]
    finally:
        active.kill()
        standby.stop()


def test_prometheus_scrapes_the_operator_metrics(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    """The operator's /metrics, scraped by the cluster's Prometheus, name each rollout."""
    rollouts.create(manifest("shop", "v1", steps=STEPS))
    rollouts.wait_phase("shop", "Healthy")
    query = f'coalmine_rollout_phase{{namespace="{namespace}",name="shop",phase="Healthy"}}'

    def scraped() -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": query})
        url = f"{kube.prometheus_url}/api/v1/query?{params}"
        with urllib.request.urlopen(url, timeout=5) as response:
            result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
        return result

    series = wait_for(
        scraped,
        until=lambda r: bool(r) and float(r[0]["value"][1]) == 1,
        timeout=45,
        message=f"Prometheus to return {query}",
    )
    assert series[0]["metric"]["job"] == "coalmine-operator"


@pytest.mark.usefixtures("quiet_session_operator")
def test_health_endpoint_and_json_logs_naming_the_rollout(
    namespace: str, rollouts: Rollouts
) -> None:
    process = OperatorProcess({"COALMINE_HEALTH_PORT": "8089", "COALMINE_LOG_LEVEL": "DEBUG"})
    try:

        def healthz() -> int:
            with urllib.request.urlopen("http://127.0.0.1:8089/healthz", timeout=2) as r:
                status: int = r.status
            return status

        assert wait_for(healthz, until=lambda s: s == 200, timeout=30, message="/healthz") == 200
        rollouts.create(manifest("shop", "v1", steps=STEPS))
        rollouts.wait_phase("shop", "Healthy")
    finally:
        process.stop()
    lines = [json.loads(line) for line in process.log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about = [line for line in lines if line.get("rollout") == f"{namespace}/shop"]
    assert about, "log lines about the rollout name it"


# The session operator is the default shard (the unlabelled rollouts); the fixture installs
# the peering CRD from deploy/.
@pytest.mark.usefixtures("operator", "service_account_kubeconfig")
def test_two_shards_split_the_rollouts_each_with_its_own_peering(
    kube: Cluster, namespace: str, rollouts: Rollouts
) -> None:
    """Issue 10, item 4: COALMINE_SHARD=<value> serves only rollouts labelled
    coalmine.dev/shard=<value>, and the default shard (the session operator here) only the
    unlabelled ones; each shard elects its active replica in a peering object of its own."""
    common = {"COALMINE_STANDALONE": "false", "COALMINE_PEERING_LIFETIME": "5"}
    shards = {
        shard: OperatorProcess(
            {**common, "COALMINE_SHARD": shard, "COALMINE_METRICS_PORT": str(port)}
        )
        for shard, port in (("blue", 9521), ("green", 9522))
    }
    try:
        names = {"blue-app": "blue", "green-app": "green", "plain-app": None}
        for name, shard in names.items():
            body = manifest(name, "v1", steps=STEPS)
            if shard:
                body["metadata"]["labels"] = {"coalmine.dev/shard": shard}
            rollouts.create(body)
        for name in names:
            rollouts.wait_phase(name, "Healthy")
        for shard, port in (("blue", 9521), ("green", 9522)):
            served = metrics_of(port)
            for name, owner in names.items():
                listed = f'namespace="{namespace}",phase="Healthy"' in served and name in served
                assert listed == (owner == shard), f"shard {shard} and rollout {name}"
            peering = cluster.kubectl(
                "get", "clusterkopfpeering", f"coalmine-{shard}", "-o", "json"
            )
            assert json.loads(peering)["status"], f"shard {shard} keeps its own peering"

        shards["green"].stop()
        for name in names:
            rollouts.set_template(name, "v2")
        rollouts.wait_phase("blue-app", "Paused", currentStepIndex=1)
        rollouts.wait_phase("plain-app", "Paused", currentStepIndex=1)
        time.sleep(3)
        assert "canaryRevision" not in rollouts.status("green-app"), "nobody else serves green"
        shards["green"].start()
        rollouts.wait_phase("green-app", "Paused", currentStepIndex=1, timeout=60)
    finally:
        for process in shards.values():
            process.stop()
