"""The admin page in a real browser: Debian's chromium driven by Playwright logs in,
refreshes market info, runs a backfill job to 100%, draws the candle chart and the live
ticker table, and the console stays free of errors; the run history with its chart, and the
candle chart as an operator uses it (title, Upbit's colours or green/red, a failed request
marked with old candles removed, more than 1,000 candles by paging); and the page as it stays
open: a zoom kept across updates, focus kept in the job list, one labelled time zone with a
KST/UTC switch, the market picker, no share or select tools, one column on a 390 px phone,
plotly.js compressed and deferred, an outage line that clears, watches kept or said to have
lapsed (the page's clock moved by Playwright), and axe-core's check without a serious
violation (axe.min.js from the ``axe-playwright-python`` package: skipped without it, failed
under ``MARKETSPINE_REQUIRE_EXTRAS=1``). One chromium serves the module, a context per test.

Without chromium or Playwright the test skips with the reason; under
``MARKETSPINE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) it fails instead. With
``MARKETSPINE_SCREENSHOTS=DIR`` the screenshots are kept there (the README's come from it).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import WAIT_MS
from helpers import SIM_NOW_MS, require_module, wait_until_sync
from serve_support import TOKEN, ServeProcess

from marketspine._base.time import format_utc

pytestmark = [pytest.mark.process, pytest.mark.browser]


def _new_page(browser: Any, width: int = 1400, height: int = 1100) -> Any:
    """A page in a fresh context; the console errors it logs are kept in ``page.errors``."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors: list[tuple[str, str]] = []  # (message, the URL it concerns)
    tab.on(
        "console",
        lambda m: errors.append((m.text, m.location.get("url", ""))) if m.type == "error" else None,
    )
    tab.on("pageerror", lambda e: errors.append((str(e), "")))
    # Kept on the page for the test.
    tab.errors = errors
    tab.browser_ = browser
    return tab


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page of desktop size."""
    tab = _new_page(browser)
    try:
        yield tab
    finally:
        tab.context.close()


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
    expect(page.locator("#coverage tbody")).to_contain_text("KRW-BTC", timeout=WAIT_MS)

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
    expect(page.locator("#tickers tbody")).not_to_contain_text("waiting")
    # Prices in full, with separators and the quote currency.
    expect(page.locator("#tickers tbody tr").first.locator("td").nth(1)).to_have_text(
        re.compile(r"^\d{1,3}(,\d{3})+(\.\d+)? KRW$")
    )
    expect(page.locator("#watch-status")).to_contain_text(
        "watching KRW-BTC, KRW-ETH while this page is open"
    )
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

    # Table and chart read in one go: a run that lands between two reads (the history is
    # refreshed as the page polls) would set them apart.
    def table_and_chart() -> list[Any]:
        shown: list[Any] = page.evaluate(
            "() => [document.querySelectorAll('#history tbody tr').length,"
            " document.getElementById('history-chart').data.map(t => t.x.length)]"
        )
        return shown

    wait_until_sync(
        lambda: (shown := table_and_chart())[0] >= 2 and shown[1] == [shown[0], shown[0]],
        30,
        "the history table and its chart showing the same runs",
    )
    expect(page.locator("#updated")).to_contain_text("KST")

    # The chart drawn at load: titled with market and timeframe, time in KST, Upbit's colours.
    expect(page.locator("#chart-status")).to_contain_text("120 candles")
    assert page.evaluate(_CHART_LAYOUT) == ["KRW-BTC · 1m", "time (KST)"]
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
    # The older page asks "count before end", the read that spreads its pages.
    assert len(paged) >= 2 and any("count=500&end=" in u for u in paged), paged

    page.screenshot(path=str(_screens(tmp_path) / "admin-history.png"), full_page=True)
    # The only errors: the browser's own line for the unknown market's 404.
    unexpected = [(text, url) for text, url in page.errors if "KRW-NOPE" not in url]
    assert unexpected == [], f"errors in the browser console: {unexpected}"


# -- the page as it stays open: zoom, focus, time zone, phone, outages, accessibility ------------

_DRAWS = "() => Number(document.getElementById('chart').dataset.draws || 0)"
_X_RANGE = "() => document.getElementById('chart').layout.xaxis.range.slice()"
_ZONE_LABELS = "() => [...document.querySelectorAll('.zone-label')].map((e) => e.textContent)"
_MODEBAR = """() => [...document.querySelectorAll('#chart .modebar-btn')]
    .map((b) => b.getAttribute('data-title'))"""


def _wait_for_redraws(page: Any, more: int) -> None:
    """Until the chart was drawn ``more`` more times (the forming candle's updates)."""
    drawn = page.evaluate(_DRAWS)
    page.wait_for_function(
        "(n) => Number(document.getElementById('chart').dataset.draws || 0) >= n",
        arg=drawn + more,
    )


def _drag_zoom(page: Any) -> None:
    """Zoom the candle subplot as a user does: drag across the middle of it."""
    box = page.locator("#chart .draglayer .xy2 .nsewdrag").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y + 2, steps=8)
    page.mouse.up()


