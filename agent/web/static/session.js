// aftercall dashboard, shared: the session (time zone, CSRF token), time formatting, tabs.
"use strict";
const AC = {
  tz: "UTC", utc: false, session: {},
  ready: null,
  // "2024-05-01 14:30:05" in the operator's zone (or UTC when toggled); "" for nothing.
  fmt(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const parts = new Intl.DateTimeFormat("en-CA", {
      timeZone: AC.utc ? "UTC" : AC.tz, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    }).formatToParts(d);
    const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
    return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
  },
  // A <time> element: the zone's time as text, UTC on hover.
  time(iso) {
    const t = document.createElement("time");
    if (!iso) { t.textContent = "–"; return t; }
    t.dateTime = iso;
    t.textContent = AC.fmt(iso);
    t.title = new Date(iso).toISOString().replace(".000Z", "Z") + " (UTC)";
    return t;
  },
  zoneLabel() { return AC.utc ? "UTC" : AC.tz; },
  async post(url, body, isText) {
    const headers = { "X-CSRF-Token": AC.session.csrf || "", "X-Operator": localStorage.getItem("ac-operator") || "" };
    headers["Content-Type"] = isText ? "text/csv" : "application/json";
    const r = await fetch(url, { method: "POST", credentials: "same-origin", headers, body: isText ? body : JSON.stringify(body) });
    let data = {};
    try { data = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  },
  onZone: [],
};

AC.ready = fetch("/api/session", { credentials: "same-origin" })
  .then((r) => (r.ok ? r.json() : {}))
  .then((s) => { AC.session = s; AC.tz = s.timezone || "UTC"; AC.utc = localStorage.getItem("ac-utc") === "1"; showZone(); })
  .catch(() => {});

function showZone() {
  const b = document.getElementById("tz-toggle");
  if (b) { b.textContent = "Times: " + AC.zoneLabel(); b.title = "Show times in " + (AC.utc ? AC.tz : "UTC"); }
  for (const el of document.querySelectorAll("[data-zone]")) el.textContent = AC.zoneLabel();
}

document.getElementById("tz-toggle").addEventListener("click", () => {
  AC.utc = !AC.utc;
  localStorage.setItem("ac-utc", AC.utc ? "1" : "0");
  showZone();
  for (const fn of AC.onZone) fn();
});

// Tabs: #overview (default), #calls, #lists.
function showTab() {
  const name = (location.hash.replace("#", "").split("?")[0]) || "overview";
  for (const s of document.querySelectorAll("[data-tab]")) s.hidden = s.dataset.tab !== name;
  for (const a of document.querySelectorAll("nav.tabs a")) a.classList.toggle("on", a.getAttribute("href") === "#" + name);
  document.body.dataset.tab = name;
  window.dispatchEvent(new CustomEvent("ac-tab", { detail: name }));
}
window.addEventListener("hashchange", showTab);
showTab();
