"""The console's vendored front-end files are the ones their manifests pin.

``scripts/vendor_console.py --offline``: every file's sha384 against MANIFEST.json, no
network (``make vendor-check`` compares them with the npm registry's tarballs).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vendor_console.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_console", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vendor_console"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


vendor = _load()


def test_every_vendored_file_matches_its_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert vendor.main(["--offline"]) == 0, capsys.readouterr().err


def test_every_pinned_file_is_in_a_manifest_with_its_provenance() -> None:
    for package in vendor.PACKAGES:
        manifest = vendor.load_manifest(package.directory)
        for inner, local in package.files.items():
            entry = manifest[local]
            assert entry["package"] == package.name
            assert entry["version"] == package.version
            assert entry["path_in_tarball"] == inner
            assert entry["tarball"].startswith(f"{vendor.REGISTRY}/{package.name}/-/")
            assert entry["tarball_integrity"].startswith("sha512-")
            assert entry["integrity"].startswith("sha384-")


def test_each_library_ships_with_its_licence() -> None:
    for package in vendor.PACKAGES:
        licences = [local for local in package.files.values() if local.startswith("LICENSE")]
        assert licences, package.name
        assert all((package.directory / local).stat().st_size > 0 for local in licences)


def test_the_browser_only_library_is_not_shipped() -> None:
    assert not (vendor.SHIPPED / "axe.min.js").exists()


def test_a_changed_file_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "vendor"
    shutil.copytree(vendor.SHIPPED, copy)
    (copy / "htmx.min.js").write_bytes(b"/* changed */" + (copy / "htmx.min.js").read_bytes())
    (copy / "uPlot.min.css").unlink()
    problems = vendor.offline_problems((copy,))
    assert problems == [
        f"{copy / 'htmx.min.js'}: sha384 differs from MANIFEST.json",
        f"{copy / 'uPlot.min.css'}: missing",
    ]
    assert json.loads((copy / "MANIFEST.json").read_text())  # untouched
