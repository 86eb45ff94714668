"""The Prometheus metric provider: the only module of coalmine.analysis that does I/O.

Everything that decides about a canary (rendering queries, conditions, the judge, the outcome of
a measurement) is pure and tested on plain data. This module only asks Prometheus, and hands back
what it answered as data, never as an exception: a `Sample` (one value per series of an instant
vector, a scalar as one value, every point of every series of a range query) or a
`ProviderError` whose message says what went wrong in words a person can act on. A failed query
is an Error measurement, retried at the next interval, not a crash of the reconcile loop; the
rules that judge the data (one series, NaN, empty vectors) stay in `analysis.evaluate`.

Choices, and why:

- No retries inside one query. prometheus-api-client retries three times with backoff by
  default, on 5xx answers too, which would stretch one measurement far past its timeout and
  multiply the load on a Prometheus that is already struggling. The analysis has its own retry:
  the next interval, bounded by consecutiveErrorLimit.
- Two timeouts. Prometheus gets the metric's timeout as its `timeout` parameter, so a slow query
  is abandoned by Prometheus itself, which says so; the HTTP client waits a little longer
  (`CLIENT_GRACE_SECONDS`), so a server that is hung or unreachable still ends the measurement.
- Prometheus's own error text (`1:16: parse error: unclosed left parenthesis`) is kept in the
  message: it is what the author of the query needs.
- TLS certificates are verified unless the operator is configured otherwise: the numbers fetched
  here promote or abort a release, so a forged answer must not be accepted silently.
- Calls and failures are counted as plain numbers (`stats()`), for the operator's metrics module
  to export; no prometheus_client registry here, so this module needs none to be tested.
"""

from __future__ import annotations

import ast
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final, cast

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from coalmine.analysis.evaluate import ProviderError, Sample

CLIENT_GRACE_SECONDS: Final = 1.0
"""How much longer than the query's timeout the HTTP client waits, so that Prometheus's own
timeout (which names the problem) normally wins over the client's (which can only say that
nothing came back)."""

ONLINE_TIMEOUT_SECONDS: Final = 5.0
MAX_CLIENTS: Final = 16
"""Clients (one HTTP connection pool each) kept for distinct addresses; addresses come from
specs, so the cache is bounded, least recently used first out."""

_TEXT_LIMIT: Final = 300
"""Longest piece of a foreign answer quoted in a message: enough for any PromQL error, short
enough for a status condition."""

# prometheus-api-client reports a non-200 answer as PrometheusApiClientException("HTTP Status
# Code 400 (b'...')"): the status and repr() of the body are all it keeps, so they are read back
# from the message (the version is pinned below 0.8 in pyproject.toml).
_HTTP_STATUS = re.compile(r"HTTP Status Code (\d{3}) \((b'.*'|b\".*\")\)", re.DOTALL)


class ErrorKind(StrEnum):
    """Why a query failed, for counting (the message says it in full)."""

    CONNECTION = "connection"
    """No connection, or it broke: the address is wrong or Prometheus is down."""
    TIMEOUT = "timeout"
    """No answer in time, from the client's clock or Prometheus's own query timeout."""
    QUERY = "query"
    """Prometheus refused or could not run the query (a PromQL error), or it returned something
    that is not a number (a string, a range vector from an instant query, a native histogram)."""
    HTTP = "http"
    """Any other HTTP error status (a proxy in front, an overloaded Prometheus)."""
    RESPONSE = "response"
    """An answer that is not the Prometheus HTTP API: the address points at something else."""


@dataclass(frozen=True)
class ProviderStats:
    """Counts since the provider was created, for the operator to export as metrics."""

    queries: int
    """Instant and range queries attempted (online() probes are not counted)."""
    errors: int
    """Queries that ended in a ProviderError."""
    errors_by_kind: Mapping[ErrorKind, int]


