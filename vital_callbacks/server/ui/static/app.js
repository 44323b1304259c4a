// vital-callbacks UI: times in the viewer's zone (UTC on hover), the tenant picker, the live tail.
"use strict";

function localize(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(at.getTime())) el.textContent = at.toLocaleString();
  }
}

function text(value) { return value === null || value === undefined || value === "" ? "-" : String(value); }

function usd(call) {
  if (call.cost_usd === null) return call.unpriced ? "unpriced (1 call)" : "-";
  const digits = call.cost_usd !== 0 && Math.abs(call.cost_usd) < 0.01 ? 6 : 2;
  return "$" + call.cost_usd.toFixed(digits);
}

function seconds(value) { return value < 1 ? Math.round(value * 1000) + " ms" : value.toFixed(2) + " s"; }

function cell(tr, content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content); else td.textContent = content;
  tr.append(td);
  return td;
}

function row(call, tenantParam) {
  const tr = document.createElement("tr");
  tr.dataset.run = call.run_id;
  tr.className = "new";
  const link = document.createElement("a");
  link.href = "/traces/" + encodeURIComponent(call.trace_id) + tenantParam;
  const when = document.createElement("time");
  when.setAttribute("datetime", call.started_at);
  when.title = new Date(call.started_at).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  when.textContent = new Date(call.started_at).toLocaleString();
  link.append(when);
  cell(tr, link);
  cell(tr, text(call.tenant_id));
  cell(tr, text(call.graph) + " / " + text(call.node));
  cell(tr, text(call.model));
  const state = document.createElement("span");
  state.className = "status " + call.status;
  state.textContent = call.status;
  const statusCell = cell(tr, state);
  if (call.error_type) statusCell.append(" ", Object.assign(document.createElement("small"), {textContent: call.error_type}));
  cell(tr, call.input_tokens.toLocaleString("en-US") + " / " + call.output_tokens.toLocaleString("en-US") + " tok", "num");
  cell(tr, usd(call), call.unpriced ? "num unpriced" : "num");
  cell(tr, seconds(call.duration_s), "num");
  return tr;
}

function tail(table) {
  const body = table.tBodies[0];
  const state = document.getElementById("tail-state");
  const params = new URLSearchParams(window.location.search);
  const tenantParam = params.get("tenant") ? "?tenant=" + encodeURIComponent(params.get("tenant")) : "";
  async function poll() {
    try {
      const response = await fetch(table.dataset.tail, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      const seen = new Set(Array.from(body.rows, (r) => r.dataset.run));
      const fresh = data.calls.filter((c) => !seen.has(c.run_id));
      for (const call of fresh.reverse()) body.prepend(row(call, tenantParam));
      while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
      if (fresh.length && state) state.textContent = fresh.length + " new call(s) at " + new Date().toLocaleTimeString();
    } catch (err) {
      if (state) state.textContent = "Could not refresh (" + err.message + "); retrying.";
    }
  }
  window.setInterval(poll, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  localize(document);
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  const table = document.getElementById("tail");
  if (table) tail(table);
});
