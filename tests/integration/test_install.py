"""Installing coalmine as users do, and using it: the real image, run in the local cluster.

Each test installs the operator one documented way (``kubectl apply -k deploy/``, the namespaced
variant ``deploy/namespaced/``, ``helm install`` of ``charts/coalmine``), so it runs as users run
it: the image that `make image` builds, two replicas of the Deployment run by the pod runner as
podman containers on their pod IPs, with the ServiceAccount's token and nothing else (the real
API server enforces the RBAC), Ready only while their readiness probe passes. Then, like a user:

1. wait for the Deployment to be Available;
2. roll a CanaryRollout from v1 to v2 through Traefik under steady load: no request may fail;
3. at the canary's pause, delete the working replica's pod (`kubectl delete pod`) and promote:
   the standby must take over and finish the rollout (the takeover time is printed), and the
   Deployment must be Available again with a replacement;
4. read the operator's metrics through its Service (the Service's endpoints, as Prometheus'
   service discovery would: there is no kube-proxy here), which must report the rollout.

Only the CRDs stay installed afterwards: the session's other tests use them.

Needs podman and the image (`make test-image`, which `make test` runs): without podman these
tests are skipped, saying how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine import resources as r
from devenv import cluster, containers, paths, traefik
from devenv.loadgen import LoadGenerator
from devenv.waiting import wait_for

from .conftest import Cluster
from .gateway import one_request, pod_ips, wait_listening, wait_servers, wait_weights
from .rollouts import Rollouts, manifest, user_routing_object

pytestmark = [
    pytest.mark.skipif(
        shutil.which("podman") is None,
        reason="podman is missing, so the operator image cannot run: "
        "apt-get install podman runc mmdebstrap, then `make test-image`",
    ),
    pytest.mark.usefixtures("quiet_session_operator", "gateway_controller"),
]

SYSTEM_NAMESPACE = "coalmine-system"
IMAGE = "coalmine:dev"
CHART = paths.REPO_ROOT / "charts" / "coalmine"
DEPLOY = paths.REPO_ROOT / "deploy"
RELEASE = "coalmine"
STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
RATE = 100
#: The operator's pods may take this long to be Available: two containers start, import the
#: operator (a few seconds each on a loaded machine) and pass their readiness probe.
AVAILABLE_TIMEOUT_S = 120
#: A replica that dies is presumed gone when its keep-alive expires (10 s, the default), then
#: the standby resumes and reconciles: this bounds the whole takeover.
TAKEOVER_TIMEOUT_S = 60


@dataclass(frozen=True)
class Install:
    """One way to install coalmine, and to take it away again (the CRDs stay)."""

    name: str
    install: Callable[[], None]
    uninstall: Callable[[], None]
    serves: str | None
    """The one namespace the operator serves, or None for every namespace."""

    @property
    def peering(self) -> r.Resource:
        return r.KOPF_PEERINGS if self.serves else r.CLUSTER_KOPF_PEERINGS


def _delete_all_but_crds(rendered: str) -> None:
    """Delete what a kustomization holds, except its CRDs (deleting those deletes every
    CanaryRollout in the cluster) and its namespace (the next install reuses it: deleting a
    namespace takes the controller-manager long), and wait until the operator's pods are gone."""
    kept = [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] not in ("CustomResourceDefinition", "Namespace")
    ]
    cluster.kubectl(
        "delete",
        "--ignore-not-found",
        "--wait=false",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": kept}),
    )
    _wait_pods_gone()


def _wait_pods_gone() -> None:
    """Until the operator's pods are gone: each once its container has stopped."""
    wait_for(
        lambda: cluster.kubectl(
            "get",
            "pods",
            f"--namespace={SYSTEM_NAMESPACE}",
            "--output=name",
            "--selector=app.kubernetes.io/name=coalmine",
        ),
        until=lambda out: not out.strip(),
        timeout=60,
        message=f"the operator's pods in {SYSTEM_NAMESPACE} gone",
    )


def _kustomize(path: str, serves: str | None) -> Install:
    where = DEPLOY / path

    def install() -> None:
        print(f"\n  $ kubectl apply -k {where.relative_to(paths.REPO_ROOT)}/")
        cluster.kubectl("apply", "-k", str(where))

    def uninstall() -> None:
        _delete_all_but_crds(cluster.kubectl("kustomize", str(where)))

    return Install(
        f"kubectl apply -k {where.relative_to(paths.REPO_ROOT)}/", install, uninstall, serves
    )


