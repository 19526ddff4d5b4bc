// Formatting of timing values, like Timing71 shows them (timing71-wire §3.3), except that zero is
// shown as "0" rather than left blank.

/** Seconds as "S.sss" under a minute, else "M:SS.sss"; negative values get a "-". */
export function formatTime(seconds, precision = 3) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) {
    return seconds === null || seconds === undefined ? "" : String(seconds);
  }
  if (seconds === 0) {
    return "0";
  }
  const factor = 10 ** precision;
  const rounded = Math.round(Math.abs(seconds) * factor) / factor;
  let text;
  if (rounded < 60) {
    text = rounded.toFixed(precision);
  } else {
    const minutes = Math.floor(rounded / 60);
    const rest = rounded - minutes * 60;
    text = `${minutes}:${rest.toFixed(precision).padStart(precision + 3, "0")}`;
  }
  return (seconds < 0 ? "-" : "") + text;
}

/** A session clock: "H:MM:SS" (whole seconds, never negative). */
export function formatClock(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) {
    return "–";
  }
  const total = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  return `${hours}:${String(minutes).padStart(2, "0")}:${String(secs).padStart(2, "0")}`;
}

/** The text of one cell value for a column type (text, class, numeric, delta, time, laptime). */
export function formatCell(value, type) {
  if (value === null || value === undefined || value === "") {
    return "";
  }
  if (value === 0) {
    return "0";
  }
  if (typeof value === "number" && (type === "time" || type === "laptime" || type === "delta")) {
    return formatTime(value);
  }
  return String(value);
}

/** Local wall-clock "HH:MM:SS" of a message timestamp (seconds or milliseconds since 1970). */
export function formatMessageTime(timestamp) {
  if (typeof timestamp !== "number" || !Number.isFinite(timestamp)) {
    return "";
  }
  const ms = timestamp < 100000000000 ? timestamp * 1000 : timestamp;
  const date = new Date(ms);
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((part) => String(part).padStart(2, "0"))
    .join(":");
}

/** Split a cell into [value, flag] ([name, rank] for drivers). */
export function cellParts(cell) {
  if (Array.isArray(cell)) {
    return [cell[0], typeof cell[1] === "string" ? cell[1] : ""];
  }
  return [cell, ""];
}

/** A flag or style name made safe for a class name ("sb-new" stays, anything odd is dropped). */
export function safeToken(text) {
  return typeof text === "string" && /^[A-Za-z0-9_-]{1,32}$/.test(text) ? text.toLowerCase() : "";
}
