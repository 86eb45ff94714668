"""What every command works with: the connection, the namespace, where to print, how to fail.

Failures are one line on stderr and a non-zero exit code: `CliError` carries both; API and
transport failures are described in a person's words (`describe_failure`), tracebacks are left
for bugs.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from coalmine import resources as r
from coalmine.api.resource import GROUP, PLURAL, VERSION
from coalmine.cli.kubeconfig import default_namespace, kubeconfig_choice
from coalmine.kube import Kube, KubeError, NotFoundError
from coalmine.labels import rollout_selector
from coalmine.resources import Obj

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_TIMEOUT = 2
EXIT_INTERRUPTED = 130

FIELD_MANAGER = "kubectl-coalmine"
"""Shown in managedFields: whoever reads them sees the CLI made the change, not the operator."""


class CliError(Exception):
    """A failure reported in one line on stderr, ending the command with `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


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
    rollout = session.kube.get(r.CANARY_ROLLOUTS, session.namespace, name)
    if rollout is None:
        raise missing(session, name)
    return rollout


def fetch_deployments(session: Session, name: str) -> list[Obj]:
    return session.kube.list(
        r.DEPLOYMENTS, session.namespace, label_selector=rollout_selector(name)
    )
