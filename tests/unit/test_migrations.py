"""The schema check of every process reads no migration script: its idea of the newest
revision and of the known ones must be Alembic's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from latam.storage import migrate


def scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    return ScriptDirectory.from_config(config)


def test_head_and_known_revisions_are_alembics() -> None:
    directory = scripts()
    assert directory.get_current_head() == migrate.HEAD
    assert {s.revision for s in directory.walk_revisions()} == migrate.KNOWN


def test_describe_tells_what_to_run() -> None:
    assert migrate.describe(migrate.HEAD) is None
    assert "run latam migrate" in (migrate.describe(None) or "")
    assert "run latam migrate" in (migrate.describe("0001") or "")
    assert "newer than this latam knows" in (migrate.describe("9999") or "")


@pytest.mark.slow  # a Python process of its own (about a second)
def test_an_api_process_loads_neither_alembic_nor_googles_auth(tmp_path: Path) -> None:
    """What the API imports to serve: Alembic (with Mako and Pygments), Google's auth
    libraries and httpx cost 10 to 20 MB each per process, and are loaded only by what
    needs them (``latam migrate``, Pub/Sub push, the status page's Prometheus queries)."""
    code = (
        "import sys\n"
        "from latam.process.api import api_process_app\n"
        "api_process_app()\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    # The defaults only: a developer's LATAM_PROMETHEUS_URL or push settings would load
    # what they need, rightly.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATAM_")}
    env["LATAM_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    loaded = set(done.stdout.split())
    assert "fastapi" in loaded  # the app was built
    assert not loaded & {"alembic", "mako", "pygments", "google", "cryptography", "httpx"}
