"""Versioned Deployments and the Services in front of them.

Every revision of a rollout is its own Deployment, ``<rollout>-<revision>``, created from the pod
template once and never edited afterwards except for its replica count. The template it was
created from is kept in an annotation on the Deployment, so drift (someone editing a managed
Deployment by hand) is detected and reverted for every kept revision, not only the current one.

The operator owns three Services per rollout: ``<service>`` selects every revision (the replica
ratio router serves from it), ``<service>-stable`` and ``<service>-canary`` select one revision
each (weighted routers send traffic to them). Nothing here touches an object the operator does
not own: a same-named object without our label is reported as a conflict.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coalmine import kube as k
from coalmine import resources as r
from coalmine.api.template import template_problem
from coalmine.kube import Kube
from coalmine.labels import (
    ADOPTED_BY_LABEL,
    ADOPTED_REPLICAS_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RESTARTED_AT_ANNOTATION,
    REVISION_LABEL,
    ROLLOUT_LABEL,
    TEMPLATE_ANNOTATION,
    owned_labels,
    owned_selector,
)
from coalmine.machine import AdoptedObserved, RevisionObserved
from coalmine.resources import Obj

SERVICE_FIELD = "spec.service.name"
WORKLOAD_FIELD = "spec.workloadRef.name"
ROLLING_UPDATE: Obj = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
}
"""How a revision's Deployment replaces its pods, which it does only for a restart: a quarter
more pods at a time (at least one), none taken out before its replacement is ready."""
NO_REVISION = "none"
"""Selector value of the canary Service while there is no canary: it selects no pod."""


class OwnershipError(RuntimeError):
    """An object this rollout would manage exists but belongs to someone else.

    Never taken over: not an object of the user's, nor one another rollout manages (two
    rollouts sharing a Service would each think they route its traffic).
    """

    def __init__(self, kind: str, name: str, field: str, owner: str | None = None) -> None:
        whose = (
            f"is managed by CanaryRollout {owner}"
            if owner
            else f"is not managed by coalmine (no {MANAGED_BY_LABEL}={MANAGED_BY} label)"
        )
        super().__init__(f"{field}: {kind} {name} exists and {whose}; choose another {field}")
        self.kind = kind
        self.name = name
        self.field = field


class AdoptionError(RuntimeError):
    """The Deployment spec.workloadRef names cannot be adopted: missing, or its template unusable.

    ``reason`` is the Ready condition's (WorkloadNotFound, WorkloadInvalid); the message names
    the field and the Deployment.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Adopted:
    """The user's Deployment a rollout adopts, as read from the cache."""

    name: str
    template: Obj
    """Its pod template: the rollout's template from now on."""
    selector: dict[str, str] | None
    """Its matchLabels, for the rollout's Services while they serve its pods; None when its
    selector needs more than labels (matchExpressions), which a Service cannot express."""
    observed: AdoptedObserved


@dataclass(frozen=True)
class Rollout:
    """What this module needs to know about a CanaryRollout."""

    namespace: str
    name: str
    uid: str
    service: str
    port: int
    target_port: int | str

    @property
    def owner(self) -> Obj:
        return {
            "apiVersion": r.CANARY_ROLLOUTS.api_version,
            "kind": r.CANARY_ROLLOUTS.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @property
    def stable_service(self) -> str:
        return f"{self.service}-stable"

    @property
    def canary_service(self) -> str:
        return f"{self.service}-canary"

    def deployment_name(self, revision: str) -> str:
        return f"{self.name}-{revision}"

    def labels(self, revision: str | None = None) -> dict[str, str]:
        return owned_labels(self.name, revision)


# --- Deployments -------------------------------------------------------------------------------


def pod_template(rollout: Rollout, revision: str, template: Mapping[str, Any]) -> Obj:
    """The user's template with the labels that tie its pods to the rollout and revision."""
    result: Obj = copy.deepcopy(dict(template))
    metadata = result.setdefault("metadata", {})
    metadata.setdefault("labels", {}).update(
        {ROLLOUT_LABEL: rollout.name, REVISION_LABEL: revision}
    )
    return result


def build_deployment(
    rollout: Rollout,
    revision: str,
    template: Mapping[str, Any],
    replicas: int,
    min_ready_seconds: int = 0,
) -> Obj:
    pods = pod_template(rollout, revision, template)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": rollout.deployment_name(revision),
            "namespace": rollout.namespace,
            "labels": rollout.labels(revision),
            "annotations": {TEMPLATE_ANNOTATION: json.dumps(pods, sort_keys=True)},
            "ownerReferences": [rollout.owner],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {ROLLOUT_LABEL: rollout.name, REVISION_LABEL: revision}},
            "template": pods,
            # A revision's template changes only for a restart (restart_revision).
            "strategy": copy.deepcopy(ROLLING_UPDATE),
            "revisionHistoryLimit": 0,
            "minReadySeconds": min_ready_seconds,
        },
    }


