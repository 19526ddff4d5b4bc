// The track map: the upstream's map image (served by the service) or, without one, the outline the
// service learned from the cars' own positions; one marker per car on track.

import { svg, clear } from "./dom.js";

const COLLISION_MS = 3000;

export class TrackMap {
  /**
   * @param {SVGSVGElement} root
   * @param {(car: string) => void} onSelect called with the number of a clicked marker
   */
  constructor(root, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.background = svg("g", { class: "background" });
    this.outlineLayer = svg("g", { class: "outline" });
    this.collisionLayer = svg("g", { class: "collisions" });
    this.carLayer = svg("g", { class: "cars" });
    root.append(this.background, this.outlineLayer, this.collisionLayer, this.carLayer);
    this.params = null;
    this.image = null;
    this.outline = { line: [], cloud: [] };
    this.bounds = null;
    this.markers = new Map();
    this.lastCars = [];
    this.team = new Set();
    this.focus = null;
    this.unit = 1;
    root.addEventListener("click", (event) => {
      const marker = event.target.closest("g.car");
      if (marker) {
        this.onSelect(marker.dataset.car);
      }
    });
  }

  /** World metres → map units (image pixels when there is an image, metres otherwise). */
  project(x, z) {
    if (this.image && this.params) {
      return [(x + this.params.offsetX) / this.params.scale, (z + this.params.offsetZ) / this.params.scale];
    }
    return [x, z];
  }

  /** A new map description from the service. */
  setMap(map, outline) {
    const image = map && map.image && map.params ? map.image : null;
    const changedTrack = !this.map || this.map.key !== (map && map.key);
    this.map = map;
    this.params = map ? map.params : null;
    this.outline = outline || { line: [], cloud: [] };
    if (changedTrack) {
      this.bounds = null;
    }
    if (image !== this.image || changedTrack) {
      this.image = image;
      clear(this.background);
      if (image) {
        this.background.appendChild(svg("image", {
          href: image, x: 0, y: 0, width: this.params.width, height: this.params.height,
        }));
      }
    }
    this.root.dataset.mode = image ? "image" : "outline";
    this._fit();
    this._drawOutline();
    this.setPositions(this.lastCars);
  }

  _grow(x, z) {
    if (!this.bounds) {
      this.bounds = { minX: x, maxX: x, minZ: z, maxZ: z };
      return true;
    }
    const b = this.bounds;
    if (x >= b.minX && x <= b.maxX && z >= b.minZ && z <= b.maxZ) {
      return false;
    }
    b.minX = Math.min(b.minX, x);
    b.maxX = Math.max(b.maxX, x);
    b.minZ = Math.min(b.minZ, z);
    b.maxZ = Math.max(b.maxZ, z);
    return true;
  }

  /** Set the viewBox: the image, or the bounds of outline and cars (only ever grows). */
  _fit() {
    if (this.image && this.params) {
      this._setView(0, 0, this.params.width, this.params.height);
      return;
    }
    for (const point of this.outline.line || []) {
      if (point) {
        this._grow(point[0], point[1]);
      }
    }
    for (const point of this.outline.cloud || []) {
      this._grow(point[0], point[1]);
    }
    for (const car of this.lastCars) {
      this._grow(car[1], car[2]);
    }
    this._applyBounds();
  }

  _applyBounds() {
    if (!this.bounds) {
      this._setView(0, 0, 100, 100);
      return;
    }
    const b = this.bounds;
    const width = Math.max(b.maxX - b.minX, 50);
    const height = Math.max(b.maxZ - b.minZ, 50);
    const margin = Math.max(width, height) * 0.06;
    this._setView(b.minX - margin, b.minZ - margin, width + 2 * margin, height + 2 * margin);
  }

  _setView(x, y, width, height) {
    const view = `${x.toFixed(1)} ${y.toFixed(1)} ${width.toFixed(1)} ${height.toFixed(1)}`;
    if (this.root.getAttribute("viewBox") !== view) {
      this.root.setAttribute("viewBox", view);
    }
    this.unit = Math.max(width, height) / 100;
    this.root.style.setProperty("--unit", String(this.unit));
  }

