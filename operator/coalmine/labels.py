"""Every label, annotation and finalizer name coalmine writes or reads, defined once.

These names are the contract between coalmine and everything around it: the objects it owns
carry them, users' GitOps repositories and Argo CD actions write the control annotations, and
`kubectl get -l` selects by them. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "coalmine.dev"

ROLLOUT_LABEL: Final = f"{DOMAIN}/rollout"
"""On every object a rollout owns, and on its pods: the CanaryRollout's name."""
REVISION_LABEL: Final = f"{DOMAIN}/revision"
"""On a revision's Deployment and pods: the revision name (the template hash)."""
SHARD_LABEL: Final = f"{DOMAIN}/shard"
"""On a CanaryRollout: which operator shard serves it (see COALMINE_SHARD)."""
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
"""Kubernetes' label on an EndpointSlice: the Service it belongs to."""
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "coalmine"
"""The value of MANAGED_BY_LABEL on everything coalmine creates."""

ADOPTED_BY_LABEL: Final = f"{DOMAIN}/adopted-by"
"""On a user's Deployment a CanaryRollout adopts (spec.workloadRef): the rollout's name. Put on
at first sight, taken off when the rollout lets it go; the operator caches what carries it."""
ADOPTED_REPLICAS_ANNOTATION: Final = f"{DOMAIN}/adopted-replicas"
"""On an adopted Deployment: the replica count coalmine last set on it, written with it, so that
a change made by someone else afterwards is told from a write of coalmine's that never landed."""
TEMPLATE_ANNOTATION: Final = f"{DOMAIN}/template"
"""On a revision's Deployment: the pod template it was created from, to detect drift."""
RESTARTED_AT_ANNOTATION: Final = f"{DOMAIN}/restarted-at"
"""On a revision's pod template: when a restart of its pods was asked (coalmine.dev/restart)."""
FINALIZER: Final = f"{DOMAIN}/finalizer"
"""Held on a CanaryRollout until traffic is back on its stable revision."""


def control_annotation(control: str) -> str:
    """The annotation that carries a control's token, e.g. ``coalmine.dev/promote``."""
    return f"{DOMAIN}/{control}"


def owned_labels(rollout: str, revision: str | None = None) -> dict[str, str]:
    """The labels on what a rollout owns (a revision's Deployment also names its revision)."""
    labels = {ROLLOUT_LABEL: rollout, MANAGED_BY_LABEL: MANAGED_BY}
    if revision is not None:
        labels[REVISION_LABEL] = revision
    return labels


def rollout_selector(rollout: str) -> str:
    """A label selector for the pods and Deployments of every revision of a rollout (the
    scale subresource's selector, the CLI's view)."""
    return f"{ROLLOUT_LABEL}={rollout}"


def owned_selector(rollout: str) -> str:
    """A label selector for everything a rollout owns."""
    return f"{ROLLOUT_LABEL}={rollout},{MANAGED_BY_LABEL}={MANAGED_BY}"
