"""kube.Informer and the JSON decoding it relies on, against a scripted API (no cluster).

The watch protocol is scripted here so that every branch is reached on purpose: a list, then a
watch from the list's resourceVersion, bookmarks, a 410 Gone that makes it list again (and tell
the handlers what changed meanwhile), a broken watch that makes reads wait, and the answers to
our own writes winning over older watch events. The real API server runs the same code in
every integration test.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine import resources as r
from coalmine.kube import (
    MAX_OBJECT_DEPTH,
    UNREADABLE,
    CacheNotReadyError,
    IndexedStore,
    Informer,
    depth,
    loads,
    matches,
    share_strings,
    trim,
)
from coalmine.resources import Obj
from tests.unit.scripted_kube import ScriptedKube


def obj(name: str, version: int, **labels: str) -> Obj:
    return {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {
            "name": name,
            "namespace": "prod",
            "resourceVersion": str(version),
            "labels": labels,
            "managedFields": [{"manager": "kubectl"}],
        },
    }


def listing(version: int, *items: Obj) -> Obj:
    return {"metadata": {"resourceVersion": str(version)}, "items": [dict(i) for i in items]}


def run(kube: ScriptedKube, **options: Any) -> tuple[Informer, list[tuple[str, str, str]]]:
    informer = Informer(kube, r.CANARY_ROLLOUTS, **options)
    heard: list[tuple[str, str, str]] = []
    informer.handlers.append(
        lambda event, o, _: heard.append(
            (event, o["metadata"]["name"], o["metadata"]["resourceVersion"])
        )
    )
    informer.start()
    assert kube.done.wait(5), "the script ran to its end"
    informer.stop()
    return informer, heard


def test_lists_then_watches_from_the_lists_version_and_resumes_after_bookmarks() -> None:
    kube = ScriptedKube(
        [
            [("MODIFIED", obj("a", 101)), ("BOOKMARK", {"metadata": {"resourceVersion": "107"}})],
            [("ADDED", obj("b", 108))],
        ],
        listings=[listing(100, obj("a", 90))],
    )
    informer, heard = run(kube)
    assert kube.watched[:3] == ["100", "107", "108"], "each watch starts where the last ended"
    assert heard == [("ADDED", "a", "90"), ("MODIFIED", "a", "101"), ("ADDED", "b", "108")]
    assert {o["metadata"]["name"] for o in informer.select()} == {"a", "b"}
    assert "managedFields" not in (informer.get("prod", "a") or {})["metadata"], "trimmed"


def test_410_gone_lists_again_and_reports_what_changed_meanwhile() -> None:
    kube = ScriptedKube(
        [[("GONE", {})]],
        listings=[
            listing(100, obj("a", 90), obj("b", 91)),
            listing(200, obj("a", 150), obj("c", 160)),
        ],
    )
    informer, heard = run(kube)
    assert heard[2:] == [("MODIFIED", "a", "150"), ("ADDED", "c", "160"), ("DELETED", "b", "91")]
    assert kube.watched[:2] == ["100", "200"]
    assert informer.healthy


def test_a_broken_watch_makes_reads_wait_until_it_works_again() -> None:
    listings = [listing(100, obj("a", 90))]
    kube = ScriptedKube([[("CUT", {})]], listings=listings)
    informer = Informer(kube, r.CANARY_ROLLOUTS)
    recovered: list[bool] = []
    failed: list[str] = []
    informer.recovered.append(lambda: recovered.append(True))
    informer.failed.append(failed.append)
    informer.start()
    deadline = time.monotonic() + 5
    while not failed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert failed
    assert "connection reset" in failed[0]
    with pytest.raises(CacheNotReadyError, match="connection reset"):
        informer.get("prod", "a")
    listings.append(listing(120, obj("a", 110)))  # the API is back
    assert kube.done.wait(5)
    informer.stop()
    assert informer.get("prod", "a") is not None
    assert recovered == [True], "what waited on the cache is told at once"


class RecordedWaits(threading.Event):
    """The informer's stop event, recording how long it is asked to wait; stops after ``n``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if len(self.waits) >= self.n:
            self.set()
        return self.is_set()


