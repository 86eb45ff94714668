"""A stand-in container runtime for two images: the coalmine demo app and the operator.

KWOK makes pods Running with real-looking pod IPs but runs nothing, so a canary
would have no traffic to serve and no metrics for Prometheus to scrape. This
runner watches Pods and, for each Running pod of ``coalmine.dev/demo-app``,
keeps one ``devenv.demoapp`` process listening on the pod IP (which the local
network namespace routes locally), configured from the container's env.

Pods of the operator image (``coalmine:<tag>``, what ``make image`` builds) run
that image for real, in podman, as ``devenv.containers`` describes; they are
Ready only while their readiness probe passes.

Run it as ``python -m devenv.podrunner --kubeconfig PATH --state-file PATH
[--log-dir DIR]``. The state file tells tests and people which process (or
container) stands in for which pod.

The desired state (:func:`desired_processes`) is a pure function of the pod
list so it can be tested without a cluster; :class:`Runner` only converges the
children onto it.
"""

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from coalmine.kube import CacheNotReadyError, Informer, Kube
from coalmine.resources import PODS
from devenv import containers, paths
from devenv.containers import ContainerSpec

IMAGE_REPOSITORY = "coalmine.dev/demo-app"
DEFAULT_PORT = 8080
#: Time a child gets between SIGTERM and SIGKILL, like a short grace period.
STOP_TIMEOUT_S = 3.0
#: One watch request stays open this long before it is resumed from its last version.
WATCH_TIMEOUT_S = 60
#: How often the main loop wakes up to notice dead children and signals.
TICK_S = 0.25
#: A child that dies sooner than this after start is crash-looping and backs off.
MIN_HEALTHY_RUN_S = 10.0
MAX_BACKOFF_S = 30.0

# Where `-m devenv.demoapp` is importable from, whatever the caller's PYTHONPATH.
_TOOLS_DIR = Path(__file__).resolve().parent.parent

log = logging.getLogger("podrunner")

PodKey = tuple[str, str, str]
"""(namespace, name, uid): the uid tells a re-created pod from its predecessor."""


@dataclass(frozen=True)
class ProcessSpec:
    """Everything that decides how a demo app process is started.

    Equal specs mean the running process can stay; any difference means restart.
    """

    ip: str
    port: int
    version: str
    env: tuple[tuple[str, str], ...]
    namespace: str
    pod: str

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "devenv.demoapp",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--version",
            self.version,
            "--pod",
            self.pod,
            "--namespace",
            self.namespace,
        ]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env.update(self.env)
        pythonpath = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_TOOLS_DIR), pythonpath) if p)
        return env


# --- desired state: pure ---------------------------------------------------------------------


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """Split an image reference into (repository, tag, digest); tag and digest may be None."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    # A colon before the last slash is a registry port, not a tag.
    if colon > slash:
        return name[:colon], name[colon + 1 :] or None, digest or None
    return name, None, digest or None


def _literal_env(container: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for entry in container.get("env") or ():
        name = entry.get("name")
        # valueFrom needs the API (secrets, fieldRefs...) that a stand-in cannot resolve.
        if not name or entry.get("valueFrom") is not None:
            continue
        value = entry.get("value")
        pairs.append((str(name), "" if value is None else str(value)))
    return tuple(pairs)


def _version(tag: str | None, digest: str | None, env: tuple[tuple[str, str], ...]) -> str:
    if tag:
        return tag
    declared = dict(env).get("DEMO_VERSION")
    if declared:
        return declared
    if digest:
        algorithm, _, hexdigest = digest.partition(":")
        return (hexdigest or algorithm)[:12]
    return "latest"


def _first_port(container: Mapping[str, Any]) -> int:
    for port in container.get("ports") or ():
        number = port.get("containerPort")
        if isinstance(number, int) and 0 < number < 65536:
            return number
    return DEFAULT_PORT


def spec_for_pod(pod: Mapping[str, Any]) -> ProcessSpec | None:
    """The process a pod needs, or None if it runs no demo app right now."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    # A kubelet stops a deleted pod's containers before the pod object goes away.
    if metadata.get("deletionTimestamp"):
        return None
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not ip:
        return None
    for container in (pod.get("spec") or {}).get("containers") or ():
        repository, tag, digest = split_image(str(container.get("image") or ""))
        if repository != IMAGE_REPOSITORY:
            continue
        env = _literal_env(container)
        return ProcessSpec(
            ip=str(ip),
            port=_first_port(container),
            version=_version(tag, digest, env),
            env=env,
            namespace=str(metadata.get("namespace") or "default"),
            pod=str(metadata.get("name") or ""),
        )
    return None


