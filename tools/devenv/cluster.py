"""Start, check and stop the local cluster: the processes, their order and their health.

The launcher starts each component as a detached process inside the network namespace, records
its pid, and waits until the component answers its health endpoint before starting the next one.
A second ``up`` reuses a healthy cluster; an unhealthy one is stopped and started fresh. ``down``
leaves no process, mount or namespace behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devenv import netns, paths, pki

LOG_DIR = paths.STATE_DIR / "logs"
PID_DIR = paths.STATE_DIR / "pids"
NODE_ANNOTATION = "kwok.x-k8s.io/node"


class ClusterError(RuntimeError):
    """The cluster cannot be started or used; the message names the missing piece."""


@dataclass(frozen=True)
class Component:
    """One process of the local cluster."""

    name: str
    argv: Callable[[pki.Pki], list[str]]
    probe: Callable[[pki.Pki], bool]
    ready_timeout: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    #: What the cluster needs in place before this component's first start (objects to apply).
    prepare: Callable[[pki.Pki], None] | None = None

    @property
    def pid_file(self) -> Path:
        return PID_DIR / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return LOG_DIR / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of this component's live process, or None."""
        try:
            pid = int(self.pid_file.read_text())
            # After a reboot the pid may belong to someone else: never signal a stranger.
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if self.name in cmdline and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # A zombie has exited; only its parent has not collected it yet.
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# --- health probes ---------------------------------------------------------------------------


