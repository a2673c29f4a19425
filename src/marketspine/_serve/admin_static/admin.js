// The admin page: polls the service's JSON and draws it. Every state-changing request
// carries the session's CSRF token in X-CSRF-Token.
//
// What the page promises its operator: a zoomed chart stays zoomed across updates
// (uirevision); rows are updated in place, so keyboard focus stays where it was; every time
// on the page is in one zone, KST (as Upbit shows) or UTC, labelled, switched in the header;
// watched tickers are asked for again while the page is open (a watch lapses otherwise),
// or the panel says they lapsed; an outage is one short line with the time of the last good
// refresh, gone once serve and Upbit answer again.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);

// plotly.js comes after this script (both deferred): the tables fill at once, the charts
// once plotly has loaded.
const plotlyReady = new Promise((resolve) => {
  if (window.Plotly) resolve();
  else $("plotly-js").addEventListener("load", () => resolve(), { once: true });
});

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options, headers: { ...(options.headers || {}) } };
  if (init.method && init.method !== "GET") {
    init.headers["X-CSRF-Token"] = csrf;
    if (init.body !== undefined) init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.href = "/admin";
    throw new Error("logged out");
  }
  const body = await response.json();
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(message);
  }
  return body;
}

const fmt = (n, digits = 0) =>
  n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });

// A price in full, with separators and its quote currency: "145,000,000 KRW".
const price = (n, market) => (n === null || n === undefined ? "–" : `${fmt(n, 8)} ${market.split("-")[0]}`);

// One line of at most ``most`` characters: an exception's text can be long and multi-line;
// the whole of it goes into the element's title.
function short(text, most = 60) {
  const line = String(text || "").split("\n")[0].trim();
  return line.length > most ? line.slice(0, most - 1) + "…" : line;
}

// What an upstream failure means, in a few words (the exception's text goes into a title).
const ERROR_WORDS = [
  [/CircuitOpen/, "Upbit unavailable (breaker open)"],
  [/Banned|\b418\b/, "banned by Upbit (418)"],
  [/RateLimited|\b429\b/, "rate-limited by Upbit (429)"],
  [/Timeout|timed out/i, "Upbit did not answer in time"],
  [/Upstream|\b5\d\d\b|connect/i, "Upbit failed to answer"],
];
function errorWords(text) {
  const found = ERROR_WORDS.find(([pattern]) => pattern.test(text || ""));
  return found ? found[1] : short(text || "failed", 40);
}

// -- one time zone for the whole page -------------------------------------------------------

const ZONES = { KST: 9 * 3600e3, UTC: 0 }; // KST has no daylight saving time
const ZONE_KEY = "marketspine.timeZone";

function storedZone() {
  try {
    return localStorage.getItem(ZONE_KEY) === "UTC" ? "UTC" : "KST";
  } catch {
    return "KST";
  }
}

let zone = storedZone();

// "YYYY-MM-DD HH:MM:SS" of epoch ``ms`` in the page's zone; "–" for none.
function wallClock(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  return new Date(ms + ZONES[zone]).toISOString().slice(0, 19).replace("T", " ");
}
const clockTime = (ms) => `${wallClock(ms).slice(11)} ${zone}`;
const fromIso = (text) => (text ? Date.parse(text) : null);
// For the job form: ISO with the zone's offset, which serve reads as it is.
const isoInZone = (ms) =>
  new Date(ms + ZONES[zone]).toISOString().slice(0, 16) + (zone === "UTC" ? "Z" : "+09:00");

function showZone() {
  for (const label of document.querySelectorAll(".zone-label")) label.textContent = zone;
  for (const button of $("zone-switch").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.zone === zone));
  }
}

$("zone-switch").addEventListener("click", (event) => {
  const wanted = event.target.closest("button")?.dataset.zone;
  if (!wanted || wanted === zone) return;
  const sinceWasDefault = $("job-since").value === defaultSince;
  zone = wanted;
  try {
    localStorage.setItem(ZONE_KEY, zone);
  } catch {
    // not remembered (storage disabled): the choice still holds on this page
  }
  showZone();
  if (sinceWasDefault) setDefaultSince();
  if (last.state) render(last.state);
  if (last.coverage) renderCoverage(last.coverage);
  if (last.history) renderHistory(last.history.kind, last.history.answer);
  if (chart.market) drawChart();
});

