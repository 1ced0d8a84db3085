"""The package layout keeps its shape: the import-linter contracts in pyproject.toml hold.

docs/architecture.md ("Packages and who may import whom") draws what they enforce.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
SPLIT_PACKAGES = ("latam.broker", "latam.storage")  # their modules sit in different layers


def _contract(contract_id: str) -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["id"] == contract_id)


def _layer_modules(layer: str) -> set[str]:
    """Full module names of one layer string, e.g. ``"service : worker"``."""
    return {f"latam.{tail.strip('() ')}" for tail in re.split(r"[|:]", layer)}


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(  # a fresh interpreter, so no test's imports or sys.path leak in
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_broker_and_storage_module_has_a_layer() -> None:
    """The layers contract is exhaustive for latam's children; this covers one level down."""
    declared = set().union(*map(_layer_modules, _contract("layers")["layers"]))
    graph = grimp.build_graph("latam", cache_dir=None)
    children = {child for package in SPLIT_PACKAGES for child in graph.find_children(package)}
    assert sorted(children - declared) == []


def _adapters() -> set[str]:
    layers = map(_layer_modules, _contract("layers")["layers"])
    return next(layer for layer in layers if "latam.broker.sqlite" in layer)


def test_use_cases_are_forbidden_every_adapter() -> None:
    """The forbidden list names the same latam modules as the adapter layer."""
    forbidden = _contract("use-cases-know-no-adapter")["forbidden_modules"]
    assert {name for name in forbidden if name.startswith("latam.")} == _adapters()


def test_every_broker_adapter_is_independent() -> None:
    brokers = {name for name in _adapters() if name.startswith("latam.broker.")}
    assert set(_contract("brokers-independent")["modules"]) == brokers
