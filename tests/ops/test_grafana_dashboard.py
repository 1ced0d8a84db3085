"""The Grafana dashboard and the Prometheus rules match what latam really exports.

(a) the dashboard loads, every panel has a datasource and a query, and every query
    filters by the ``env`` and ``instance`` template variables;
(b) every metric a panel (or a rule) queries is exported by a live ``latam serve``;
    names of recording rules resolve to the metrics their expressions use;
(c) every alert carries severity, summary, description and a runbook link whose anchor
    is a real section of docs/runbooks.md.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import LatamProcess, free_port, latam_env

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "latam.json"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_URL = "https://github.com/latam-data/latam/blob/main/docs/runbooks.md#"

# Series Prometheus itself creates: scrape health and alert state.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENTIFIER = re.compile(r"(?<![\w:.$])[a-zA-Z_:][\w:]*")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
OFFSET = re.compile(r"\boffset\s+-?\w+")


# --------------------------------------------------------------------------- PromQL


def _mask(expr: str) -> str:
    """The expression with string contents blanked, positions unchanged."""
    return STRING.sub(lambda m: m.group()[0] + " " * (len(m.group()) - 2) + m.group()[-1], expr)


def _spans(masked: str) -> list[tuple[int, int]]:
    """Regions that hold no metric names: label matchers, ranges, grouping clauses."""
    spans = [m.span() for m in re.finditer(r"\{[^}]*\}|\[[^\]]*\]", masked)]
    spans += [m.span() for m in GROUPING.finditer(masked)]
    return spans + [m.span() for m in OFFSET.finditer(masked)]


def selectors(expr: str) -> list[tuple[str, str]]:
    """Each vector selector of ``expr`` as (metric name, label matchers text or "")."""
    masked = _mask(expr)
    spans = _spans(masked)
    ungrouped = GROUPING.sub(lambda m: " " * len(m.group()), masked)  # "sum by (x) (" -> "sum ("
    found = []
    for match in IDENTIFIER.finditer(masked):
        start, end = match.span()
        if any(a <= start < b for a, b in spans) or match.group() in KEYWORDS:
            continue
        rest = ungrouped[end:].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        matchers = ""
        if rest.startswith("{"):
            brace = masked.index("{", end)
            matchers = expr[brace : masked.index("}", brace) + 1]
        found.append((match.group(), matchers))
    return found


def metric_names(expr: str) -> set[str]:
    return {name for name, _ in selectors(expr)}


def load_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


RULES = load_rules()
RECORDED = {rule["record"]: rule["expr"] for rule in RULES if "record" in rule}
ALERTS = [rule for rule in RULES if "alert" in rule]


def source_metrics(expr: str) -> set[str]:
    """Metric names ``expr`` reads, with recording rules replaced by their sources."""
    names: set[str] = set()
    for name in metric_names(expr):
        names |= source_metrics(RECORDED[name]) if name in RECORDED else {name}
    return names


def test_selector_parser_sees_metrics_not_labels_functions_or_ranges() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{env=~"$env", le="0.3"}'
        "[$__rate_interval]))) / on (job) group_left b_total offset 1d > bool 1e3"
    )
    assert selectors(expr) == [("a_bucket", '{env=~"$env", le="0.3"}'), ("b_total", "")]


# --------------------------------------------------------------------------- (a)


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def query_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in load_dashboard()["panels"]:
        panels.extend(panel.get("panels", []))
        if panel["type"] != "row":
            panels.append(panel)
    return panels


def dashboard_exprs() -> list[Any]:
    """Every panel query, as a pytest parameter named after its panel and refId."""
    return [
        pytest.param(target["expr"], id=f"{panel['title']}/{target['refId']}")
        for panel in query_panels()
        for target in panel["targets"]
    ]


def test_dashboard_loads_with_template_variables() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 38
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "env", "instance"} <= variables.keys()
    assert variables["datasource"]["type"] == "datasource"
    for name in ("env", "instance"):
        assert variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"


@pytest.mark.parametrize("panel", query_panels(), ids=lambda p: p["title"])
def test_every_panel_has_datasource_and_query(panel: dict[str, Any]) -> None:
    assert panel["datasource"]["uid"] == "${datasource}"
    assert panel["targets"], "panel without a query"
    for target in panel["targets"]:
        assert target["expr"].strip()
        assert target["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_every_query_filters_by_env_and_instance(expr: str) -> None:
    found = selectors(expr)
    assert found, "no metric in query"
    for name, matchers in found:
        assert 'env=~"$env"' in matchers, f"{name} is not filtered by $env"
        assert 'instance=~"$instance"' in matchers, f"{name} is not filtered by $instance"


def test_dashboard_covers_every_row() -> None:
    rows = {p["title"] for p in load_dashboard()["panels"] if p["type"] == "row"}
    expected = {"Traffic", "Errors", "Latency", "Freshness", "Backlog", "Dead letters"}
    assert expected | {"SLO (28 days)", "Dependencies"} <= rows


# --------------------------------------------------------------------------- (b)


def _create_topic(client: httpx.Client) -> int:
    response = client.post("/v1/topics", json={"name": f"ops-{uuid.uuid4().hex}"})
    assert response.status_code == 201, response.text
    topic_id: int = response.json()["id"]
    return topic_id


def _publish(client: httpx.Client, topic_id: int, message_id: str) -> None:
    body = {"messages": [{"id": message_id, "data": {"k": 1}}]}
    response = client.post(f"/v1/topics/{topic_id}/messages", json=body)
    assert response.status_code == 202, response.text


def _wait_stored(client: httpx.Client, topic_id: int, message_id: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = client.get(f"/v1/topics/{topic_id}/messages")
        if response.status_code == 200 and any(
            item.get("id") == message_id for item in response.json()["data"]
        ):
            return
        time.sleep(0.2)
    pytest.fail(f"message {message_id} was not stored within 20 s")


def exported_names(exposition: str) -> set[str]:
    """Metric names in a text exposition: samples and ``# HELP``/``# TYPE`` lines."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def is_exported(name: str, exported: set[str]) -> bool:
    if name in exported or name in PROMETHEUS_SERIES:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in exported for s in HISTOGRAM_SUFFIXES)


