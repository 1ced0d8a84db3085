"""The README stays true: every setting is in its configuration table."""

from __future__ import annotations

from pathlib import Path

from latam.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"LATAM_{name.upper()}"
        for name in Settings.model_fields
        if f"`LATAM_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_readme_shows_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme
    assert "make test" in readme
