"""The Grafana dashboard and the Prometheus rules match what latam really exports.

(a) the dashboard loads with its template variables; every panel has a datasource and a
    query, every query filters by ``env`` and ``system`` (and per-topic series by
    ``topic``); the SLO row comes first, then the rest, without overlaps; the top-k and
    USE panels are there; the latency and freshness histograms show exemplars, and their
    panels link to logs and traces;
(b) every metric a panel, a template variable or a rule queries is exported by a live
    ``latam serve`` (Cloud Monitoring metrics excepted, each with its reason); names of
    recording rules resolve to the metrics their expressions use;
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
# Google Cloud metrics, read through Managed Service for Prometheus (Cloud Monitoring name
# "a.googleapis.com/b/c" becomes "a_googleapis_com:b_c"). Google exports them, so no latam
# process does; they carry no env or system label, so panels select them by the resource
# names infra/modules/latam gives (<system>-<env>-...), and show "No data" locally.
CLOUD_METRICS = {
    "run_googleapis_com:container_instance_count": "Cloud Run instances by state",
    "pubsub_googleapis_com:subscription_num_undelivered_messages": (
        "Pub/Sub backlog: latam_broker_backlog_messages is absent on Pub/Sub"
    ),
    "pubsub_googleapis_com:subscription_oldest_unacked_message_age": (
        "Pub/Sub backlog age: latam_broker_oldest_unacked_age_seconds is absent on Pub/Sub"
    ),
}
SLO_ROW = "SLO (28 days)"
TOP_ROW = "Top topics and systems"
USE_ROW = "Resources (USE)"
# Series labelled by topic: a panel that reads them follows the topic variable.
TOPIC_SERIES = {
    "latam_messages_published_total",
    "latam_messages_stored_total",
    "latam_messages_duplicates_total",
    "latam_retention_deleted_total",
}
# Histograms whose observations carry the trace id as an exemplar.
EXEMPLAR_HISTOGRAMS = {
    "latam_http_request_duration_seconds_bucket",
    "latam_message_freshness_seconds_bucket",
}
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


def rows() -> dict[str, list[dict[str, Any]]]:
    """Each row's title with the panels that follow it, up to the next row."""
    found: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for panel in load_dashboard()["panels"]:
        if panel["type"] == "row":
            current = found[panel["title"]] = list(panel.get("panels", []))
        else:
            current.append(panel)
    return found


def dashboard_exprs() -> list[Any]:
    """Every panel query, as a pytest parameter named after its panel and refId."""
    return [
        pytest.param(target["expr"], id=f"{panel['title']}/{target['refId']}")
        for panel in query_panels()
        for target in panel["targets"]
    ]


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in load_dashboard()["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def test_dashboard_loads_with_template_variables() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 38
    found = variables()
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    for name in ("env", "system", "instance", "topic"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == "${datasource}"
        assert re.fullmatch(
            rf"label_values\(latam_\w+(\{{[^}}]*\}})?, {name}\)", variable_query(variable)
        )
        assert variable["multi"]
        assert variable["includeAll"]
        assert variable["allValue"] == ".*"
    for name in ("system", "topic"):  # narrowed by the environment chosen
        assert 'env=~"$env"' in variable_query(found[name])
    # Link targets: the Cloud console by default, changeable without editing the board.
    assert found["project"]["type"] == "textbox"
    for name, host in (("logs_url", "/logs/"), ("traces_url", "/traces/")):
        assert found[name]["type"] in {"textbox", "constant"}
        assert found[name]["query"].startswith("https://console.cloud.google.com")
        assert host in found[name]["query"]


@pytest.mark.parametrize("panel", query_panels(), ids=lambda p: p["title"])
def test_every_panel_has_datasource_and_query(panel: dict[str, Any]) -> None:
    assert panel["datasource"]["uid"] == "${datasource}"
    assert panel["targets"], "panel without a query"
    for target in panel["targets"]:
        assert target["expr"].strip()
        # A target without a datasource uses its panel's.
        assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}"


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_every_query_filters_by_env_and_system(expr: str) -> None:
    found = selectors(expr)
    assert found, "no metric in query"
    for name, matchers in found:
        if name in CLOUD_METRICS:  # no env/system labels: in the resource names
            assert "$env" in matchers, f"{name} is not filtered by $env"
            assert "$system" in matchers, f"{name} is not filtered by $system"
            continue
        assert 'env=~"$env"' in matchers, f"{name} is not filtered by $env"
        assert 'system=~"$system"' in matchers, f"{name} is not filtered by $system"
        if name in TOPIC_SERIES:
            assert 'topic=~"$topic"' in matchers, f"{name} is not filtered by $topic"


def test_selector_check_sees_a_missing_filter() -> None:
    [(_, matchers)] = selectors('rate(latam_x_total{env=~"$env", topic=~"$topic"}[5m])')
    assert 'system=~"$system"' not in matchers


def test_slo_row_comes_first_and_the_rest_below() -> None:
    panels = load_dashboard()["panels"]
    first = panels[0]
    assert (first["type"], first["title"], first["gridPos"]["y"]) == ("row", SLO_ROW, 0)
    slo = rows()[SLO_ROW]
    assert slo, "the SLO row is empty"
    assert panels[1 : 1 + len(slo)] == slo  # contiguous, right after their row
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in [first, *slo])
    assert all(p["gridPos"]["y"] >= 1 for p in slo)
    assert all(p["gridPos"]["y"] >= bottom for p in panels[1 + len(slo) :])


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
    ids = [panel["id"] for panel in load_dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_covers_every_row() -> None:
    expected = {"Traffic", "Errors", "Latency", "Freshness", "Backlog", "Dead letters"}
    assert expected | {SLO_ROW, TOP_ROW, USE_ROW, "Dependencies"} <= rows().keys()


def _names(panel: dict[str, Any]) -> set[str]:
    return {name for target in panel["targets"] for name in metric_names(target["expr"])}


def test_top_k_panels_rank_topics_and_systems() -> None:
    top = rows()[TOP_ROW]
    by_topic = [p for p in top if _names(p) & TOPIC_SERIES]
    assert len(by_topic) >= 3
    assert {"latam_messages_stored_total"} <= set().union(*map(_names, by_topic))
    for panel in top:
        for target in panel["targets"]:
            assert target["expr"].startswith("topk(10, "), panel["title"]
    ranked = set().union(*map(_names, top))
    assert {"latam_messages_dead_lettered_total", "latam_message_freshness_seconds_bucket"} <= (
        ranked
    )


def test_use_row_shows_cpu_memory_pool_instances_and_pubsub_backlog() -> None:
    use = rows()[USE_ROW]
    names = set().union(*map(_names, use))
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "latam_db_pool_connections",
        "latam_db_pool_waiting",
        *CLOUD_METRICS,
    } <= names
    cpu = next(p for p in use if "process_cpu_seconds_total" in _names(p))
    assert "rate(process_cpu_seconds_total" in cpu["targets"][0]["expr"]
    for panel in query_panels():
        if _names(panel) & CLOUD_METRICS.keys():
            assert '"No data" locally' in panel["description"], panel["title"]