def _get(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            body: bytes = response.read()
            return body if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _admin_tls(p: pki.Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(p.ca_crt))
    context.load_cert_chain(str(p.admin_crt), str(p.admin_key))
    return context


def _self_signed_tls() -> ssl.SSLContext:
    # kube-controller-manager and kube-scheduler serve /healthz with a self-signed certificate.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _probe_url(url: str, expect: bytes = b"ok") -> Callable[[pki.Pki], bool]:
    def probe(_: pki.Pki) -> bool:
        body = _get(url, _self_signed_tls() if url.startswith("https") else None)
        return body is not None and expect in body

    return probe


def _probe_apiserver(p: pki.Pki) -> bool:
    body = _get(f"{paths.API_SERVER_URL}/readyz", _admin_tls(p))
    return body == b"ok"


def _probe_alive(name: str) -> Callable[[pki.Pki], bool]:
    def probe(_: pki.Pki) -> bool:
        return COMPONENTS_BY_NAME[name].pid() is not None

    return probe


# --- the components --------------------------------------------------------------------------


def _etcd(_: pki.Pki) -> list[str]:
    return [
        str(paths.binary("etcd")),
        "--name=local",
        f"--data-dir={paths.STATE_DIR / 'etcd'}",
        f"--listen-client-urls={paths.ETCD_CLIENT_URL}",
        f"--advertise-client-urls={paths.ETCD_CLIENT_URL}",
        "--listen-peer-urls=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        "--initial-cluster=local=http://127.0.0.1:2380",
        # A throwaway test store: durability is not worth the fsync latency.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def _apiserver(p: pki.Pki) -> list[str]:
    return [
        str(paths.binary("kube-apiserver")),
        f"--etcd-servers={paths.ETCD_CLIENT_URL}",
        "--bind-address=0.0.0.0",
        f"--secure-port={paths.API_SERVER_PORT}",
        f"--advertise-address={paths.ADVERTISE_ADDRESS}",
        f"--cert-dir={paths.STATE_DIR / 'apiserver'}",
        f"--tls-cert-file={p.apiserver_crt}",
        f"--tls-private-key-file={p.apiserver_key}",
        f"--client-ca-file={p.ca_crt}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p.sa_pub}",
        f"--service-account-signing-key-file={p.sa_key}",
        f"--service-cluster-ip-range={paths.SERVICE_CIDR}",
        # RBAC is on so that tests authenticated as the operator's ServiceAccount prove its Role.
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--profiling=false",
        "--event-ttl=1h",
        # The aggregation layer, so that metrics-server serves metrics.k8s.io behind the API
        # server (for the HPA controller): the API server proxies with this client certificate
        # and names the user in headers, which aggregated servers trust from that client only.
        f"--proxy-client-cert-file={p.front_proxy_crt}",
        f"--proxy-client-key-file={p.front_proxy_key}",
        f"--requestheader-client-ca-file={p.ca_crt}",
        f"--requestheader-allowed-names={pki.FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
    ]


def _kubeconfig_flags() -> list[str]:
    kc = str(paths.KUBECONFIG)
    return [
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
    ]


def _controller_manager(p: pki.Pki) -> list[str]:
    return [
        str(paths.binary("kube-controller-manager")),
        *_kubeconfig_flags(),
        "--bind-address=127.0.0.1",
        "--secure-port=10257",
        f"--cert-dir={paths.STATE_DIR / 'controller-manager'}",
        "--leader-elect=false",
        f"--service-account-private-key-file={p.sa_key}",
        f"--root-ca-file={p.ca_crt}",
        "--use-service-account-credentials=false",
        "--profiling=false",
        # The defaults (20 qps) are sized for real kubelets' pace; with KWOK pods start at
        # once, and a throttled controller manager would dominate every latency we measure.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--concurrent-deployment-syncs=10",
        "--concurrent-replicaset-syncs=10",
        "--concurrent-service-endpoint-syncs=10",
        # KWOK's nodes never fail on their own, but while the API server is down or frozen
        # the node lifecycle controller sees no lease renewed and, after this grace period,
        # marks every node Unknown and every pod NotReady. The default (50 s) is shorter than a
        # 25 s outage plus the informers' retry backoff after it (up to 30 s, jittered), so the
        # outages of fault-injection tests would take every pod out of its Service. After a
        # longer outage KWOK makes the pods Ready again (stage kwok/pod-ready-again.yaml).
        "--node-monitor-grace-period=120s",
        # The HPA controller looks every 5 s (default 15 s): autoscaling tests react quickly.
        "--horizontal-pod-autoscaler-sync-period=5s",
    ]


def _scheduler(_: pki.Pki) -> list[str]:
    return [
        str(paths.binary("kube-scheduler")),
        *_kubeconfig_flags(),
        "--bind-address=127.0.0.1",
        "--secure-port=10259",
        f"--cert-dir={paths.STATE_DIR / 'scheduler'}",
        "--leader-elect=false",
        "--profiling=false",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]


def _kwok_configs() -> list[Path]:
    """KWOK's stages (pod and node lifecycles) and its simulated resource usage and metrics."""
    return [
        *sorted((paths.SHARE_DIR / "kwok-stages").glob("*.yaml")),
        *sorted((paths.SHARE_DIR / "kwok-metrics").glob("*.yaml")),
    ]


def _kwok(_: pki.Pki) -> list[str]:
    return [
        str(paths.binary("kwok")),
        f"--kubeconfig={paths.KUBECONFIG}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
        f"--server-address={paths.NODE_ADDRESS}:{paths.KWOK_PORT}",
        # Every node reports this address and port as its kubelet's, so metrics-server
        # scrapes KWOK there (each node's path is in its resource-metrics-path annotation).
        f"--node-ip={paths.NODE_ADDRESS}",
        f"--node-port={paths.KWOK_PORT}",
        "--node-lease-duration-seconds=40",
        *(f"--config={config}" for config in _kwok_configs()),
    ]


METRICS_API = """# Written by devenv.cluster: metrics.k8s.io, served by metrics-server.
apiVersion: v1
kind: Service
metadata: {{name: metrics-server, namespace: kube-system}}
spec:
  type: ExternalName
  externalName: 127.0.0.1
  ports: [{{name: https, port: {port}, protocol: TCP}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {{name: metrics-server, namespace: kube-system, port: {port}}}
  caBundle: {ca}
  groupPriorityMinimum: 100
  versionPriority: 100
"""


def _register_metrics_api(p: pki.Pki) -> None:
    ca = base64.b64encode(p.ca_crt.read_bytes()).decode()
    kubectl("apply", "-f", "-", stdin=METRICS_API.format(port=paths.METRICS_SERVER_PORT, ca=ca))


def _metrics_server(p: pki.Pki) -> list[str]:
    return [
        str(paths.binary("metrics-server")),
        *_kubeconfig_flags(),
        "--bind-address=127.0.0.1",
        f"--secure-port={paths.METRICS_SERVER_PORT}",
        f"--cert-dir={paths.STATE_DIR / 'metrics-server'}",
        f"--tls-cert-file={p.metrics_server_crt}",
        f"--tls-private-key-file={p.metrics_server_key}",
        # The nodes' kubelet endpoint is KWOK's (see _kwok), with a self-signed certificate.
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        "--kubelet-insecure-tls",
        # The shortest metrics-server accepts: an HPA sees new usage within about 20 s.
        "--metric-resolution=10s",
        "--kubelet-request-timeout=5s",  # below 90% of the resolution, as metrics-server requires
        "--profiling=false",
    ]


def _register_nodes(_: pki.Pki) -> None:
    # Nodes must exist before pods can run; the runner and Prometheus come after.
    kubectl("apply", "-f", "-", stdin=_nodes_manifest())
    for i in range(paths.NODE_COUNT):
        # Both addresses a kubelet reports. KWOK's node-initialize stage, played again whenever
        # a node is brought back Ready, writes an empty address list (so none at all) when it
        # finds an InternalIP without a Hostname: with both it leaves them alone.
        addresses = [
            {"type": "InternalIP", "address": paths.NODE_ADDRESS},
            {"type": "Hostname", "address": f"kwok-node-{i}"},
        ]
        kubectl(
            "patch",
            "node",
            f"kwok-node-{i}",
            "--subresource=status",
            "--type=strategic",
            "-p",
            json.dumps({"status": {"addresses": addresses}}),
        )
    kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")


def _podrunner(_: pki.Pki) -> list[str]:
    return [
        sys.executable,
        "-m",
        "devenv.podrunner",
        f"--kubeconfig={paths.KUBECONFIG}",
        f"--state-file={paths.STATE_DIR / 'podrunner.json'}",
        f"--log-dir={LOG_DIR / 'pods'}",
        f"--netns={paths.NETNS}",
    ]


PROMETHEUS_CONFIG = """# Written by devenv.cluster: scrape the demo app's pods (and any pod
# annotated prometheus.io/scrape: "true") found through Kubernetes service discovery.
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
scrape_configs:
- job_name: pods
  kubernetes_sd_configs:
  - role: pod
    kubeconfig_file: {kubeconfig}
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_phase]
    regex: Running
    action: keep
  - source_labels:
    - __meta_kubernetes_pod_annotation_prometheus_io_scrape
    - __meta_kubernetes_pod_container_image
    regex: 'true;.*|.*;coalmine\\.dev/demo-app[:@].*'
    action: keep
  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
    regex: '([^:]+)(?::\\d+)?;(\\d+)'
    replacement: '$1:$2'
    target_label: __address__
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
  - source_labels: [__meta_kubernetes_pod_container_name]
    target_label: container
  - regex: __meta_kubernetes_pod_label_coalmine_dev_(.+)
    action: labelmap
    replacement: coalmine_$1
- job_name: coalmine-operator
  static_configs:
  - targets: ['127.0.0.1:{operator_port}']
- job_name: traefik
  static_configs:
  - targets: ['127.0.0.1:8082']
"""


def _write_prometheus_config() -> tuple[Path, bool]:
    """Write the scrape configuration; True when it changed."""
    config_dir = paths.STATE_DIR / "prometheus"
    config_dir.mkdir(parents=True, exist_ok=True)
    config = config_dir / "prometheus.yml"
    text = PROMETHEUS_CONFIG.format(
        kubeconfig=paths.KUBECONFIG, operator_port=paths.OPERATOR_METRICS_PORT
    )
    changed = not config.exists() or config.read_text() != text
    if changed:
        config.write_text(text)
    return config, changed


def _reload_prometheus_if_changed() -> None:
    # A reused cluster keeps running across checkouts: bring its scrape config up to date.
    _, changed = _write_prometheus_config()
    if changed:
        url = f"{paths.PROMETHEUS_URL}/-/reload"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 - our own Prometheus
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass


def _prometheus(_: pki.Pki) -> list[str]:
    config, _changed = _write_prometheus_config()
    config_dir = config.parent
    return [
        str(paths.binary("prometheus")),
        f"--config.file={config}",
        f"--storage.tsdb.path={config_dir / 'data'}",
        "--storage.tsdb.retention.time=6h",
        f"--web.listen-address={paths.PROMETHEUS_URL.removeprefix('http://')}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]


COMPONENTS: tuple[Component, ...] = (
    Component("etcd", _etcd, _probe_url(f"{paths.ETCD_CLIENT_URL}/health", b'"health":"true"'), 20),
    Component("kube-apiserver", _apiserver, _probe_apiserver, 90),
    Component(
        "kube-controller-manager",
        _controller_manager,
        _probe_url("https://127.0.0.1:10257/healthz"),
    ),
    Component("kube-scheduler", _scheduler, _probe_url("https://127.0.0.1:10259/healthz")),
    Component("kwok", _kwok, _probe_url(f"http://{paths.NODE_ADDRESS}:{paths.KWOK_PORT}/healthz")),
    Component(
        "podrunner",
        _podrunner,
        _probe_alive("podrunner"),
        10,
        env={"PYTHONPATH": str(paths.REPO_ROOT / "tools")},
        prepare=_register_nodes,
    ),
    Component(
        "prometheus", _prometheus, _probe_url(f"{paths.PROMETHEUS_URL}/-/ready", b"Ready"), 30
    ),
    # Alive is enough to go on: it serves the metrics API once it has scraped twice (~20 s).
    Component(
        "metrics-server",
        _metrics_server,
        _probe_url(f"https://127.0.0.1:{paths.METRICS_SERVER_PORT}/livez"),
        prepare=_register_metrics_api,
    ),
)
COMPONENTS_BY_NAME = {c.name: c for c in COMPONENTS}
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "prometheus",
    "metrics-server",
)


# --- operations ------------------------------------------------------------------------------


def check_prerequisites() -> None:
    missing = [name for name in BINARIES if not os.access(paths.binary(name), os.X_OK)]
    if missing:
        raise ClusterError(
            f"missing {', '.join(missing)} in {paths.BIN_DIR}: run `make tools` to build them"
        )
    for folder, what in (("kwok-stages", "KWOK stage files"), ("kwok-metrics", "KWOK metrics")):
        if not list((paths.SHARE_DIR / folder).glob("*.yaml")):
            raise ClusterError(f"missing {what} in {paths.SHARE_DIR / folder}: run `make tools`")


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run the pinned kubectl against the local cluster (the caller is inside the namespace)."""
    result = subprocess.run(
        [str(paths.binary("kubectl")), f"--kubeconfig={paths.KUBECONFIG}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def unhealthy_components() -> list[str]:
    """Names of the components that are not running or do not answer their probe."""
    if not paths.KUBECONFIG.exists():
        return [c.name for c in COMPONENTS]
    p = pki.Pki(paths.STATE_DIR / "pki")
    return [c.name for c in COMPONENTS if c.pid() is None or not c.probe(p)]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(component: Component, p: pki.Pki) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    PID_DIR.mkdir(parents=True, exist_ok=True)
    with component.log_file.open("ab") as log:
        process = subprocess.Popen(
            component.argv(p),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlive the launcher and whatever started it
            env={**os.environ, **component.env},
            cwd=paths.STATE_DIR,
        )
    component.pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + component.ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(
                f"{component.name} exited with status {process.returncode} while starting; "
                f"last lines of {component.log_file}:\n{_tail(component.log_file)}"
            )
        if component.probe(p):
            return
        time.sleep(0.1)
    raise ClusterError(
        f"{component.name} did not become healthy within {component.ready_timeout:.0f} s; "
        f"last lines of {component.log_file}:\n{_tail(component.log_file)}"
    )


PORTS = {
    ("127.0.0.1", 2379): "etcd",
    ("127.0.0.1", 2380): "etcd",
    ("127.0.0.1", 6443): "kube-apiserver",
    ("127.0.0.1", 10257): "kube-controller-manager",
    ("127.0.0.1", 10259): "kube-scheduler",
    (paths.NODE_ADDRESS, paths.KWOK_PORT): "kwok",
    ("127.0.0.1", 9090): "prometheus",
    ("127.0.0.1", paths.METRICS_SERVER_PORT): "metrics-server",
}


def _check_ports_free() -> None:
    """Fail early and clearly when another cluster (say, another clone's) holds our ports."""
    busy = []
    for (address, port), owner in PORTS.items():
        with socket.socket() as probe:
            if probe.connect_ex((address, port)) == 0:
                busy.append(f"{port} ({owner})")
    if busy:
        raise ClusterError(
            f"ports {', '.join(busy)} are in use inside network namespace '{paths.NETNS}' by "
            "processes this checkout did not start (another checkout's cluster?): run "
            "`make cluster-down` there, or set COALMINE_NETNS to use another namespace"
        )


def _nodes_manifest() -> str:
    docs = []
    for i in range(paths.NODE_COUNT):
        docs.append(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"kwok-node-{i}",
                        "annotations": {
                            NODE_ANNOTATION: "fake",
                            # Where metrics-server finds this node's kubelet metrics in KWOK.
                            "metrics.k8s.io/resource-metrics-path": (
                                f"/metrics/nodes/kwok-node-{i}/metrics/resource"
                            ),
                        },
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": f"kwok-node-{i}",
                            "kubernetes.io/os": "linux",
                        },
                    },
                    "spec": {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]},
                }
            )
        )
    return "\n---\n".join(docs)