Spec = ProcessSpec | ContainerSpec
"""A demo app process, or a container of the operator image."""


def terminating_containers(pods: list[dict[str, Any]]) -> list[PodKey]:
    """Pods of the operator image being deleted: their pod object waits for their container."""
    keys = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        containers_ = (pod.get("spec") or {}).get("containers") or ()
        if metadata.get("deletionTimestamp") and any(
            containers.runs_as_container(c) for c in containers_
        ):
            keys.append(
                (
                    str(metadata.get("namespace")),
                    str(metadata.get("name")),
                    str(metadata.get("uid")),
                )
            )
    return keys


def desired_processes(pods: list[dict[str, Any]]) -> dict[PodKey, Spec]:
    """One demo app process or operator container per Running pod that has one and an IP.

    ``pods`` are plain dicts with the API's camelCase keys, as returned by
    ``ApiClient().sanitize_for_serialization`` or read as raw JSON.
    """
    desired: dict[PodKey, Spec] = {}
    for pod in pods:
        spec: Spec | None = spec_for_pod(pod) or containers.container_spec(pod)
        if spec is None:
            continue
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        desired[(spec.namespace, spec.pod, uid)] = spec
    return desired


# --- processes -------------------------------------------------------------------------------


@dataclass
class Child:
    spec: Spec
    process: subprocess.Popen[bytes]
    started: float
    ready_reported: bool = True
    """Whether the pod's Ready condition holds what ``ready`` says (KWOK's stage made it not
    Ready), as a kubelet keeps it."""
    ready: bool = False
    """Demo app: its process answered once. Container: its readiness probe passes."""
    passed: int = 0
    failed: int = 0
    """Consecutive readiness probe results of a container, against the probe's thresholds."""
    next_probe: float = 0.0


@dataclass
class Backoff:
    failures: int
    not_before: float