// What was drawn last, drawn again when the zone changes.
const last = { state: null, coverage: null, history: null };

// -- rows updated in place ------------------------------------------------------------------
// A row is matched by its key and only the cells that changed are written: a row that stays
// keeps its elements (focus, a text selection, a screen reader's place) across polls.

function setCells(row, cells) {
  while (row.cells.length > cells.length) row.deleteCell(-1);
  cells.forEach(([text, cls = "", title = ""], i) => {
    const td = row.cells[i] || row.insertCell();
    if (td.textContent !== text) td.textContent = text;
    if (td.className !== cls) td.className = cls;
    if ((td.title || "") !== title) td.title = title;
  });
}

function fill(tableId, items, key, cellsOf, rowClass = () => "") {
  const body = $(tableId).tBodies[0];
  const old = new Map([...body.rows].map((row) => [row.dataset.key, row]));
  items.forEach((item, i) => {
    const k = String(key(item));
    let row = old.get(k);
    if (row) old.delete(k);
    else {
      row = document.createElement("tr");
      row.dataset.key = k;
    }
    setCells(row, cellsOf(item));
    const cls = rowClass(item);
    if (row.className !== cls) row.className = cls;
    if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] || null);
  });
  for (const row of old.values()) row.remove();
}

// -- market info, the market list and the refresh button --------------------------------------

function renderWarmup(warmup) {
  const details = warmup ? Object.entries(warmup.exchange_details || {}) : [];
  fill("exchanges", details, ([name]) => name, ([name, d]) => [
    [name],
    [d.success ? fmt(d.markets) : "–"],
    [wallClock(warmup.finished_at ? warmup.finished_at * 1000 : null)],
    [`${fmt(warmup.execution_time, 3)} s`],
    d.success ? ["ok", "ok"] : [`failed: ${errorWords(d.error)}`, "error", d.error || ""],
  ]);
}

// The picker of the chart's market: Upbit's market list as serve answers it at /v1.
async function loadMarkets() {
  const markets = await api("/v1/market/all?is_details=false");
  const options = markets.map((m) => {
    const option = document.createElement("option");
    option.value = m.market;
    option.label = [m.korean_name, m.english_name].filter(Boolean).join(" · ");
    return option;
  });
  $("market-list").replaceChildren(...options);
  $("chart-market").title = `${options.length} markets: type to pick one`;
}

$("refresh-market-btn").addEventListener("click", async () => {
  const status = $("market-status");
  const button = $("refresh-market-btn");
  button.disabled = true;
  status.className = "status muted";
  status.textContent = "refreshing…";
  status.title = "";
  try {
    const report = await api("/admin/api/refresh-market-info", { method: "POST" });
    const failed = Object.entries(report.exchange_details || {}).filter(([, d]) => !d.success);
    if (report.success) {
      status.className = "status ok";
      status.textContent = `refreshed ${report.total_markets} markets (${report.refreshed_exchanges.join(", ")}) in ${report.execution_time} s`;
      loadMarkets().catch(() => {});
    } else {
      status.className = "status error";
      status.textContent = "failed: " + failed.map(([n, d]) => `${n}: ${errorWords(d.error)}`).join("; ");
      status.title = failed.map(([n, d]) => `${n}: ${d.error || "failed"}`).join("\n");
    }
  } catch (error) {
    status.className = "status error";
    status.textContent = `failed: ${short(error.message)}`;
    status.title = error.message;
  } finally {
    button.disabled = false;
    poll();
    loadHistory().catch(() => {});
  }
});

// -- health -----------------------------------------------------------------------------------

