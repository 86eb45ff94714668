"""Bounds and patterns shared by the models and the CRD.

The CEL rules' cost is estimated from these bounds, so every list and string a rule walks is
bounded; the models enforce the same numbers so both sides reject the same objects.
"""

from __future__ import annotations

# --- limits shared with the CRD -----------------------------------------------------------
# The CEL rules' cost is estimated from these bounds, so every list and string a rule walks
# is bounded; the models enforce the same numbers so both sides reject the same objects.

INT32_MAX = 2**31 - 1
MAX_WEIGHT = 100
MAX_STEPS = 100
MAX_REVISION_HISTORY_LIMIT = 50
HISTORY_LIMIT = 10

MEASUREMENTS_LIMIT = 10
"""Measurements of one analysis metric kept in the status (its counters cover the rest)."""
PENDING_SCALE_DOWN_LIMIT = 10
MAX_CONDITIONS = 16
MAX_ISTIO_ROUTES = 32
MAX_CONTAINERS = 64
MAX_PORT = 65535
CONTAINER_NAME_MAX_LENGTH = 63
IMAGE_MAX_LENGTH = 1024
DURATION_MAX_LENGTH = 64
NAME_MAX_LENGTH = 253
LABEL_MAX_LENGTH = 63
PORT_NAME_MAX_LENGTH = 15
# Besides `<service.name>`, the operator keeps `<service.name>-stable` and `-canary`; every one
# of them must be a DNS label of at most 63 characters.
SERVICE_SUFFIXES = ("-stable", "-canary")
SERVICE_NAME_MAX_LENGTH = LABEL_MAX_LENGTH - max(len(suffix) for suffix in SERVICE_SUFFIXES)
# The rollout's name is a label value on everything it owns, so it is a 63-character label too.
ROLLOUT_NAME_MAX_LENGTH = LABEL_MAX_LENGTH

# Regular expressions are written for both RE2 (the API server, CEL) and Python: no
# backslashes, so they survive being quoted inside CEL string literals unchanged.
DNS1035_LABEL_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PORT_NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Exactly what Go's time.ParseDuration accepts, which is what CEL's duration() calls.
GO_DURATION_PATTERN = "^[-+]?(0|(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"
IMAGE_DIGEST_PATTERN = "@sha256:[0-9a-f]{64}$"
CONDITION_REASON_PATTERN = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
QUALIFIED_NAME_PATTERN = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
TEMPLATE_MAX_BYTES = 128 * 1024
"""A revision's Deployment carries its template twice (spec and annotation): half the room."""

# --- defaults of the spec, which the machine's plan shares ---------------------------------
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_SCALE_DOWN_DELAY_SECONDS = 30
DEFAULT_REVISION_HISTORY_LIMIT = 3
