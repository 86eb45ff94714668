"""The built-in ClusterAnalysisTemplates in deploy/analysis/ parse, render and judge as documented.

They are YAML that users apply as they are, so a typo in one would surface as an InvalidSpec in
somebody's cluster; here every file goes through the same parser, query renderer and resolver as
in the operator, and each template's condition is run on sample measurements through the pure
evaluation core. (The queries' PromQL is checked against a real Prometheus by
tests/integration/test_analysis_prometheus.py.)
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine.analysis.evaluate import MeasurementOutcome, Observation, Sample, evaluate
from coalmine.analysis.query import QueryVariables
from coalmine.analysis.spec import (
    CLUSTER_TEMPLATE_KIND,
    AnalysisRef,
    AnalysisTemplateSpec,
    NoDataPolicy,
    render_metric,
    resolve,
)
from coalmine.api.errors import SpecError

REPO = Path(__file__).resolve().parents[2]
DIRECTORY = REPO / "deploy" / "analysis"
DOC = REPO / "docs" / "analysis-builtins.md"
API_VERSION = "coalmine.dev/v1alpha1"
AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

EXPECTED = {
    "request-success-rate",
    "request-latency-p99",
    "istio-request-success-rate",
    "istio-request-latency-p99",
    "nginx-request-success-rate",
    "nginx-request-latency-p99",
    "traefik-request-success-rate",
    "traefik-request-latency-p99",
}
# Values for the arguments that have no default, as a user would pass them.
REQUIRED = {"servicePort": "80"}
VARIABLES = QueryVariables(
    namespace="shop-prod",
    rollout="shop",
    service="shop",
    stable_revision="6d5f7c9b8",
    canary_revision="7f8e9a0b1",
)


def load(path: Path) -> dict[str, Any]:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 1, f"{path.name}: one template per file"
    document = documents[0]
    assert isinstance(document, dict)
    return document


def template_files() -> list[Path]:
    return sorted(p for p in DIRECTORY.glob("*.yaml") if p.name != "kustomization.yaml")


TEMPLATES = {path.stem: load(path) for path in template_files()}


def spec(name: str) -> AnalysisTemplateSpec:
    return AnalysisTemplateSpec.from_object(TEMPLATES[name]["spec"], path=f"{name}.spec")


def defaults(template: AnalysisTemplateSpec) -> dict[str, str]:
    return {
        arg.name: arg.value if arg.value is not None else REQUIRED[arg.name]
        for arg in template.args
    }


def test_the_built_ins_are_the_documented_eight() -> None:
    assert set(TEMPLATES) == EXPECTED


def test_the_kustomization_lists_every_template() -> None:
    kustomization = yaml.safe_load((DIRECTORY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in template_files())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_is_a_cluster_template_named_after_its_file(name: str) -> None:
    document = TEMPLATES[name]
    assert document["apiVersion"] == API_VERSION
    assert document["kind"] == CLUSTER_TEMPLATE_KIND
    assert document["metadata"] == {"name": name}, "cluster-scoped: a name and nothing else"
    assert set(document) == {"apiVersion", "kind", "metadata", "spec"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_template_parses_and_renders_every_query(name: str) -> None:
    template = spec(name)
    args = defaults(template)
    awkward = QueryVariables('ns"x', "r\\o", "s", "st", 'ca"n')  # quotes stay inside strings
    for metric in template.metrics:
        for variables in (VARIABLES, awkward):
            queries = render_metric(metric, replace(variables, args=args))
            rendered = [query for query in vars(queries).values() if query is not None]
            assert queries.canary_min_sample is not None
            for query in rendered:
                assert "{{" not in query
                assert "}}" not in query


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_template_follows_the_house_rules(name: str) -> None:
    template = spec(name)
    (metric,) = template.metrics
    # The metric is named after its template, so any two built-ins can share an analysis.
    assert metric.name == name
    assert metric.count is not None, "usable in an analysis step"
    assert metric.no_data is NoDataPolicy.INCONCLUSIVE
    assert metric.min_sample is not None, "a minimum of requests before judging"
    query = metric.provider.prometheus.query
    assert "[{{interval}}]" in query, "rates over the metric's own interval"
    rendered = render_metric(metric, replace(VARIABLES, args=defaults(template)))
    if name.startswith(("nginx-", "traefik-")):
        # Ingress and gateway metrics know the canary Service, not revisions.
        assert "shop-prod-shop-canary-" in rendered.canary
    else:
        assert VARIABLES.canary_revision in rendered.canary
        assert VARIABLES.namespace in rendered.canary


def test_the_success_rate_templates_guard_their_division() -> None:
    for name in sorted(n for n in EXPECTED if n.endswith("success-rate")):
        query = spec(name).metrics[0].provider.prometheus.query
        # All requests failing: the numerator has no series, so it falls back to 0 (a failure),
        # and a zero denominator is dropped (no data), never divided by.
        assert "or vector(0)" in query, name
        assert re.search(r"\)\s*>\s*0\s*\)\s*$", query), name


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith(("nginx", "traefik"))))
def test_ingress_templates_need_the_service_port(name: str) -> None:
    ref = AnalysisRef.from_object(
        {"templates": [{"name": name, "clusterScope": True}]}, path="spec.steps[1].analysis"
    )
    with pytest.raises(SpecError, match="needs argument 'servicePort'"):
        resolve(
            ref,
            path="spec.steps[1].analysis",
            templates={},
            cluster_templates={name: spec(name)},
            blocking=True,
        )


def test_all_built_ins_resolve_together_in_one_analysis_step() -> None:
    ref = AnalysisRef.from_object(
        {
            "templates": [{"name": name, "clusterScope": True} for name in sorted(EXPECTED)],
            "args": [{"name": "servicePort", "value": "8080"}],
        },
        path="spec.steps[1].analysis",
    )
    resolved = resolve(
        ref,
        path="spec.steps[1].analysis",
        templates={},
        cluster_templates={name: spec(name) for name in EXPECTED},
        blocking=True,
    )
    assert {item.metric.name for item in resolved} == EXPECTED
    for item in resolved:
        if "servicePort" in item.args:
            assert item.args["servicePort"] == "8080"


# (value, request count in the interval, expected outcome) with the default arguments.
SUCCESS_RATE_CASES = [
    (1.0, 100.0, MeasurementOutcome.SUCCESSFUL),
    (0.99, 100.0, MeasurementOutcome.SUCCESSFUL),
    (0.95, 100.0, MeasurementOutcome.FAILED),
    (0.0, 100.0, MeasurementOutcome.FAILED),
    (1.0, 5.0, MeasurementOutcome.INCONCLUSIVE),
    (math.nan, 100.0, MeasurementOutcome.INCONCLUSIVE),
]
LATENCY_CASES = [
    (12.5, 100.0, MeasurementOutcome.SUCCESSFUL),
    (500.0, 100.0, MeasurementOutcome.SUCCESSFUL),
    (750.0, 100.0, MeasurementOutcome.FAILED),
    (12.5, 19.0, MeasurementOutcome.INCONCLUSIVE),
    (math.nan, 100.0, MeasurementOutcome.INCONCLUSIVE),
]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_template_judges_sample_measurements(name: str) -> None:
    template = spec(name)
    (metric,) = template.metrics
    cases = SUCCESS_RATE_CASES if name.endswith("success-rate") else LATENCY_CASES
    for value, requests, expected in cases:
        measurement = evaluate(
            metric,
            Observation(canary=Sample([value]), canary_min_sample=Sample([requests])),
            at=AT,
            args=defaults(template),
        )
        assert measurement.outcome is expected, (value, requests, measurement.message)
    empty = evaluate(
        metric,
        Observation(canary=Sample([]), canary_min_sample=Sample([])),
        at=AT,
        args=defaults(template),
    )
    assert empty.outcome is MeasurementOutcome.INCONCLUSIVE, "no traffic is no data"


def test_the_documentation_names_every_template_and_argument() -> None:
    text = DOC.read_text()
    for name in EXPECTED:
        assert f"`{name}`" in text, name
        for arg in spec(name).args:
            assert f"`{arg.name}`" in text, (name, arg.name)