function renderLayers(layers, hitRate) {
  const box = $("layers");
  const total = Object.values(layers).reduce((a, b) => a + b, 0);
  const old = new Map([...box.querySelectorAll(".layer")].map((line) => [line.dataset.key, line]));
  let rate = box.querySelector(".hit-rate");
  if (!rate) {
    rate = document.createElement("div");
    rate.className = "muted hit-rate";
    box.append(rate);
  }
  for (const [name, count] of Object.entries(layers)) {
    let line = old.get(name);
    if (line) old.delete(name);
    else {
      line = document.createElement("div");
      line.className = "layer";
      line.dataset.key = name;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.append(document.createElement("div"));
      line.append(document.createElement("span"), bar);
      box.insertBefore(line, rate);
    }
    const text = `${name}: ${fmt(count)}`;
    if (line.firstChild.textContent !== text) line.firstChild.textContent = text;
    line.querySelector(".bar > div").style.width = `${total ? (100 * count) / total : 0}%`;
  }
  for (const line of old.values()) line.remove();
  const text = hitRate === null ? "no answers yet" : `hit rate (not upstream): ${(100 * hitRate).toFixed(1)}%`;
  if (rate.textContent !== text) rate.textContent = text;
}

function renderHealth(state) {
  const breaker = $("breaker");
  breaker.textContent = `upstream breaker: ${state.upstream.breaker}`;
  breaker.className = `pill ${state.upstream.breaker.toLowerCase()}`;
  fill("budget", Object.entries(state.budget), ([group]) => group, ([group, g]) => [
    [group],
    [fmt(g.used)],
    [fmt(g.remaining)],
    [fmt(g.waiting)],
    [fmt(g.rate_limited), g.rate_limited ? "error" : ""],
    [fmt(g.banned), g.banned ? "error" : ""],
  ]);
  renderLayers(state.layers, state.hit_rate);
  const ws = state.websocket;
  const text = ws
    ? `${ws.clients} clients, ${ws.subscriptions} subscriptions, ${ws.upstream_pairs} upstream pairs, ${ws.dropped_clients} dropped, ${fmt(ws.frames_sent)} frames sent, ${ws.snapshot_joins} snapshot joins (${fmt(ws.snapshot_join_trades)} trades filled, ${ws.snapshot_joins_incomplete} incomplete)`
    : "no gateway";
  if ($("websocket").textContent !== text) $("websocket").textContent = text;
  fill("polled", state.polled || [], (p) => `${p.market} ${p.timeframe}`, (p) => [
    [`${p.market} ${p.timeframe}`],
    [fmt(p.count)],
    [p.interval_s === null ? "-" : `${p.interval_s.toFixed(1)} s`],
    [p.learned ? "yes" : "no"],
    [fmt(p.hits)],
    [fmt(p.misses)],
  ]);
}

// -- live tickers: watched while the page is open -----------------------------------------------
// serve unwatches a ticker ``lapse_s`` (5 min) after it was last asked for, so the page asks
// again every quarter of that (at most every minute); a market serve no longer watches is
// asked for at once. When asking fails, the panel says since when, and when the watch lapses.

const WATCH_KEY = "marketspine.watching";
const watch = { markets: [], renewedAt: null, error: null, lapseS: 300, timer: null, seenLive: new Set() };

function storedWatch() {
  try {
    const markets = JSON.parse(localStorage.getItem(WATCH_KEY) || "null");
    return Array.isArray(markets) ? markets.filter((m) => typeof m === "string") : null;
  } catch {
    return null;
  }
}

async function renewWatch() {
  clearTimeout(watch.timer);
  if (watch.markets.length) {
    try {
      const answer = await api("/admin/api/watch", { method: "POST", body: JSON.stringify({ markets: watch.markets }) });
      watch.renewedAt = Date.now();
      watch.error = null;
      if (answer.lapse_s) watch.lapseS = answer.lapse_s;
    } catch (error) {
      watch.error = error.message;
    }
  }
  renderWatch();
  watch.timer = setTimeout(renewWatch, Math.max(5, Math.min(60, watch.lapseS / 4)) * 1000);
}