def stop_pid(pid: int, name: str, grace: float = 5.0) -> None:
    """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        print(f"cluster: {name} ignored SIGTERM; killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _stop_components() -> None:
    for component in reversed(COMPONENTS):
        pid = component.pid()
        if pid is not None:
            stop_pid(pid, component.name)
        component.pid_file.unlink(missing_ok=True)


@dataclass(frozen=True)
class ClusterInfo:
    kubeconfig: Path
    prometheus_url: str
    reused: bool
    seconds: float


def up(*, quiet: bool = False) -> ClusterInfo:
    """Start the cluster, or reuse it when it is healthy. Idempotent."""
    started = time.monotonic()
    check_prerequisites()
    netns.enter()
    paths.STATE_DIR.mkdir(parents=True, exist_ok=True)
    if not unhealthy_components():
        _reload_prometheus_if_changed()
        info = ClusterInfo(paths.KUBECONFIG, paths.PROMETHEUS_URL, True, time.monotonic() - started)
        if not quiet:
            print_usage(info)
        return info
    # Something is missing or broken: start from a clean slate rather than patch a half cluster.
    _stop_components()
    _check_ports_free()
    for state in ("etcd", "prometheus/data"):
        subprocess.run(["rm", "-rf", str(paths.STATE_DIR / state)], check=True)
    p = pki.ensure()
    pki.write_kubeconfig(p, paths.KUBECONFIG)
    for component in COMPONENTS:
        if component.prepare is not None:
            component.prepare(p)
        _start(component, p)
        if not quiet:
            print(f"cluster: {component.name} is healthy ({time.monotonic() - started:.1f} s)")
    crds = paths.SHARE_DIR / "gateway-api-crds"
    if crds.is_dir():
        kubectl("apply", "--server-side", "-f", str(crds))
    _wait_for_default_serviceaccount()
    write_env_file()
    info = ClusterInfo(paths.KUBECONFIG, paths.PROMETHEUS_URL, False, time.monotonic() - started)
    if not quiet:
        print_usage(info)
    return info


def _wait_for_default_serviceaccount(timeout: float = 30.0) -> None:
    # Pods are refused until the controller manager has made the namespace's default account.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kubectl("get", "serviceaccount", "default", "-n", "default", check=False).strip():
            return
        time.sleep(0.2)
    raise ClusterError(
        "the default ServiceAccount never appeared: is kube-controller-manager running?"
    )


def write_env_file() -> None:
    paths.ENV_FILE.write_text(
        f"export KUBECONFIG={paths.KUBECONFIG}\n"
        f"export PROMETHEUS_URL={paths.PROMETHEUS_URL}\n"
        f"export COALMINE_NETNS={paths.NETNS}\n"
        f"export PATH={paths.BIN_DIR}:$PATH\n"
    )


def print_usage(info: ClusterInfo) -> None:
    how = "reused the healthy cluster" if info.reused else f"started in {info.seconds:.1f} s"
    root = paths.REPO_ROOT
    kc = os.path.relpath(paths.KUBECONFIG, root)
    print(
        f"""