  _drawOutline() {
    clear(this.outlineLayer);
    if (this.image) {
      return;
    }
    const line = this.outline.line || [];
    const segments = [];
    let current = [];
    for (const point of line) {
      if (point) {
        current.push(this.project(point[0], point[1]));
      } else if (current.length) {
        segments.push(current);
        current = [];
      }
    }
    if (current.length) {
      segments.push(current);
    }
    // The lap wraps around: join the last slice to the first, and close the line once no slice
    // is missing (closing it earlier would draw a chord across the gap).
    if (segments.length && line.length && line[0] && line[line.length - 1]) {
      if (segments.length > 1) {
        const last = segments.pop();
        segments[0] = last.concat(segments[0]);
      } else {
        segments[0].push(segments[0][0]);
      }
    }
    let d = "";
    for (const segment of segments) {
      d += segment.map((p, i) => `${i ? "L" : "M"}${p[0].toFixed(1)} ${p[1].toFixed(1)}`).join("");
    }
    const dots = (this.outline.cloud || [])
      .map((p) => {
        const [x, y] = this.project(p[0], p[1]);
        return `M${x.toFixed(1)} ${y.toFixed(1)}h0`;
      })
      .join("");
    if (d) {
      this.outlineLayer.appendChild(svg("path", { class: "track", d, "stroke-width": this.unit * 1.6 }));
    }
    if (dots) {
      this.outlineLayer.appendChild(svg("path", { class: "cloud", d: dots, "stroke-width": this.unit * 1.2 }));
    }
  }

  /** Team and focus marks. */
  setMarks(team, focus) {
    this.team = team;
    this.focus = focus;
    for (const [number, marker] of this.markers) {
      marker.classList.toggle("team", team.has(number));
      marker.classList.toggle("focused", focus === number);
    }
  }

  /** Positions: [number, x, z, speed, "pit"|""] per car on track. */
  setPositions(cars) {
    this.lastCars = cars || [];
    if (!this.image) {
      let grew = false;
      for (const car of this.lastCars) {
        grew = this._grow(car[1], car[2]) || grew;
      }
      if (grew) {
        this._applyBounds();
        this._drawOutline();
      }
    }
    const seen = new Set();
    const radius = this.unit * 1.9;
    for (const car of this.lastCars) {
      const number = String(car[0]);
      seen.add(number);
      let marker = this.markers.get(number);
      if (!marker) {
        marker = svg("g", { class: "car", "data-car": number });
        marker.appendChild(svg("circle", { r: radius }));
        marker.appendChild(svg("text", { "text-anchor": "middle", "dominant-baseline": "central" }, number));
        this.carLayer.appendChild(marker);
        this.markers.set(number, marker);
      }
      const circle = marker.firstChild;
      if (circle.getAttribute("r") !== String(radius)) {
        circle.setAttribute("r", String(radius));
        marker.lastChild.setAttribute("font-size", String(radius * 1.1));
      }
      const [px, py] = this.project(car[1], car[2]);
      marker.style.transform = `translate(${px.toFixed(2)}px, ${py.toFixed(2)}px)`;
      marker.dataset.x = px.toFixed(1);
      marker.dataset.y = py.toFixed(1);
      marker.classList.toggle("pit", car[4] === "pit");
      marker.classList.toggle("team", this.team.has(number));
      marker.classList.toggle("focused", this.focus === number);
    }
    for (const [number, marker] of this.markers) {
      if (!seen.has(number)) {
        marker.remove();
        this.markers.delete(number);
      }
    }
    // The focused car is drawn on top.
    const focused = this.focus && this.markers.get(this.focus);
    if (focused && focused !== this.carLayer.lastChild) {
      this.carLayer.appendChild(focused);
    }
  }

  /** Flash a collision at its place for a few seconds. */
  collision(mark) {
    const [px, py] = this.project(mark.x, mark.z);
    const flash = svg("circle", {
      class: "collision", cx: px.toFixed(1), cy: py.toFixed(1), r: this.unit * 4,
      "data-car": mark.car ?? "",
    });
    const title = svg("title", {}, mark.text || "Contact");
    flash.appendChild(title);
    this.collisionLayer.appendChild(flash);
    setTimeout(() => flash.remove(), COLLISION_MS);
  }
}
