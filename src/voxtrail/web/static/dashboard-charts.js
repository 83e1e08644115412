// Drawing the stats API's panels with Plotly.js (served by voxtrail: window.Plotly).
// Each panel is {columns, units, rows, empty, ...} (see voxtrail.query.panels); a renderer turns
// one into Plotly traces and a layout. Numbers carry units and sensible rounding everywhere.

import * as fmt from "./format.js";
import { cols, drawTable, drawTiles } from "./dashboard-figures.js";

const COLORS = {
  calls: "#4c78a8", success: "#54a24b", latency: "#f58518", failed: "#e45756",
  p50: "#9ecae9", p90: "#4c78a8", p95: "#f58518", p99: "#e45756",
  gpt_gen: "#4c78a8", gpt_forward: "#72b7b2", s2mel: "#f58518", bigvgan: "#b279a2", audio: "#72b7b2",
};
const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };
const FONT = { family: 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif', size: 12, color: "#1d2430" };

// --- helpers ------------------------------------------------------------------------------------

// Hour labels carry the view's offset ("2026-11-01T14:00:00+08:00"); Plotly draws wall-clock
// strings, so keep the local time and drop the offset (the page says which zone it is).
function times(values) {
  return values.map((v) => (typeof v === "string" && v.length > 19 ? v.slice(0, 19) : v));
}

// Milliseconds on an axis: seconds once the values reach a second, so ticks read "1.5 s".
function msScale(...series) {
  const max = Math.max(0, ...series.flat().filter((v) => v !== null && v !== undefined));
  return max >= 1000
    ? { k: 1 / 1000, suffix: " s", hover: ".2f" }
    : { k: 1, suffix: " ms", hover: ",.0f" };
}

function scaled(values, scale) {
  return values.map((v) => (v === null || v === undefined ? null : v * scale.k));
}

function baseLayout(extra = {}) {
  return {
    font: FONT,
    margin: { l: 60, r: 60, t: 8, b: 40 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    hovermode: "x unified",
    hoverlabel: { font: { size: 12 } },
    legend: { orientation: "h", x: 0, y: -0.18 },
    xaxis: { gridcolor: "#eef0f3", zeroline: false, automargin: true },
    yaxis: { gridcolor: "#eef0f3", zeroline: false, automargin: true, rangemode: "tozero" },
    ...extra,
  };
}

function timeAxis(panel) {
  return { type: "date", gridcolor: "#eef0f3", automargin: true, hoverformat: panel.bucket === "day" ? "%a %Y-%m-%d" : "%a %Y-%m-%d %H:%M" };
}

// 90-100 % unless worse: a drop from 99.9 % to 99 % should not fill the whole axis.
function successRange(values) {
  const low = Math.min(100, ...values.filter((v) => v !== null && v !== undefined));
  return [Math.max(0, Math.min(90, Math.floor(low / 10) * 10)), 100.5];
}

// Plotly draws a subset of HTML in every text it renders (tick labels, legends, hover text,
// annotations): "<a href=...>" becomes a link, "<b>" bold. Node, model, emotion and error
// values are whatever a client sent, so every string taken from the data passes through plotText
// on its way to Plotly, which turns the entities back into the characters (shown, never parsed).
export function plotText(value) {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

const text = (v, none = "(none)") => (v === null || v === undefined || v === "" ? none : String(v));
const label = (v, none) => plotText(text(v, none));
const pctAxis = (extra = {}) => ({ ticksuffix: " %", hoverformat: ".1f", zeroline: false, automargin: true, ...extra });

// --- panels over time ---------------------------------------------------------------------------

function callsSuccessLatency(panel) {
  const c = cols(panel);
  const x = times(c.time);
  const ms = msScale(c.mean_latency);
  return {
    data: [
      { type: "bar", name: "Calls", x, y: c.calls, marker: { color: COLORS.calls },
        hovertemplate: "%{y:,} calls<extra></extra>" },
      { type: "scatter", mode: "lines+markers", name: "Success rate", x, y: c.success_rate, yaxis: "y2",
        line: { color: COLORS.success, width: 2 }, marker: { size: 4 }, connectgaps: false,
        hovertemplate: "%{y:.1f} % success<extra></extra>" },
      { type: "scatter", mode: "lines+markers", name: "Mean latency", x, y: scaled(c.mean_latency, ms), yaxis: "y3",
        line: { color: COLORS.latency, width: 2 }, marker: { size: 4 }, connectgaps: false,
        hovertemplate: `%{y:${ms.hover}}${ms.suffix} mean latency<extra></extra>` },
    ],
    layout: baseLayout({
      xaxis: { ...timeAxis(panel), anchor: "y3" },
      yaxis: { domain: [0.7, 1], title: { text: "calls" }, rangemode: "tozero", gridcolor: "#eef0f3", tickformat: ",~s" },
      yaxis2: pctAxis({ domain: [0.37, 0.63], title: { text: "success" }, gridcolor: "#eef0f3",
        range: successRange(c.success_rate) }),
      yaxis3: { domain: [0, 0.3], title: { text: "latency" }, ticksuffix: ms.suffix, rangemode: "tozero", gridcolor: "#eef0f3" },
      legend: { orientation: "h", x: 0, y: 1.12 },
      margin: { l: 70, r: 20, t: 24, b: 30 },
    }),
  };
}

function percentiles(panel) {
  const c = cols(panel);
  const x = times(c.time);
  const ms = msScale(c.p99, c.p50);
  const data = ["p50", "p90", "p95", "p99"].map((p) => ({
    type: "scatter", mode: "lines", name: p, x, y: scaled(c[p], ms), line: { color: COLORS[p], width: 2 },
    hovertemplate: `${p} %{y:${ms.hover}}${ms.suffix}<extra></extra>`,
  }));
  return { data, layout: baseLayout({ xaxis: timeAxis(panel), yaxis: { ...baseLayout().yaxis, ticksuffix: ms.suffix } }) };
}

function rtfAudio(panel) {
  const c = cols(panel);
  const x = times(c.time);
  return {
    data: [
      { type: "scatter", mode: "lines+markers", name: "Mean RTF", x, y: c.mean_rtf, line: { color: COLORS.calls, width: 2 },
        marker: { size: 4 }, hovertemplate: "RTF %{y:.3f}x<extra></extra>" },
      { type: "bar", name: "Mean audio length", x, y: c.mean_audio_length, yaxis: "y2", opacity: 0.45,
        marker: { color: COLORS.audio }, customdata: c.total_audio,
        hovertemplate: "%{y:.1f} s mean audio (total %{customdata:,.0f} s)<extra></extra>" },
    ],
    layout: baseLayout({
      xaxis: timeAxis(panel),
      yaxis: { ...baseLayout().yaxis, ticksuffix: "x", title: { text: "real-time factor" } },
      yaxis2: { overlaying: "y", side: "right", ticksuffix: " s", rangemode: "tozero", showgrid: false, tickmode: "auto",
        title: { text: "audio length" } },
    }),
  };
}

function stages(panel) {
  const c = cols(panel);
  const x = times(c.time);
  const ms = msScale(["gpt_gen", "gpt_forward", "s2mel", "bigvgan"].map((s) => c[s]).reduce(
    (acc, arr) => acc.map((v, i) => (v ?? 0) + (arr[i] ?? 0)), new Array(x.length).fill(0)));
  const data = ["gpt_gen", "gpt_forward", "s2mel", "bigvgan"].map((stage) => ({
    type: "bar", name: stage, x, y: scaled(c[stage], ms), marker: { color: COLORS[stage] },
    hovertemplate: `${stage} %{y:${ms.hover}}${ms.suffix}<extra></extra>`,
  }));
  return { data, layout: baseLayout({ barmode: "stack", bargap: 0.15, xaxis: timeAxis(panel),
    yaxis: { ...baseLayout().yaxis, ticksuffix: ms.suffix } }) };
}

function failureRate(panel) {
  const c = cols(panel);
  const x = times(c.time);
  return {
    data: [
      { type: "scatter", mode: "lines", name: "Failure rate", x, y: c.failure_rate, fill: "tozeroy",
        line: { color: COLORS.failed, width: 2 }, fillcolor: "rgba(228,87,86,0.15)",
        customdata: c.failures.map((f, i) => [f, c.calls[i]]),
        hovertemplate: "%{y:.2f} % failed (%{customdata[0]:,} of %{customdata[1]:,})<extra></extra>" },
    ],
    layout: baseLayout({ xaxis: timeAxis(panel), yaxis: pctAxis({ rangemode: "tozero", gridcolor: "#eef0f3" }), showlegend: false }),
  };
}

function heatmap(panel) {
  const c = cols(panel);
  const days = (panel.weekdays || ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]).map(plotText);
  const z = days.map(() => new Array(24).fill(0));
  c.weekday.forEach((d, i) => { z[d][c.hour[i]] = c.calls[i]; });
  const hours = [...Array(24).keys()].map((h) => `${String(h).padStart(2, "0")}:00`);
  return {
    data: [{ type: "heatmap", x: hours, y: days, z, colorscale: [[0, "#f3f6fb"], [0.5, "#7fa6e0"], [1, "#1f4e9c"]], hoverongaps: false,
      colorbar: { title: { text: "calls" }, thickness: 12 },
      hovertemplate: "%{y} %{x}: %{z:,} calls<extra></extra>" }],
    layout: baseLayout({ hovermode: "closest", xaxis: { type: "category", tickangle: 0, nticks: 12, automargin: true },
      yaxis: { type: "category", autorange: "reversed", automargin: true }, margin: { l: 50, r: 10, t: 8, b: 40 } }),
  };
}

// --- panels by category -------------------------------------------------------------------------

function callsAndLatency(categories, c, extraLatency = []) {
  const ms = msScale(c.mean_latency, ...extraLatency.map(([key]) => c[key]));
  const hoverExtra = (i) => {
    const parts = [`${fmt.percent(c.success_rate[i] / 100)} success`];
    if (c.mean_rtf) parts.push(`RTF ${fmt.factor(c.mean_rtf[i])}`);
    return parts.join(" · ");
  };
  const data = [
    { type: "bar", name: "Calls", x: categories, y: c.calls, marker: { color: COLORS.calls }, opacity: 0.85,
      customdata: categories.map((_, i) => hoverExtra(i)),
      hovertemplate: "%{y:,} calls (%{customdata})<extra></extra>" },
    { type: "scatter", mode: "markers+lines", name: "Mean latency", x: categories, y: scaled(c.mean_latency, ms),
      yaxis: "y2", marker: { color: COLORS.latency, size: 9 }, line: { width: 1, dash: "dot" }, cliponaxis: false,
      hovertemplate: `mean %{y:${ms.hover}}${ms.suffix}<extra></extra>` },
  ];
  for (const [key, name, color] of extraLatency) {
    data.push({ type: "scatter", mode: "markers", name, x: categories, y: scaled(c[key], ms), yaxis: "y2", cliponaxis: false,
      marker: { color, size: 9, symbol: "diamond" }, hovertemplate: `${name} %{y:${ms.hover}}${ms.suffix}<extra></extra>` });
  }
  const layout = baseLayout({
    xaxis: { type: "category", automargin: true },
    yaxis: { ...baseLayout().yaxis, title: { text: "calls" }, tickformat: ",~s" },
    yaxis2: { overlaying: "y", side: "right", ticksuffix: ms.suffix, rangemode: "tozero", showgrid: false,
      tickmode: "auto", title: { text: "latency" } },
  });
  return { data, layout };
}

function byEmotion(panel) {
  const c = cols(panel);
  return callsAndLatency(c.emotion.map((e) => label(e)), c);
}

function byTextLength(panel) {
  const c = cols(panel);
  const chart = callsAndLatency(c.length_bucket.map((b) => plotText(`${b} chars`)), c);
  if (c.mean_latency_success) {
    const ms = msScale(c.mean_latency, c.mean_latency_success);
    chart.data[1].y = scaled(c.mean_latency, ms);
    chart.data[1].hovertemplate = `mean %{y:${ms.hover}}${ms.suffix}<extra></extra>`;
    chart.data.push({ type: "scatter", mode: "markers", name: "Mean latency (successful)", x: chart.data[0].x,
      y: scaled(c.mean_latency_success, ms), yaxis: "y2", marker: { color: COLORS.success, size: 9, symbol: "diamond" },
      hovertemplate: `successful: mean %{y:${ms.hover}}${ms.suffix}<extra></extra>` });
    chart.layout.yaxis2.ticksuffix = ms.suffix;
  }
  return chart;
}

function byNode(panel) {
  const c = cols(panel);
  return callsAndLatency(c.node.map((n) => label(n)), c, [["p95_latency", "p95 latency", COLORS.p99]]);
}

function byModel(panel) {
  const c = cols(panel);
  const names = c.model.map((m, i) => plotText(`${text(m, "?")} ${text(c.model_version[i], "")}`.trim()));
  return callsAndLatency(names, c, [["p50_latency", "p50 latency", COLORS.p50], ["p95_latency", "p95 latency", COLORS.p99]]);
}

function latencyVsLength(panel) {
  const c = cols(panel);
  const ms = msScale(c.latency_ms);
  const data = [];
  for (const [status, color] of [["success", COLORS.calls], ["failed", COLORS.failed]]) {
    const idx = c.status.map((s, i) => (s === status ? i : -1)).filter((i) => i >= 0);
    if (!idx.length) continue;
    data.push({ type: "scatter", mode: "markers", name: status, x: idx.map((i) => c.text_length[i]),
      y: idx.map((i) => c.latency_ms[i] * ms.k), marker: { color, size: 5, opacity: status === "failed" ? 0.8 : 0.45 },
      hovertemplate: `%{x:,} chars → %{y:${ms.hover}}${ms.suffix} (${status})<extra></extra>` });
  }
  const note = panel.limit ? `latest ${fmt.count(panel.rows.length)} calls` : "";
  return {
    data,
    layout: baseLayout({ hovermode: "closest",
      xaxis: { title: { text: "text length (characters)" }, gridcolor: "#eef0f3", rangemode: "tozero", zeroline: false },
      yaxis: { ...baseLayout().yaxis, ticksuffix: ms.suffix },
      annotations: note ? [{ text: note, xref: "paper", yref: "paper", x: 1, y: 1, showarrow: false, font: { size: 11, color: "#5f6b7a" } }] : [] }),
  };
}

// Error types (the stats API gives every reader types and counts, never messages).
function errors(panel) {
  const c = cols(panel);
  const full = c.error_type.map((t) => text(t, "error"));
  // Cut before escaping, so no entity is cut in half.
  const labels = full.map((f) => plotText(f.length > 48 ? `${f.slice(0, 47)}…` : f));
  return {
    data: [{ type: "bar", orientation: "h", x: c.calls, y: labels, marker: { color: COLORS.failed },
      customdata: full.map((f, i) => [plotText(f), c.share[i]]),
      hovertemplate: "%{customdata[0]}<br>%{x:,} calls, %{customdata[1]:.1f} % of failures<extra></extra>" }],
    layout: baseLayout({ hovermode: "closest", showlegend: false,
      xaxis: { title: { text: `calls (${fmt.count(panel.failures)} failures in all)` }, gridcolor: "#eef0f3", rangemode: "tozero" },
      yaxis: { type: "category", autorange: "reversed", automargin: true },
      margin: { l: 10, r: 20, t: 8, b: 40 } }),
  };
}

const RENDERERS = {
  daily: callsSuccessLatency,
  hourly: callsSuccessLatency,
  by_emotion: byEmotion,
  by_text_length: byTextLength,
  latency_vs_length: latencyVsLength,
  heatmap,
  percentiles,
  rtf_audio: rtfAudio,
  stages,
  errors,
  failure_rate: failureRate,
  by_node: byNode,
  by_model: byModel,
};

// Why a panel has nothing to draw although the range has calls.
const NOTHING = {
  errors: "No failures in this range",
  stages: "No stage times recorded in this range",
  rtf_audio: "No real-time factor or audio length recorded in this range",
};

function hasValues(chart) {
  return chart.data.some((trace) => (trace.z || trace.y || []).flat().some((v) => v !== null && v !== undefined && v !== 0));
}

// --- the whole dashboard -------------------------------------------------------------------------

function showPanel(figure, message) {
  const plot = figure.querySelector(".vx-plot");
  const empty = figure.querySelector(".vx-panel-empty");
  figure.querySelector(".vx-panel-table")?.replaceChildren();
  plot.removeAttribute("aria-busy");
  if (message) {
    window.Plotly.purge(plot);
    plot.hidden = true;
    empty.hidden = false;
    empty.textContent = message;
    figure.dataset.state = "empty";
  } else {
    plot.hidden = false;
    empty.hidden = true;
    figure.dataset.state = "drawn";
  }
}

// Draws every panel; returns false when the range has no generations at all.
export function drawDashboard(root, data) {
  const panels = data.panels || {};
  const summary = panels.summary;
  const anything = summary && !summary.empty;
  if (summary) drawTiles(root, summary);
  for (const figure of root.querySelectorAll(".vx-panel")) {
    const name = figure.dataset.panel;
    const panel = panels[name];
    const render = RENDERERS[name];
    if (!anything || !panel || panel.empty || !panel.rows.length) {
      showPanel(figure, anything ? NOTHING[name] || "No generations in this range" : "No generations in this range");
      continue;
    }
    const chart = render(panel);
    if (!hasValues(chart)) {
      showPanel(figure, NOTHING[name] || "Nothing recorded in this range");
      continue;
    }
    showPanel(figure, null);
    const plot = figure.querySelector(".vx-plot");
    window.Plotly.react(plot, chart.data, chart.layout, CONFIG);
    const table = figure.querySelector(".vx-panel-table");
    if (table) drawTable(table, panel);
  }
  return Boolean(anything);
}
