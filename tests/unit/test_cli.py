"""The ``latam`` command: help texts and errors that name the bad argument."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from latam.cli import main

# Tests that start a real ``latam`` process: ``make test`` runs them, ``make unit`` does not.
SUBPROCESS = pytest.mark.slow


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "latam", *args],
        capture_output=True,
        text=True,
        env={**(env or {}), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for command in (
        [],
        ["serve"],
        ["api"],
        ["worker"],
        ["migrate"],
        ["topics"],
        ["schemas"],
        ["schemas", "set"],
        ["retention"],
        ["topics", "retention"],
        ["dead-letters"],
        ["dead-letters", "replay"],
    ):
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


@SUBPROCESS
def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = run("migrate", env={"LATAM_PORT": "eighty", "LATAM_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "LATAM_PORT" in result.stderr
    assert "Traceback" not in result.stderr


@SUBPROCESS
def test_bad_option_names_the_option(tmp_path: Path) -> None:
    result = run("serve", "--port", "99999", env={"LATAM_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "--port" in result.stderr


@SUBPROCESS
def test_bad_broker_url_names_the_variable(tmp_path: Path) -> None:
    env = {"LATAM_DATA_DIR": str(tmp_path), "LATAM_BROKER_URL": "kafka://x"}
    result = run("dead-letters", "list", env=env)
    assert result.returncode == 2
    assert "LATAM_BROKER_URL" in result.stderr


@SUBPROCESS
def test_topics_and_dead_letters_commands(tmp_path: Path) -> None:
    env = {"LATAM_DATA_DIR": str(tmp_path)}
    assert run("migrate", env=env).returncode == 0
    created = run("topics", "create", "flights", env=env)
    assert created.returncode == 0, created.stderr
    assert '"name":"flights"' in created.stdout
    duplicate = run("topics", "create", "flights", env=env)
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr
    assert "flights" in run("topics", "list", env=env).stdout
    assert run("topics", "delete", "999", env=env).returncode == 1
    assert run("dead-letters", "list", env=env).stdout == ""
    both = run("dead-letters", "replay", "1", "--all", env=env)
    assert both.returncode == 2
    assert "--all" in both.stderr
    assert run("dead-letters", "purge", "--all", env=env).stdout.strip() == "purged 0"


class Ran:
    """What ``in_process`` ran: the fields of a ``subprocess.CompletedProcess`` used here."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def in_process(*args: str, env: dict[str, str]) -> Ran:
    """``latam ARGS`` in this process (a subprocess costs a second of imports each),
    with only ``env`` of the LATAM_* variables set."""
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LATAM_")}
    result = CliRunner(env={**cleared, **env}).invoke(main, list(args))
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_schemas_commands(tmp_path: Path) -> None:
    env = {"LATAM_DATA_DIR": str(tmp_path)}
    assert in_process("migrate", env=env).returncode == 0
    assert in_process("topics", "create", "flights", env=env).returncode == 0
    schema = tmp_path / "flights.json"
    schema.write_text('{"type": "object", "required": ["flight"]}')
    added = in_process("schemas", "set", "1", str(schema), env=env)
    assert added.returncode == 0, added.stderr
    assert '"version": 1' in added.stdout
    stricter = tmp_path / "stricter.json"
    stricter.write_text('{"type": "object", "required": ["flight", "gate"]}')
    refused = in_process("schemas", "set", "1", str(stricter), env=env)
    assert refused.returncode == 1
    assert "new required field(s) gate" in refused.stderr
    assert "--compatibility none" in refused.stderr
    forced = in_process("schemas", "set", "1", str(stricter), "--compatibility", "none", env=env)
    assert '"version": 2' in forced.stdout, forced.stderr
    lines = in_process("schemas", "versions", "1", env=env).stdout.splitlines()
    assert [line.count('"current":true') for line in lines] == [0, 1]
    assert '"version": 1' in in_process("schemas", "show", "1", "--version", "1", env=env).stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad_file = in_process("schemas", "set", "1", str(broken), env=env)
    assert bad_file.returncode == 2
    assert "FILE" in bad_file.stderr
    assert "broken.json" in bad_file.stderr
    invalid = tmp_path / "invalid.json"
    invalid.write_text('{"type": "objekt"}')
    assert (
        "not valid JSON Schema" in in_process("schemas", "set", "1", str(invalid), env=env).stderr
    )
    assert in_process("schemas", "delete", "1", env=env).returncode == 0
    missing = in_process("schemas", "show", "1", env=env)
    assert missing.returncode == 1
    assert "enforces no schema" in missing.stderr
    assert "Traceback" not in missing.stderr + bad_file.stderr + refused.stderr
    assert "does not exist" in in_process("schemas", "show", "7", env=env).stderr


def test_retention_commands(tmp_path: Path) -> None:
    env = {"LATAM_DATA_DIR": str(tmp_path)}
    assert in_process("migrate", env=env).returncode == 0
    assert in_process("topics", "create", "flights", env=env).returncode == 0
    kept = in_process("topics", "retention", "1", "2592000", env=env)
    assert kept.stdout.strip() == '{"id":1,"retention_seconds":2592000}', kept.stderr
    assert (
        '"retention_seconds":null'
        in in_process("topics", "retention", "1", "forever", env=env).stdout
    )
    bad = in_process("topics", "retention", "1", "a month", env=env)
    assert bad.returncode == 2
    assert "SECONDS" in bad.stderr
    small = in_process("topics", "retention", "1", "5", env=env)
    assert small.returncode == 1
    assert "retention_seconds must be" in small.stderr
    assert in_process("topics", "retention", "9", "60", env=env).returncode == 1
    expired = in_process("retention", env=env)
    assert expired.stdout.strip() == "deleted 0 expired messages", expired.stderr