function renderWatch() {
  const status = $("watch-status");
  let text;
  let cls = "status muted";
  if (!watch.markets.length) text = "no markets watched";
  else if (!watch.error) {
    text = `watching ${watch.markets.join(", ")} while this page is open (asked ${clockTime(watch.renewedAt)})`;
  } else {
    const lapse = watch.renewedAt === null ? null : watch.renewedAt + watch.lapseS * 1000;
    text =
      lapse === null
        ? `not watched: ${short(watch.error, 40)}`
        : Date.now() >= lapse
          ? `lapsed at ${clockTime(lapse)}: not asked since ${clockTime(watch.renewedAt)} (${short(watch.error, 40)})`
          : `not asked since ${clockTime(watch.renewedAt)} (${short(watch.error, 40)}): lapses at ${clockTime(lapse)}`;
    cls = "status error";
  }
  if (status.textContent !== text) status.textContent = text;
  status.className = cls;
  status.title = watch.error || "";
}

function renderTickers(state) {
  const byMarket = new Map(state.tickers.map((t) => [t.market, t]));
  const markets = [...watch.markets, ...state.tickers.map((t) => t.market).filter((m) => !watch.markets.includes(m))];
  const live = new Set(state.watched.filter(([kind]) => kind === "ticker").map(([, m]) => m));
  const settled = watch.renewedAt !== null && Date.now() - watch.renewedAt > 10e3;
  fill("tickers", markets, (m) => m, (m) => {
    const t = byMarket.get(m);
    if (!t) {
      const why = settled && !live.has(m) ? "not live: serve cannot watch it" : "waiting for the first ticker";
      return [[m], [why, "muted"], ["–"], ["–"], ["–"]];
    }
    return [
      [m],
      [price(t.price, m)],
      [`${(100 * t.change_rate).toFixed(2)}%`, t.change_rate >= 0 ? "up" : "down"],
      [fmt(t.acc_value_24h)],
      [wallClock(t.ms).slice(11)],
    ];
  });
  // serve no longer watches one of ours that it did (restarted, or it lapsed): ask now, not
  // in a minute. (One it never could, an unknown market, is not asked for again and again.)
  for (const m of live) watch.seenLive.add(m);
  if (settled && watch.markets.some((m) => watch.seenLive.has(m) && !live.has(m))) {
    watch.seenLive.clear();
    renewWatch();
  }
}

$("watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  watch.markets = [...new Set($("watch-markets").value.toUpperCase().split(/[\s,]+/).filter(Boolean))];
  watch.seenLive.clear();
  try {
    localStorage.setItem(WATCH_KEY, JSON.stringify(watch.markets));
  } catch {
    // kept for this page only
  }
  renewWatch();
});

// -- backfill jobs ------------------------------------------------------------------------------

function jobElement(job) {
  const div = document.createElement("div");
  div.className = "job";
  div.dataset.jobId = job.id;
  const head = document.createElement("div");
  head.className = "job-title";
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", `backfill ${job.markets.join(", ")}`);
  bar.append(document.createElement("div"));
  const err = document.createElement("div");
  err.className = "error";
  err.hidden = true;
  const cancel = document.createElement("button");
  cancel.className = "small";
  cancel.textContent = "Cancel";
  cancel.setAttribute("aria-label", `Cancel backfill of ${job.markets.join(", ")}`);
  cancel.addEventListener("click", async () => {
    try {
      await api(`/admin/api/backfill/${encodeURIComponent(job.id)}`, { method: "DELETE" });
    } catch (error) {
      $("job-error").textContent = error.message;
    }
    poll();
  });
  div.append(head, bar, err, cancel);
  return div;
}

function renderJobs(jobs) {
  const box = $("jobs");
  $("jobs-empty").hidden = jobs.length > 0;
  const old = new Map([...box.children].map((div) => [div.dataset.jobId, div]));
  [...jobs].reverse().forEach((job, i) => {
    let div = old.get(job.id);
    if (div) old.delete(job.id);
    else div = jobElement(job);
    const pct = Math.round(100 * job.progress);
    const [head, bar, err, cancel] = div.children;
    const title = `${job.markets.join(", ")} ${job.timeframe} from ${wallClock(fromIso(job.since))} ${zone} — ${job.state} ${pct}%`;
    if (head.textContent !== title) head.textContent = title;
    bar.setAttribute("aria-valuenow", String(pct));
    bar.firstChild.style.width = `${pct}%`;
    err.hidden = !job.error;
    if ((job.error || "") !== err.title) {
      err.title = job.error || "";
      err.textContent = short(job.error || "", 80);
    }
    cancel.hidden = job.state !== "running";
    if (box.children[i] !== div) box.insertBefore(div, box.children[i] || null);
  });
  for (const div of old.values()) div.remove();
}

