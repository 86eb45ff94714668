"""`kubectl coalmine`: see and steer CanaryRollouts from a terminal or a CI job.

The commands and their arguments; the connection is `cli.session`'s, the kubeconfig rules
`cli.kubeconfig`'s, watching `cli.follow`'s, and what is printed `cli.view`'s.

kubectl alone can annotate and get, but steering a canary well takes more than that: a promote
is a fresh token in the right annotation (a reused token does nothing, by design), an undo must
rebuild a kept revision's template exactly, or the hash names a new revision and the fast
rollback becomes a slow canary, and "is it done?" must read the status the way the operator
means it. This module turns those into commands. What it prints comes from `coalmine.cli.view`
(pure); what it asks of the cluster goes through the `Kube` facade.

Rules the commands keep:

- The controls write only `metadata.annotations`, with a merge patch: a GitOps tool owns the
  spec, and an annotation it does not manage is no drift. Only `undo` edits the spec, and says so.
- Waiting is watching (`cli.follow`): a CI job sees every change as it happens and costs the
  API server one open stream, not a request a second.
- Failures are one line on stderr and a non-zero exit code. Tracebacks are left for bugs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic.alias_generators import to_camel

from coalmine import kube as k
from coalmine.api.durations import parse_duration
from coalmine.api.template import images_of
from coalmine.api.template import revision_hash as template_revision
from coalmine.api.vocabulary import Control
from coalmine.cli import view
from coalmine.cli.follow import LiveView, clock, follow_rollout, now
from coalmine.cli.session import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
    Session,
    connect,
    describe_failure,
    fetch_deployments,
    fetch_rollout,
    missing,
    require_crd,
)
from coalmine.kube import ConflictError, NotFoundError, Obj
from coalmine.labels import (
    RESTARTED_AT_ANNOTATION,
    REVISION_LABEL,
    ROLLOUT_LABEL,
    TEMPLATE_ANNOTATION,
)

ARGO_CD_WARNING = (
    "warning: undo edits spec.template. If Argo CD (or Flux) manages this CanaryRollout, that is "
    "drift: the application turns OutOfSync and self-heal may put the template back. Change the "
    "template in the Git source instead (git revert): a kept revision rolls back just as fast."
)


def cmd_get(args: argparse.Namespace, session: Session) -> int:
    rollout = fetch_rollout(session, args.name)
    if args.watch:
        return LiveView(session, args.name).run()
    session.say(view.rollout_view(rollout, fetch_deployments(session, args.name), now=now()))
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
    session.say(view.rollouts_table(items, now=now(), all_namespaces=namespace is None))
    return EXIT_OK


# --- promote, abort, retry, pause, resume, restart ---------------------------------------------


def control_note(control: Control, status: Mapping[str, Any]) -> str | None:
    """Why a token is about to do nothing, as far as the status tells; None when it will act.

    The operator records such a token anyway (so it never acts later by surprise) and says so
    in an event; saying it here saves a trip to `kubectl describe`.
    """
    in_flight = bool(status.get("canaryRevision")) and not status.get("abortReason")
    paused = bool(status.get("pausedByUser"))
    promotes = control in (Control.PROMOTE, Control.PROMOTE_FULL)
    checks: list[tuple[bool, str]] = [
        (
            (promotes or control is Control.ABORT) and not in_flight,
            "no canary is walking its steps",
        ),
        (promotes and paused, "the rollout is paused: resume it first"),
        (control is Control.RETRY and not status.get("abortReason"), "the rollout is not aborted"),
        (control is Control.PAUSE and paused, "the rollout is paused already"),
        (control is Control.PAUSE and not in_flight, "no canary is in flight to hold"),
        (control is Control.RESUME and not paused, "the rollout is not paused"),
        (
            control is Control.RESTART and not status.get("stableRevision"),
            "there is no stable revision yet",
        ),
    ]
    for applies, why in checks:
        if applies:
            return f"{why}: the operator will record the token and do nothing"
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

    def handled(rollout: Obj) -> Obj | None:
        controls = (rollout.get("status") or {}).get("controls") or {}
        return rollout if controls.get(field) == token else None

    rollout = follow_rollout(session, name, deadline, handled)
    if rollout is not None:
        session.say(f"{clock()}  handled: {view.progress_line(rollout)}")
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
        "pause": Control.PAUSE,
        "resume": Control.RESUME,
        "restart": Control.RESTART,
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
    `metadata.labels` it had to create for them), and after a restart (coalmine.dev/restart)
    its stamp among the annotations (and the map it had to create). Every form, with and
    without those emptied maps, is tried: only the one whose hash is the revision's name brings
    the very revision back, and thus the fast rollback.
    """
    try:
        template = json.loads(recorded)
    except ValueError:
        template = None
    if not isinstance(template, dict):
        raise CliError(f"the {TEMPLATE_ANNOTATION} annotation of revision {revision} is not JSON")
    metadata = template.get("metadata")
    if isinstance(metadata, dict):
        for key, ours in (
            ("labels", (ROLLOUT_LABEL, REVISION_LABEL)),
            ("annotations", (RESTARTED_AT_ANNOTATION,)),
        ):
            entries = metadata.get(key)
            if isinstance(entries, dict):
                for name in ours:
                    entries.pop(name, None)
    for candidate in _without_emptied_maps(template):
        if template_revision(candidate) == revision:
            return candidate
    raise CliError(
        f"cannot rebuild the template of revision {revision} exactly from its Deployment (the "
        f"{TEMPLATE_ANNOTATION} annotation no longer hashes to it); not changing anything"
    )


