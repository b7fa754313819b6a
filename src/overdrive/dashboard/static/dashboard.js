// The overdrive dashboard: snapshots from /dashboard/live (SSE) drawn into the page.
// No framework and no build step. Every figure is written with textContent (never
// as HTML): key names, models and alert labels come from callers' traffic.

const HISTORY_SECONDS = 300;      // rates and sparklines look back this far
const HISTORY_MAX = 1200;         // bound on kept snapshots whatever the interval
const RATE_WINDOW_SECONDS = 10;   // a rate is the change over about this long
const RECONNECT_MAX_MS = 30000;

const history = [];               // {at, requests, tokens, cost}, oldest first
let received = 0;

const $ = (id) => document.getElementById(id);

function remember(snap) {
  const t = snap.totals;
  history.push({
    at: snap.at,
    requests: t.requests,
    tokens: t.prompt_tokens + t.completion_tokens,
    cost: t.cost_usd,
  });
  const oldest = snap.at - HISTORY_SECONDS;
  while (history.length > HISTORY_MAX || (history.length > 1 && history[0].at < oldest)) {
    history.shift();
  }
}

// The change of `field` per second over the last RATE_WINDOW_SECONDS (null until two points).
function rate(field) {
  if (history.length < 2) return null;
  const last = history[history.length - 1];
  let first = history[0];
  for (const point of history) {
    if (last.at - point.at <= RATE_WINDOW_SECONDS) { first = point; break; }
  }
  if (first === last) first = history[history.length - 2];
  const span = last.at - first.at;
  return span > 0 ? Math.max(0, (last[field] - first[field]) / span) : null;
}

// Per-interval rates of `field` across the history, for a sparkline.
function rates(field) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const span = history[i].at - history[i - 1].at;
    if (span > 0) out.push(Math.max(0, (history[i][field] - history[i - 1][field]) / span));
  }
  return out;
}

