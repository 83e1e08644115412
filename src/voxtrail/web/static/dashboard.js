// The dashboard page: keeps the controls, the URL and the charts in step.
// Data comes from the stats API (fetch, same origin, session cookie); configuration from the
// data-* attributes of #dashboard. No inline script anywhere (the CSP forbids it).

import { FILTER_KEYS, apiParams, pageQuery, readState, readableQuery } from "./dashboard-state.js";
import { drawDashboard } from "./dashboard-charts.js";
import { drawTable } from "./dashboard-figures.js";

const root = document.getElementById("dashboard");
const defaults = { range: root.dataset.defaultRange, refresh: Number(root.dataset.defaultRefresh) };
const $ = (id) => document.getElementById(id);
const BROWSER_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const RANGE_TEXT = { "1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days" };

let state = readState(location.search, defaults);
let statsRequest = null; // AbortController of the stats fetch in flight (never more than one)
let optionsRequest = null;
let optionsFailed = false; // the menus could not be filled: try again after the next good load
let refreshTimer = null;
let lastLoaded = 0; // Date.now() of the last successful load
let filterChangeTimer = null;

// After a failed load the page waits before asking again, longer after each failure, so a
// server in trouble (or one that refuses the view) is not asked in a loop: 5 s doubling up to
// 5 min, each wait shortened at random by up to half (pages opened together spread out), never
// shorter than the server's Retry-After. A 4xx means the view itself is wrong: no retry until
// the view changes or Refresh is pressed.
const RETRY_FIRST_MS = 5000;
const RETRY_MAX_MS = 300000;
const RETRY_AFTER_MAX_MS = 3600000;
let failures = 0; // failed loads in a row (outage kind: network, 5xx, 408, 429)
let retryAt = 0; // Date.now() when the next attempt is due, while failures > 0
let refused = false; // the last answer was a 4xx: wait for the user

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

