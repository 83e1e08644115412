// Numbers a person reads: units and sensible rounding, one place for the whole page.

const intFormat = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });

function round(value, digits) {
  return new Intl.NumberFormat("en", { maximumFractionDigits: digits, minimumFractionDigits: 0 }).format(value);
}

function missing(value) {
  return value === null || value === undefined || Number.isNaN(value);
}

// 1234 -> "1,234"; 1234567 -> "1.23 M" (tiles stay short; hover shows the exact count)
export function count(value) {
  if (missing(value)) return "–";
  if (Math.abs(value) >= 1e6) return `${round(value / 1e6, 2)} M`;
  return intFormat.format(value);
}

// Milliseconds: "850 ms" below a second, "1.25 s" below a minute, then "2.5 min".
export function duration(ms) {
  if (missing(ms)) return "–";
  const abs = Math.abs(ms);
  if (abs < 10) return `${round(ms, 1)} ms`;
  if (abs < 1000) return `${intFormat.format(ms)} ms`;
  if (abs < 60000) return `${round(ms / 1000, 2)} s`;
  return `${round(ms / 60000, 1)} min`;
}

// A ratio 0..1 as a percentage: 0.98765 -> "98.8 %"; keeps "100 %" only for exactly 1.
export function percent(ratio) {
  if (missing(ratio)) return "–";
  const pct = ratio * 100;
  if (pct > 99.95 && pct < 100) return `${round(pct, 2)} %`;
  return `${round(pct, 1)} %`;
}

// Real-time factor: "0.37x".
export function factor(value) {
  if (missing(value)) return "–";
  return `${round(value, 2)}x`;
}
