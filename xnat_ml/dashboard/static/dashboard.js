// Live run status: polls the run's status.json through the dashboard and draws the curves.
"use strict";

function formatEta(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "";
  const s = Math.max(0, Math.round(Number(seconds)));
  const m = Math.floor(s / 60);
  return m ? `${m} min ${s % 60} s` : `${s} s`;
}

function drawCurves(canvas, rows) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!rows.length) return;
  // the loss and the validation metrics (metrics.csv also holds iteration, lr, elapsed_s)
  const keys = Object.keys(rows[0]).filter((k) => /loss|dice|metric|val_/i.test(k) &&
    rows.some((r) => r[k] !== "" && !isNaN(Number(r[k]))));
  const colours = ["#2b6cb0", "#c53030", "#2f855a", "#b7791f", "#6b46c1"];
  const pad = 30;
  keys.forEach((key, i) => {
    const points = rows.map((r, x) => [x, Number(r[key])]).filter((p) => r0(p[1]));
    if (!points.length) return;
    const ys = points.map((p) => p[1]);
    const lo = Math.min(...ys), hi = Math.max(...ys);
    ctx.strokeStyle = colours[i % colours.length];
    ctx.beginPath();
    points.forEach(([x, y], j) => {
      const px = pad + (x / Math.max(1, rows.length - 1)) * (canvas.width - 2 * pad);
      const py = canvas.height - pad - ((y - lo) / Math.max(hi - lo, 1e-9)) * (canvas.height - 2 * pad);
      j ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
    });
    ctx.stroke();
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(key, pad + i * 110, 14);
  });
}

function r0(v) { return !isNaN(v) && isFinite(v); }

const FINAL = ["completed", "nan", "failed", "killed"];

async function followRun(box) {
  const show = (id, text) => { const e = document.getElementById(id); if (e) e.textContent = text ?? ""; };
  try {
    const answer = await fetch(box.dataset.statusUrl, { credentials: "same-origin" });
    if (answer.ok) {
      const { status, metrics } = await answer.json();
      show("state", status.state);
      show("epoch", `${status.epoch ?? ""}/${status.max_epochs ?? ""}`);
      show("iteration", status.iteration);
      show("loss", status.loss);
      show("metric", status.metric);
      show("best", status.best_metric);
      show("eta", formatEta(status.eta_s));
      show("message", status.message);
      drawCurves(document.getElementById("curves"), metrics);
      if (FINAL.includes(status.state)) return;
    }
  } catch (e) { /* the server is restarting: try again */ }
  setTimeout(() => followRun(box), 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("run");
  if (box) {
    const eta = document.getElementById("eta");
    eta.textContent = formatEta(eta.textContent.trim() === "None" ? "" : eta.textContent.trim());
    followRun(box);
  }
});