def _markets(serve: ServeProcess) -> list[dict[str, Any]]:
    answer = serve.get("/v1/market/all", is_details="false")
    assert answer.status_code == 200, answer.text
    markets: list[dict[str, Any]] = answer.json()
    return markets


def test_zoom_focus_time_zone_and_the_market_picker_survive_updates(
    page: Any, serve: ServeProcess
) -> None:
    from playwright.sync_api import expect

    _log_in(page, serve.url)
    expect(page.locator("#chart-status")).to_contain_text("120 candles")

    # The market picker lists serve's market list, names included.
    markets = _markets(serve)
    options = page.locator("#market-list option")
    expect(options).to_have_count(len(markets))
    btc = next(m for m in markets if m["market"] == "KRW-BTC")
    assert page.get_attribute('#market-list option[value="KRW-BTC"]', "label") == (
        f"{btc['korean_name']} · {btc['english_name']}"
    )
    assert page.get_attribute("#chart-market", "list") == "market-list"

    # The chart: prices in full on the right, a crosshair, no share or select tools.
    axes = page.evaluate(
        """() => { const l = document.getElementById('chart').layout;
        return [l.yaxis2.side, l.yaxis2.tickformat, l.xaxis.showspikes, l.yaxis2.showspikes,
                l.xaxis.spikemode]; }"""
    )
    assert axes == ["right", ",.8~f", True, True, "across"]
    modebar = page.evaluate(_MODEBAR)
    assert "Zoom" in modebar and "Pan" in modebar, modebar
    unwanted = [t for t in modebar if re.search(r"share|lasso|box select|cloud|studio", t, re.I)]
    assert unwanted == [], modebar

    # A zoom survives the updates of the forming candle (every 3 s).
    _drag_zoom(page)
    page.wait_for_function(
        "() => document.getElementById('chart').layout.xaxis.autorange === false"
    )
    zoomed = page.evaluate(_X_RANGE)
    _wait_for_redraws(page, 1)
    assert page.evaluate(_X_RANGE) == zoomed
    assert page.evaluate("() => document.getElementById('chart').layout.xaxis.autorange") is False

    # One zone for the whole page, KST by default, labelled; UTC on request, remembered.
    first = page.evaluate("() => document.getElementById('chart').data[0].x[0]")
    assert set(page.evaluate(_ZONE_LABELS)) == {"KST"}
    expect(page.locator("#updated")).to_have_text(re.compile(r"^updated \d\d:\d\d:\d\d KST$"))
    expect(page.locator('#zone-switch [data-zone="KST"]')).to_have_attribute("aria-pressed", "true")
    page.click('#zone-switch [data-zone="UTC"]')
    expect(page.locator("#updated")).to_have_text(re.compile(r"^updated \d\d:\d\d:\d\d UTC$"))
    assert set(page.evaluate(_ZONE_LABELS)) == {"UTC"}
    assert page.evaluate(_CHART_LAYOUT)[1] == "time (UTC)"
    first_utc = page.evaluate("() => document.getElementById('chart').data[0].x[0]")
    shift = datetime.fromisoformat(first) - datetime.fromisoformat(first_utc)
    assert shift == timedelta(hours=9), (first, first_utc)
    page.reload()
    expect(page.locator("#chart-status")).to_contain_text("120 candles")
    assert page.evaluate(_CHART_LAYOUT)[1] == "time (UTC)"
    expect(page.locator("#history tbody tr").first).to_be_visible()
    assert set(page.evaluate(_ZONE_LABELS)) == {"UTC"}
    page.click('#zone-switch [data-zone="KST"]')
    assert page.evaluate(_CHART_LAYOUT)[1] == "time (KST)"

    # Rows are updated in place: a focused Cancel button keeps the focus while the job's
    # progress moves on, and Enter on it cancels the job.
    page.fill("#job-markets", "KRW-BTC")
    page.select_option("#job-timeframe", "1m")
    page.fill("#job-since", format_utc(SIM_NOW_MS - 730 * 86_400_000) + "Z")
    page.fill("#job-until", format_utc(SIM_NOW_MS - 86_400_000) + "Z")
    page.click("#job-start-btn")
    cancel = page.locator(".job", has_text="running").locator("button")
    expect(cancel).to_be_visible()
    cancel.focus()
    page.evaluate("() => { window.focusedCancel = document.activeElement; }")
    title = page.locator(".job", has_text="running").locator(".job-title")
    for _ in range(2):  # two updates of the job's progress
        before = title.text_content()
        page.wait_for_function(
            """(before) => { const t = document.querySelector('.job .job-title');
            return t && t.textContent !== before; }""",
            arg=before,
        )
    assert page.evaluate(
        "() => document.activeElement === window.focusedCancel && window.focusedCancel.isConnected"
    ), "the focused Cancel button was replaced"
    page.keyboard.press("Enter")
    expect(page.locator(".job .job-title").first).to_contain_text("cancelled")

    # A market picked from the list is drawn.
    _show(page, "KRW-ETH", 60)
    expect(page.locator("#chart-status")).to_contain_text("60 candles")
    assert page.evaluate(_CHART_LAYOUT)[0] == "KRW-ETH · 1m"
    assert page.errors == [], f"errors in the browser console: {page.errors}"


