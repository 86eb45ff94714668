"""The Prometheus provider against the local cluster's real Prometheus.

The unit tests pin the mapping of every kind of answer on a stand-in; these check that the
stand-in told the truth: a real Prometheus, scraping real demo-app pods labelled as coalmine
labels a revision, answers instant and range queries as the provider expects, refuses a bad
query with a parse error the provider passes on, and the built-in templates' PromQL runs there
(the demo ones end to end, through the evaluation core, to a Successful measurement).
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from coalmine.analysis.evaluate import (
    Measurement,
    MeasurementOutcome,
    Observation,
    ProviderError,
    Sample,
    evaluate,
)
from coalmine.analysis.prometheus import Prometheus
from coalmine.analysis.query import QueryVariables
from coalmine.analysis.spec import AnalysisTemplateSpec, Metric, render_metric
from devenv import paths
from devenv.waiting import wait_for

from .conftest import Cluster

ROLLOUT = "demo"
REVISION = "r1"
LABELS = {"app": "demo", "coalmine.dev/rollout": ROLLOUT, "coalmine.dev/revision": REVISION}
TEMPLATES = paths.REPO_ROOT / "deploy" / "analysis"
# Port 9 (discard) inside the cluster's network namespace: nothing listens there.
NOTHING_LISTENS = "http://127.0.0.1:9"
# Prometheus discovers new pods, then scrapes every 5 s: allow for discovery and a few scrapes.
SCRAPE_WAIT = 60.0


@dataclass(frozen=True)
class Pod:
    name: str
    ip: str


def deployment(replicas: int) -> client.V1Deployment:
    container = client.V1Container(
        name="app",
        image="coalmine.dev/demo-app:v1",
        ports=[client.V1ContainerPort(container_port=8080, name="http")],
    )
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="demo"),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": "demo"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=LABELS),
                spec=client.V1PodSpec(containers=[container]),
            ),
        ),
    )


def running_pods(kube: Cluster, namespace: str) -> list[Pod]:
    pods = kube.api.sanitize_for_serialization(
        kube.core.list_namespaced_pod(namespace, label_selector="app=demo")
    )["items"]
    return [
        Pod(name=p["metadata"]["name"], ip=p["status"]["podIP"])
        for p in pods
        if p["status"].get("phase") == "Running"
        and p["status"].get("podIP")
        and "deletionTimestamp" not in p["metadata"]
    ]


def answers(pod: Pod) -> bool:
    try:
        with urllib.request.urlopen(f"http://{pod.ip}:8080/", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def send(pods: list[Pod], per_pod: int) -> None:
    """`per_pod` requests to each pod, each one counted by the demo app."""
    for pod in pods:
        for _ in range(per_pod):
            with urllib.request.urlopen(f"http://{pod.ip}:8080/", timeout=2.0) as response:
                response.read()


@pytest.fixture
def demo(kube: Cluster, namespace: str) -> list[Pod]:
    """Three demo-app pods labelled like revision r1 of rollout demo, each answering."""
    kube.apps.create_namespaced_deployment(namespace, deployment(3))
    pods = wait_for(
        lambda: running_pods(kube, namespace),
        until=lambda found: len(found) == 3,
        timeout=60,
        message="3 running demo pods with IPs",
    )
    for pod in pods:
        wait_for(
            lambda pod=pod: answers(pod),  # type: ignore[misc]
            timeout=30,
            message=f"the process of pod {pod.name} to answer on {pod.ip}:8080",
        )
    return pods


@pytest.fixture
def provider() -> Iterator[Prometheus]:
    prometheus = Prometheus()
    yield prometheus
    prometheus.close()


def total(result: Sample | ProviderError) -> float:
    """The one value of an aggregated query; -1 while Prometheus has nothing yet."""
    assert isinstance(result, Sample), result
    return result.values[0] if result.values else -1.0


def test_prometheus_is_online(kube: Cluster, provider: Prometheus) -> None:
    assert provider.online(kube.prometheus_url)
    assert not provider.online(NOTHING_LISTENS, timeout=2)


def test_the_request_counter_grows_with_traffic(
    kube: Cluster, demo: list[Pod], namespace: str, provider: Prometheus
) -> None:
    query = f'sum(demo_http_requests_total{{namespace="{namespace}"}})'

    def measure() -> float:
        return total(provider.instant(query, address=kube.prometheus_url, timeout=5))

    send(demo, 5)
    before = wait_for(
        measure,
        until=lambda value: value >= 15,
        timeout=SCRAPE_WAIT,
        message=f"Prometheus to count the first 15 requests: {query}",
    )
    send(demo, 10)
    wait_for(
        measure,
        until=lambda value: value >= before + 30,
        timeout=SCRAPE_WAIT,
        message=f"the count to grow from {before:g} by the 30 new requests",
    )


def test_the_revision_label_selects_the_pods_of_a_revision(
    kube: Cluster, demo: list[Pod], namespace: str, provider: Prometheus
) -> None:
    send(demo, 2)
    by_pod = (
        f'sum by (pod) (demo_http_requests_total{{namespace="{namespace}", '
        f'coalmine_rollout="{ROLLOUT}", coalmine_revision="{REVISION}"}})'
    )
    result = wait_for(
        lambda: provider.instant(by_pod, address=kube.prometheus_url, timeout=5),
        # Each series counts the two requests once a scrape after them has landed.
        until=lambda r: (
            isinstance(r, Sample) and len(r.values) == 3 and all(value >= 2 for value in r.values)
        ),
        timeout=SCRAPE_WAIT,
        message=f"one series per pod of revision {REVISION}, each with 2 requests: {by_pod}",
    )
    assert isinstance(result, Sample)
    other = f'sum(demo_http_requests_total{{namespace="{namespace}", coalmine_revision="r2"}})'
    assert provider.instant(other, address=kube.prometheus_url, timeout=5) == Sample([])


def test_a_range_query_returns_several_points(
    kube: Cluster, demo: list[Pod], namespace: str, provider: Prometheus
) -> None:
    send(demo, 3)
    query = f'sum by (pod) (demo_http_requests_total{{namespace="{namespace}"}})'

    def points() -> Sample | ProviderError:
        end = datetime.now(UTC)
        return provider.range(
            query,
            address=kube.prometheus_url,
            timeout=5,
            start=end - timedelta(minutes=2),
            end=end,
            step_seconds=5,
        )

    # Three pods scraped at least twice each: at least six points, pooled into one sample, the
    # latest counting the requests just sent.
    result = wait_for(
        points,
        until=lambda r: isinstance(r, Sample) and len(r.values) >= 6 and max(r.values) >= 3,
        timeout=SCRAPE_WAIT,
        message=f"several points of every pod's series: {query}",
    )
    assert isinstance(result, Sample)
    assert all(value >= 0 for value in result.values)


def test_a_bad_query_names_prometheus_parse_error(kube: Cluster, provider: Prometheus) -> None:
    result = provider.instant(
        "sum(rate(demo_http_requests_total[1m])", address=kube.prometheus_url, timeout=5
    )
    assert isinstance(result, ProviderError)
    assert result.message.startswith("Prometheus rejected the query (HTTP 400, bad_data)")
    assert "parse error: unclosed left parenthesis" in result.message


def test_an_instant_query_for_a_range_vector_is_refused(
    kube: Cluster, provider: Prometheus
) -> None:
    result = provider.instant("up[1m]", address=kube.prometheus_url, timeout=5)
    assert isinstance(result, ProviderError)
    assert "range vector" in result.message


def test_scalars_nan_and_inf_come_back_as_floats(kube: Cluster, provider: Prometheus) -> None:
    assert provider.instant("2 * 21", address=kube.prometheus_url, timeout=5) == Sample([42.0])
    assert provider.instant("1 / 0", address=kube.prometheus_url, timeout=5) == Sample(
        [float("inf")]
    )
    nan = provider.instant("vector(0) / 0", address=kube.prometheus_url, timeout=5)
    assert isinstance(nan, Sample)
    assert len(nan.values) == 1
    assert nan.values[0] != nan.values[0]


def test_nothing_listening_is_a_fast_error(kube: Cluster, provider: Prometheus) -> None:
    started = time.monotonic()
    result = provider.instant("up", address=NOTHING_LISTENS, timeout=5)
    assert isinstance(result, ProviderError)
    assert result.message == f"cannot reach Prometheus at {NOTHING_LISTENS}: Connection refused"
    assert time.monotonic() - started < 2


def template_metric(path: Path) -> Metric:
    spec = AnalysisTemplateSpec.from_object(yaml.safe_load(path.read_text())["spec"])
    (metric,) = spec.metrics
    return metric


def template_args(path: Path) -> dict[str, str]:
    spec = AnalysisTemplateSpec.from_object(yaml.safe_load(path.read_text())["spec"])
    return {arg.name: arg.value if arg.value is not None else "80" for arg in spec.args}


def test_every_built_in_template_query_runs_in_prometheus(
    kube: Cluster, namespace: str, provider: Prometheus
) -> None:
    variables = QueryVariables(namespace, ROLLOUT, "demo", REVISION, REVISION)
    files = sorted(p for p in TEMPLATES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert len(files) == 8
    for path in files:
        queries = render_metric(template_metric(path), replace(variables, args=template_args(path)))
        for query in (queries.canary, queries.canary_min_sample):
            assert query is not None
            result = provider.instant(query, address=kube.prometheus_url, timeout=5)
            # Nothing in this namespace has traffic yet: every query parses, and finds nothing.
            assert result == Sample([]), (path.name, query, result)


def test_the_demo_templates_judge_a_healthy_revision_successful(
    kube: Cluster, demo: list[Pod], namespace: str, provider: Prometheus
) -> None:
    variables = QueryVariables(namespace, ROLLOUT, "demo", REVISION, REVISION)

    def measure(name: str) -> Measurement:
        path = TEMPLATES / f"{name}.yaml"
        metric = template_metric(path)
        args = template_args(path)
        queries = render_metric(metric, replace(variables, args=args))
        assert queries.canary_min_sample is not None
        observation = Observation(
            canary=provider.instant(queries.canary, address=kube.prometheus_url, timeout=5),
            canary_min_sample=provider.instant(
                queries.canary_min_sample, address=kube.prometheus_url, timeout=5
            ),
        )
        return evaluate(metric, observation, at=datetime.now(UTC), args=args)

    for name in ("request-success-rate", "request-latency-p99"):

        def traffic_then_measure(name: str = name) -> Measurement:
            send(demo, 5)  # keep the interval's request count above the template's minimum
            return measure(name)

        measurement = wait_for(
            traffic_then_measure,
            until=lambda m: m.outcome is MeasurementOutcome.SUCCESSFUL,
            timeout=90,
            interval=1.0,
            message=f"a Successful {name} measurement of a healthy demo revision",
        )
        assert measurement.value is not None
        if name == "request-success-rate":
            assert measurement.value == 1.0
        else:
            assert 0 < measurement.value <= 500
