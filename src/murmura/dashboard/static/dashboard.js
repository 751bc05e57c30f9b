// The dashboard page: one EventSource; each event is a full snapshot, rendered in place.
"use strict";
let source = null;

function selected() { return new URLSearchParams(location.hash.slice(1)).get("run"); }

function text(id, value) { document.getElementById(id).textContent = value ?? "–"; }

function renderRuns(runs, current) {
  const body = document.querySelector("#runs tbody");
  body.replaceChildren(...runs.map(r => {
    const tr = document.createElement("tr");
    if (r.id === current) tr.className = "selected";
    const a = document.createElement("a");
    a.href = "#run=" + encodeURIComponent(r.id);
    a.textContent = r.id;
    const cells = [a, r.status, `${r.rounds}/${r.planned ?? "?"}`,
                   r.accuracy == null ? "–" : r.accuracy.toFixed(4)];
    for (const c of cells) {
      const td = document.createElement("td");
      td.append(c);
      tr.append(td);
    }
    return tr;
  }));
}

function renderRun(run) {
  document.getElementById("run-panel").hidden = !run;
  if (!run) return;
  const s = run.series;
  const pick = (...names) => names.filter(n => s[n]).map(n => ({name: n, points: s[n]}));
  text("run-title", run.id);
  text("run-status", run.status);
  text("round-count", run.rounds);
  text("run-planned", run.planned);
  lineChart(document.getElementById("chart-accuracy"), pick("test_accuracy", "federated_accuracy"));
  lineChart(document.getElementById("chart-loss"), pick("train_loss", "test_loss", "federated_loss"));
  lineChart(document.getElementById("chart-participants"), pick("participants", "failures"));
  const eps = pick("epsilon");
  document.getElementById("fig-epsilon").hidden = eps.length === 0;
  if (eps.length && run.target_epsilon != null) {
    const xs = eps[0].points.map(p => p[0]);
    eps.push({name: "target", dashed: true,
              points: [[Math.min(...xs), run.target_epsilon], [Math.max(...xs), run.target_epsilon]]});
  }
  lineChart(document.getElementById("chart-epsilon"), eps);
  const cd = pick("consensus_distance");
  document.getElementById("fig-consensus").hidden = cd.length === 0;
  lineChart(document.getElementById("chart-consensus"), cd);
  document.getElementById("failures").replaceChildren(...run.failures.map(f => {
    const li = document.createElement("li");
    li.textContent = `round ${f.round}: ${f.node}: ${f.reason}`;
    return li;
  }));
}

function renderCoordinator(c) {
  document.getElementById("coordinator-panel").hidden = !c;
  if (!c) return;
  const box = document.getElementById("coordinator");
  const r = c.round;
  const link = document.createElement("a");
  link.href = "#run=" + encodeURIComponent(c.run_id);
  link.textContent = c.run_id;
  const head = document.createElement("p");
  head.append("run ", link, ` (${c.status})`);
  const lines = [r ? `round ${r.round} ${r.status}: ${r.arrivals.length} arrivals (${r.arrivals.join(", ")})` : "no round yet"];
  const ul = document.createElement("ul");
  for (const n of c.nodes) {
    const li = document.createElement("li");
    li.textContent = `${n.node}: last heartbeat ${n.last_seen_ago} s ago, ${n.rounds_done} rounds`;
    ul.append(li);
  }
  box.replaceChildren(head, ...lines.map(l => { const p = document.createElement("p"); p.textContent = l; return p; }), ul);
}

function connect() {
  if (source) source.close();
  const run = selected();
  source = new EventSource("/api/events" + (run ? "?run=" + encodeURIComponent(run) : ""));
  const conn = document.getElementById("conn");
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => { conn.textContent = "reconnecting"; conn.className = "conn"; };
  source.onmessage = e => {
    const snap = JSON.parse(e.data);
    renderRuns(snap.runs, run);
    renderRun(snap.run);
    renderCoordinator(snap.coordinator);
    document.body.dataset.updated = String(Date.now());
  };
}

window.addEventListener("hashchange", connect);
connect();
