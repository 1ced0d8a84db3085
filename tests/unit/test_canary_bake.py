"""scripts/ci/canary_bake.py against a small local Prometheus query API.

The server answers each PromQL query by the signal it asks for, from a scenario the test
sets, and records the queries and the Authorization header it was sent.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ci" / "canary_bake.py"
HEALTHY = {
    "requests": 1000.0,
    "errors": 1.0,
    "reads": 400.0,
    "read_p99": 0.12,
    "messages": 300.0,
    "freshness_p99": 2.5,
}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("canary_bake", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["canary_bake"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


bake = _load()


def signal_of(promql: str) -> str:
    """Which signal a query of the script asks for."""
    if "latam_message_freshness_seconds" in promql:
        return "freshness_p99" if "histogram_quantile" in promql else "messages"
    if "latam_http_request_duration_seconds" in promql:
        return "read_p99" if "histogram_quantile" in promql else "reads"
    return "errors" if 'status_class="5xx"' in promql else "requests"


class FakePrometheus(BaseHTTPRequestHandler):
    scenario: ClassVar[dict[str, float | None]] = {}
    queries: ClassVar[list[str]] = []
    auth: ClassVar[list[str]] = []
    status: ClassVar[int] = 200
    fail_first: ClassVar[int] = 0  # answer this many queries with HTTP 503 first

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query).get("query", [""])[0]
        type(self).queries.append(query)
        type(self).auth.append(self.headers.get("Authorization", ""))
        status = 503 if len(self.queries) <= self.fail_first else self.status
        value = self.scenario.get(signal_of(query))
        result = [] if value is None else [{"metric": {}, "value": [1_700_000_000, str(value)]}]
        body: dict[str, Any] = {
            "status": "success",
            "data": {"resultType": "vector", "result": result},
        }
        if url.path != "/api/v1/query":
            body = {"status": "error", "error": "not found"}
        payload = json.dumps(body).encode()
        self.send_response(status if url.path == "/api/v1/query" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return


@pytest.fixture
def prometheus() -> Iterator[str]:
    FakePrometheus.scenario = dict(HEALTHY)
    FakePrometheus.queries = []
    FakePrometheus.auth = []
    FakePrometheus.status = 200
    FakePrometheus.fail_first = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run(url: str, *extra: str) -> int:
    return int(
        bake.main(
            [
                "--prometheus-url", url,
                "--api-service", "latam-staging-api",
                "--revision", "latam-staging-api-00042-abc",
                "--worker-service", "latam-staging-worker",
                "--minutes", "0.004",  # about 0.25 s
                "--interval", "0.05",
                "--summary", "",
                *extra,
            ]
        )
    )  # fmt: skip


def test_a_healthy_canary_passes_and_only_its_revision_is_queried(
    prometheus: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CANARY_BAKE_TOKEN", "test-token")
    assert run(prometheus) == 0
    assert "HEALTHY" in capsys.readouterr().out
    assert len(FakePrometheus.queries) >= 2 * 6  # several polls, six signals each
    api_queries = [q for q in FakePrometheus.queries if "latam_http" in q]
    assert all('revision_name="latam-staging-api-00042-abc"' in q for q in api_queries)
    assert all('namespace="latam-staging-api"' in q for q in api_queries)
    assert all('route!~"/healthz|/readyz|/metrics"' in q for q in api_queries)
    assert set(FakePrometheus.auth) == {"Bearer test-token"}


def test_an_error_ratio_over_the_burn_threshold_fails(
    prometheus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    FakePrometheus.scenario["errors"] = 20.0  # 2 % of 1000 > 1.44 %
    assert run(prometheus) == 1
    out = capsys.readouterr().out
    assert "BREACH" in out
    assert "error ratio 2.000% > 1.440%" in out


def test_a_slow_p99_fails(prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    FakePrometheus.scenario["read_p99"] = 0.45
    assert run(prometheus) == 1
    assert "GET p99 0.450s > 0.300s" in capsys.readouterr().out


def test_stale_freshness_fails(prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    FakePrometheus.scenario["freshness_p99"] = 75.0
    assert run(prometheus) == 1
    assert "freshness p99 75.000s > 60.000s" in capsys.readouterr().out


def test_thresholds_are_flags(prometheus: str) -> None:
    FakePrometheus.scenario["read_p99"] = 0.45
    assert run(prometheus, "--max-p99-seconds", "0.5") == 0


def test_no_data_fails_and_says_so(prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    FakePrometheus.scenario = {name: None for name in HEALTHY}
    assert run(prometheus) == 1
    out = capsys.readouterr().out
    assert "NO DATA" in out
    assert "0 requests" in out
    assert "--allow-no-data" in out


def test_too_little_traffic_is_no_data_even_with_errors_under_the_minimum(
    prometheus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    FakePrometheus.scenario.update(requests=10.0, errors=1.0)  # 10 % but only 10 requests
    assert run(prometheus) == 1
    assert "NO DATA: 10 requests" in capsys.readouterr().out
    assert run(prometheus, "--min-requests", "5") == 1  # now judged: a breach


def test_no_data_is_accepted_when_allowed(
    prometheus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    FakePrometheus.scenario = {name: None for name in HEALTHY}
    assert run(prometheus, "--allow-no-data") == 0
    assert "accepted without data" in capsys.readouterr().out


def test_unreadable_metrics_fail(prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    FakePrometheus.status = 500
    assert run(prometheus, "--allow-no-data") == 1
    assert "could not read the metrics" in capsys.readouterr().out


def test_a_poll_that_cannot_read_the_metrics_is_retried(
    prometheus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    FakePrometheus.fail_first = 1
    assert run(prometheus) == 0
    out = capsys.readouterr().out
    assert "poll 1: metrics unavailable (HTTP 503" in out
    assert "1 poll(s) could not read the metrics" in out


def test_checks_can_be_narrowed_to_the_worker(prometheus: str) -> None:
    FakePrometheus.scenario.update(requests=None, errors=None, reads=None, read_p99=None)
    assert run(prometheus, "--checks", "freshness", "--worker-revision", "latam-w-00007-x") == 0
    assert FakePrometheus.queries
    assert all("latam_message_freshness_seconds" in q for q in FakePrometheus.queries)
    assert all('revision_name="latam-w-00007-x"' in q for q in FakePrometheus.queries)


def test_the_verdict_goes_to_the_job_summary(prometheus: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    FakePrometheus.scenario["errors"] = 50.0
    assert run(prometheus, "--summary", str(summary)) == 1
    text = summary.read_text()
    assert "Canary bake of `latam-staging-api-00042-abc`: BREACH" in text


@pytest.mark.parametrize(
    "bad",
    [
        ["--revision", 'x"} or vector(1) #'],  # a name cannot change the selector
        ["--checks", "errors,uptime"],
        ["--interval", "0"],
    ],
)
def test_bad_arguments_are_refused(prometheus: str, bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(prometheus, *bad)
    assert exc.value.code == 2


def test_a_real_endpoint_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANARY_BAKE_TOKEN", raising=False)
    argv = ["--project", "p", "--api-service", "a", "--revision", "r", "--checks", "errors"]
    assert bake.main(argv) == 2
