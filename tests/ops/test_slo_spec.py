"""One SLO source (deploy/slo/slos.yaml): every generated file is fresh, and every
Prometheus alert has a cloud twin with the same name, severity, threshold, duration and
runbook, whose PromQL parses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import slo  # noqa: E402

SPEC = slo.load()
CLOUD = json.loads(slo.CLOUD.read_text())
POLICIES = {p["key"]: p for p in CLOUD["policies"]}
RULES = [
    (path.name, rule)
    for path in sorted(slo.RULES_DIR.glob("*.yml"))
    for rule in slo.load_rules(path)
]
COMPARISON = re.compile(r"(?:>=|<=|==|!=|>|<)\s*\(?\s*([0-9.]+)(?:\s*([*/])\s*([0-9.]+))?")


def thresholds(expr: str) -> list[float]:
    """The numbers each comparison of an expression tests against (14.4 * 0.001 -> 0.0144)."""
    found = []
    for match in COMPARISON.finditer(expr):
        value = float(match.group(1))
        if match.group(2) == "*":
            value *= float(match.group(3))
        elif match.group(2) == "/":
            value /= float(match.group(3))
        found.append(round(value, 9))
    return sorted(found)


def test_every_generated_file_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/slo.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "rule", [r for _, r in RULES], ids=lambda r: f"{r['alert']}-{r['labels']['severity']}"
)
def test_every_alert_has_a_cloud_twin(rule: dict[str, Any]) -> None:
    name, severity = rule["alert"], rule["labels"]["severity"]
    twin = POLICIES.get(f"{name}-{severity}")
    spec = SPEC.raw["cloud_twins"].get(name, {})
    if twin is None:
        reason = spec.get(severity, spec.get("all", {}))
        assert isinstance(reason, dict), f"{name} ({severity}) has no twin"
        assert reason.get("none"), f"{name} ({severity}) has no twin and no reason"
        return
    assert twin["alert"] == name
    assert twin["severity"] == severity
    assert twin["runbook"] == rule["annotations"]["runbook_url"]
    assert twin["duration"] == (f"{slo.seconds(rule['for'])}s" if rule.get("for") else "0s")
    if "native" in twin:
        assert thresholds(rule["expr"])[-1] == twin["native"]["threshold"] or (
            name == "LatamTargetDown"
        ), f"{name}: the Google metric's threshold differs from the rule's"
        return
    query = twin["promql"]
    assert "__SERVICES__" in query, f"{name}: the twin is not restricted to this environment"
    if name in {s.alert for s in SPEC.slos}:
        # The cloud inlines what the rules record: the same burn thresholds and minimum.
        assert thresholds(query) == thresholds(rule["expr"])
    elif spec.get(severity) == "promql":
        assert query == slo.inject_services(rule["expr"].strip())
    else:
        assert thresholds(query) == thresholds(rule["expr"])


def test_no_cloud_twin_without_a_rule() -> None:
    fired = {(r["alert"], r["labels"]["severity"]) for _, r in RULES}
    assert {(p["alert"], p["severity"]) for p in CLOUD["policies"]} <= fired


def test_slo_burn_twins_have_both_windows_of_every_tier() -> None:
    for objective in SPEC.slos:
        for tier in SPEC.tiers:
            query = POLICIES[f"{objective.alert}-{tier['severity']}"]["promql"]
            assert f"[{tier['long']}]" in query
            assert f"[{tier['short']}]" in query
            assert f">= {SPEC.min_events}" in query


def test_injection_restricts_every_latam_selector() -> None:
    expr = 'sum(rate(latam_a_total[5m])) / sum(latam_b{x="latam_c"}) and job:latam_d:ratio'
    out = slo.inject_services(expr)
    assert 'latam_a_total{namespace=~"__SERVICES__"}[5m]' in out
    assert 'latam_b{namespace=~"__SERVICES__", x="latam_c"}' in out
    assert "job:latam_d:ratio" in out  # a recorded name is not a selector of the cloud


def test_cloud_promql_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (scripts/ci/promtool.sh installs it)")
        pytest.skip("promtool is not installed")
    rules = [
        {"alert": p["key"].replace("-", "_"), "expr": p["promql"].replace("__SERVICES__", "a|b")}
        for p in CLOUD["policies"]
        if "promql" in p
    ]
    catalog = json.loads(slo.CATALOG.read_text())
    rules += [
        {"record": f"status_{i}", "expr": s["bad_ratio_query"].replace("$window", "28d")}
        for i, s in enumerate(catalog["slos"])
    ]
    path = tmp_path / "cloud.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "cloud", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["slos"][0].update(objective=1.5), "objective must be in"),
        (lambda s: s["burn_tiers"][0].update(short="2h"), "short window must be shorter"),
        (lambda s: s["burn_tiers"][0].update(long="1w"), "is not a duration"),
        (lambda s: s["cloud_twins"].pop("LatamStoreDown"), "LatamStoreDown"),
    ],
)
def test_a_broken_spec_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, message: str
) -> None:
    raw = yaml.safe_load(slo.SPEC.read_text())
    edit(raw)
    path = tmp_path / "slos.yaml"
    path.write_text(yaml.safe_dump(raw))

    def generate() -> None:
        slo.cloud(slo.load(path))

    with pytest.raises(SystemExit, match=message):
        generate()
