"""spec.replicas changing mid-rollout (`kubectl scale`, an autoscaler): issue 13, item 1.

The machine reads spec.replicas afresh in every decision, so a new count resizes both revisions
at once: with the replica ratio the canary keeps its weight (`ratio_sizes` of the new count),
with a router the canary keeps the pods its weight needs of the new count and the stable the new
count. No step completes or is skipped because of it, and no weight is asked that the canary's
ready pods cannot serve. The random histories of test_machine.py mix such changes into
everything else; these are the cases spelled out.
"""

from __future__ import annotations

import pytest

from coalmine import machine as m
from coalmine.api.vocabulary import AnalysisVerdict, Phase, StepAction

from .machine_world import World, plan

STEPS = (
    m.Step(StepAction.SET_WEIGHT, weight=25),
    m.Step(StepAction.PAUSE),
    m.Step(StepAction.SET_WEIGHT, weight=50),
    m.Step(StepAction.ANALYSIS),
)


def at_step(weighted: bool, replicas: int, step: int) -> World:
    """A canary held at ``step`` (1: the pause after 25%, 3: the analysis after 50%)."""
    world = World(plan("rev1", weighted=weighted, replicas=replicas, steps=STEPS))
    world.settle()
    world.set_template("rev2")
    world.settle()
    assert world.memory.step == 1
    if step == 3:
        world.control("promote", "to-50")
        world.run(60)  # an analysis step runs: it never settles
    assert world.memory.step == step
    return world


def sizes(world: World) -> tuple[int, int]:
    """(canary, stable) replicas as the Deployments are asked to have them."""
    return world.deployments["rev2"].replicas, world.deployments["rev1"].replicas


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "replica-ratio"])
@pytest.mark.parametrize(("step", "weight"), [(1, 25), (3, 50)])
@pytest.mark.parametrize(("before", "after"), [(4, 8), (8, 4), (4, 10), (10, 3), (2, 1)])
def test_a_new_replica_count_resizes_both_revisions_and_keeps_the_step(
    weighted: bool, step: int, weight: int, before: int, after: int
) -> None:
    world = at_step(weighted, before, step)
    world.scale(after)
    world.run(60)
    assert world.memory.step == step, "no step completed or skipped by a resize"
    assert world.memory.phase == Phase.PAUSED or world.memory.step == 3
    assert world.memory.desired_weight == weight
    if weighted:
        assert sizes(world) == (max(1, m.canary_replicas_for(weight, after)), after)
        assert world.observe().weight == weight
    else:
        canary, stable = m.ratio_sizes(weight, after)
        assert sizes(world) == (canary, stable)
        observed = world.observe().weight
        assert observed == m.ratio_weight(canary, stable)
        assert observed <= weight
    assert [e.reason for e in world.events].count("StepCompleted") == step


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "replica-ratio"])
def test_a_resize_while_pods_are_not_ready_yet_never_routes_to_them(weighted: bool) -> None:
    world = at_step(weighted, 4, 1)
    world.scale(12)
    for _ in range(10):  # the new pods are slow: nothing becomes ready
        decision = world.step()
        for action in decision.actions:
            if isinstance(action, m.SetWeight):
                assert action.weight <= 25
        if not weighted:
            assert (world.observe().weight or 0) <= 25
        world.advance(1.0)
    world.pods_become_ready()
    world.settle()
    assert world.memory.step == 1
    canary = world.deployments["rev2"]
    need = m.canary_replicas_for(25, 12) if weighted else m.ratio_sizes(25, 12)[0]
    assert canary.ready >= need


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "replica-ratio"])
def test_a_resize_then_promotion_ends_at_the_new_size(weighted: bool) -> None:
    world = at_step(weighted, 4, 3)
    world.scale(7)
    world.step_analysis = m.AnalysisObserved(AnalysisVerdict.SUCCESSFUL, "fine")
    world.settle()
    assert world.memory.phase == Phase.HEALTHY
    assert world.memory.stable == "rev2"
    assert world.deployments["rev2"].replicas == 7
    world.advance(60)
    world.settle()
    assert world.deployments["rev1"].replicas == 0
