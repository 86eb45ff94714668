"""deploy/argocd/ in Argo CD's own resource_customizations layout, run by Argo CD's Lua engine.

The tests beside the scripts (``health_test.yaml``, ``actions/action_test.yaml``, ``testdata/``)
are in Argo CD's upstream format; the ``coalmine-argocd`` harness runs them the way Argo CD's
own test runner does (gopher-lua, gopher-json, Argo CD's reduced ``os``), so the directory
``coalmine.dev/CanaryRollout`` could be contributed to Argo CD as it is. The same tests then
run with the restricted libraries an argocd-cm customization gets, and with the scripts taken
from the generated argocd-cm patch users apply.

Whether the harness deserves that trust is tested here too: it runs Argo CD's own resource
customizations and their tests (v3.5.7, from the Go module cache) and must pass them all, but
for the cases Argo CD's test code special-cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coalmine.api.vocabulary import Control
from devenv import argocd as harness
from devenv import argocdgen
from devenv.argocd import ArgoCD, HarnessError

KIND_DIR = harness.CUSTOMIZATIONS / "coalmine.dev" / "CanaryRollout"


def describe(results: list[dict[str, object]]) -> str:
    return "\n".join(
        f"{r['file']} {r['kind']} {r.get('action', '')} {r['input']}: "
        f"{r.get('error') or ''} expected {r.get('expected')!r} got {r.get('got')!r}"
        for r in results
    )


@pytest.fixture(scope="module")
def built(argocd: ArgoCD) -> ArgoCD:
    """The harness binary exists (the session fixture skips otherwise)."""
    return argocd


@pytest.mark.parametrize(
    "mode",
    [
        "upstream",  # Argo CD's test runner: open libraries for health and discovery
        "production",  # Argo CD itself with these as built-ins: the same but for discovery
        "restricted",  # pasted into argocd-cm without useOpenLibs: no string, no math
    ],
)
def test_the_upstream_format_tests_pass_in_argocds_engine(built: ArgoCD, mode: str) -> None:
    report = harness.run_tests(harness.CUSTOMIZATIONS, mode=mode)
    assert report.results
    assert not report.failures, describe(report.failures)
    # Stricter than Argo CD's runner: every field of the expected output is there and nothing
    # else changed, and every expected action is discovered.
    assert not report.inexact, describe(report.inexact)


def test_the_argocd_cm_patch_runs_the_same_scripts(built: ArgoCD) -> None:
    report = harness.run_tests(harness.CUSTOMIZATIONS, mode="production", scripts=harness.CONFIGMAP)
    assert len(report.results) == len(harness.run_tests(harness.CUSTOMIZATIONS).results)
    assert not report.failures, describe(report.failures)
    # Nothing in argocd-cm asks for open libraries: every script runs restricted there.
    assert {result["libraries"] for result in report.results} == {"restricted"}


def test_the_generated_files_are_current() -> None:
    for path, text in argocdgen.outputs().items():
        assert path.read_text() == text, f"{path} is out of date: run `make argocd`"


def test_the_argocd_cm_patch_holds_health_actions_and_ignore_rules() -> None:
    data = yaml.safe_load(harness.CONFIGMAP.read_text())["data"]
    assert set(data) == {
        "resource.customizations.health.coalmine.dev_CanaryRollout",
        "resource.customizations.actions.coalmine.dev_CanaryRollout",
        "resource.customizations.ignoreDifferences.gateway.networking.k8s.io_HTTPRoute",
        "resource.customizations.ignoreDifferences.networking.istio.io_VirtualService",
    }
    actions = yaml.safe_load(data["resource.customizations.actions.coalmine.dev_CanaryRollout"])
    names = [definition["name"] for definition in actions["definitions"]]
    assert names == [name for name, _ in argocdgen.ACTIONS]
    for key in data:
        if ".ignoreDifferences." in key:
            assert set(yaml.safe_load(data[key])) == {"jqPathExpressions"}


def test_every_control_of_the_operator_is_an_action_and_every_action_a_control() -> None:
    assert {control.value for control in Control} == set(argocdgen.MENU)


def test_an_action_takes_its_meaning_from_the_operators_control() -> None:
    meanings = {control.value: control.meaning for control in Control}
    assert dict(argocdgen.ACTIONS) == {name: meanings[name] for name in argocdgen.MENU}


def test_every_action_and_every_input_is_tested() -> None:
    spec = yaml.safe_load((KIND_DIR / "actions" / "action_test.yaml").read_text())
    assert {test["action"] for test in spec["actionTests"]} == {
        name for name, _ in argocdgen.ACTIONS
    }
    for discovery in spec["discoveryTests"]:
        assert [action["name"] for action in discovery["result"]] == [
            name for name, _ in argocdgen.ACTIONS
        ]
    used = {test["inputPath"] for test in spec["discoveryTests"]}
    used |= {test["expectedOutputPath"] for test in spec["actionTests"]}
    on_disk = {f"testdata/{p.name}" for p in (KIND_DIR / "actions" / "testdata").glob("*.yaml")}
    assert used == on_disk
    health = yaml.safe_load((KIND_DIR / "health_test.yaml").read_text())
    named = {test["inputPath"] for test in health["tests"]}
    assert named == {f"testdata/{p.name}" for p in (KIND_DIR / "testdata").glob("*.yaml")}
    for test in health["tests"]:
        # Upstream names a health test's input after the status it expects.
        assert Path(test["inputPath"]).name.startswith(test["healthStatus"]["status"].lower())


# --- the engine is Argo CD's, not a plain Lua -------------------------------------------------


PROBE = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}}


def probe(argocd: ArgoCD, code: str, libraries: str) -> object:
    """Run ``code`` as a health script; its result is smuggled out through the message."""
    script = (
        f"local function probe()\n{code}\nend\nreturn {{status = 'Healthy', message = probe()}}"
    )
    answer = argocd.request(op="health", obj=PROBE, script=script, libraries=libraries)
    return answer["health"].get("message")


@pytest.mark.parametrize(
    ("code", "refusal"),
    [
        ('return string.format("%d", 1)', "string"),
        ('return ("x"):upper()', "upper"),
        ("return math.floor(1.5)", "key 'floor'"),
        ('return io.open("/etc/hostname")', "key 'open'"),
        ('return os.date("!%Y")', "key 'date'"),  # no global os, only require("os")
    ],
)
def test_restricted_scripts_lack_what_argocd_withholds(
    argocd: ArgoCD, code: str, refusal: str
) -> None:
    with pytest.raises(HarnessError, match=refusal):
        probe(argocd, code, "restricted")
    assert probe(argocd, code.replace("return", "return tostring(", 1) + ")", "open") is not None


def test_restricted_scripts_get_argocds_reduced_os(argocd: ArgoCD) -> None:
    year = probe(argocd, 'return require("os").date("!%Y")', "restricted")
    assert isinstance(year, str)
    assert len(year) == 4
    # Argo CD's os opener names the table library, already loaded, so it adds nothing.
    assert probe(argocd, 'return type(table.date) .. " " .. type(os)', "restricted") == "nil nil"
    with pytest.raises(HarnessError, match="attempt to call a non-function"):
        probe(argocd, 'return require("os").getenv("HOME")', "restricted")


def test_an_empty_table_comes_back_as_the_object_it_was(argocd: ArgoCD) -> None:
    obj = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": "web", "annotations": {}, "resourceVersion": "7"},
        "spec": {"template": {"metadata": {}}, "steps": []},
    }
    script = "obj.metadata.labels = {}\nreturn obj"
    answer = argocd.request(op="action", obj=obj, script=script)
    patched = answer["resources"][0]["resource"]
    # gopher-json encodes every empty table as []; Argo CD puts {} back where there was one.
    assert patched["metadata"]["annotations"] == {}
    assert patched["spec"] == {"template": {"metadata": {}}, "steps": []}
    assert patched["metadata"]["labels"] == []  # new: nothing to tell it apart


# --- the harness against Argo CD's own customizations -----------------------------------------

#: Kinds whose action outputs hold the current time or a name derived from it; Argo CD's test
#: code rewrites those fields per kind before comparing (util/lua/custom_actions_test.go).
TIME_DEPENDENT = {
    "argoproj.io/CronWorkflow": "creates a Workflow named after the current time",
    "argoproj.io/WorkflowTemplate": "creates a Workflow named after the current time",
    "argoproj.io/Rollout": "restart sets spec.restartAt to now",
    "batch/CronJob": "create-job names the Job after the current time",
    "external-secrets.io/ExternalSecret": "refresh sets a force-sync annotation to now",
    "external-secrets.io/PushSecret": "push sets a force-sync annotation to now",
    "helm.toolkit.fluxcd.io/HelmRelease": "reconcile sets reconcile.fluxcd.io/requestedAt",
    "image.toolkit.fluxcd.io/ImageRepository": "likewise",
    "image.toolkit.fluxcd.io/ImageUpdateAutomation": "likewise",
    "kustomize.toolkit.fluxcd.io/Kustomization": "likewise",
    "notification.toolkit.fluxcd.io/Receiver": "likewise",
    "source.toolkit.fluxcd.io/Bucket": "likewise",
    "source.toolkit.fluxcd.io/GitRepository": "likewise",
    "source.toolkit.fluxcd.io/HelmChart": "likewise",
    "source.toolkit.fluxcd.io/HelmRepository": "likewise",
    "source.toolkit.fluxcd.io/OCIRepository": "likewise",
    "postgresql.cnpg.io/Cluster": "actions stamp cnpg.io annotations with now",
}


def test_the_harness_passes_argocds_own_customization_tests(built: ArgoCD) -> None:
    if not harness.UPSTREAM_CUSTOMIZATIONS.exists():
        pytest.skip(f"{harness.UPSTREAM_CUSTOMIZATIONS} is missing: run `make tools`")
    report = harness.run_tests(harness.UPSTREAM_CUSTOMIZATIONS)
    by_kind = {
        kind: [r for r in report.results if r["kind"] == kind]
        for kind in ("health", "discovery", "action")
    }
    assert len(by_kind["health"]) > 1000
    assert len(by_kind["discovery"]) > 50
    # Every health and discovery test of Argo CD passes, wildcard directories included.
    assert not [r for r in report.failures if r["kind"] != "action"], describe(report.failures)
    unexplained = []
    for result in report.failures:
        key = result["file"].split("/actions/")[0]
        scheme_kind = "strategic merge" in (result.get("error") or "")
        if not scheme_kind and key not in TIME_DEPENDENT:
            unexplained.append(result)
    assert not unexplained, describe(unexplained)
    passed_actions = [r for r in by_kind["action"] if r["passed"]]
    assert len(passed_actions) > 50
