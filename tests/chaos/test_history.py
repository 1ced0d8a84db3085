"""The history checker (``tests/chaos/history.py``) with a fixed seed, once per broker and
once per store: hostile producers, shared ids, a tailing reader and kill -9 of the worker,
then every accepted message stored exactly once, in its own topic, and every malformed
one dead-lettered once with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.history import PAIRS, Run, execute

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("broker", "store"), PAIRS, ids=[f"{b}-{s}" for b, s in PAIRS])
def test_history_holds_under_chaos(broker: str, store: str, tmp_path: Path) -> None:
    report = execute(Run(seed=1, broker=broker, store=store, seconds=20), tmp_path)
    print(report.line())
    assert report.figures["kills"] >= 3
    assert report.figures["accepted"] > 500
    assert report.figures["malformed"] > 0
    assert report.problems == [], "\n".join(report.problems[:40])
