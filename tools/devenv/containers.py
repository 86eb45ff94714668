"""The operator's own pods, run for real: one podman container per pod, on the pod's IP.

KWOK runs nothing, and the demo app is a stand-in process. The operator image is the real thing
users install, so its pods (the Deployment of ``deploy/``, of the Helm chart) run that image with
podman, the way a kubelet would run it:

- in the cluster's network namespace (``--network ns:/run/netns/<name>``), where the pod IP is
  a local address, so the container binds it and Services' EndpointSlices lead to it;
- with the pod's ServiceAccount projected where in-cluster clients look for it
  (``/var/run/secrets/kubernetes.io/serviceaccount``: a token from the TokenRequest API bound
  to the pod, the cluster's CA from the ``kube-root-ca.crt`` ConfigMap, the namespace), and
  ``KUBERNETES_SERVICE_HOST/PORT`` naming the API server (no kube-proxy here to route the
  ``kubernetes`` Service's ClusterIP);
- with the container's env (literal values and the downward API's ``fieldRef``), command and
  args, user, read-only root filesystem, dropped capabilities and ``emptyDir`` volumes (tmpfs);
- Ready only while its readiness probe (``httpGet``) passes, and restarted when it exits.

Not done: resource limits, liveness and startup probes, volumes other than ``emptyDir``, env
from Secrets or ConfigMaps. This module is the pure part (what to run for a pod) and the podman
commands; ``devenv.podrunner`` runs and watches the containers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devenv import paths

#: Pods whose container image is one of these repositories (any tag) run as containers: the
#: image `make image` builds (``coalmine:dev``, which podman stores as ``localhost/coalmine``).
#: KWOK's stages select the same images (tools/build-tools.sh, tools/devenv/kwok/).
IMAGE_REPOSITORIES = frozenset({"coalmine", "localhost/coalmine"})
#: Where in-cluster clients (client-go, the Python client, kopf) read the ServiceAccount.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Lifetime asked for the projected token; a kubelet asks for about an hour and refreshes it,
#: the pod runner asks once for longer than any test or demo runs.
TOKEN_SECONDS = 24 * 3600
#: podman's settings for this kind of machine (runc, ulimits): the file `make image` uses.
CONTAINERS_CONF = paths.REPO_ROOT / "tools" / "image" / "containers.conf"
#: Every container the pod runner starts carries this label, valued with the network
#: namespace's name, so that leftovers of a runner that died can be found and removed.
LABEL = "dev.coalmine.podrunner.netns"
#: A probe that takes longer counts as failed, whatever the pod says: the runner's loop waits.
MAX_PROBE_TIMEOUT_S = 2.0
#: Longest grace period honoured when a container is stopped.
MAX_GRACE_S = 30.0


class PodmanMissingError(RuntimeError):
    """podman is not installed: the operator's pods cannot run."""


@dataclass(frozen=True)
class HttpProbe:
    """A container's ``readinessProbe.httpGet``, with Kubernetes' defaults filled in."""

    path: str
    port: int
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    initial_delay_s: float = 0.0


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that decides how a pod's container runs; any difference means a restart."""

    ip: str
    namespace: str
    pod: str
    uid: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    env: tuple[tuple[str, str], ...]
    user: str | None
    read_only: bool
    tmpfs: tuple[tuple[str, str], ...]
    """(mount path, tmpfs options) for each ``emptyDir`` volume the container mounts."""
    service_account: str | None
    """Whose token to project; None when ``automountServiceAccountToken`` is false."""
    readiness: HttpProbe | None
    grace_s: float
    drop_capabilities: bool
    no_new_privileges: bool

    @property
    def port(self) -> int:
        """The port that tells whether the container listens (its readiness probe's)."""
        return self.readiness.port if self.readiness else 0

    @property
    def name(self) -> str:
        """The container's name: unique per pod (uid) and per local cluster (namespace)."""
        return f"{paths.NETNS}_{self.namespace}_{self.pod}_{self.uid[:8]}"

    def podman_run(self, secrets: Path | None, netns: str = paths.NETNS) -> list[str]:
        """The ``podman run`` command line; ``secrets`` is the ServiceAccount directory."""
        argv = [
            "podman",
            "run",
            "--rm",
            f"--name={self.name}",
            f"--label={LABEL}={netns}",
            f"--label=io.kubernetes.pod.namespace={self.namespace}",
            f"--label=io.kubernetes.pod.name={self.pod}",
            f"--network=ns:{Path('/run/netns') / netns}",
            f"--hostname={self.pod[:63]}",
            "--pull=never",
        ]
        if self.user:
            argv.append(f"--user={self.user}")
        if self.read_only:
            # Writable only where a volume says so, as with readOnlyRootFilesystem.
            argv += ["--read-only", "--read-only-tmpfs=false"]
        argv += [f"--tmpfs={path}:{options}" for path, options in self.tmpfs]
        if self.drop_capabilities:
            argv.append("--cap-drop=all")
        if self.no_new_privileges:
            argv.append("--security-opt=no-new-privileges")
        if secrets is not None:
            argv.append(f"--volume={secrets}:{SERVICE_ACCOUNT_DIR}:ro")
        for name, value in self.env:
            argv.append(f"--env={name}={value}")
        if self.command is not None:
            # Kubernetes' command replaces the image's entrypoint (and drops its CMD).
            argv.append(f"--entrypoint={json.dumps(list(self.command))}")
        argv.append(self.image)
        argv += list(self.args or ())
        return argv


