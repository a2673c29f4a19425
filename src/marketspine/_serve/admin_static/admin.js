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

const chart = { market: null, timeframe: null, candles: [] };

function drawChart() {
  const c = chart.candles;
  const x = c.map((k) => k.time_utc);
  const up = c.map((k) => (k.close >= k.open ? "#26a69a" : "#ef5350"));
  const traces = [
    { type: "candlestick", x, open: c.map((k) => k.open), high: c.map((k) => k.high),
      low: c.map((k) => k.low), close: c.map((k) => k.close), name: chart.market, yaxis: "y2" },
    { type: "bar", x, y: c.map((k) => k.volume), marker: { color: up }, name: "volume", yaxis: "y" },
  ];
  const layout = {
    paper_bgcolor: "#182029", plot_bgcolor: "#182029", font: { color: "#e6e9ee" },
    margin: { l: 50, r: 20, t: 10, b: 30 }, showlegend: false,
    xaxis: { rangeslider: { visible: false }, gridcolor: "#26303b" },
    yaxis: { domain: [0, 0.22], gridcolor: "#26303b" },
    yaxis2: { domain: [0.28, 1], gridcolor: "#26303b" },
  };
  Plotly.react("chart", traces, layout, { displaylogo: false, responsive: true });
}

async function loadChart() {
  const market = $("chart-market").value.trim().toUpperCase();
  const timeframe = $("chart-timeframe").value;
  const count = $("chart-count").value || "120";
  $("chart-status").textContent = "loading…";
  try {
    const answer = await api(`/admin/api/candles?market=${encodeURIComponent(market)}&timeframe=${timeframe}&count=${count}`);
    Object.assign(chart, { market, timeframe, candles: answer.candles });
    $("chart-status").textContent = `${answer.candles.length} candles from ${answer.meta.sources.join("+")}`;
    drawChart();
  } catch (error) {
    $("chart-status").textContent = error.message;
  }
}

async function updateForming() {
  if (!chart.market || document.hidden) return;
  const answer = await api(`/admin/api/candles?market=${encodeURIComponent(chart.market)}&timeframe=${chart.timeframe}&count=2`);
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
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    $("updated").textContent = `not updated: ${error.message}`;
  }
}

poll();
loadCoverage();
loadChart();
setInterval(poll, 1500);
setInterval(() => loadCoverage().catch(() => {}), 5000);
setInterval(() => updateForming().catch(() => {}), 3000);
