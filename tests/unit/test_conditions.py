"""The Analysis condition: what the latest analysis run of the current canary says.

`kubectl wait --for=condition=Analysis` and Argo CD's health read it, so each verdict maps to a
status and a reason, and a run of an older canary is never reported as the current one's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from coalmine import machine as m
from coalmine import translate as s
from coalmine.api.resource import CanaryRollout
from coalmine.api.vocabulary import ConditionType
from devenv.manifests import canary_rollout, plain_template

from .machine_world import EPOCH


def rollout_with_runs(*runs: dict[str, Any]) -> CanaryRollout:
    body = canary_rollout("web", plain_template("1", app="web"), steps=[{"setWeight": 20}])
    body["metadata"] |= {"namespace": "shop", "generation": 1}
    body["status"] = {"stableRevision": "aaa", "canaryRevision": "bbb", "analysis": list(runs)}
    return CanaryRollout.from_object(body)


def run(name: str, revision: str, verdict: str, minutes: int) -> dict[str, Any]:
    started = (EPOCH + timedelta(minutes=minutes)).isoformat()
    message = f"{verdict.lower()} run"
    return {
        "name": name,
        "revision": revision,
        "startedAt": started,
        "verdict": verdict,
        "message": message,
    }


def analysis_condition(rollout: CanaryRollout, canary: str | None = "bbb") -> Any:
    memory = m.Memory(stable="aaa", canary=canary, step=0, step_started=EPOCH)
    status = s.status_from(rollout, m.Decision((), memory), EPOCH + timedelta(hours=1))
    return status.condition(ConditionType.ANALYSIS)


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        ("Successful", "True"),
        ("Failed", "False"),
        ("Running", "Unknown"),
        ("Inconclusive", "Unknown"),
        ("Error", "Unknown"),
    ],
)
def test_the_latest_run_of_the_canary_sets_the_condition(verdict: str, expected: str) -> None:
    rollout = rollout_with_runs(
        run("background", "bbb", "Successful", 0),
        run("step-4", "bbb", verdict, 5),
    )
    condition = analysis_condition(rollout)
    assert condition is not None
    assert (condition.status, condition.reason) == (expected, f"Analysis{verdict}")
    assert condition.message == f"step-4: {verdict.lower()} run"


def test_a_run_of_another_revision_is_not_the_canarys() -> None:
    rollout = rollout_with_runs(
        run("step-2", "bbb", "Running", 0), run("step-2", "old", "Failed", 9)
    )
    condition = analysis_condition(rollout)
    assert condition is not None
    assert condition.reason == "AnalysisRunning"
    assert analysis_condition(rollout_with_runs(run("step-2", "old", "Failed", 0))) is None
    assert analysis_condition(rollout_with_runs(), canary=None) is None


def test_the_condition_of_an_earlier_canary_does_not_stay() -> None:
    """A new canary with no run yet: the Analysis condition of the one before is not its."""
    earlier = rollout_with_runs(run("step-2", "old", "Failed", 0))
    memory = m.Memory(stable="aaa", canary="old", step=0, step_started=EPOCH)
    written = s.status_from(earlier, m.Decision((), memory), EPOCH + timedelta(minutes=1))
    assert written.condition(ConditionType.ANALYSIS) is not None
    body = earlier.to_object()
    body["status"] = written.to_dict()
    assert analysis_condition(CanaryRollout.from_object(body)) is None
