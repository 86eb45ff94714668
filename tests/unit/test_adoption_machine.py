"""Adopting a Deployment (spec.workloadRef) in the state machine: issue 13, item 2.

The rollout's Services serve the Deployment's pods until the stable revision has taken over;
the Deployment is then scaled down as scaleDown says, never while coalmine routes to it, never
over someone else's count; deletion scales it back up and waits for it before letting go.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from coalmine import machine as m
from coalmine import translate as s
from coalmine.api.resource import CanaryRollout
from coalmine.api.vocabulary import Phase, ScaleDown

from .machine_world import EPOCH, AdoptedDeployment, World, plan

MODES = pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "replica-ratio"])


def adopting(
    scale_down: ScaleDown = ScaleDown.ON_SUCCESS, *, weighted: bool = True, **overrides: object
) -> World:
    """A Deployment of 4 ready pods, adopted by a rollout of 4 replicas (scaleDownDelay 30 s)."""
    world = World(
        plan("rev1", weighted=weighted, adoption=m.Adoption("web", scale_down), **overrides)
    )
    world.adopted = AdoptedDeployment(replicas=4, ready=4)
    return world


def scaled(world: World) -> list[int]:
    return [
        a.replicas for _, d in world.history for a in d.actions if isinstance(a, m.ScaleAdopted)
    ]


@MODES
def test_the_services_serve_the_deployment_until_the_revision_takes_over(weighted: bool) -> None:
    world = adopting(weighted=weighted)
    world.step()
    assert world.memory.stable == "rev1", "the first revision is stable at once"
    assert world.services_select_adopted, "its pods are not ready: the Deployment's serve"
    assert world.memory.taken_over is None
    world.pods_become_ready()
    world.run(5)
    assert not world.services_select_adopted
    assert world.memory.taken_over is not None
    assert "TakenOver" in world.reasons()
    assert world.adopted is not None
    assert world.adopted.replicas == 4, "scaled down only scaleDownDelaySeconds later"


@MODES
def test_on_success_scales_the_deployment_to_zero_after_the_delay_from_the_take_over(
    weighted: bool,
) -> None:
    world = adopting(weighted=weighted)
    world.run(20)  # at most 20 s pass: taken over, but the 30 s delay has not run out
    assert world.memory.taken_over is not None
    assert scaled(world) == [], "scaled down before scaleDownDelaySeconds had passed"
    world.settle()
    for observed, decision in world.history:
        for action in decision.actions:
            if isinstance(action, m.ScaleAdopted):
                assert observed.stable_service == "rev1", "scaled while the Services served it"
    assert world.adopted is not None
    assert world.adopted.replicas == 0
    assert scaled(world) == [0]
    assert world.memory.adopted_replicas == 0
    assert world.memory.phase == Phase.HEALTHY


def test_a_route_that_does_not_send_to_the_rollout_yet_keeps_the_deployment_serving() -> None:
    world = adopting(weighted=True)
    world.router_error = "HTTPRoute web has no rule with backendRefs to web-stable and web-canary"
    world.run(40)  # waits for the route: never settles
    world.advance(300)
    world.run(40)
    assert world.services_select_adopted
    assert world.memory.taken_over is None
    assert scaled(world) == []
    world.router_error = None  # the route is switched to the rollout's Services
    world.settle()
    assert world.memory.taken_over is not None
    world.advance(31)
    world.settle()
    assert scaled(world) == [0]


def test_progressively_follows_the_ready_pods_of_the_stable_revision_and_only_down() -> None:
    world = adopting(ScaleDown.PROGRESSIVELY, weighted=False)
    world.step()
    for ready in (1, 2, 3, 4):
        world.deployments["rev1"].ready = ready
        world.step()
        world.step()
        assert world.adopted is not None
        assert world.adopted.replicas == 4 - ready
    world.deployments["rev1"].ready = 1  # the stable loses pods: the Deployment does not grow
    world.step()
    assert world.adopted is not None
    assert world.adopted.replicas == 0
    assert scaled(world) == [3, 2, 1, 0]


def test_never_leaves_the_deployment_as_it_is_but_still_takes_over() -> None:
    world = adopting(ScaleDown.NEVER)
    world.settle()
    world.advance(600)
    world.settle()
    assert world.memory.taken_over is not None
    assert scaled(world) == []
    assert world.adopted is not None
    assert world.adopted.replicas == 4


def test_a_count_someone_else_set_afterwards_is_reported_once_and_left_alone() -> None:
    world = adopting()
    world.settle()
    world.advance(31)
    world.settle()
    assert world.adopted is not None
    world.adopted.replicas = 3  # a GitOps sync without ignoreDifferences puts Git's count back
    for _ in range(5):
        world.step()
        world.advance(5)
    assert scaled(world) == [0], "never a fight over the replicas"
    assert "AdoptedScaledElsewhere" in world.reasons()
    warning = next(e for e in world.events if e.reason == "AdoptedScaledElsewhere")
    assert "docs/argocd.md" in warning.message


def test_a_write_that_never_landed_is_made_again() -> None:
    world = adopting()
    world.settle()
    world.advance(31)
    world.step()
    assert world.adopted is not None
    world.adopted.replicas, world.adopted.marked = 4, None  # the patch was lost (a crash)
    world.step()
    assert scaled(world) == [0, 0]


def test_a_template_edited_after_the_take_over_walks_the_steps() -> None:
    world = adopting()
    world.settle()
    world.advance(31)
    world.settle()
    world.set_template("rev2")
    world.settle()
    assert world.memory.canary == "rev2"
    assert world.memory.step == 3
    assert world.reasons().count("StepCompleted") == 3


def test_a_canary_before_the_take_over_stops_the_services_serving_the_deployment() -> None:
    world = adopting()
    world.step()
    assert world.services_select_adopted
    world.set_template("rev2")  # edited in Git while the first revision came up
    world.step()
    # The revisions' pods carry the Deployment's labels: a Service selecting those would give
    # the canary more than its weight.
    assert not world.services_select_adopted


def test_a_selector_a_service_cannot_express_is_not_used() -> None:
    world = adopting()
    assert world.adopted is not None
    world.adopted.selectable = False
    world.step()
    assert not world.services_select_adopted


# --- deletion -------------------------------------------------------------------------------------


def deleted(world: World) -> World:
    world.plan = replace(world.plan, deleting=True, deleting_since=world.now)
    return world


def test_deleting_scales_the_deployment_back_up_and_waits_for_it() -> None:
    world = adopting(replicas=5)
    world.adopted = AdoptedDeployment(replicas=5, ready=5)
    world.settle()
    world.advance(31)
    world.settle()
    assert world.adopted.replicas == 0
    deleted(world)
    decision = world.step()
    assert m.ScaleAdopted(5) in decision.actions
    assert not decision.done_deleting, "the Deployment has no ready pod yet"
    assert "waiting for Deployment web" in world.memory.message
    world.advance(2)
    decision = world.step()
    assert not decision.done_deleting
    world.pods_become_ready()
    decision = world.step()
    assert decision.done_deleting
    assert m.ReleaseAdopted() in decision.actions
    assert world.adopted.released
    again = world.step()  # another pass before the finalizer is gone: released once only
    assert again.done_deleting
    assert m.ReleaseAdopted() not in again.actions
    assert world.reasons().count("Released") == 1


def test_deleting_lets_go_after_the_progress_deadline_if_the_deployment_never_gets_ready() -> None:
    world = adopting(progress_deadline_seconds=60)
    world.settle()
    world.advance(31)
    world.settle()
    deleted(world)
    world.step()
    world.advance(61)
    decision = world.step()
    assert decision.done_deleting
    assert "AdoptedNotAvailable" in world.reasons()


def test_deleting_a_rollout_that_never_scaled_the_deployment_only_releases_it() -> None:
    world = adopting(ScaleDown.NEVER)
    world.settle()
    deleted(world)
    decision = world.step()
    assert decision.done_deleting
    assert [a for a in decision.actions if isinstance(a, m.ScaleAdopted)] == []
    assert m.ReleaseAdopted() in decision.actions


# --- the status -----------------------------------------------------------------------------------


def test_the_status_records_the_adoption_and_the_memory_reads_it_back() -> None:
    body = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": "web", "namespace": "shop", "generation": 1},
        "spec": {
            "workloadRef": {"name": "web", "scaleDown": "progressively"},
            "service": {"name": "web", "port": 80},
            "steps": [{"setWeight": 20}],
        },
    }
    rollout = CanaryRollout.from_object(body)
    memory = m.Memory(
        stable="aaa",
        adopted="web",
        taken_over=EPOCH,
        adopted_replicas=0,
        promoted=frozenset({"aaa"}),
    )
    status = s.status_from(rollout, m.Decision((), memory), EPOCH + timedelta(seconds=1))
    assert status.to_dict()["adoption"] == {
        "deployment": "web",
        "takenOverAt": "2026-01-01T00:00:00Z",
        "replicas": 0,
    }
    assert s.memory_from(status) == memory
    template = {"spec": {"containers": [{"name": "app", "image": "web:1"}]}}
    resolved = rollout.model_copy(update={"spec": rollout.spec.with_template(template)})
    adoption = s.plan_from(resolved).adoption
    assert adoption == m.Adoption("web", ScaleDown.PROGRESSIVELY)
