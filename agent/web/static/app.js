// aftercall dashboard: fetches /api/report and /api/messages and draws cards, SVG charts, the log.
"use strict";
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString());

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text; // never innerHTML: message texts are untrusted
  return e;
}

const PAGE = 100;
let offset = 0;

// The range select bounds every read (a year of messages is a million rows): "From" overrides it.
function query() {
  const f = new FormData($("filters"));
  const p = new URLSearchParams();
  for (const [k, v] of f.entries()) if (v && k !== "range") p.set(k, v);
  const range = f.get("range");
  if (!p.get("since") && range && range !== "all") {
    p.set("since", new Date(Date.now() - Number(range) * 86400000).toISOString());
  }
  return p;
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

function cards(rep) {
  const t = rep.total, box = $("cards");
  box.replaceChildren();
  const cur = rep.currency ? rep.currency + " " : "";
  const items = [
    ["Sent", num(t.sent), t.total + " decisions"],
    ["Delivered", num(t.delivered), ""],
    ["Delivery rate", pct(t.delivery_rate), "delivered / sent"],
    ["Failed", num(t.failed + t.undelivered), t.undelivered + " undelivered"],
    ["Suppressed", num(t.suppressed), Object.keys(t.suppressed_by_reason).join(", ")],
    ["CTR", pct(t.ctr), t.clicked + " of " + t.with_links + " linked"],
    ["Replies", num(t.replies), t.opt_outs + " opt-outs"],
    ["Credits", num(t.segments), t.cost === null ? "segments" : cur + Number(t.cost).toFixed(2)],
  ];
  for (const [label, value, sub] of items) {
    const c = el("div", { class: "card", "data-card": label });
    c.append(el("div", { class: "label" }, label), el("div", { class: "value" }, value), el("div", { class: "sub" }, sub));
    box.append(c);
  }
}

// Axis ticks a person reads at a glance: a step of 1, 2, 2.5 or 5 times a power of ten (whole
// numbers only: these are message counts) and 1, 2, 4 or 5 intervals, so the right-hand rate
// axis, sharing the gridlines, reads 0/20/40...% or 0/25/50...%.
function niceTicks(max) {
  const steps = [];
  for (let p = 1; p <= 1e9; p *= 10) for (const m of [1, 2, 2.5, 5]) if (m * p >= 1 && Number.isInteger(m * p)) steps.push(m * p);
  for (const step of steps) {
    const need = Math.max(1, Math.ceil(max / step));
    const n = [1, 2, 4, 5].find((k) => k >= need);
    if (n) return { step, n, top: step * n };
  }
  return { step: max, n: 1, top: max };
}

function svg(w, h) { return el("svg:svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", role: "img" }); }