class _QueryError(Exception):
    """A query failed; becomes a ProviderError (and a count) at the edge of the public API."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


Fetch = Callable[[PrometheusConnect, float], object]
Parse = Callable[[object], Sample]


class Prometheus:
    """Runs PromQL queries against Prometheus servers, by address, and returns data.

    One instance serves every address and may be shared by threads: counters are guarded by a
    lock, and each address keeps one client whose requests.Session pools connections (nothing
    here changes a session after it is created).
    """

    def __init__(self, *, verify_tls: bool = True, max_clients: int = MAX_CLIENTS) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {max_clients}")
        self._verify_tls = verify_tls
        self._max_clients = max_clients
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, PrometheusConnect] = OrderedDict()
        self._queries = 0
        self._errors: dict[ErrorKind, int] = dict.fromkeys(ErrorKind, 0)

    # --- queries --------------------------------------------------------------------------

    def instant(self, query: str, *, address: str, timeout: float) -> Sample | ProviderError:
        """Evaluate `query` now: one value per series of the vector, one for a scalar.

        An empty vector is `Sample([])`; several series give several values (evaluate.py
        decides what that means). NaN and ±Inf come back as float nan and ±inf.
        """
        _check_timeout(timeout)

        def fetch(client: PrometheusConnect, client_timeout: float) -> object:
            return client.custom_query(
                query,
                params={"timeout": _seconds(timeout)},
                timeout=_client_timeout(client_timeout),
            )

        return self._run(address, timeout, fetch, _instant_values)

    def range(
        self,
        query: str,
        *,
        address: str,
        timeout: float,
        start: datetime,
        end: datetime,
        step_seconds: float,
    ) -> Sample | ProviderError:
        """Evaluate `query` from `start` to `end` every `step_seconds`, pooling every point of
        every series into one Sample (the judge's observations; one series per pod is fine).

        Prometheus receives whole seconds for start and end (prometheus-api-client rounds them).
        A window that ends before it starts is a ProviderError; a naive datetime, a step or a
        timeout that is not a positive number are programming errors (ValueError).
        """
        _check_timeout(timeout)
        for name, moment in (("start", start), ("end", end)):
            if moment.tzinfo is None or moment.utcoffset() is None:
                # A naive datetime would be read in the operator's local time zone.
                raise ValueError(f"{name} must be timezone-aware, not {moment!r}")
        if not (math.isfinite(step_seconds) and step_seconds > 0):
            raise ValueError(f"step_seconds must be a positive number, not {step_seconds!r}")
        if end < start:
            # Windows start at times other replicas recorded; clocks that disagree a little
            # make an Error measurement, retried next interval, not a crash of the reconcile.
            with self._lock:
                self._queries += 1
            return self._failed(
                _QueryError(
                    ErrorKind.QUERY,
                    f"the query window ends ({end.isoformat()}) before it starts "
                    f"({start.isoformat()})",
                )
            )

        def fetch(client: PrometheusConnect, client_timeout: float) -> object:
            return client.custom_query_range(
                query,
                start_time=start,
                end_time=end,
                step=_seconds(step_seconds),
                params={"timeout": _seconds(timeout)},
                timeout=_client_timeout(client_timeout),
            )

        return self._run(address, timeout, fetch, _range_values)

    def online(self, address: str, *, timeout: float = ONLINE_TIMEOUT_SECONDS) -> bool:
        """Whether the query API at `address` answers `vector(1)` correctly within `timeout`.

        It asks the query API rather than a health endpoint: that is what the analysis needs,
        and it works the same on Prometheus-compatible servers (Thanos, Mimir...).
        """
        _check_timeout(timeout)
        try:
            sample = _instant_values(
                self._client(address).custom_query(
                    "vector(1)",
                    params={"timeout": _seconds(timeout)},
                    timeout=_client_timeout(timeout + CLIENT_GRACE_SECONDS),
                )
            )
        except (
            _QueryError,
            PrometheusApiClientException,
            requests.RequestException,
            LookupError,
            TypeError,
            ValueError,
        ):
            return False
        return tuple(sample.values) == (1.0,)

    # --- bookkeeping ----------------------------------------------------------------------

    def stats(self) -> ProviderStats:
        """A snapshot of the counters."""
        with self._lock:
            return ProviderStats(
                queries=self._queries,
                errors=sum(self._errors.values()),
                errors_by_kind=MappingProxyType(dict(self._errors)),
            )

    def close(self) -> None:
        """Close every pooled connection; the provider stays usable (clients are re-created)."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    # --- internals ------------------------------------------------------------------------

    def _run(
        self, address: str, timeout: float, fetch: Fetch, parse: Parse
    ) -> Sample | ProviderError:
        with self._lock:
            self._queries += 1
        try:
            return parse(fetch(self._client(address), timeout + CLIENT_GRACE_SECONDS))
        except _QueryError as failure:
            return self._failed(failure)
        except PrometheusApiClientException as error:
            return self._failed(_http_failure(error, address, timeout))
        except requests.RequestException as error:
            return self._failed(_transport_failure(error, address, timeout))
        except (LookupError, TypeError, ValueError) as error:
            # The client indexes response.json()["data"]["result"] itself: an HTTP 200 whose
            # body is JSON but not the Prometheus API ends here.
            return self._failed(
                _QueryError(
                    ErrorKind.RESPONSE,
                    f"the answer of {address} is not a Prometheus API response "
                    f"({type(error).__name__}: {_clip(str(error))}); is the address right?",
                )
            )

    def _failed(self, failure: _QueryError) -> ProviderError:
        with self._lock:
            self._errors[failure.kind] += 1
        return ProviderError(failure.message)

    def _client(self, address: str) -> PrometheusConnect:
        # A trailing slash would make every URL `//api/v1/...`, which Prometheus redirects.
        url = address.rstrip("/")
        with self._lock:
            client = self._clients.get(url)
            if client is not None:
                self._clients.move_to_end(url)
                return client
            client = PrometheusConnect(
                url=url,
                disable_ssl=not self._verify_tls,
                # total=0: no retry at all (see the module docstring); read=False makes urllib3
                # raise a read timeout as itself, which requests reports as ReadTimeout.
                retry=Retry(total=0, read=False),
            )
            self._clients[url] = client
            evicted = (
                self._clients.popitem(last=False)[1]
                if len(self._clients) > self._max_clients
                else None
            )
        if evicted is not None:
            evicted.close()
        return client


# --- reading answers ------------------------------------------------------------------------


def _instant_values(result: object) -> Sample:
    # prometheus-api-client returns data.result without data.resultType, so the shape tells:
    # a scalar (or string) is [time, "value"], a vector a list of {"metric", "value"} objects.
    if not isinstance(result, list):
        raise _not_api(f"a result of type {type(result).__name__}")
    if len(result) == 2 and not isinstance(result[0], dict):
        return Sample([_number(result[1])])
    values: list[float] = []
    for series in result:
        if not isinstance(series, dict):
            raise _not_api(f"a series {_clip(repr(series))}")
        if "value" in series:
            values.append(_point(series["value"]))
        elif "values" in series or "histograms" in series:
            raise _QueryError(
                ErrorKind.QUERY,
                "the query returned a range vector; an instant query must return an instant "
                "vector or a scalar (wrap the [range] selector in a function such as rate())",
            )
        elif "histogram" in series:
            raise _native_histogram()
        else:
            raise _not_api(f"a series without a value: {_clip(repr(series))}")
    return Sample(values)


def _range_values(result: object) -> Sample:
    if not isinstance(result, list):
        raise _not_api(f"a result of type {type(result).__name__}")
    values: list[float] = []
    for series in result:
        if not isinstance(series, dict):
            raise _not_api(f"a series {_clip(repr(series))}")
        if "histograms" in series and "values" not in series:
            raise _native_histogram()
        points = series.get("values")
        if not isinstance(points, list):
            raise _not_api(f"a series without values: {_clip(repr(series))}")
        values.extend(_point(point) for point in points)
    return Sample(values)


def _point(point: object) -> float:
    if not isinstance(point, list) or len(point) != 2:
        raise _not_api(f"a sample {_clip(repr(point))} that is not [time, value]")
    return _number(point[1])


def _number(raw: object) -> float:
    # Prometheus sends sample values as strings: "0.25", "NaN", "+Inf", "-Inf"; float() reads
    # all of them.
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            raise _QueryError(
                ErrorKind.QUERY, f"the query returned {_clip(repr(raw))}, which is not a number"
            ) from None
    raise _not_api(f"a value {_clip(repr(raw))} that is not a string")


def _native_histogram() -> _QueryError:
    return _QueryError(
        ErrorKind.QUERY,
        "the query returned native histograms, not numbers; reduce them to a number, e.g. "
        "with histogram_quantile() or histogram_count()",
    )


def _not_api(what: str) -> _QueryError:
    return _QueryError(ErrorKind.RESPONSE, f"unexpected answer from Prometheus: {what}")


# --- describing failures --------------------------------------------------------------------


def _http_failure(error: PrometheusApiClientException, address: str, timeout: float) -> _QueryError:
    match = _HTTP_STATUS.fullmatch(str(error))
    if match is None:
        return _QueryError(ErrorKind.HTTP, f"{address} answered with an error: {_clip(str(error))}")
    status = int(match[1])
    try:
        # A bytes literal written by repr(): literal_eval reads it back without running anything.
        body = ast.literal_eval(match[2])
    except (ValueError, SyntaxError):
        body = match[2]
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        error_type = str(answer.get("errorType", "error"))
        message = _clip(answer["error"])
        if error_type == "timeout":
            return _QueryError(
                ErrorKind.TIMEOUT,
                f"Prometheus gave up on the query after the timeout of {timeout:g}s "
                f"(HTTP {status}, {error_type}): {message}",
            )
        if status in (400, 422):
            # 400 bad_data: the query does not parse (or a parameter is wrong); 422 execution:
            # it parsed but failed to run (say, many-to-many matching).
            return _QueryError(
                ErrorKind.QUERY,
                f"Prometheus rejected the query (HTTP {status}, {error_type}): {message}",
            )
        return _QueryError(
            ErrorKind.HTTP,
            f"Prometheus at {address} answered HTTP {status} ({error_type}): {message}",
        )
    snippet = _clip(" ".join(text.split()))
    detail = f": {snippet}" if snippet else ""
    return _QueryError(ErrorKind.HTTP, f"{address} answered HTTP {status}{detail}")


def _transport_failure(
    error: requests.RequestException, address: str, timeout: float
) -> _QueryError:
    if isinstance(error, requests.JSONDecodeError):
        return _QueryError(
            ErrorKind.RESPONSE,
            f"the answer of {address} is not JSON, so not the Prometheus API; is the address "
            "right?",
        )
    if _timed_out(error):
        return _QueryError(
            ErrorKind.TIMEOUT, f"no answer from Prometheus at {address} within {timeout:g}s"
        )
    if isinstance(error, requests.ConnectionError):
        return _QueryError(
            ErrorKind.CONNECTION, f"cannot reach Prometheus at {address}: {_reason(error)}"
        )
    return _QueryError(ErrorKind.CONNECTION, f"request to {address} failed: {_reason(error)}")


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it wraps: urllib3's `reason`, exception arguments, causes."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        linked = [reason, *current.args, current.__cause__, current.__context__]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def _timed_out(error: requests.RequestException) -> bool:
    return isinstance(error, requests.Timeout) or any(
        # urllib3 2 derives NewConnectionError (refused, unresolvable) from its timeout class.
        isinstance(item, (Urllib3Timeout, TimeoutError))
        and not isinstance(item, NewConnectionError)
        for item in _chain(error)
    )


def _reason(error: BaseException) -> str:
    """The innermost cause in words: the socket's `Connection refused` rather than the pile of
    wrappers around it."""
    causes = list(_chain(error))
    for item in causes:
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
    return _clip(str(causes[-1]))


# --- small helpers --------------------------------------------------------------------------


def _check_timeout(timeout: float) -> None:
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")


def _seconds(value: float) -> str:
    # Prometheus reads a bare number as seconds, fractions included ("0.25"); its duration
    # syntax has no fractions ("1.5s" is refused), so the bare number is the one that always
    # works. repr() keeps every digit, where a fixed precision could round a step to 0.
    return repr(float(value))


def _client_timeout(seconds: float) -> int:
    # prometheus-api-client annotates its timeout as int but hands it to requests unchanged,
    # which takes float seconds: a fractional timeout is what it gets, whatever the annotation.
    return cast(int, seconds)


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"