function spark(svg, values) {
  const ns = "http://www.w3.org/2000/svg";
  let line = svg.querySelector("polyline");
  if (!line) { line = document.createElementNS(ns, "polyline"); svg.appendChild(line); }
  if (values.length < 2) { line.setAttribute("points", ""); return; }
  const top = Math.max(...values) || 1;
  const step = 200 / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(38 - (v / top) * 36).toFixed(1)}`);
  line.setAttribute("points", points.join(" "));
}

const num = (v, digits = 0) =>
  v === null || v === undefined ? "–" : Number(v).toLocaleString("en", { maximumFractionDigits: digits });
const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);
const secs = (v) => (v === null || v === undefined ? "–" : v < 1 ? `${(v * 1000).toFixed(1)} ms` : `${v.toFixed(2)} s`);
const usd = (v) => (v === null || v === undefined ? "–" : `$${Number(v).toFixed(v < 1 ? 4 : 2)}`);
const pairs = (obj) => Object.entries(obj || {}).map(([k, v]) => `${k}=${typeof v === "number" ? num(v, 3) : v}`).join(" ");

// Replace a table's body: one row per item, or one muted row saying why it is empty.
function fill(tableId, items, cells, empty) {
  const body = $(tableId).tBodies[0];
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    for (const cell of cells(item)) {
      const td = document.createElement("td");
      if (cell && typeof cell === "object") { td.textContent = cell.text; td.className = cell.cls; }
      else td.textContent = cell;
      tr.appendChild(td);
    }
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    td.className = "empty";
    td.textContent = empty;
    tr.appendChild(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function drawTiles(snap) {
  const t = snap.totals;
  const reqRate = rate("requests");
  $("request-rate").textContent = reqRate === null ? "–" : num(reqRate, 1);
  $("request-rate").dataset.value = reqRate === null ? "" : String(reqRate);
  $("token-rate").textContent = rate("tokens") === null ? "–" : num(rate("tokens"), 0);
  spark($("request-chart"), rates("requests"));
  spark($("token-chart"), rates("tokens"));
  const requests = $("requests");
  requests.textContent = num(t.requests);
  requests.dataset.value = String(t.requests);   // the raw figure, for scripts and tests
  $("requests-detail").textContent = `${num(t.upstream_requests)} sent upstream · ${num(t.coalesced)} coalesced`;
  $("hit-exact").textContent = pct(snap.hit_ratio.exact);
  $("hit-detail").textContent = `${num(t.cache_hits)} hits · ${num(t.cache_misses)} misses`;
  $("hit-semantic").textContent = pct(snap.hit_ratio.semantic);
  const throttled = $("throttled");
  throttled.textContent = `${num(t.rate_limited)} · ${num(t.retries)}`;
  throttled.dataset.rateLimited = String(t.rate_limited);
  throttled.dataset.retries = String(t.retries);
  $("errors").textContent = `${num(t.upstream_errors)} upstream errors`;
  $("spend").textContent = usd(t.cost_usd);
  const spendRate = rate("cost");
  $("spend-rate").textContent = spendRate === null ? "" : `${usd(spendRate * 3600)} / hour now`;
}

const STAGE_NAMES = {
  queue: "queue", upstream: "upstream", semantic: "semantic lookup",
  other: "cache, coalesce, rest", tool_queue: "tool queue", tool_running: "tools running",
};

function drawStages(snap) {
  const entries = Object.entries(snap.stages);
  const top = Math.max(...entries.map(([, v]) => v), 0);
  const rows = entries.map(([name, seconds]) => {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.stage = name;
    const label = document.createElement("span");
    label.textContent = STAGE_NAMES[name] || name;
    const track = document.createElement("div");
    track.className = "track";
    const bar = document.createElement("div");
    bar.className = "fill";
    bar.style.width = `${top > 0 ? (seconds / top) * 100 : 0}%`;
    track.appendChild(bar);
    const value = document.createElement("span");
    value.className = "secs";
    value.textContent = secs(seconds);
    row.append(label, track, value);
    return row;
  });
  $("stages").replaceChildren(...rows);
  const a = snap.analysis;
  $("bottleneck").textContent = a.bottleneck
    ? `Bottleneck (last 5 min): ${a.bottleneck}. Shares: ${pairs(a.stages)}`
    : "No bottleneck found in the last 5 minutes.";
}

function drawLatency(snap) {
  const rows = [];
  for (const [by, list] of Object.entries(snap.latency)) {
    for (const row of list) rows.push({ by: by.replace("by_", ""), ...row });
  }
  fill("latency", rows, (r) => [r.by, r.name, num(r.count), secs(r.p50), secs(r.p95), secs(r.p99)],
    "No call has finished yet.");
}

function drawUpstreams(snap) {
  fill("upstreams", snap.upstreams, (u) => [
    u.name, { text: u.state, cls: `state-${u.state}` }, num(u.requests), num(u.rate_limited),
    num(u.retries), num(u.errors), num(u.in_flight), num(u.waiting),
  ], "No upstream configured.");
}

// Alert states (monitor/_alerts.py): inactive, pending, firing, resolved. Firing first,
// then pending (about to fire); the quiet ones are only counted.
const SHOWN = { firing: 0, pending: 1 };

function drawAlerts(snap) {
  const list = $("alerts");
  const loud = snap.alerts
    .filter((a) => String(a.state || "firing") in SHOWN)
    .sort((a, b) => SHOWN[a.state || "firing"] - SHOWN[b.state || "firing"]);
  const items = loud.map((a) => {
    const li = document.createElement("li");
    const state = a.state || "firing";
    li.className = `alert-${state}`;
    const value = a.value === undefined || a.value === null ? "" : ` = ${num(a.value, 4)}`;
    const severity = a.severity ? ` [${a.severity}]` : "";
    li.textContent = `${state}${severity} ${a.rule || a.name || "alert"} ${a.series || pairs(a.labels)}${value}`
      .replace(/\s+/g, " ");
    li.title = a.expression || "";
    return li;
  });
  if (items.length === 0) {
    const li = document.createElement("li");
    li.className = "empty";
    const rules = new Set(snap.alerts.map((a) => a.rule || a.name)).size;
    li.textContent = rules ? `No alert is firing (${rules} rules judged).` : "No alert rules are judged here.";
    items.push(li);
  }
  list.replaceChildren(...items);
  list.dataset.firing = String(loud.filter((a) => (a.state || "firing") === "firing").length);
}

function drawKeys(snap) {
  fill("keys", snap.keys, (k) => [k.key || "(no key)", num(k.requests), num(k.errors), pairs(k.codes), usd(k.cost_usd)],
    "No gateway traffic (or no gateway: in-process engine).");
  const models = Object.entries(snap.spend).map(([model, dollars]) => ({ model, dollars }));
  fill("spend-models", models, (m) => [m.model, usd(m.dollars)], "Nothing priced yet.");
}

function drawTuning(snap) {
  const tunables = Object.entries(snap.tunables).map(([name, value]) => ({ name, value }));
  fill("tunables", tunables, (t) => [t.name, num(t.value, 4)], "No tunables.");
  fill("decisions", snap.decisions, (d) => [
    d.tunable, `${num(d.old, 4)} → ${num(d.new, 4)}`, d.reason || d.finding,
    pairs(d.before), d.after ? pairs(d.after) : "pending", { text: d.outcome, cls: `outcome-${d.outcome}` },
  ], "The optimizer has made no decision (or is not running).");
}

function render(snap) {
  remember(snap);
  received += 1;
  drawTiles(snap);
  drawStages(snap);
  drawLatency(snap);
  drawUpstreams(snap);
  drawAlerts(snap);
  drawKeys(snap);
  drawTuning(snap);
  $("updated").textContent = `updated ${new Date(snap.wall * 1000).toLocaleTimeString()}`;
  document.body.dataset.snapshots = String(received);
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

// EventSource reconnects by itself after a dropped connection; after a refusal
// (401, 503: too many clients) it gives up, so we try again, backing off.
function connect(delay = 1000) {
  const source = new EventSource("/dashboard/live");
  source.addEventListener("open", () => { delay = 1000; setStatus("live", "live"); });
  source.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      setStatus("lost", `disconnected, retrying in ${Math.round(delay / 1000)} s`);
      setTimeout(() => connect(Math.min(delay * 2, RECONNECT_MAX_MS)), delay);
    } else {
      setStatus("lost", "reconnecting…");
    }
  });
}

connect();