function daily(rep) {
  const box = $("chart-daily"), days = rep.by_day, W = 600, H = 220, L = 36, R = 36, T = 10, B = 28;
  box.replaceChildren();
  if (!days.length) { box.append(el("p", { class: "muted" }, "No messages in this period.")); return; }
  const s = svg(W, H);
  const ticks = niceTicks(Math.max(1, ...days.map((d) => d.total)));
  const max = ticks.top;
  const bw = (W - L - R) / days.length;
  const y = (v) => H - B - (v / max) * (H - T - B);
  for (let i = 0; i <= ticks.n; i++) {
    const v = ticks.step * i, yy = y(v);
    s.append(el("svg:line", { x1: L, x2: W - R, y1: yy, y2: yy, stroke: "#e3e8ee", class: "grid", "data-value": v }));
    s.append(el("svg:text", { x: L - 6, y: yy + 3, "text-anchor": "end", class: "tick-left", "data-value": v }, v.toLocaleString()));
    const rate = (100 * i) / ticks.n;
    s.append(el("svg:text", { x: W - R + 6, y: yy + 3, class: "tick-right", "data-value": rate }, rate + "%"));
  }
  const every = Math.ceil(days.length / 14); // day labels that do not overlap
  const parts = [["delivered", "#16a34a"], ["other", "#93c5fd"], ["failed", "#dc2626"], ["suppressed", "#cbd5e1"]];
  const pts = [];
  days.forEach((d, i) => {
    const other = d.total - d.delivered - d.failed - d.suppressed;
    const vals = { delivered: d.delivered, other: Math.max(0, other), failed: d.failed, suppressed: d.suppressed };
    let acc = 0;
    const x = L + i * bw + bw * 0.2;
    for (const [k, color] of parts) {
      const v = vals[k];
      if (v > 0) s.append(el("svg:rect", { x, width: bw * 0.6, y: y(acc + v), height: y(acc) - y(acc + v), fill: color, class: "bar", "data-day": d.day, "data-kind": k }));
      acc += v;
    }
    if (i % every === 0) s.append(el("svg:text", { x: x + bw * 0.3, y: H - 10, "text-anchor": "middle" }, d.day.slice(5)));
    if (d.delivery_rate !== null) pts.push([x + bw * 0.3, H - B - d.delivery_rate * (H - T - B)]);
  });
  if (pts.length) {
    s.append(el("svg:polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: "#2563eb", "stroke-width": 2, class: "rate-line" }));
    for (const [px, py] of pts) s.append(el("svg:circle", { cx: px, cy: py, r: 3, fill: "#2563eb" }));
  }
  box.append(s, legend([...parts, ["delivery rate", "#2563eb"]]));
}

function legend(items) {
  const l = el("div", { class: "legend" });
  for (const [name, color] of items) { const s = el("span"); const i = el("i"); i.style.background = color; s.append(i, name); l.append(s); }
  return l;
}

function hbars(boxId, rows, fmt, color) {
  const box = $(boxId);
  box.replaceChildren();
  if (!rows.length) { box.append(el("p", { class: "muted" }, "Nothing to show.")); return; }
  const W = 300, rowH = 26, H = Math.max(60, rows.length * rowH + 10), L = 110;
  const s = svg(W, H);
  s.style.height = H + "px";
  const max = Math.max(...rows.map((r) => r[1]), 1e-9);
  rows.forEach(([label, v], i) => {
    const y = 5 + i * rowH, w = ((W - L - 50) * v) / max;
    s.append(el("svg:text", { x: L - 6, y: y + 15, "text-anchor": "end" }, label));
    s.append(el("svg:rect", { x: L, y: y + 4, width: Math.max(1, w), height: rowH - 10, rx: 3, fill: color(label), class: "hbar", "data-label": label }));
    s.append(el("svg:text", { x: L + w + 6, y: y + 15 }, fmt(v)));
  });
  box.append(s);
}

function failures(rep) {
  const t = rep.total;
  const rows = [
    ...Object.entries(t.failures_by_reason).map(([k, v]) => [k, v, "f"]),
    ...Object.entries(t.suppressed_by_reason).map(([k, v]) => [k, v, "s"]),
  ].sort((a, b) => b[1] - a[1]);
  const kind = Object.fromEntries(rows.map((r) => [r[0], r[2]]));
  hbars("chart-failures", rows.map((r) => [r[0], r[1]]), String, (l) => (kind[l] === "f" ? "#dc2626" : "#94a3b8"));
}

function ctr(rep) {
  const rows = rep.by_rule.filter((f) => f.ctr !== null).map((f) => [f.key, f.ctr]);
  hbars("chart-ctr", rows, pct, () => "#2563eb");
}

function table(data) {
  const body = $("log").tBodies[0];
  body.replaceChildren();
  const total = data.total === undefined ? data.count : data.total;
  $("log-count").textContent = "(" + num(total) + (data.total_capped ? "+" : "") + ", newest first)";
  const first = data.messages.length ? (data.offset || 0) + 1 : 0;
  $("page-info").textContent = first ? first + "–" + ((data.offset || 0) + data.messages.length) : "";
  $("page-newer").disabled = !data.offset;
  $("page-older").disabled = !data.has_more;
  for (const m of data.messages) {
    const tr = el("tr", { "data-id": m.id });
    const status = el("span", { class: "badge s-" + m.status }, m.status);
    const when = el("td");
    when.append(AC.time(m.created_at));
    const code = m.status !== "delivered" ? m.error_code : null; // "000" on a delivery is no error
    const why = el("td", { class: "why" }, (m.reason && m.reason !== "receipt" ? m.reason : code) || "");
    if (m.detail) { why.title = m.detail; why.append(el("div", { class: "detail muted" }, m.detail)); }
    if (m.scheduled_for) { // deferred or scheduled: when it goes
      const due = el("div", { class: "detail muted" }, "due ");
      due.append(AC.time(m.scheduled_for));
      why.append(due);
    }
    const cells = [
      when,
      el("td", {}, m.rule),
      el("td", {}, m.number || "–"),
      el("td", { class: "text", title: m.text || "" }, m.text || "—"),
      el("td", { class: "num" }, String(m.segments)),
      el("td"),
      why,
      el("td", {}, m.gateway),
      el("td", { class: "num" }, m.hangup_to_submit_ms === null ? "–" : m.hangup_to_submit_ms.toFixed(0) + " ms"),
      el("td", {}, m.receipt_state || "–"),
      el("td", { class: "num" }, String(m.clicks)),
    ];
    cells[5].append(status);
    tr.append(...cells);
    body.append(tr);
  }
}

// The PBX picker: shown once the database holds more than one PBX's calls (a shared
// PostgreSQL, or one agent watching several); the calls view's PBX field offers the same names.
async function pbxes() {
  const names = (await getJSON("/api/pbxes")).pbxes;
  const sel = $("f-pbx"), keep = sel.value;
  for (const n of names) if (![...sel.options].some((o) => o.value === n)) sel.append(el("option", { value: n }, n));
  sel.value = keep;
  $("f-pbx-label").hidden = names.length < 2 && !keep;
  $("pbx-names").replaceChildren(...names.map((n) => el("option", { value: n })));
}

let lastMsgs = null;
AC.onZone.push(() => { if (lastMsgs) table(lastMsgs); });

async function load() {
  await AC.ready;
  const p = query();
  const rp = new URLSearchParams();
  for (const k of ["since", "until", "rule", "pbx"]) if (p.get(k)) rp.set(k, p.get(k));
  p.set("limit", PAGE);
  p.set("offset", offset);
  try {
    // The log first: it is one indexed page and paints while the report aggregates.
    const msgs = getJSON("/api/messages?" + p).then((m) => {
      lastMsgs = m;
      table(m);
      if (!performance.getEntriesByName("log-shown").length) performance.mark("log-shown");
      return m;
    });
    const [rep] = await Promise.all([getJSON("/api/report?" + rp), msgs, pbxes()]);
    cards(rep); daily(rep); failures(rep); ctr(rep);
    const sel = $("f-rule"), keep = sel.value;
    if (sel.options.length === 1) for (const f of rep.by_rule) sel.append(el("option", { value: f.key }, f.key));
    sel.value = keep;
    $("error").hidden = true;
    document.body.dataset.loaded = "1";
  } catch (e) {
    $("error").textContent = "Could not load data: " + e.message;
    $("error").hidden = false;
  }
}

$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; load(); });
$("f-range").addEventListener("change", () => { offset = 0; load(); });
$("f-pbx").addEventListener("change", () => { offset = 0; load(); });
$("page-older").addEventListener("click", () => { offset += PAGE; load(); });
$("page-newer").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
load();
setInterval(load, 30000);