let defaultSince = "";
function setDefaultSince() {
  defaultSince = isoInZone(Date.now() - 2 * 86400e3);
  $("job-since").value = defaultSince;
}

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("job-error").textContent = "";
  const body = {
    markets: $("job-markets").value.split(/[\s,]+/).filter(Boolean),
    timeframe: $("job-timeframe").value,
    since: $("job-since").value,
    until: $("job-until").value || null,
  };
  try {
    await api("/admin/api/backfill", { method: "POST", body: JSON.stringify(body) });
  } catch (error) {
    $("job-error").textContent = error.message;
  }
  poll();
});

// -- coverage -----------------------------------------------------------------------------------

function renderCoverage(series) {
  fill("coverage", series, (s) => `${s.market} ${s.timeframe}`, (s) => [
    [s.market],
    [s.timeframe],
    [fmt(s.rows)],
    [wallClock(fromIso(s.first))],
    [wallClock(fromIso(s.last))],
    [String(Math.max(0, s.ranges.length - 1)), s.ranges.length > 1 ? "error" : ""],
  ]);
}

async function loadCoverage() {
  last.coverage = await api("/admin/api/coverage");
  renderCoverage(last.coverage);
}

// -- the candle chart ---------------------------------------------------------------------------
// Candles take Upbit's own colours unless green/red is chosen (remembered in localStorage).
// Prices in full on the right-hand axis, a crosshair under the pointer; the modebar keeps
// zoom, pan and download, without the select tools.

const COLOURS = {
  upbit: { up: "#c84a31", down: "#1261c4" },
  "green-red": { up: "#26a69a", down: "#ef5350" },
};
const COLOUR_KEY = "marketspine.chartColours";
const PAGE = 1000; // candles asked for per /api/candles request
const PLOT_CONFIG = {
  displaylogo: false,
  responsive: true,
  showSendToCloud: false,
  showEditInChartStudio: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "sendDataToCloud", "editInChartStudio"],
};
const SPIKE = { showspikes: true, spikemode: "across", spikesnap: "cursor", spikethickness: 1, spikedash: "dot", spikecolor: "#8a96a3" };
const GRID = "#26303b";

function storedColours() {
  try {
    return localStorage.getItem(COLOUR_KEY) === "green-red" ? "green-red" : "upbit";
  } catch {
    return "upbit";
  }
}

// ``seq`` numbers the chart's loads: an answer to an older one is dropped. ``draws`` counts
// the drawings (the browser test waits on it).
const chart = { market: null, timeframe: null, candles: [], seq: 0, draws: 0, colours: storedColours() };
$("chart-green-red").checked = chart.colours === "green-red";

