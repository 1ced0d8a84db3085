#!/usr/bin/env python3
"""Bake a Cloud Run canary: judge it on the SLO metrics before it gets all the traffic.

Every ``--interval`` seconds for ``--minutes`` the script asks Cloud Monitoring's
Prometheus-compatible query API (Managed Service for Prometheus) for the canary revision's

* error ratio: 5xx responses / all responses (``latam_http_requests_total``),
* p99 latency of GET requests (``latam_http_request_duration_seconds``),
* and, for the worker, p99 freshness (``latam_message_freshness_seconds``),

over the window since the bake started (plus ``--lookback`` seconds, so the smoke test that
ran just before counts). Probe and scrape routes are left out, as in the SLOs.

A breach ends the bake at once. A signal with fewer samples than its minimum is not judged
while the bake runs; if it still has too few at the end the canary could not be proven
healthy, and that is a failure too unless ``--allow-no-data``.

Series are selected by the labels the Cloud Run Managed Prometheus sidecar adds:
``namespace`` (the Cloud Run service) and ``revision_name`` (the revision, from K_REVISION).

Exit status: 0 healthy; 1 breach, not enough data, or metrics unreadable; 2 bad usage.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

DEFAULT_ENDPOINT = (
    "https://monitoring.googleapis.com/v1/projects/{project}/location/global/prometheus"
)
PROBE_ROUTES = "/healthz|/readyz|/metrics"
CHECKS = ("errors", "latency", "freshness")
# Cloud Run service and revision names: lowercase letters, digits and hyphens. Anything
# else is refused so that a name can never change the meaning of a PromQL selector.
NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")


class MetricsError(Exception):
    """The query API did not answer with a usable result."""


@dataclass(frozen=True)
class Target:
    """Whose series are judged."""

    api_service: str
    revision: str
    worker_service: str | None = None
    worker_revision: str | None = None

    def api(self, extra: str = "") -> str:
        labels = [
            f'namespace="{self.api_service}"',
            f'revision_name="{self.revision}"',
            f'route!~"{PROBE_ROUTES}"',
        ]
        return "{" + ",".join([*labels, extra] if extra else labels) + "}"

    def worker(self) -> str:
        labels = [f'namespace="{self.worker_service}"']
        if self.worker_revision:
            labels.append(f'revision_name="{self.worker_revision}"')
        return "{" + ",".join(labels) + "}"


@dataclass(frozen=True)
class Limits:
    """Thresholds (a value above one is a breach) and the samples needed to judge."""

    max_error_ratio: float
    max_read_p99: float
    max_freshness_p99: float
    min_requests: int
    min_reads: int
    min_messages: int


@dataclass
class Reading:
    """One evaluation of the signals; None where the API had no series."""

    requests: float | None = None
    errors: float | None = None
    reads: float | None = None
    read_p99: float | None = None
    messages: float | None = None
    freshness_p99: float | None = None


@dataclass
class Verdict:
    breaches: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def queries(target: Target, window: str, checks: Sequence[str] = CHECKS) -> dict[str, str]:
    """The PromQL of the signals ``checks`` need, over ``window`` (a Prometheus duration)."""
    five_xx, get = 'status_class="5xx"', 'method="GET"'
    found: dict[str, str] = {}
    if "errors" in checks:
        requests = "latam_http_requests_total" + target.api()
        errors = "latam_http_requests_total" + target.api(five_xx)
        found["requests"] = f"sum(increase({requests}[{window}]))"
        found["errors"] = f"sum(increase({errors}[{window}]))"
    if "latency" in checks:
        reads = "latam_http_request_duration_seconds_count" + target.api(get)
        buckets = "latam_http_request_duration_seconds_bucket" + target.api(get)
        found["reads"] = f"sum(increase({reads}[{window}]))"
        found["read_p99"] = _p99(buckets, window)
    if "freshness" in checks:
        stored = "latam_message_freshness_seconds_count" + target.worker()
        buckets = "latam_message_freshness_seconds_bucket" + target.worker()
        found["messages"] = f"sum(increase({stored}[{window}]))"
        found["freshness_p99"] = _p99(buckets, window)
    return found


def _p99(buckets: str, window: str) -> str:
    return f"histogram_quantile(0.99, sum by (le) (increase({buckets}[{window}])))"


class Prometheus:
    """The instant-query endpoint of a Prometheus HTTP API."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def scalar(self, promql: str) -> float | None:
        """The value of a one-series result; None for no series or NaN (nothing observed)."""
        try:
            response = self._client.get("/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise MetricsError(f"query failed: {exc}") from exc
        if response.status_code != httpx.codes.OK:
            raise MetricsError(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            body = response.json()
            if body.get("status") != "success":
                raise MetricsError(f"query error: {response.text[:300]}")
            result = body["data"]["result"]
            value = float(result[0]["value"][1]) if result else math.nan
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise MetricsError(f"unexpected answer: {response.text[:300]}") from exc
        return None if math.isnan(value) else value


def read(prom: Prometheus, target: Target, window: str, checks: Sequence[str]) -> Reading:
    found = queries(target, window, checks)
    return Reading(**{signal: prom.scalar(promql) for signal, promql in found.items()})


def judge(reading: Reading, limits: Limits, checks: Sequence[str], window: str) -> Verdict:
    """Breaches of the signals that have enough samples; the names of those that do not."""
    verdict = Verdict()
    if "errors" in checks:
        total = reading.requests or 0.0
        if total < limits.min_requests:
            verdict.missing.append(f"{total:.0f} requests in {window} (need {limits.min_requests})")
        else:
            ratio = (reading.errors or 0.0) / total
            if ratio > limits.max_error_ratio:
                verdict.breaches.append(
                    f"error ratio {ratio:.3%} > {limits.max_error_ratio:.3%} "
                    f"({reading.errors or 0:.0f} of {total:.0f} requests were 5xx)"
                )
    if "latency" in checks:
        _judge_p99(
            verdict,
            "GET",
            reading.reads,
            reading.read_p99,
            limits.min_reads,
            limits.max_read_p99,
            window,
        )
    if "freshness" in checks:
        _judge_p99(
            verdict,
            "freshness",
            reading.messages,
            reading.freshness_p99,
            limits.min_messages,
            limits.max_freshness_p99,
            window,
        )
    return verdict


def _judge_p99(
    verdict: Verdict,
    what: str,
    count: float | None,
    p99: float | None,
    minimum: int,
    limit: float,
    window: str,
) -> None:
    samples = count or 0.0
    if samples < minimum or p99 is None:
        verdict.missing.append(f"{samples:.0f} {what} observations in {window} (need {minimum})")
    elif p99 > limit:
        verdict.breaches.append(
            f"{what} p99 {p99:.3f}s > {limit:.3f}s ({samples:.0f} observations)"
        )


def describe(reading: Reading) -> str:
    def num(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:.3f}{unit}" if unit else f"{value:.0f}"

    return (
        f"requests={num(reading.requests)} 5xx={num(reading.errors)} "
        f"GET={num(reading.reads)} p99(GET)={num(reading.read_p99, 's')} "
        f"messages={num(reading.messages)} p99(freshness)={num(reading.freshness_p99, 's')}"
    )


def summarize(path: str, target: Target, status: str, reading: Reading, notes: list[str]) -> None:
    """Append the verdict to the GitHub job summary."""
    lines = [
        f"### Canary bake of `{target.revision}`: {status}",
        "",
        f"`{describe(reading)}`",
        "",
        *[f"- {note}" for note in notes],
        "",
    ]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


def bake(
    args: argparse.Namespace,
    prom: Prometheus,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll until the deadline; 0 when the canary is healthy, 1 otherwise."""
    target = Target(args.api_service, args.revision, args.worker_service, args.worker_revision)
    limits = Limits(
        args.max_error_ratio,
        args.max_p99_seconds,
        args.max_freshness_seconds,
        args.min_requests,
        args.min_reads,
        args.min_messages,
    )
    start = clock()
    deadline = start + args.minutes * 60.0
    last: tuple[Reading, Verdict] | None = None
    unreadable = 0
    for poll in itertools.count(1):
        now = clock()
        window = f"{max(args.min_window, math.ceil(now - start + args.lookback))}s"
        try:
            reading = read(prom, target, window, args.checks)
        except MetricsError as exc:
            last, unreadable = None, unreadable + 1
            print(f"poll {poll}: metrics unavailable ({exc})", flush=True)
        else:
            last = (reading, judge(reading, limits, args.checks, window))
            print(f"poll {poll} [{window}]: {describe(reading)}", flush=True)
            if last[1].breaches:
                return _finish(args, target, "BREACH", reading, last[1].breaches)
        if now >= deadline:
            break
        sleep(min(args.interval, deadline - now))
    if last is None:
        notes = ["could not read the metrics at the end of the bake"]
        return _finish(args, target, "FAILED", Reading(), notes)
    return _conclude(args, target, *last, unreadable)


def _conclude(
    args: argparse.Namespace, target: Target, reading: Reading, verdict: Verdict, unreadable: int
) -> int:
    """The end of a bake without a breach: healthy, unless a signal had too little data."""
    if verdict.missing and not args.allow_no_data:
        notes = [f"NO DATA: {item}" for item in verdict.missing]
        notes.append(
            "the canary cannot be judged without traffic, and a bake without data is a "
            "failure: send traffic to it, lower the minimums, or pass --allow-no-data"
        )
        return _finish(args, target, "NO DATA", reading, notes)
    notes = [f"accepted without data (--allow-no-data): {item}" for item in verdict.missing]
    if unreadable:
        notes.append(f"{unreadable} poll(s) could not read the metrics")
    return _finish(args, target, "HEALTHY", reading, notes)


def _finish(
    args: argparse.Namespace, target: Target, status: str, reading: Reading, notes: list[str]
) -> int:
    print(f"canary {target.revision}: {status}", flush=True)
    for note in notes:
        print(f"  {note}", flush=True)
    if args.summary:
        summarize(args.summary, target, status, reading, notes)
    return 0 if status == "HEALTHY" else 1


def name(value: str) -> str:
    if not NAME.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Cloud Run service or revision name")
    return value


def check_list(value: str) -> tuple[str, ...]:
    found = tuple(item.strip() for item in value.split(",") if item.strip())
    unknown = sorted(set(found) - set(CHECKS))
    if not found or unknown:
        raise argparse.ArgumentTypeError(f"checks are a comma list of {', '.join(CHECKS)}")
    return found


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    where = parser.add_argument_group("what to judge")
    where.add_argument("--project", help="project whose Managed Prometheus data is queried")
    where.add_argument("--prometheus-url", help="query API root (default: Cloud Monitoring's)")
    where.add_argument(
        "--token-env",
        default="CANARY_BAKE_TOKEN",
        help="environment variable holding the bearer token (default: %(default)s)",
    )
    where.add_argument("--api-service", type=name, required=True, help="Cloud Run API service")
    where.add_argument("--revision", type=name, required=True, help="the canary revision")
    where.add_argument("--worker-service", type=name, help="Cloud Run worker service")
    where.add_argument("--worker-revision", type=name, help="only this worker revision")
    where.add_argument(
        "--checks",
        type=check_list,
        default=CHECKS,
        help="comma list of errors,latency,freshness (default: all)",
    )
    when = parser.add_argument_group("how long")
    when.add_argument("--minutes", type=float, default=10.0, help="bake duration (default: 10)")
    when.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
    when.add_argument(
        "--lookback",
        type=float,
        default=300.0,
        help="seconds before the bake included in the window (default: 300)",
    )
    when.add_argument(
        "--min-window",
        type=int,
        default=120,
        help="shortest window in seconds: at least two 30 s scrapes (default: 120)",
    )
    limits = parser.add_argument_group("thresholds (from the SLOs, see --help of each)")
    # 99.9 % availability leaves an error budget of 0.1 %; 14.4x is the burn rate of the
    # fast-burn page (2 % of a 30-day budget in one hour). A canary burning faster than that
    # would page if it took all the traffic: 14.4 x 0.001 = 1.44 %.
    limits.add_argument(
        "--max-error-ratio",
        type=float,
        default=14.4 * 0.001,
        help="largest 5xx ratio (default: 14.4 x 0.1 %% budget = 1.44 %%)",
    )
    limits.add_argument(
        "--max-p99-seconds",
        type=float,
        default=0.3,
        help="largest p99 of GET latency (read SLO: 99 %% under 0.3 s)",
    )
    limits.add_argument(
        "--max-freshness-seconds",
        type=float,
        default=60.0,
        help="largest p99 freshness (freshness SLO: 99 %% under 60 s)",
    )
    limits.add_argument(
        "--min-requests",
        type=int,
        default=100,
        help="requests needed to judge the error ratio (default: 100)",
    )
    limits.add_argument(
        "--min-reads",
        type=int,
        default=20,
        help="GET requests needed to judge latency (default: 20)",
    )
    limits.add_argument(
        "--min-messages",
        type=int,
        default=20,
        help="stored messages needed to judge freshness (default: 20)",
    )
    limits.add_argument(
        "--allow-no-data",
        action="store_true",
        help="accept a canary that had too little traffic to be judged",
    )
    parser.add_argument(
        "--summary",
        default=os.environ.get("GITHUB_STEP_SUMMARY", ""),
        help="markdown file the verdict is appended to ($GITHUB_STEP_SUMMARY)",
    )
    args = parser.parse_args(argv)
    if not args.prometheus_url:
        if not args.project:
            parser.error("give --project or --prometheus-url")
        args.prometheus_url = DEFAULT_ENDPOINT.format(project=args.project)
    if "freshness" in args.checks and not args.worker_service:
        parser.error("the freshness check needs --worker-service")
    if args.minutes < 0 or args.interval <= 0 or args.min_window < 1:
        parser.error("--minutes must be >= 0, --interval and --min-window positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.get(args.token_env, "")
    if not token and args.prometheus_url.startswith("https://"):
        print(f"error: ${args.token_env} holds no bearer token", file=sys.stderr)
        return 2
    prom = Prometheus(args.prometheus_url, token)
    try:
        return bake(args, prom)
    finally:
        prom.close()


if __name__ == "__main__":
    sys.exit(main())