def _exemplar_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Range queries of a quantile over a histogram that carries exemplars."""
    return [
        (panel, target)
        for panel in query_panels()
        for target in panel["targets"]
        if "histogram_quantile(" in target["expr"]
        and metric_names(target["expr"]) & EXEMPLAR_HISTOGRAMS
        and target.get("range", True)
        and panel not in rows()[SLO_ROW]
    ]


def test_latency_and_freshness_quantiles_show_exemplars() -> None:
    found = _exemplar_targets()
    assert {n for _, t in found for n in metric_names(t["expr"])} >= EXEMPLAR_HISTOGRAMS
    for panel, target in found:
        assert target.get("exemplar") is True, f"{panel['title']}/{target['refId']}"
        [override] = [
            o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "trace_id"
        ]
        [links] = [p["value"] for p in override["properties"] if p["id"] == "links"]
        assert any("${__value.raw}" in link["url"] for link in links)
        assert all(link["url"].startswith("${traces_url}") for link in links)


def test_latency_freshness_and_error_panels_link_to_logs_and_traces() -> None:
    found = rows()
    linked = found["Errors"] + found["Latency"] + found["Freshness"]
    linked += [panel for panel, _ in _exemplar_targets()]
    for panel in linked:
        urls = [link["url"] for link in panel["fieldConfig"]["defaults"].get("links", [])]
        assert any(url.startswith("${logs_url}") for url in urls), panel["title"]
        assert all("${project}" in url for url in urls), panel["title"]
    for panel in found["Latency"] + found["Freshness"]:
        urls = [link["url"] for link in panel["fieldConfig"]["defaults"]["links"]]
        assert any(url.startswith("${traces_url}") for url in urls), panel["title"]


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
    if name in exported or name in PROMETHEUS_SERIES or name in CLOUD_METRICS:
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


@pytest.mark.parametrize(
    "variable",
    [v for v in variables().values() if v["type"] == "query"],
    ids=lambda v: v["name"],
)
def test_template_variable_metrics_are_exported(
    variable: dict[str, Any], exported: set[str]
) -> None:
    [selector] = re.findall(r"label_values\((.*), \w+\)", variable_query(variable))
    missing = sorted(n for n in metric_names(selector) if not is_exported(n, exported))
    assert not missing, f"not exported by latam serve: {missing}"


def test_pool_and_process_metrics_are_exported(exported: set[str]) -> None:
    """The USE row's own series, from a ``latam serve`` (several processes, one /metrics)."""
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "latam_db_pool_connections",
        "latam_db_pool_waiting",
        "latam_db_pool_max_connections",
    ):
        assert name in exported, name


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
