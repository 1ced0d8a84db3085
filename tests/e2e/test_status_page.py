"""``/status`` in a real browser: a real ``latam serve`` running its canary, a fake
Prometheus, headless Chromium rendering the page (with the API's real headers, so its
Content-Security-Policy applies) to a DOM and to a PNG that must not be blank.

Skips on a laptop without /usr/bin/chromium (or the browser LATAM_TEST_CHROMIUM names, such as
/usr/bin/google-chrome); fails under CI, which installs it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from latam.status.slos import load_catalog
from tests.fake_prometheus import FakePrometheus, vector
from tests.support import LatamProcess, free_port, latam_env, local_binary, wait_http

CHROMIUM = os.environ.get("LATAM_TEST_CHROMIUM", "/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 900
BAR = (0x1D, 0x4E, 0xD8)  # --bar: the chart's hourly bars (light scheme)
GAP = (0x99, 0x1B, 0x1B)  # --bad: an hour without a round, and the exhausted/stale states


@pytest.fixture(scope="module")
def chromium() -> str:
    return local_binary(CHROMIUM, "Chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def served(
    chromium: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, FakePrometheus]]:
    """``latam serve`` with its canary every 0.2 s, once a few rounds are stored."""
    data_dir = tmp_path_factory.mktemp("status-page")
    with FakePrometheus().running() as prometheus:
        prometheus.default = vector(0.0002)
        burning = load_catalog().slos[1].query("1h")
        prometheus.answers[burning] = vector(0.5)
        port = free_port()
        env = latam_env(
            data_dir,
            port=port,
            api_workers=1,
            worker_processes=1,
            status_prometheus_url=prometheus.url,
        )
        proc = LatamProcess(["serve", "--canary-interval", "0.2"], env, data_dir / "serve.log")
        proc.start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/readyz", proc=proc)
            wait_for_canary_rounds(base, at_least=3)
            yield base, prometheus
        finally:
            proc.terminate()


def wait_for_canary_rounds(base: str, *, at_least: int, timeout: float = 20) -> None:
    """Waits through the topic API, not /status: a snapshot taken early would be kept
    for 30 s."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            topics = {t["name"]: t["id"] for t in client.get("/v1/topics").json()["data"]}
            if "latam-canary" in topics:
                page = client.get(f"/v1/topics/{topics['latam-canary']}/messages").json()
                if len(page["data"]) >= at_least:
                    return
            time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} canary rounds within {timeout} s")


def run_chromium(chromium: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done


def test_the_page_renders_every_slo_and_the_canary(
    chromium: str, served: tuple[str, FakePrometheus]
) -> None:
    base, _ = served
    dom = run_chromium(chromium, "--dump-dom", f"{base}/status").stdout.decode()
    for slo in load_catalog().slos:
        assert f">{slo.title}</h3>" in dom, slo.title
    assert 'id="canary" data-state="ok"' in dom
    assert 'id="canary-chart"' in dom
    assert "Burning budget" in dom
    assert 'id="overall" data-state="degraded"' in dom


def test_the_screenshot_shows_the_chart(
    chromium: str, served: tuple[str, FakePrometheus], tmp_path: Path
) -> None:
    base, _ = served
    shot = tmp_path / "status.png"
    run_chromium(chromium, f"--screenshot={shot}", f"{base}/status")
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    colours = {pixels[i : i + 3] for i in range(0, len(pixels), 7 * 3)}
    assert len(colours) > 20  # text, states, chart: far from blank
    bars = [(x, y) for y, row in enumerate(rows(pixels, width)) for x in bars_in(row, BAR)]
    # The chart is in the first screen, with the bar of the current hour (its colour
    # comes from the inline stylesheet: a blocked one would leave SVG's default black).
    assert len(bars) > 300, "no chart bar on the screen"
    left = min(x for x, _ in bars)
    right = max(x for x, _ in bars)
    top = min(y for _, y in bars)
    bottom = max(y for _, y in bars)
    assert right > WIDTH * 0.8  # the current hour is on the right
    assert bottom - top > 50
    # Along the chart's axis, the earlier hours show the red mark of an hour without a round.
    axis_row = rows(pixels, width)[bottom - 2]
    gaps = runs(axis_row, GAP, until=left)
    assert gaps >= 20, f"{gaps} empty hours marked"


def rows(pixels: bytes, width: int) -> list[bytes]:
    stride = width * 3
    return [pixels[i : i + stride] for i in range(0, len(pixels), stride)]


def bars_in(row: bytes, colour: tuple[int, int, int]) -> Iterator[int]:
    wanted = bytes(colour)
    start = row.find(wanted)
    while start != -1:
        if start % 3 == 0:
            yield start // 3
        start = row.find(wanted, start + 1)


def runs(row: bytes, colour: tuple[int, int, int], *, until: int) -> int:
    """Separate stretches of ``colour`` left of ``until``."""
    count, inside = 0, False
    for x in range(until):
        hit = row[3 * x : 3 * x + 3] == bytes(colour)
        count += hit and not inside
        inside = hit
    return count


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and RGB bytes of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), (depth, interlace)
    assert colour in (2, 6), colour
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    out = bytearray()
    for y in range(height):
        start = y * (stride + 1)
        line = unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), prev, bpp)
        out += line if bpp == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3)
        prev = line
    return width, height, bytes(out)


def unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> bytearray:
    """PNG's per-row filters undone (RFC 2083, section 6)."""
    if kind == 1:
        for i in range(bpp, len(line)):
            line[i] = (line[i] + line[i - bpp]) & 255
    elif kind == 2:
        line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
    elif kind == 3:
        for i in range(len(line)):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
    elif kind == 4:
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return line