async function drawChart() {
  await plotlyReady;
  if (!chart.market) return;
  const c = chart.candles;
  const { up, down } = COLOURS[chart.colours];
  const x = c.map((k) => wallClock(Date.parse(k.time_utc)));
  const quote = chart.market.split("-")[0];
  const traces = [
    { type: "candlestick", x, open: c.map((k) => k.open), high: c.map((k) => k.high),
      low: c.map((k) => k.low), close: c.map((k) => k.close), name: chart.market, yaxis: "y2",
      increasing: { line: { color: up }, fillcolor: up },
      decreasing: { line: { color: down }, fillcolor: down } },
    { type: "bar", x, y: c.map((k) => k.volume), name: "volume", yaxis: "y",
      marker: { color: c.map((k) => (k.close >= k.open ? up : down)) } },
  ];
  const layout = {
    // The same revision while market, timeframe and zone stay: Plotly.react then keeps the
    // operator's zoom and pan across the updates of the forming candle.
    uirevision: `${chart.market} ${chart.timeframe} ${zone}`,
    title: { text: `${chart.market} · ${chart.timeframe}`, font: { size: 15 }, x: 0.01 },
    paper_bgcolor: "#182029", plot_bgcolor: "#182029", font: { color: "#e6e9ee" },
    margin: { l: 10, r: 10, t: 36, b: 45 }, showlegend: false, hovermode: "x",
    xaxis: { rangeslider: { visible: false }, gridcolor: GRID, title: { text: `time (${zone})` }, ...SPIKE },
    yaxis: { domain: [0, 0.22], gridcolor: GRID, side: "right", automargin: true, tickformat: ",.3~s" },
    yaxis2: { domain: [0.28, 1], gridcolor: GRID, side: "right", automargin: true,
      title: { text: quote }, tickformat: ",.8~f", hoverformat: ",.8~f", ...SPIKE },
  };
  Plotly.react("chart", traces, layout, PLOT_CONFIG);
  chart.draws += 1;
  $("chart").dataset.draws = String(chart.draws);
}

// The newest ``count`` candles: the first PAGE by count, then the PAGE before the oldest
// so far by count and end (the candles just read tell the density, so a cold one sends its
// pages at once), joined oldest first.
async function fetchCandles(market, timeframe, count) {
  const base = `/admin/api/candles?market=${encodeURIComponent(market)}&timeframe=${encodeURIComponent(timeframe)}`;
  const first = await api(`${base}&count=${Math.min(count, PAGE)}`);
  let candles = first.candles;
  const sources = new Set(first.meta.sources);
  let requests = 1;
  const most = Math.ceil(count / PAGE) + 1;
  while (candles.length && candles.length < count && requests < most) {
    const end = encodeURIComponent(candles[0].time_utc);
    const want = Math.min(PAGE, count - candles.length);
    const page = await api(`${base}&count=${want}&end=${end}`);
    requests += 1;
    page.meta.sources.forEach((source) => sources.add(source));
    if (!page.candles.length) break;
    candles = page.candles.concat(candles);
  }
  return { candles: candles.slice(-count), sources: [...sources], requests };
}

async function chartFailed(market, timeframe, message) {
  // The old candles go: they must never stand under another market's error.
  Object.assign(chart, { market: null, timeframe: null, candles: [] });
  const overlay = $("chart-error");
  overlay.textContent = `${market} ${timeframe}: ${short(message, 120)}`;
  overlay.title = message;
  overlay.hidden = false;
  $("chart-status").className = "error";
  $("chart-status").textContent = "failed";
  await plotlyReady;
  if (!chart.market) Plotly.purge("chart");
}

async function loadChart() {
  const market = $("chart-market").value.trim().toUpperCase();
  const timeframe = $("chart-timeframe").value;
  const count = Math.max(1, Number($("chart-count").value) || 120);
  const seq = ++chart.seq;
  $("chart-status").className = "muted";
  $("chart-status").textContent = "loading…";
  try {
    const answer = await fetchCandles(market, timeframe, count);
    if (seq !== chart.seq) return;
    Object.assign(chart, { market, timeframe, candles: answer.candles });
    $("chart-error").hidden = true;
    await drawChart(); // the status says what is drawn: after the drawing
    if (seq !== chart.seq) return;
    const pages = answer.requests > 1 ? ` in ${answer.requests} requests` : "";
    $("chart-status").textContent = `${answer.candles.length} candles from ${answer.sources.join("+")}${pages}`;
  } catch (error) {
    if (seq === chart.seq) await chartFailed(market, timeframe, error.message);
  }
}

async function updateForming() {
  if (!chart.market || document.hidden) return;
  const { market, timeframe, seq } = chart;
  const answer = await api(`/admin/api/candles?market=${encodeURIComponent(market)}&timeframe=${timeframe}&count=2`);
  if (seq !== chart.seq || market !== chart.market) return; // another chart since
  for (const k of answer.candles) {
    const at = chart.candles.findIndex((c) => c.time_utc === k.time_utc);
    if (at >= 0) chart.candles[at] = k;
    else if (!chart.candles.length || k.time_utc > chart.candles[chart.candles.length - 1].time_utc) chart.candles.push(k);
  }
  await drawChart();
}

