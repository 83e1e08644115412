// The dashboard page: keeps the controls, the URL and the charts in step.
// Data comes from the stats API (fetch, same origin, session cookie); configuration from the
// data-* attributes of #dashboard. No inline script anywhere (the CSP forbids it).

import { FILTER_KEYS, apiParams, pageQuery, readState, readableQuery } from "./dashboard-state.js";
import { drawDashboard } from "./dashboard-charts.js";

const root = document.getElementById("dashboard");
const defaults = { range: root.dataset.defaultRange, refresh: Number(root.dataset.defaultRefresh) };
const $ = (id) => document.getElementById(id);
const BROWSER_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const RANGE_TEXT = { "1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days" };

let state = readState(location.search, defaults);
let statsRequest = null; // AbortController of the stats fetch in flight
let optionsRequest = null;
let refreshTimer = null;
let lastLoaded = 0; // Date.now() of the last successful load
let filterChangeTimer = null;

// --- time values: the URL holds ISO-8601 UTC; the inputs show the browser's local time ---------

function toLocalInput(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function fromLocalInput(value) {
  if (!value) return "";
  const date = new Date(value); // datetime-local values are read as local time
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().replace(".000Z", "Z");
}

// "2026-11-01 14:00" in the view's time zone.
function shortTime(iso, tz) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
    timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).formatToParts(date).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`;
}

// The stats API's parameters: the page's, plus the browser's time zone unless the URL names one.
function statsParams(filtersOnly = false) {
  const params = apiParams(filtersOnly ? { ...state, filters: Object.fromEntries(FILTER_KEYS.map((k) => [k, []])) } : state);
  if (!params.has("tz")) params.set("tz", BROWSER_TZ);
  return params;
}

// --- controls <-> state ------------------------------------------------------------------------

function menuSummary(values) {
  if (values.length === 0) return "all";
  if (values.length <= 2) return values.join(", ");
  return `${values.length} selected`;
}

function syncControls() {
  // Auditors get a link to the individual events behind the figures (same range and filters).
  const eventsLink = $("vx-events-link");
  if (eventsLink) eventsLink.href = `/events?${readableQuery(apiParams(state))}`;
  $("vx-range").value = state.range;
  $("vx-custom").hidden = state.range !== "custom";
  $("vx-since").value = toLocalInput(state.since);
  $("vx-until").value = toLocalInput(state.until);
  $("vx-refresh").value = String(state.refresh);
  for (const menu of document.querySelectorAll(".vx-menu")) {
    const selected = state.filters[menu.dataset.filter];
    menu.querySelector(".vx-menu-value").textContent = menuSummary(selected);
    menu.classList.toggle("vx-active", selected.length > 0);
    for (const box of menu.querySelectorAll("input[type=checkbox]")) box.checked = selected.includes(box.value);
  }
}

function fillMenus(options) {
  for (const menu of document.querySelectorAll(".vx-menu")) {
    const key = menu.dataset.filter;
    const selected = state.filters[key];
    // A selected value absent from this range still gets its box, so it can be unticked.
    const values = [...new Set([...(options[key] || []).map(String), ...selected])];
    const body = menu.querySelector(".vx-menu-body");
    body.replaceChildren();
    if (values.length === 0) {
      const none = document.createElement("p");
      none.className = "vx-muted";
      none.textContent = "No values in this range";
      body.append(none);
    }
    for (const value of values) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = value;
      box.checked = selected.includes(value);
      label.append(box, " ", value);
      body.append(label);
    }
  }
}

function readMenus() {
  const filters = {};
  for (const key of FILTER_KEYS) {
    const menu = document.querySelector(`.vx-menu[data-filter="${key}"]`);
    filters[key] = [...menu.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);
  }
  return filters;
}

// --- loading -------------------------------------------------------------------------------------

async function fetchJson(url, controller) {
  const response = await fetch(url, { signal: controller.signal, headers: { Accept: "application/json" } });
  if (response.status === 401) {
    // The session ended: the login page brings the user back to this very view.
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new Error("session ended");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.detail || body.error || `${response.status} ${response.statusText}`;
    throw new Error(typeof message === "string" ? message : JSON.stringify(message));
  }
  return body;
}

function showError(message) {
  $("vx-error").hidden = !message;
  $("vx-error").textContent = message ? `Cannot show this view: ${message}` : "";
}

async function loadOptions() {
  optionsRequest?.abort();
  optionsRequest = new AbortController();
  try {
    fillMenus(await fetchJson(`${root.dataset.optionsUrl}?${statsParams(true)}`, optionsRequest));
  } catch (error) {
    if (error.name !== "AbortError") console.warn("filter options:", error.message);
  }
}

async function loadStats() {
  statsRequest?.abort();
  const controller = (statsRequest = new AbortController());
  root.setAttribute("aria-busy", "true");
  try {
    const data = await fetchJson(`${root.dataset.statsUrl}?${statsParams()}`, controller);
    showError("");
    const drawn = drawDashboard(root, data);
    root.classList.toggle("vx-is-empty", !drawn);
    $("vx-empty").hidden = drawn;
    showRange(data);
    lastLoaded = Date.now();
    $("vx-updated").textContent = `· updated ${new Date(lastLoaded).toLocaleTimeString()}`;
    root.dataset.loaded = String(Number(root.dataset.loaded || 0) + 1); // tests wait on this
  } catch (error) {
    if (error.name === "AbortError") return;
    showError(error.message);
    root.dataset.failed = String(Number(root.dataset.failed || 0) + 1);
  } finally {
    if (statsRequest === controller) root.removeAttribute("aria-busy");
  }
}

function showRange(data) {
  const { since, until } = data;
  const tz = data.tz || "UTC";
  const label = RANGE_TEXT[state.range] || "Custom range";
  $("vx-range-text").textContent = `${label}: ${shortTime(since, tz)} – ${shortTime(until, tz)} (${tz})`;
  root.dataset.since = since || "";
  root.dataset.until = until || "";
}

// --- auto-refresh: only while the tab is visible -----------------------------------------------

function schedule() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if (state.refresh <= 0 || document.hidden) return;
  const due = Math.max(0, lastLoaded + state.refresh * 1000 - Date.now());
  refreshTimer = setTimeout(async () => {
    await loadStats();
    schedule();
  }, due);
}

document.addEventListener("visibilitychange", schedule);

// --- navigation: every change is a URL, so back/forward and shared links restore it -----------

function navigate(next, { reloadOptions = false } = {}) {
  const rangeChanged = next.range !== state.range || next.since !== state.since || next.until !== state.until;
  state = next;
  const query = pageQuery(state, defaults);
  history.pushState(null, "", query ? `?${query}` : location.pathname);
  syncControls();
  if (rangeChanged || reloadOptions) loadOptions();
  loadStats().then(schedule);
}

window.addEventListener("popstate", () => {
  state = readState(location.search, defaults);
  syncControls();
  loadOptions();
  loadStats().then(schedule);
});

$("vx-range").addEventListener("change", (event) => {
  const range = event.target.value;
  if (range === "custom") {
    // Start from the window on screen; the user edits it and presses Apply.
    $("vx-custom").hidden = false;
    $("vx-since").value = toLocalInput(root.dataset.since);
    $("vx-until").value = toLocalInput(root.dataset.until);
    return;
  }
  navigate({ ...state, range, since: "", until: "" });
});

$("vx-apply-custom").addEventListener("click", () => {
  const since = fromLocalInput($("vx-since").value);
  const until = fromLocalInput($("vx-until").value);
  if (!since && !until) {
    showError("choose a start or an end for the custom range");
    return;
  }
  navigate({ ...state, range: "custom", since, until });
});

$("vx-refresh").addEventListener("change", (event) => {
  state = { ...state, refresh: Number(event.target.value) };
  const query = pageQuery(state, defaults);
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
  schedule();
});

$("vx-refresh-now").addEventListener("click", () => loadStats().then(schedule));

$("vx-filter-menus").addEventListener("change", (event) => {
  if (event.target.type !== "checkbox") return;
  // Ticking several boxes in a row is one change: wait until the clicking stops.
  clearTimeout(filterChangeTimer);
  filterChangeTimer = setTimeout(() => navigate({ ...state, filters: readMenus() }), 350);
});

$("vx-clear-filters").addEventListener("click", () => {
  navigate({ ...state, filters: Object.fromEntries(FILTER_KEYS.map((k) => [k, []])) });
});

// Close an open menu when clicking elsewhere.
document.addEventListener("click", (event) => {
  for (const menu of document.querySelectorAll(".vx-menu[open]")) {
    if (!menu.contains(event.target)) menu.open = false;
  }
});

$("vx-controls").addEventListener("submit", (event) => event.preventDefault());

syncControls();
loadOptions();
loadStats().then(schedule);
