"""What `kubectl coalmine` prints, computed from the objects as the API server serves them.

Pure on purpose: every function here takes plain dicts (a CanaryRollout, its Deployments) and
the current time, and returns text or a verdict, so each layout is tested without a cluster,
including the statuses an older operator wrote, or a status that is not there yet. Nothing is
parsed through the pydantic models: the CLI must show whatever the cluster holds, even an object
the models would refuse, so every field is read defensively and a missing one prints as `-`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from coalmine.labels import REVISION_LABEL

Obj = Mapping[str, Any]

MISSING = "-"

# A condition is OK when it has the status listed here (Progressing is also OK when False with
# reason Complete: the last canary finished). Types this CLI does not know are shown when False.
_OK_STATUS: Mapping[str, str] = {
    "Available": "True",
    "Progressing": "True",
    "Paused": "False",
    "Aborted": "False",
    "InvalidSpec": "False",
    "Analysis": "True",
}
_COMPLETE = "Complete"


# --- small helpers --------------------------------------------------------------------------


def _mapping(value: object) -> Obj:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _text(value: object) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # A naive time would make every subtraction with an aware `now` raise; the API uses UTC.
    return parsed if parsed.tzinfo is not None else None


_UNITS: Mapping[int, str] = {1: "s", 60: "m", 3600: "h", 86400: "d"}
# (below this many seconds: the unit, and the smaller unit shown beside it, if any)
_AGE_SCALES: tuple[tuple[int, int, int | None], ...] = (
    (120, 1, None),  # 95s
    (600, 60, 1),  # 5m30s
    (3 * 3600, 60, None),  # 45m
    (8 * 3600, 3600, 60),  # 5h20m
    (48 * 3600, 3600, None),  # 30h
    (8 * 86400, 86400, 3600),  # 3d4h
    (730 * 86400, 86400, None),  # 200d
)


def human_age(delta: timedelta) -> str:
    """A duration the way kubectl prints ages: precise when short, coarser as it grows."""
    seconds = max(0, int(delta.total_seconds()))
    for limit, unit, smaller in _AGE_SCALES:
        if seconds < limit:
            text = f"{seconds // unit}{_UNITS[unit]}"
            if smaller is not None and (rest := seconds % unit // smaller):
                text += f"{rest}{_UNITS[smaller]}"
            return text
    year = 365 * 86400
    return f"{seconds // year}y{seconds % year // 86400}d"


def age(value: object, now: datetime) -> str:
    """The age of a timestamp field, `-` when it is absent."""
    moment = parse_time(value)
    return MISSING if moment is None else human_age(now - moment)


def table(header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns three spaces apart, like kubectl's tables; the last is not padded."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths[:-1], strict=True)]
        out.append(indent + "   ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out)


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return MISSING
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _percent(value: object) -> str:
    text = _number(value)
    return text if text == MISSING else f"{text}%"


# --- list -----------------------------------------------------------------------------------


def rollouts_table(rollouts: Sequence[Obj], *, now: datetime, all_namespaces: bool = False) -> str:
    """`kubectl coalmine list`: one row per rollout, the columns of `kubectl get crol`."""
    header = ["NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = []
    ordered = sorted(
        rollouts,
        key=lambda r: (
            str(_mapping(r.get("metadata")).get("namespace", "")),
            str(_mapping(r.get("metadata")).get("name", "")),
        ),
    )
    for rollout in ordered:
        metadata = _mapping(rollout.get("metadata"))
        status = _mapping(rollout.get("status"))
        row = [
            _text(metadata.get("name")),
            _text(status.get("phase")),
            _text(status.get("stepDisplay")),
            _number(status.get("confirmedWeight")),
            _text(status.get("stableRevision")),
            _text(status.get("canaryRevision")),
            age(metadata.get("creationTimestamp"), now),
        ]
        if all_namespaces:
            row.insert(0, _text(metadata.get("namespace")))
        rows.append(row)
    return table(header, rows)


# --- the live view --------------------------------------------------------------------------


def condition_ok(condition: Obj) -> bool:
    """Whether a condition is in its healthy state (then the live view leaves it out)."""
    kind = str(condition.get("type", ""))
    status = str(condition.get("status", ""))
    if kind == "Progressing" and status == "False":
        return condition.get("reason") == _COMPLETE
    return status == _OK_STATUS.get(kind, "True")


def not_ok_conditions(status: Obj) -> list[Obj]:
    """The conditions worth a look, in the order the operator keeps them."""
    return [
        _mapping(c)
        for c in _list(status.get("conditions"))
        if isinstance(c, Mapping) and not condition_ok(c)
    ]


def _deployment_of(deployments: Sequence[Obj], revision: str) -> Obj | None:
    for deployment in deployments:
        labels = _mapping(_mapping(deployment.get("metadata")).get("labels"))
        if labels.get(REVISION_LABEL) == revision:
            return deployment
    return None


def _containers(deployment: Obj) -> list[tuple[str, str]]:
    pod = _mapping(_mapping(_mapping(deployment.get("spec")).get("template")).get("spec"))
    found = []
    for key, suffix in (("initContainers", " (init)"), ("containers", "")):
        for item in _list(pod.get(key)):
            container = _mapping(item)
            found.append((f"{_text(container.get('name'))}{suffix}", _text(container.get("image"))))
    return found


def _pods(deployment: Obj) -> str:
    spec = _mapping(deployment.get("spec"))
    status = _mapping(deployment.get("status"))
    desired = spec.get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    return f"{_number(ready)}/{_number(desired)} pods ready"


def _history_images(status: Obj, revision: str) -> list[str]:
    for item in _list(status.get("history")):
        record = _mapping(item)
        if record.get("revision") == revision:
            return [str(image) for image in _list(record.get("images"))]
    return []


def _revision_lines(
    label: str, revision: object, status: Obj, deployments: Sequence[Obj]
) -> list[str]:
    if not isinstance(revision, str) or not revision:
        return [f"{label:<12} none"]
    deployment = _deployment_of(deployments, revision)
    if deployment is None:
        lines = [f"{label:<12} {revision}   (no Deployment)"]
        lines += [f"{'':<12}   {image}" for image in _history_images(status, revision)]
        return lines
    lines = [f"{label:<12} {revision}   {_pods(deployment)}"]
    lines += [f"{'':<12}   {name}: {image}" for name, image in _containers(deployment)]
    return lines


def _step_line(spec: Obj, status: Obj) -> str:
    steps = len(_list(spec.get("steps")))
    display = status.get("stepDisplay")
    if not status.get("canaryRevision") or not display:
        return f"{'Step:':<12} {MISSING}   (no canary; {steps} step{'s' if steps != 1 else ''})"
    extra = []
    if status.get("stage"):
        extra.append(f"stage {status['stage']}")
    if status.get("rollback"):
        extra.append("fast rollback: the steps are skipped")
    suffix = f"   ({', '.join(extra)})" if extra else ""
    return f"{'Step:':<12} {display}{suffix}"


def _other_revisions(status: Obj, deployments: Sequence[Obj]) -> list[str]:
    # Revisions neither stable nor canary that still run pods: they are waiting out
    # scaleDownDelaySeconds, and they explain why there are more pods than replicas.
    shown = {status.get("stableRevision"), status.get("canaryRevision")}
    lines = []
    for deployment in deployments:
        labels = _mapping(_mapping(deployment.get("metadata")).get("labels"))
        revision = labels.get(REVISION_LABEL)
        replicas = _mapping(deployment.get("spec")).get("replicas", 0)
        if revision in shown or not isinstance(replicas, int) or replicas <= 0:
            continue
        lines.append(f"{'Old:':<12} {revision}   {_pods(deployment)}   (scaling down)")
    return sorted(lines)


def _condition_lines(status: Obj, now: datetime) -> list[str]:
    bad = not_ok_conditions(status)
    if not bad:
        return [] if not _list(status.get("conditions")) else [f"{'Conditions:':<12} all OK"]
    rows = [
        [
            _text(c.get("type")),
            _text(c.get("status")),
            _text(c.get("reason")),
            age(c.get("lastTransitionTime"), now),
            _text(c.get("message")),
        ]
        for c in bad
    ]
    header = ["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]
    return ["Conditions (not OK):", table(header, rows, indent="  ")]


@dataclass(frozen=True)
class MeasurementRow:
    """The latest measurement of one analysis metric, ready to print."""

    run: str
    metric: str
    verdict: str
    when: str
    value: str
    outcome: str
    recent: str


def analysis_runs(status: Obj) -> list[Obj]:
    """`status.analysis` as a list of runs: one object, a list of them, or nothing at all."""
    analysis = status.get("analysis")
    runs = [analysis] if isinstance(analysis, Mapping) else _list(analysis)
    # Empty objects say nothing; an analysis section made of dashes would only puzzle.
    return [run for run in runs if isinstance(run, Mapping) and run]


def _measured_at(measurement: Obj) -> object:
    return measurement.get("time", measurement.get("at"))


def _latest(measurements: list[Obj]) -> Obj:
    # Stored oldest first; sort by time anyway when every one has one, so an unordered list
    # (another writer) still shows the newest.
    times = [parse_time(_measured_at(m)) for m in measurements]
    if all(t is not None for t in times):
        pairs = sorted(zip(times, range(len(times)), strict=True))
        return measurements[pairs[-1][1]]
    return measurements[-1]


def _value(measurement: Obj) -> str:
    value = _number(measurement.get("value"))
    stable = measurement.get("stableValue")
    if stable is not None:
        value += f" (stable {_number(stable)})"
    shift = measurement.get("shift")
    if isinstance(shift, int | float) and not isinstance(shift, bool):
        # The judge's shift and its confidence interval; an unset end is unbounded.
        low, high = measurement.get("shiftLow"), measurement.get("shiftHigh")
        value += f", shift {_signed(shift, '?')} [{_signed(low, '-inf')}, {_signed(high, '+inf')}]"
    return value


def _signed(value: object, absent: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return absent
    return f"{value:+.4g}"


def measurement_rows(status: Obj, now: datetime) -> list[MeasurementRow]:
    """One row per analysis metric with its latest measurement; empty when there is none."""
    rows = []
    for run in analysis_runs(status):
        for item in _list(run.get("metrics")):
            metric = _mapping(item)
            measurements = [_mapping(m) for m in _list(metric.get("measurements"))]
            latest = _latest(measurements) if measurements else {}
            recent = "".join(str(m.get("outcome", "?"))[:1] or "?" for m in measurements)
            rows.append(
                MeasurementRow(
                    run=_text(run.get("name")),
                    metric=_text(metric.get("name")),
                    verdict=_text(metric.get("verdict")),
                    when=MISSING if not latest else age(_measured_at(latest), now),
                    value=_value(latest) if latest else MISSING,
                    outcome=_text(latest.get("outcome")),
                    recent=recent or MISSING,
                )
            )
    return rows


def _analysis_lines(status: Obj, now: datetime) -> list[str]:
    runs = analysis_runs(status)
    if not runs:
        return []
    lines = ["Analysis:"]
    for run in runs:
        summary = f"  {_text(run.get('name'))}: {_text(run.get('verdict'))}"
        if run.get("message"):
            summary += f" - {run['message']}"
        lines.append(summary)
    rows = measurement_rows(status, now)
    if rows:
        header = ["RUN", "METRIC", "VERDICT", "MEASURED", "VALUE", "OUTCOME", "RECENT"]
        cells = [[r.run, r.metric, r.verdict, r.when, r.value, r.outcome, r.recent] for r in rows]
        lines.append(table(header, cells, indent="  "))
    return lines


def rollout_view(rollout: Obj, deployments: Sequence[Obj], *, now: datetime) -> str:
    """`kubectl coalmine get`: where one rollout stands, its revisions' pods, what needs a look."""
    metadata = _mapping(rollout.get("metadata"))
    spec = _mapping(rollout.get("spec"))
    status = _mapping(rollout.get("status"))
    lines = [f"CanaryRollout {_text(metadata.get('namespace'))}/{_text(metadata.get('name'))}"]
    if not status:
        lines.append(f"{'Phase:':<12} {MISSING}   (no status yet: is the operator running?)")
    else:
        lines.append(f"{'Phase:':<12} {_text(status.get('phase'))}")
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if status and generation is not None and observed != generation:
        lines.append(
            f"{'Spec:':<12} generation {generation} not acted on yet "
            f"(the operator last saw {_text(observed)})"
        )
    lines.append(_step_line(spec, status))
    lines.append(
        f"{'Weight:':<12} desired {_percent(status.get('desiredWeight'))}, "
        f"confirmed {_percent(status.get('confirmedWeight'))}"
    )
    if status.get("message"):
        lines.append(f"{'Message:':<12} {status['message']}")
    if status.get("abortReason"):
        aborted = f"{'Aborted:':<12} {status['abortReason']}"
        if status.get("abortedAt"):
            aborted += f", {age(status['abortedAt'], now)} ago"
        if status.get("abortMessage"):
            aborted += f": {status['abortMessage']}"
        lines.append(aborted)
    lines += _revision_lines("Stable:", status.get("stableRevision"), status, deployments)
    lines += _revision_lines("Canary:", status.get("canaryRevision"), status, deployments)
    lines += _other_revisions(status, deployments)
    lines += _condition_lines(status, now)
    lines += _analysis_lines(status, now)
    return "\n".join(lines)


