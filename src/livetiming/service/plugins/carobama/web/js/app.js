// The pit-wall page: one WebSocket to the service (plain JSON, see pitwall/__init__.py), a timing
// table, a track map, a focused car and the message feed. Reconnects by itself.

import { el, clear, setText } from "./dom.js";
import { cellParts, formatClock, formatCell, formatMessageTime, safeToken } from "./format.js";
import { FocusPanel } from "./focus.js";
import { TrackMap } from "./map.js";
import { TimingTable } from "./table.js";

const SOCKET_PATH = "/pitwall/socket";
const SILENCE_MS = 6000;
const MAX_MESSAGES = 60;
const STOPPED_FLAGS = new Set(["none", "chequered", "red"]);

const page = {
  socket: null,
  retryDelay: 500,
  lastMessageAt: 0,
  socketUp: false,
  everConnected: false,
  manifest: null,
  state: null,
  stateAt: 0,
  team: new Set(),
  focus: null,
  upstream: null,
  messagesKey: "",
  received: 0,
};

const $ = (id) => document.getElementById(id);

const table = new TimingTable($("table"), (car) => setFocus(car === page.focus ? null : car));
const map = new TrackMap($("map"), (car) => setFocus(car));
const focus = new FocusPanel($("focus"), () => setFocus(null));

// ----- connection ---------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${SOCKET_PATH}`);
  page.socket = socket;
  socket.addEventListener("open", () => {
    page.socketUp = true;
    page.everConnected = true;
    page.retryDelay = 500;
    page.lastMessageAt = performance.now();
    document.body.dataset.socket = "open";
    if (page.focus !== null) {
      send({ type: "focus", car: page.focus });
    }
    updateBanner();
  });
  socket.addEventListener("message", (event) => {
    page.lastMessageAt = performance.now();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    page.received += 1;
    try {
      handle(message);
    } catch (error) {
      console.error("pit wall: could not show a message", error);
    }
  });
  socket.addEventListener("close", () => lost(socket));
}

/** The socket closed (or went silent): show it, and try again with a growing delay (max 5 s). */
function lost(socket) {
  if (page.socket !== socket) {
    return;
  }
  page.socket = null;
  page.socketUp = false;
  document.body.dataset.socket = "closed";
  updateBanner();
  setTimeout(connect, page.retryDelay);
  page.retryDelay = Math.min(page.retryDelay * 2, 5000);
  try {
    socket.close();
  } catch (error) {
    // already closed
  }
}

function send(message) {
  if (page.socket && page.socket.readyState === WebSocket.OPEN) {
    page.socket.send(JSON.stringify(message));
  }
}

function handle(message) {
  switch (message.type) {
    case "manifest":
      setManifest(message.manifest || {});
      break;
    case "state":
      page.team = new Set((message.team || []).map(String));
      setState(message.state || {});
      break;
    case "map":
      map.setMap(message.map, message.outline);
      updateMapPanel();
      setText($("map-title"), [message.map && message.map.track, message.map && message.map.layout].filter(Boolean).join(" · ") || "Track");
      break;
    case "positions":
      map.setPositions(message.cars || []);
      updateMapPanel();
      break;
    case "collision":
      map.collision(message);
      break;
    case "health":
      page.upstream = message.upstream || null;
      updateBanner();
      break;
    case "car":
      if (message.car === page.focus) {
        focus.setDetail(message.detail);
      }
      break;
    default:
      break;
  }
}

/** The map panel shows only for feeds with a track map or car positions (not BMI karting). */
function updateMapPanel() {
  const outline = map.outline || {};
  const hasMap = Boolean(map.map && (map.map.params || map.map.image)) || map.lastCars.length > 0
    || (outline.line || []).length + (outline.cloud || []).length > 0;
  $("map-panel").hidden = !hasMap;
}

// ----- banner ---------------------------------------------------------------------------------

function updateBanner() {
  const banner = $("banner");
  let text = "";
  let kind = "";
  if (!page.socketUp) {
    kind = "socket";
    text = page.everConnected
      ? "Connection to the pit-wall service lost — reconnecting…"
      : "Connecting to the pit-wall service…";
  } else if (page.upstream && page.upstream.state && page.upstream.state !== "connected") {
    kind = "upstream";
    const upstream = page.upstream;
    const attempt = upstream.attempt ? ` (attempt ${upstream.attempt})` : "";
    const ago = typeof upstream.lastFrameAgo === "number" ? `; last data ${Math.round(upstream.lastFrameAgo)} s ago` : "";
    text = `Timing feed ${upstream.state}${attempt}${ago} — showing the last known state`;
  }
  banner.hidden = !text;
  banner.dataset.kind = kind;
  setText(banner, text);
}

// ----- manifest and state ---------------------------------------------------------------------

function setManifest(manifest) {
  page.manifest = manifest;
  setText($("series"), manifest.name || "Pit wall");
  setText($("session"), manifest.description || "");
  document.title = manifest.name ? `${manifest.name} — pit wall` : "Pit wall";
  table.setColumns(manifest.colSpec || []);
  if (page.state) {
    setState(page.state);
  }
}

function setState(state) {
  page.state = state;
  page.stateAt = performance.now();
  if (!page.manifest) {
    return;
  }
  table.update(state, page.team);
  $("no-cars").hidden = (state.cars || []).length > 0;
  const session = state.session || {};
  const flag = safeToken(session.flagState) || "none";
  $("header").dataset.flag = flag;
  setText($("flag"), flag.replace(/_/g, " ").toUpperCase());
  renderTrackData(session);
  renderMessages(state.messages || []);
  map.setMarks(page.team, page.focus);
  tickClocks();
  updateIntervals();
}