def _without_emptied_maps(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The template as it is, and without each empty labels or annotations map (and then an
    empty metadata): the maps coalmine may have created for its own entries."""
    candidates = []
    for drops in itertools.product((False, True), repeat=3):
        drop_labels, drop_annotations, drop_metadata = drops
        candidate: dict[str, Any] = json.loads(json.dumps(template))
        metadata = candidate.get("metadata")
        if isinstance(metadata, dict):
            for key, drop in (("labels", drop_labels), ("annotations", drop_annotations)):
                if drop and metadata.get(key) == {}:
                    del metadata[key]
            if drop_metadata and not metadata:
                del candidate["metadata"]
        candidates.append(candidate)
    return candidates


def cmd_undo(args: argparse.Namespace, session: Session) -> int:
    rollout = fetch_rollout(session, args.name)
    spec = rollout.get("spec") or {}
    status = rollout.get("status") or {}
    ref = spec.get("workloadRef")
    if isinstance(ref, Mapping):
        raise CliError(
            f"canaryrollout {args.name} takes its template from Deployment {ref.get('name')} "
            "(spec.workloadRef): undo there, in Git (git revert); a kept revision rolls back "
            "just as fast"
        )
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
    shown = {"line": "", "why": "no status yet"}

    def finished(rollout: Obj) -> int | None:
        line = view.progress_line(rollout)
        if line != shown["line"]:
            session.say(f"{clock()}  {line}")
            shown["line"] = line
        state, why = view.completion(rollout)
        shown["why"] = why
        if state is view.Completion.SUCCEEDED:
            session.say(f"{clock()}  rollout complete: {why}")
            return EXIT_OK
        if state is view.Completion.FAILED:
            session.warn(f"error: canaryrollout {args.name} failed: {why}")
            return EXIT_FAILED
        return None

    code = follow_rollout(session, args.name, deadline, finished)
    if code is not None:
        return code
    session.warn(f"error: timed out after {args.timeout}: {shown['why']}")
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

    for name, help_text in (
        ("abort", "send all traffic back to stable, scale the canary down"),
        ("retry", "start an aborted canary again from its first step"),
        ("pause", "hold the canary at its current weight, its timers stopped, until resumed"),
        ("resume", "let a paused canary go on from where it was held"),
        ("restart", "replace the stable revision's pods a few at a time, none short of ready"),
    ):
        control = command(name, cmd_control, help_text)
        control.add_argument("name", metavar="NAME")
        _wait_options(control)

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
