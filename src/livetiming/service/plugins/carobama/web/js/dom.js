// Tiny DOM helpers. Text always goes in through textContent: nothing from the feed is ever parsed
// as HTML.

export const SVG_NS = "http://www.w3.org/2000/svg";

/** An element with attributes (set with setAttribute) and optional text. */
export function el(tag, attributes = {}, text = undefined) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  return node;
}

/** An SVG element with attributes. */
export function svg(tag, attributes = {}, text = undefined) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) {
      node.setAttribute(name, String(value));
    }
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  return node;
}

/** Set textContent only when it changed (cheap repeated updates). */
export function setText(node, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== value) {
    node.textContent = value;
  }
}

/** Remove every child. */
export function clear(node) {
  while (node.firstChild) {
    node.removeChild(node.firstChild);
  }
}

/** Fill a table's head and body from a header list and rows of [text, className] or text cells. */
export function fillTable(table, headers, rows) {
  const head = table.tHead || table.createTHead();
  const body = table.tBodies[0] || table.createTBody();
  clear(head);
  clear(body);
  const headRow = el("tr");
  for (const title of headers) {
    headRow.appendChild(el("th", {}, title));
  }
  head.appendChild(headRow);
  for (const row of rows) {
    const tr = el("tr", row.attributes || {});
    for (const cell of row.cells) {
      const [text, className] = Array.isArray(cell) ? cell : [cell, ""];
      tr.appendChild(el("td", className ? { class: className } : {}, text));
    }
    body.appendChild(tr);
  }
}
