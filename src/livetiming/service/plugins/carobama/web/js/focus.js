// The focused car: intervals to the cars around it, a lap time chart, its laps (with sectors),
// stints and pit stops.

import { svg, clear, fillTable, setText } from "./dom.js";
import { formatTime } from "./format.js";

const CHART = { width: 400, height: 160, left: 58, right: 8, top: 10, bottom: 18 };

function show(value) {
  return value === null || value === undefined ? "" : value;
}

export class FocusPanel {
  /**
   * @param {HTMLElement} panel the #focus section
   * @param {() => void} onClose called when the close button is pressed
   */
  constructor(panel, onClose) {
    this.panel = panel;
    this.title = panel.querySelector("#focus-title");
    this.chart = panel.querySelector("#lapchart");
    this.empty = panel.querySelector("#focus-empty");
    this.laps = panel.querySelector("#focus-laps");
    this.stints = panel.querySelector("#focus-stints");
    this.pits = panel.querySelector("#focus-pits");
    this.ahead = panel.querySelector("#focus-ahead");
    this.aheadCar = panel.querySelector("#focus-ahead-car");
    this.behind = panel.querySelector("#focus-behind");
    this.behindCar = panel.querySelector("#focus-behind-car");
    this.car = null;
    panel.querySelector("#focus-close").addEventListener("click", onClose);
  }

  /** Focus car ``number`` (null hides the panel). */
  setCar(number, label) {
    this.car = number;
    this.panel.hidden = number === null;
    this.panel.dataset.car = number ?? "";
    if (number !== null) {
      setText(this.title, label || `#${number}`);
      this.setDetail(null);
    }
  }

  /** Intervals: {ahead, aheadCar, behind, behindCar} already formatted. */
  setIntervals(intervals) {
    setText(this.ahead, intervals.ahead);
    setText(this.aheadCar, intervals.aheadCar ? `#${intervals.aheadCar}` : "—");
    setText(this.behind, intervals.behind);
    setText(this.behindCar, intervals.behindCar ? `#${intervals.behindCar}` : "—");
  }

  /** The service's detail of the focused car (null: none yet, or this plugin sends none). */
  setDetail(detail) {
    const laps = detail && Array.isArray(detail.laps) ? detail.laps : [];
    this.empty.hidden = laps.length > 0;
    if (detail) {
      const who = detail.driver ? ` ${detail.driver}` : "";
      setText(this.title, `#${detail.car}${who}`);
      this.panel.classList.toggle("team", Boolean(detail.team));
    }
    const pitLaps = new Set();
    for (const stop of (detail && detail.pits) || []) {
      if (typeof stop.lap === "number") {
        pitLaps.add(stop.lap);
        pitLaps.add(stop.lap + 1);
      }
    }
    this._chart(laps, pitLaps, detail);
    const sectors = detail ? detail.sectorCount || 0 : 0;
    const headers = ["Lap", "Time"];
    for (let i = 1; i <= sectors; i += 1) {
      headers.push(`S${i}`);
    }
    headers.push("Driver", "Tyre", "Pos");
    const rows = laps
      .slice()
      .reverse()
      .map((lap) => {
        const flag = lap.sb ? "flag-sb" : lap.pb ? "flag-pb" : "";
        const cells = [lap.lap, [formatTime(lap.time), `number ${flag}`]];
        for (let i = 0; i < sectors; i += 1) {
          cells.push([formatTime((lap.sectors || [])[i] ?? null), "number"]);
        }
        cells.push(show(lap.driver), show(lap.tyre), show(lap.position));
        return { cells, attributes: { "data-lap": lap.lap, class: pitLaps.has(lap.lap) ? "pitlap" : "" } };
      });
    fillTable(this.laps, headers, rows);
    const stints = ((detail && detail.stints) || []).map((stint, index) => ({
      cells: [
        index + 1,
        `${stint.start}–${stint.end}${stint.inProgress ? " …" : ""}`,
        stint.laps,
        show(stint.driver),
        show(stint.tyre),
        [formatTime(stint.best), "number"],
        [formatTime(stint.average), "number"],
      ],
    }));
    fillTable(this.stints, ["#", "Laps", "n", "Driver", "Tyre", "Best", "Avg"], stints);
    const pits = ((detail && detail.pits) || []).map((stop, index) => ({
      cells: [
        index + 1,
        show(stop.lap),
        [typeof stop.duration === "number" ? `${stop.duration.toFixed(1)} s` : "", "number"],
        `${show(stop.tyreIn)}${stop.tyreOut && stop.tyreOut !== stop.tyreIn ? ` → ${stop.tyreOut}` : ""}`,
      ],
    }));
    fillTable(this.pits, ["#", "Lap", "Time", "Tyres"], pits);
  }

