"""The state machine, driven through a simulated world: scenarios, then random histories."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalmine import machine as m
from coalmine.api.limits import PENDING_SCALE_DOWN_LIMIT
from coalmine.api.vocabulary import AnalysisVerdict, Control, Phase, ScaleDown, Stage, StepAction

from .machine_world import AdoptedDeployment, Deployment, World, plan, started

MODES = pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "replica-ratio"])


@MODES
def test_first_apply_becomes_stable_at_once_routed_fully(weighted: bool) -> None:
    world = World(plan("rev1", weighted=weighted))
    first = world.step()
    assert world.memory.stable == "rev1"
    assert world.memory.canary is None
    assert m.CreateRevision("rev1", 4) in first.actions
    world.settle()
    assert world.memory.phase == Phase.HEALTHY
    assert world.observe().weight == 0
    assert "RevisionCreated" in world.reasons()


@MODES
def test_a_new_template_walks_every_step_then_waits_for_promote(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    # setWeight 20 done, pause 30 s elapses, setWeight 50 done, then the indefinite pause.
    assert world.memory.canary == "rev2"
    assert world.memory.step == 3
    assert world.memory.phase == Phase.PAUSED
    assert world.reasons().count("StepCompleted") == 3
    expected = 50 if weighted else m.ratio_weight(2, 2)
    assert world.observe().weight == expected


@MODES
def test_promote_releases_the_indefinite_pause_and_promotes(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    world.control("promote", "t1")
    world.settle()
    assert world.memory.stable == "rev2"
    assert world.memory.canary is None
    assert world.memory.phase == Phase.HEALTHY
    assert "Promoted" in world.reasons()
    assert world.stable_service == "rev2"
    assert world.observe().weight == 0
    world.advance(31)
    world.settle()
    assert world.deployments["rev1"].replicas == 0, "old stable scaled down after the delay"
    assert world.deployments["rev2"].replicas == 4


def test_old_stable_keeps_its_pods_during_the_scale_down_delay() -> None:
    world = started()
    world.set_template("rev2")
    world.settle()
    world.control("promote", "t1")
    world.run(10, seconds=0.5)  # part of the way only
    assert world.memory.stable == "rev2"
    assert world.deployments["rev1"].replicas == 4


@MODES
def test_promote_full_skips_the_remaining_steps(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.step()
    world.control("promote-full", "t1")
    world.settle()
    assert world.memory.stable == "rev2"
    assert "PromotedFull" in world.reasons()
    assert world.reasons().count("StepCompleted") == 0


@MODES
def test_abort_returns_traffic_to_stable_before_scaling_the_canary_down(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    world.control("abort", "a1")
    decision = world.step()
    assert world.memory.aborted
    assert world.memory.phase == Phase.DEGRADED
    if weighted:
        assert m.SetWeight(0) in decision.actions
        assert m.ScaleRevision("rev2", 0) not in decision.actions
    world.settle()
    assert world.deployments["rev2"].replicas == 0
    assert world.observe().weight == 0
    assert world.memory.stable == "rev1"
    assert world.memory.abort_reason == "AbortedByUser"


@MODES
def test_retry_starts_an_aborted_canary_again_from_the_first_step(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    world.control("abort", "a1")
    world.settle()
    world.control("retry", "r1")
    world.step()
    assert not world.memory.aborted
    assert world.memory.step == 0
    world.settle()
    assert world.memory.step == 3
    assert world.memory.phase == Phase.PAUSED


def test_a_control_token_is_acted_on_exactly_once() -> None:
    world = started()
    world.set_template("rev2")
    world.settle()
    world.control("abort", "a1")
    world.settle()
    world.control("retry", "r1")
    world.settle()
    # The abort annotation is still there with the same token: it must not abort again.
    assert world.controls[Control.ABORT] == "a1"
    assert not world.memory.aborted
    assert world.reasons().count("Aborted") == 1


def test_controls_survive_a_restart_because_they_live_in_memory() -> None:
    world = started()
    world.set_template("rev2")
    world.settle()
    world.control("promote", "p1")
    world.step()
    step_after = world.memory.step
    # A new operator process starts from the same status: the token is already handled.
    restarted = World(world.plan, memory=world.memory, now=world.now)
    restarted.deployments, restarted.weight = world.deployments, world.weight
    restarted.stable_service, restarted.canary_service = world.stable_service, world.canary_service
    restarted.controls = dict(world.controls)
    restarted.step()
    assert restarted.memory.step == step_after


@MODES
def test_superseding_template_retires_the_canary_then_starts_the_new_one(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    world.set_template("rev3")
    world.settle()
    assert world.memory.canary == "rev3"
    assert world.deployments["rev2"].replicas == 0
    assert "Superseded" in world.reasons()


@MODES
def test_changing_the_template_back_to_stable_rolls_the_canary_back(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    world.set_template("rev1")
    world.settle()
    assert world.memory.canary is None
    assert world.memory.stable == "rev1"
    assert world.memory.phase == Phase.HEALTHY
    assert "RolledBack" in world.reasons()


@MODES
def test_fast_rollback_to_a_kept_revision_skips_the_steps(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    world.control("promote-full", "p1")
    world.settle()
    world.advance(60)
    world.settle()
    assert world.deployments["rev1"].replicas == 0
    world.events.clear()
    world.set_template("rev1")
    world.settle()
    assert world.memory.stable == "rev1"
    assert "StepCompleted" not in world.reasons()
    assert "RolledBack" in world.reasons()


@MODES
def test_progress_deadline_aborts_a_canary_that_never_becomes_ready(weighted: bool) -> None:
    world = started(weighted, progress_deadline_seconds=10)
    world.broken_revisions.add("rev2")
    world.set_template("rev2")
    world.run(30)  # its pods never get ready: it never settles by itself
    assert world.memory.aborted
    assert world.memory.abort_reason == "ProgressDeadlineExceeded"
    assert "ProgressDeadlineExceeded" in world.reasons()
    assert world.observe().weight == 0


def test_timed_pause_asks_to_be_woken_when_it_ends() -> None:
    world = started()
    world.set_template("rev2")
    for _ in range(6):
        world.step()
        world.pods_become_ready()
    assert world.memory.step == 1
    decision = world.step()
    assert world.memory.phase == Phase.PAUSED
    assert decision.requeue_after == pytest.approx(30, abs=1)


def test_no_more_revisions_wait_to_scale_down_than_the_status_holds() -> None:
    world = started(scale_down_delay_seconds=600)
    for index in range(PENDING_SCALE_DOWN_LIMIT + 3):
        world.deployments[f"old{index:02d}"] = Deployment(replicas=1, ready=1)
    decision = world.step()
    assert len(decision.memory.scale_down_at) == PENDING_SCALE_DOWN_LIMIT
    scaled = [a.revision for a in decision.actions if isinstance(a, m.ScaleRevision)]
    assert len(scaled) == 3


def test_drift_is_restored_with_an_event() -> None:
    world = started()
    world.deployments["rev1"].drifted = True
    decision = world.step()
    assert m.RestoreRevision("rev1") in decision.actions
    assert "DriftReverted" in world.reasons()


def test_revision_history_limit_prunes_the_oldest_revisions() -> None:
    world = started(revision_history_limit=1, scale_down_delay_seconds=0)
    for rev in ("rev2", "rev3", "rev4"):
        world.advance(1)
        world.set_template(rev)
        world.control("promote-full", f"p-{rev}")
        world.settle()
        world.advance(1)
        world.settle()
    assert set(world.deployments) == {"rev4", "rev3"}


def test_deletion_restores_stable_routing_then_finalizes() -> None:
    world = started()
    world.set_template("rev2")
    world.settle()
    world.plan = replace(world.plan, deleting=True)
    first = world.step()
    assert m.SetWeight(0) in first.actions
    assert not first.done_deleting
    second = world.step()
    assert second.done_deleting
    assert m.FinalizeRouting(restore_stable=True) in second.actions


def test_deletion_lets_go_when_the_routing_object_is_gone() -> None:
    """Regression: a namespace being deleted takes the HTTPRoute first; the finalizer must not
    wait forever for a weight it can no longer read."""
    world = started()
    world.set_template("rev2")
    world.settle()
    world.router_error = "HTTPRoute shop does not exist"
    world.plan = replace(world.plan, deleting=True)
    decision = world.step()
    assert decision.done_deleting


def test_a_router_error_holds_the_canary_where_it_is() -> None:
    world = started()
    world.set_template("rev2")
    world.step()
    world.router_error = "HTTPRoute shop does not exist"
    assert not world.run(20), "it keeps trying while the router is broken"
    assert world.memory.step == 0, "no weight can be confirmed, so no step completes"
    assert world.deployments["rev1"].replicas == 4


def test_deletion_can_leave_routing_as_it_is() -> None:
    world = started()
    world.set_template("rev2")
    world.settle()
    world.plan = replace(world.plan, deleting=True, restore_stable_on_delete=False)
    decision = world.step()
    assert decision.done_deleting
    assert m.SetWeight(0) not in decision.actions


ANALYSIS_STEPS = (
    m.Step(StepAction.SET_WEIGHT, weight=20),
    m.Step(StepAction.ANALYSIS),
    m.Step(StepAction.SET_WEIGHT, weight=60),
    m.Step(StepAction.PAUSE),
)


def verdict(value: AnalysisVerdict, message: str = "error-rate 0.31 > 0.05") -> m.AnalysisObserved:
    return m.AnalysisObserved(value, message)


@MODES
def test_an_analysis_step_holds_until_its_verdict(weighted: bool) -> None:
    world = started(weighted, steps=ANALYSIS_STEPS)
    world.set_template("rev2")
    assert not world.run(20), "an analysis step waits for its verdict"
    assert world.memory.step == 1
    assert world.memory.phase == Phase.PROGRESSING
    world.step_analysis = verdict(AnalysisVerdict.RUNNING, "2/5 measured")
    assert not world.run(10)
    assert world.memory.step == 1
    world.step_analysis = verdict(AnalysisVerdict.SUCCESSFUL, "5/5 successful")
    world.settle()
    final = world.memory
    assert final.step == 3
    assert final.phase == Phase.PAUSED


@MODES
def test_a_failed_analysis_aborts_and_names_the_metric(weighted: bool) -> None:
    world = started(weighted, steps=ANALYSIS_STEPS)
    world.set_template("rev2")
    world.run(20)  # to the analysis step, which waits for its verdict
    world.step_analysis = verdict(AnalysisVerdict.FAILED)
    world.settle()
    assert world.memory.aborted
    assert world.memory.abort_reason == "AnalysisFailed"
    assert "error-rate 0.31 > 0.05" in (world.memory.abort_message or "")
    assert world.observe().weight == 0
    assert world.deployments["rev2"].replicas == 0


@pytest.mark.parametrize("outcome", [AnalysisVerdict.INCONCLUSIVE, AnalysisVerdict.ERROR])
def test_inconclusive_or_erroring_analysis_pauses_and_never_promotes(
    outcome: AnalysisVerdict,
) -> None:
    world = started(steps=ANALYSIS_STEPS)
    world.set_template("rev2")
    world.run(20)  # to the analysis step, which waits for its verdict
    world.step_analysis = verdict(outcome, "no data")
    for _ in range(30):
        world.step()
        world.pods_become_ready()
        world.advance(10)
    assert world.memory.phase == Phase.PAUSED
    assert world.memory.step == 1
    assert world.memory.stable == "rev1"
    world.control("promote", "p1")
    world.settle()
    assert world.memory.step == 3, "a person's promote goes on past the analysis"


def test_background_analysis_failure_aborts_at_any_later_step() -> None:
    world = started(steps=ANALYSIS_STEPS, background_from_step=0)
    world.set_template("rev2")
    world.step_analysis = verdict(AnalysisVerdict.SUCCESSFUL)
    world.settle()
    assert world.memory.step == 3
    world.background_analysis = verdict(AnalysisVerdict.FAILED, "p99 latency 0.9 s > 0.5 s")
    world.settle()
    assert world.memory.abort_reason == "AnalysisFailed"
    assert world.observe().weight == 0


def test_decide_is_pure() -> None:
    world = started()
    world.set_template("rev2")
    observed = world.observe()
    first = m.decide(world.plan, world.memory, observed, world.now)
    second = m.decide(world.plan, world.memory, observed, world.now)
    assert first == second


@pytest.mark.parametrize(
    ("weight", "replicas", "needed"),
    [(0, 4, 0), (1, 4, 1), (10, 4, 1), (25, 4, 1), (26, 4, 2), (50, 4, 2), (100, 4, 4), (33, 3, 1)],
)
def test_canary_replicas_for_a_weight(weight: int, replicas: int, needed: int) -> None:
    assert m.canary_replicas_for(weight, replicas) == needed


# --- random histories ------------------------------------------------------------------------

EVENTS = st.lists(
    st.one_of(
        st.just(("tick",)),
        st.just(("ready",)),
        st.tuples(st.just("wait"), st.integers(1, 40)),
        st.tuples(st.just("template"), st.sampled_from(["rev1", "rev2", "rev3", "rev4"])),
        st.tuples(st.just("broken"), st.sampled_from(["rev2", "rev3", "rev4"])),
        st.tuples(st.just("control"), st.sampled_from([c.value for c in Control])),
        # spec.replicas changed mid-rollout: `kubectl scale`, or a HorizontalPodAutoscaler.
        st.tuples(st.just("scale"), st.integers(0, 6)),
        # Someone else sets the adopted Deployment's replicas (a GitOps sync).
        st.tuples(st.just("adopted-scaled"), st.integers(0, 6)),
        st.tuples(st.just("analysis"), st.sampled_from(list(AnalysisVerdict))),
    ),
    max_size=60,
)

STEPS = st.lists(
    st.one_of(
        st.builds(lambda w: m.Step(StepAction.SET_WEIGHT, weight=w), st.integers(0, 100)),
        st.builds(
            lambda s: m.Step(StepAction.PAUSE, pause_seconds=s),
            st.one_of(st.none(), st.integers(0, 60)),
        ),
        st.just(m.Step(StepAction.ANALYSIS)),
    ),
    min_size=1,
    max_size=6,
).map(tuple)


def check_invariants(world: World, observed: m.Observed, decision: m.Decision) -> None:
    """The safety rules, checked on every single decision."""
    before = world.history[-2][1].memory if len(world.history) > 1 else m.Memory()
    memory = decision.memory
    canary = before.canary
    for action in decision.actions:
        if isinstance(action, m.SetWeight):
            assert 0 <= action.weight <= 100
            if action.weight > 0 and canary is not None:
                need = m.canary_replicas_for(action.weight, world.plan.replicas)
                ready = observed.revisions[canary].ready if canary in observed.revisions else 0
                assert ready >= need, f"weight {action.weight}% with {ready} ready canary pods"
        if isinstance(action, m.ScaleRevision) and world.plan.weighted:
            current = observed.revisions[action.revision].replicas
            if action.replicas < current:
                _assert_traffic_left(observed, action, world.plan.replicas)
    assert 0 <= memory.desired_weight <= 100
    if not world.plan.weighted and canary is not None and observed.weight is not None:
        # The replica ratio never gives the canary more than a step asked for (issue 9, item 2):
        # at most the largest weight asked of this canary so far.
        asked = max(
            (d.memory.desired_weight for _, d in world.history[:-1] if d.memory.canary == canary),
            default=0,
        )
        if not before.aborted and before.stage == Stage.STEPS:
            assert observed.weight <= max(asked, 0) or observed.weight == 0, (observed, asked)
    for action in decision.actions:
        if isinstance(action, m.ScaleAdopted):
            _assert_adopted_scaled_safely(world, observed, before, action)
    if before.paused_by_user and memory.paused_by_user:
        # Held by the pause control: nothing moves, whatever the step (issue 13, item 5).
        reasons = [e.reason for e in decision.actions if isinstance(e, m.EmitEvent)]
        assert "StepCompleted" not in reasons
        assert (memory.step, memory.stage) == (before.step, before.stage)
        assert memory.desired_weight == before.desired_weight
        weights = [a.weight for a in decision.actions if isinstance(a, m.SetWeight)]
        assert set(weights) <= {before.desired_weight}, weights
    if memory.canary == before.canary and memory.canary is not None:
        # No step is skipped silently: each one passed is announced (promote-full and retry
        # move the index on purpose, and say so).
        reasons = [e.reason for e in decision.actions if isinstance(e, m.EmitEvent)]
        if not {"PromotedFull", "Retried"} & set(reasons):
            assert memory.step - before.step == reasons.count("StepCompleted"), reasons


def _assert_adopted_scaled_safely(
    world: World, observed: m.Observed, before: m.Memory, action: m.ScaleAdopted
) -> None:
    """The adopted Deployment only shrinks (but at deletion), and under onSuccess never while
    the rollout's Services still select its pods, nor before the stable revision is ready."""
    adopted, adoption = observed.adopted, world.plan.adoption
    assert adopted is not None
    assert adoption is not None
    if world.plan.deleting:
        assert action.replicas == world.plan.replicas
        return
    assert action.replicas < adopted.replicas, action
    stable = before.stable or ""
    ready = observed.revisions[stable].ready if stable in observed.revisions else 0
    if adoption.scale_down == ScaleDown.ON_SUCCESS:
        assert action.replicas == 0
        # A Service that selects its pods names no revision.
        assert observed.stable_service is not None, "scaled while the Services served its pods"
        assert ready >= world.plan.replicas
    else:
        assert adoption.scale_down == ScaleDown.PROGRESSIVELY
        assert action.replicas >= world.plan.replicas - ready


