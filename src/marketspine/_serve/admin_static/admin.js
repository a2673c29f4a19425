// The admin page: polls the service's JSON and draws it. Every state-changing request
// carries the session's CSRF token in X-CSRF-Token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);

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

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tableId, rows, render) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of rows) render(body.insertRow(), item);
}

const fmt = (n, digits = 0) =>
  n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
const when = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : "–");

// -- market info and the refresh button ----------------------------------------------------

function renderWarmup(warmup) {
  const details = warmup ? Object.entries(warmup.exchange_details || {}) : [];
  fill("exchanges", details, (row, [name, d]) => {
    cell(row, name);
    cell(row, d.success ? fmt(d.markets) : "–");
    cell(row, when(warmup.finished_at));
    cell(row, `${fmt(warmup.execution_time, 3)} s`);
    cell(row, d.success ? "ok" : d.error || "failed", d.success ? "ok" : "error");
  });
}

$("refresh-market-btn").addEventListener("click", async () => {
  const status = $("market-status");
  const button = $("refresh-market-btn");
  button.disabled = true;
  status.className = "status muted";
  status.textContent = "refreshing…";
  try {
    const report = await api("/admin/api/refresh-market-info", { method: "POST" });
    const failed = Object.entries(report.exchange_details || {}).filter(([, d]) => !d.success);
    if (report.success) {
      status.className = "status ok";
      status.textContent = `refreshed ${report.total_markets} markets (${report.refreshed_exchanges.join(", ")}) in ${report.execution_time} s`;
    } else {
      status.className = "status error";
      status.textContent = "failed: " + failed.map(([n, d]) => `${n}: ${d.error || "failed"}`).join("; ");
    }
  } catch (error) {
    status.className = "status error";
    status.textContent = `failed: ${error.message}`;
  } finally {
    button.disabled = false;
    poll();
    loadHistory().catch(() => {});
  }
});

// -- health ---------------------------------------------------------------------------------

function renderHealth(state) {
  const breaker = $("breaker");
  breaker.textContent = `upstream breaker: ${state.upstream.breaker}`;
  breaker.className = `pill ${state.upstream.breaker.toLowerCase()}`;
  fill("budget", Object.entries(state.budget), (row, [group, g]) => {
    cell(row, group);
    cell(row, fmt(g.used));
    cell(row, fmt(g.remaining));
    cell(row, fmt(g.waiting));
    cell(row, fmt(g.rate_limited), g.rate_limited ? "error" : "");
    cell(row, fmt(g.banned), g.banned ? "error" : "");
  });
  const total = Object.values(state.layers).reduce((a, b) => a + b, 0);
  const layers = $("layers");
  layers.replaceChildren();
  for (const [name, count] of Object.entries(state.layers)) {
    const line = document.createElement("div");
    line.className = "layer";
    const label = document.createElement("span");
    label.textContent = `${name}: ${fmt(count)}`;
    const bar = document.createElement("div");
    bar.className = "bar";
    const inner = document.createElement("div");
    inner.style.width = `${total ? (100 * count) / total : 0}%`;
    bar.append(inner);
    line.append(label, bar);
    layers.append(line);
  }
  const rate = document.createElement("div");
  rate.className = "muted";
  rate.textContent = state.hit_rate === null ? "no answers yet" : `hit rate (not upstream): ${(100 * state.hit_rate).toFixed(1)}%`;
  layers.append(rate);
  const ws = state.websocket;
  $("websocket").textContent = ws
    ? `${ws.clients} clients, ${ws.subscriptions} subscriptions, ${ws.upstream_pairs} upstream pairs, ${ws.dropped_clients} dropped, ${fmt(ws.frames_sent)} frames sent, ${ws.snapshot_joins} snapshot joins (${fmt(ws.snapshot_join_trades)} trades filled, ${ws.snapshot_joins_incomplete} incomplete)`
    : "no gateway";
  fill("tickers", state.tickers, (row, t) => {
    cell(row, t.market);
    cell(row, fmt(t.price, 8));
    const pct = (100 * t.change_rate).toFixed(2) + "%";
    cell(row, pct, t.change_rate >= 0 ? "up" : "down");
    cell(row, fmt(t.acc_value_24h));
  });
}

// -- backfill jobs ----------------------------------------------------------------------------

function renderJobs(jobs) {
  const box = $("jobs");
  box.replaceChildren();
  if (!jobs.length) {
    box.textContent = "no jobs yet";
    box.className = "muted";
    return;
  }
  box.className = "";
  for (const job of [...jobs].reverse()) {
    const div = document.createElement("div");
    div.className = "job";
    div.dataset.jobId = job.id;
    const pct = Math.round(100 * job.progress);
    const head = document.createElement("div");
    head.textContent = `${job.markets.join(", ")} ${job.timeframe} from ${job.since} — ${job.state} ${pct}%`;
    head.className = "job-title";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuenow", String(pct));
    const inner = document.createElement("div");
    inner.style.width = `${pct}%`;
    bar.append(inner);
    div.append(head, bar);
    if (job.error) {
      const err = document.createElement("div");
      err.className = "error";
      err.textContent = job.error;
      div.append(err);
    }
    if (job.state === "running") {
      const cancel = document.createElement("button");
      cancel.className = "small";
      cancel.textContent = "Cancel";
      cancel.addEventListener("click", async () => {
        try {
          await api(`/admin/api/backfill/${encodeURIComponent(job.id)}`, { method: "DELETE" });
        } catch (error) {
          $("job-error").textContent = error.message;
        }
        poll();
      });
      div.append(cancel);
    }
    box.append(div);
  }
}

