#include "runtime/pool/dashboard.h"

namespace myelin::pool {

const std::string& dashboard_html() {
  static const std::string html = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Myelin pool</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 22px 0 6px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; font-variant-numeric: tabular-nums; }
th { background: #eee; }
.muted { color: #777; }
.accepted { color: #176a2c; } .rejected { color: #a11; }
.state-training { color: #176a2c; } .state-lost, .state-left { color: #a11; }
#curve { background: #fff; border: 1px solid #ddd; }
#error { color: #a11; }
</style>
</head>
<body>
<h1>Myelin pool</h1>
<div class="muted" id="updated">loading...</div>
<div id="error"></div>
<form id="login" style="display:none" onsubmit="login(event)">This pool is private:
<input id="token" type="password" placeholder="token" autocomplete="off"> <button>show</button></form>
<h2>Jobs</h2>
<table id="jobs"><thead><tr><th>id</th><th>name</th><th>status</th><th>round</th><th>model</th>
<th>contributors (min..max)</th><th>inner steps</th><th>compression</th><th>val loss</th></tr></thead><tbody></tbody></table>
<h2>Loss curve <span class="muted" id="curve-title"></span></h2>
<svg id="curve" width="640" height="260" viewBox="0 0 640 260" xmlns="http://www.w3.org/2000/svg"></svg>
<h2>Contributors</h2>
<table id="contributors"><thead><tr><th>id</th><th>name</th><th>hardware</th><th>state</th><th>job / round / slot</th>
<th>accepted</th><th>rejected</th><th>rating</th><th>tokens</th><th>compute s (claimed)</th><th>held s (measured)</th><th>bytes received</th><th>last seen</th></tr></thead><tbody></tbody></table>
<h2>Rounds</h2>
<table id="rounds"><thead><tr><th>round</th><th>status</th><th>accepted</th><th>rejected</th><th>tokens</th>
<th>train loss</th><th>val loss</th><th>update norm</th><th>seconds</th></tr></thead><tbody></tbody></table>
<h2>Ledger</h2>
<div class="muted" id="ledger-head"></div>
<table id="ledger"><thead><tr><th>seq</th><th>job</th><th>round</th><th>contributor</th><th>tokens</th><th>compute s (claimed)</th>
<th>held s (measured)</th><th>receive s (measured)</th><th>bytes received</th><th>uncompressed</th><th>norm</th><th>loss drop own / other rows</th><th>replay diff</th><th>weight</th><th>rating</th><th>status</th><th>reason</th><th>hash</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
// The page and its data are public unless the pool runs with --private; then
// the token typed below is kept for this tab and sent in a header, never in
// a URL.
let token = sessionStorage.getItem("myelin-token") || "";
async function get(p) {
  const r = await fetch(p, {headers: token ? {"Authorization": "Bearer " + token} : {}});
  if (r.status === 401) { document.getElementById("login").style.display = ""; throw new Error("this pool needs a token"); }
  return r.json();
}
function login(ev) {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("myelin-token", token);
  document.getElementById("login").style.display = "none";
  refresh();
}
function fmt(v, d) { return (v === null || v === undefined) ? "-" : (typeof v === "number" ? v.toFixed(d === undefined ? 4 : d) : String(v)); }
function fill(id, rows) {
  const tb = document.querySelector("#" + id + " tbody");
  tb.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const c of r) {
      const td = document.createElement("td");
      if (c && typeof c === "object") { td.textContent = c.text; td.className = c.cls || ""; }
      else td.textContent = c;
      tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
}
function hw(h) {
  if (!h) return "-";
  const parts = [];
  if (h.device) parts.push(h.device);
  if (h.cpu) parts.push(h.cpu);
  if (h.cores) parts.push(h.cores + " cores");
  if (h.memory_gb) parts.push(h.memory_gb + " GB");
  if (h.gpus && h.gpus.length) parts.push("GPUs: " + h.gpus.join(", "));
  return parts.join(", ");
}
const NS = "http://www.w3.org/2000/svg";
function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function curve(job) {
  const svg = document.getElementById("curve");
  svg.replaceChildren();
  const W = 640, H = 260, L = 56, R = 14, T = 14, B = 34;
  const val = [], train = [];
  if (job && job.init_val_loss !== null) val.push([0, job.init_val_loss]);
  if (job) for (const r of job.history) {
    if (r.val_loss !== null) val.push([r.round + 1, r.val_loss]);
    if (r.train_loss !== null) train.push([r.round + 1, r.train_loss]);
  }
  const all = val.concat(train);
  if (!all.length) { svg.appendChild(el("text", {x: 20, y: 30}, "no losses yet")); return; }
  let x1 = Math.max(1, ...all.map(p => p[0]));
  let y0 = Math.min(...all.map(p => p[1])), y1 = Math.max(...all.map(p => p[1]));
  if (y1 - y0 < 1e-6) { y0 -= 0.5; y1 += 0.5; }
  const sx = x => L + (W - L - R) * x / x1, sy = y => T + (H - T - B) * (1 - (y - y0) / (y1 - y0));
  svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999"}));
  svg.appendChild(el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}));
  for (let i = 0; i <= 4; ++i) {
    const y = y0 + (y1 - y0) * i / 4;
    svg.appendChild(el("text", {x: 4, y: sy(y) + 4, "font-size": 11}, y.toFixed(3)));
  }
  svg.appendChild(el("text", {x: (W - L) / 2, y: H - 8, "font-size": 11}, "round (0 = initial model)"));
  svg.appendChild(el("text", {x: W - R - 4, y: H - B + 14, "font-size": 11, "text-anchor": "end"}, String(x1)));
  const line = (pts, color, id) => {
    if (!pts.length) return;
    svg.appendChild(el("polyline", {id: id, fill: "none", stroke: color, "stroke-width": 2,
      points: pts.map(p => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ")}));
    for (const p of pts) svg.appendChild(el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color}));
  };
  line(train, "#e08a1e", "train-curve");
  line(val, "#1f5fbf", "val-curve");
  svg.appendChild(el("text", {x: W - R - 150, y: T + 10, "font-size": 11, fill: "#1f5fbf"}, "held-out loss"));
  svg.appendChild(el("text", {x: W - R - 150, y: T + 24, "font-size": 11, fill: "#e08a1e"}, "train loss (contributors)"));
}
async function refresh() {
  try {
    const st = await get("/api/status");
    if (st.error) throw new Error(st.error);
    const jobs = st.jobs || [];
    fill("jobs", jobs.map(j => {
      const last = j.history.filter(r => r.val_loss !== null).pop();
      return [j.id, j.name, j.status, j.round + " / " + j.rounds, j.model,
              j.min_contributors + ".." + j.max_contributors, j.inner_steps, j.compression,
              fmt(last ? last.val_loss : j.init_val_loss)];
    }));
    const job = jobs.find(j => j.status === "running") || jobs[jobs.length - 1];
    document.getElementById("curve-title").textContent = job ? "(job " + job.id + ": " + job.name + ")" : "";
    curve(job);
    fill("contributors", (st.contributors || []).map(c => [c.id, c.name, hw(c.hardware),
      {text: c.state, cls: "state-" + c.state},
      (c.job === null ? "-" : c.job) + " / " + (c.round === null ? "-" : c.round) + " / " + (c.slot === null ? "-" : c.slot),
      c.accepted, c.rejected, fmt(c.rating, 3) + (c.benched ? " (benched)" : ""), c.tokens, fmt(c.compute_s, 1), fmt(c.measured_s, 1), c.bytes_received,
      fmt(c.last_seen_s, 1) + " s ago"]));
    fill("rounds", job ? job.history.slice().reverse().slice(0, 50).map(r => [r.round, r.status,
      r.accepted, r.rejected, r.tokens, fmt(r.train_loss), fmt(r.val_loss), fmt(r.update_norm),
      r.closed === null ? "-" : fmt(r.closed - r.opened, 2)]) : []);
    const led = await get("/api/ledger" + (job ? "?job=" + job.id : ""));
    if (led.error) throw new Error(led.error);
    document.getElementById("ledger-head").textContent = job && job.ledger_head ?
      "chain head: row " + job.ledger_head.seq + ", SHA-256 " + job.ledger_head.hash : "";
    fill("ledger", led.slice().reverse().slice(0, 200).map(x => [x.seq === null ? "-" : x.seq, x.job, x.round,
      x.contributor, x.tokens, fmt(x.compute_s, 2), fmt(x.since_assigned_s, 2), fmt(x.receive_s, 3), x.bytes,
      x.raw_bytes, fmt(x.norm), x.score_assigned === undefined ? "-" : fmt(x.score_assigned) + " / " + fmt(x.score_other),
      x.replay_diff === undefined ? "-" : fmt(x.replay_diff), x.weight === undefined ? "-" : fmt(x.weight, 3),
      x.rating === undefined ? "-" : fmt(x.rating, 3), {text: x.status, cls: x.status}, x.reason, x.hash ? x.hash.slice(0, 12) : "-"]));
    document.getElementById("error").textContent = "";
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString() +
      " - " + (st.contributors || []).length + " contributors, " + jobs.length + " jobs";
  } catch (e) {
    document.getElementById("error").textContent = "cannot load the pool status: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)HTML";
  return html;
}

} // namespace myelin::pool