def _assert_traffic_left(observed: m.Observed, action: m.ScaleRevision, replicas: int) -> None:
    weight = observed.weight or 0
    if observed.canary_service == action.revision and weight > 0:
        need = m.canary_replicas_for(weight, replicas)
        assert action.replicas >= need, f"scaled {action} while it serves {weight}%"
    if observed.stable_service == action.revision and weight < 100:
        served_by_canary = observed.canary_service == action.revision
        assert (served_by_canary and weight == 0) or action.replicas >= replicas, (
            f"scaled {action} while the stable Service sends it {100 - weight}%"
        )


def happen(world: World, event: tuple[object, ...], *, token: str) -> None:
    """One thing of a random history happens to the world (before the next decision)."""
    match event:
        case ("ready",):
            world.pods_become_ready()
        case ("wait", seconds):
            world.advance(float(seconds))  # type: ignore[arg-type]
        case ("template", revision):
            world.set_template(str(revision))
        case ("broken", revision):
            world.broken_revisions.add(str(revision))
        case ("control", name):
            world.control(str(name), token)
        case ("analysis", outcome):
            world.step_analysis = m.AnalysisObserved(AnalysisVerdict(str(outcome)), "judged")
        case ("scale", count):
            world.scale(int(count))  # type: ignore[call-overload]
        case ("adopted-scaled", count) if world.adopted is not None:
            world.adopted.replicas = int(count)  # type: ignore[call-overload]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    weighted=st.booleans(),
    steps=STEPS,
    replicas=st.integers(1, 6),
    events=EVENTS,
    scale_down=st.one_of(st.none(), st.sampled_from(list(ScaleDown))),
    lagging_status=st.booleans(),
)
def test_random_histories_keep_the_safety_rules(
    *,
    weighted: bool,
    steps: tuple[m.Step, ...],
    replicas: int,
    events: list[tuple[object, ...]],
    scale_down: ScaleDown | None,
    lagging_status: bool,
) -> None:
    world = World(
        m.Plan(
            revision="rev1",
            replicas=replicas,
            steps=steps,
            weighted=weighted,
            progress_deadline_seconds=50,
            scale_down_delay_seconds=5,
            adoption=None if scale_down is None else m.Adoption("web", scale_down),
        )
    )
    if scale_down is not None:  # a Deployment of the user's, adopted (spec.workloadRef)
        world.adopted = AdoptedDeployment(replicas=replicas, ready=replicas)
    world.lagging_status = lagging_status  # a scaled Deployment reads 0 ready until "ready"
    for number, event in enumerate(events):
        happen(world, event, token=f"token-{number}")
        decision = world.step()
        check_invariants(world, *world.history[-1][:1], decision)
        world.advance(0.5)
    # Left alone long enough (and resumed, if held), every history converges: nothing half-done.
    if world.memory.paused_by_user:
        world.control("resume", "resume-at-the-end")
    world.broken_revisions.clear()
    for d in world.deployments.values():
        d.broken = False
    world.run(200, seconds=5)  # an analysis step without a verdict waits, as checked below
    waiting_for_analysis = (
        world.memory.canary is not None
        and world.memory.step < len(steps)
        and steps[world.memory.step].kind == StepAction.ANALYSIS
        and (world.step_analysis is None or world.step_analysis.verdict == "Running")
    )
    settled = {Phase.HEALTHY, Phase.PAUSED, Phase.DEGRADED}
    assert world.memory.phase in settled or waiting_for_analysis, world.memory
    assert world.memory.stable is not None
    assert world.memory.stable in world.deployments
    if world.memory.phase == Phase.HEALTHY:
        assert world.deployments[world.memory.stable].replicas == world.plan.replicas
        assert world.observe().weight == 0


