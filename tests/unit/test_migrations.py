"""The schema check of every process reads no migration script: its idea of the newest
revision and of the known ones must be Alembic's."""

from __future__ import annotations

import subprocess
import sys

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


def test_an_api_process_loads_neither_alembic_nor_googles_auth() -> None:
    """What the API imports to serve: Alembic (with Mako and Pygments), Google's auth
    libraries and httpx cost 10 to 20 MB each per process, and are loaded only by what
    needs them (``latam migrate``, Pub/Sub push, the status page's Prometheus queries)."""
    code = (
        "import sys, tempfile, os\n"
        "os.environ['LATAM_DATA_DIR'] = tempfile.mkdtemp()\n"
        "from latam.process.api import api_process_app\n"
        "api_process_app()\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    assert "fastapi" in loaded  # the app was built
    assert not loaded & {"alembic", "mako", "pygments", "google", "cryptography", "httpx"}
