// The timing table, driven by the manifest's column spec: any plugin's data shows.

import { el, setText, clear } from "./dom.js";
import { cellParts, formatCell, safeToken } from "./format.js";

const BLINK_MS = 3000;
const CENTRED = new Set(["Num", "PIC", "Laps", "Pits", "State", "Class", "T"]);

/** How a column's cells line up: centred, right-aligned numbers, or text. */
function alignment(column) {
  if (CENTRED.has(column.title)) {
    return "centred";
  }
  return column.type === "text" || column.type === "class" ? "" : "number";
}

export class TimingTable {
  /**
   * @param {HTMLTableElement} table
   * @param {(car: string) => void} onSelect called with the car number of a clicked row
   */
  constructor(table, onSelect) {
    this.table = table;
    this.head = table.tHead;
    this.body = table.tBodies[0];
    this.onSelect = onSelect;
    this.columns = [];
    this.numIndex = 0;
    this.rows = new Map();
    this.blinking = new Map();
    this.focus = null;
    this.order = [];
    this.body.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-car]");
      if (row) {
        this.onSelect(row.dataset.car);
      }
    });
  }

  /** New columns: rebuild the header and forget the rows. */
  setColumns(colSpec) {
    this.columns = (colSpec || []).map((column) => ({
      title: String(column[0] ?? ""),
      type: String(column[1] ?? "text"),
      description: column[2] === undefined ? "" : String(column[2]),
    }));
    const num = this.columns.findIndex((column) => column.title === "Num");
    this.numIndex = num >= 0 ? num : 0;
    clear(this.head);
    const row = el("tr");
    row.appendChild(el("th", { title: "Position", "data-col": "Pos", class: "centred" }, "Pos"));
    for (const column of this.columns) {
      const attributes = { "data-col": column.title, "data-type": safeToken(column.type), class: alignment(column) };
      if (column.description) {
        attributes.title = column.description;
      }
      row.appendChild(el("th", attributes, column.title));
    }
    this.head.appendChild(row);
    clear(this.body);
    this.rows.clear();
  }

  /** Index of the column titled ``title`` (-1 when there is none). */
  columnIndex(title) {
    return this.columns.findIndex((column) => column.title === title);
  }

  _row(number) {
    let row = this.rows.get(number);
    if (!row) {
      row = el("tr", { "data-car": number, tabindex: 0 });
      row.appendChild(el("td", { "data-col": "Pos", class: "centred" }));
      for (const column of this.columns) {
        row.appendChild(el("td", { "data-col": column.title, class: alignment(column) }));
      }
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          this.onSelect(number);
        }
      });
      this.rows.set(number, row);
    }
    return row;
  }

  /**
   * Show a state: one row per car in classification order.
   * @param {object} state {cars, highlight}
   * @param {Set<string>} team car numbers of the team
   */
  update(state, team) {
    const cars = Array.isArray(state.cars) ? state.cars : [];
    const seen = new Set();
    const now = performance.now();
    for (const number of state.highlight || []) {
      this.blinking.set(String(number), now);
    }
    const order = [];
    cars.forEach((car, index) => {
      if (!Array.isArray(car)) {
        return;
      }
      const number = String(cellParts(car[this.numIndex])[0] ?? index);
      if (seen.has(number)) {
        return;
      }
      seen.add(number);
      order.push(number);
      const row = this._row(number);
      const cells = row.cells;
      setText(cells[0], index + 1);
      let sbNew = false;
      let stateValue = "";
      this.columns.forEach((column, columnIndex) => {
        const [value, flag] = cellParts(car[columnIndex]);
        const td = cells[columnIndex + 1];
        setText(td, formatCell(value, column.type));
        const token = safeToken(flag);
        const className = td.dataset.base ?? (td.dataset.base = td.className);
        let wanted = className;
        if (column.title === "Driver" && token) {
          wanted += ` rank-${token}`;
        } else if (token) {
          wanted += ` flag-${token}`;
        }
        if (column.title === "State") {
          stateValue = String(value ?? "");
        }
        if (column.title === "Last" && token === "sb-new") {
          sbNew = true;
        }
        if (td.className !== wanted.trim()) {
          td.className = wanted.trim();
        }
      });
      row.dataset.state = stateValue;
      row.classList.toggle("team", team.has(number));
      row.classList.toggle("sb-new", sbNew);
      row.classList.toggle("focused", this.focus === number);
      const since = this.blinking.get(number);
      const blink = since !== undefined && now - since < BLINK_MS;
      if (!blink && since !== undefined) {
        this.blinking.delete(number);
      }
      if (blink && state.highlight && state.highlight.map(String).includes(number)) {
        // Restart the animation for a new highlight.
        row.classList.remove("blink");
        void row.offsetWidth;
      }
      row.classList.toggle("blink", blink);
    });
    // Put rows in order, moving only those out of place.
    let previous = null;
    for (const number of order) {
      const row = this.rows.get(number);
      const expected = previous ? previous.nextSibling : this.body.firstChild;
      if (expected !== row) {
        this.body.insertBefore(row, expected);
      }
      previous = row;
    }
    for (const [number, row] of this.rows) {
      if (!seen.has(number)) {
        row.remove();
        this.rows.delete(number);
      }
    }
    this.order = order;
  }

  /** Mark the focused car's row. */
  setFocus(number) {
    this.focus = number;
    for (const [key, row] of this.rows) {
      row.classList.toggle("focused", key === number);
    }
  }

  /** Blinks end by themselves after 3 s (called by the page's clock). */
  expireBlinks() {
    const now = performance.now();
    for (const [number, since] of this.blinking) {
      if (now - since >= BLINK_MS) {
        this.blinking.delete(number);
        const row = this.rows.get(number);
        if (row) {
          row.classList.remove("blink");
        }
      }
    }
  }
}
