"""Pure views for the pit-wall page and the modern Timing71 stream.

Nothing here does I/O or reads a clock: callers pass the model, the state and ``now``. The page's
JSON messages are documented in ``pitwall/__init__.py``; the modern stream follows
``shared/spec/timing71-wire.md`` §9.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from livetiming.service.plugins.carobama.model import (
    CarState,
    Entry,
    EventKind,
    FeedEvent,
    TimingModel,
)

__all__ = [
    "MODERN_COLUMNS",
    "PitLog",
    "TrackOutline",
    "car_detail",
    "collision_marks",
    "map_info",
    "modern_manifest",
    "modern_state",
    "positions",
    "team_numbers",
]

#: Legacy column tuples and the tuples the modern Timing71 clients expect instead (wire §3.1, §9).
MODERN_COLUMNS: dict[tuple, list[str]] = {
    ("Last", "time", "Last lap time"): ["Last", "laptime", "Last lap time"],
    ("Best", "time", "Best lap time"): ["Best", "laptime", "Best lap time"],
}

#: Message timestamps below this are Unix seconds (the legacy unit), above it milliseconds.
_MILLISECONDS_FROM = 100_000_000_000


# ------------------------------------------------------------------------------------------------
# The modern Timing71 stream (wire §9)
# ------------------------------------------------------------------------------------------------


def modern_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with the modern column tuples (``Last``/``Best`` of type ``laptime``)."""
    modern = dict(manifest)
    modern["colSpec"] = [
        list(MODERN_COLUMNS.get(tuple(column), column)) for column in manifest.get("colSpec", [])
    ]
    return modern


def _message_ms(message: Sequence[Any]) -> list[Any]:
    converted = list(message)
    if converted and isinstance(converted[0], (int, float)) and not isinstance(converted[0], bool):
        stamp = converted[0]
        converted[0] = int(stamp * 1000) if stamp < _MILLISECONDS_FROM else int(stamp)
    return converted


def modern_state(state: dict[str, Any], now: float) -> dict[str, Any]:
    """The state as the modern client reads it: message timestamps in ms and ``lastUpdated``."""
    return {
        "cars": state.get("cars", []),
        "session": state.get("session", {}),
        "messages": [_message_ms(message) for message in state.get("messages", [])],
        "highlight": state.get("highlight", []),
        "lastUpdated": int(now * 1000),
    }


# ------------------------------------------------------------------------------------------------
# Track map
# ------------------------------------------------------------------------------------------------


def map_info(model: TimingModel, image_url: str | None) -> dict[str, Any]:
    """How the page draws the map: the track, the image (if the service has it) and its transform.

    ``image_url`` is the service's own URL of the cached image, None when it has none; the page then
    draws the outline (see :class:`TrackOutline`).
    """
    session = model.session
    track_map = session.track_map
    params = None
    if track_map is not None:
        params = {
            "width": track_map.width,
            "height": track_map.height,
            "scale": track_map.scale,
            "offsetX": track_map.offset_x,
            "offsetZ": track_map.offset_z,
        }
    return {
        "track": session.track or session.track_id or "",
        "layout": session.layout or session.layout_id or "",
        "key": track_key(model),
        "image": image_url if params is not None else None,
        "params": params,
    }


def track_key(model: TimingModel) -> str:
    """Identity of the track layout (outlines are recorded per key)."""
    session = model.session
    return f"{session.track_id or session.track or ''}/{session.layout_id or session.layout or ''}"


def _in_pits(entry: Entry) -> bool:
    return entry.in_pits or entry.state is CarState.PIT


def positions(model: TimingModel) -> list[list[Any]]:
    """``[number, x, z, speed, "pit"|""]`` for every connected car with a known position."""
    cars = []
    for entry in model.entries:
        if not entry.connected or entry.x is None or entry.z is None:
            continue
        cars.append([
            entry.number,
            round(entry.x, 2),
            round(entry.z, 2),
            round(entry.speed) if entry.speed is not None else None,
            "pit" if _in_pits(entry) else "",
        ])
    return cars


def team_numbers(model: TimingModel) -> list[str]:
    """Numbers of the cars matching ``--team``."""
    return [entry.number for entry in model.entries if entry.is_team]


