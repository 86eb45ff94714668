"""What workloads.py makes of an adopted Deployment and of the Services that serve it (pure)."""

from __future__ import annotations

from typing import Any

from coalmine import machine as m
from coalmine import workloads as w
from coalmine.labels import ADOPTED_REPLICAS_ANNOTATION, REVISION_LABEL, ROLLOUT_LABEL

ROLLOUT = w.Rollout(namespace="shop", name="web", uid="u", service="web", port=80, target_port=8080)


def deployment(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": 3, "annotations": {}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, **spec},
        "status": {"observedGeneration": 3, "readyReplicas": 2},
    }


def test_the_services_select_the_adopted_pods_until_the_take_over() -> None:
    serving = w.desired_services(ROLLOUT, "rev1", None, adopted={"app": "web"})
    selectors = {s["metadata"]["name"]: s["spec"]["selector"] for s in serving}
    assert selectors["web"] == {"app": "web"}
    assert selectors["web-stable"] == {"app": "web"}
    assert selectors["web-canary"] == {ROLLOUT_LABEL: "web", REVISION_LABEL: w.NO_REVISION}
    alone = w.desired_services(ROLLOUT, "rev1", None)
    assert {s["metadata"]["name"]: s["spec"]["selector"] for s in alone}["web-stable"] == {
        ROLLOUT_LABEL: "web",
        REVISION_LABEL: "rev1",
    }


def test_an_adopted_deployment_as_the_machine_sees_it() -> None:
    plain = deployment()
    assert w._observe_adopted(plain) == m.AdoptedObserved(3, 2, None, True, labelled=False)
    plain["metadata"]["annotations"][ADOPTED_REPLICAS_ANNOTATION] = "0"
    plain["status"]["observedGeneration"] = 2  # the controller has not caught up: nothing ready
    assert w._observe_adopted(plain) == m.AdoptedObserved(3, 0, 0, True, labelled=False)


def test_a_selector_with_expressions_cannot_be_a_services() -> None:
    expressions = deployment(
        selector={
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}],
        }
    )
    assert w._match_labels(expressions) is None
    assert not w._observe_adopted(expressions).selectable
    assert w._match_labels(deployment()) == {"app": "web"}
