"""The status page as one self-contained HTML document: inline CSS (allowed by its hash
in the page's Content-Security-Policy), inline SVG charts, no script, font or request
to anywhere. Every text from a snapshot is escaped.

Readable on a phone (one column) and on an operations-centre screen (type scales with
the width, the page reloads itself every 30 s); each state is a colour, a symbol and a
word, never colour alone.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from html import escape

from latam.status import Snapshot
from latam.status.canary import CanaryStatus, HourBucket
from latam.status.slos import PAGE_BURN_RATE, SloStatus

CSS = """
:root{color-scheme:light dark;--bg:#f8fafc;--fg:#0f172a;--muted:#475569;--card:#fff;
--line:#cbd5e1;--bar:#1d4ed8;--meter:#2563eb;--ok:#166534;--ok-bg:#dcfce7;--warn:#92400e;
--warn-bg:#fef3c7;--bad:#991b1b;--bad-bg:#fee2e2;--none:#334155;--none-bg:#e2e8f0}
@media (prefers-color-scheme:dark){:root{--bg:#0b1120;--fg:#e2e8f0;--muted:#94a3b8;
--card:#111827;--line:#334155;--bar:#60a5fa;--meter:#93c5fd;--ok:#86efac;--ok-bg:#14532d;
--warn:#fcd34d;--warn-bg:#78350f;--bad:#fca5a5;--bad-bg:#7f1d1d;--none:#cbd5e1;
--none-bg:#1e293b}}
*{box-sizing:border-box}
html{font-size:clamp(15px,0.55vw + 11px,28px)}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.45;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:110rem;margin:0 auto;padding:1rem}
h1{font-size:1.6rem;margin:0}h2{font-size:1.25rem;margin:1.5rem 0 .6rem}
h3{font-size:1.05rem;margin:0 0 .4rem}p{margin:.3rem 0}
.muted{color:var(--muted)}
.banner{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center;
justify-content:space-between;padding:1rem 1.2rem;border-radius:.6rem;border:2px solid}
.grid{display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(17rem,1fr))}
.card{background:var(--card);border:1px solid var(--line);border-radius:.6rem;padding:1rem;
border-top-width:.4rem}
.badge{display:inline-block;font-weight:700;padding:.1rem .6rem;border-radius:1rem}
.st-ok{color:var(--ok);background:var(--ok-bg);border-color:var(--ok)}
.st-warn{color:var(--warn);background:var(--warn-bg);border-color:var(--warn)}
.st-bad{color:var(--bad);background:var(--bad-bg);border-color:var(--bad)}
.st-none{color:var(--none);background:var(--none-bg);border-color:var(--none)}
.card.st-ok,.card.st-warn,.card.st-bad,.card.st-none{background:var(--card);color:var(--fg)}
dl{display:grid;grid-template-columns:auto auto;gap:.15rem 1rem;margin:.6rem 0 0}
dt{color:var(--muted)}dd{margin:0;font-variant-numeric:tabular-nums;text-align:right}
svg{display:block;width:100%;height:auto}
.meter-bg{fill:var(--line)}.meter{fill:var(--meter)}.meter-over{fill:var(--bad)}
.bar{fill:var(--bar)}.gap{fill:var(--bad)}.axis{stroke:var(--line);stroke-width:2}
.tick{fill:var(--muted);font-size:26px;font-family:inherit}.end{text-anchor:end}
figure{margin:0}figcaption{color:var(--muted);font-size:.9rem}
.canary{display:grid;gap:1rem 2rem;grid-template-columns:minmax(15rem,1fr) minmax(0,2.4fr)}
@media (max-width:48rem){.canary{grid-template-columns:1fr}}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin-top:.5rem}
th,td{padding:.15rem .7rem;border-bottom:1px solid var(--line);text-align:right}
details{margin-top:1rem}summary{cursor:pointer}
footer{margin:2rem 0 1rem;color:var(--muted);font-size:.9rem}
a{color:inherit}
"""
MINUS = "\u2212"
CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
    + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# state -> (CSS class, symbol, words)
SLO_LOOK = {
    "ok": ("st-ok", "✓", "OK"),
    "burning": ("st-warn", "▲", "Burning budget"),
    "exhausted": ("st-bad", "✕", "Budget exhausted"),
    "unknown": ("st-none", "?", "Unknown"),
}
CANARY_LOOK = {
    "ok": ("st-ok", "✓", "Rounds landing"),
    "stale": ("st-bad", "✕", "Stale"),
    "absent": ("st-none", "\u2013", "Not running"),
    "unknown": ("st-none", "?", "Unknown"),
}
OVERALL_LOOK = {
    "ok": ("st-ok", "✓", "All systems operational"),
    "degraded": ("st-warn", "▲", "Degraded"),
    "unknown": ("st-none", "?", "Status unknown"),
}


def render(snapshot: Snapshot, *, refresh_seconds: int, reload: bool = False) -> bytes:
    """The page of ``snapshot``, UTF-8. With ``reload`` it reloads itself every
    ``refresh_seconds`` (for a wall screen; opt-in, since a page that changes under a reader
    is a barrier to screen-reader users)."""
    css, symbol, words = OVERALL_LOOK[snapshot.status]
    when = _time(snapshot.generated_at)
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{refresh_seconds}">' if reload else "",
        f"<title>latam status: {escape(words)}</title><style>{CSS}</style></head><body><main>",
        f'<header class="banner {css}" id="overall" data-state="{escape(snapshot.status)}">',
        f'<h1>latam status</h1><p class="badge {css}">{_badge(symbol, words)}</p>',
        f"<p>Updated {when}</p></header>",
        '<section aria-labelledby="slos-h"><h2 id="slos-h">Service level objectives</h2>',
        f'<p class="muted">Over the last {snapshot.period_days} days; the burn rate is over'
        f" the last hour (above {PAGE_BURN_RATE:g}\u00d7 pages the on-call engineer).</p>"
        if snapshot.slos
        else "<p>No service level objective can be shown.</p>",
        '<div class="grid">',
        *(_slo(slo) for slo in snapshot.slos),
        "</div></section>",
        _canary(snapshot.canary),
        f'<footer>Machine-readable: <a href="status.json">status.json</a>. Computed at most'
        f" every {refresh_seconds} s; "
        + (
            'this page reloads itself (<a href="status">stop</a>).</footer>'
            if reload
            else 'for a screen that reloads by itself, <a href="status?refresh=on">'
            "status?refresh=on</a>.</footer>"
        ),
        "</main></body></html>\n",
    ]
    return "".join(parts).encode()


def _slo(status: SloStatus) -> str:
    css, symbol, words = SLO_LOOK[status.state]
    slo = status.slo
    rows = [
        ("Objective", _percent(slo.objective)),
        ("Achieved", _percent(status.sli)),
        ("Error budget left", _percent(status.error_budget_remaining, digits=1)),
        ("Burn rate (1 h)", _times(status.burn_rate_1h)),
    ]
    return "".join(
        [
            f'<article class="card {css}" data-slo="{escape(slo.name)}"'
            f' data-state="{escape(status.state)}">',
            f"<h3>{escape(slo.title)}</h3>",
            f'<p class="badge {css}">{_badge(symbol, words)}</p>',
            f'<p class="muted">{escape(status.reason)}</p>' if status.reason else "",
            f"<p>{escape(slo.description)}</p>",
            _meter(status.error_budget_remaining),
            "<dl>",
            *(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in rows),
            "</dl></article>",
        ]
    )


def _meter(left: float | None) -> str:
    """The error budget left as a bar; red and full when overspent."""
    if left is None:
        return ""
    width = round(max(min(left, 1.0), 0.0) * 300)
    bar = (
        '<rect class="meter-over" width="300" height="14" rx="7"/>'
        if left <= 0
        else (f'<rect class="meter" width="{width}" height="14" rx="7"/>')
    )
    label = f"Error budget left: {_percent(left, digits=1)}"
    return (
        f'<svg viewBox="0 0 300 14" role="img" aria-label="{escape(label)}">'
        f'<rect class="meter-bg" width="300" height="14" rx="7"/>{bar}</svg>'
    )


def _canary(canary: CanaryStatus) -> str:
    css, symbol, words = CANARY_LOOK[canary.state]
    last = canary.last_round_at
    rows = [  # (name, markup)
        ("Last round", _time(last, "%H:%M:%S UTC") if last else "none"),
        ("Rounds in 24 h", escape(f"{canary.rounds_24h:,}")),
        ("Typical spacing", escape(_seconds(canary.typical_spacing_seconds))),
        ("Publish to store, p50", escape(_seconds(canary.p50_delay_seconds))),
        ("Publish to store, max", escape(_seconds(canary.max_delay_seconds))),
    ]
    return "".join(
        [
            f'<section aria-labelledby="canary-h" id="canary" data-state="{escape(canary.state)}">',
            '<h2 id="canary-h">Synthetic canary, last 24 hours</h2>',
            f'<div class="card canary {css}"><div>',
            f'<p class="badge {css}">{_badge(symbol, words)}</p>',
            f'<p class="muted">{escape(canary.reason)}</p>' if canary.reason else "",
            "<p>A marked message published and read back through the API, end to end, at a"
            " steady interval.</p><dl>",
            *(f"<dt>{escape(name)}</dt><dd>{value}</dd>" for name, value in rows),
            "</dl></div>",
            _chart(canary.buckets) if canary.buckets else "",
            "</div>",
            _table(canary.buckets) if canary.buckets else "",
            "</section>",
        ]
    )


def _chart(buckets: tuple[HourBucket, ...]) -> str:
    """Rounds per hour as bars (an hour without any: a red mark on the axis)."""
    top = max(max(b.rounds for b in buckets), 1)
    width, height, base, step = 960, 200, 170, 960 / len(buckets)
    shapes = [f'<line class="axis" x1="0" y1="{base}" x2="{width}" y2="{base}"/>']
    for i, bucket in enumerate(buckets):
        x = round(i * step + 4, 1)
        label = escape(f"{bucket.start:%H:00} UTC: {bucket.rounds} rounds")
        if bucket.rounds:
            tall = max(round(bucket.rounds / top * (base - 10)), 2)
            shapes.append(
                f'<rect class="bar" x="{x}" y="{base - tall}" width="{step - 8:.1f}"'
                f' height="{tall}"><title>{label}</title></rect>'
            )
        else:
            shapes.append(
                f'<rect class="gap" x="{x}" y="{base - 6}" width="{step - 8:.1f}"'
                f' height="6"><title>{label}</title></rect>'
            )
        if i % 6 == 0:
            shapes.append(f'<text class="tick" x="{x}" y="198">{bucket.start:%H:00}</text>')
    shapes.append(f'<text class="tick end" x="{width}" y="198">now</text>')
    summary = f"Canary rounds per hour, at most {top}, over the last {len(buckets)} hours"
    return (
        f'<figure><svg viewBox="0 0 {width} {height}" role="img" id="canary-chart"'
        f' aria-label="{escape(summary)}">{"".join(shapes)}</svg>'
        f"<figcaption>Rounds stored per hour (UTC, oldest on the left; the tallest bar is"
        f" {top}). A red mark: no round that hour.</figcaption></figure>"
    )


def _table(buckets: tuple[HourBucket, ...]) -> str:
    rows = "".join(
        f"<tr><td>{b.start:%H:00}</td><td>{b.rounds}</td>"
        f"<td>{_seconds(b.p50_delay_seconds)}</td><td>{_seconds(b.max_delay_seconds)}</td></tr>"
        for b in buckets
    )
    return (
        '<details class="card"><summary>Hour by hour</summary><table><thead><tr><th>Hour (UTC)</th>'
        "<th>Rounds</th><th>p50 delay</th><th>Max delay</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )


def _badge(symbol: str, words: str) -> str:
    return f'<span aria-hidden="true">{symbol}</span> {escape(words)}'


def _time(value: datetime, shown: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    """``value`` (UTC) as ``shown``, with the whole of it in the markup."""
    return f'<time datetime="{value:%Y-%m-%dT%H:%M:%SZ}">{escape(value.strftime(shown))}</time>'


def _percent(value: float | None, *, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    text = f"{value * 100:.{digits}f}".rstrip("0").rstrip(".")
    return text.replace("-", MINUS) + "%"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}\u00d7"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