def test_a_long_outage_is_retried_every_few_seconds_not_every_fifteen() -> None:
    """Issue 9, item 8: once the API server is back, every rollout moves again within seconds.
    The relist backoff grew to 10 s (15 with jitter), so after an outage of ten seconds or more
    the operator's caches stayed stale up to 15 s more (24 s measured by
    tests/integration/test_controller.py), and the rollouts waited with them."""
    kube = ScriptedKube([], listings=[])  # every list fails: the API server is away
    informer = Informer(kube, r.CANARY_ROLLOUTS)
    waits = RecordedWaits(12)
    informer._stop = waits
    informer._run()
    assert len(waits.waits) == 12
    assert max(waits.waits) <= 4.5, waits.waits


def test_our_own_writes_win_over_older_watch_events_and_echo_nothing() -> None:
    kube = ScriptedKube([], listings=[listing(100, obj("a", 90))])
    informer, heard = run(kube)
    informer.apply(obj("a", 130))  # the answer to our write
    informer.apply(obj("a", 120))  # an older event arriving late
    informer.apply(obj("a", 130))  # our write's own echo
    assert (informer.get("prod", "a") or {})["metadata"]["resourceVersion"] == "130"
    assert heard == [("ADDED", "a", "90"), ("MODIFIED", "a", "130")]


def test_the_answer_that_releases_the_last_finalizer_removes_the_object() -> None:
    """The API server answers the write that releases the last finalizer of an object being
    deleted with the object at its last version, and deletes it: that answer was ignored (not
    newer than the cache), so a reconcile queued meanwhile found the rollout still holding its
    finalizer and finalized it again, writing to the user's HTTPRoute after the rollout was
    gone (found by tests/integration/test_crash_points.py's write log)."""
    deleting = obj("a", 90)
    deleting["metadata"] |= {
        "deletionTimestamp": "2026-12-01T12:00:00Z",
        "deletionGracePeriodSeconds": 0,
        "finalizers": ["coalmine.dev/finalizer"],
    }
    kube = ScriptedKube([], listings=[listing(100, deleting)])
    informer, heard = run(kube)
    released = json.loads(json.dumps(deleting))
    released["metadata"]["finalizers"] = []
    informer.apply(released)  # the answer to our write: same resourceVersion, gone
    assert informer.get("prod", "a") is None
    assert heard[-1] == ("DELETED", "a", "90")
    informer.apply(released)  # the watch's DELETED may come before or after: no ghost either way
    assert informer.get("prod", "a") is None


def test_an_object_that_stops_matching_the_selector_leaves_the_cache() -> None:
    kube = ScriptedKube([], listings=[listing(100, obj("a", 90, shard="x"))])
    informer, heard = run(kube, label_selector="shard=x")
    informer.apply(obj("a", 95, shard="y"))
    assert informer.get("prod", "a") is None
    assert heard[-1][0] == "DELETED"


@pytest.mark.parametrize(
    ("labels", "selector", "expected"),
    [
        ({"a": "1"}, "a=1", True),
        ({"a": "1"}, "a==1", True),
        ({"a": "1"}, "a!=1", False),
        ({}, "a!=1", True),
        ({"a": "1"}, "a", True),
        ({}, "a", False),
        ({}, "!a", True),
        ({"a": "2"}, "!a", False),
        ({"a": "1", "b": "2"}, "a=1,b=2", True),
        ({"a": "1"}, "a=1,b=2", False),
        ({}, None, True),
    ],
)
def test_label_selectors_match_as_the_api_server_does(
    labels: Mapping[str, str], selector: str | None, expected: bool
) -> None:
    assert matches(labels, selector) is expected


# --- hostile JSON (issue 9, item 7) --------------------------------------------------------------


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def test_json_deeper_than_pythons_recursion_limit_still_decodes() -> None:
    decoded = loads(deep(5000).encode())
    assert depth(decoded) > MAX_OBJECT_DEPTH


