// Lag per partition over time as an SVG line chart (no chart library).

import {el, fmt} from "./dom.js";

const W = 520, H = 170, PAD = {l: 48, r: 10, t: 10, b: 22};
export const SERIES_COLORS = 8;

/** A chart box for one pipeline: ``partitions`` maps "topic/p" to lags aligned with ``times``. */
export function lagChart(key, times, partitions, title) {
  const box = el("figure", {class: "chart", "data-chart": key});
  box.append(el("figcaption", {}, title || key));
  const names = Object.keys(partitions).sort();
  let max = 0;
  for (const name of names) for (const v of partitions[name]) if (v !== null && v > max) max = v;
  const top = max > 0 ? max : 1;
  const t0 = times.length ? times[0] : 0;
  const t1 = times.length ? times[times.length - 1] : 1;
  const span = Math.max(t1 - t0, 1);
  const x = t => PAD.l + (W - PAD.l - PAD.r) * (t - t0) / span;
  const y = v => H - PAD.b - (H - PAD.t - PAD.b) * v / top;
  const summary = names.map(n => `${n}: ${fmt(partitions[n].filter(v => v !== null).pop())}`).join(", ");
  const svg = el("svg:svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg",
    "aria-label": `Lag of ${title || key} over the last ${fmt(span / 60, 1)} minutes; now ${summary || "no data"}`,
  });
  svg.append(
    el("svg:line", {x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: "axis"}),
    el("svg:line", {x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: "axis"}),
    el("svg:text", {x: PAD.l - 4, y: PAD.t + 9, "text-anchor": "end", class: "tick"}, fmt(top)),
    el("svg:text", {x: PAD.l - 4, y: H - PAD.b, "text-anchor": "end", class: "tick"}, "0"),
    el("svg:text", {x: PAD.l, y: H - 6, class: "tick"}, `-${fmt(span / 60, 1)} min`),
    el("svg:text", {x: W - PAD.r, y: H - 6, "text-anchor": "end", class: "tick"}, "now"));
  const legend = el("div", {class: "legend"});
  names.forEach((name, i) => {
    const points = [];
    partitions[name].forEach((v, j) => {
      if (v !== null) points.push(`${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`);
    });
    if (points.length === 1) points.push(`${W - PAD.r},${points[0].split(",")[1]}`);
    svg.append(el("svg:polyline", {
      points: points.join(" "), class: `series series-${i % SERIES_COLORS}`, "data-partition": name,
    }));
    const last = partitions[name].filter(v => v !== null).pop();
    legend.append(el("span", {},
      el("span", {class: `swatch series-bg-${i % SERIES_COLORS}`, "aria-hidden": "true"}),
      `${name}: ${fmt(last)}`));
  });
  if (!names.length) legend.append(el("span", {}, "no partitions assigned yet"));
  box.append(svg, legend);
  return box;
}
