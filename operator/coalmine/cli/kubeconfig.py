"""Which kubeconfig and namespace the CLI uses: kubectl's rules, so the plugin feels like kubectl.

--kubeconfig, else $KUBECONFIG (a list of files), else ~/.kube/config, else the pod's own
credentials; the namespace from --namespace, else the current context, else the pod's own, else
default. Pure but for reading the files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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