Local cluster is up ({how}).
  API server  {paths.API_SERVER_URL}   kubeconfig: {kc}
  Prometheus  {paths.PROMETHEUS_URL}
  Nodes       {paths.NODE_COUNT} simulated by KWOK; pod IPs in {paths.POD_CIDR}
Everything listens inside the network namespace '{paths.NETNS}', not on this host's network.
  make shell                                            # a shell inside, KUBECONFIG and PATH set
  ip netns exec {paths.NETNS} .tools/bin/kubectl --kubeconfig {kc} get nodes,pods -A
  make cluster-down                                     # stop everything, remove the namespace
"""
    )


def down() -> None:
    """Stop every process, remove the namespace and the cluster's state. Idempotent."""
    _stop_components()
    me = {os.getpid(), os.getppid()}
    for pid in netns.pids():
        if pid not in me:
            stop_pid(pid, f"pid {pid}", grace=3.0)
    netns.delete()
    subprocess.run(["rm", "-rf", str(paths.STATE_DIR)], check=True)
    print(f"cluster: stopped; namespace '{paths.NETNS}' and {paths.STATE_DIR} removed")


def stop_component(name: str) -> None:
    """Stop one component (tests of outages: Prometheus going away, for example)."""
    component = COMPONENTS_BY_NAME[name]
    pid = component.pid()
    if pid is not None:
        stop_pid(pid, name)
    component.pid_file.unlink(missing_ok=True)


