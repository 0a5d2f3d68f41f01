// aftercall dashboard, the calls view: every call, and for one call `explain` from stored data.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const mk = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text); // never innerHTML
    return e;
  };
  const badge = (status) => mk("span", { class: "badge s-" + status }, status);
  // A call is (PBX, call id): PBXs without systemname may give two calls one id.
  let lastList = null, lastCall = null, openId = null, openPbx = null;

  function params() {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData($("call-filters")).entries()) if (v) p.set(k, v);
    return p;
  }

  let seq = 0;
  async function loadCalls() {
    await AC.ready;
    const mine = ++seq; // a slower, older answer must not replace a newer search's
    document.body.dataset.callsLoaded = "";
    const r = await fetch("/api/calls?" + params(), { credentials: "same-origin" });
    const data = await r.json();
    if (mine !== seq) return;
    if (!r.ok) { $("calls-error").textContent = data.error || "HTTP " + r.status; $("calls-error").hidden = false; return; }
    $("calls-error").hidden = true;
    lastList = data;
    drawList();
    // A number search that finds one call opens it: the call and its SMS in one step.
    if (data.calls.length === 1) await openCall(data.calls[0].call_id, data.calls[0].pbx || "");
    document.body.dataset.callsLoaded = "1";
  }

  function smsCell(messages) {
    const td = mk("td", { class: "sms" });
    if (!messages.length) td.append(mk("span", { class: "muted" }, "no SMS"));
    for (const m of messages) {
      const s = mk("span", { class: "chip", title: m.rule });
      s.append(badge(m.status));
      s.append(" " + m.rule + (m.reason ? " · " + m.reason : ""));
      td.append(s);
    }
    return td;
  }

  function drawList() {
    const body = $("calls").tBodies[0];
    body.replaceChildren();
    const data = lastList;
    $("calls-count").textContent = "(" + data.count + (data.count >= data.limit ? "+, newest first" : "") + ")";
    for (const c of data.calls) {
      const tr = mk("tr", { "data-call": c.call_id, "data-pbx": c.pbx || "", tabindex: "0" });
      const when = mk("td"); when.append(AC.time(c.ended_at));
      tr.append(when, mk("td", {}, c.caller || "–"), mk("td", {}, c.queue || "–"),
        mk("td", {}, c.agent ? c.agent + (c.agent_name ? " " + c.agent_name : "") : "–"),
        mk("td", {}, c.disposition), mk("td", { class: "num" }, Math.round(c.talk_seconds) + " s"),
        smsCell(c.messages));
      if (c.call_id === openId && (c.pbx || "") === openPbx) tr.classList.add("open");
      tr.addEventListener("click", () => openCall(c.call_id, c.pbx || ""));
      tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") openCall(c.call_id, c.pbx || ""); });
      body.append(tr);
    }
  }

  async function openCall(id, pbx) {
    openId = id; openPbx = pbx;
    for (const tr of document.querySelectorAll("#calls tbody tr")) tr.classList.toggle("open", tr.dataset.call === id && tr.dataset.pbx === pbx);
    const q = pbx ? "?pbx=" + encodeURIComponent(pbx) : "";
    const r = await fetch("/api/calls/" + encodeURIComponent(id) + q, { credentials: "same-origin" });
    lastCall = await r.json();
    drawCall();
  }

  function field(dl, label, value) {
    if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return;
    dl.append(mk("dt", {}, label));
    const dd = mk("dd");
    if (value instanceof Node) dd.append(value); else dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
    dl.append(dd);
  }

  function drawRecord(box, c) {
    const dl = mk("dl", { class: "record" });
    field(dl, "Call", c.call_id);
    field(dl, "Caller", c.caller + (c.caller_name ? " (" + c.caller_name + ")" : ""));
    field(dl, "DID", c.did);
    field(dl, "Direction", c.direction);
    field(dl, "Queue", c.queue);
    field(dl, "Agent", c.agent ? c.agent + (c.agent_name ? " " + c.agent_name : "") + (c.agent_number ? " · " + c.agent_number : "") : null);
    field(dl, "Disposition", c.disposition);
    field(dl, "Started", AC.time(c.started_at));
    if (c.answered_at) field(dl, "Answered", AC.time(c.answered_at));
    field(dl, "Ended", AC.time(c.ended_at));
    field(dl, "Wait / talk", Math.round(c.wait_seconds) + " s / " + Math.round(c.talk_seconds) + " s");
    field(dl, "Hung up by", c.hangup_by ? c.hangup_by + (c.hangup_cause !== null ? " (cause " + c.hangup_cause + ")" : "") : null);
    field(dl, "Tags", c.tags);
    field(dl, "Vars", Object.entries(c.vars || {}).map(([k, v]) => k + "=" + v));
    field(dl, "PBX", c.pbx);
    box.append(dl);
  }

  function drawMessage(m) {
    const card = mk("div", { class: "msg", "data-message": m.id, "data-status": m.status });
    const head = mk("div", { class: "msg-head" });
    head.append(badge(m.status), mk("b", {}, " " + m.rule), mk("span", { class: "muted" }, " → " + m.recipient_kind + " " + (m.number || "(no number)")));
    card.append(head);
    if (m.reason || m.detail || m.error_code) {
      const why = mk("div", { class: "why" });
      why.append(mk("span", { class: "reason" }, m.reason || ""));
      if (m.detail) why.append(mk("span", { class: "detail" }, " " + m.detail));
      if (m.error_code) why.append(mk("span", { class: "muted" }, " (error " + m.error_code + ")"));
      card.append(why);
    }
    if (m.next_attempt_at && m.status === "deferred") { const d = mk("div", { class: "muted" }, "scheduled for "); d.append(AC.time(m.next_attempt_at)); card.append(d); }
    card.append(mk("div", { class: "msg-text" }, m.text || "(no text: rendering failed)"));
    const ol = mk("ol", { class: "history" });
    for (const h of m.history) {
      const li = mk("li");
      li.append(AC.time(h.at), " ", badge(h.state), " " + [h.reason, h.detail].filter(Boolean).join(": "));
      ol.append(li);
    }
    for (const rc of m.receipts) {
      const li = mk("li", { class: "receipt" });
      li.append(AC.time(rc.received_at), " receipt " + rc.state + (rc.error_code && rc.state !== "delivered" ? " (error " + rc.error_code + ")" : ""));
      ol.append(li);
    }
    for (const rp of m.replies) {
      const li = mk("li", { class: "reply" });
      li.append(AC.time(rp.received_at), " reply “" + rp.text + "”" + (rp.action ? " → " + rp.action : ""));
      ol.append(li);
    }
    card.append(ol);
    return card;
  }

  function drawCall() {
    const box = $("call-detail");
    box.replaceChildren();
    const data = lastCall;
    if (!data || data.error) { box.append(mk("p", { class: "muted" }, data ? data.error : "Pick a call.")); return; }
    box.append(mk("h2", {}, "Call " + openId));
    if (data.call) drawRecord(box, data.call);
    box.append(mk("h3", {}, "Rules"));
    const rules = mk("ul", { class: "rules" });
    if (!data.rules.length) rules.append(mk("li", { class: "muted" }, "No rule outcomes stored for this call (decided before this version)."));
    for (const r of data.rules) {
      const li = mk("li", { class: r.matched ? "matched" : "failed", "data-rule": r.rule });
      li.append(mk("span", { class: "mark" }, r.matched ? "✓" : "✗"), mk("b", {}, " " + r.rule), mk("span", { class: "muted" }, " (" + r.trigger + ")"));
      if (r.reason) li.append(mk("div", { class: "cond" }, r.reason));
      if (r.matched && !r.messages.length && !r.skipped.length) li.append(mk("div", { class: "cond" }, "matched, no recipient"));
      for (const s of r.skipped) li.append(mk("div", { class: "cond" }, "skipped " + s));
      rules.append(li);
    }
    box.append(rules);
    box.append(mk("h3", {}, "Messages"));
    if (!data.messages.length) box.append(mk("p", { class: "muted" }, "No SMS was decided for this call."));
    for (const m of data.messages) box.append(drawMessage(m));
  }

  $("call-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadCalls(); });
  AC.onZone.push(() => { if (lastList) drawList(); if (lastCall) drawCall(); });
  let loaded = false;
  window.addEventListener("ac-tab", (ev) => { if (ev.detail === "calls" && !loaded) { loaded = true; loadCalls(); } });
  if (document.body.dataset.tab === "calls") { loaded = true; loadCalls(); }
  window.ACcalls = { load: loadCalls, open: openCall };
})();
