// selfloop dashboard and report: draws the charts (Plotly, served locally) and keeps live parts fresh.
"use strict";

function drawCharts(section, charts) {
  section.querySelectorAll(".chart").forEach((el) => { if (!charts.some((c) => "chart-" + c.id === el.id)) el.remove(); });
  for (const chart of charts) {
    let el = document.getElementById("chart-" + chart.id);
    if (!el) {
      el = document.createElement("div");
      el.id = "chart-" + chart.id;
      el.className = "chart";
      el.dataset.title = chart.title;
      section.appendChild(el);
    }
    if (chart.figure) {
      el.textContent = "";
      Plotly.react(el, chart.figure.data, chart.figure.layout, { displaylogo: false, responsive: true });
    } else {
      Plotly.purge(el);
      el.innerHTML = "";
      const p = document.createElement("p");
      p.className = "note";
      p.textContent = chart.note;
      el.appendChild(p);
    }
  }
  section.dataset.drawn = String(charts.length);
}

async function fetchJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

async function loadCharts(section) {
  const embedded = document.getElementById("charts-data");
  if (embedded) { drawCharts(section, JSON.parse(embedded.textContent)); return; }
  if (section.dataset.chartsUrl) drawCharts(section, await fetchJSON(section.dataset.chartsUrl));
}

function progressText(s) {
  if (s.iteration === null && s.status === "finished") {
    return "finished: " + s.iterations_done + " iteration" + (s.iterations_done === 1 ? "" : "s") + " done";
  }
  if (s.iteration === null) return "between iterations";
  let text = "iteration " + s.iteration + " · " + (s.phase || "starting");
  if (s.progress) text += " · " + s.progress;
  return text;
}

function renderProgress(cell, s) {
  cell.textContent = "";
  const span = document.createElement("span");
  span.className = s.iteration !== null ? "phase" : s.status === "finished" ? "status-finished" : "muted";
  span.textContent = progressText(s);
  cell.appendChild(span);
  if (s.iteration !== null && s.progress_total) {
    const bar = document.createElement("progress");
    bar.max = s.progress_total;
    bar.value = s.progress_done;
    cell.appendChild(document.createTextNode(" "));
    cell.appendChild(bar);
  }
}

async function refreshLoops(table) {
  const states = await fetchJSON(table.dataset.liveLoops);
  const rows = new Map([...table.tBodies[0].rows].map((r) => [r.dataset.loop, r]));
  if (states.length !== rows.size || states.some((s) => !rows.has(s.name))) { location.reload(); return; }
  for (const s of states) {
    const row = rows.get(s.name);
    row.cells[1].className = "status-" + s.status;
    row.cells[1].firstChild.textContent = s.status;
    row.cells[2].textContent = s.iterations_done;
    renderProgress(row.cells[3], s);
    row.cells[4].textContent = s.writer;
    row.cells[5].textContent = s.policy;
  }
}

async function refreshLoop(el, section) {
  const s = await fetchJSON(el.dataset.liveLoop);
  if (String(s.iterations_done) !== el.dataset.iterationsDone) { location.reload(); return; }
  const key = [s.iteration, s.phase, s.phase_status].join("/");
  renderProgress(el, s);
  if (section && el.dataset.key !== undefined && el.dataset.key !== key) await loadCharts(section);
  el.dataset.key = key;
}

function every(ms, job) {
  let busy = false;
  setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try { await job(); } catch (err) { console.warn(err.message); } finally { busy = false; }
  }, ms);
}

document.addEventListener("DOMContentLoaded", () => {
  const section = document.getElementById("charts");
  if (section) loadCharts(section).catch((err) => { section.textContent = "charts: " + err.message; });
  const refresh = Number(document.body.dataset.refreshMs || 0);
  if (!refresh) return;  // the static report does not poll
  const loops = document.querySelector("[data-live-loops]");
  if (loops) every(refresh, () => refreshLoops(loops));
  const state = document.querySelector("[data-live-loop]");
  if (state) every(refresh, () => refreshLoop(state, section));
});
