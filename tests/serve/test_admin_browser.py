"""The admin page in a real browser: Debian's chromium driven by Playwright logs in,
refreshes market info, runs a backfill job to 100%, draws the candle chart and the live
ticker table, and the console stays free of errors; the run history with its chart, and the
candle chart as an operator uses it (title, Upbit's colours or green/red, a failed request
marked with old candles removed, more than 1,000 candles by paging).

Without chromium or Playwright the test skips with the reason; under
``MARKETSPINE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) it fails instead. With
``MARKETSPINE_SCREENSHOTS=DIR`` the screenshots are kept there (the README's come from it).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SIM_NOW_MS
from serve_support import TOKEN, ServeProcess

from marketspine._base.time import format_utc

pytestmark = [pytest.mark.process, pytest.mark.browser]

CHROMIUM = Path(os.environ.get("MARKETSPINE_CHROMIUM", "/usr/bin/chromium"))
_WAIT_MS = 30_000


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set MARKETSPINE_CHROMIUM)"
    return None


@pytest.fixture
def page(serve: ServeProcess) -> Iterator[Any]:
    """A fresh browser page; the console errors it logs are kept in ``page.errors``."""
    reason = _browser_missing()
    if reason is not None:
        if os.environ.get("MARKETSPINE_REQUIRE_BROWSER"):
            pytest.fail(f"MARKETSPINE_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    # expect() has its own 5 s default, which a loaded machine can exceed while the page
    # parses plotly.js; the deadline bounds failures only.
    expect.set_options(timeout=_WAIT_MS)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1100})
            context.set_default_timeout(_WAIT_MS)
            tab = context.new_page()
            errors: list[tuple[str, str]] = []  # (message, the URL it concerns)
            tab.on(
                "console",
                lambda m: (
                    errors.append((m.text, m.location.get("url", "")))
                    if m.type == "error"
                    else None
                ),
            )
            tab.on("pageerror", lambda e: errors.append((str(e), "")))
            # Kept on the page for the test (Playwright's Page declares no such attributes).
            tab.errors = errors  # type: ignore[attr-defined]
            tab.browser_ = browser  # type: ignore[attr-defined]
            yield tab
        finally:
            browser.close()


def _screens(tmp_path: Path) -> Path:
    where = Path(os.environ.get("MARKETSPINE_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def _coloured_pixels(png: bytes, colours: list[tuple[int, int, int]]) -> int:
    """Pixels within a small distance of any of ``colours`` (the chart's candle colours)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    found = image.getcolors(maxcolors=image.width * image.height) or []
    pixels = 0
    for n, colour in found:
        assert isinstance(colour, tuple)  # an RGB image counts (r, g, b) colours
        r, g, b = colour
        if any(abs(r - cr) + abs(g - cg) + abs(b - cb) < 40 for cr, cg, cb in colours):
            pixels += n
    return pixels


def test_operator_logs_in_refreshes_backfills_and_sees_the_chart(
    page: Any, serve: ServeProcess, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page.goto(serve.url + "/admin")

    # A wrong token is refused on the page; the right one opens the dashboard.
    page.fill("#token", "not-the-token")
    page.click("#login-btn")
    expect(page.locator("#login-error")).to_contain_text("wrong admin token")
    page.fill("#token", TOKEN)
    page.click("#login-btn")
    expect(page.locator("#refresh-market-btn")).to_be_visible()

    # The refresh button: its result in #market-status, the exchange row in the table.
    page.click("#refresh-market-btn")
    expect(page.locator("#market-status")).to_have_text(re.compile(r"refreshed \d+ markets"))
    expect(page.locator("#exchanges tbody tr")).to_have_count(1)
    expect(page.locator("#exchanges tbody")).to_contain_text("upbit")

    # A backfill job started from the page reaches 100%.
    page.fill("#job-markets", "KRW-BTC")
    page.select_option("#job-timeframe", "1m")
    page.fill("#job-since", format_utc(SIM_NOW_MS - 6 * 3_600_000) + "Z")
    page.fill("#job-until", format_utc(SIM_NOW_MS - 3_600_000) + "Z")
    page.click("#job-start-btn")
    job = page.locator(".job-title").first
    expect(job).to_contain_text("KRW-BTC 1m")
    expect(job).to_contain_text("done 100%")
    expect(page.locator(".job .bar").first).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#coverage tbody")).to_contain_text("KRW-BTC", timeout=_WAIT_MS)

    # The chart draws candles of the stored market.
    page.fill("#chart-market", "KRW-BTC")
    page.select_option("#chart-timeframe", "1m")
    page.fill("#chart-count", "120")
    page.click("#chart-btn")
    expect(page.locator("#chart-status")).to_contain_text("120 candles")
    expect(page.locator("#chart .main-svg").first).to_be_visible()
    chart_png = page.locator("#chart").screenshot()
    # Upbit's own colours by default: red rising, blue falling.
    candle_pixels = _coloured_pixels(chart_png, [(0xC8, 0x4A, 0x31), (0x12, 0x61, 0xC4)])
    assert candle_pixels > 500, f"only {candle_pixels} candle-coloured pixels in the chart"

    # Live tickers of watched markets, and the rate budget the requests used.
    page.fill("#watch-markets", "KRW-BTC KRW-ETH")
    page.click("#watch-btn")
    expect(page.locator("#tickers tbody tr")).to_have_count(2)
    expect(page.locator("#tickers tbody")).to_contain_text("KRW-ETH")
    expect(page.locator("#budget tbody")).to_contain_text("candles")
    expect(page.locator("#breaker")).to_contain_text("closed")
    websocket = re.compile(r"0 snapshot joins \(0 trades filled, 0 incomplete\)")
    expect(page.locator("#websocket")).to_contain_text(websocket)

    screens = _screens(tmp_path)
    (screens / "admin-chart.png").write_bytes(chart_png)
    page.screenshot(path=str(screens / "admin.png"), full_page=True)

    # The browser's own requests are refused without the CSRF header or the session.
    no_csrf = page.request.post(serve.url + "/admin/api/refresh-market-info")
    assert no_csrf.status == 403
    stranger = page.browser_.new_context()
    try:
        assert stranger.request.post(serve.url + "/admin/api/refresh-market-info").status == 401
        assert stranger.request.get(serve.url + "/admin/api/state").status == 401
    finally:
        stranger.close()

    # The one error expected: the browser logs the refused login's 401 (it may arrive late).
    unexpected = [
        (text, url)
        for text, url in page.errors
        if not (url.endswith("/admin/login") and "401" in text)
    ]
    assert unexpected == [], f"errors in the browser console: {unexpected}"


_TRACE_COLOURS = """() => {
    const d = document.getElementById("chart").data[0];
    return [d.increasing.line.color, d.decreasing.line.color];
}"""
_CHART_LAYOUT = """() => {
    const layout = document.getElementById("chart").layout;
    return [layout.title.text, layout.xaxis.title.text];
}"""
_DRAWN = "() => (document.getElementById('chart').data || []).map((t) => t.x.length)"


def _log_in(page: Any, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/admin")
    page.fill("#token", TOKEN)
    page.click("#login-btn")
    expect(page.locator("#refresh-market-btn")).to_be_visible()


def _show(page: Any, market: str, count: int) -> None:
    page.fill("#chart-market", market)
    page.select_option("#chart-timeframe", "1m")
    page.fill("#chart-count", str(count))
    page.click("#chart-btn")


def test_history_and_the_chart_as_an_operator_uses_it(
    page: Any, serve: ServeProcess, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    candle_requests: list[str] = []
    page.on(
        "request",
        lambda r: candle_requests.append(r.url) if "/api/candles" in r.url else None,
    )
    _log_in(page, serve.url)

    # The run history: the warmup at start and a manual one, in the table and the chart.
    page.click("#refresh-market-btn")
    expect(page.locator("#market-status")).to_have_text(re.compile(r"refreshed \d+ markets"))
    expect(page.locator("#history tbody")).to_contain_text("manual")
    expect(page.locator("#history tbody")).to_contain_text("start")
    expect(page.locator("#history tbody")).to_contain_text("upbit ok")
    expect(page.locator("#history-rate")).to_contain_text("success 100.0%")
    expect(page.locator("#history-rate")).to_contain_text("(target 95%)")
    expect(page.locator("#history-chart .main-svg").first).to_be_visible()
    rows = page.locator("#history tbody tr").count()
    plotted = page.evaluate(
        "() => document.getElementById('history-chart').data.map(t => t.x.length)"
    )
    assert rows >= 2 and plotted == [rows, rows]
    expect(page.locator("#updated")).to_contain_text("UTC")

    # The chart drawn at load: titled with market and timeframe, time in UTC, Upbit's colours.
    expect(page.locator("#chart-status")).to_contain_text("120 candles")
    assert page.evaluate(_CHART_LAYOUT) == ["KRW-BTC · 1m", "time (UTC)"]
    assert page.evaluate(_TRACE_COLOURS) == ["#c84a31", "#1261c4"]

    # Green/red on request, remembered across a reload.
    page.check("#chart-green-red")
    assert page.evaluate(_TRACE_COLOURS) == ["#26a69a", "#ef5350"]
    page.reload()
    expect(page.locator("#chart-status")).to_contain_text("120 candles")
    expect(page.locator("#chart-green-red")).to_be_checked()
    assert page.evaluate(_TRACE_COLOURS) == ["#26a69a", "#ef5350"]
    page.uncheck("#chart-green-red")
    assert page.evaluate(_TRACE_COLOURS) == ["#c84a31", "#1261c4"]

    # A failed request: the error over the chart, the previous market's candles gone.
    _show(page, "KRW-NOPE", 120)
    expect(page.locator("#chart-error")).to_be_visible()
    expect(page.locator("#chart-error")).to_contain_text("KRW-NOPE 1m:")
    expect(page.locator("#chart-status")).to_have_text("failed")
    assert page.evaluate(_DRAWN) == []

    # 1,500 candles: more than one /api/candles request, joined, every candle drawn.
    candle_requests.clear()
    _show(page, "KRW-BTC", 1500)
    expect(page.locator("#chart-status")).to_contain_text("1500 candles")
    expect(page.locator("#chart-error")).to_be_hidden()
    assert page.evaluate(_DRAWN) == [1500, 1500]
    times = page.evaluate("() => document.getElementById('chart').data[0].x")
    assert times == sorted(set(times)), "joined pages are ascending without repeats"
    paged = [u for u in candle_requests if "KRW-BTC" in u and "count=2&" not in u + "&"]
    assert len(paged) >= 2 and any("start=" in u and "end=" in u for u in paged), paged

    page.screenshot(path=str(_screens(tmp_path) / "admin-history.png"), full_page=True)
    # The only errors: the browser's own line for the unknown market's 404.
    unexpected = [(text, url) for text, url in page.errors if "KRW-NOPE" not in url]
    assert unexpected == [], f"errors in the browser console: {unexpected}"