$("chart-form").addEventListener("submit", (event) => {
  event.preventDefault();
  loadChart();
});

$("chart-green-red").addEventListener("change", () => {
  chart.colours = $("chart-green-red").checked ? "green-red" : "upbit";
  try {
    localStorage.setItem(COLOUR_KEY, chart.colours);
  } catch {
    // not remembered (storage disabled): the choice still holds on this page
  }
  if (chart.market) drawChart();
});

// -- the run history: warmups and backfill jobs -------------------------------------------------

const HISTORY_ROWS = 50; // rows in the table; the chart shows every run fetched

function runResult(run) {
  if (run.results.length && run.results[0].exchange !== undefined) {
    return run.results.map((r) => `${r.exchange} ${r.ok ? "ok" : "failed"}`).join(", ");
  }
  const ok = run.results.filter((r) => r.ok).length;
  return `${run.label || "job"}: ${ok}/${run.markets} markets`;
}

async function drawHistory(kind, history) {
  const runs = [...history.runs].reverse(); // oldest first, for the time axis
  const s = history.summary;
  const rate = $("history-rate");
  await plotlyReady;
  if (!s.count) {
    rate.className = "muted";
    rate.textContent = "no runs yet";
    Plotly.purge("history-chart");
    return;
  }
  const pct = (100 * s.success_rate).toFixed(1);
  rate.className = s.meets_target ? "ok" : "error";
  rate.textContent = `success ${pct}% of ${s.count} runs (target ${100 * s.target}%), median ${fmt(s.median_duration_ms / 1000, 3)} s, max ${fmt(s.max_duration_ms / 1000, 3)} s`;
  const x = runs.map((r) => wallClock(fromIso(r.started)));
  const traces = [
    { type: "scatter", mode: "lines+markers", x, y: runs.map((r) => r.markets), name: "markets",
      yaxis: "y2", line: { color: "#8a96a3", dash: "dot", shape: "hv" }, marker: { size: 5, color: "#8a96a3" } },
    { type: "scatter", mode: "lines+markers", x, y: runs.map((r) => r.duration_ms / 1000),
      name: "duration (s)", line: { color: "#4f8cff" },
      marker: { size: 7, color: runs.map((r) => (r.ok ? "#4f8cff" : "#ef5350")) } },
  ];
  const layout = {
    uirevision: `${kind} ${zone}`,
    title: { text: `${kind === "warmup" ? "warmups" : "backfill jobs"}: success ${pct}% (target ${100 * s.target}%)`, font: { size: 13 }, x: 0.01 },
    paper_bgcolor: "#182029", plot_bgcolor: "#182029", font: { color: "#e6e9ee" },
    margin: { l: 50, r: 50, t: 32, b: 40 }, showlegend: true, legend: { orientation: "h", y: 1.15, x: 1, xanchor: "right" },
    xaxis: { gridcolor: GRID, title: { text: `time (${zone})` } },
    yaxis: { gridcolor: GRID, title: { text: "duration (s)" }, rangemode: "tozero" },
    yaxis2: { overlaying: "y", side: "right", title: { text: "markets" }, showgrid: false, rangemode: "tozero" },
  };
  Plotly.react("history-chart", traces, layout, PLOT_CONFIG);
}

function renderHistory(kind, history) {
  fill("history", history.runs.slice(0, HISTORY_ROWS), (run) => `${run.started_ms} ${run.trigger}`, (run) => [
    [wallClock(run.started_ms)],
    [run.trigger],
    [`${fmt(run.duration_ms / 1000, 3)} s`],
    [fmt(run.markets)],
    [runResult(run), run.ok ? "ok" : "error"],
    [short(run.error || "", 60), "", run.error || ""],
  ], (run) => (run.ok ? "" : "failed"));
  return drawHistory(kind, history);
}

