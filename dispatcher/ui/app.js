// Squall's operator console: plain JavaScript over the HTTP API, charts as hand-written SVG.
// The key lives in sessionStorage; the API's answers decide what is shown (scopes from
// /v1/whoami, statuses from the OpenAPI document), so nothing here is a second source of truth.
"use strict";

const KEY = "squall.key";
const state = { key: null, who: null, statuses: null, timers: [], fleetHistory: {} };

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    signOut("The key was refused (expired or revoked?). Sign in again.");
    throw new ApiError(401, "unauthorized", "signed out");
  }
  const text = await response.text();
  let body = null;
  if (text) {
    try { body = JSON.parse(text); } catch (_) { body = text; }
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : { code: String(response.status), message: text || response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return body;
}

function can(scope) {
  const scopes = (state.who && state.who.scopes) || [];
  return scopes.includes("admin") || scopes.includes(scope);
}

// ---------- small DOM helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function view() { return document.getElementById("view"); }

function notice(message) {
  const box = document.getElementById("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

function showError(error) {
  if (error instanceof ApiError && error.status === 401) return;
  notice(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error));
}

function statusBadge(status) { return el("span", { class: "status " + status }, status); }

function table(headers, rows, attrs = {}) {
  return el("div", { class: "table-wrap" },
    el("table", attrs,
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", typeof h === "object" ? h : {}, typeof h === "object" ? h.label : h)))),
      el("tbody", {}, rows)));
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1) return ms.toFixed(3) + " ms";
  if (ms < 1000) return ms.toFixed(1) + " ms";
  return (ms / 1000).toFixed(2) + " s";
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function hex(base64) {
  const bytes = atob(base64);
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const chunk = bytes.slice(i, i + 16);
    const hexes = Array.from(chunk, (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(chunk, (c) => (c.charCodeAt(0) >= 32 && c.charCodeAt(0) < 127 ? c : ".")).join("");
    lines.push(i.toString(16).padStart(8, "0") + "  " + hexes.padEnd(48) + "  " + ascii);
  }
  return lines.join("\n");
}

function utf8ToBase64(text) {
  return btoa(Array.from(new TextEncoder().encode(text), (b) => String.fromCharCode(b)).join(""));
}

// Body shown as text, with a switch to a hex dump (either form arrives from the API).
function bytesView(text, base64) {
  if (text === null && base64 === null) return el("p", { class: "muted" }, "none");
  const raw = base64 !== null && base64 !== undefined ? base64 : utf8ToBase64(text);
  const pre = el("pre", { class: "mono" });
  const asText = text !== null && text !== undefined;
  let mode = asText ? "text" : "hex";
  const render = () => { pre.textContent = mode === "text" ? text : hex(raw); };
  const toggle = el("button", { type: "button", class: "toggle-hex", onclick: () => {
    mode = mode === "text" ? "hex" : "text";
    toggle.textContent = mode === "text" ? "Show hex" : "Show text";
    render();
  } }, mode === "text" ? "Show hex" : "Show text");
  if (!asText) toggle.disabled = true;
  render();
  return el("div", {}, toggle, pre);
}

function traceIdOf(traceparent) {
  const id = (traceparent || "").split("-")[1];
  return id && /^[0-9a-fA-F]{32}$/.test(id) ? id.toLowerCase() : null;
}

function traceLink(id) {
  if (!id) return null;
  const template = state.who && state.who.trace_url;
  if (!template) return el("span", { class: "mono trace-id" }, id);
  const href = template.includes("{trace_id}") ? template.replace("{trace_id}", id) : template.replace(/\/?$/, "/") + id;
  return el("a", { class: "mono trace-id", href, target: "_blank", rel: "noopener noreferrer" }, id);
}

// ---------- charts ----------

// A line chart of `series` ([{name, points: [{t: ms, v: number|null}]}]) as SVG: axes, grid
// labels, one polyline and one circle (class "point") per data point of each series.
function lineChart(title, series, { unit = "", height = 180 } = {}) {
  const width = 560, pad = { l: 64, r: 12, t: 10, b: 26 };
  const all = series.flatMap((s) => s.points.filter((p) => p.v !== null && p.v !== undefined));
  const times = series.flatMap((s) => s.points.map((p) => p.t));
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const vmax = Math.max(1e-9, ...all.map((p) => p.v));
  const x = (t) => pad.l + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - (v / vmax) * (height - pad.t - pad.b);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
  chart.append(svg("line", { class: "axis", x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
  chart.append(svg("line", { class: "axis", x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b }));
  const label = (v) => (unit === "%" ? (v * 100).toFixed(0) + "%" : unit === "ms" ? fmtMs(v) : (+v.toFixed(2)).toString());
  chart.append(svg("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end" }, label(vmax)));
  chart.append(svg("text", { x: pad.l - 4, y: height - pad.b, "text-anchor": "end" }, label(0)));
  if (times.length) {
    const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    chart.append(svg("text", { x: pad.l, y: height - 8 }, clock(t0)));
    chart.append(svg("text", { x: width - pad.r, y: height - 8, "text-anchor": "end" }, clock(t1)));
  }
  series.forEach((s, i) => {
    const points = s.points.filter((p) => p.v !== null && p.v !== undefined);
    const cls = "s" + (i % 6);
    if (points.length > 1) {
      chart.append(svg("polyline", { class: cls, points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ") }));
    }
    for (const p of points) {
      chart.append(svg("circle", { class: "point " + cls, cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 3, "data-series": s.name, "data-value": p.v },
        svg("title", {}, `${s.name}: ${label(p.v)} at ${new Date(p.t).toLocaleString()}`)));
    }
  });
  const legend = el("div", { class: "legend" }, series.map((s, i) => el("span", { class: "s" + (i % 6) }, s.name)));
  return el("div", { class: "card chart-card" }, el("h2", {}, title), chart, legend, all.length ? null : el("p", { class: "muted" }, "no data in this window"));
}

// ---------- pages ----------

const PAGES = [
  { id: "functions", label: "Functions", scope: "read", render: renderFunctions },
  { id: "invocations", label: "Invocations", scope: "invoke", render: renderInvocations },
  { id: "dlq", label: "Dead letters", scope: "admin", render: renderDeadLetters },
  { id: "schedules", label: "Schedules", scope: "admin", render: renderSchedules },
  { id: "triggers", label: "Triggers", scope: "admin", render: renderTriggers },
  { id: "fleet", label: "Fleet", scope: "read", render: renderFleet },
];

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "", arg: parts[1] || null, params: new URLSearchParams(query || "") };
}

function go(hash) { location.hash = hash; }

function every(ms, fn) { state.timers.push(setInterval(fn, ms)); }

async function route() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  notice("");
  if (!state.who) return;
  const { page, arg, params } = parseRoute();
  const allowed = PAGES.filter((p) => can(p.scope));
  const target = PAGES.find((p) => p.id === page) || allowed[0];
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === (target && target.id)));
  const root = view();
  root.replaceChildren();
  if (!target) {
    root.append(el("p", {}, "This key has no scope the console can use."));
    return;
  }
  if (!can(target.scope)) {
    root.append(el("h1", {}, target.label), el("p", { class: "muted needs-scope" }, `This page needs a key with the ${target.scope} scope.`));
    return;
  }
  try {
    await target.render(root, arg, params);
  } catch (error) {
    showError(error);
  }
}

async function statuses() {
  if (!state.statuses) {
    try {
      const doc = await api("v1/openapi.json");
      state.statuses = (doc.components.schemas.InvocationStatus || {}).enum || [];
    } catch (_) {
      state.statuses = [];
    }
  }
  return state.statuses;
}

// Functions: the list, and per function its version, counts, error rate and latency over time.
async function renderFunctions(root, name) {
  if (name) return renderFunction(root, name);
  const [list, usage] = await Promise.all([
    api("v1/functions"),
    api("v1/usage?group_by=hour&since=" + encodeURIComponent(new Date(Date.now() - 24 * 3600e3).toISOString())),
  ]);
  root.append(el("h1", {}, "Functions"));
  root.append(table(["Name", "Version", { label: "Deployed", class: "hide-narrow" }, "Timeout", "Concurrency", "Attempts"],
    list.functions.map((f) => el("tr", { class: "function-row" },
      el("td", {}, el("a", { href: "#/functions/" + encodeURIComponent(f.name) }, f.name)),
      el("td", { class: "mono" }, f.version.slice(0, 19)),
      el("td", { class: "hide-narrow" }, fmtTime(f.deployed_at)),
      el("td", { class: "num" }, fmtMs(f.config.timeout_ms)),
      el("td", { class: "num" }, f.config.concurrency),
      el("td", { class: "num" }, f.config.max_attempts)))));
  if (!list.functions.length) root.append(el("p", { class: "muted" }, "Nothing deployed yet."));
  const points = usage.groups.map((g) => ({ t: Date.parse(g.hour), v: g.invocations }));
  root.append(el("div", { class: "grid" },
    lineChart("Invocations per hour, all functions (24 h)", [{ name: "invocations", points }]),
    lineChart("CPU per hour, all functions (ms)", [{ name: "cpu", points: usage.groups.map((g) => ({ t: Date.parse(g.hour), v: g.cpu_ms })) }], { unit: "ms" })));
}

const WINDOWS = {
  "1h": { span: 3600e3, step: 300e3, label: "last hour, 5-minute steps" },
  "6h": { span: 6 * 3600e3, step: 1800e3, label: "last 6 hours, 30-minute steps" },
  "24h": { span: 24 * 3600e3, step: 3600e3, label: "last 24 hours, hourly" },
};

async function renderFunction(root, name, params) {
  const windowId = new URLSearchParams(location.hash.split("?")[1] || "").get("window") || "1h";
  const win = WINDOWS[windowId] || WINDOWS["1h"];
  const f = await api("v1/functions/" + encodeURIComponent(name));
  root.append(el("p", {}, el("a", { href: "#/functions" }, "← Functions")), el("h1", {}, f.name));
  const picker = el("select", { id: "window", onchange: (e) => go(`#/functions/${encodeURIComponent(name)}?window=${e.target.value}`) },
    Object.entries(WINDOWS).map(([id, w]) => el("option", { value: id, selected: id === windowId }, w.label)));
  root.append(el("div", { class: "filters" }, el("label", {}, "Window", picker)));
  // Buckets on whole steps, the last one ending now; each point sits at its bucket's end.
  const now = Date.now();
  const steps = [];
  for (let t = Math.floor((now - win.span) / win.step) * win.step + win.step; t < now; t += win.step) steps.push(t);
  steps.push(now);
  const stats = await Promise.all(steps.map((t, i) => {
    const since = i === 0 ? t - win.step : steps[i - 1];
    return api(`v1/functions/${encodeURIComponent(name)}/stats?since=${new Date(since).toISOString()}&until=${new Date(t).toISOString()}`);
  }));
  const point = (i, v) => ({ t: steps[i], v });
  const perMinute = win.step / 60e3;
  root.append(el("div", { class: "grid" },
    lineChart("Invocation rate (per minute)", [
      { name: "invocations", points: stats.map((s, i) => point(i, s.count / perMinute)) },
      { name: "errors", points: stats.map((s, i) => point(i, s.errors / perMinute)) },
    ]),
    lineChart("Error rate", [{ name: "error rate", points: stats.map((s, i) => point(i, s.count ? s.error_rate : null)) }], { unit: "%" }),
    lineChart("Latency (latest attempt)", [
      { name: "p50", points: stats.map((s, i) => point(i, s.p50_ms)) },
      { name: "p95", points: stats.map((s, i) => point(i, s.p95_ms)) },
      { name: "p99", points: stats.map((s, i) => point(i, s.p99_ms)) },
    ], { unit: "ms" })));
  const facts = el("dl", { class: "facts" },
    el("dt", {}, "Version"), el("dd", { class: "mono" }, f.version),
    el("dt", {}, "Deployed"), el("dd", {}, fmtTime(f.deployed_at)),
    el("dt", {}, "Artifact"), el("dd", {}, `${f.artifact_size} bytes, sha256 ${f.sha256}`),
    el("dt", {}, "Spec"), el("dd", {}, el("pre", { class: "mono" }, JSON.stringify(f.config, null, 2))));
  root.append(el("div", { class: "card" }, facts));
  // Numbered versions, where this dispatcher keeps them.
  try {
    const versions = await api("v1/functions/" + encodeURIComponent(name) + "/versions");
    const rows = (versions.versions || []).map((v) => el("tr", {}, Object.entries(v).slice(0, 4).map(([, val]) => el("td", { class: "mono" }, typeof val === "object" ? JSON.stringify(val) : String(val)))));
    if (rows.length) root.append(el("h2", {}, "Versions"), table(Object.keys(versions.versions[0]).slice(0, 4), rows));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
  }
  if (stats.some((s) => s.catching_up)) root.append(el("p", { class: "muted" }, "The query index is still catching up: counts may be partial."));
  if (can("invoke")) root.append(el("p", {}, el("a", { href: "#/invocations?function=" + encodeURIComponent(name) }, "Invocations of " + name + " →")));
}

// Invocations: filters, auto-refresh, and a detail view.
async function renderInvocations(root, id, params) {
  if (id) return renderInvocation(root, id);
  root.append(el("h1", {}, "Invocations"));
  const [functions, known] = await Promise.all([can("read") ? api("v1/functions") : Promise.resolve({ functions: [] }), statuses()]);
  const fn = el("select", { id: "filter-function" }, el("option", { value: "" }, "all functions"),
    functions.functions.map((f) => el("option", { value: f.name, selected: params.get("function") === f.name }, f.name)));
  const st = el("select", { id: "filter-status" }, el("option", { value: "" }, "any status"),
    known.map((s) => el("option", { value: s, selected: params.get("status") === s }, s)));
  const since = el("input", { id: "filter-since", type: "datetime-local", value: params.get("since") || "" });
  const until = el("input", { id: "filter-until", type: "datetime-local", value: params.get("until") || "" });
  const auto = el("input", { id: "auto-refresh", type: "checkbox", checked: params.get("auto") !== "0" });
  const apply = () => {
    const q = new URLSearchParams();
    if (fn.value) q.set("function", fn.value);
    if (st.value) q.set("status", st.value);
    if (since.value) q.set("since", since.value);
    if (until.value) q.set("until", until.value);
    if (!auto.checked) q.set("auto", "0");
    go("#/invocations?" + q.toString());
  };
  [fn, st, since, until, auto].forEach((input) => input.addEventListener("change", apply));
  root.append(el("div", { class: "filters" },
    el("label", {}, "Function", fn), el("label", {}, "Status", st),
    el("label", {}, "Since", since), el("label", {}, "Until", until),
    el("label", {}, "Auto-refresh", auto)));
  const body = el("div", { id: "invocation-list" });
  root.append(body);
  const load = async () => {
    const q = new URLSearchParams({ limit: "50" });
    if (fn.value) q.set("function", fn.value);
    if (st.value) q.set("status", st.value);
    if (since.value) q.set("since", new Date(since.value).toISOString());
    if (until.value) q.set("until", new Date(until.value).toISOString());
    const page = await api("v1/invocations?" + q.toString());
    body.replaceChildren(...[
      page.catching_up ? el("p", { class: "muted" }, "The query index is still catching up.") : null,
      table(["Invocation", "Function", "Status", "Attempts", { label: "Created", class: "hide-narrow" }, "Duration"],
        page.items.map((i) => el("tr", { class: "invocation-row", "data-status": i.status },
          el("td", { class: "mono" }, el("a", { href: "#/invocations/" + i.invocation_id }, i.invocation_id)),
          el("td", {}, i.function),
          el("td", {}, statusBadge(i.status)),
          el("td", { class: "num" }, i.attempts),
          el("td", { class: "hide-narrow" }, fmtTime(i.created_at)),
          el("td", { class: "num" }, fmtMs(i.duration_ms))))),
      page.items.length ? null : el("p", { class: "muted" }, "No invocations match."),
    ].filter(Boolean));
  };
  await load();
  if (auto.checked) every(3000, () => load().catch(showError));
}

async function renderInvocation(root, id) {
  const inv = await api("v1/invocations/" + encodeURIComponent(id));
  root.append(el("p", {}, el("a", { href: "#/invocations" }, "← Invocations")), el("h1", { class: "mono" }, inv.invocation_id));
  let letter = null;
  if (can("admin") && (inv.status === "dead_lettered" || inv.status === "timed_out")) {
    try { letter = await api("v1/dlq/" + encodeURIComponent(id)); } catch (_) { letter = null; }
  }
  const traceId = inv.trace_id || (letter && letter.headers && traceIdOf(letter.headers.traceparent));
  root.append(el("div", { class: "card" }, el("dl", { class: "facts", id: "invocation-facts" },
    el("dt", {}, "Function"), el("dd", {}, inv.function),
    el("dt", {}, "Status"), el("dd", {}, statusBadge(inv.status)),
    el("dt", {}, "Version"), el("dd", { class: "mono" }, inv.version || "–"),
    el("dt", {}, "Attempts"), el("dd", {}, inv.attempts),
    el("dt", {}, "Created"), el("dd", {}, fmtTime(inv.created_at)),
    el("dt", {}, "Finished"), el("dd", {}, fmtTime(inv.finished_at)),
    el("dt", {}, "Duration"), el("dd", {}, fmtMs(inv.duration_ms)),
    el("dt", {}, "CPU"), el("dd", {}, fmtMs(inv.cpu_ms)),
    el("dt", {}, "Worker"), el("dd", { class: "mono" }, inv.worker || "–"),
    el("dt", {}, "Trace"), el("dd", {}, traceLink(traceId) || el("span", { class: "muted" }, "not recorded with the result")))));
  if (inv.error) {
    root.append(el("h2", {}, "Error"), el("div", { class: "card invocation-error" }, el("strong", {}, inv.error.kind), ": ", inv.error.message));
  }
  root.append(el("h2", {}, "Output"), el("div", { class: "card", id: "invocation-output" }, bytesView(inv.output ?? null, inv.output_base64 ?? null)));
  if (letter) {
    root.append(el("h2", {}, "Input"), el("div", { class: "card" }, bytesView(letter.payload ?? null, letter.payload_base64 ?? null)));
    root.append(el("h2", {}, "Attempts"), attemptsTable(letter.attempt_history));
  }
  root.append(el("h2", {}, "Logs"), inv.logs.length
    ? el("pre", { class: "mono", id: "invocation-logs" }, inv.logs.map((l) => `[${l.level}] ${l.message}`).join("\n"))
    : el("p", { class: "muted" }, "No log lines."));
}

function attemptsTable(history) {
  return table(["#", "Kind", "Message", "Started", "Duration", { label: "Worker", class: "hide-narrow" }],
    (history || []).map((a) => el("tr", { class: "attempt-row" },
      el("td", { class: "num" }, a.attempt), el("td", {}, a.kind || "–"), el("td", {}, a.message),
      el("td", {}, fmtTime(a.started_at)), el("td", { class: "num" }, fmtMs(a.duration_ms)),
      el("td", { class: "mono hide-narrow" }, a.worker))));
}

// Dead letters: list, show, replay one, replay all of a function, remove (each asks first).
async function renderDeadLetters(root, id, params) {
  if (id) return renderDeadLetter(root, id);
  root.append(el("h1", {}, "Dead letters"));
  const fnName = params.get("function") || "";
  const functions = await api("v1/functions");
  const fn = el("select", { id: "dlq-function", onchange: (e) => go("#/dlq" + (e.target.value ? "?function=" + encodeURIComponent(e.target.value) : "")) },
    el("option", { value: "" }, "all functions"),
    functions.functions.map((f) => el("option", { value: f.name, selected: fnName === f.name }, f.name)));
  const filters = el("div", { class: "filters" }, el("label", {}, "Function", fn));
  if (fnName) {
    filters.append(el("button", { type: "button", class: "danger replay-all", onclick: async () => {
      if (!confirm(`Replay every dead letter of ${fnName}? Each becomes a new invocation and leaves the DLQ.`)) return;
      try {
        const done = await api("v1/dlq/replay?function=" + encodeURIComponent(fnName), { method: "POST" });
        notice("");
        await route();
        view().prepend(el("p", { class: "card" }, `Replayed ${done.replayed.length} dead letters.`));
      } catch (error) { showError(error); }
    } }, "Replay all of " + fnName));
  }
  root.append(filters);
  const list = await api("v1/dlq" + (fnName ? "?function=" + encodeURIComponent(fnName) : ""));
  root.append(table(["Invocation", "Function", "Status", "Kind", "Attempts", { label: "Dead-lettered", class: "hide-narrow" }, ""],
    list.dead_letters.map((d) => el("tr", { class: "dlq-row", "data-id": d.id },
      el("td", { class: "mono" }, el("a", { href: "#/dlq/" + d.id }, d.invocation_id)),
      el("td", {}, d.function), el("td", {}, statusBadge(d.status)), el("td", {}, d.kind || "–"),
      el("td", { class: "num" }, d.attempts), el("td", { class: "hide-narrow" }, fmtTime(d.dead_lettered_at)),
      el("td", {}, letterActions(d.id, () => route()))))));
  if (!list.dead_letters.length) root.append(el("p", { class: "muted", id: "dlq-empty" }, "No dead letters."));
}

function letterActions(id, after) {
  return el("div", { class: "actions" },
    el("button", { type: "button", class: "primary replay", "data-id": id, onclick: async () => {
      if (!confirm("Replay this dead letter as a new invocation? It leaves the DLQ.")) return;
      try {
        const accepted = await api("v1/dlq/" + id + "/replay", { method: "POST" });
        await after();
        view().prepend(el("p", { class: "card replayed" }, "Replayed as ", can("invoke") ? el("a", { href: "#/invocations/" + accepted.invocation_id }, accepted.invocation_id) : accepted.invocation_id));
      } catch (error) { showError(error); }
    } }, "Replay"),
    el("button", { type: "button", class: "danger remove", "data-id": id, onclick: async () => {
      if (!confirm("Remove this dead letter for good?")) return;
      try {
        await api("v1/dlq/" + id, { method: "DELETE" });
        await after();
      } catch (error) { showError(error); }
    } }, "Remove"));
}

async function renderDeadLetter(root, id) {
  const letter = await api("v1/dlq/" + encodeURIComponent(id));
  root.append(el("p", {}, el("a", { href: "#/dlq" }, "← Dead letters")), el("h1", { class: "mono" }, letter.invocation_id));
  root.append(el("div", { class: "card" }, el("dl", { class: "facts" },
    el("dt", {}, "Function"), el("dd", {}, letter.function),
    el("dt", {}, "Status"), el("dd", {}, statusBadge(letter.status)),
    el("dt", {}, "Version"), el("dd", { class: "mono" }, letter.version),
    el("dt", {}, "Created"), el("dd", {}, fmtTime(letter.created_at)),
    el("dt", {}, "Dead-lettered"), el("dd", {}, fmtTime(letter.dead_lettered_at)),
    el("dt", {}, "Trace"), el("dd", {}, traceLink(traceIdOf(letter.headers && letter.headers.traceparent)) || "–")),
    letterActions(letter.id, () => go("#/dlq"))));
  root.append(el("h2", {}, "Input"), el("div", { class: "card" }, bytesView(letter.payload ?? null, letter.payload_base64 ?? null)));
  root.append(el("h2", {}, "Attempts"), attemptsTable(letter.attempt_history));
  root.append(el("h2", {}, "Headers"), el("pre", { class: "mono" }, Object.entries(letter.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n")));
}

async function renderSchedules(root) {
  const list = await api("v1/schedules");
  root.append(el("h1", {}, "Schedules"));
  root.append(table(["Name", "Function", "Cron", "Time zone", "Next fire times"],
    list.schedules.map((s) => el("tr", { class: "schedule-row" },
      el("td", {}, s.name), el("td", {}, s.function), el("td", { class: "mono" }, s.cron), el("td", {}, s.timezone),
      el("td", {}, (s.next || []).slice(0, 3).map((t) => el("div", {}, fmtTime(t))))))));
  if (!list.schedules.length) root.append(el("p", { class: "muted" }, "No schedules."));
}

async function renderTriggers(root) {
  const list = await api("v1/triggers");
  root.append(el("h1", {}, "Triggers"));
  root.append(table(["Name", "Function", "Kind", "Source", { label: "Created", class: "hide-narrow" }],
    list.triggers.map((t) => el("tr", { class: "trigger-row" },
      el("td", {}, t.name), el("td", {}, t.function), el("td", {}, t.kind),
      el("td", { class: "mono" }, t.subject || [t.bucket, t.key].filter(Boolean).join(" / ")),
      el("td", { class: "hide-narrow" }, fmtTime(t.created_at))))));
  if (!list.triggers.length) root.append(el("p", { class: "muted" }, "No triggers."));
}

// Fleet: supervisors, their pools per function, workers, and backlog and in-flight per function
// as a live chart.
async function renderFleet(root) {
  root.append(el("h1", {}, "Fleet"));
  const live = el("div", { id: "fleet-live" });
  root.append(live);
  const history = state.fleetHistory;
  const load = async () => {
    const fleet = await api("v1/fleet");
    const now = Date.now();
    for (const f of fleet.functions) {
      const h = (history[f.name] = history[f.name] || []);
      h.push({ t: now, backlog: f.backlog, in_flight: f.in_flight });
      if (h.length > 90) h.shift();
    }
    const names = Object.keys(history).filter((n) => fleet.functions.some((f) => f.name === n));
    live.replaceChildren(
      el("div", { class: "grid" },
        lineChart("Backlog per function (live)", names.map((n) => ({ name: n, points: history[n].map((p) => ({ t: p.t, v: p.backlog })) }))),
        lineChart("In flight per function (live)", names.map((n) => ({ name: n, points: history[n].map((p) => ({ t: p.t, v: p.in_flight })) })))),
      el("h2", {}, "Supervisors"),
      table(["Id", "Host", "Min", "Max", "Desired", "Workers", { label: "Updated", class: "hide-narrow" }],
        fleet.supervisors.map((s) => el("tr", { class: "supervisor-row" },
          el("td", { class: "mono" }, s.id), el("td", {}, s.host), el("td", { class: "num" }, s.min), el("td", { class: "num" }, s.max),
          el("td", { class: "num" }, s.desired), el("td", { class: "num" }, s.workers.length), el("td", { class: "hide-narrow" }, fmtTime(s.updated_at))))),
      el("h2", {}, "Workers"),
      table(["Id", "Host", "Pid", "Functions", "In flight", { label: "Updated", class: "hide-narrow" }],
        fleet.workers.map((w) => el("tr", { class: "worker-row" },
          el("td", { class: "mono" }, w.id), el("td", {}, w.host), el("td", { class: "num" }, w.pid),
          el("td", {}, w.functions.length ? w.functions.join(", ") : "all"), el("td", { class: "num" }, w.in_flight),
          el("td", { class: "hide-narrow" }, fmtTime(w.updated_at))))),
      el("h2", {}, "Functions"),
      el("h2", {}, "Pools"),
      table(["Function", "Supervisor", "Processes", "Desired"],
        fleet.supervisors.flatMap((s) => (s.pools || []).map((p) => el("tr", { class: "pool-row" },
          el("td", {}, p.function), el("td", { class: "mono" }, s.id), el("td", { class: "num" }, p.processes.length),
          el("td", { class: "num" }, p.desired))))),
      table(["Function", "Backlog", "In flight", "Processes"],
        fleet.functions.map((f) => el("tr", { class: "load-row" }, el("td", {}, f.name), el("td", { class: "num" }, f.backlog),
          el("td", { class: "num" }, f.in_flight), el("td", { class: "num" }, f.processes || 0)))));
  };
  await load();
  every(2000, () => load().catch(showError));
}

// ---------- sign-in ----------

function signOut(message) {
  sessionStorage.removeItem(KEY);
  state.key = null;
  state.who = null;
  state.timers.forEach(clearInterval);
  state.timers = [];
  document.getElementById("view").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("signin").hidden = false;
  notice(message || "");
}

async function signIn(key) {
  state.key = key || null;
  try {
    state.who = await api("v1/whoami");
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) showError(error);
    return false;
  }
  if (key) sessionStorage.setItem(KEY, key);
  document.getElementById("signin").hidden = true;
  document.getElementById("view").hidden = false;
  const nav = document.getElementById("nav");
  nav.replaceChildren(...PAGES.filter((p) => can(p.scope)).map((p) => el("a", { href: "#/" + p.id, "data-page": p.id }, p.label)));
  nav.hidden = false;
  document.getElementById("signout").hidden = !state.who.auth_required;
  document.getElementById("who").textContent = state.who.auth_required ? "scopes: " + state.who.scopes.join(", ") : "no key required";
  notice("");
  await route();
  return true;
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = document.getElementById("key").value.trim();
    if (await signIn(key)) document.getElementById("key").value = "";
  });
  document.getElementById("signout").addEventListener("click", () => signOut(""));
  const saved = sessionStorage.getItem(KEY);
  // With a saved key, or on a dispatcher that needs none, go straight in.
  if (!(await signIn(saved))) signOut(saved ? "The saved key was refused. Sign in again." : "");
});
