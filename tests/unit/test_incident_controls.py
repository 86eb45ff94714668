"""The incident controls in the state machine: pause, resume and restart (issue 13, item 5).

A pause holds the canary in flight at the weight asked so far, whatever the step, with its
timers stopped; resume lets it go on with the time it had left; restart replaces the stable
revision's pods. Driven through the simulated world of the machine tests; the random histories
of test_machine.py send these tokens too.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from coalmine import machine as m
from coalmine import translate as s
from coalmine.api.resource import CanaryRollout
from coalmine.api.vocabulary import AnalysisVerdict, ConditionType, Phase, Stage, StepAction

from .machine_world import EPOCH, World, started

MODES = pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "replica-ratio"])


def run(world: World, seconds: float, *, ready: bool = True) -> None:
    """Reconcile once a second for ``seconds``, pods becoming ready unless told otherwise."""
    for _ in range(int(seconds)):
        world.step()
        if ready:
            world.pods_become_ready()
        world.advance(1.0)


# --- pause ----------------------------------------------------------------------------------------


@MODES
def test_a_pause_holds_the_weight_reached_so_far_whatever_the_step(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.step()
    world.pods_become_ready()
    world.step()  # setWeight 20 asked
    world.control("pause", "p1")
    world.settle(rounds=40)
    assert world.memory.paused_by_user
    held = world.memory.desired_weight
    assert held == 20
    # A long time later, still where it was: no step completed, the timed pause never ran.
    step = world.memory.step
    run(world, 300)
    assert world.memory.step == step
    assert world.memory.desired_weight == held
    assert world.memory.stage == Stage.STEPS
    assert world.reasons().count("PausedByUser") == 1
    assert "paused by user" in world.memory.message


def test_a_timed_pause_does_not_run_out_while_held_and_resumes_with_what_was_left() -> None:
    world = started()
    world.set_template("rev2")
    world.run(3)  # setWeight 20 confirmed: now in the 30 s pause
    assert world.memory.step == 1
    run(world, 10)  # 10 s of the 30 s pause go by
    world.control("pause", "p1")
    run(world, 120)
    assert world.memory.step == 1, "the pause step ran out while held"
    world.control("resume", "r1")
    run(world, 15)
    assert world.memory.step == 1, "resumed with less than the 20 s it had left"
    assert world.memory.held_seconds == pytest.approx(120, abs=2)
    run(world, 10)
    assert world.memory.step >= 2
    assert world.reasons().count("Resumed") == 1


def test_steps_started_over_do_not_inherit_the_time_held_in_the_old_ones() -> None:
    world = started(steps_hash="a")
    world.set_template("rev2")
    world.run(3)  # setWeight 20 confirmed: now in the 30 s pause
    world.control("pause", "p1")
    run(world, 100)
    world.control("resume", "r1")
    run(world, 2)
    assert world.memory.held_seconds == pytest.approx(100, abs=2)
    pause_first = (
        m.Step(StepAction.PAUSE, pause_seconds=30),
        m.Step(StepAction.SET_WEIGHT, weight=50),
        m.Step(StepAction.PAUSE),
    )
    world.plan = replace(world.plan, steps=pause_first, steps_hash="b")
    run(world, 2)
    assert "StepsChanged" in world.reasons()
    assert world.memory.held_seconds == 0
    run(world, 35)
    assert world.memory.step >= 1, "the new 30 s pause counted the time held in the old steps"


def test_steps_started_over_while_held_count_only_the_hold_that_follows() -> None:
    world = started(steps_hash="a")
    world.set_template("rev2")
    world.run(3)
    world.control("pause", "p1")
    run(world, 50)
    pause_first = (m.Step(StepAction.PAUSE, pause_seconds=30), m.Step(StepAction.PAUSE))
    world.plan = replace(world.plan, steps=pause_first, steps_hash="b")
    run(world, 20)
    assert world.memory.step == 0
    world.control("resume", "r1")
    run(world, 2)
    assert world.memory.held_seconds == pytest.approx(20, abs=2)
    run(world, 33)
    assert world.memory.step >= 1, "the new 30 s pause counted the hold of the old steps"


@MODES
def test_the_progress_deadline_does_not_pass_while_held(weighted: bool) -> None:
    world = started(weighted, progress_deadline_seconds=60)
    world.broken_revisions.add("rev2")
    world.set_template("rev2")
    run(world, 20, ready=False)
    world.control("pause", "p1")
    run(world, 600, ready=False)
    assert not world.memory.aborted, world.memory.abort_message
    world.control("resume", "r1")
    run(world, 30, ready=False)
    assert not world.memory.aborted, "the deadline counted the time held"
    run(world, 20, ready=False)
    assert world.memory.aborted
    assert world.memory.abort_reason == "ProgressDeadlineExceeded"


@MODES
def test_a_held_promotion_does_not_move_on_until_resumed(weighted: bool) -> None:
    world = started(weighted)
    world.broken_revisions.add("rev2")
    world.set_template("rev2")
    run(world, 3, ready=False)
    world.control("promote-full", "f1")
    run(world, 2, ready=False)
    assert world.memory.stage == Stage.FULL_WEIGHT
    world.control("pause", "p1")
    world.broken_revisions.clear()
    for deployment in world.deployments.values():
        deployment.broken = False
    run(world, 60)
    assert world.memory.stage == Stage.FULL_WEIGHT
    assert world.memory.stable == "rev1"
    world.control("resume", "r1")
    world.settle()
    assert world.memory.phase == Phase.HEALTHY
    assert world.memory.stable == "rev2"


@MODES
def test_promote_is_ignored_while_held_and_abort_is_not(weighted: bool) -> None:
    world = started(weighted)
    world.set_template("rev2")
    world.settle()
    assert world.memory.phase == Phase.PAUSED  # at the indefinite pause
    world.control("pause", "p1")
    world.settle()
    world.control("promote", "t1")
    world.settle()
    assert world.memory.step == 3
    assert world.events[-1].reason == "ControlIgnored"
    assert "resume first" in world.events[-1].message
    world.control("abort", "a1")
    world.settle()
    assert world.memory.aborted
    assert not world.memory.paused_by_user, "an abort ends the hold"
    assert world.observe().weight == 0


def test_a_failed_analysis_still_aborts_a_held_canary() -> None:
    steps = (m.Step(StepAction.SET_WEIGHT, weight=20), m.Step(StepAction.ANALYSIS))
    world = started(steps=steps)
    world.set_template("rev2")
    world.run(10)  # at the analysis step, which runs (and so never settles)
    world.control("pause", "p1")
    world.run(10)
    world.step_analysis = m.AnalysisObserved(AnalysisVerdict.SUCCESSFUL, "fine")
    world.run(10)
    assert world.memory.step == 1, "a successful analysis waits for the resume"
    world.step_analysis = m.AnalysisObserved(AnalysisVerdict.FAILED, "error-rate 0.4 > 0.05")
    world.settle()
    assert world.memory.aborted
    assert world.memory.abort_reason == "AnalysisFailed"
    assert world.observe().weight == 0


def test_there_is_nothing_to_pause_or_resume_without_a_canary() -> None:
    world = started()
    world.control("pause", "p1")
    world.step()
    assert not world.memory.paused_by_user
    world.control("resume", "r1")
    world.step()
    assert [e.reason for e in world.events[-2:]] == ["ControlIgnored", "ControlIgnored"]
    assert {c.value for c in world.memory.handled} >= {"pause", "resume"}


def test_a_new_template_while_held_retires_the_canary_and_starts_the_next_unheld() -> None:
    world = started()
    world.set_template("rev2")
    world.settle()
    world.control("pause", "p1")
    world.settle()
    world.set_template("rev3")
    world.settle()
    assert world.memory.canary == "rev3"
    assert not world.memory.paused_by_user
    assert world.memory.step == 3


# --- restart --------------------------------------------------------------------------------------


@MODES
def test_restart_stamps_the_stable_revision_once(weighted: bool) -> None:
    world = started(weighted)
    world.control("restart", "x1")
    decision = world.step()
    restarts = [a for a in decision.actions if isinstance(a, m.RestartRevision)]
    assert restarts == [m.RestartRevision("rev1", m.Restart("rev1", world.now).stamp)]
    assert world.memory.restart == m.Restart("rev1", world.now)
    world.settle()
    actions = [a for _, d in world.history for a in d.actions]
    assert sum(isinstance(a, m.RestartRevision) for a in actions) == 1, "restarted again"
    assert world.reasons().count("Restarting") == 1


def test_restart_during_a_canary_touches_only_the_stable_revision() -> None:
    world = started()
    world.set_template("rev2")
    world.settle()
    world.control("restart", "x1")
    world.settle()
    assert world.deployments["rev1"].restarted is not None
    assert world.deployments["rev2"].restarted is None
    world.control("promote", "t1")
    world.settle()
    assert world.memory.stable == "rev2"
    assert world.deployments["rev2"].restarted is None, "a new stable is not restarted"


def test_a_restart_whose_write_was_lost_is_written_again() -> None:
    world = started()
    world.control("restart", "x1")
    decision = world.step()
    assert any(isinstance(a, m.RestartRevision) for a in decision.actions)
    world.deployments["rev1"].restarted = None  # the patch never landed (a crash)
    decision = world.step()
    assert any(isinstance(a, m.RestartRevision) for a in decision.actions)


# --- the status -----------------------------------------------------------------------------------


def test_the_status_records_the_hold_and_the_memory_reads_it_back() -> None:
    body = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": "web", "namespace": "shop", "generation": 1},
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "image": "web:1"}]}},
            "service": {"name": "web", "port": 80},
            "steps": [{"setWeight": 20}, {"pause": {"duration": "30s"}}],
        },
    }
    rollout = CanaryRollout.from_object(body)
    memory = m.Memory(
        stable="aaa",
        canary="bbb",
        step=1,
        step_started=EPOCH,
        desired_weight=20,
        paused_at=EPOCH + timedelta(seconds=5),
        held_seconds=12.5,
        restart=m.Restart("aaa", EPOCH),
        message="paused by user at 20%",
        promoted=frozenset({"aaa"}),
    )
    status = s.status_from(rollout, m.Decision((), memory), EPOCH + timedelta(seconds=9))
    wire = status.to_dict()
    assert wire["pausedByUser"] is True
    assert wire["stepHeldSeconds"] == 12.5
    assert wire["restart"]["revision"] == "aaa"
    paused = status.condition(ConditionType.PAUSED)
    assert paused is not None
    assert (paused.status, paused.reason) == ("True", "PausedByUser")
    assert s.memory_from(status) == memory
    resumed = s.status_from(
        rollout, m.Decision((), m.Memory(stable="aaa")), EPOCH + timedelta(seconds=9)
    )
    assert "pausedByUser" not in resumed.to_dict()
    assert "pausedByUserAt" not in resumed.to_dict()