$("job-since").value = new Date(Date.now() - 2 * 86400e3).toISOString().slice(0, 16) + "Z";
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

// -- coverage -------------------------------------------------------------------------------

async function loadCoverage() {
  const series = await api("/admin/api/coverage");
  fill("coverage", series, (row, s) => {
    cell(row, s.market);
    cell(row, s.timeframe);
    cell(row, fmt(s.rows));
    cell(row, s.first || "–");
    cell(row, s.last || "–");
    cell(row, String(Math.max(0, s.ranges.length - 1)), s.ranges.length > 1 ? "error" : "");
  });
}

// -- the candle chart -------------------------------------------------------------------------
// Times are UTC throughout the page (the header's "updated … UTC", tables ending in Z, the
// chart's "time (UTC)" axis). Candles take Upbit's own colours unless green/red is chosen
// (remembered in localStorage).

const COLOURS = {
  upbit: { up: "#c84a31", down: "#1261c4" },
  "green-red": { up: "#26a69a", down: "#ef5350" },
};
const COLOUR_KEY = "marketspine.chartColours";
const PAGE = 1000; // candles asked for per /api/candles request
const TF_MS = {
  "1m": 60e3, "3m": 180e3, "5m": 300e3, "15m": 900e3, "30m": 1800e3,
  "1h": 3600e3, "4h": 4 * 3600e3, "1d": 86400e3, "1w": 7 * 86400e3,
};

function storedColours() {
  try {
    return localStorage.getItem(COLOUR_KEY) === "green-red" ? "green-red" : "upbit";
  } catch {
    return "upbit";
  }
}

// ``seq`` numbers the chart's loads: an answer to an older one is dropped.
const chart = { market: null, timeframe: null, candles: [], seq: 0, colours: storedColours() };
$("chart-green-red").checked = chart.colours === "green-red";

function drawChart() {
  const c = chart.candles;
  const { up, down } = COLOURS[chart.colours];
  const x = c.map((k) => k.time_utc);
  const traces = [
    { type: "candlestick", x, open: c.map((k) => k.open), high: c.map((k) => k.high),
      low: c.map((k) => k.low), close: c.map((k) => k.close), name: chart.market, yaxis: "y2",
      increasing: { line: { color: up }, fillcolor: up },
      decreasing: { line: { color: down }, fillcolor: down } },
    { type: "bar", x, y: c.map((k) => k.volume), name: "volume", yaxis: "y",
      marker: { color: c.map((k) => (k.close >= k.open ? up : down)) } },
  ];
  const layout = {
    title: { text: `${chart.market} · ${chart.timeframe}`, font: { size: 15 }, x: 0.01 },
    paper_bgcolor: "#182029", plot_bgcolor: "#182029", font: { color: "#e6e9ee" },
    margin: { l: 50, r: 20, t: 36, b: 45 }, showlegend: false,
    xaxis: { rangeslider: { visible: false }, gridcolor: "#26303b", title: { text: "time (UTC)" } },
    yaxis: { domain: [0, 0.22], gridcolor: "#26303b" },
    yaxis2: { domain: [0.28, 1], gridcolor: "#26303b" },
  };
  Plotly.react("chart", traces, layout, { displaylogo: false, responsive: true });
}

// The newest ``count`` candles: the first PAGE by count, then earlier windows by start/end
// (a window of a quiet market may hold fewer), joined oldest first.
async function fetchCandles(market, timeframe, count) {
  const base = `/admin/api/candles?market=${encodeURIComponent(market)}&timeframe=${encodeURIComponent(timeframe)}`;
  const first = await api(`${base}&count=${Math.min(count, PAGE)}`);
  let candles = first.candles;
  const sources = new Set(first.meta.sources);
  let requests = 1;
  const step = TF_MS[timeframe];
  const most = 2 * Math.ceil(count / PAGE) + 4; // a sparse market stops here
  while (step && candles.length && candles.length < count && requests < most) {
    const end = Date.parse(candles[0].time_utc);
    const want = Math.min(PAGE, count - candles.length);
    const iso = (ms) => encodeURIComponent(new Date(ms).toISOString());
    const page = await api(`${base}&start=${iso(end - want * step)}&end=${iso(end)}`);
    requests += 1;
    page.meta.sources.forEach((source) => sources.add(source));
    if (!page.candles.length) break;
    candles = page.candles.concat(candles);
  }
  return { candles: candles.slice(-count), sources: [...sources], requests };
}

