// A minimal SVG line chart: murmura's own, so the page needs no third-party script.
"use strict";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"];
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// series: [{name, points: [[x, y], ...], dashed}]; draws axes, ranges, one path per series.
function lineChart(svg, series) {
  const W = 420, H = 200, L = 40, R = 10, T = 18, B = 20;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const pts = series.flatMap(s => s.points);
  if (pts.length === 0) return;
  let [x0, x1] = [Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0]))];
  let [y0, y1] = [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  svg.append(el("line", {class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B}));
  svg.append(el("line", {class: "axis", x1: L, y1: T, x2: L, y2: H - B}));
  svg.append(el("text", {x: L - 4, y: T + 4, "text-anchor": "end"}, +y1.toPrecision(3)));
  svg.append(el("text", {x: L - 4, y: H - B, "text-anchor": "end"}, +y0.toPrecision(3)));
  svg.append(el("text", {x: L, y: H - 6}, x0));
  svg.append(el("text", {x: W - R, y: H - 6, "text-anchor": "end"}, `round ${x1}`));
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const color = PALETTE[i % PALETTE.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    const attrs = {class: "line", d, stroke: color, "data-series": s.name};
    if (s.dashed) attrs["stroke-dasharray"] = "4 3";
    svg.append(el("path", attrs));
    svg.append(el("text", {class: "legend", x: L + 6 + i * 110, y: 12, fill: color}, s.name));
  });
}