def contains(expected: object, actual: object) -> bool:
    """Whether every field we set is present with the same value (the API server adds defaults)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(contains(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, int | float) and isinstance(actual, str):
        return str(expected) == actual
    return expected == actual


def _created(deployment: Obj) -> datetime:
    stamp = deployment.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return datetime.now(UTC)
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))


def _drifted(deployment: Obj) -> bool:
    recorded = deployment["metadata"].get("annotations", {}).get(TEMPLATE_ANNOTATION)
    if not recorded:
        return False
    live = deployment.get("spec", {}).get("template", {})
    return not (contains(json.loads(recorded), live) and _no_extra_containers(recorded, live))


def _no_extra_containers(recorded: str, live: Obj) -> bool:
    # contains() already compares list lengths; env entries added to a container are caught
    # there too. Labels and annotations added to the template are new pods all the same.
    template = json.loads(recorded)
    for key in ("labels", "annotations"):
        if (live.get("metadata") or {}).get(key, {}) != (template.get("metadata") or {}).get(
            key, {}
        ):
            return False
    return True


def observe_revisions(kube: Kube, rollout: Rollout) -> dict[str, RevisionObserved]:
    deployments = kube.list(
        r.DEPLOYMENTS,
        rollout.namespace,
        label_selector=owned_selector(rollout.name),
    )
    revisions = {}
    for deployment in deployments:
        revision = deployment["metadata"].get("labels", {}).get(REVISION_LABEL)
        if not revision:
            continue
        status = deployment.get("status") or {}
        current = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        ready = int(status.get("readyReplicas", 0)) if current else 0
        revisions[revision] = RevisionObserved(
            replicas=int(deployment["spec"].get("replicas", 1)),
            ready=min(ready, int(status.get("readyReplicas", 0))),
            available=int(status.get("availableReplicas", 0)) if current else 0,
            created=_created(deployment),
            drifted=_drifted(deployment),
            restarted=_restarted(deployment),
        )
    return revisions


def _restarted(deployment: Obj) -> str | None:
    template = (deployment.get("spec") or {}).get("template") or {}
    stamp = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT_ANNOTATION)
    return str(stamp) if stamp is not None else None


def create_revision(
    kube: Kube,
    rollout: Rollout,
    revision: str,
    template: Mapping[str, Any],
    replicas: int,
    *,
    min_ready_seconds: int = 0,
) -> None:
    body = build_deployment(rollout, revision, template, replicas, min_ready_seconds)
    try:
        kube.create(r.DEPLOYMENTS, rollout.namespace, body)
    except k.ConflictError:
        name = rollout.deployment_name(revision)
        check_owner(kube.fetch(r.DEPLOYMENTS, rollout.namespace, name), rollout, "metadata.name")
        scale_revision(kube, rollout, revision, replicas)


def scale_revision(kube: Kube, rollout: Rollout, revision: str, replicas: int) -> None:
    kube.patch(
        r.DEPLOYMENTS,
        rollout.namespace,
        rollout.deployment_name(revision),
        {"spec": {"replicas": replicas}},
    )


def restore_revision(kube: Kube, rollout: Rollout, revision: str) -> None:
    """Put back the template the revision was created from."""
    name = rollout.deployment_name(revision)
    deployment = kube.get(r.DEPLOYMENTS, rollout.namespace, name)
    if deployment is None:
        return
    recorded = deployment["metadata"].get("annotations", {}).get(TEMPLATE_ANNOTATION)
    if not recorded:
        return
    kube.patch(
        r.DEPLOYMENTS,
        rollout.namespace,
        name,
        [{"op": "replace", "path": "/spec/template", "value": json.loads(recorded)}],
        patch_type="json",
    )


def restart_revision(kube: Kube, rollout: Rollout, revision: str, stamp: str) -> None:
    """Have the revision's Deployment replace its pods: what `kubectl rollout restart` does.

    The pod template gets the stamp, and the recorded template the same stamp in the same
    write, so drift detection sees a Deployment as it should be and reverts nothing. The
    Deployment rolls with ROLLING_UPDATE: no pod leaves before its replacement is ready. Only
    the patch verb on Deployments, which coalmine has anyway; no pod is deleted by coalmine.
    """
    name = rollout.deployment_name(revision)
    deployment = kube.get(r.DEPLOYMENTS, rollout.namespace, name)
    if deployment is None:
        return
    recorded = deployment["metadata"].get("annotations", {}).get(TEMPLATE_ANNOTATION)
    patch: Obj = {
        "spec": {
            "strategy": copy.deepcopy(ROLLING_UPDATE),
            "template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}},
        },
    }
    if recorded:
        template = json.loads(recorded)
        template.setdefault("metadata", {}).setdefault("annotations", {})[
            RESTARTED_AT_ANNOTATION
        ] = stamp
        patch["metadata"] = {
            "annotations": {TEMPLATE_ANNOTATION: json.dumps(template, sort_keys=True)}
        }
    kube.patch(r.DEPLOYMENTS, rollout.namespace, name, patch)


def delete_revision(kube: Kube, rollout: Rollout, revision: str) -> None:
    kube.delete(r.DEPLOYMENTS, rollout.namespace, rollout.deployment_name(revision))


def check_owner(obj: Obj | None, rollout: Rollout, field: str) -> None:
    """Raise OwnershipError unless ``obj`` (a Service or Deployment) is this rollout's."""
    if obj is None:
        return
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(ROLLOUT_LABEL) == rollout.name:
        return
    owner = labels.get(ROLLOUT_LABEL) if labels.get(MANAGED_BY_LABEL) == MANAGED_BY else None
    kind = str(obj.get("kind") or "object")
    name = str((obj.get("metadata") or {}).get("name"))
    raise OwnershipError(kind, name, field, f"{rollout.namespace}/{owner}" if owner else None)


