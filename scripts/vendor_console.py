"""The console's front-end libraries, vendored as pinned files from the npm registry.

Each library file is copied byte for byte out of its package tarball; MANIFEST.json next
to the files records, for each one, the package, the exact version, the tarball's URL and
``dist.integrity`` (sha512, as the registry publishes it), the path inside the tarball and
the file's own sha384 in Subresource Integrity form.

    python scripts/vendor_console.py --update   # fetch the pinned versions, write all
    python scripts/vendor_console.py --check    # re-fetch: files byte-identical to the registry's
    python scripts/vendor_console.py --offline  # no network: files match their manifest sha384

Raising a version is an edit to ``PACKAGES`` followed by ``--update``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "src/latam/console/static/vendor"
TEST_ONLY = ROOT / "tests/browser/vendor"
REGISTRY = "https://registry.npmjs.org"
MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class Package:
    """One npm package and the files taken from its tarball (tarball path → local name)."""

    name: str
    version: str
    directory: Path
    files: dict[str, str]


PACKAGES = (
    # htmx 2.x: the console's hx-* attributes and its htmx:configRequest listener are 2.x
    # names (htmx 4 renamed its events and changed attribute inheritance).
    Package(
        "htmx.org",
        "2.0.11",
        SHIPPED,
        {"package/dist/htmx.min.js": "htmx.min.js", "package/LICENSE": "LICENSE.htmx.txt"},
    ),
    Package(
        "uplot",
        "1.6.32",
        SHIPPED,
        {
            "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
            "package/dist/uPlot.min.css": "uPlot.min.css",
            "package/LICENSE": "LICENSE.uplot.txt",
        },
    ),
    # Accessibility checks in the browser tests only; never served by the console.
    Package(
        "axe-core",
        "4.14.1",
        TEST_ONLY,
        {
            "package/axe.min.js": "axe.min.js",
            "package/LICENSE": "LICENSE.axe-core.txt",
            "package/LICENSE-3RD-PARTY.txt": "LICENSE-3RD-PARTY.axe-core.txt",
        },
    ),
)


def sri(data: bytes, algorithm: str = "sha384") -> str:
    """``sha384-<base64>``: the form of a Subresource Integrity attribute and of npm's
    ``dist.integrity``."""
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def _get(url: str) -> bytes:
    if not url.startswith(REGISTRY + "/"):
        raise ValueError(f"not a registry URL: {url}")
    with urllib.request.urlopen(url, timeout=60) as response:
        return bytes(response.read())


def fetch(package: Package) -> tuple[str, str, dict[str, bytes]]:
    """The tarball URL, its registry integrity, and the wanted files out of it (verified)."""
    meta = json.loads(_get(f"{REGISTRY}/{package.name}/{package.version}"))
    url, integrity = meta["dist"]["tarball"], meta["dist"]["integrity"]
    tarball = _get(url)
    if sri(tarball, "sha512") != integrity:
        raise SystemExit(f"{package.name}@{package.version}: tarball does not match {integrity}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        contents = {}
        for inner in package.files:
            member = tar.extractfile(inner)
            if member is None:
                raise SystemExit(f"{package.name}@{package.version}: no {inner} in the tarball")
            contents[inner] = member.read()
    return url, integrity, contents


def update() -> int:
    manifests: dict[Path, dict[str, dict[str, str]]] = {}
    for package in PACKAGES:
        url, integrity, contents = fetch(package)
        package.directory.mkdir(parents=True, exist_ok=True)
        for inner, local in package.files.items():
            (package.directory / local).write_bytes(contents[inner])
            manifests.setdefault(package.directory, {})[local] = {
                "package": package.name,
                "version": package.version,
                "tarball": url,
                "tarball_integrity": integrity,
                "path_in_tarball": inner,
                "integrity": sri(contents[inner]),
            }
            print(f"{shown(package.directory / local)}  {package.name}@{package.version}")
    for directory, files in manifests.items():
        text = json.dumps(dict(sorted(files.items())), indent=2) + "\n"
        (directory / MANIFEST).write_text(text)
    return 0


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def load_manifest(directory: Path) -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads((directory / MANIFEST).read_text())
    return data


def offline_problems(directories: tuple[Path, ...] = (SHIPPED, TEST_ONLY)) -> list[str]:
    """Every vendored file whose sha384 differs from its manifest, or that is missing."""
    problems = []
    for directory in directories:
        for local, entry in load_manifest(directory).items():
            path = directory / local
            if not path.is_file():
                problems.append(f"{shown(path)}: missing")
            elif sri(path.read_bytes()) != entry["integrity"]:
                problems.append(f"{shown(path)}: sha384 differs from {MANIFEST}")
    return problems


def check() -> list[str]:
    """Every vendored file compared byte for byte with the registry tarball's file."""
    problems = []
    for package in PACKAGES:
        url, integrity, contents = fetch(package)
        manifest = load_manifest(package.directory)
        for inner, local in package.files.items():
            path = package.directory / local
            entry = manifest.get(local, {})
            if (entry.get("tarball"), entry.get("tarball_integrity")) != (url, integrity):
                problems.append(f"{shown(path)}: manifest names another tarball")
            if not path.is_file() or path.read_bytes() != contents[inner]:
                problems.append(
                    f"{shown(path)}: differs from {inner} in {package.name}@{package.version}"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--update", action="store_true", help="fetch and write files + manifests")
    mode.add_argument("--check", action="store_true", help="compare with the registry tarballs")
    mode.add_argument("--offline", action="store_true", help="compare with the manifests only")
    args = parser.parse_args(argv)
    if args.update:
        return update()
    problems = check() if args.check else offline_problems()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("vendored files match" + (" the registry" if args.check else " their manifests"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
