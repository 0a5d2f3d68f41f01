// aftercall dashboard, managing lists: opt-outs, DND (one number or a CSV), ambiguous messages.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const mk = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  let last = null;

  function say(text, bad) {
    const p = $("lists-status");
    p.textContent = text;
    p.className = bad ? "error" : "ok";
    p.hidden = false;
  }

  async function act(fn, ok) {
    try { const r = await fn(); say(ok(r)); await loadLists(); }
    catch (e) { say(e.message, true); }
  }

  function table(id, rows, cols, action) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    if (!rows.length) { const tr = mk("tr"); tr.append(mk("td", { colspan: cols.length + 1, class: "muted" }, "empty")); body.append(tr); }
    for (const r of rows) {
      const tr = mk("tr", { "data-number": r.number || "", "data-id": r.id || "" });
      for (const c of cols) {
        const td = mk("td");
        if (c.endsWith("at")) td.append(AC.time(r[c])); else td.textContent = r[c] === null || r[c] === undefined ? "" : r[c];
        tr.append(td);
      }
      const td = mk("td");
      if (action) action(td, r);
      tr.append(td);
      body.append(tr);
    }
  }

  function button(label, onClick) {
    const b = mk("button", { type: "button", class: "small" }, label);
    b.addEventListener("click", onClick);
    return b;
  }

  function draw() {
    if (!last) return;
    for (const which of ["optout", "dnd"]) {
      table("list-" + which, last[which], ["number", "at", "source"], (td, r) =>
        td.append(button("remove", () => act(() => AC.post("/api/lists/" + which, { number: r.number, action: "remove" }),
          () => "removed " + r.masked + " from " + which))));
    }
    table("list-history", last.history, ["at", "number", "list", "action", "who"]);
    table("list-ambiguous", last.ambiguous, ["created_at", "rule", "number", "detail"], (td, r) => {
      td.append(button("resend", () => act(() => AC.post("/api/ambiguous/" + r.id, { action: "resend" }), (x) => "resent: now " + x.status)),
        " ", button("drop", () => act(() => AC.post("/api/ambiguous/" + r.id, { action: "drop" }), (x) => "dropped: now " + x.status)));
    });
  }

  async function loadLists() {
    await AC.ready;
    document.body.dataset.listsLoaded = "";
    const s = AC.session;
    $("lists-refused").hidden = !!s.manage;
    $("lists-body").hidden = !s.manage;
    if (!s.manage) {
      $("lists-refused").textContent = "Managing lists is not available: " + (s.manage_refused || "no session") + ".";
      document.body.dataset.listsLoaded = "1";
      return;
    }
    const r = await fetch("/api/lists", { credentials: "same-origin" });
    last = await r.json();
    draw();
    document.body.dataset.listsLoaded = "1";
  }

  $("operator").value = localStorage.getItem("ac-operator") || "";
  $("operator").addEventListener("change", () => localStorage.setItem("ac-operator", $("operator").value.trim()));
  $("list-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const action = ev.submitter && ev.submitter.value === "remove" ? "remove" : "add";
    const which = $("list-which").value, number = $("list-number").value;
    act(() => AC.post("/api/lists/" + which, { number, action }),
      (x) => (x.changed ? (action === "add" ? "added " : "removed ") : "not on the list: ") + x.number + " (" + which + ", by " + x.who + ")");
  });
  $("dnd-import").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = $("dnd-file").files[0];
    if (!f) { say("pick a CSV file first", true); return; }
    const text = await f.text();
    act(() => AC.post("/api/lists/dnd/import", text, true),
      (x) => "imported " + x.imported + " numbers, skipped " + x.skipped + (x.problems.length ? ": " + x.problems.slice(0, 3).join("; ") : ""));
  });
  AC.onZone.push(draw);
  let loaded = false;
  window.addEventListener("ac-tab", (ev) => { if (ev.detail === "lists" && !loaded) { loaded = true; loadLists(); } });
  if (document.body.dataset.tab === "lists") { loaded = true; loadLists(); }
})();