def test_a_phone_gets_one_column_and_plotly_comes_compressed(
    browser: Any, serve: ServeProcess, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = _new_page(browser, width=390, height=844)
    encodings: dict[str, str | None] = {}
    page.on(
        "response",
        lambda r: encodings.setdefault(r.url.rsplit("/", 1)[-1], r.headers.get("content-encoding")),
    )
    try:
        _log_in(page, serve.url)
        expect(page.locator("#chart .main-svg").first).to_be_visible()
        expect(page.locator("#budget tbody tr").first).to_be_visible()
        assert encodings.get("plotly.min.js") in ("gzip", "br"), encodings
        assert page.evaluate(
            "() => document.querySelector('script[src$=\"plotly.min.js\"]').defer"
        ), "plotly.js blocks the first paint"

        # No horizontal scrolling of the page: one column of cards within the screen.
        width = page.evaluate("() => window.innerWidth")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        cards = page.evaluate(
            """() => [...document.querySelectorAll('.card')].map((c) => {
            const r = c.getBoundingClientRect(); return [c.id, r.left, r.right]; })"""
        )
        assert len({round(left) for _, left, _ in cards}) == 1, cards
        assert all(right <= width for _, _, right in cards), cards
        # A table wider than the screen scrolls inside its card.
        scrolling = page.evaluate(
            """() => [...document.querySelectorAll('.table-scroll')]
            .filter((d) => d.scrollWidth > d.clientWidth)
            .map((d) => [d.querySelector('table').id, getComputedStyle(d).overflowX])"""
        )
        assert scrolling and all(overflow == "auto" for _, overflow in scrolling), scrolling
        page.screenshot(path=str(_screens(tmp_path) / "admin-phone.png"), full_page=True)
        assert page.errors == [], f"errors in the browser console: {page.errors}"
    finally:
        page.context.close()


def test_an_outage_is_one_line_cleared_on_recovery_and_watches_are_kept(
    page: Any, serve: ServeProcess, fixed_sim: str
) -> None:
    from playwright.sync_api import expect

    watches: list[str] = []
    answered: list[str] = []  # the watch requests whose answer the page has
    page.on(
        "request",
        lambda r: watches.append(r.method) if r.url.endswith("/admin/api/watch") else None,
    )
    for finished in ("requestfinished", "requestfailed"):
        page.on(
            finished,
            lambda r: answered.append(r.method) if r.url.endswith("/admin/api/watch") else None,
        )
    # The page's timers run on a clock the test moves (the watch lapses after 5 min).
    page.clock.install()
    _log_in(page, serve.url)
    outage = page.locator("#outage")
    expect(page.locator("#updated")).to_contain_text("KST")
    expect(outage).to_be_hidden()

    # serve does not answer: one short line with the last good refresh, no exception text.
    page.route("**/admin/api/state", lambda route: route.abort())
    expect(outage).to_be_visible()
    expect(outage).to_have_text(
        re.compile(
            r"^serve is not answering \(since \d\d:\d\d:\d\d KST\): "
            r"last good refresh \d\d:\d\d:\d\d KST; retrying$"
        )
    )
    page.unroute("**/admin/api/state")
    expect(outage).to_be_hidden()

    # Upbit fails (the simulator answers 5xx): the breaker opens, the line says so and the
    # failed refresh is told in words, not as exception text; both go once Upbit answers.
    market_status = page.locator("#market-status")
    listed = httpx.get(serve.url + "/v1/market/all", timeout=10).json()
    cold = [m["market"] for m in listed[-6:]]
    httpx.post(fixed_sim + "/sim/faults", json={"error_rate": 1.0}, timeout=10)
    try:
        # One request failing again and again is that request's trouble; several different
        # ones failing is an outage, and opens the breaker.
        def orderbook(market: str) -> int:
            params = {"markets": market}
            return httpx.get(serve.url + "/v1/orderbook", params=params, timeout=60).status_code

        with ThreadPoolExecutor(len(cold)) as pool:
            assert set(pool.map(orderbook, cold)) <= {500, 503}
        page.click("#refresh-market-btn")
        expect(outage).to_contain_text("Upbit is unavailable")
        expect(outage).to_contain_text("breaker open")
        expect(market_status).to_contain_text("failed: upbit: Upbit")
        expect(page.locator("#exchanges tbody")).to_contain_text("failed: Upbit")
        assert "Error" not in (market_status.text_content() or "") + (outage.text_content() or "")
    finally:
        httpx.post(fixed_sim + "/sim/faults", json={"error_rate": 0.0}, timeout=10)
    # After its cool-down the breaker lets a probe through: the refresh is that probe.
    expect(page.locator("#breaker")).to_have_text(re.compile("half_open|closed"), timeout=60_000)
    page.click("#refresh-market-btn")
    expect(market_status).to_contain_text("refreshed")
    expect(outage).to_be_hidden()
    expect(page.locator("#breaker")).to_contain_text("closed")
    expect(page.locator("#exchanges tbody")).to_contain_text("ok")

    # Watched tickers are asked for again while the page is open...
    page.fill("#watch-markets", "KRW-BTC")
    page.click("#watch-btn")
    status = page.locator("#watch-status")
    expect(status).to_contain_text("watching KRW-BTC while this page is open")
    expect(page.locator("#tickers tbody")).not_to_contain_text("waiting")
    asked = watches.count("POST")
    page.clock.fast_forward("01:05")
    expect(page.locator("#watch-status")).to_contain_text("watching KRW-BTC")
    wait_until_sync(lambda: watches.count("POST") > asked, 30, "the watch asked for again")
    # Its answer in too, so it cannot land after the clock has moved on below (a call into
    # the page lets Playwright hand over the events that came meanwhile).
    wait_until_sync(
        lambda: page.evaluate("1") == 1 and len(answered) == len(watches), 30, "the watch answered"
    )

    # ...and when asking fails for longer than a watch lasts, the panel says it lapsed.
    page.route(
        "**/admin/api/watch",
        lambda route: route.fulfill(
            status=503, json={"error": {"name": 503, "message": "serve is shutting down"}}
        ),
    )
    page.clock.fast_forward("06:00")
    expect(status).to_contain_text("lapsed at")
    page.unroute("**/admin/api/watch")
    page.clock.fast_forward("01:05")
    expect(status).to_contain_text("watching KRW-BTC while this page is open")


def test_a_full_database_is_one_line_gone_once_its_candles_are_written(
    page: Any, serve: ServeProcess
) -> None:
    from playwright.sync_api import expect

    # What serve's state says while the disk is full (pages held in memory: the service
    # side is tested in test_serve_honest_failures), put into its real answers.
    held = {"count": 12_345}

    def with_held(route: Any) -> None:
        state = route.fetch().json()
        route.fulfill(json={**state, "held_candles": held["count"]})

    page.route("**/admin/api/state", with_held)
    _log_in(page, serve.url)
    outage = page.locator("#outage")
    expect(outage).to_have_text(
        "the candle database has no room (a full disk): 12,345 candles held in memory until "
        "it does; free space on its disk"
    )
    held["count"] = 0  # written: the line goes at the next refresh
    expect(outage).to_be_hidden(timeout=WAIT_MS)


def _axe_source() -> str:
    """axe-core as the ``axe-playwright-python`` package ships it."""
    from importlib import resources

    package = require_module(
        "axe_playwright_python", "the accessibility check runs axe-core from axe-playwright-python"
    )
    return (resources.files(package) / "axe.min.js").read_text(encoding="utf-8")


_AXE = """async () => {
    const result = await axe.run(document, { resultTypes: ["violations"] });
    return result.violations
        .filter((v) => v.impact === "serious" || v.impact === "critical")
        .map((v) => [v.id, v.impact, v.nodes.map((n) => n.target.join(" "))]);
}"""


def test_axe_core_finds_no_serious_violation(page: Any, serve: ServeProcess) -> None:
    from playwright.sync_api import expect

    axe = _axe_source()
    page.goto(serve.url + "/admin")
    page.evaluate(axe)  # evaluated by the debugger protocol: the page's CSP does not apply
    assert page.evaluate(_AXE) == [], "the login page"
    _log_in(page, serve.url)
    page.fill("#watch-markets", "KRW-BTC")
    page.click("#watch-btn")
    expect(page.locator("#chart .main-svg").first).to_be_visible()
    expect(page.locator("#history-chart .main-svg").first).to_be_visible()
    expect(page.locator("#coverage tbody tr").first).to_be_visible()
    expect(page.locator("#tickers tbody")).not_to_contain_text("waiting")
    page.evaluate(axe)
    assert page.evaluate(_AXE) == [], "the dashboard"
