"""Argo CD's Lua engine and diff, for tests: a client of the ``coalmine-argocd`` harness.

Why: coalmine ships Lua (health and actions) and ``ignoreDifferences`` rules for Argo CD, and
both only mean something under Argo CD's own semantics: gopher-lua with Argo CD's reduced
libraries and its JSON conversions, gojq deletions and three-way JSON merge patches. The
harness (``tools/argocd/``, built by ``make tools``) reproduces them on the libraries Argo CD
links; this module starts it once (``coalmine-argocd serve``) and speaks its line protocol.
"""

from __future__ import annotations

import copy
import json
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from devenv import paths

HARNESS = "coalmine-argocd"
ARGOCD_DIR = paths.REPO_ROOT / "deploy" / "argocd"
CUSTOMIZATIONS = ARGOCD_DIR / "resource_customizations"
CONFIGMAP = ARGOCD_DIR / "resource-customizations.yaml"
IGNORE_DIFFERENCES = ARGOCD_DIR / "ignore-differences.yaml"
#: Argo CD's own resource customizations and their tests (copied by ``make tools``).
UPSTREAM_CUSTOMIZATIONS = paths.SHARE_DIR / "argocd-resource-customizations"

Obj = dict[str, Any]


def applied(obj: Obj) -> Obj:
    """``obj`` as kubectl apply (Argo CD's default sync) leaves it: last-applied recorded."""
    live = copy.deepcopy(obj)
    live["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(obj)
    }
    live["metadata"].update(uid="0c0f", resourceVersion="41", generation=1)
    return live


class HarnessError(RuntimeError):
    """The harness answered with an error: a script failed, or a request was malformed."""


def binary() -> Path:
    return paths.binary(HARNESS)


def available() -> bool:
    return binary().exists()


@dataclass(frozen=True)
class Diff:
    """Argo CD's comparison of one resource (gitops-engine's DiffResult)."""

    modified: bool
    normalized_live: Obj
    predicted_live: Obj
    three_way: bool
    """True when the live object's last-applied-configuration was the original."""
    skipped: tuple[str, ...]
    """Ignore rules that failed on the object (Argo CD skips them)."""


class ArgoCD:
    """One ``coalmine-argocd serve`` process; requests are answered in order."""

    def __init__(self, harness: Path | None = None) -> None:
        path = harness or binary()
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `make tools`")
        self._process = subprocess.Popen(
            [str(path), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=10)

    def __enter__(self) -> ArgoCD:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, **fields: Any) -> dict[str, Any]:
        stdin: IO[str] | None = self._process.stdin
        stdout: IO[str] | None = self._process.stdout
        assert stdin is not None
        assert stdout is not None
        with self._lock:
            stdin.write(json.dumps(fields) + "\n")
            stdin.flush()
            line = stdout.readline()
        if not line:
            raise HarnessError(f"{HARNESS} exited with {self._process.poll()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise HarnessError(answer["error"])
        return answer

    # --- Lua ------------------------------------------------------------------------------------

    def health(
        self,
        obj: Mapping[str, Any],
        *,
        source: Path = CUSTOMIZATIONS,
        libraries: str | None = None,
    ) -> dict[str, str]:
        """The health Argo CD shows for ``obj`` (libraries: open for a tree, as for built-ins)."""
        extra = {"libraries": libraries} if libraries else {}
        health: dict[str, str] = self.request(
            op="health", obj=dict(obj), source=str(source), **extra
        )["health"]
        return health

    def discovery(
        self, obj: Mapping[str, Any], *, source: Path = CUSTOMIZATIONS
    ) -> dict[str, dict[str, Any]]:
        """The actions Argo CD lists for ``obj``, by name."""
        actions: list[dict[str, Any]] = self.request(
            op="discovery", obj=dict(obj), source=str(source)
        )["actions"]
        return {action["name"]: action for action in actions}

    def enabled_actions(self, obj: Mapping[str, Any], *, source: Path = CUSTOMIZATIONS) -> set[str]:
        return {
            name
            for name, action in self.discovery(obj, source=source).items()
            if not action.get("disabled", False)
        }

    def action(
        self,
        name: str,
        obj: Mapping[str, Any],
        *,
        source: Path = CUSTOMIZATIONS,
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        """The object an action asks Argo CD to patch ``obj`` into (it must return exactly that)."""
        resources: list[dict[str, Any]] = self.request(
            op="action", obj=dict(obj), source=str(source), action=name, params=dict(params or {})
        )["resources"]
        if [resource["operation"] for resource in resources] != ["patch"]:
            raise HarnessError(f"action {name} returned {resources!r}, not one patch")
        patched: Obj = resources[0]["resource"]
        return patched

    # --- diffs ----------------------------------------------------------------------------------

    def normalize(
        self,
        obj: Mapping[str, Any],
        rules: Sequence[Mapping[str, Any]],
        *,
        ignore_status: str = "all",
    ) -> Obj:
        """``obj`` without the fields the rules (and the status setting) make Argo CD ignore."""
        answer = self.request(
            op="normalize",
            obj=dict(obj),
            ignoreDifferences=[dict(rule) for rule in rules],
            ignoreResourceStatusField=ignore_status,
        )
        if answer.get("skipped"):
            raise HarnessError(f"ignore rules failed on the object: {answer['skipped']}")
        normalized: Obj = answer["object"]
        return normalized

    def diff(
        self,
        config: Mapping[str, Any],
        live: Mapping[str, Any],
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        ignore_status: str = "all",
    ) -> Diff:
        """Argo CD's legacy diff of the desired object (namespace set) against the live one."""
        answer = self.request(
            op="diff",
            config=dict(config),
            live=dict(live),
            ignoreDifferences=[dict(rule) for rule in rules],
            ignoreResourceStatusField=ignore_status,
        )
        return Diff(
            modified=answer["modified"],
            normalized_live=answer["normalizedLive"],
            predicted_live=answer["predictedLive"],
            three_way=answer["threeWay"],
            skipped=tuple(answer.get("skipped") or ()),
        )

    def sync_target(
        self,
        config: Mapping[str, Any],
        live: Mapping[str, Any],
        rules: Sequence[Mapping[str, Any]],
    ) -> Obj:
        """What a sync with ``RespectIgnoreDifferences=true`` applies for an existing object."""
        target: Obj = self.request(
            op="syncTarget",
            config=dict(config),
            live=dict(live),
            ignoreDifferences=[dict(rule) for rule in rules],
        )["object"]
        return target


@dataclass(frozen=True)
class CustomizationReport:
    """What ``coalmine-argocd test`` found: one entry per test case."""

    results: list[dict[str, Any]]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [result for result in self.results if not result["passed"]]

    @property
    def inexact(self) -> list[dict[str, Any]]:
        return [result for result in self.results if not result["exact"]]


def run_tests(
    directory: Path, *, mode: str = "upstream", scripts: Path | None = None
) -> CustomizationReport:
    """Run the health_test.yaml and action_test.yaml files under ``directory`` (Argo CD's
    layout) as Argo CD's own tests do; ``scripts`` is another tree or an argocd-cm manifest."""
    command = [str(binary()), "test", "--mode", mode]
    if scripts is not None:
        command += ["--scripts", str(scripts)]
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise HarnessError(done.stderr.strip() or f"{HARNESS} test exited with {done.returncode}")
    report = json.loads(done.stdout)
    return CustomizationReport(results=list(report["results"] or ()))