function renderTrackData(session) {
  const list = $("trackdata");
  const spec = (page.manifest && page.manifest.trackDataSpec) || [];
  const values = session.trackData || [];
  if (list.childElementCount !== spec.length * 2) {
    clear(list);
    for (const heading of spec) {
      list.append(el("dt", {}, heading), el("dd"));
    }
  }
  spec.forEach((heading, index) => {
    setText(list.children[index * 2], heading);
    setText(list.children[index * 2 + 1], values[index] ?? "");
  });
}

function renderMessages(messages) {
  const key = `${messages.length}:${JSON.stringify(messages[0] || null)}:${[...page.team].join(",")}`;
  if (key === page.messagesKey) {
    return;
  }
  page.messagesKey = key;
  const list = $("messages");
  clear(list);
  for (const message of messages.slice(0, MAX_MESSAGES)) {
    if (!Array.isArray(message)) {
      continue;
    }
    const [timestamp, category, text, style, car] = message;
    const classes = ["message"];
    const token = safeToken(style);
    if (token) classes.push(`style-${token}`);
    if (car !== undefined && car !== null && page.team.has(String(car))) classes.push("team");
    const item = el("li", { class: classes.join(" "), "data-car": car ?? "" });
    item.append(
      el("span", { class: "time" }, formatMessageTime(timestamp)),
      el("span", { class: "category" }, category ?? ""),
      el("span", { class: "text" }, text ?? ""),
    );
    if (car !== undefined && car !== null && car !== "") {
      const button = el("button", { type: "button", class: "car-link", title: "Focus this car" }, `#${car}`);
      button.addEventListener("click", () => setFocus(String(car)));
      item.append(button);
    }
    list.appendChild(item);
  }
}

// ----- clocks ---------------------------------------------------------------------------------

function tickClocks() {
  const state = page.state;
  if (!state) {
    return;
  }
  const session = state.session || {};
  const running = !STOPPED_FLAGS.has(session.flagState) && !session.pauseClocks;
  const passed = running ? (performance.now() - page.stateAt) / 1000 : 0;
  const elapsed = typeof session.timeElapsed === "number" && session.timeElapsed >= 0 ? session.timeElapsed + passed : null;
  setText($("elapsed"), elapsed === null ? "–" : formatClock(elapsed));
  if (typeof session.lapsRemain === "number") {
    setText($("remaining-label"), "Laps left");
    setText($("remaining"), String(session.lapsRemain));
  } else {
    setText($("remaining-label"), "Remaining");
    const remain = typeof session.timeRemain === "number" && session.timeRemain >= 0
      ? Math.max(0, session.timeRemain - passed) : null;
    setText($("remaining"), remain === null ? "–" : formatClock(remain));
  }
}

// ----- focus ----------------------------------------------------------------------------------

function rowOf(number) {
  const cars = (page.state && page.state.cars) || [];
  const index = cars.findIndex((car) => String(cellParts(car[table.numIndex])[0]) === number);
  return index;
}

function columnValue(car, title) {
  const index = table.columnIndex(title);
  return index >= 0 && car ? cellParts(car[index])[0] : undefined;
}

function interval(car, ahead) {
  // The car's own "Int" when the plugin sends one, else the difference of the gaps.
  const own = columnValue(car, "Int");
  if (own !== undefined && own !== "" && own !== null) {
    return formatCell(own, "delta");
  }
  const gap = columnValue(car, "Gap");
  const gapAhead = columnValue(ahead, "Gap");
  if (typeof gap === "number" && typeof gapAhead === "number") {
    return formatCell(Math.round((gap - gapAhead) * 1000) / 1000, "delta");
  }
  return "";
}

function updateIntervals() {
  if (page.focus === null) {
    return;
  }
  const cars = (page.state && page.state.cars) || [];
  const index = rowOf(page.focus);
  if (index < 0) {
    focus.setIntervals({ ahead: "", behind: "" });
    return;
  }
  const number = (car) => (car ? String(cellParts(car[table.numIndex])[0]) : null);
  const ahead = index > 0 ? cars[index - 1] : null;
  const behind = index + 1 < cars.length ? cars[index + 1] : null;
  focus.setIntervals({
    ahead: ahead ? interval(cars[index], ahead) : "leader",
    aheadCar: number(ahead),
    behind: behind ? interval(behind, cars[index]) : "",
    behindCar: number(behind),
  });
}

function setFocus(number) {
  page.focus = number;
  table.setFocus(number);
  map.setMarks(page.team, number);
  map.setPositions(map.lastCars);
  let label = null;
  if (number !== null) {
    const index = rowOf(number);
    const driver = index >= 0 ? columnValue(page.state.cars[index], "Driver") : null;
    label = driver ? `#${number} ${driver}` : `#${number}`;
  }
  focus.setCar(number, label);
  send({ type: "focus", car: number });
  updateIntervals();
}

// ----- start ----------------------------------------------------------------------------------

setInterval(() => {
  tickClocks();
  table.expireBlinks();
  if (page.socketUp && performance.now() - page.lastMessageAt > SILENCE_MS && page.socket) {
    // The service sends health every second: silence means a dead connection.
    lost(page.socket);
  }
}, 250);

window.pitwall = {
  /** Read-only look at the page's data, for debugging and tests. */
  get received() { return page.received; },
  get focus() { return page.focus; },
  get socketUp() { return page.socketUp; },
};

updateBanner();
connect();
