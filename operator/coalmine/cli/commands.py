"""`kubectl coalmine`: see and steer CanaryRollouts from a terminal or a CI job.

kubectl alone can annotate and get, but steering a canary well takes more than that: a promote
is a fresh token in the right annotation (a reused token does nothing, by design), an undo must
rebuild a kept revision's template exactly, or the hash names a new revision and the fast
rollback becomes a slow canary, and "is it done?" must read the status the way the operator
means it. This module turns those into commands. What it prints comes from `coalmine.cli.view`
(pure); what it asks of the cluster goes through the `Kube` facade.

Rules the commands keep:

- The controls write only `metadata.annotations`, with a merge patch: a GitOps tool owns the
  spec, and an annotation it does not manage is no drift. Only `undo` edits the spec, and says so.
- Waiting is watching: list once, then watch from the list's resourceVersion, so a CI job sees
  every change as it happens and costs the API server one open stream, not a request a second.
- Failures are one line on stderr and a non-zero exit code. Tracebacks are left for bugs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic.alias_generators import to_camel

from coalmine import kube as k
from coalmine.api.durations import parse_duration
from coalmine.api.resource import GROUP, PLURAL, VERSION
from coalmine.api.template import images_of
from coalmine.api.template import revision_hash as template_revision
from coalmine.api.vocabulary import Control
from coalmine.cli import view
from coalmine.kube import ConflictError, Kube, KubeError, NotFoundError, Obj
from coalmine.labels import REVISION_LABEL, ROLLOUT_LABEL, TEMPLATE_ANNOTATION

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_TIMEOUT = 2
EXIT_INTERRUPTED = 130

FIELD_MANAGER = "kubectl-coalmine"
"""Shown in managedFields: whoever reads them sees the CLI made the change, not the operator."""

WATCH_SECONDS = 300
"""How long one watch request stays open before it is renewed from the last resourceVersion."""

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

ARGO_CD_WARNING = (
    "warning: undo edits spec.template. If Argo CD (or Flux) manages this CanaryRollout, that is "
    "drift: the application turns OutOfSync and self-heal may put the template back. Change the "
    "template in the Git source instead (git revert): a kept revision rolls back just as fast."
)


class CliError(Exception):
    """A failure reported in one line on stderr, ending the command with `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _now() -> datetime:
    return datetime.now(UTC)


def _clock() -> str:
    return datetime.now().astimezone().strftime("%H:%M:%S")


# --- kubeconfig -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeconfigChoice:
    """Which configuration to connect with, in kubectl's order of precedence."""

    source: str | None
    """What `Kube.connect` gets: a path, a $KUBECONFIG list, or None (in-cluster credentials)."""
    files: tuple[Path, ...]
    """The files behind it, read again here for the context's namespace."""


def kubeconfig_choice(
    explicit: str | None, environ: Mapping[str, str], home: Path
) -> KubeconfigChoice:
    """--kubeconfig, else $KUBECONFIG, else ~/.kube/config, else the pod's own credentials.

    The choice is made here rather than left to `Kube.connect`, which tries in-cluster
    credentials first (right for the operator): a person's explicit kubeconfig must win even
    in a pod, as it does for kubectl.
    """
    if explicit:
        return KubeconfigChoice(explicit, (Path(explicit).expanduser(),))
    listed = environ.get("KUBECONFIG", "")
    if listed:
        files = tuple(Path(part).expanduser() for part in listed.split(os.pathsep) if part)
        return KubeconfigChoice(listed, files)
    default = home / ".kube" / "config"
    if default.is_file():
        return KubeconfigChoice(str(default), (default,))
    return KubeconfigChoice(None, ())


def context_namespace(documents: Sequence[object]) -> str | None:
    """The namespace of the current context of these kubeconfig documents, if it sets one.

    Merged the way the kubernetes client merges them, since that decides the cluster we talk
    to: the first definition of a context wins, and the last file naming a current-context.
    """
    current: str | None = None
    contexts: dict[str, Mapping[str, Any]] = {}
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        if isinstance(document.get("current-context"), str):
            current = document["current-context"]
        for entry in document.get("contexts") or []:
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                context = entry.get("context")
                contexts.setdefault(entry["name"], context if isinstance(context, Mapping) else {})
    namespace = contexts.get(current or "", {}).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None


def default_namespace(choice: KubeconfigChoice) -> str:
    """The kubeconfig context's namespace, the pod's own namespace in a cluster, or default."""
    if not choice.files:
        try:
            return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
    documents: list[object] = []
    for path in choice.files:
        try:
            documents.append(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError):
            # Connecting reports an unusable kubeconfig in its own words; here it only means
            # the namespace cannot come from it.
            continue
    return context_namespace(documents) or "default"


# --- session and errors ---------------------------------------------------------------------


@dataclass
class Session:
    """What every command works with: the API, the namespace, and where to print."""

    kube: Kube
    namespace: str
    server: str
    out: TextIO
    err: TextIO

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def connect(
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Session:
    choice = kubeconfig_choice(
        args.kubeconfig, os.environ if environ is None else environ, home or Path.home()
    )
    if args.kubeconfig and not Path(args.kubeconfig).expanduser().is_file():
        raise CliError(f"kubeconfig {args.kubeconfig} does not exist")
    try:
        kube = Kube.connect(choice.source, connections=4)
    except Exception as error:
        # The client raises its own ConfigException (and YAML or key errors) for a kubeconfig
        # it cannot use; all of them mean the same thing to a person.
        where = choice.source or "no --kubeconfig, $KUBECONFIG or ~/.kube/config, not in a pod"
        raise CliError(f"cannot load the Kubernetes configuration ({where}): {error}") from None
    kube.field_manager = FIELD_MANAGER
    namespace = args.namespace or default_namespace(choice)
    return Session(kube, namespace, str(kube.api.configuration.host), out, err)


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def short_reason(text: str) -> str:
    """The useful end of a transport error (`Connection refused`), not urllib3's whole chain."""
    match = _ERRNO.search(text)
    if match:
        return match.group(1).strip()
    for known in ("CERTIFICATE_VERIFY_FAILED", "timed out", "Name or service not known"):
        if known in text:
            return known.replace("_", " ").lower() if known.isupper() else known
    return text if len(text) <= 300 else text[:297] + "..."


def transport_failure(error: BaseException) -> bool:
    """Whether the request never got an HTTP answer.

    `Kube.request` turns an OSError into KubeError(0), but urllib3's own errors (MaxRetryError
    when nothing listens) pass through it; recognised by module so the CLI needs no client
    import, and a real bug elsewhere still ends in a traceback.
    """
    return isinstance(error, OSError) or type(error).__module__.split(".")[0] == "urllib3"


def describe_failure(error: BaseException, server: str) -> str | None:
    """One line for an API failure, or None when the error is not one (a bug)."""
    if isinstance(error, KubeError):
        if error.status == 0:
            return f"cannot reach the Kubernetes API at {server}: {short_reason(error.message)}"
        if error.status == 401:
            return f"the Kubernetes API at {server} refused the credentials: {error.message}"
        if error.status == 403:
            return f"not allowed: {error.message}"
        return f"the Kubernetes API answered {error.status} {error.reason}: {error.message}"
    if transport_failure(error):
        return f"cannot reach the Kubernetes API at {server}: {short_reason(str(error))}"
    return None


def require_crd(session: Session) -> None:
    """Fail clearly when the cluster has no CanaryRollout resource at all."""
    try:
        group = session.kube.request("GET", f"/apis/{GROUP}/{VERSION}")
    except NotFoundError:
        group = {}
    if not any(r.get("name") == PLURAL for r in group.get("resources") or []):
        raise CliError(
            f"the CanaryRollout CRD is not installed on {session.server} (no {PLURAL} in API "
            f"{GROUP}/{VERSION}); install it: kubectl apply --server-side -f "
            "crds/coalmine.dev_canaryrollouts.yaml"
        )


def missing(session: Session, name: str) -> CliError:
    """The error for a rollout that is not there: no such object, or no such resource."""
    require_crd(session)
    return CliError(f"canaryrollout {name} not found in namespace {session.namespace}")


def fetch_rollout(session: Session, name: str) -> Obj:
    rollout = session.kube.get(k.CANARY_ROLLOUTS, session.namespace, name)
    if rollout is None:
        raise missing(session, name)
    return rollout


def rollout_selector(name: str) -> str:
    return f"{ROLLOUT_LABEL}={name}"


def fetch_deployments(session: Session, name: str) -> list[Obj]:
    return session.kube.list(
        k.DEPLOYMENTS, session.namespace, label_selector=rollout_selector(name)
    )


# --- list-then-watch ------------------------------------------------------------------------


class Follower:
    """One kind of object kept current by list-then-watch: an informer, in small.

    `run` yields a snapshot (name -> object) after listing, then after every event. When the
    server ends a watch it watches again from the last resourceVersion seen, and lists again
    only when that version has expired (410 Gone). Between events the thread sleeps in a socket
    read: nothing is polled.
    """

    def __init__(
        self,
        kube: Kube,
        resource: k.Resource,
        namespace: str,
        *,
        name: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self.label_selector = label_selector

    def _list(self) -> tuple[dict[str, Obj], str]:
        query = {}
        if self.name is not None:
            query["fieldSelector"] = f"metadata.name={self.name}"
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        # A raw list, not Kube.list: the watch starts from the list's own resourceVersion,
        # which Kube.list does not return.
        listing = self.kube.request("GET", self.resource.path(self.namespace), query=query)
        objects = {str(o["metadata"]["name"]): o for o in listing.get("items") or []}
        return objects, str((listing.get("metadata") or {}).get("resourceVersion", ""))

    def run(self, deadline: float | None = None) -> Iterator[dict[str, Obj]]:
        """Snapshots until `deadline` (time.monotonic()), or for ever when it is None."""
        objects, version = self._list()
        yield dict(objects)
        while True:
            seconds = WATCH_SECONDS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                # The server closes the watch at our deadline, so a quiet rollout still ends
                # the wait on time without any timer here.
                seconds = min(seconds, max(1, math.ceil(remaining)))
            try:
                for kind, obj in self.kube.watch(
                    self.resource,
                    self.namespace,
                    name=self.name,
                    label_selector=self.label_selector,
                    resource_version=version,
                    timeout_seconds=seconds,
                ):
                    metadata = obj.get("metadata") or {}
                    version = str(metadata.get("resourceVersion") or version)
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        objects.pop(str(metadata.get("name")), None)
                    else:
                        objects[str(metadata.get("name"))] = obj
                    yield dict(objects)
            except KubeError as error:
                if error.status != 410:
                    raise
                objects, version = self._list()
                yield dict(objects)


# --- get ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Update:
    """What a watcher thread tells the drawing thread: new objects, or a failed watch."""

    source: str
    objects: dict[str, Obj] | None = None
    error: BaseException | None = None


class LiveView:
    """`get --watch`: redraw the view on every event of the rollout or of its Deployments.

    Two threads follow the two kinds of object and post snapshots on a queue; the main thread
    draws. The main thread thus stays free to receive Ctrl-C, and events arriving together
    are drawn once.
    """

    CLEAR = "\x1b[H\x1b[2J"

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name
        self.updates: queue.Queue[Update] = queue.Queue()
        self.stop = threading.Event()

    def _follow(self, source: str, follower: Follower) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                for snapshot in follower.run():
                    self.updates.put(Update(source, objects=snapshot))
                    backoff = 1.0
            except Exception as error:
                # Any failure of the stream (API restarting, connection cut): tell the main
                # thread, wait a little longer each time, and list and watch again.
                self.updates.put(Update(source, error=error))
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _batch(self) -> list[Update]:
        # Blocks until something happens; a signal (Ctrl-C) still interrupts the wait.
        batch = [self.updates.get()]
        while True:
            try:
                batch.append(self.updates.get_nowait())
            except queue.Empty:
                return batch

    def _draw(self, body: str) -> None:
        header = f"{_clock()}  watching canaryrollout {self.name} (Ctrl-C to stop)"
        if self.session.out.isatty():
            self.session.out.write(f"{self.CLEAR}{header}\n\n{body}\n")
        else:
            self.session.out.write(f"{header}\n{body}\n\n")
        self.session.out.flush()

    def run(self) -> int:
        namespace = self.session.namespace
        followers = {
            "rollout": Follower(self.session.kube, k.CANARY_ROLLOUTS, namespace, name=self.name),
            "deployments": Follower(
                self.session.kube,
                k.DEPLOYMENTS,
                namespace,
                label_selector=rollout_selector(self.name),
            ),
        }
        for source, follower in followers.items():
            threading.Thread(
                target=self._follow, args=(source, follower), name=f"watch-{source}", daemon=True
            ).start()
        rollout: Obj | None = None
        deployments: list[Obj] | None = None
        shown = ""
        try:
            while True:
                for update in self._batch():
                    if update.error is not None:
                        reason = describe_failure(update.error, self.session.server)
                        self.session.warn(
                            f"warning: watching {update.source} failed "
                            f"({reason or update.error!r}); watching again"
                        )
                    elif update.source == "rollout" and update.objects is not None:
                        rollout = update.objects.get(self.name)
                        if rollout is None:
                            self.session.warn(
                                f"canaryrollout {self.name} was deleted from namespace {namespace}"
                            )
                            return EXIT_FAILED
                    elif update.objects is not None:
                        deployments = list(update.objects.values())
                # Draw only once both lists arrived: a first frame without the Deployments
                # would show pods missing that are not.
                if rollout is None or deployments is None:
                    continue
                body = view.rollout_view(rollout, deployments, now=_now())
                if body != shown:
                    self._draw(body)
                    shown = body
        except KeyboardInterrupt:
            self.stop.set()
            if self.session.out.isatty():
                self.session.out.write("\n")
            return EXIT_OK


def cmd_get(args: argparse.Namespace, session: Session) -> int:
    rollout = fetch_rollout(session, args.name)
    if args.watch:
        return LiveView(session, args.name).run()
    session.say(view.rollout_view(rollout, fetch_deployments(session, args.name), now=_now()))
    return EXIT_OK


# --- list -----------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, session: Session) -> int:
    namespace = None if args.all_namespaces else session.namespace
    try:
        items = session.kube.list(k.CANARY_ROLLOUTS, namespace)
    except NotFoundError:
        require_crd(session)
        raise
    if not items:
        where = "" if namespace is None else f" in namespace {namespace}"
        session.warn(f"No canaryrollouts found{where}.")
        return EXIT_OK
    session.say(view.rollouts_table(items, now=_now(), all_namespaces=namespace is None))
    return EXIT_OK


# --- promote, abort, retry ------------------------------------------------------------------


def control_note(control: Control, status: Mapping[str, Any]) -> str | None:
    """Why a token is about to do nothing, as far as the status tells; None when it will act.

    The operator records such a token anyway (so it never acts later by surprise) and says so
    in an event; saying it here saves a trip to `kubectl describe`.
    """
    walking = bool(status.get("canaryRevision")) and not status.get("abortReason")
    if control in (Control.PROMOTE, Control.PROMOTE_FULL, Control.ABORT) and not walking:
        return "no canary is walking its steps: the operator will record the token and do nothing"
    if control is Control.RETRY and not status.get("abortReason"):
        return "the rollout is not aborted: the operator will record the token and do nothing"
    return None


def parse_timeout(text: str) -> float:
    """A --timeout in seconds, from a Go duration as kubectl takes them (`90s`, `10m`)."""
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as error:
        raise CliError(f"--timeout: {error}") from None
    if seconds <= 0:
        raise CliError(f"--timeout must be more than 0 (got {text})")
    return seconds


def wait_handled(session: Session, name: str, control: Control, token: str, timeout: str) -> int:
    """Until the operator records the token as handled: it applies the effect in that update."""
    deadline = time.monotonic() + parse_timeout(timeout)
    field = to_camel(control.status_field)  # status.controls is camelCase on the wire
    follower = Follower(session.kube, k.CANARY_ROLLOUTS, session.namespace, name=name)
    for snapshot in follower.run(deadline):
        rollout = snapshot.get(name)
        if rollout is None:
            raise CliError(f"canaryrollout {name} was deleted while waiting")
        controls = (rollout.get("status") or {}).get("controls") or {}
        if controls.get(field) == token:
            session.say(f"{_clock()}  handled: {view.progress_line(rollout)}")
            return EXIT_OK
    session.warn(
        f"error: the operator did not handle the token within {timeout}: is it running? "
        f"(kubectl get events --field-selector involvedObject.name={name})"
    )
    return EXIT_TIMEOUT


def cmd_control(args: argparse.Namespace, session: Session) -> int:
    control = {
        "promote": Control.PROMOTE_FULL if getattr(args, "full", False) else Control.PROMOTE,
        "abort": Control.ABORT,
        "retry": Control.RETRY,
    }[args.command]
    rollout = fetch_rollout(session, args.name)
    note = control_note(control, rollout.get("status") or {})
    token = uuid.uuid4().hex
    patch = {"metadata": {"annotations": {control.annotation: token}}}
    try:
        session.kube.patch(k.CANARY_ROLLOUTS, session.namespace, args.name, patch)
    except NotFoundError:
        raise missing(session, args.name) from None
    session.say(f"canaryrollout {args.name}: {control.value} requested, token {token}")
    session.say(f"  ({control.annotation}: the operator will {control.meaning})")
    if note:
        session.warn(f"note: {note}")
    if args.wait:
        return wait_handled(session, args.name, control, token, args.timeout)
    return EXIT_OK


# --- undo -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeptRevision:
    """A revision whose Deployment is still there, so going back to it is a fast rollback."""

    revision: str
    template: str | None
    """The coalmine.dev/template annotation: the pod template, as JSON, the revision came from."""
    created: datetime | None


def kept_revisions(deployments: Sequence[Obj]) -> dict[str, KeptRevision]:
    kept = {}
    for deployment in deployments:
        metadata = deployment.get("metadata") or {}
        revision = (metadata.get("labels") or {}).get(REVISION_LABEL)
        if not revision:
            continue
        kept[revision] = KeptRevision(
            revision=revision,
            template=(metadata.get("annotations") or {}).get(TEMPLATE_ANNOTATION),
            created=view.parse_time(metadata.get("creationTimestamp")),
        )
    return kept


def undo_target(
    spec_revision: str,
    stable: str | None,
    history: Sequence[Mapping[str, Any]],
    kept: Mapping[str, KeptRevision],
) -> str | None:
    """The revision `undo` goes back to when none is named.

    A template that is not the stable one (a canary running, or aborted) is undone by going
    back to the stable revision. Otherwise it is the previous stable: the newest revision of
    the history that was promoted, other than the current stable; failing that (the history
    is short), the newest kept Deployment the history says nothing about.
    """
    if stable and spec_revision != stable and stable in kept:
        return stable
    candidates = {r for r in kept if r not in (stable, spec_revision)}
    for record in history:
        if record.get("revision") in candidates and record.get("outcome") == "Promoted":
            return str(record["revision"])
    mentioned = {record.get("revision") for record in history}
    unknown = [kept[r] for r in candidates if r not in mentioned]
    if not unknown:
        return None
    oldest = datetime.min.replace(tzinfo=UTC)
    return max(unknown, key=lambda r: (r.created or oldest, r.revision)).revision


def resolve_revision(wanted: str, kept: Mapping[str, KeptRevision]) -> str:
    """A revision named in full or by a unique prefix, among the kept ones."""
    if wanted in kept:
        return wanted
    matches = sorted(r for r in kept if r.startswith(wanted))
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(kept)) or "none"
    if matches:
        raise CliError(f"revision {wanted} is ambiguous: {', '.join(matches)}")
    raise CliError(
        f"revision {wanted} is not kept (kept revisions: {known}); only a kept revision can be "
        "restored, see spec.revisionHistoryLimit"
    )


def restore_template(recorded: str, revision: str) -> dict[str, Any]:
    """The user's pod template of a revision, rebuilt from its Deployment's annotation.

    The annotation holds the template with the operator's two labels added (and the
    `metadata.labels` it had to create for them). Both forms, with and without those empty
    maps, are tried: only the one whose hash is the revision's name brings the very revision
    back, and thus the fast rollback.
    """
    try:
        template = json.loads(recorded)
    except ValueError:
        template = None
    if not isinstance(template, dict):
        raise CliError(f"the {TEMPLATE_ANNOTATION} annotation of revision {revision} is not JSON")
    metadata = template.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    if isinstance(labels, dict):
        labels.pop(ROLLOUT_LABEL, None)
        labels.pop(REVISION_LABEL, None)
    candidates = [json.loads(json.dumps(template))]
    if isinstance(metadata, dict) and labels == {}:
        del metadata["labels"]
        candidates.append(json.loads(json.dumps(template)))
        if not metadata:
            del template["metadata"]
            candidates.append(template)
    for candidate in candidates:
        if template_revision(candidate) == revision:
            return dict(candidate)
    raise CliError(
        f"cannot rebuild the template of revision {revision} exactly from its Deployment (the "
        f"{TEMPLATE_ANNOTATION} annotation no longer hashes to it); not changing anything"
    )


def cmd_undo(args: argparse.Namespace, session: Session) -> int:
    rollout = fetch_rollout(session, args.name)
    spec = rollout.get("spec") or {}
    status = rollout.get("status") or {}
    spec_revision = template_revision(spec.get("template") or {})
    kept = kept_revisions(fetch_deployments(session, args.name))
    if args.to_revision:
        target = resolve_revision(args.to_revision, kept)
    else:
        found = undo_target(
            spec_revision, status.get("stableRevision"), status.get("history") or [], kept
        )
        if found is None:
            known = ", ".join(sorted(kept)) or "none"
            raise CliError(
                f"no earlier revision of canaryrollout {args.name} is kept to go back to "
                f"(kept: {known}); name one with --to-revision"
            )
        target = found
    if target == spec_revision:
        raise CliError(f"spec.template is revision {target} already: nothing to undo")
    recorded = kept[target].template
    if not recorded:
        raise CliError(f"the Deployment of revision {target} has no {TEMPLATE_ANNOTATION}")
    template = restore_template(recorded, target)
    session.warn(ARGO_CD_WARNING)
    operations = [
        # Replacing resourceVersion with the one read makes it a precondition: the API server
        # answers 409 if anyone changed the rollout since, instead of overwriting their change.
        {
            "op": "replace",
            "path": "/metadata/resourceVersion",
            "value": rollout["metadata"]["resourceVersion"],
        },
        # The whole template, replaced: a merge patch would keep fields only the newer one has.
        {"op": "replace", "path": "/spec/template", "value": template},
    ]
    try:
        session.kube.patch(
            k.CANARY_ROLLOUTS, session.namespace, args.name, operations, patch_type="json"
        )
    except ConflictError:
        raise CliError(
            f"canaryrollout {args.name} changed while undo read it; run undo again"
        ) from None
    except NotFoundError:
        raise missing(session, args.name) from None
    session.say(
        f"canaryrollout {args.name}: spec.template set back from revision {spec_revision} to "
        f"revision {target} ({', '.join(images_of(template)) or 'no image'})"
    )
    session.say("  it is kept, so the operator rolls back to it fast, without walking the steps")
    return EXIT_OK


# --- status ---------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, session: Session) -> int:
    deadline = time.monotonic() + parse_timeout(args.timeout)
    fetch_rollout(session, args.name)
    follower = Follower(session.kube, k.CANARY_ROLLOUTS, session.namespace, name=args.name)
    last = ""
    why = "no status yet"
    for snapshot in follower.run(deadline):
        rollout = snapshot.get(args.name)
        if rollout is None:
            raise CliError(f"canaryrollout {args.name} was deleted while waiting")
        line = view.progress_line(rollout)
        if line != last:
            session.say(f"{_clock()}  {line}")
            last = line
        state, why = view.completion(rollout)
        if state is view.Completion.SUCCEEDED:
            session.say(f"{_clock()}  rollout complete: {why}")
            return EXIT_OK
        if state is view.Completion.FAILED:
            session.warn(f"error: canaryrollout {args.name} failed: {why}")
            return EXIT_FAILED
    session.warn(f"error: timed out after {args.timeout}: {why}")
    return EXIT_TIMEOUT


# --- arguments ------------------------------------------------------------------------------


Handler = Callable[[argparse.Namespace, Session], int]


def _common(parser: argparse.ArgumentParser) -> None:
    # On the top parser and every subcommand, so `-n x get a` and `get a -n x` both work;
    # SUPPRESS keeps a subcommand from resetting what was given before it.
    parser.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        help="namespace (default: the kubeconfig context's, else default)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=argparse.SUPPRESS,
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="wait until the operator has handled the token"
    )
    parser.add_argument(
        "--timeout", default="2m", help="with --wait: how long, as a Go duration (default 2m)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl coalmine",
        description="See and steer coalmine CanaryRollouts.",
        epilog="Exit codes: 0 done, 1 error or failed rollout, 2 timeout (and usage errors), "
        "130 interrupted. See docs/cli.md.",
    )
    _common(parser)
    parser.set_defaults(namespace=None, kubeconfig=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub)
        sub.set_defaults(handler=handler)
        return sub

    get = command("get", cmd_get, "show where a rollout stands (--watch: live, on every change)")
    get.add_argument("name", metavar="NAME")
    get.add_argument("-w", "--watch", action="store_true", help="redraw on every change")

    listing = command("list", cmd_list, "list the rollouts of a namespace, or of all (-A)")
    listing.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list across all namespaces"
    )

    promote = command("promote", cmd_control, "complete the current step (--full: every step)")
    promote.add_argument("name", metavar="NAME")
    promote.add_argument(
        "--full", action="store_true", help="skip every remaining step: promote the canary now"
    )
    _wait_options(promote)

    abort = command("abort", cmd_control, "send all traffic back to stable, scale the canary down")
    abort.add_argument("name", metavar="NAME")
    _wait_options(abort)

    retry = command("retry", cmd_control, "start an aborted canary again from its first step")
    retry.add_argument("name", metavar="NAME")
    _wait_options(retry)

    undo = command("undo", cmd_undo, "set the template back to a kept revision (edits the spec)")
    undo.add_argument("name", metavar="NAME")
    undo.add_argument(
        "--to-revision",
        metavar="REV",
        help="revision to go back to, in full or a unique prefix (default: the previous stable)",
    )

    status = command("status", cmd_status, "wait until the rollout is done; exit 0, 1 or 2")
    status.add_argument("name", metavar="NAME")
    status.add_argument(
        "--timeout", default="10m", help="how long to wait, as a Go duration (default 10m)"
    )
    return parser


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser().parse_args(argv)
    server = "(unknown)"
    try:
        session = connect(args, out, err)
        server = session.server
        handler: Handler = args.handler
        return handler(args, session)
    except CliError as error:
        err.write(f"error: {error}\n")
        return error.code
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter's final
        # flush of stdout from failing again on the way out.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as error:
        message = describe_failure(error, server)
        if message is None:
            raise
        err.write(f"error: {message}\n")
        return EXIT_FAILED