def collision_marks(events: Iterable[FeedEvent], model: TimingModel) -> list[dict[str, Any]]:
    """A map mark per collision event: where it happened (the car's position when not given)."""
    marks = []
    for event in events:
        if event.kind != EventKind.COLLISION:
            continue
        where = event.data.get("world_pos") or {}
        x, z = where.get("x"), where.get("z")
        if (x is None or z is None) and event.car_number is not None:
            entry = model.entry(event.car_number)
            if entry is not None:
                x, z = entry.x, entry.z
        if x is None or z is None:
            continue
        marks.append({
            "car": event.car_number,
            "other": event.data.get("other_car"),
            "x": round(x, 2),
            "z": round(z, 2),
            "speed": event.data.get("speed"),
            "text": event.text,
        })
    return marks


class TrackOutline:
    """The track's shape learned from the cars' own positions (for when there is no map image).

    With a lap fraction (``spline``) the lap is cut into ``bins`` slices and each slice keeps a
    running mean of the positions seen in it, giving a closed line in lap order. Without it, the
    positions are kept as a cloud of points on a ``cell``-metre grid. Cars in the pits or on an out-lap
    are ignored, and once a slice has ``settled`` samples, positions more than ``outlier`` metres from
    it are too (a car off the track).
    The outline starts over when the track changes.
    """

    def __init__(self, bins: int = 360, cell: float = 4.0, max_cloud: int = 4000, weight_cap: int = 20,
                 settled: int = 5, outlier: float = 40.0):
        self.settled = settled
        self.outlier = outlier
        self.bins = bins
        self.cell = cell
        self.max_cloud = max_cloud
        self.weight_cap = weight_cap
        self.key: str | None = None
        self._sum: list[list[float] | None] = [None] * bins
        self._cloud: dict[tuple[int, int], tuple[float, float]] = {}
        #: Increases whenever the outline gains a slice or cloud point (not on refinements).
        self.version = 0

    def reset(self, key: str | None) -> None:
        """Forget everything (a new track)."""
        self.key = key
        self._sum = [None] * self.bins
        self._cloud = {}
        self.version += 1

    def observe(self, model: TimingModel) -> None:
        """Add the current position of every car on track."""
        key = track_key(model)
        if key != self.key:
            self.reset(key)
        for entry in model.entries:
            if (not entry.connected or entry.x is None or entry.z is None or _in_pits(entry)
                    or entry.state is CarState.OUT):
                continue  # pit lane and pit exit are not the racing line
            self.add(entry.x, entry.z, entry.spline)

    def add(self, x: float, z: float, spline: float | None) -> None:
        """Record one position (``spline`` is the lap fraction 0..1, None when unknown)."""
        if spline is not None and 0.0 <= spline <= 1.0:
            index = min(self.bins - 1, int(spline * self.bins))
            slot = self._sum[index]
            if slot is None:
                self._sum[index] = [x, z, 1.0]
                self.version += 1
            else:
                weight = min(slot[2], self.weight_cap)
                if weight >= self.settled and (slot[0] - x) ** 2 + (slot[1] - z) ** 2 > self.outlier ** 2:
                    return  # far from a settled slice: a car off the track, not the track
                slot[0] = (slot[0] * weight + x) / (weight + 1)
                slot[1] = (slot[1] * weight + z) / (weight + 1)
                slot[2] = weight + 1
            return
        cell = (int(x // self.cell), int(z // self.cell))
        if cell not in self._cloud and len(self._cloud) < self.max_cloud:
            self._cloud[cell] = (x, z)
            self.version += 1

    def view(self) -> dict[str, Any]:
        """``{"line": [[x, z] | None, ...] in lap order, "cloud": [[x, z], ...]}`` rounded to 0.1 m."""
        line = [[round(slot[0], 1), round(slot[1], 1)] if slot is not None else None for slot in self._sum]
        if all(point is None for point in line):
            line = []
        return {"line": line, "cloud": [[round(x, 1), round(z, 1)] for x, z in self._cloud.values()]}


# ------------------------------------------------------------------------------------------------
# Pit stops and the focused car
# ------------------------------------------------------------------------------------------------


class PitLog:
    """Pit stops seen this session, per car number, from the feed's ``pit_in``/``pit_out`` events."""

    def __init__(self) -> None:
        self.generation: int | None = None
        self.stops: dict[str, list[dict[str, Any]]] = {}

    def observe(self, events: Iterable[FeedEvent], model: TimingModel) -> set[str]:
        """Record pit events; returns the numbers of the cars whose stops changed."""
        if model.session.generation != self.generation:
            self.generation = model.session.generation
            self.stops = {}
        changed: set[str] = set()
        for event in events:
            number = event.car_number
            if number is None:
                continue
            if event.kind == EventKind.PIT_IN:
                self.stops.setdefault(number, []).append({
                    "lap": event.data.get("lap"), "in": event.timestamp, "out": None,
                    "duration": None, "tyreIn": event.data.get("tyre"), "tyreOut": None,
                })
                changed.add(number)
            elif event.kind == EventKind.PIT_OUT:
                stops = self.stops.setdefault(number, [])
                if not stops or stops[-1]["out"] is not None:
                    stops.append({"lap": event.data.get("lap"), "in": None, "out": None, "duration": None,
                                  "tyreIn": None, "tyreOut": None})
                stop = stops[-1]
                stop["out"] = event.timestamp
                stop["tyreOut"] = event.data.get("tyre")
                if stop["in"] is not None:
                    stop["duration"] = round(event.timestamp - stop["in"], 1)
                changed.add(number)
        return changed

    def of(self, number: str) -> list[dict[str, Any]]:
        """The stops of car ``number``, oldest first."""
        return list(self.stops.get(number, []))


def _same(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) < 1e-6


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _stints(entry: Entry, stops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stints: a new one after every pit stop and at every change of driver."""
    boundaries = {stop["lap"] + 1 for stop in stops
                  if stop.get("out") is not None and stop.get("lap") is not None}
    stints: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for lap in entry.laps:
        if current is None or lap.number in boundaries or (
            lap.driver and current["driver"] and lap.driver != current["driver"]
        ):
            current = {"start": lap.number, "end": lap.number, "driver": lap.driver, "tyre": lap.tyre,
                       "times": []}
            stints.append(current)
        current["end"] = lap.number
        current["tyre"] = lap.tyre or current["tyre"]
        current["driver"] = current["driver"] or lap.driver
        if lap.time is not None:
            current["times"].append(lap.time)
    result = []
    for index, stint in enumerate(stints):
        times = stint.pop("times")
        # The average leaves out the out-lap and the in-lap when there are enough laps.
        inner = times[1:-1] if len(times) >= 4 else times
        result.append({
            **stint,
            "laps": stint["end"] - stint["start"] + 1,
            "best": min(times) if times else None,
            "average": _mean(inner),
            "inProgress": index == len(stints) - 1 and not _in_pits(entry),
        })
    return result


def car_detail(model: TimingModel, number: str, pit_log: PitLog) -> dict[str, Any] | None:
    """Everything the focus panel shows for car ``number``, or None when there is no such car."""
    entry = model.entry(number)
    if entry is None:
        return None
    stops = pit_log.of(number)
    laps = [
        {
            "lap": lap.number,
            "time": lap.time,
            "sectors": list(lap.sectors),
            "driver": lap.driver,
            "tyre": lap.tyre,
            "position": lap.position,
            "inferred": lap.inferred,
            "pb": _same(lap.time, entry.best_lap),
            "sb": _same(lap.time, model.best_lap),
        }
        for lap in entry.laps
    ]
    return {
        "car": entry.number,
        "driver": entry.driver,
        "drivers": list(entry.drivers),
        "carName": entry.car,
        "team": entry.is_team,
        "state": entry.state.value,
        "position": entry.position,
        "bestLap": entry.best_lap,
        "sessionBest": model.best_lap,
        "bestSectors": list(entry.best_sectors),
        "sessionBestSectors": list(model.best_sectors),
        "sectorCount": model.sector_count,
        "pitCount": entry.pit_count,
        "laps": laps,
        "pits": stops,
        "stints": _stints(entry, stops),
    }


def detail_signature(model: TimingModel, number: str, pit_log: PitLog) -> tuple:
    """Changes whenever :func:`car_detail` would (cheap: no list building)."""
    entry = model.entry(number)
    if entry is None:
        return (None,)
    stops = pit_log.stops.get(number, [])
    last = stops[-1] if stops else None
    return (entry.lap_count, entry.pit_count, entry.driver, entry.state, entry.best_lap, model.best_lap,
            len(stops), last["out"] if last else None, model.session.generation)