# --- progress and completion, for `status` and `--wait` -------------------------------------


def progress_line(rollout: Obj) -> str:
    """One line saying where a rollout is, printed each time it changes."""
    status = _mapping(rollout.get("status"))
    parts = [_text(status.get("phase"))]
    if status.get("canaryRevision"):
        parts.append(f"canary {status['canaryRevision']}")
        parts.append(f"step {_text(status.get('stepDisplay'))}")
        parts.append(
            f"weight {_percent(status.get('confirmedWeight'))} "
            f"(desired {_percent(status.get('desiredWeight'))})"
        )
    elif status.get("stableRevision"):
        parts.append(f"stable {status['stableRevision']}")
    line = ", ".join(parts)
    if status.get("message"):
        line += f": {status['message']}"
    return line


class Completion(Enum):
    """Whether a rollout is done, for `kubectl coalmine status`."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def completion(rollout: Obj) -> tuple[Completion, str]:
    """Done or not, and why in words.

    Nothing counts until the operator has acted on the current generation: right after an
    apply, the status still describes the previous spec (which may have been Healthy, or
    Degraded), and a CI job must not take that as the verdict on the new one.
    """
    metadata = _mapping(rollout.get("metadata"))
    status = _mapping(rollout.get("status"))
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if observed is None or observed != generation:
        return Completion.RUNNING, f"waiting for the operator to act on generation {generation}"
    phase = status.get("phase")
    if phase == "Healthy" and not status.get("canaryRevision"):
        return Completion.SUCCEEDED, f"revision {_text(status.get('stableRevision'))} is stable"
    if phase in ("Degraded", "Failed"):
        why = status.get("abortMessage") or status.get("message") or status.get("abortReason")
        return Completion.FAILED, f"phase {phase}: {_text(why)}"
    return Completion.RUNNING, progress_line(rollout)
