// vital-callbacks UI: times in the viewer's zone (UTC on hover), the tenant picker, the live tail.
"use strict";

function localize(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(at.getTime())) el.textContent = at.toLocaleString();
  }
}

// The live tail asks the server for its newest rows, rendered as the page's own rows are (one place
// formats money and tokens), and puts the ones it has not shown yet on top.
function tail(table) {
  const body = table.tBodies[0];
  const state = document.getElementById("tail-state");
  const holder = document.createElement("template");
  async function poll() {
    try {
      const response = await fetch(table.dataset.tail, {credentials: "same-origin"});
      if (!response.ok) throw new Error("HTTP " + response.status);
      holder.innerHTML = await response.text();
      const seen = new Set(Array.from(body.rows, (r) => r.dataset.run));
      const fresh = Array.from(holder.content.querySelectorAll("tr")).filter((r) => !seen.has(r.dataset.run));
      for (const row of fresh.reverse()) {
        row.classList.add("new");
        localize(row);
        body.prepend(row);
      }
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
