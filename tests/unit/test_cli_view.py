"""`kubectl coalmine` without a cluster: what it prints, and the decisions behind its commands.

The views are rendered from dicts shaped exactly like what the API server returns: statuses are
built through `CanaryRolloutStatus` (so a misspelt field would vanish and fail a test), and
Deployments through `workloads.build_deployment`, the operator's own code. The analysis status
is written by hand in the shapes the CLI supports (a list of runs, or a single object), since
that part of the status belongs to a feature still being built. Absent fields are tested as
carefully as present ones: the CLI must print whatever an older operator wrote.

The second half tests the pure decisions of `commands` (which kubeconfig and namespace, which
revision `undo` restores and how exactly) and, with a fake API, the errors and the watch loop.
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coalmine import kube as k
from coalmine import workloads
from coalmine.api.status import CanaryRolloutStatus
from coalmine.api.template import revision_hash
from coalmine.api.vocabulary import Control
from coalmine.cli import commands, kubeconfig, view
from coalmine.cli import session as cli_session
from coalmine.cli.commands import KeptRevision
from coalmine.cli.session import CliError, Session
from coalmine.kube import Kube, KubeError, Obj
from coalmine.labels import RESTARTED_AT_ANNOTATION, REVISION_LABEL, TEMPLATE_ANNOTATION
from tests.unit.scripted_kube import ScriptedKube

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def template(version: str, *, labels: bool = True) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "spec": {"containers": [{"name": "app", "image": f"coalmine.dev/demo-app:{version}"}]}
    }
    if labels:
        pod["metadata"] = {"labels": {"app": "shop"}}
    return pod


def status(**fields: Any) -> dict[str, Any]:
    """A status as the operator writes it: through the model, camelCase, unset fields left out."""
    return CanaryRolloutStatus.model_validate(fields).to_dict()


def rollout(
    status_fields: dict[str, Any] | None,
    *,
    name: str = "shop",
    namespace: str = "prod",
    generation: int = 2,
    steps: int = 4,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": generation,
            "resourceVersion": "100",
            "creationTimestamp": stamp(3 * 86400 + 3600),
        },
        "spec": {
            "replicas": 4,
            "template": template("v2"),
            "service": {"name": name, "port": 80},
            "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}][:steps],
        },
    }
    if status_fields is not None:
        obj["status"] = status_fields
    return obj


WORKLOAD = workloads.Rollout("prod", "shop", "uid-1", "shop", 80, 80)


def deployment(version: str, *, replicas: int, ready: int | None, age: float = 60) -> Obj:
    revision = revision_hash(template(version))
    obj = workloads.build_deployment(WORKLOAD, revision, template(version), replicas)
    obj["metadata"]["creationTimestamp"] = stamp(age)
    if ready is not None:
        obj["status"] = {"replicas": replicas, "readyReplicas": ready, "observedGeneration": 1}
    return obj


V1, V2, V3 = (revision_hash(template(v)) for v in ("v1", "v2", "v3"))


def condition(
    kind: str, state: str, reason: str, message: str = "", ago: float = 30
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": state,
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp(ago),
        "observedGeneration": 2,
    }


def paused_status() -> dict[str, Any]:
    return status(
        phase="Paused",
        message="paused at 50% until promoted (coalmine.dev/promote)",
        observedGeneration=2,
        stableRevision=V1,
        canaryRevision=V2,
        stage="Steps",
        currentStepIndex=3,
        stepDisplay="3/4",
        stepStartedAt=stamp(40),
        desiredWeight=50,
        confirmedWeight=50,
        pauseStartedAt=stamp(40),
        conditions=[
            condition("Available", "True", "StableServing"),
            condition("Progressing", "True", "Paused", "waiting for a promote token"),
            condition("Paused", "True", "PausedUntilPromoted", "waiting for a promote token", 40),
        ],
        history=[
            {"revision": V2, "images": ["coalmine.dev/demo-app:v2"], "outcome": "InProgress"},
            {"revision": V1, "images": ["coalmine.dev/demo-app:v1"], "outcome": "Promoted"},
        ],
        controls={"promote": "abc"},
    )


def lines_of(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


# --- ages and tables -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "0s"),
        (0, "0s"),
        (95, "95s"),
        (120, "2m"),
        (330, "5m30s"),
        (45 * 60, "45m"),
        (5 * 3600 + 20 * 60, "5h20m"),
        (5 * 3600, "5h"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (200 * 86400, "200d"),
        (800 * 86400, "2y70d"),
    ],
)
def test_ages_read_like_kubectl(seconds: int, shown: str) -> None:
    assert view.human_age(timedelta(seconds=seconds)) == shown


def test_timestamps_absent_or_unreadable_show_a_dash() -> None:
    assert view.age(None, NOW) == "-"
    assert view.age("yesterday", NOW) == "-"
    assert view.age("2026-03-01T11:59:00", NOW) == "-", "a naive time is not the API's"
    assert view.age(stamp(61), NOW) == "61s"


def test_tables_align_columns_three_spaces_apart() -> None:
    text = view.table(["A", "LONGER"], [["wide cell", "x"], ["b", "y"]])
    assert text.splitlines() == ["A           LONGER", "wide cell   x", "b           y"]


# --- list ------------------------------------------------------------------------------------


def test_list_has_the_columns_of_kubectl_get_crol() -> None:
    rollouts = [
        rollout(paused_status(), name="shop"),
        rollout(status(phase="Healthy", stableRevision=V1, observedGeneration=2), name="cart"),
    ]
    text = view.rollouts_table(rollouts, now=NOW)
    assert lines_of(text) == [
        "NAME PHASE STEP WEIGHT STABLE CANARY AGE",
        f"cart Healthy - - {V1} - 3d1h",
        f"shop Paused 3/4 50 {V1} {V2} 3d1h",
    ]


def test_list_across_namespaces_adds_the_namespace_first() -> None:
    rollouts = [rollout(paused_status(), namespace="b"), rollout(None, namespace="a")]
    text = view.rollouts_table(rollouts, now=NOW, all_namespaces=True)
    assert lines_of(text) == [
        "NAMESPACE NAME PHASE STEP WEIGHT STABLE CANARY AGE",
        "a shop - - - - - 3d1h",
        f"b shop Paused 3/4 50 {V1} {V2} 3d1h",
    ]


# --- the live view ---------------------------------------------------------------------------


def test_view_of_a_paused_canary() -> None:
    deployments = [
        deployment("v1", replicas=2, ready=2, age=3600),
        deployment("v2", replicas=2, ready=1),
    ]
    text = view.rollout_view(rollout(paused_status()), deployments, now=NOW)
    assert lines_of(text) == [
        "CanaryRollout prod/shop",
        "Phase: Paused",
        "Step: 3/4 (stage Steps)",
        "Weight: desired 50%, confirmed 50%",
        "Message: paused at 50% until promoted (coalmine.dev/promote)",
        f"Stable: {V1} 2/2 pods ready",
        "app: coalmine.dev/demo-app:v1",
        f"Canary: {V2} 1/2 pods ready",
        "app: coalmine.dev/demo-app:v2",
        "Conditions (not OK):",
        "TYPE STATUS REASON SINCE MESSAGE",
        "Paused True PausedUntilPromoted 40s waiting for a promote token",
    ]


def test_view_of_a_rollout_without_status_yet() -> None:
    text = view.rollout_view(rollout(None), [], now=NOW)
    assert lines_of(text) == [
        "CanaryRollout prod/shop",
        "Phase: - (no status yet: is the operator running?)",
        "Step: - (no canary; 4 steps)",
        "Weight: desired -, confirmed -",
        "Stable: none",
        "Canary: none",
    ]


def test_view_of_a_healthy_rollout_says_all_conditions_are_ok() -> None:
    healthy = status(
        phase="Healthy",
        observedGeneration=2,
        stableRevision=V2,
        desiredWeight=0,
        confirmedWeight=0,
        conditions=[
            condition("Available", "True", "StableServing"),
            condition("Progressing", "False", "Complete", "revision promoted"),
            condition("Paused", "False", "NotPaused"),
            condition("Aborted", "False", "NotAborted"),
        ],
    )
    text = view.rollout_view(
        rollout(healthy, steps=1), [deployment("v2", replicas=4, ready=4)], now=NOW
    )
    assert "Step: - (no canary; 1 step)" in lines_of(text)
    assert "Canary: none" in lines_of(text)
    assert "Conditions: all OK" in lines_of(text)
    assert "Analysis" not in text, "no analysis status: no analysis section"


def test_view_of_an_aborted_canary_shows_why() -> None:
    aborted = status(
        phase="Degraded",
        message="aborted: aborted on request (coalmine.dev/abort)",
        observedGeneration=2,
        stableRevision=V1,
        canaryRevision=V2,
        stage="Steps",
        stepDisplay="3/4",
        desiredWeight=0,
        confirmedWeight=0,
        abortedAt=stamp(125),
        abortReason="AbortedByUser",
        abortMessage="aborted on request (coalmine.dev/abort)",
        conditions=[
            condition("Available", "True", "StableServing"),
            condition("Progressing", "False", "Aborted", "traffic is back on stable"),
            condition("Aborted", "True", "AbortedByUser", "aborted on request"),
        ],
    )
    deployments = [deployment("v1", replicas=4, ready=4), deployment("v2", replicas=0, ready=0)]
    text = lines_of(view.rollout_view(rollout(aborted), deployments, now=NOW))
    assert "Aborted: AbortedByUser, 2m5s ago: aborted on request (coalmine.dev/abort)" in text
    assert f"Canary: {V2} 0/0 pods ready" in text
    assert "Progressing False Aborted 30s traffic is back on stable" in text
    assert "Aborted True AbortedByUser 30s aborted on request" in text
    assert not any(line.startswith("Available") for line in text)


def test_view_notes_a_generation_the_operator_has_not_acted_on() -> None:
    stale = status(phase="Healthy", observedGeneration=1, stableRevision=V1)
    text = lines_of(view.rollout_view(rollout(stale, generation=2), [], now=NOW))
    assert "Spec: generation 2 not acted on yet (the operator last saw 1)" in text


def test_view_without_deployments_falls_back_to_the_history_images() -> None:
    text = lines_of(view.rollout_view(rollout(paused_status()), [], now=NOW))
    assert f"Stable: {V1} (no Deployment)" in text
    assert "coalmine.dev/demo-app:v1" in text


def test_view_shows_old_revisions_that_still_run_pods() -> None:
    deployments = [
        deployment("v1", replicas=2, ready=2),
        deployment("v2", replicas=2, ready=2),
        deployment("v3", replicas=1, ready=1),
        deployment("v3", replicas=0, ready=None),
    ]
    deployments[3]["metadata"]["labels"][REVISION_LABEL] = "0000000000"
    text = lines_of(view.rollout_view(rollout(paused_status()), deployments, now=NOW))
    assert f"Old: {V3} 1/1 pods ready (scaling down)" in text
    assert not any("0000000000" in line for line in text), "scaled to zero: nothing to say"


def test_deployment_without_status_counts_no_ready_pods() -> None:
    text = lines_of(
        view.rollout_view(
            rollout(paused_status()), [deployment("v2", replicas=3, ready=None)], now=NOW
        )
    )
    assert f"Canary: {V2} 0/3 pods ready" in text


def test_init_containers_are_listed_first_and_marked() -> None:
    pod = template("v2")
    pod["spec"]["initContainers"] = [{"name": "migrate", "image": "coalmine.dev/migrate:7"}]
    obj = workloads.build_deployment(WORKLOAD, V2, pod, 1)
    text = lines_of(view.rollout_view(rollout(paused_status()), [obj], now=NOW))
    start = text.index(f"Canary: {V2} 0/1 pods ready")
    assert text[start + 1 : start + 3] == [
        "migrate (init): coalmine.dev/migrate:7",
        "app: coalmine.dev/demo-app:v2",
    ]


@pytest.mark.parametrize(
    ("kind", "state", "reason", "ok"),
    [
        ("Available", "True", "StableServing", True),
        ("Available", "False", "NoRevision", False),
        ("Progressing", "True", "Walking", True),
        ("Progressing", "False", "Complete", True),
        ("Progressing", "False", "RouterError", False),
        ("Progressing", "Unknown", "Starting", False),
        ("Paused", "False", "NotPaused", True),
        ("Paused", "True", "PausedUntilPromoted", False),
        ("Aborted", "True", "ProgressDeadlineExceeded", False),
        ("InvalidSpec", "True", "InvalidSpec", False),
        ("InvalidSpec", "False", "Valid", True),
        ("Analysis", "Unknown", "Running", False),
        ("Analysis", "True", "Successful", True),
        ("SomethingNew", "False", "Whatever", False),
    ],
)
def test_which_conditions_are_ok(kind: str, state: str, reason: str, ok: bool) -> None:
    assert view.condition_ok(condition(kind, state, reason)) is ok


# --- analysis --------------------------------------------------------------------------------


def measurement(ago: float, outcome: str, value: float | None, **more: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"at": stamp(ago), "outcome": outcome, "message": "", **more}
    if value is not None:
        found["value"] = value
    return found


def with_analysis(analysis: object) -> dict[str, Any]:
    status_fields = paused_status()
    status_fields["analysis"] = analysis
    return rollout(status_fields)


def test_analysis_runs_show_the_latest_measurement_of_each_metric() -> None:
    runs = [
        {
            "name": "step-3",
            "revision": V2,
            "startedAt": stamp(300),
            "verdict": "Running",
            "message": "error-rate 3 measured",
            "metrics": [
                {
                    "name": "error-rate",
                    "verdict": "Running",
                    "successful": 2,
                    "failed": 1,
                    "measurements": [
                        measurement(90, "Successful", 0.01),
                        measurement(60, "Failed", 0.25),
                        measurement(30, "Successful", 0.0123456),
                    ],
                },
                {
                    "name": "latency",
                    "verdict": "Running",
                    "measurements": [measurement(20, "Successful", 120.0, stableValue=118.5)],
                },
                {
                    "name": "latency-judge",
                    "verdict": "Running",
                    "measurements": [
                        measurement(
                            25,
                            "Successful",
                            0.124,
                            stableValue=0.115,
                            shift=0.0099,
                            shiftLow=0.005,
                            pValue=0.00055,
                        )
                    ],
                },
                {"name": "saturation", "verdict": "Running", "measurements": []},
            ],
        }
    ]
    text = lines_of(view.rollout_view(with_analysis(runs), [], now=NOW))
    start = text.index("Analysis:")
    assert text[start:] == [
        "Analysis:",
        "step-3: Running - error-rate 3 measured",
        "RUN METRIC VERDICT MEASURED VALUE OUTCOME RECENT",
        "step-3 error-rate Running 30s 0.01235 Successful SFS",
        "step-3 latency Running 20s 120 (stable 118.5) Successful S",
        "step-3 latency-judge Running 25s 0.124 (stable 0.115), shift +0.0099 [+0.005, +inf] "
        "Successful S",
        "step-3 saturation Running - - - -",
    ]


def test_analysis_as_one_object_with_time_fields_and_unordered_measurements() -> None:
    analysis = {
        "metrics": [
            {
                "name": "error-rate",
                "measurements": [
                    {"time": stamp(10), "outcome": "Inconclusive"},
                    {"time": stamp(50), "outcome": "Successful", "value": 1},
                ],
            }
        ]
    }
    rows = view.measurement_rows(with_analysis(analysis)["status"], NOW)
    assert rows == [
        view.MeasurementRow(
            run="-",
            metric="error-rate",
            verdict="-",
            when="10s",
            value="-",
            outcome="Inconclusive",
            recent="IS",
        )
    ]


@pytest.mark.parametrize("absent", [None, [], {}, "garbage", [42]])
def test_no_analysis_section_when_there_is_no_analysis(absent: object) -> None:
    obj = with_analysis(absent)
    if absent is None:
        del obj["status"]["analysis"]
    text = view.rollout_view(obj, [], now=NOW)
    assert "Analysis" not in text
    assert view.measurement_rows(obj["status"], NOW) == []


# --- progress and completion -----------------------------------------------------------------


def test_progress_lines() -> None:
    assert view.progress_line(rollout(paused_status())) == (
        f"Paused, canary {V2}, step 3/4, weight 50% (desired 50%): "
        "paused at 50% until promoted (coalmine.dev/promote)"
    )
    healthy = status(phase="Healthy", stableRevision=V1, observedGeneration=2)
    assert view.progress_line(rollout(healthy)) == f"Healthy, stable {V1}"
    assert view.progress_line(rollout(None)) == "-"


@pytest.mark.parametrize(
    ("fields", "generation", "expected"),
    [
        ({"phase": "Healthy", "stableRevision": V1, "observedGeneration": 2}, 2, "succeeded"),
        ({"phase": "Healthy", "stableRevision": V1, "observedGeneration": 1}, 2, "running"),
        (
            {"phase": "Degraded", "abortReason": "AbortedByUser", "observedGeneration": 1},
            2,
            "running",
        ),
        ({"phase": "Degraded", "abortMessage": "aborted", "observedGeneration": 2}, 2, "failed"),
        (
            {"phase": "Failed", "message": "spec.steps[0]: bad", "observedGeneration": 2},
            2,
            "failed",
        ),
        ({"phase": "Paused", "canaryRevision": V2, "observedGeneration": 2}, 2, "running"),
        ({"phase": "Progressing", "canaryRevision": V2, "observedGeneration": 2}, 2, "running"),
        (None, 1, "running"),
    ],
)
def test_completion(fields: dict[str, Any] | None, generation: int, expected: str) -> None:
    state, why = view.completion(rollout(fields, generation=generation))
    assert state.value == expected
    assert why


def test_completion_says_why_it_failed() -> None:
    fields = {"phase": "Degraded", "abortMessage": "error-rate 0.3 > 0.05", "observedGeneration": 2}
    assert view.completion(rollout(fields)) == (
        view.Completion.FAILED,
        "phase Degraded: error-rate 0.3 > 0.05",
    )


# --- commands: kubeconfig and namespace ------------------------------------------------------


def test_kubeconfig_precedence(tmp_path: Path) -> None:
    home = tmp_path
    assert kubeconfig.kubeconfig_choice("/x/kc", {"KUBECONFIG": "/y"}, home).source == "/x/kc"
    listed = kubeconfig.kubeconfig_choice(None, {"KUBECONFIG": "/a:/b"}, home)
    assert listed.source == "/a:/b"
    assert listed.files == (Path("/a"), Path("/b"))
    assert kubeconfig.kubeconfig_choice(None, {}, home).source is None, "no file: in-cluster"
    (home / ".kube").mkdir()
    (home / ".kube" / "config").write_text("{}")
    assert kubeconfig.kubeconfig_choice(None, {}, home).source == str(home / ".kube" / "config")


def test_context_namespace_follows_the_clients_merge() -> None:
    first = {
        "current-context": "a",
        "contexts": [
            {"name": "a", "context": {"cluster": "c", "namespace": "team-a"}},
            {"name": "b", "context": {"cluster": "c"}},
        ],
    }
    second = {
        "current-context": "b",
        "contexts": [{"name": "b", "context": {"namespace": "ignored: a is defined first"}}],
    }
    assert kubeconfig.context_namespace([first]) == "team-a"
    assert kubeconfig.context_namespace([first, second]) is None, "b has no namespace"
    assert kubeconfig.context_namespace([None, "text", {"contexts": None}]) is None


def test_default_namespace_reads_the_kubeconfig(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("current-context: a\ncontexts:\n- name: a\n  context: {namespace: shop}\n")
    choice = kubeconfig.kubeconfig_choice(str(config), {}, tmp_path)
    assert kubeconfig.default_namespace(choice) == "shop"
    config.write_text(": not yaml : [")
    assert kubeconfig.default_namespace(choice) == "default"


# --- commands: undo --------------------------------------------------------------------------


def kept(*revisions: str) -> dict[str, KeptRevision]:
    return {
        revision: KeptRevision(revision, "{}", NOW - timedelta(minutes=10 - index))
        for index, revision in enumerate(revisions)
    }


def record(revision: str, outcome: str) -> dict[str, Any]:
    return {"revision": revision, "outcome": outcome}


def test_undo_during_a_canary_goes_back_to_the_stable_revision() -> None:
    history = [record(V2, "InProgress"), record(V1, "Promoted")]
    assert commands.undo_target(V2, V1, history, kept(V1, V2)) == V1


def test_undo_after_a_promotion_goes_back_to_the_previous_stable() -> None:
    history = [
        record(V3, "Promoted"),
        record("aborted0001", "Aborted"),
        record(V2, "Promoted"),
        record(V1, "Promoted"),
    ]
    assert commands.undo_target(V3, V3, history, kept(V1, V2, "aborted0001", V3)) == V2
    assert commands.undo_target(V3, V3, history, kept(V1, "aborted0001", V3)) == V1


def test_undo_without_history_takes_the_newest_other_deployment() -> None:
    assert commands.undo_target(V3, V3, [], kept(V1, V2, V3)) == V2
    assert commands.undo_target(V3, V3, [record(V2, "Aborted")], kept(V2, V3)) is None
    assert commands.undo_target(V1, V1, [], kept(V1)) is None


def test_revisions_are_named_in_full_or_by_a_unique_prefix() -> None:
    revisions = kept("abc1230000", "abd4560000")
    assert commands.resolve_revision("abc1230000", revisions) == "abc1230000"
    assert commands.resolve_revision("abd", revisions) == "abd4560000"
    with pytest.raises(CliError, match="ambiguous"):
        commands.resolve_revision("ab", revisions)
    with pytest.raises(CliError, match=r"not kept \(kept revisions: abc1230000, abd4560000\)"):
        commands.resolve_revision("fff", revisions)


@pytest.mark.parametrize(
    "pod",
    [
        template("v1"),
        template("v1", labels=False),
        {"metadata": {"annotations": {"a": "b"}}, "spec": template("v1")["spec"]},
        {"metadata": {"labels": {}}, "spec": template("v1")["spec"]},
        {"metadata": {}, "spec": template("v1")["spec"]},
    ],
)
def test_undo_rebuilds_the_exact_template_of_a_revision(pod: dict[str, Any]) -> None:
    revision = revision_hash(pod)
    obj = workloads.build_deployment(WORKLOAD, revision, pod, 0)
    recorded = obj["metadata"]["annotations"][TEMPLATE_ANNOTATION]
    restored = commands.restore_template(recorded, revision)
    assert restored == pod
    assert revision_hash(restored) == revision


@pytest.mark.parametrize(
    "pod",
    [
        template("v1"),
        template("v1", labels=False),
        {"metadata": {"annotations": {}}, "spec": template("v1")["spec"]},
        {"metadata": {"annotations": {"a": "b"}, "labels": {}}, "spec": template("v1")["spec"]},
    ],
)
def test_undo_rebuilds_a_restarted_revision_without_the_restart_stamp(pod: dict[str, Any]) -> None:
    """A restart stamps the recorded template (workloads.restart_revision): undo still finds the
    very template, so the fast rollback still happens."""
    revision = revision_hash(pod)
    obj = workloads.build_deployment(WORKLOAD, revision, pod, 0)
    recorded = json.loads(obj["metadata"]["annotations"][TEMPLATE_ANNOTATION])
    recorded.setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT_ANNOTATION] = (
        "2026-01-01T00:00:00.000000+00:00"
    )
    assert commands.restore_template(json.dumps(recorded), revision) == pod


def test_undo_refuses_a_template_it_cannot_rebuild_exactly() -> None:
    with pytest.raises(CliError, match="cannot rebuild"):
        commands.restore_template(json.dumps(template("v1")), V2)
    with pytest.raises(CliError, match="not JSON"):
        commands.restore_template("{nope", V1)


def test_kept_revisions_come_from_the_deployments() -> None:
    found = commands.kept_revisions([deployment("v1", replicas=0, ready=0, age=120)])
    assert list(found) == [V1]
    assert found[V1].created == NOW - timedelta(seconds=120)
    recorded = found[V1].template
    assert recorded is not None
    assert commands.restore_template(recorded, V1) == template("v1")


# --- commands: controls, timeouts, errors ----------------------------------------------------


def test_control_notes_say_when_a_token_will_do_nothing() -> None:
    walking = paused_status()
    healthy = status(phase="Healthy", stableRevision=V1)
    aborted = {**walking, "abortReason": "AbortedByUser"}
    assert commands.control_note(Control.PROMOTE, walking) is None
    assert commands.control_note(Control.ABORT, walking) is None
    assert "no canary" in (commands.control_note(Control.PROMOTE_FULL, healthy) or "")
    assert "no canary" in (commands.control_note(Control.ABORT, aborted) or "")
    assert "not aborted" in (commands.control_note(Control.RETRY, walking) or "")
    assert commands.control_note(Control.RETRY, aborted) is None
    held = {**walking, "pausedByUser": True}
    assert commands.control_note(Control.PAUSE, walking) is None
    assert "paused already" in (commands.control_note(Control.PAUSE, held) or "")
    assert "no canary is in flight" in (commands.control_note(Control.PAUSE, healthy) or "")
    assert commands.control_note(Control.RESUME, held) is None
    assert "not paused" in (commands.control_note(Control.RESUME, walking) or "")
    assert "resume it first" in (commands.control_note(Control.PROMOTE, held) or "")
    assert commands.control_note(Control.RESTART, healthy) is None
    assert "no stable revision" in (commands.control_note(Control.RESTART, status()) or "")


def test_timeouts_are_go_durations() -> None:
    assert commands.parse_timeout("10m") == 600
    assert commands.parse_timeout("1.5s") == 1.5
    with pytest.raises(CliError, match="invalid duration"):
        commands.parse_timeout("10")
    with pytest.raises(CliError, match="more than 0"):
        commands.parse_timeout("0s")


def test_transport_errors_are_shortened_to_their_reason() -> None:
    refused = (
        "HTTPSConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (Caused by "
        "NewConnectionError(\"HTTPSConnection(host='127.0.0.1', port=1): Failed to establish a "
        'new connection: [Errno 111] Connection refused"))'
    )
    assert cli_session.short_reason(refused) == "Connection refused"
    assert (
        cli_session.short_reason("SSL: CERTIFICATE_VERIFY_FAILED x") == "certificate verify failed"
    )
    server = "https://127.0.0.1:1"
    assert cli_session.describe_failure(KubeError(0, "Unreachable", refused), server) == (
        "cannot reach the Kubernetes API at https://127.0.0.1:1: Connection refused"
    )
    assert cli_session.describe_failure(ConnectionResetError(104, "reset"), server) == (
        "cannot reach the Kubernetes API at https://127.0.0.1:1: reset"
    )
    assert cli_session.describe_failure(KeyError("bug"), server) is None, "bugs keep a traceback"
    forbidden = cli_session.describe_failure(
        KubeError(403, "Forbidden", "no patch for you"), server
    )
    assert forbidden == "not allowed: no patch for you"


# --- commands against a fake API ---------------------------------------------------------------


DISCOVERY = {"resources": [{"name": "canaryrollouts"}, {"name": "canaryrollouts/status"}]}
GROUP_PATH = "/apis/coalmine.dev/v1alpha1"


def session_with(kube: Kube, namespace: str = "prod") -> tuple[Session, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Session(kube, namespace, "https://api.example:6443", out, err), out, err


def test_a_missing_rollout_is_named_with_its_namespace() -> None:
    session, _, _ = session_with(ScriptedKube([], objects={GROUP_PATH: DISCOVERY}))
    args = argparse.Namespace(name="shop", watch=False)
    with pytest.raises(CliError, match=r"^canaryrollout shop not found in namespace prod$"):
        commands.cmd_get(args, session)


def test_a_cluster_without_the_crd_says_so() -> None:
    session, _, _ = session_with(ScriptedKube([], objects={}))
    with pytest.raises(CliError, match="the CanaryRollout CRD is not installed on https://api"):
        commands.cmd_get(argparse.Namespace(name="shop", watch=False), session)
    with pytest.raises(CliError, match="CRD is not installed"):
        commands.cmd_list(argparse.Namespace(all_namespaces=True), session)


def test_status_reports_progress_and_exits_0_when_healthy() -> None:
    path = k.CANARY_ROLLOUTS.path("prod")
    paused = rollout(paused_status())
    done = rollout(status(phase="Healthy", stableRevision=V2, observedGeneration=2))
    done["metadata"]["resourceVersion"] = "101"  # a later version, as the API server gives it
    fake = ScriptedKube(
        [[("MODIFIED", paused), ("MODIFIED", done)]],
        objects={
            path: {"metadata": {"resourceVersion": "1"}, "items": [paused]},
            f"{path}/shop": paused,
        },
    )
    session, out, _ = session_with(fake)
    code = commands.cmd_status(argparse.Namespace(name="shop", timeout="30s"), session)
    assert code == cli_session.EXIT_OK
    printed = [line.split("  ", 1)[1] for line in out.getvalue().splitlines()]
    assert printed == [
        view.progress_line(paused),
        f"Healthy, stable {V2}",
        f"rollout complete: revision {V2} is stable",
    ]


def test_status_exits_1_when_the_canary_is_aborted() -> None:
    path = k.CANARY_ROLLOUTS.path("prod")
    aborted = rollout(status(phase="Degraded", abortMessage="too many 5xx", observedGeneration=2))
    fake = ScriptedKube(
        [],
        objects={
            path: {"metadata": {"resourceVersion": "1"}, "items": [aborted]},
            f"{path}/shop": aborted,
        },
    )
    session, _, err = session_with(fake)
    assert commands.cmd_status(argparse.Namespace(name="shop", timeout="30s"), session) == 1
    assert err.getvalue() == "error: canaryrollout shop failed: phase Degraded: too many 5xx\n"


def test_main_prints_one_line_and_exits_1_on_usage_of_a_missing_kubeconfig(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = commands.main(["--kubeconfig", str(tmp_path / "nope"), "list"], out, err)
    assert code == 1
    assert err.getvalue() == f"error: kubeconfig {tmp_path / 'nope'} does not exist\n"