@pytest.fixture(scope="module")
def exported(live_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Names exported after a little real traffic: a topic, a message, a re-publish."""
    with httpx.Client(base_url=live_server_url, timeout=10) as client:
        topic_id = _create_topic(client)
        message_id = f"ops-{uuid.uuid4().hex}"
        _publish(client, topic_id, message_id)
        _wait_stored(client, topic_id, message_id)
        _publish(client, topic_id, message_id)  # a duplicate for the worker to skip
        client.get("/v1/topics/0/messages")  # a 4xx
        deadline = time.monotonic() + 10
        while True:
            names = exported_names(client.get("/metrics").text)
            if "latam_messages_duplicates_total" in names or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return names | canary_names(live_server_url, tmp_path_factory.mktemp("canary"))


def canary_names(base: str, data_dir: Path) -> set[str]:
    """The ``latam_canary_*`` names a real ``latam canary`` against ``base`` exports once a
    round succeeded (only those: its exposition lists every family latam declares)."""
    port = free_port()
    args = ["canary", "--url", base, "--interval", "0.2", "--metrics-port", str(port)]
    canary = LatamProcess(args, latam_env(data_dir), data_dir / "canary.log").start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                text = ""
            if re.search(r'latam_canary_rounds_total\{[^}]*result="ok"[^}]*\} [1-9]', text):
                return {n for n in exported_names(text) if n.startswith("latam_canary_")}
            time.sleep(0.2)
        pytest.fail(f"the canary had no successful round in 30 s:\n{canary.log()[-2000:]}")
    finally:
        canary.terminate()


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_dashboard_metrics_are_exported(expr: str, exported: set[str]) -> None:
    missing = sorted(n for n in source_metrics(expr) if not is_exported(n, exported))
    assert not missing, f"not exported by latam serve: {missing}"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.get("record") or r["alert"])
def test_rule_metrics_are_exported(rule: dict[str, Any], exported: set[str]) -> None:
    missing = sorted(n for n in source_metrics(rule["expr"]) if not is_exported(n, exported))
    assert not missing, f"not exported by latam serve: {missing}"


# --------------------------------------------------------------------------- (c)


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a Markdown document."""
    anchors: set[str] = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        match = None if in_fence else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        anchor, n = base, 0
        while anchor in anchors:
            n += 1
            anchor = f"{base}-{n}"
        anchors.add(anchor)
    return anchors


def test_anchor_rules_match_github() -> None:
    markdown = "# Runbooks\n## LatamStoreDown\n```\n# not a heading\n```\n## `a` b: c\n## A b c"
    assert github_anchors(markdown) == {"runbooks", "latamstoredown", "a-b-c", "a-b-c-1"}


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: f"{a['alert']}-{a['labels']['severity']}")
def test_alert_has_annotations_and_runbook(alert: dict[str, Any]) -> None:
    # A person now, a person this week; the watchdog reaches no person (a dead-man's switch).
    allowed = {"none"} if alert["alert"] == "LatamWatchdog" else {"page", "ticket"}
    assert alert["labels"]["severity"] in allowed
    annotations = alert["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"missing {key}"
    url = annotations["runbook_url"]
    assert url.startswith(RUNBOOK_URL), url
    anchor = url.removeprefix(RUNBOOK_URL)
    assert anchor in github_anchors(RUNBOOKS.read_text()), f"no section #{anchor} in runbooks.md"


def test_alert_rules_use_only_defined_recordings() -> None:
    for alert in ALERTS:
        for name in metric_names(alert["expr"]):
            assert ":" not in name or name in RECORDED, f"{alert['alert']}: unknown {name}"