def _helm(*args: str, timeout: float = 180) -> str:
    result = subprocess.run(
        [str(paths.binary("helm")), f"--kubeconfig={paths.KUBECONFIG}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def _helm_install() -> None:
    # What docs/install.md says, with helm's own wait for the Deployment to be ready.
    args = ["install", RELEASE, str(CHART), f"--namespace={SYSTEM_NAMESPACE}", "--create-namespace"]
    print(f"\n  $ helm {' '.join(args)} --wait")
    _helm(*args, "--wait", f"--timeout={AVAILABLE_TIMEOUT_S}s", timeout=AVAILABLE_TIMEOUT_S + 30)


def _helm_uninstall() -> None:
    _helm("uninstall", RELEASE, f"--namespace={SYSTEM_NAMESPACE}", "--wait", "--ignore-not-found")
    _wait_pods_gone()


INSTALLS = {
    "kustomize": _kustomize("", None),
    # deploy/namespaced/role.yaml serves the namespace `default` as shipped.
    "kustomize-namespaced": _kustomize("namespaced", "default"),
    "helm": Install("helm install", _helm_install, _helm_uninstall, None),
}


@pytest.fixture(scope="module")
def operator_image(kube: Cluster) -> Iterator[str]:
    """The image exists, and the cluster's pod runner can run it (a cluster started by an
    older checkout cannot). The operator's namespace goes when the module is done."""
    if not containers.images_present([IMAGE]):
        pytest.fail(f"no image {IMAGE} in podman: run `make test-image` (make test does)")
    pid = cluster.COMPONENTS_BY_NAME["podrunner"].pid()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    if b"--netns" not in cmdline:
        pytest.fail("the cluster's pod runner runs no containers: `make cluster-down cluster`")
    yield IMAGE
    cluster.kubectl("delete", "namespace", SYSTEM_NAMESPACE, "--ignore-not-found", "--wait=false")


def _remove_leftovers() -> None:
    """Whatever an earlier failure left behind; a namespace an earlier run is deleting, gone."""
    wait_for(
        lambda: cluster.kubectl(
            "get",
            "namespace",
            SYSTEM_NAMESPACE,
            "--ignore-not-found",
            "--output=jsonpath={.status.phase}",
        ),
        until=lambda phase: phase != "Terminating",
        timeout=90,
        message=f"namespace {SYSTEM_NAMESPACE} deleted by an earlier run",
    )
    leftover = ("deployment", "coalmine", f"--namespace={SYSTEM_NAMESPACE}", "--ignore-not-found")
    if cluster.kubectl("get", *leftover).strip():
        _delete_all_but_crds(cluster.kubectl("kustomize", str(DEPLOY / "namespaced")))
        _delete_all_but_crds(cluster.kubectl("kustomize", str(DEPLOY)))


def _wait_available() -> None:
    """What users run after an install: until every replica of the Deployment is Available."""
    cluster.kubectl(
        "rollout",
        "status",
        "deployment/coalmine",
        f"--namespace={SYSTEM_NAMESPACE}",
        f"--timeout={AVAILABLE_TIMEOUT_S}s",
    )


@pytest.fixture(params=list(INSTALLS))
def installed(
    request: pytest.FixtureRequest, operator_image: str, kube: Cluster
) -> Iterator[Install]:
    how = INSTALLS[request.param]
    _remove_leftovers()
    started = time.monotonic()
    how.install()
    try:
        _wait_available()
        print(f"  Deployment Available {time.monotonic() - started:.1f} s after the install")
        yield how
    except BaseException:
        _print_operator_logs()
        raise
    finally:
        how.uninstall()


def _operator_pods(kube: Cluster) -> dict[str, dict[str, Any]]:
    """The operator's pods that are not being deleted, by name (plain dicts, as served)."""
    pods = kube.raw.list(r.PODS, SYSTEM_NAMESPACE, label_selector="app.kubernetes.io/name=coalmine")
    return {p["metadata"]["name"]: p for p in pods if not p["metadata"].get("deletionTimestamp")}


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _active_replica(kube: Cluster, how: Install) -> str:
    """The working replica: of the live pods' keep-alives, the one with the highest priority."""
    peering = kube.raw.get(how.peering, how.serves, "coalmine") or {}
    live = _operator_pods(kube)
    keepalives: dict[str, int] = {
        pod: int(entry["priority"])
        for pod, entry in (peering.get("status") or {}).items()
        if pod in live and isinstance(entry, dict)
    }
    assert len(keepalives) == len(live) == 2, f"both replicas peer: {peering.get('status')}"
    return max(keepalives, key=lambda pod: keepalives[pod])


def _reconciles(ip: str) -> float:
    """How many reconciles the replica on ``ip`` ran (its own /metrics)."""
    with urllib.request.urlopen(f"http://{ip}:9100/metrics", timeout=5) as answer:
        body = answer.read().decode()
    for line in body.splitlines():
        if line.startswith("coalmine_reconciles_total "):
            return float(line.split()[1])
    return 0.0


def _metrics_through_service(kube: Cluster) -> dict[str, str]:
    """GET /metrics from every ready endpoint of the metrics Service: pod IP -> body."""
    slices = kube.raw.list(
        r.ENDPOINT_SLICES,
        SYSTEM_NAMESPACE,
        label_selector="kubernetes.io/service-name=coalmine-metrics",
    )
    bodies = {}
    for endpoint_slice in slices:
        port = next(p["port"] for p in endpoint_slice["ports"] if p.get("name") == "metrics")
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for ip in endpoint["addresses"]:
                with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5) as answer:
                    bodies[ip] = answer.read().decode()
    return bodies


def _print_operator_logs(lines: int = 15) -> None:
    """The last lines of the operator pods' logs (probe requests left out), to explain a failure."""
    logs = sorted(
        (cluster.LOG_DIR / "pods").glob(f"{SYSTEM_NAMESPACE}_*.log"), key=os.path.getmtime
    )
    for log in logs[-3:]:
        kept = [
            line for line in log.read_text(errors="replace").splitlines() if "aiohttp" not in line
        ]
        print(f"  {log.name}:\n    " + "\n    ".join(line[:300] for line in kept[-lines:]))


def test_install_roll_out_take_over_and_read_metrics(
    installed: Install, kube: Cluster, namespace: str
) -> None:
    ns = installed.serves or namespace
    rollouts = Rollouts(kube, ns)
    pods = _operator_pods(kube)
    assert len(pods) == 2
    assert all(_ready(p) for p in pods.values()), "two Ready replicas"
    ips = {str(p["status"].get("podIP")) for p in pods.values()}
    assert len(ips) == 2, "each replica on a pod IP of its own"
    assert all(ip.startswith("10.244.") for ip in ips)
    try:
        report = _roll_out_and_take_over(kube, ns, rollouts, installed)
    except BaseException:
        _print_operator_logs()
        raise
    finally:
        _remove_rollout(kube, ns, rollouts)
    print(
        f"\n  {installed.name}: v1 -> v2 through Traefik, {report['requests']} requests, "
        f"{report['failed']} failed; the standby acted {report['takeover_s']:.1f} s after the "
        f"working replica's pod was deleted; rollout and takeover took {report['seconds']:.1f} s"
    )


def _roll_out_and_take_over(
    kube: Cluster, ns: str, rollouts: Rollouts, how: Install
) -> dict[str, Any]:
    started = time.monotonic()
    host = f"shop.{ns}.example"
    traefik.apply(traefik.gateway_manifest(ns, "gw", hostname=host))
    user_routing_object(kube, ns, "gatewayAPI", "shop")
    rollouts.create(
        manifest(
            "shop", "v1", router="gatewayAPI", steps=STEPS, replicas=2, scaleDownDelaySeconds=2
        )
    )
    v1 = rollouts.wait_phase("shop", "Healthy", timeout=90)["stableRevision"]
    traefik.wait_gateway_programmed(ns, "gw")
    wait_weights(ns, 100, 0)
    wait_listening(wait_servers(kube, ns, "shop-stable", v1))
    wait_for(
        lambda: one_request(host),
        until=lambda answer: answer == (200, "v1"),
        timeout=20,
        message="v1 answering through Traefik",
    )
    with LoadGenerator(traefik.WEB_URL, host=host, rate=RATE, duration=150, workers=8) as load:
        load_started = load.now()
        rollouts.set_template("shop", "v2")
        v2 = rollouts.wait_phase("shop", "Paused", currentStepIndex=1, timeout=60)["canaryRevision"]
        wait_weights(ns, 50, 50)

        pods = _operator_pods(kube)
        active = _active_replica(kube, how)
        (standby_ip,) = [p["status"]["podIP"] for name, p in pods.items() if name != active]
        before = _reconciles(standby_ip)
        print(f"\n  $ kubectl -n {SYSTEM_NAMESPACE} delete pod {active}   # the working replica")
        cluster.kubectl("delete", "pod", active, f"--namespace={SYSTEM_NAMESPACE}", "--wait=false")
        deleted = time.monotonic()
        rollouts.control("shop", "promote")
        # The deleted replica stops its work, withdraws from the peering object and exits (it
        # may act on the promote first); the standby then resumes and reconciles.
        wait_for(
            lambda: _reconciles(standby_ip),
            until=lambda count: count > before,
            timeout=TAKEOVER_TIMEOUT_S,
            interval=0.1,
            message="the standby to take over (its reconciles counted)",
        )
        takeover = time.monotonic() - deleted
        rollouts.wait_phase("shop", "Healthy", stableRevision=v2, timeout=60)
        wait_listening(wait_servers(kube, ns, "shop-stable", v2))
        wait_for(
            lambda: rollouts.deployments("shop"),
            until=lambda d: d == {v1: 0, v2: 2},
            timeout=30,
            message="the old stable scaled to 0",
        )
        wait_for(
            lambda: pod_ips(kube, ns, v1),
            until=lambda ips: not ips,
            timeout=30,
            message="the old stable's pods gone",
        )
        after = load.wait_for_requests(200, load.now())
        assert after.by_version == {"v2": after.requests}
        whole = load.window(load_started)
    assert whole.failed == 0, f"requests failed during the rollout and takeover: {whole.by_status}"
    assert whole.by_version.get("v1"), whole.by_version
    assert whole.by_version.get("v2"), whole.by_version

    # The metrics, through the Service: the working replica reports the rollout.
    wanted = f'coalmine_rollout_phase{{name="shop",namespace="{ns}",phase="Healthy"}} 1.0'
    bodies = wait_for(
        lambda: _metrics_through_service(kube),
        until=lambda found: any(wanted in body for body in found.values()),
        timeout=30,
        message=f"{wanted} from an endpoint of Service coalmine-metrics",
    )
    assert all("coalmine_reconciles_total" in body for body in bodies.values())
    # The deleted replica was replaced, and the replacement runs too.
    _wait_available()
    return {
        "requests": whole.requests,
        "failed": whole.failed,
        "takeover_s": takeover,
        "seconds": time.monotonic() - started,
    }


def _remove_rollout(kube: Cluster, ns: str, rollouts: Rollouts) -> None:
    """Let the installed operator finalize the rollout before it goes away itself."""
    if "shop" in rollouts.names():
        rollouts.delete("shop")
        wait_for(rollouts.names, until=lambda n: "shop" not in n, timeout=60, message="finalized")
    if ns == "default":  # not a test namespace, which is deleted with everything in it
        for what in ("httproute/shop", "gateway/gw", "service/shop"):
            cluster.kubectl("delete", what, "-n", ns, "--ignore-not-found", "--wait=false")


#: How long a broken install is watched: its pods run, and must stay not Ready all along.
BROKEN_WATCH_S = 20


def test_a_broken_rbac_install_is_never_ready(operator_image: str, kube: Cluster) -> None:
    """deploy/ with a ClusterRole that lets the operator peer but read nothing it serves: its
    pods run, and `kubectl get pods` shows them not Ready (issue 11: a broken install used to
    look healthy while every reconcile was refused)."""
    _remove_leftovers()
    rendered = [doc for doc in yaml.safe_load_all(cluster.kubectl("kustomize", str(DEPLOY))) if doc]
    for doc in rendered:
        if doc["kind"] == "ClusterRole":
            doc["rules"] = [
                rule
                for rule in doc["rules"]
                if set(rule["apiGroups"]) <= {"kopf.dev", "apiextensions.k8s.io"}
            ]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered}),
    )
    try:
        wait_for(
            _running_containers,
            until=lambda running: running == 2,
            timeout=AVAILABLE_TIMEOUT_S,
            message="both operator containers running",
        )
        deadline = time.monotonic() + BROKEN_WATCH_S
        while time.monotonic() < deadline:
            ready = {name: _ready(pod) for name, pod in _operator_pods(kube).items()}
            assert not any(ready.values()), f"a broken install looks Ready: {ready}"
            time.sleep(1)
    except BaseException:
        _print_operator_logs()
        raise
    finally:
        _delete_all_but_crds(cluster.kubectl("kustomize", str(DEPLOY)))


def _running_containers() -> int:
    state = json.loads((paths.STATE_DIR / "podrunner.json").read_text())
    return sum(1 for pod in state["pods"] if pod.startswith(f"{SYSTEM_NAMESPACE}/"))