async function loadHistory() {
  const kind = $("history-kind").value;
  const answer = await api(`/admin/api/${kind}/history?limit=200`);
  if (kind !== $("history-kind").value) return; // switched meanwhile
  last.history = { kind, answer };
  await renderHistory(kind, answer);
}

$("history-kind").addEventListener("change", () => loadHistory().catch(() => {}));

// -- outages ------------------------------------------------------------------------------------
// One short line while serve does not answer the page or the breaker to Upbit is not closed,
// with the time of the last good refresh; gone at the first good answer with the breaker
// closed. The error's own text goes into the line's title, not on the page.

const health = {
  lastGood: null, serveDownSince: null, upstreamDownSince: null, detail: "", heldCandles: 0,
};

function renderOutage() {
  const box = $("outage");
  const good = health.lastGood === null ? "none yet" : clockTime(health.lastGood);
  let text = "";
  if (health.serveDownSince !== null) {
    text = `serve is not answering (since ${clockTime(health.serveDownSince)}): last good refresh ${good}; retrying`;
  } else if (health.upstreamDownSince !== null) {
    text = `Upbit is unavailable (since ${clockTime(health.upstreamDownSince)}, ${health.detail}): answers come from what serve holds`;
  } else if (health.heldCandles > 0) {
    text = `the candle database has no room (a full disk): ${health.heldCandles.toLocaleString("en-US")} candles held in memory until it does; free space on its disk`;
  }
  if (box.textContent !== text) box.textContent = text;
  box.title = health.serveDownSince !== null ? health.detail : "";
  box.hidden = !text;
}

function pollFailed(error) {
  if (health.serveDownSince === null) health.serveDownSince = Date.now();
  health.detail = error.message;
  renderOutage();
}

function pollAnswered(state) {
  const wasDown = health.serveDownSince !== null || health.upstreamDownSince !== null;
  health.lastGood = Date.now();
  health.serveDownSince = null;
  health.heldCandles = state.held_candles || 0;
  const breaker = state.upstream.breaker.toLowerCase();
  if (breaker === "closed") health.upstreamDownSince = null;
  else {
    if (health.upstreamDownSince === null) health.upstreamDownSince = Date.now();
    health.detail = `breaker ${breaker}`;
  }
  renderOutage();
  // Recovered: what failed during the outage is asked for again.
  if (wasDown && health.upstreamDownSince === null) {
    const status = $("market-status");
    if (status.classList.contains("error")) {
      const failed = state.warmup && !state.warmup.success;
      status.textContent = failed ? "Upbit answers again: press Refresh market info to retry" : "";
      status.title = "";
      status.className = "status muted";
    }
    if (!$("chart-error").hidden || (chart.market && !chart.candles.length)) loadChart();
    loadCoverage().catch(() => {});
    if (!$("market-list").options.length) loadMarkets().catch(() => {});
  }
}

// -- log out and polling ------------------------------------------------------------------------

$("logout-btn").addEventListener("click", async () => {
  await api("/admin/logout", { method: "POST" });
  window.location.href = "/admin";
});

function render(state) {
  renderWarmup(state.warmup);
  renderHealth(state);
  renderTickers(state);
  renderJobs(state.jobs);
  renderWatch();
  renderOutage();
  $("updated").textContent = health.lastGood === null ? "" : `updated ${clockTime(health.lastGood)}`;
}

async function poll() {
  let state;
  try {
    state = await api("/admin/api/state");
  } catch (error) {
    pollFailed(error);
    return;
  }
  last.state = state;
  pollAnswered(state);
  render(state);
}

showZone();
setDefaultSince();
const kept = storedWatch();
if (kept) {
  watch.markets = kept;
  $("watch-markets").value = kept.join(" ");
}
renewWatch();
poll();
loadMarkets().catch(() => {});
loadCoverage().catch(() => {});
loadChart();
loadHistory().catch(() => {});
setInterval(poll, 1500);
setInterval(() => loadCoverage().catch(() => {}), 5000);
setInterval(() => loadHistory().catch(() => {}), 5000);
setInterval(() => updateForming().catch(() => {}), 3000);
