"""The import contracts cover the whole package: a new module must be given a layer.

import-linter checks the imports between the layers it is told about; a module left out of the
layers contract escapes it silently. This test lists the package's modules and the contract's
layers and fails on any module that sits in none.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "coalmine"


def _modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            continue  # a package's own __init__ holds its docstring, nothing to layer
        found.add(".".join(parts))
    return found


def _layered() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    layers = config["importlinter:contract:layers"]["layers"]
    return {name for name in re.split(r"[\s|:]+", layers) if name}


def _covered(module: str, layered: set[str]) -> bool:
    """A module is in a layer itself, or inside a package that is (one with its own contract)."""
    parts = module.split(".")
    return any(".".join(parts[:n]) in layered for n in range(2, len(parts) + 1))


def test_every_module_sits_in_a_layer() -> None:
    layered = _layered()
    missing = sorted(module for module in _modules() if not _covered(module, layered))
    assert not missing, f"add these modules to the layers contract in .importlinter: {missing}"


def test_the_layers_name_only_modules_that_exist() -> None:
    packages = {module.rsplit(".", 1)[0] for module in _modules()}
    stale = sorted(_layered() - _modules() - packages)
    assert not stale, f"the layers contract names modules that are gone: {stale}"