def start_component(name: str) -> None:
    """Start one stopped component again, and wait until it is healthy."""
    component = COMPONENTS_BY_NAME[name]
    if component.pid() is None:
        _start(component, pki.Pki(paths.STATE_DIR / "pki"))


def process_memory(pid: int) -> int:
    """Resident set size of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user and system) process ``pid`` has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields here start at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _running() -> dict[str, int]:
    pids = {component.name: component.pid() for component in COMPONENTS}
    return {name: pid for name, pid in pids.items() if pid is not None}


def resident_memory() -> dict[str, int]:
    """Resident set size in bytes of each running component."""
    return {name: process_memory(pid) for name, pid in _running().items()}


def cpu_seconds() -> dict[str, float]:
    """CPU time (user and system) in seconds each running component has used so far."""
    return {name: process_cpu_seconds(pid) for name, pid in _running().items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "up"
    try:
        if command == "up":
            up()
        elif command == "down":
            down()
        elif command == "status":
            if not netns.exists():
                print(f"cluster: down (no network namespace '{paths.NETNS}')")
                return 1
            netns.enter()
            bad = unhealthy_components()
            print("cluster: healthy" if not bad else f"cluster: unhealthy: {', '.join(bad)}")
            return 1 if bad else 0
        else:
            print(
                f"usage: python -m devenv.cluster [up|down|status] (got {command!r})",
                file=sys.stderr,
            )
            return 2
    except (ClusterError, netns.NetnsError, pki.PkiError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
