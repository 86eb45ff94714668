"""The operator's log lines: one JSON object per line, naming the rollout each line is about.

kopf's own JSON formatter is private (only `kopf.configure(log_format=JSON)` is public, with
other field names and no logger name), so coalmine formats every line, kopf's included, here.
A worker marks the rollout it works on with `working_on`; every line it logs then carries it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

_CONTEXT = threading.local()


@contextlib.contextmanager
def working_on(rollout: str) -> Iterator[None]:
    """Lines logged by this thread inside the block name ``rollout`` ("namespace/name")."""
    previous = getattr(_CONTEXT, "rollout", None)
    _CONTEXT.rollout = rollout
    try:
        yield
    finally:
        _CONTEXT.rollout = previous


class _RolloutContext(logging.Filter):
    """Puts the rollout the current thread works on into every log record it emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        rollout = getattr(_CONTEXT, "rollout", None)
        if rollout and not hasattr(record, "rollout"):
            record.rollout = rollout
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the rollout when known."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rollout = getattr(record, "rollout", None)
        ref = getattr(record, "k8s_ref", None)  # kopf's per-object loggers carry the object
        if rollout is None and isinstance(ref, dict) and ref.get("name"):
            rollout = f"{ref.get('namespace') or ''}/{ref['name']}"
        if rollout:
            line["rollout"] = rollout
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure(log_format: str, level: str) -> None:
    """Send every log line to stderr in ``log_format`` (json or text) from ``level`` up."""
    handler = logging.StreamHandler()
    handler.addFilter(_RolloutContext())
    if log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(rollout)s %(message)s")
        )
        handler.addFilter(_DefaultRollout())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf reports every activity at INFO; ours log what matters. Peering's pause and
    # resume lines are kept: they say which replica is active.
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("kopf._core.engines.peering").setLevel(logging.INFO)


class _DefaultRollout(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "rollout"):
            record.rollout = "-"
        return True
