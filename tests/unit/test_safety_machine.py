"""Issue 9's safety defects that live in the state machine, one test (or table) per item.

Each test pins a defect a fault-injection run found; it failed before the fix.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine import machine as m
from coalmine.api.vocabulary import Phase, StepAction

from .machine_world import Deployment, World, plan, started


def canary_by_ratio(*, replicas: int, weight: int) -> World:
    """A replica-ratio rollout of ``replicas`` with one step at ``weight``, its canary just
    templated: nothing of it is scaled yet."""
    steps = (m.Step(StepAction.SET_WEIGHT, weight=weight), m.Step(StepAction.PAUSE))
    world = World(replace(plan("rev1", weighted=False), replicas=replicas, steps=steps))
    world.settle()
    world.set_template("rev2")
    return world


# --- item 1: a crash never promotes a new canary -------------------------------------------------


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "replica-ratio"])
def test_item_1_a_canary_deployment_left_by_a_crash_is_no_fast_rollback(weighted: bool) -> None:
    """Killed after creating the canary's Deployment but before its status: the next process saw
    the Deployment, took it for a kept revision and promoted it without a single step."""
    world = started(weighted)
    world.set_template("rev2")
    # What the killed process left behind: the Deployment, and a status that never heard of it.
    world.deployments["rev2"] = Deployment(replicas=1, ready=1, created=world.now)
    decision = world.step()
    assert decision.memory.canary == "rev2"
    assert not decision.memory.rollback
    assert decision.memory.step == 0
    assert "RollingBack" not in world.reasons()
    world.settle()
    assert world.memory.phase == Phase.PAUSED, "it walks the steps to the indefinite pause"
    assert world.memory.stable == "rev1"


def test_item_1_a_revision_that_was_stable_still_rolls_back_fast() -> None:
    world = started()
    world.set_template("rev2")
    world.settle()
    world.control("promote-full", "t1")
    world.settle()
    assert world.memory.stable == "rev2"
    world.set_template("rev1")  # git revert
    decision = world.step()
    assert decision.memory.rollback
    assert "RollingBack" in world.reasons()


# --- item 2: the replica ratio never exceeds the step's weight -----------------------------------


@pytest.mark.parametrize(
    ("weight", "replicas", "sizes"),
    [
        (41, 10, (4, 6)),  # Argo Rollouts gives 4 / 6 too; we gave 5 / 5 before
        (50, 10, (5, 5)),
        (25, 4, (1, 3)),
        (50, 4, (2, 2)),
        (50, 1, (1, 1)),  # was 1 / 0: 100% on the canary at a 50% step
        (25, 2, (1, 3)),
        (10, 1, (0, 1)),  # cannot be realised without exceeding 10%
        (5, 10, (1, 19)),
        (0, 4, (0, 4)),
        (100, 4, (4, 0)),
        (50, 0, (0, 0)),  # was a stable size of -1: refused by the API server
        (100, 0, (0, 0)),
    ],
)
def test_item_2_replica_ratio_sizes(weight: int, replicas: int, sizes: tuple[int, int]) -> None:
    assert m.ratio_sizes(weight, replicas) == sizes


@given(st.integers(0, 100), st.integers(0, 50))
def test_item_2_the_real_share_never_exceeds_the_weight(weight: int, replicas: int) -> None:
    canary, stable = m.ratio_sizes(weight, replicas)
    assert canary >= 0
    assert stable >= 0
    assert canary * 100 <= weight * (canary + stable) or (weight == 100 and stable == 0)
    if 0 < weight < 100 and replicas > 0:
        assert stable >= 1, "the stable keeps a pod while its weight is above 0"
        assert stable <= max(replicas, 2 * max(replicas, 1))


def test_item_2_one_replica_at_half_weight_surges_instead_of_giving_all_to_the_canary() -> None:
    world = canary_by_ratio(replicas=1, weight=50)
    world.settle()
    assert world.memory.phase == Phase.PAUSED
    assert world.deployments["rev1"].ready == 1, "the stable keeps its pod"
    assert world.deployments["rev2"].ready == 1
    assert world.observe().weight == 50


def test_item_2_zero_replicas_never_asks_for_a_negative_size() -> None:
    world = World(replace(plan("rev1", weighted=False), replicas=0))
    world.settle()
    world.set_template("rev2")
    for _ in range(20):
        decision = world.step()
        world.pods_become_ready()
        sizes = [a.replicas for a in decision.actions if isinstance(a, m.ScaleRevision)]
        sizes += [a.replicas for a in decision.actions if isinstance(a, m.CreateRevision)]
        assert all(size >= 0 for size in sizes)
        world.advance(1)
    assert world.memory.phase == Phase.PAUSED, world.memory.message


# --- item 3: a bad stable revision is named, and does not block a good canary --------------------


@pytest.mark.parametrize("weighted", [False, True])
def test_item_3_a_stable_revision_that_never_gets_ready_does_not_hold_a_good_canary_back(
    weighted: bool,
) -> None:
    """A StableUnavailable event names the stable revision; the canary is not aborted for it,
    and is promoted, behind a router or by replica ratio."""
    world = World(plan("rev1", weighted=weighted))
    world.broken_revisions.add("rev1")
    world.run(5)  # the stable never gets ready: nothing settles
    world.set_template("rev2")
    world.run(80)
    assert not world.memory.aborted, world.memory.abort_message
    assert world.memory.canary == "rev2"
    assert world.memory.phase == Phase.PAUSED
    messages = [e.message for e in world.events if e.reason == "StableUnavailable"]
    assert messages
    assert all("rev1" in message for message in messages), "it names the stable revision"
    world.control("promote", "p1")
    world.run(80)
    done = world.memory
    assert done.stable == "rev2"
    assert done.phase == Phase.HEALTHY


def test_item_3_a_canary_that_never_gets_ready_is_named_when_aborted() -> None:
    world = started(weighted=False, progress_deadline_seconds=20)
    world.broken_revisions.add("rev2")
    world.set_template("rev2")
    world.settle(rounds=60)
    assert world.memory.aborted
    assert world.memory.abort_message is not None
    assert "rev2" in world.memory.abort_message
    assert "rev1" not in world.memory.abort_message


# --- item 9: one event per transition ------------------------------------------------------------


def test_item_9_a_timed_pause_announces_itself_once() -> None:
    """A paused rollout emitted a Paused event on every reconcile: 20 in one timed pause."""
    world = started()
    world.set_template("rev2")
    for _ in range(40):
        world.step()
        world.pods_become_ready()
        world.advance(1)
    assert world.reasons().count("Paused") == 2, world.reasons()  # the timed and the last pause


def test_item_9_the_first_status_of_a_new_generation_says_what_happens() -> None:
    """It still said "Paused ... until promoted" while the old canary was being retired."""
    world = started()
    world.set_template("rev2")
    world.settle()
    assert world.memory.phase == Phase.PAUSED
    world.set_template("rev3")
    decision = world.step()
    assert decision.memory.phase != Phase.PAUSED
    assert "rev2" in decision.memory.message
    assert "until promoted" not in decision.memory.message


# --- found on the way ---------------------------------------------------------------------------


def test_a_weight_reverted_by_a_gitops_sync_during_a_pause_is_routed_again() -> None:
    """Argo CD put Git's weights back on the route while the canary was held at a pause; the
    rollout kept reporting 50% with every request on the stable revision."""
    world = started()
    world.set_template("rev2")
    world.settle()
    assert world.memory.phase == Phase.PAUSED
    assert world.weight == 50
    world.weight = 0  # the sync
    decision = world.step()
    assert m.SetWeight(50) in decision.actions


def test_min_ready_seconds_delays_traffic_until_pods_are_available() -> None:
    """Issue 14: the machine gated on ready pods; a pod ready for less than minReadySeconds
    (not yet available) took traffic all the same."""
    world = started()
    world.set_template("rev2")
    world.step()  # creates the canary
    world.deployments["rev2"].ready = 1  # ready, but not yet for minReadySeconds
    observed = world.observe()
    revisions = dict(observed.revisions)
    revisions["rev2"] = replace(revisions["rev2"], available=0)
    decision = m.decide(world.plan, world.memory, replace(observed, revisions=revisions), world.now)
    assert not any(isinstance(a, m.SetWeight) and a.weight > 0 for a in decision.actions)
    assert "waiting for 1 ready canary pods" in decision.memory.message


def test_item_2_a_surged_stable_is_ready_before_the_canary_takes_its_share() -> None:
    """Found by the random histories: 6 replicas at setWeight 8 need 1 canary pod beside 12
    stable ones; the canary grew first, and while the stable surged it had 1 of 7 (14%)."""
    world = canary_by_ratio(replicas=6, weight=8)
    for _ in range(30):
        world.step()
        world.pods_become_ready()
        weight = world.observe().weight
        assert weight is not None
        assert weight <= 8, f"the canary got {weight}%"
        world.advance(1)
    assert world.memory.phase == Phase.PAUSED
    assert (world.deployments["rev2"].ready, world.deployments["rev1"].ready) == (1, 12)


def test_item_2_a_stable_status_not_yet_current_is_not_taken_for_no_ready_pod() -> None:
    """Right after the stable's surge is asked, its Deployment's status is older than its spec
    until the controller manager observes it, and the operator reads 0 ready pods (unknown). It
    took that for "the stable serves nothing" and grew the canary before the surge was ready:
    1 of 4 endpoints (25%) at a 20% step. Found by the fault-injection run, while the
    controller manager lagged after an API server restart."""
    world = canary_by_ratio(replicas=3, weight=20)
    world.lagging_status = True
    for _ in range(10):
        world.step()
        world.step()  # a second pass before the controller manager has caught up
        canary = world.deployments.get("rev2")
        if canary is not None and canary.replicas > 0:
            assert world.deployments["rev1"].ready >= 4, "the canary grew before the stable"
        world.pods_become_ready()
        world.advance(1)
    assert world.memory.phase == Phase.PAUSED, world.memory.message
    assert "StableUnavailable" not in world.reasons()


def _allowed(world: World) -> int:
    """The highest setWeight of the steps the canary has reached (100 once all are done)."""
    steps = world.plan.steps
    if world.memory.step >= len(steps):
        return 100
    weights = [s.weight for s in steps[: world.memory.step + 1] if s.kind == StepAction.SET_WEIGHT]
    return max(weights, default=0)


@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 5, 7, 10])
@pytest.mark.parametrize("weight", [5, 10, 20, 25, 33, 41, 50, 80])
def test_item_2_the_stable_surges_before_the_canary_gets_a_ready_pod(
    replicas: int, weight: int
) -> None:
    """3 replicas at setWeight 20 are 1 canary and 4 stable pods: the canary's pod was made
    first, and was ready beside the 3 stable pods (25% at a 20% step) until the surge caught up.
    Found by the fault-injection run (tests/integration/test_faults.py)."""
    world = canary_by_ratio(replicas=replicas, weight=weight)
    for _ in range(30):
        world.step()
        world.pods_become_ready()
        canary = world.deployments["rev2"].ready if "rev2" in world.deployments else 0
        stable = world.deployments["rev1"].ready
        assert canary * 100 <= _allowed(world) * (canary + stable), (canary, stable)
        world.advance(1)
    assert world.memory.phase == Phase.PAUSED, world.memory.message