  _chart(laps, pitLaps, detail) {
    const root = this.chart;
    clear(root);
    const timed = laps.filter((lap) => typeof lap.time === "number" && lap.time > 0);
    root.dataset.laps = String(timed.length);
    if (!timed.length) {
      return;
    }
    const best = Math.min(...timed.map((lap) => lap.time));
    // Slow laps (pit, incidents) are drawn at the top rather than squashing the others.
    const cap = best * 1.15;
    const worst = Math.min(Math.max(...timed.map((lap) => lap.time)), cap);
    const low = best - Math.max((worst - best) * 0.1, 0.2);
    const high = worst + Math.max((worst - best) * 0.1, 0.2);
    const first = laps[0].lap;
    const last = Math.max(laps[laps.length - 1].lap, first + 1);
    const x = (lap) => CHART.left + ((lap - first) / (last - first)) * (CHART.width - CHART.left - CHART.right);
    const y = (time) =>
      CHART.top + ((high - Math.min(time, high)) / (high - low)) * (CHART.height - CHART.top - CHART.bottom);
    root.appendChild(svg("line", { class: "axis", x1: CHART.left, y1: CHART.top, x2: CHART.left, y2: CHART.height - CHART.bottom }));
    root.appendChild(svg("line", {
      class: "axis", x1: CHART.left, y1: CHART.height - CHART.bottom, x2: CHART.width - CHART.right, y2: CHART.height - CHART.bottom,
    }));
    root.appendChild(svg("text", { class: "tick", x: CHART.left - 4, y: y(best), "text-anchor": "end", "dominant-baseline": "central" }, formatTime(best)));
    if (worst - best > 0.05) {
      root.appendChild(svg("text", { class: "tick", x: CHART.left - 4, y: y(worst), "text-anchor": "end", "dominant-baseline": "central" }, formatTime(worst)));
    }
    root.appendChild(svg("text", { class: "tick", x: x(first), y: CHART.height - 4, "text-anchor": "start" }, `L${first}`));
    root.appendChild(svg("text", { class: "tick", x: x(last), y: CHART.height - 4, "text-anchor": "end" }, `L${last}`));
    if (detail && typeof detail.sessionBest === "number" && detail.sessionBest >= low && detail.sessionBest <= high) {
      root.appendChild(svg("line", {
        class: "session-best", x1: CHART.left, x2: CHART.width - CHART.right, y1: y(detail.sessionBest), y2: y(detail.sessionBest),
      }));
    }
    const points = timed.map((lap) => `${x(lap.lap).toFixed(1)},${y(lap.time).toFixed(1)}`).join(" ");
    root.appendChild(svg("polyline", { class: "laps", points }));
    for (const lap of timed) {
      const classes = ["lap"];
      if (lap.sb) classes.push("sb");
      else if (lap.pb) classes.push("pb");
      if (pitLaps.has(lap.lap)) classes.push("pitlap");
      if (lap.time > cap) classes.push("slow");
      const dot = svg("circle", { class: classes.join(" "), cx: x(lap.lap).toFixed(1), cy: y(lap.time).toFixed(1), r: 3, "data-lap": lap.lap });
      dot.appendChild(svg("title", {}, `Lap ${lap.lap}: ${formatTime(lap.time)}`));
      root.appendChild(dot);
    }
  }
}
