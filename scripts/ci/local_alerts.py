"""A healthy `make run` + `make monitor` fires no alert: the rules, evaluated on what the
local setup really exposes.

Starts `latam serve` (the embedded defaults, as `make run`) on a free loopback port, gives
it light normal traffic, and samples its /metrics. Those samples become the input series
of a promtool rule test, with the `env` label and the `up` series of every target the local
Prometheus configuration scrapes (deploy/prometheus/prometheus.yml: up for the address
`make run` serves, down for any other), extended to 15 minutes at the observed rates; the
test expects no alert at 10 minutes, apart from LatamWatchdog, which always fires.

    .venv/bin/python scripts/ci/local_alerts.py    # needs promtool (scripts/ci/promtool.sh)

Exits with promtool's status. Bounded: about 40 seconds, then everything it started stops.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
MAKE_RUN_TARGET = "127.0.0.1:8000"  # `make run`: latam serve on the default host and port
SAMPLES = 15  # one every 2 s while traffic flows
STEPS = 61  # 15 minutes at the 15 s scrape interval of the local configuration
COUNTER = re.compile(r"(_total|_count|_sum|_bucket|_created)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_serve(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATAM_")}
    env.update({"LATAM_DATA_DIR": str(data_dir), "LATAM_PORT": str(port)})
    log = (data_dir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "latam", "serve"], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    raise SystemExit(f"latam serve did not become ready; log in {data_dir / 'serve.log'}")


def traffic_and_samples(base: str) -> list[dict[str, float]]:
    """Publish and read a little every 2 s; one /metrics sample per round."""
    samples: list[dict[str, float]] = []
    with httpx.Client(base_url=base, timeout=10) as client:
        topic = client.post("/v1/topics", json={"name": f"local-alerts-{os.getpid()}"})
        topic.raise_for_status()
        topic_id = topic.json()["id"]
        for round_ in range(SAMPLES):
            batch = [{"id": f"m-{round_}-{i}", "data": {"i": i}} for i in range(10)]
            client.post(f"/v1/topics/{topic_id}/messages", json={"messages": batch})
            client.get(f"/v1/topics/{topic_id}/messages", params={"limit": 50})
            client.get("/v1/topics")
            samples.append(scrape(client))
            time.sleep(2)
    return samples


def scrape(client: httpx.Client) -> dict[str, float]:
    series: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            labels = {**sample.labels, "job": "latam", "instance": MAKE_RUN_TARGET}
            labels["env"] = "local"
            inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            series[f"{sample.name}{{{inner}}}"] = float(sample.value)
    return series


def extend(samples: list[dict[str, float]]) -> dict[str, list[float]]:
    """Each series over STEPS points: counters go on at their observed mean step, gauges
    keep their last value; a series that appeared late starts at its first value."""
    history: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        for name, value in sample.items():
            history[name].append(value)
    extended: dict[str, list[float]] = {}
    for name, values in history.items():
        metric = name.split("{", 1)[0]
        step = (values[-1] - values[0]) / max(len(values) - 1, 1) if COUNTER.search(metric) else 0
        points = [values[0]] * (len(samples) - len(values)) + values
        while len(points) < STEPS:
            points.append(points[-1] + step)
        extended[name] = points[:STEPS]
    for labels, value in scrape_targets():
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        extended[f"up{{{inner}}}"] = [value] * STEPS
    return extended


def scrape_targets() -> list[tuple[dict[str, str], float]]:
    """`up` for every target the local Prometheus configuration scrapes: 1 for the address
    `make run` serves, 0 for any other (nothing listens there in this setup)."""
    found = []
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for job in config["scrape_configs"]:
        groups = list(job.get("static_configs", []))
        for sd in job.get("file_sd_configs", []):
            for pattern in sd.get("files", []):
                for path in PROMETHEUS_CONFIG.parent.glob(pattern):
                    groups.extend(yaml.safe_load(path.read_text()) or [])
        for group in groups:
            for target in group.get("targets", []):
                labels = {**group.get("labels", {}), "job": job["job_name"], "instance": target}
                found.append((labels, 1.0 if target == MAKE_RUN_TARGET else 0.0))
    return found


def rule_test(series: dict[str, list[float]]) -> dict[str, Any]:
    alerts: dict[str, dict[str, Any]] = {}
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts.setdefault(rule["alert"], rule)
    checks = []
    for name, rule in sorted(alerts.items()):
        expected: list[dict[str, Any]] = []
        if name == "LatamWatchdog":
            expected = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]
        checks.append({"eval_time": "10m", "alertname": name, "exp_alerts": expected})
    return {
        "rule_files": [str(path) for path in RULES],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "a healthy make run, as make monitor scrapes it",
                "interval": "15s",
                "input_series": [
                    {"series": name, "values": " ".join(f"{v:g}" for v in values)}
                    for name, values in sorted(series.items())
                ],
                "alert_rule_test": checks,
            }
        ],
    }


def main() -> int:
    promtool = shutil.which("promtool")
    if promtool is None:
        print("FAIL: promtool not found (scripts/ci/promtool.sh installs it)")
        return 1
    with tempfile.TemporaryDirectory(prefix="latam-local-alerts-") as tmp:
        data_dir = Path(tmp)
        proc, base = start_serve(data_dir)
        try:
            samples = traffic_and_samples(base)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        series = extend(samples)
        test_file = data_dir / "local-alerts-test.yml"
        test_file.write_text(yaml.safe_dump(rule_test(series), sort_keys=False))
        result = subprocess.run([promtool, "test", "rules", str(test_file)], check=False)
        print(f"{len(series)} series from {len(samples)} scrapes of a healthy latam serve")
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
