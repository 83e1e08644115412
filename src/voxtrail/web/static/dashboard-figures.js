// The figures a person reads exactly: the summary tiles and the tables under the side-by-side
// panels, formatted by the unit the stats API gives each column.

import * as fmt from "./format.js";

// {columns, rows} -> {name: [values]}
export function cols(panel) {
  const out = {};
  panel.columns.forEach((name, i) => { out[name] = panel.rows.map((row) => row[i]); });
  return out;
}

// --- summary tiles ------------------------------------------------------------------------------

export function drawTiles(root, summary) {
  const c = cols(summary);
  const value = (key) => (c[key] ? c[key][0] : null);
  for (const tile of root.querySelectorAll(".vx-tile")) {
    const key = tile.dataset.tile;
    tile.querySelector(".vx-tile-value").textContent = byUnit(value(key), summary.units[key]);
  }
  const failures = value("failures");
  root.querySelector('.vx-tile[data-tile="success_rate"] .vx-tile-detail').textContent =
    failures ? `${fmt.count(failures)} failed` : "none failed";
}

// --- exact figures under the side-by-side panels ----------------------------------------------

const HEADINGS = {
  node: "Node", model: "Model", model_version: "Version", error_type: "Error type", message: "Message",
  calls: "Calls", share: "Share of failures", success_rate: "Success", mean_latency: "Mean latency",
  p50_latency: "p50", p95_latency: "p95", mean_rtf: "RTF",
};

export function byUnit(value, unit) {
  if (value === null || value === undefined) return "–";
  switch (unit) {
    case "calls": return fmt.count(value);
    case "%": return fmt.percent(value / 100);
    case "ms": return fmt.duration(value);
    case "s": return fmt.duration(value * 1000);
    case "x": return fmt.factor(value);
    case undefined: case null: return String(value);
    default: return `${value} ${unit}`;
  }
}

export function drawTable(container, panel) {
  const table = document.createElement("table");
  table.className = "vx-table";
  const head = table.createTHead().insertRow();
  for (const name of panel.columns) {
    const th = document.createElement("th");
    th.textContent = HEADINGS[name] || name;
    if (panel.units[name]) th.className = "vx-num";
    head.append(th);
  }
  const body = table.createTBody();
  for (const row of panel.rows) {
    const tr = body.insertRow();
    panel.columns.forEach((name, i) => {
      const td = tr.insertCell();
      td.textContent = byUnit(row[i], panel.units[name]);
      if (panel.units[name]) td.className = "vx-num";
    });
  }
  container.replaceChildren(table);
}
