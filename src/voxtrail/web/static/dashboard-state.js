// The dashboard's state lives in the URL: filters, time range and refresh interval, so a view
// can be shared and back/forward restore it. Parameter names are the stats API's own.

export const FILTER_KEYS = ["node", "model", "model_version", "emotion", "emotion_control", "status"];
export const RANGES = ["1h", "24h", "7d", "30d"];
export const REFRESH_CHOICES = [0, 30, 60, 300];

export function readState(search, defaults) {
  const params = new URLSearchParams(search);
  const filters = {};
  for (const key of FILTER_KEYS) {
    // repeated keys (node=a&node=b) and comma lists (node=a,b) both mean "any of these"
    filters[key] = params.getAll(key).flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
  }
  const since = params.get("since") || "";
  const until = params.get("until") || "";
  let range = params.get("range") || "";
  if (!range) range = since || until ? "custom" : defaults.range;
  const refreshText = params.get("refresh");
  const refresh = refreshText === null ? defaults.refresh : Number(refreshText) || 0;
  // tz: the zone of day and hour buckets; absent = the browser's own (not written to the URL).
  const tz = params.get("tz") || "";
  return { range, since, until, tz, filters, refresh };
}

// Query string for the stats API (filters only) ...
export function apiParams(state) {
  const params = new URLSearchParams();
  if (state.range === "custom") {
    if (state.since) params.set("since", state.since);
    if (state.until) params.set("until", state.until);
  } else {
    params.set("range", state.range);
  }
  for (const key of FILTER_KEYS) {
    for (const value of state.filters[key]) params.append(key, value);
  }
  if (state.tz) params.set("tz", state.tz);
  return params;
}

// A query string for a link a person reads: ":" and "," stay readable (both are allowed in a
// query string), so ?since=2026-11-01T08:00:00Z&node=a,b.
export function readableQuery(params) {
  return params.toString().replace(/%3A/gi, ":").replace(/%2C/gi, ",");
}

// ... and for the page's own URL (plus the refresh interval when it is not the default).
export function pageQuery(state, defaults) {
  const params = apiParams(state);
  if (state.refresh !== defaults.refresh) params.set("refresh", String(state.refresh));
  return readableQuery(params);
}