def test_a_deep_object_is_kept_by_its_metadata_and_named_unreadable() -> None:
    document = json.dumps(obj("deep", 5)).replace(
        '"managedFields": [', '"x": ' + deep(1500) + ', "y": ['
    )
    hostile = loads(document.encode())
    hostile["status"] = {"phase": "Healthy"}
    kept = trim(hostile)
    assert kept[UNREADABLE] == f"nests more than {MAX_OBJECT_DEPTH} levels deep"
    assert kept["metadata"]["name"] == "deep"
    assert kept["status"] == {"phase": "Healthy"}, "the operator's memory stays readable"
    assert depth(kept) <= 3


def test_one_deep_object_in_a_list_does_not_stop_the_informer() -> None:
    body = '{"metadata":{"resourceVersion":"100"},"items":[' + json.dumps(obj("fine", 90))
    body += ',{"metadata":{"name":"deep","namespace":"prod","resourceVersion":"91"},"spec":'
    body += deep(1500) + "}]}"
    kube = ScriptedKube([], listings=[loads(body.encode())])
    informer, _ = run(kube)
    assert informer.get("prod", "fine") is not None
    assert UNREADABLE in (informer.get("prod", "deep") or {})


def test_cached_objects_share_their_keys_and_short_strings() -> None:
    # Two objects decoded apart, as two watch events are: equal strings, distinct copies.
    first, second = (loads(json.dumps(obj(name, 1, app="shop")).encode()) for name in "ab")
    assert first["metadata"]["labels"]["app"] is not second["metadata"]["labels"]["app"]
    kube = ScriptedKube([[("ADDED", first), ("ADDED", second)]], listings=[listing(1)])
    informer, _ = run(kube)
    a, b = informer.get("prod", "a"), informer.get("prod", "b")
    assert a is not None
    assert b is not None
    assert a["metadata"]["labels"]["app"] is b["metadata"]["labels"]["app"]
    assert next(iter(a["metadata"])) is next(iter(b["metadata"]))
    # Equal strings built at run time are distinct objects until share_strings interns them.
    short, short_copy = "".join(["y"] * 64), "".join(["y"] * 64)
    long, long_copy = "".join(["x"] * 65), "".join(["x"] * 65)
    assert short is not short_copy
    assert long is not long_copy
    shared = share_strings({"k": [short, long]})
    shared_copy = share_strings([short_copy, long_copy])
    assert shared == {"k": [short, long]}
    assert shared["k"][0] is shared_copy[0], "strings of up to 64 characters are interned"
    assert shared["k"][1] is not shared_copy[1], "long strings are kept, not interned"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "drop"]),
            st.sampled_from(["ns1", "ns2"]),
            st.sampled_from(["a", "b", "c", "d"]),
            st.dictionaries(st.sampled_from(["rollout", "svc", "x"]), st.sampled_from("pq")),
        ),
        max_size=30,
    ),
    st.sampled_from([None, "ns1", "ns2"]),
    st.sampled_from(["", "rollout=p", "rollout=q,x=p", "svc=p", "x", "!x", "rollout!=p", "x=q"]),
)
def test_an_indexed_read_returns_what_a_scan_of_every_object_would(
    steps: list[tuple[str, str, str, dict[str, str]]], namespace: str | None, selector: str
) -> None:
    store = IndexedStore(("rollout", "svc"))
    everything: dict[tuple[str, str], Obj] = {}
    for action, ns, name, labels in steps:
        if action == "put":
            item = {"metadata": {"namespace": ns, "name": name, "labels": labels}}
            store.put((ns, name), item)
            everything[(ns, name)] = item
        else:
            store.drop((ns, name))
            everything.pop((ns, name), None)
    scanned = [
        o
        for o in everything.values()
        if namespace in (None, o["metadata"]["namespace"])
        and matches(o["metadata"]["labels"], selector)
    ]
    key = lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])  # noqa: E731
    assert sorted(store.select(namespace, selector), key=key) == sorted(scanned, key=key)
    assert len(store) == len(everything)
