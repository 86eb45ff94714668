"""Go durations, parsed exactly as the API server's CEL `duration()` parses them."""

from __future__ import annotations

import re
from datetime import timedelta

from coalmine.api.limits import GO_DURATION_PATTERN

# --- helpers ------------------------------------------------------------------------------

_GO_DURATION = re.compile(GO_DURATION_PATTERN)
_GO_DURATION_PART = re.compile(r"([0-9]*)(?:[.]([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# Go durations are int64 nanoseconds; CEL's duration() fails beyond that, so we do too.
_MAX_NANOSECONDS = 2**63 - 1


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration (`30s`, `5m`, `1h30m`, `1.5h`, `250ms`) into a timedelta.

    Accepts exactly what Go's `time.ParseDuration` accepts, because the CRD checks the same
    strings with CEL's `duration()`: a sign, then one or more decimal numbers each followed by a
    unit (ns, us, µs, ms, s, m, h), or a bare `0`. Nanoseconds are truncated to microseconds.
    Raises ValueError naming the input and the expected form.
    """
    if not _GO_DURATION.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: expected a Go duration such as 30s, 5m, 1h30m or 250ms "
            "(units ns, us, ms, s, m, h; no spaces, no days)"
        )
    negative = text.startswith("-")
    nanoseconds = 0
    for whole, fraction, unit in _GO_DURATION_PART.findall(text.lstrip("+-")):
        scale = _NANOSECONDS[unit]
        nanoseconds += int(whole or "0") * scale
        if fraction:
            nanoseconds += int(fraction) * scale // 10 ** len(fraction)
    if nanoseconds > _MAX_NANOSECONDS + negative:
        raise ValueError(f"invalid duration {text!r}: longer than about 292 years")
    micro = timedelta(microseconds=nanoseconds // 1_000)
    return -micro if negative else micro