class Runner:
    """Owns the demo app children and converges them onto a desired state."""

    def __init__(
        self,
        state_file: Path,
        log_dir: Path | None,
        core_v1: Any = None,
        netns: str = paths.NETNS,
    ) -> None:
        self.state_file = state_file
        self.log_dir = log_dir
        self.core_v1 = core_v1
        """The API, for the ServiceAccount tokens of containers (None: no containers run)."""
        self.netns = netns
        self.children: dict[PodKey, Child] = {}
        self._backoff: dict[PodKey, Backoff] = {}
        self._desired: dict[PodKey, Spec] = {}
        self._restarts: dict[PodKey, int] = {}
        self.stopping: dict[PodKey, tuple[Child, float]] = {}
        """Containers asked to stop, and when their grace period ends (they are not waited
        for: a kubelet's loop never blocks on one pod)."""

    def reconcile(self, desired: Mapping[PodKey, Spec]) -> None:
        """Start missing, stop extra, restart changed or dead children; then record the state."""
        self._desired = dict(desired)
        now = time.monotonic()
        doomed: list[Child] = []
        for key, child in list(self.children.items()):
            if child.process.poll() is not None:
                self._note_exit(key, child, now)
                del self.children[key]
            elif desired.get(key) != child.spec:
                del self.children[key]
                if isinstance(child.spec, ContainerSpec):
                    self._begin_stop(key, child, now)
                else:
                    doomed.append(child)
        # Stopping first frees the address when a new pod inherits an old pod's IP. (A
        # container's pod keeps its IP until the container has stopped: see release.)
        stop_children(doomed)
        for key in [k for k in self._backoff if k not in desired]:
            del self._backoff[key]
        for key in [k for k in self._restarts if k not in desired]:
            del self._restarts[key]
        for key, spec in desired.items():
            if key in self.children:
                continue
            backoff = self._backoff.get(key)
            if backoff is not None and now < backoff.not_before:
                continue
            self._start(key, spec)
        self.write_state()

    def _begin_stop(self, key: PodKey, child: Child, now: float) -> None:
        assert isinstance(child.spec, ContainerSpec)
        if child.process.poll() is None:
            # To the container's process itself: podman's client would only relay it.
            containers.signal_container(child.spec.name, "TERM")
        self.stopping[key] = (child, now + child.spec.grace_s)
        log.info(
            "stopping %s/%s (grace %.0f s)",
            child.spec.namespace,
            child.spec.pod,
            child.spec.grace_s,
        )

    def reap(self) -> bool:
        """Forget the containers that stopped; kill those past their grace. True if any went."""
        now = time.monotonic()
        gone = False
        for key, (child, deadline) in list(self.stopping.items()):
            if child.process.poll() is None and now < deadline:
                continue
            if child.process.poll() is None:
                assert isinstance(child.spec, ContainerSpec)
                log.warning("%s/%s outlived its grace period: killed", key[0], key[1])
                containers.remove_container(child.spec.name)
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()
            log.info("stopped %s/%s (exit %s)", key[0], key[1], child.process.returncode)
            del self.stopping[key]
            gone = True
        return gone

    def release(self, core_v1: Any, terminating: Sequence[PodKey]) -> None:
        """Delete the pod objects of terminating container pods whose container has stopped.

        A kubelet removes a pod only once its containers are gone, so a pod keeps its IP, and
        its bound ServiceAccount token keeps working, for the whole grace period (KWOK's
        pod-delete stage leaves these pods to us: build-tools.sh).
        """
        for key in terminating:
            if key in self.children or key in self.stopping:
                continue
            namespace, name, uid = key
            try:
                core_v1.delete_namespaced_pod(
                    name,
                    namespace,
                    body=client.V1DeleteOptions(
                        grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                    ),
                )
            except ApiException as exc:
                if exc.status not in (404, 409):  # gone, or a new pod of that name
                    log.warning("cannot delete pod %s/%s: %s", namespace, name, exc.reason)
                continue
            log.info("deleted pod %s/%s: its container stopped", namespace, name)

    def report_ready(self, core_v1: Any) -> None:
        """Keep each pod's Ready condition on what its readiness check says (KWOK's stage left
        them not Ready).

        A demo pod becomes Ready once its process listens, and stays so. A container follows
        its readiness probe, both ways, with the probe's period and thresholds. Until Ready,
        the pod's endpoints are not ready, so no gateway sends them a request that would be
        refused: the readiness probe a kubelet would run, done here.
        """
        now = time.monotonic()
        for key, child in self.children.items():
            if child.process.poll() is not None:
                continue
            if isinstance(child.spec, ContainerSpec):
                self._probe_container(child, now)
            elif not child.ready and _listening(child.spec.ip, child.spec.port):
                child.ready, child.ready_reported = True, False
            if child.ready_reported:
                continue
            try:
                _set_ready(
                    core_v1,
                    child.spec.namespace,
                    child.spec.pod,
                    ready=child.ready,
                    restarts=self._restarts.get(key, 0),
                )
            except ApiException as exc:
                if exc.status != 404:  # gone: nothing to mark; anything else: next tick
                    log.warning(
                        "cannot mark %s/%s Ready=%s: %s",
                        child.spec.namespace,
                        child.spec.pod,
                        child.ready,
                        exc.reason,
                    )
                    continue
            child.ready_reported = True
            log.info("marked %s/%s Ready=%s", child.spec.namespace, child.spec.pod, child.ready)

    @staticmethod
    def _probe_container(child: Child, now: float) -> None:
        spec = child.spec
        assert isinstance(spec, ContainerSpec)
        probe = spec.readiness
        if probe is None:
            # No probe: Ready as soon as the container runs, as a kubelet does.
            if not child.ready:
                child.ready, child.ready_reported = True, False
            return
        if now < max(child.next_probe, child.started + probe.initial_delay_s):
            return
        child.next_probe = now + probe.period_s
        if containers.probe(spec):
            child.passed, child.failed = child.passed + 1, 0
        else:
            child.passed, child.failed = 0, child.failed + 1
        ready = child.ready
        if not child.ready and child.passed >= probe.success_threshold:
            ready = True
        elif child.ready and child.failed >= probe.failure_threshold:
            ready = False
        if ready != child.ready:
            child.ready = ready
            child.ready_reported = False

    def needs_attention(self) -> bool:
        """True when a child died or a backed-off restart is due, without an API event."""
        if any(child.process.poll() is not None for child in self.children.values()):
            return True
        now = time.monotonic()
        return any(
            key not in self.children and key in self._desired and now >= b.not_before
            for key, b in self._backoff.items()
        )

    def retry(self) -> None:
        self.reconcile(self._desired)

    def stop_all(self) -> None:
        children = list(self.children.values()) + [c for c, _ in self.stopping.values()]
        self.children.clear()
        self.stopping.clear()
        stop_children(children)
        self.write_state()

    def state(self) -> dict[str, Any]:
        pods: dict[str, dict[str, Any]] = {}
        for child in self.children.values():
            spec = child.spec
            entry: dict[str, Any] = {"pid": child.process.pid, "ip": spec.ip, "port": spec.port}
            if isinstance(spec, ContainerSpec):
                entry.update(container=spec.name, image=spec.image, ready=child.ready)
            else:
                entry["version"] = spec.version
            pods[f"{spec.namespace}/{spec.pod}"] = entry
        return {"pods": pods, "updated": time.time()}

    def write_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        # Readers poll this file, so they must never see it half written.
        fd, tmp = tempfile.mkstemp(
            dir=self.state_file.parent, prefix=f".{self.state_file.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(self.state(), out, indent=2, sort_keys=True)
                out.write("\n")
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _command(self, spec: Spec) -> tuple[list[str], dict[str, str]]:
        if isinstance(spec, ProcessSpec):
            return spec.command(), spec.environment(os.environ)
        if self.core_v1 is None:
            raise OSError("no API client to request the pod's ServiceAccount token with")
        # A container left by a predecessor that died holds the name: take it over.
        containers.remove_container(spec.name)
        where = self.state_file.parent / "pods" / f"{spec.namespace}_{spec.pod}_{spec.uid}"
        try:
            secrets = containers.write_service_account(self.core_v1, spec, where / "serviceaccount")
        except ApiException as exc:
            raise OSError(f"no ServiceAccount token: {exc.reason}") from exc
        return spec.podman_run(secrets, self.netns), containers.podman_env(os.environ)

    def _start(self, key: PodKey, spec: Spec) -> None:
        output: IO[bytes] | int = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            # Append, so a restarted child's log follows the reason its predecessor died.
            output = (self.log_dir / f"{spec.namespace}_{spec.pod}.log").open("ab")
        try:
            command, environment = self._command(spec)
            process = subprocess.Popen(
                command,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                # Its own session keeps terminal signals meant for the runner away
                # from it and lets the runner signal its whole process group.
                start_new_session=True,
            )
        except (OSError, containers.PodmanMissingError) as exc:
            log.error("cannot start %s/%s: %s", spec.namespace, spec.pod, exc)
            self._backoff[key] = self._next_backoff(key, time.monotonic())
            return
        finally:
            if not isinstance(output, int):
                output.close()
        # A container's pod is marked not Ready at once: it may be a restart, or a runner's
        # restart, after which the pod still says Ready.
        self.children[key] = Child(
            spec, process, time.monotonic(), ready_reported=isinstance(spec, ProcessSpec)
        )
        log.info(
            "started %s/%s (%s) on %s (pid %d)",
            spec.namespace,
            spec.pod,
            spec.image if isinstance(spec, ContainerSpec) else f"demo app {spec.version}",
            spec.ip,
            process.pid,
        )

    def _note_exit(self, key: PodKey, child: Child, now: float) -> None:
        ran = now - child.started
        spec = child.spec
        self._restarts[key] = self._restarts.get(key, 0) + 1
        if ran >= MIN_HEALTHY_RUN_S:
            self._backoff.pop(key, None)
            delay = 0.0
        else:
            self._backoff[key] = self._next_backoff(key, now)
            delay = self._backoff[key].not_before - now
        log.warning(
            "%s/%s exited with %s after %.1f s; restarting in %.0f s",
            spec.namespace,
            spec.pod,
            child.process.returncode,
            ran,
            delay,
        )

    def _next_backoff(self, key: PodKey, now: float) -> Backoff:
        previous = self._backoff.get(key)
        failures = 1 if previous is None else previous.failures + 1
        return Backoff(failures, now + min(MAX_BACKOFF_S, 2.0 ** (failures - 1)))


def _listening(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.2):
            return True
    except OSError:
        return False


def _set_ready(core_v1: Any, namespace: str, name: str, *, ready: bool, restarts: int) -> None:
    pod = core_v1.read_namespaced_pod_status(name, namespace)
    status = client.ApiClient().sanitize_for_serialization(pod).get("status", {})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    value = "True" if ready else "False"
    conditions = [
        {
            **c,
            "status": value,
            "lastTransitionTime": now,
            "reason": None if ready else "ReadinessProbeFailed",
        }
        if c.get("type") in ("Ready", "ContainersReady") and c.get("status") != value
        else c
        for c in status.get("conditions", [])
    ]
    statuses = [
        {**c, "ready": ready, "restartCount": restarts} for c in status.get("containerStatuses", [])
    ]
    body = {"status": {"conditions": conditions, "containerStatuses": statuses}}
    core_v1.patch_namespaced_pod_status(name, namespace, body)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    # The child may have exited on its own since the last poll.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def stop_children(children: Sequence[Child], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM all, then SIGKILL whoever is still there after ``timeout``.

    A container gets its pod's grace period instead, and is removed at its end. Signalling
    all before waiting on any bounds the total time by the longest of them.
    """
    started = time.monotonic()
    for child in children:
        if child.process.poll() is not None:
            continue
        if isinstance(child.spec, ContainerSpec):
            # To the container's process itself: podman's client would only relay it.
            containers.signal_container(child.spec.name, "TERM")
        else:
            _signal_group(child.process, signal.SIGTERM)
    for child in children:
        grace = child.spec.grace_s if isinstance(child.spec, ContainerSpec) else timeout
        try:
            child.process.wait(timeout=max(0.0, started + grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            if isinstance(child.spec, ContainerSpec):
                containers.remove_container(child.spec.name)
            _signal_group(child.process, signal.SIGKILL)
            child.process.wait()
        log.info(
            "stopped %s/%s (pid %d, exit %s)",
            child.spec.namespace,
            child.spec.pod,
            child.process.pid,
            child.process.returncode,
        )


# --- watching --------------------------------------------------------------------------------


def _current(pods: Informer) -> list[dict[str, Any]] | None:
    """The pods as last seen; None while the cache cannot be trusted (a broken watch): then
    nothing is started or stopped, least of all every process because the list looks empty."""
    try:
        return pods.select()
    except CacheNotReadyError:
        return None


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="devenv.podrunner", description="Run the demo app for KWOK's simulated pods."
    )
    parser.add_argument("--kubeconfig", required=True, type=Path, help="cluster to watch")
    parser.add_argument(
        "--state-file", required=True, type=Path, help="JSON file rewritten after every change"
    )
    parser.add_argument(
        "--log-dir", type=Path, help="where each child's output goes, as <ns>_<pod>.log"
    )
    parser.add_argument(
        "--netns",
        default=paths.NETNS,
        help="the network namespace (in /run/netns) that containers join: the runner's own",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config.load_kube_config(config_file=str(args.kubeconfig))

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    core_v1 = client.CoreV1Api()
    runner = Runner(args.state_file, args.log_dir, core_v1, args.netns)
    runner.write_state()
    for name in containers.remove_leftovers(args.netns):
        log.info("removed container %s, left by a previous runner", name)
    # The operator's own informer: list, watch from the list's version, re-list on 410 Gone,
    # back off on errors. Its thread only says "something changed"; the main thread owns all
    # state, and stays free to react to signals and dead children.
    changed: queue.Queue[None] = queue.Queue()
    pods = Informer(Kube.connect(str(args.kubeconfig)), PODS, watch_seconds=WATCH_TIMEOUT_S)
    pods.handlers.append(lambda *_: changed.put(None))
    pods.recovered.append(lambda: changed.put(None))
    pods.start()
    log.info("watching pods with %s; state in %s", args.kubeconfig, args.state_file)
    try:
        while not stopping:
            try:
                # A bounded wait, so a signal or a dead child is noticed within a tick.
                changed.get(timeout=TICK_S)
            except queue.Empty:
                if runner.needs_attention():
                    runner.retry()
                # The cache (a copy of every pod) is read only when a process ended, not on
                # every idle tick.
                if runner.reap() and (current := _current(pods)) is not None:
                    runner.release(core_v1, terminating_containers(current))
                runner.report_ready(core_v1)
                continue
            # Fold a burst of events (a rollout, a re-list) into one reconcile.
            while not changed.empty():
                changed.get_nowait()
            current = _current(pods)
            if current is not None:
                runner.reconcile(desired_processes(current))
                runner.release(core_v1, terminating_containers(current))
            runner.report_ready(core_v1)
    finally:
        pods.stop()
        log.info("stopping %d demo app(s) and container(s)", len(runner.children))
        runner.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
