"""The crash failpoint's kinds of writes (`coalmine.kube.write_kind`): the fault-injection
tests kill the operator after the n-th write of a kind, so the kind must not depend on the
namespace or the object's name."""

from __future__ import annotations

import pytest

from coalmine.kube import write_kind


@pytest.mark.parametrize(
    ("verb", "path", "kind"),
    [
        (
            "patch",
            "/apis/coalmine.dev/v1alpha1/namespaces/a/canaryrollouts/shop",
            "PATCH canaryrollouts",
        ),
        (
            "PATCH",
            "/apis/coalmine.dev/v1alpha1/namespaces/b/canaryrollouts/web/status",
            "PATCH canaryrollouts/status",
        ),
        ("POST", "/api/v1/namespaces/a/services", "POST services"),
        ("PATCH", "/api/v1/namespaces/a/services/shop-canary", "PATCH services"),
        ("POST", "/apis/events.k8s.io/v1/namespaces/a/events", "POST events"),
        ("PATCH", "/apis/apps/v1/namespaces/a/deployments/shop-1/scale", "PATCH deployments/scale"),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/coalmine?x=1", "PUT leases"),
        ("POST", "/api/v1/namespaces", "POST namespaces"),
        ("DELETE", "/api/v1/namespaces/a", "DELETE namespaces"),
        ("PATCH", "/api/v1/nodes/n1", "PATCH nodes"),
    ],
)
def test_a_kind_of_write_names_the_resource_and_subresource_only(
    verb: str, path: str, kind: str
) -> None:
    assert write_kind(verb, path) == kind