# --- Services ----------------------------------------------------------------------------------


def _service(rollout: Rollout, name: str, selector: Mapping[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": rollout.namespace,
            "labels": rollout.labels(),
            "ownerReferences": [rollout.owner],
        },
        "spec": {
            "selector": dict(selector),
            "ports": [
                {
                    "name": "http",
                    "port": rollout.port,
                    "targetPort": rollout.target_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def desired_services(
    rollout: Rollout,
    stable: str,
    canary: str | None,
    adopted: Mapping[str, str] | None = None,
) -> list[Obj]:
    """The three Services; with ``adopted`` (an adopted Deployment's matchLabels, until the
    stable revision takes over) the stable one and the one of every revision select its pods
    too: the revisions' pods carry the same labels, so both serve."""
    if adopted:
        everything, stable_pods = dict(adopted), dict(adopted)
    else:
        everything = {ROLLOUT_LABEL: rollout.name}
        stable_pods = {**everything, REVISION_LABEL: stable}
    return [
        _service(rollout, rollout.service, everything),
        _service(rollout, rollout.stable_service, stable_pods),
        _service(
            rollout,
            rollout.canary_service,
            {ROLLOUT_LABEL: rollout.name, REVISION_LABEL: canary or NO_REVISION},
        ),
    ]


def ensure_services(
    kube: Kube,
    rollout: Rollout,
    stable: str,
    canary: str | None,
    *,
    observed: dict[str, Obj | None] | None = None,
    adopted: Mapping[str, str] | None = None,
) -> int:
    """Create or update the three Services; returns how many writes it made.

    ``observed`` holds the Services as just read (and is updated with what is written), so a
    reconcile pass reads each Service once. ``adopted``: see `desired_services`.
    """
    writes = 0
    cache = observed if observed is not None else {}
    for desired in desired_services(rollout, stable, canary, adopted):
        name = desired["metadata"]["name"]
        live = cache[name] if name in cache else kube.get(r.SERVICES, rollout.namespace, name)
        if live is None:
            try:
                cache[name] = kube.create(r.SERVICES, rollout.namespace, desired)
            except k.ConflictError:
                # Not in the cache of ours, yet there: someone else's. Said, never taken over.
                check_owner(kube.fetch(r.SERVICES, rollout.namespace, name), rollout, SERVICE_FIELD)
                raise
            writes += 1
            continue
        check_owner(live, rollout, SERVICE_FIELD)
        wanted_ports = [(p["port"], str(p["targetPort"])) for p in desired["spec"]["ports"]]
        live_ports = [
            (p.get("port"), str(p.get("targetPort"))) for p in live["spec"].get("ports", [])
        ]
        if (
            live["spec"].get("selector") != desired["spec"]["selector"]
            or live_ports != wanted_ports
        ):
            cache[name] = kube.patch(
                r.SERVICES,
                rollout.namespace,
                name,
                [
                    {
                        "op": "replace",
                        "path": "/spec/selector",
                        "value": desired["spec"]["selector"],
                    },
                    {"op": "replace", "path": "/spec/ports", "value": desired["spec"]["ports"]},
                ],
                patch_type="json",
            )
            writes += 1
    return writes


def selected_revision(live: Obj | None) -> str | None:
    """The revision a Service of ours selects (None: no Service, or no canary)."""
    if live is None:
        return None
    revision = (live["spec"].get("selector") or {}).get(REVISION_LABEL)
    return None if revision in (None, NO_REVISION) else str(revision)


# --- an adopted Deployment (spec.workloadRef) ------------------------------------------------


def read_adopted(
    kube: Kube, rollout: Rollout, name: str, *, require_digest: bool, label: bool = True
) -> Adopted:
    """The Deployment the rollout adopts, from the cache of adopted ones.

    At first sight it is not in that cache: it is read once from the API, checked, and labelled
    adopted-by (the label puts it in the cache; Argo CD does not count a label that is not in
    Git as drift). Never one coalmine manages, nor one another rollout adopted. ``label`` False
    (a rollout being deleted): read, never labelled again once released.
    """
    deployment = kube.get(r.ADOPTED_DEPLOYMENTS, rollout.namespace, name)
    if deployment is None:
        deployment = kube.fetch(r.DEPLOYMENTS, rollout.namespace, name)
        if deployment is None:
            raise AdoptionError(
                "WorkloadNotFound",
                f"{WORKLOAD_FIELD}: Deployment {rollout.namespace}/{name} does not exist",
            )
    labels = (deployment.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
        owner = labels.get(ROLLOUT_LABEL)
        raise OwnershipError("Deployment", name, WORKLOAD_FIELD, f"{rollout.namespace}/{owner}")
    adopter = labels.get(ADOPTED_BY_LABEL)
    if adopter and adopter != rollout.name:
        raise OwnershipError("Deployment", name, WORKLOAD_FIELD, f"{rollout.namespace}/{adopter}")
    template = copy.deepcopy((deployment.get("spec") or {}).get("template") or {})
    problem = template_problem(template, require_digest=require_digest)
    if problem is not None:
        raise AdoptionError(
            "WorkloadInvalid",
            f"{WORKLOAD_FIELD}: Deployment {name} spec.template{problem.field}: {problem.reason}",
        )
    if label and adopter != rollout.name:
        deployment = kube.patch(
            r.ADOPTED_DEPLOYMENTS,
            rollout.namespace,
            name,
            {"metadata": {"labels": {ADOPTED_BY_LABEL: rollout.name}}},
        )
    return Adopted(
        name=name,
        template=template,
        selector=_match_labels(deployment),
        observed=_observe_adopted(deployment),
    )


def _match_labels(deployment: Obj) -> dict[str, str] | None:
    selector = (deployment.get("spec") or {}).get("selector") or {}
    labels = selector.get("matchLabels") or {}
    if selector.get("matchExpressions") or not labels:
        return None
    return {str(key): str(value) for key, value in labels.items()}


def _observe_adopted(deployment: Obj) -> AdoptedObserved:
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    current = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    mark = (meta.get("annotations") or {}).get(ADOPTED_REPLICAS_ANNOTATION)
    labels = meta.get("labels") or {}
    return AdoptedObserved(
        replicas=int((deployment.get("spec") or {}).get("replicas", 1)),
        ready=int(status.get("readyReplicas", 0)) if current else 0,
        marked=int(mark) if mark is not None and str(mark).isdigit() else None,
        selectable=_match_labels(deployment) is not None,
        labelled=ADOPTED_BY_LABEL in labels,
    )


def scale_adopted(kube: Kube, rollout: Rollout, name: str, replicas: int) -> None:
    """Set its replicas, and say so in an annotation, in one write (see ADOPTED_REPLICAS)."""
    kube.patch(
        r.ADOPTED_DEPLOYMENTS,
        rollout.namespace,
        name,
        {
            "metadata": {"annotations": {ADOPTED_REPLICAS_ANNOTATION: str(replicas)}},
            "spec": {"replicas": replicas},
        },
    )


def release_adopted(kube: Kube, rollout: Rollout, name: str) -> None:
    """Take coalmine's label and annotation off; the Deployment is the user's alone again."""
    deployment = kube.get(r.ADOPTED_DEPLOYMENTS, rollout.namespace, name)
    if deployment is None:
        return
    labels = (deployment.get("metadata") or {}).get("labels") or {}
    if labels.get(ADOPTED_BY_LABEL) != rollout.name:
        return
    kube.patch(
        r.ADOPTED_DEPLOYMENTS,
        rollout.namespace,
        name,
        {
            "metadata": {
                "labels": {ADOPTED_BY_LABEL: None},
                "annotations": {ADOPTED_REPLICAS_ANNOTATION: None},
            }
        },
    )