def test_an_aborted_canary_with_no_abort_delay_is_scaled_down_once_traffic_left() -> None:
    """abortScaleDownDelaySeconds: 0 scales the aborted canary down as soon as the router
    confirms its weight is 0, with no time passing."""
    world = started(abort_scale_down_delay_seconds=0)
    world.set_template("rev2")
    world.settle()
    world.control("abort", "a1")
    aborting = world.step()
    assert m.SetWeight(0) in aborting.actions
    assert m.ScaleRevision("rev2", 0) not in aborting.actions, "traffic leaves first"
    assert m.ScaleRevision("rev2", 0) in world.step().actions
    assert world.deployments["rev2"].replicas == 0


@MODES
def test_a_deleted_revision_that_is_not_the_specs_is_named_not_recreated(weighted: bool) -> None:
    """Its template is gone with it: a RevisionGone problem names it, nothing is created for
    it, and the canary is not promoted meanwhile."""
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    del world.deployments["rev1"]  # someone deleted the stable revision's Deployment
    world.control("abort", "a1")
    decision = world.step()
    assert decision.problem is not None
    assert decision.problem.reason == "RevisionGone"
    assert "rev1" in decision.problem.message
    assert not any(isinstance(a, m.CreateRevision) for a in decision.actions)
    assert "RevisionGone" in world.reasons()
    assert world.memory.stable == "rev1"