class HttpError extends Error {
  constructor(message, status, retryAfterMs) {
    super(message);
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

// Retry-After: seconds, or an HTTP date; 0 when absent or unreadable.
function retryAfterMs(header) {
  if (!header) return 0;
  const ms = /^\d+$/.test(header.trim()) ? Number(header) * 1000 : Date.parse(header) - Date.now();
  return Number.isFinite(ms) ? Math.min(RETRY_AFTER_MAX_MS, Math.max(0, ms)) : 0;
}

async function fetchJson(url, controller) {
  const response = await fetch(url, { signal: controller.signal, headers: { Accept: "application/json" } });
  if (response.status === 401) {
    // The session ended: the login page brings the user back to this very view.
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new HttpError("session ended", 401, 0);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.detail || body.error || `${response.status} ${response.statusText}`;
    throw new HttpError(typeof message === "string" ? message : JSON.stringify(message), response.status,
      retryAfterMs(response.headers.get("Retry-After")));
  }
  return body;
}

function showError(message) {
  $("vx-error").hidden = !message;
  $("vx-error").textContent = message ? `Cannot show this view: ${message}` : "";
}

async function loadOptions() {
  optionsRequest?.abort();
  const controller = (optionsRequest = new AbortController());
  try {
    fillMenus(await fetchJson(`${root.dataset.optionsUrl}?${statsParams(true)}`, controller));
    optionsFailed = false;
  } catch (error) {
    if (error.name === "AbortError") return;
    optionsFailed = true;
    console.warn("filter options:", error.message);
  }
}

// A 4xx other than 408 and 429 says the request is wrong; asking again would get the same answer.
const isRefusal = (error) => error instanceof HttpError && error.status >= 400 && error.status < 500
  && error.status !== 408 && error.status !== 429;

function backoffMs(failed, serverWaitMs) {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (failed - 1));
  return Math.max(serverWaitMs || 0, ceiling / 2 + Math.random() * (ceiling / 2));
}

// ``replace``: the user changed the view, so the answer on its way is for the old one: drop it.
// Otherwise (a timer, the Refresh button) the request in flight is the answer: send no second one.
async function loadStats({ replace = false } = {}) {
  if (statsRequest && !replace) return;
  statsRequest?.abort();
  const controller = (statsRequest = new AbortController());
  root.setAttribute("aria-busy", "true");
  root.dataset.requests = String(Number(root.dataset.requests || 0) + 1); // tests count these
  try {
    const data = await fetchJson(`${root.dataset.statsUrl}?${statsParams()}`, controller);
    failures = 0;
    refused = false;
    showError("");
    const drawn = drawDashboard(root, data);
    root.classList.toggle("vx-is-empty", !drawn);
    $("vx-empty").hidden = drawn;
    showRange(data);
    lastLoaded = Date.now();
    $("vx-updated").textContent = `· updated ${new Date(lastLoaded).toLocaleTimeString()}`;
    root.dataset.loaded = String(Number(root.dataset.loaded || 0) + 1); // tests wait on this
    if (optionsFailed) loadOptions();
  } catch (error) {
    if (error.name === "AbortError") return;
    if (isRefusal(error)) {
      refused = true;
      showError(error.message);
    } else {
      failures += 1;
      const wait = backoffMs(failures, error.retryAfterMs);
      retryAt = Date.now() + wait;
      showError(`${error.message} (trying again in ${Math.round(wait / 1000)} s)`);
    }
    root.dataset.failed = String(Number(root.dataset.failed || 0) + 1);
  } finally {
    if (statsRequest === controller) {
      statsRequest = null;
      root.removeAttribute("aria-busy");
    }
  }
}

// --- top errors with their messages: auditors only, on request, recorded in the access log ------

const messagesButton = $("vx-error-messages");

async function showErrorMessages() {
  const target = $("vx-error-messages-table");
  messagesButton.disabled = true;
  try {
    const data = await fetchJson(`${root.dataset.errorMessagesUrl}?${statsParams()}`, new AbortController());
    const panel = data.panels.errors;
    if (panel.empty) {
      target.textContent = "No failures in this range";
    } else {
      drawTable(target, panel);
    }
    target.dataset.state = "drawn";
  } catch (error) {
    target.textContent = `Cannot show the messages: ${error.message}`;
  } finally {
    messagesButton.disabled = false;
  }
}

function hideErrorMessages() {
  const target = $("vx-error-messages-table");
  if (target) {
    target.replaceChildren();
    delete target.dataset.state;
  }
}

messagesButton?.addEventListener("click", showErrorMessages);

function showRange(data) {
  const { since, until } = data;
  const tz = data.tz || "UTC";
  const label = RANGE_TEXT[state.range] || "Custom range";
  $("vx-range-text").textContent = `${label}: ${shortTime(since, tz)} – ${shortTime(until, tz)} (${tz})`;
  root.dataset.since = since || "";
  root.dataset.until = until || "";
}

// --- auto-refresh: only while the tab is visible -----------------------------------------------

// The next load: a retry after a failure (whatever the refresh setting), the next refresh after
// a good load, nothing after a refusal (the user has to change the view).
function schedule() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  // While a load is on its way, its end schedules the next one.
  if (statsRequest || document.hidden || refused) return;
  let due;
  if (failures > 0) due = retryAt - Date.now();
  else if (state.refresh > 0) due = lastLoaded + state.refresh * 1000 - Date.now();
  else return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    await loadStats();
    schedule();
  }, Math.max(0, due));
}

// A new view starts afresh: a refusal or failures of the old one say nothing about it.
function loadView() {
  failures = 0;
  refused = false;
  hideErrorMessages();
  loadStats({ replace: true }).then(schedule);
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
  loadView();
}

window.addEventListener("popstate", () => {
  state = readState(location.search, defaults);
  syncControls();
  loadOptions();
  loadView();
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

$("vx-refresh-now").addEventListener("click", () => {
  refused = false; // asked for: try this view once more
  loadStats().then(schedule);
});

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
loadView();