# --- the pod, read: pure ---------------------------------------------------------------------


def repository(image: str) -> str:
    """The image reference without tag or digest (a colon before the last slash is a port)."""
    name = image.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def runs_as_container(container: Mapping[str, Any]) -> bool:
    return repository(str(container.get("image") or "")) in IMAGE_REPOSITORIES


def _field(pod: Mapping[str, Any], path: str) -> str | None:
    """The value of a downward API ``fieldRef.fieldPath``; None for one this runner lacks."""
    metadata = pod.get("metadata") or {}
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "status.podIP": (pod.get("status") or {}).get("podIP"),
        "status.hostIP": (pod.get("status") or {}).get("hostIP"),
    }
    if path in simple:
        value = simple[path]
        return None if value is None else str(value)
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(f"{prefix}['") and path.endswith("']"):
            return str((metadata.get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
    return None


def resolve_env(
    pod: Mapping[str, Any], container: Mapping[str, Any]
) -> tuple[tuple[str, str], ...]:
    """The container's env: literal values and ``fieldRef``s; other sources are left out."""
    pairs: list[tuple[str, str]] = []
    for entry in container.get("env") or ():
        name = entry.get("name")
        if not name:
            continue
        source = entry.get("valueFrom")
        if source is None:
            value = entry.get("value")
            pairs.append((str(name), "" if value is None else str(value)))
            continue
        field = _field(pod, str((source.get("fieldRef") or {}).get("fieldPath", "")))
        if field is not None:
            pairs.append((str(name), field))
    return tuple(pairs)


def _port_number(container: Mapping[str, Any], port: Any) -> int | None:
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or ():
        if declared.get("name") == port:
            number = declared.get("containerPort")
            return number if isinstance(number, int) else None
    return int(port) if isinstance(port, str) and port.isdigit() else None


def readiness_probe(container: Mapping[str, Any]) -> HttpProbe | None:
    probe = container.get("readinessProbe") or {}
    get = probe.get("httpGet")
    if not get:
        return None
    port = _port_number(container, get.get("port"))
    if port is None:
        return None
    return HttpProbe(
        path=str(get.get("path") or "/"),
        port=port,
        period_s=float(probe.get("periodSeconds") or 10),
        timeout_s=float(probe.get("timeoutSeconds") or 1),
        success_threshold=int(probe.get("successThreshold") or 1),
        failure_threshold=int(probe.get("failureThreshold") or 3),
        initial_delay_s=float(probe.get("initialDelaySeconds") or 0),
    )


def _user(pod_security: Mapping[str, Any], security: Mapping[str, Any]) -> str | None:
    uid = security.get("runAsUser", pod_security.get("runAsUser"))
    gid = security.get("runAsGroup", pod_security.get("runAsGroup"))
    if uid is None:
        return None
    return f"{uid}:{gid}" if gid is not None else str(uid)


def _tmpfs(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any]
) -> tuple[tuple[str, str], ...]:
    empty_dirs = {
        volume["name"]: volume["emptyDir"] or {}
        for volume in pod_spec.get("volumes") or ()
        if "emptyDir" in volume
    }
    mounts = []
    for mount in container.get("volumeMounts") or ():
        volume = empty_dirs.get(mount.get("name"))
        if volume is None:
            continue
        options = "rw,mode=1777"
        size = volume.get("sizeLimit")
        if size:
            # tmpfs takes k, m and g suffixes: Kubernetes' binary ones (Mi) map onto them.
            options += f",size={str(size).removesuffix('i').lower()}"
        mounts.append((str(mount["mountPath"]), options))
    return tuple(mounts)


def container_spec(pod: Mapping[str, Any]) -> ContainerSpec | None:
    """The container to run for a pod, or None if it runs no operator image right now."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    pod_spec = pod.get("spec") or {}
    if metadata.get("deletionTimestamp"):
        return None
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not ip:
        return None
    for container in pod_spec.get("containers") or ():
        if not runs_as_container(container):
            continue
        security = container.get("securityContext") or {}
        capabilities = security.get("capabilities") or {}
        automount = pod_spec.get("automountServiceAccountToken", True)
        return ContainerSpec(
            ip=str(ip),
            namespace=str(metadata.get("namespace") or "default"),
            pod=str(metadata.get("name") or ""),
            uid=str(metadata.get("uid") or ""),
            image=str(container["image"]),
            command=tuple(container["command"]) if container.get("command") else None,
            args=tuple(container["args"]) if container.get("args") else None,
            env=(
                ("KUBERNETES_SERVICE_HOST", paths.ADVERTISE_ADDRESS),
                ("KUBERNETES_SERVICE_PORT", str(paths.API_SERVER_PORT)),
                *resolve_env(pod, container),
            ),
            user=_user(pod_spec.get("securityContext") or {}, security),
            read_only=bool(security.get("readOnlyRootFilesystem")),
            tmpfs=_tmpfs(pod_spec, container),
            service_account=(
                str(pod_spec.get("serviceAccountName") or "default") if automount else None
            ),
            readiness=readiness_probe(container),
            grace_s=min(MAX_GRACE_S, float(pod_spec.get("terminationGracePeriodSeconds", 30))),
            drop_capabilities="ALL" in (capabilities.get("drop") or ()),
            no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        )
    return None


# --- podman and the API: side effects -------------------------------------------------------


def podman_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment for podman commands: this repository's containers.conf."""
    return {**base, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def require_podman() -> str:
    found = shutil.which("podman")
    if found is None:
        raise PodmanMissingError(
            "podman is missing, so the operator's pods cannot run: "
            "apt-get install podman runc (then `make test-image`)"
        )
    return found


def _podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_podman(), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=podman_env(os.environ),
    )


def signal_container(name: str, signal: str) -> None:
    """Send ``signal`` to a container's main process (a kubelet's stop, or a crash)."""
    _podman("kill", f"--signal={signal}", name, timeout=15)


def remove_container(name: str) -> None:
    """Kill and remove a container at once; a no-op when it is gone."""
    _podman("rm", "--force", "--time=0", "--ignore", name, timeout=30)


def remove_leftovers(netns: str = paths.NETNS) -> list[str]:
    """Remove the containers a previous pod runner of this namespace left behind."""
    if shutil.which("podman") is None:
        return []
    listed = _podman("ps", "--all", "--quiet", f"--filter=label={LABEL}={netns}", timeout=30)
    names = listed.stdout.split()
    for name in names:
        remove_container(name)
    return names


def write_service_account(core_v1: Any, spec: ContainerSpec, directory: Path) -> Path | None:
    """Project the pod's ServiceAccount into ``directory`` (token, ca.crt, namespace).

    The token comes from the TokenRequest API, bound to the pod: it stops working when the pod
    is deleted, as a kubelet's does.
    """
    if spec.service_account is None:
        return None
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": spec.pod,
                "uid": spec.uid,
            },
        },
    }
    token = core_v1.create_namespaced_service_account_token(
        spec.service_account, spec.namespace, request
    ).status.token
    ca = core_v1.read_namespaced_config_map("kube-root-ca.crt", spec.namespace).data["ca.crt"]
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for name, content in (("token", token), ("ca.crt", ca), ("namespace", spec.namespace)):
        target = directory / name
        target.write_text(content)
        # Readable by the container's user, whoever it is (the image runs as 65532).
        target.chmod(0o644)
    return directory


def probe(spec: ContainerSpec) -> bool:
    """One readiness check: an HTTP GET of the probe's path on the pod IP, 2xx or 3xx passes."""
    if spec.readiness is None:
        return True
    url = f"http://{spec.ip}:{spec.readiness.port}{spec.readiness.path}"
    timeout = min(spec.readiness.timeout_s, MAX_PROBE_TIMEOUT_S)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 400
    except urllib.error.HTTPError as exc:
        return 200 <= exc.code < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def images_present(names: Sequence[str]) -> list[str]:
    """Those of ``names`` that podman holds locally."""
    return [name for name in names if _podman("image", "exists", name, timeout=30).returncode == 0]