function chartFailed(market, timeframe, message) {
  // The old candles go: they must never stand under another market's error.
  Object.assign(chart, { market: null, timeframe: null, candles: [] });
  Plotly.purge("chart");
  const overlay = $("chart-error");
  overlay.textContent = `${market} ${timeframe}: ${message}`;
  overlay.hidden = false;
  $("chart-status").className = "error";
  $("chart-status").textContent = "failed";
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
    const pages = answer.requests > 1 ? ` in ${answer.requests} requests` : "";
    $("chart-status").textContent = `${answer.candles.length} candles from ${answer.sources.join("+")}${pages}`;
    drawChart();
  } catch (error) {
    if (seq === chart.seq) chartFailed(market, timeframe, error.message);
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
  drawChart();
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

// -- the run history: warmups and backfill jobs -----------------------------------------------

const HISTORY_ROWS = 50; // rows in the table; the chart shows every run fetched

function runResult(run) {
  if (run.results.length && run.results[0].exchange !== undefined) {
    return run.results.map((r) => `${r.exchange} ${r.ok ? "ok" : "failed"}`).join(", ");
  }
  const ok = run.results.filter((r) => r.ok).length;
  return `${run.label || "job"}: ${ok}/${run.markets} markets`;
}

function drawHistory(kind, history) {
  const runs = [...history.runs].reverse(); // oldest first, for the time axis
  const s = history.summary;
  const rate = $("history-rate");
  if (!s.count) {
    rate.className = "muted";
    rate.textContent = "no runs yet";
    Plotly.purge("history-chart");
    return;
  }
  const pct = (100 * s.success_rate).toFixed(1);
  rate.className = s.meets_target ? "ok" : "error";
  rate.textContent = `success ${pct}% of ${s.count} runs (target ${100 * s.target}%), median ${fmt(s.median_duration_ms / 1000, 3)} s, max ${fmt(s.max_duration_ms / 1000, 3)} s`;
  const x = runs.map((r) => r.started);
  const traces = [
    { type: "scatter", mode: "lines+markers", x, y: runs.map((r) => r.markets), name: "markets",
      yaxis: "y2", line: { color: "#8a96a3", dash: "dot", shape: "hv" }, marker: { size: 5, color: "#8a96a3" } },
    { type: "scatter", mode: "lines+markers", x, y: runs.map((r) => r.duration_ms / 1000),
      name: "duration (s)", line: { color: "#4f8cff" },
      marker: { size: 7, color: runs.map((r) => (r.ok ? "#4f8cff" : "#ef5350")) } },
  ];
  const layout = {
    title: { text: `${kind === "warmup" ? "warmups" : "backfill jobs"}: success ${pct}% (target ${100 * s.target}%)`, font: { size: 13 }, x: 0.01 },
    paper_bgcolor: "#182029", plot_bgcolor: "#182029", font: { color: "#e6e9ee" },
    margin: { l: 50, r: 50, t: 32, b: 40 }, showlegend: true, legend: { orientation: "h", y: 1.15, x: 1, xanchor: "right" },
    xaxis: { gridcolor: "#26303b", title: { text: "time (UTC)" } },
    yaxis: { gridcolor: "#26303b", title: { text: "duration (s)" }, rangemode: "tozero" },
    yaxis2: { overlaying: "y", side: "right", title: { text: "markets" }, showgrid: false, rangemode: "tozero" },
  };
  Plotly.react("history-chart", traces, layout, { displaylogo: false, responsive: true });
}

async function loadHistory() {
  const kind = $("history-kind").value;
  const history = await api(`/admin/api/${kind}/history?limit=200`);
  if (kind !== $("history-kind").value) return; // switched meanwhile
  fill("history", history.runs.slice(0, HISTORY_ROWS), (row, run) => {
    row.className = run.ok ? "" : "failed";
    cell(row, run.started.replace("T", " "));
    cell(row, run.trigger);
    cell(row, `${fmt(run.duration_ms / 1000, 3)} s`);
    cell(row, fmt(run.markets));
    cell(row, runResult(run), run.ok ? "ok" : "error");
    cell(row, run.error || "");
  });
  drawHistory(kind, history);
}

$("history-kind").addEventListener("change", () => loadHistory().catch(() => {}));

// -- live tickers and log out -------------------------------------------------------------------

$("watch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const markets = $("watch-markets").value.split(/[\s,]+/).filter(Boolean);
  try {
    await api("/admin/api/watch", { method: "POST", body: JSON.stringify({ markets }) });
  } catch (error) {
    $("job-error").textContent = error.message;
  }
});

$("logout-btn").addEventListener("click", async () => {
  await api("/admin/logout", { method: "POST" });
  window.location.href = "/admin";
});

// -- polling ----------------------------------------------------------------------------------

async function poll() {
  try {
    const state = await api("/admin/api/state");
    renderWarmup(state.warmup);
    renderHealth(state);
    renderJobs(state.jobs);
    $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
  } catch (error) {
    $("updated").textContent = `not updated: ${error.message}`;
  }
}

poll();
loadCoverage();
loadChart();
loadHistory().catch(() => {});
setInterval(poll, 1500);
setInterval(() => loadCoverage().catch(() => {}), 5000);
setInterval(() => loadHistory().catch(() => {}), 5000);
setInterval(() => updateForming().catch(() => {}), 3000);
