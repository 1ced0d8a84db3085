"""Every alert the rules can fire has a routing case (deploy/alertmanager/routing-cases.txt,
checked against the Alertmanager configuration by amtool in scripts/ci/promtool.sh), so a
new alert or severity cannot ship without someone deciding who hears it."""

from __future__ import annotations

from pathlib import Path

from tests.ops.test_grafana_dashboard import ALERTS

CASES = Path(__file__).resolve().parents[2] / "deploy/alertmanager/routing-cases.txt"
RECEIVER_OF_SEVERITY = {"page": "pager", "ticket": "ticket", "none": "heartbeat"}


def routing_cases() -> set[tuple[str, str, str]]:
    """(receiver, alertname, severity) of every case."""
    found = set()
    for line in CASES.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        receiver, *labels = line.split()
        pairs = dict(label.split("=", 1) for label in labels)
        found.add((receiver, pairs.get("alertname", ""), pairs.get("severity", "")))
    return found


def test_every_alert_and_severity_has_a_routing_case() -> None:
    cases = routing_cases()
    fired = {(a["alert"], a["labels"]["severity"]) for a in ALERTS}
    missing = [
        f"{RECEIVER_OF_SEVERITY[severity]} alertname={name} severity={severity}"
        for name, severity in sorted(fired)
        if (RECEIVER_OF_SEVERITY[severity], name, severity) not in cases
    ]
    assert not missing, "add to routing-cases.txt:\n" + "\n".join(missing)
