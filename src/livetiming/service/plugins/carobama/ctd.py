"""Common Timing Data (CTD) view of a :class:`~.model.TimingModel`.

Pure functions from the feed-independent model to what Timing71 clients read
(``shared/spec/timing71-wire.md`` §3): the column spec, the car rows, the session block, the
track data and the messages. A plugin's ``getColumnSpec()``, ``getRaceState()`` and friends call
these; nothing here keeps state, reads a clock (unless the caller passes ``now``) or does I/O.

Conventions (wire §3.2):

* car numbers are strings, times are seconds (floats), a timed value that carries a colour is a
  ``[seconds, flag]`` pair with flag ``"pb"`` (personal best), ``"sb"`` (session best),
  ``"sb-new"`` (session best set by the update in which the lap completed), ``"old"`` (a sector of
  the previous lap) or ``""``; a missing timed value is ``["", ""]`` so that generators reading
  ``value[1]`` never fail;
* gaps and intervals are computed here, not copied from the upstream: in a race from lap counts
  and line-crossing times ("1 lap" / "N laps" when lapped), otherwise from best laps;
* messages are ``[int unix seconds, category, text, style]`` plus the car number when the message
  is about one car.

Columns, in order: Num, State, Class (only when some car has a class), Driver, Car, Tyre (only when
some car reports a tyre), Laps, Gap, Int, Last, Best, then S1, BS1 … Sn, BSn when the upstream
gives sector splits, Pits, and the top speed (``Stat.BEST_SPEED``, km/h, the car's highest speed of
the session).

BMI karting heats (``model.session.source == "bmi"``) differ where the source does: columns Num
(kart), State, Driver, Laps, Gap (the source's own gap ``G``, as the feed parsed it), Int (computed
here: the difference of the source's gaps recorded as the two karts completed the same lap, else
laps down, else line crossings; by best lap or average lap in heats won by those), Last, Best,
:data:`AVERAGE_LAP` and Pits (only once a pit stop was inferred); the order is the source's; the
track data panel shows heat, status, race mode and end condition. The description adds the
session's ``mode`` in words when the feed sets one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from livetiming.racing import Stat
from livetiming.service.plugins.carobama.feeds.bmi import END_CONDITIONS, HEAT_STATES
from livetiming.service.plugins.carobama.model import (
    Entry,
    EventKind,
    FeedEvent,
    SessionType,
    TimingModel,
)

__all__ = [
    "AVERAGE_LAP",
    "BMI_TRACK_DATA_SPEC",
    "TRACK_DATA_SPEC",
    "cars",
    "column_spec",
    "description",
    "messages",
    "name",
    "session",
    "track_data",
    "track_data_spec",
]

#: Headings of the track data panel, in the order of :func:`track_data`.
TRACK_DATA_SPEC = ["Track", "Layout", "Air temp", "Track temp", "Weather", "Session"]
#: Headings of the track data panel of a BMI karting heat.
BMI_TRACK_DATA_SPEC = ["Heat", "Status", "Race mode", "Heat ends"]
#: The source's average lap time (BMI); not one of the framework's predefined columns.
AVERAGE_LAP = ("Avg", "time", "Average lap time")

_EMPTY_PAIR: tuple[str, str] = ("", "")
_EPSILON = 1e-6


def _sector_stat(n: int) -> Stat | tuple:
    return Stat[f"S{n}"] if n <= 5 else Stat.sector(n)


def _best_sector_stat(n: int) -> Stat | tuple:
    return Stat[f"BS{n}"] if n <= 5 else Stat.best_sector(n)


def column_spec(model: TimingModel) -> list[Stat | tuple]:
    """The columns for this model (Stat members, raw tuples for sectors beyond 5).

    Optional columns (Class, Tyre, sectors) appear only once the model has data for them, so the
    spec can grow during a session; the service republishes its manifest when it changes.
    """
    entries = model.entries
    if model.session.source == "bmi":
        columns = [Stat.NUM, Stat.STATE, Stat.DRIVER, Stat.LAPS, Stat.GAP, Stat.INT, Stat.LAST_LAP,
                   Stat.BEST_LAP, AVERAGE_LAP]
        return columns + [Stat.PITS] if any(entry.pit_count for entry in entries) else columns
    columns: list[Stat | tuple] = [Stat.NUM, Stat.STATE]
    if any(entry.car_class for entry in entries):
        columns.append(Stat.CLASS)
    columns += [Stat.DRIVER, Stat.CAR]
    if any(entry.tyre for entry in entries):
        columns.append(Stat.TYRE)
    columns += [Stat.LAPS, Stat.GAP, Stat.INT, Stat.LAST_LAP, Stat.BEST_LAP]
    for n in range(1, model.sector_count + 1):
        columns += [_sector_stat(n), _best_sector_stat(n)]
    columns += [Stat.PITS, Stat.BEST_SPEED]
    return columns


def track_data_spec(model: TimingModel) -> list[str]:
    """Headings of the track data panel (:data:`TRACK_DATA_SPEC`, BMI: :data:`BMI_TRACK_DATA_SPEC`)."""
    return list(BMI_TRACK_DATA_SPEC if model.session.source == "bmi" else TRACK_DATA_SPEC)


def _temperature(value: float | None) -> str:
    return f"{value:g}°C" if value is not None else ""


def track_data(model: TimingModel) -> list[str]:
    """Values for :func:`track_data_spec`: track, layout, air and track °C, weather, session type."""
    current = model.session
    if current.source == "bmi":
        state, end = current.extra.get("S"), current.extra.get("E")
        return [
            current.name or "",
            HEAT_STATES.get(state, "").capitalize() if type(state) is int else "",
            (current.mode or "").capitalize(),
            END_CONDITIONS.get(end, "").capitalize() if type(end) is int else "",
        ]
    kind = current.type.value.capitalize() if current.type is not SessionType.OTHER else ""
    return [
        current.track or "",
        current.layout or "",
        _temperature(current.air_temp),
        _temperature(current.road_temp),
        current.weather or "",
        kind,
    ]


def name(model: TimingModel) -> str:
    """Service name: the upstream server's name."""
    return model.session.server_name or model.session.source or "carobama"


def description(model: TimingModel) -> str:
    """Service description: session name and track (and layout when the track name lacks it), then
    how the session is won when known (``"33 - Carrera XL (most laps wins)"``)."""
    current = model.session
    track = current.track or ""
    if current.layout and current.layout.lower() not in track.lower():
        track = f"{track} ({current.layout})" if track else current.layout
    text = " - ".join(part for part in (current.name, track) if part)
    return f"{text} ({current.mode})" if text and current.mode else text


def session(model: TimingModel, now: float | None = None) -> dict[str, Any]:
    """The state's ``session`` block at caller time ``now`` (default: the last frame's time).

    ``timeRemain`` is null for lap-limited races, which carry ``lapsRemain`` instead.
    """
    current = model.session
    if now is None:
        now = current.last_frame_at
    elapsed = current.elapsed_at(now)
    remaining = current.remaining_at(now)
    block: dict[str, Any] = {
        "flagState": current.flag.name.lower(),
        "timeElapsed": round(max(0.0, elapsed), 3) if elapsed is not None else 0,
        "timeRemain": round(remaining, 3) if remaining is not None else None,
    }
    if current.laps_total and current.type is SessionType.RACE:
        block["lapsRemain"] = (
            current.laps_remaining if current.laps_remaining is not None else current.laps_total
        )
    block["trackData"] = track_data(model)
    return block


# ------------------------------------------------------------------------------------------------
# Car rows
# ------------------------------------------------------------------------------------------------


def _same(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) < _EPSILON


def _laps_text(laps: int) -> str:
    return "1 lap" if laps == 1 else f"{laps} laps"


def _race_gap(car: Entry, ahead: Entry) -> float | str:
    """Gap from ``car`` back to ``ahead`` in a race: seconds at the line, or laps down."""
    laps = len(car.laps)
    if laps == 0:
        return ""
    down = len(ahead.laps) - laps
    if (
        down > 0
        and car.connected
        and ahead.connected
        and car.spline is not None
        and ahead.spline is not None
        and car.spline > ahead.spline
    ):
        down -= 1  # not lapped: it is about to cross the line the car ahead just crossed
    if down >= 1:
        return _laps_text(down)
    mine = car.crossing_time(laps)
    theirs = ahead.crossing_time(laps)
    if mine is not None and theirs is not None:
        return round(mine - theirs, 3)
    if len(ahead.laps) == laps and car.total_time is not None and ahead.total_time is not None:
        return round(car.total_time - ahead.total_time, 3)
    return ""


def _best_gap(car: Entry, ahead: Entry) -> float | str:
    if car.best_lap is None or ahead.best_lap is None:
        return ""
    return round(car.best_lap - ahead.best_lap, 3)


def _average_gap(car: Entry, ahead: Entry) -> float | str:
    if car.average_lap is None or ahead.average_lap is None:
        return ""
    return round(car.average_lap - ahead.average_lap, 3)


def _reported_interval(car: Entry, ahead: Entry) -> float | str:
    """Interval in a most-laps heat at the car's last line crossing.

    The source's gaps to the leader recorded with the two cars' laps of the same number
    (``Lap.gap``) give it exactly; without them, laps down, else line crossings.
    """
    laps = len(car.laps)
    if not laps:
        return ""
    mine = car.laps[-1].gap
    theirs = ahead.laps[laps - 1].gap if len(ahead.laps) >= laps else None
    if mine is not None and theirs is not None:
        return round(mine - theirs, 3)
    down = len(ahead.laps) - laps
    if down >= 1:
        return _laps_text(down)
    return _race_gap(car, ahead)


def _bmi_gaps(model: TimingModel) -> dict[int, tuple[Any, Any]]:
    """Gap = the source's own gap; Int computed by the heat's race mode (``extra["R"]``)."""
    entries = model.entries
    mode = model.session.extra.get("R")
    result: dict[int, tuple[Any, Any]] = {}
    for index, entry in enumerate(entries):
        gap = entry.reported_gap if entry.reported_gap is not None else ""
        if index == 0:
            result[id(entry)] = (gap, "")
            continue
        ahead = entries[index - 1]
        if mode == 1:
            interval = _best_gap(entry, ahead)
        elif mode == 2:
            interval = _average_gap(entry, ahead)
        else:
            interval = _reported_interval(entry, ahead)
        result[id(entry)] = (gap, interval)
    return result


def _gaps(model: TimingModel) -> dict[int, tuple[Any, Any]]:
    if model.session.source == "bmi":
        return _bmi_gaps(model)
    entries = model.entries
    gap_of = _race_gap if model.session.type is SessionType.RACE else _best_gap
    result: dict[int, tuple[Any, Any]] = {}
    for index, entry in enumerate(entries):
        if index == 0:
            result[id(entry)] = ("", "")
        else:
            result[id(entry)] = (gap_of(entry, entries[0]), gap_of(entry, entries[index - 1]))
    return result


def _last_lap(entry: Entry, model: TimingModel) -> list:
    lap = entry.last_lap
    if lap is None:
        return list(_EMPTY_PAIR)
    if _same(lap, model.best_lap):
        flag = "sb-new" if entry.last_lap_is_new else "sb"
    elif _same(lap, entry.best_lap):
        flag = "pb"
    else:
        flag = ""
    return [lap, flag]


def _best_lap(entry: Entry, model: TimingModel) -> list:
    if entry.best_lap is None:
        return list(_EMPTY_PAIR)
    return [entry.best_lap, "sb" if _same(entry.best_lap, model.best_lap) else ""]


def _sector(entry: Entry, model: TimingModel, index: int) -> list:
    value = entry.sectors[index] if index < len(entry.sectors) else None
    if value is None:
        previous = entry.laps[-1].sectors if entry.laps else []
        old = previous[index] if index < len(previous) else None
        return [old, "old"] if old is not None else list(_EMPTY_PAIR)
    best = model.best_sectors[index] if index < len(model.best_sectors) else None
    own = entry.best_sectors[index] if index < len(entry.best_sectors) else None
    flag = "sb" if _same(value, best) else "pb" if _same(value, own) else ""
    return [value, flag]


def _best_sector(entry: Entry, model: TimingModel, index: int) -> list:
    value = entry.best_sectors[index] if index < len(entry.best_sectors) else None
    if value is None:
        return list(_EMPTY_PAIR)
    best = model.best_sectors[index] if index < len(model.best_sectors) else None
    return [value, "sb" if _same(value, best) else ""]


_Extractor = Callable[[Entry, TimingModel, tuple[Any, Any]], Any]

_EXTRACTORS: dict[tuple, _Extractor] = {
    Stat.NUM.value: lambda e, m, g: e.number,
    Stat.STATE.value: lambda e, m, g: e.state.value,
    Stat.CLASS.value: lambda e, m, g: e.car_class or "",
    Stat.TEAM.value: lambda e, m, g: e.team or "",
    Stat.DRIVER.value: lambda e, m, g: e.driver or "",
    Stat.CAR.value: lambda e, m, g: e.car or "",
    Stat.TYRE.value: lambda e, m, g: e.tyre or "",
    Stat.LAPS.value: lambda e, m, g: len(e.laps),
    Stat.GAP.value: lambda e, m, g: g[0],
    Stat.INT.value: lambda e, m, g: g[1],
    Stat.LAST_LAP.value: lambda e, m, g: _last_lap(e, m),
    Stat.BEST_LAP.value: lambda e, m, g: _best_lap(e, m),
    Stat.PITS.value: lambda e, m, g: e.pit_count,
    AVERAGE_LAP: lambda e, m, g: e.average_lap if e.average_lap is not None else "",
    Stat.BEST_SPEED.value: lambda e, m, g: round(e.top_speed, 1) if e.top_speed is not None else "",
}


def _extractor(column: Stat | Sequence[str]) -> _Extractor:
    key = column.value if isinstance(column, Stat) else tuple(column)
    found = _EXTRACTORS.get(key)
    if found is not None:
        return found
    title = key[0] if key else ""
    for prefix, maker in (("BS", _best_sector), ("S", _sector)):
        digits = title[len(prefix) :]
        if title.startswith(prefix) and digits.isdigit() and int(digits) >= 1:
            index = int(digits) - 1
            return lambda e, m, g, maker=maker, index=index: maker(e, m, index)
    return lambda e, m, g: ""


def cars(model: TimingModel, column_spec: Sequence[Stat | Sequence[str]]) -> list[list]:
    """One row per entry in classification order, each aligned with ``column_spec``.

    Unknown columns give ``""``, so a stale column spec never breaks a row's alignment.
    """
    extractors = [_extractor(column) for column in column_spec]
    gaps = _gaps(model)
    return [[extract(entry, model, gaps[id(entry)]) for extract in extractors] for entry in model.entries]


# ------------------------------------------------------------------------------------------------
# Messages
# ------------------------------------------------------------------------------------------------


def _message(event: FeedEvent) -> list | None:
    kind = event.kind
    data = event.data
    when = int(event.timestamp)
    if kind == EventKind.CHAT:
        if data.get("server"):
            return [when, "Race Control", str(data.get("message") or event.text), "raceControl"]
        category = "Team" if data.get("team") else "Chat"
        message = [when, category, event.text, None]
    elif kind == EventKind.COLLISION:
        message = [when, "Team" if data.get("team") else "Incident", event.text, "yellow"]
    elif kind in (EventKind.JOIN, EventKind.LEAVE):
        message = [when, "Server", event.text, None]
    elif kind == EventKind.SESSION_CHANGE:
        if data.get("message"):  # the feed's own wording, shown for the first session too
            return [when, "Session", str(data["message"]), "raceControl"]
        if data.get("initial"):
            return None
        text = event.text if data.get("looped") else f"New session: {event.text}"
        return [when, "Session", text, "raceControl"]
    elif kind == EventKind.SERVER_RESTART:
        return [when, "Server", event.text or "Server restarted", "raceControl"]
    elif kind == EventKind.SESSION_STATE and event.text:
        return [when, "Race Control", event.text, data.get("style") or "raceControl"]
    elif kind == EventKind.PIT_IN and data.get("inferred") and event.text:
        # No pit state to derive a message from: the feed inferred the stop from a lap time.
        message = [when, "Pits", event.text, "pit"]
    else:
        return None
    if event.car_number is not None:
        message.append(event.car_number)
    return message


def messages(events: Iterable[FeedEvent]) -> list[list]:
    """Timing71 messages for the events that deserve one, newest first (like ``state.messages``).

    Produced for chat (category "Chat", or "Race Control" for server messages), collisions
    ("Incident", style "yellow"), joins and leaves ("Server"), session changes ("Session"; not for
    the first session seen after connecting, unless the feed words the message itself in
    ``data["message"]``), server restarts, session state changes ("Race Control", style from
    ``data["style"]``) and pit stops the feed *inferred* ("Pits"). Chat and collisions of the team's
    cars get the category "Team". Other pit stops and driver changes are left to the framework's
    generators, which derive them from the State and Driver columns.
    """
    produced = [message for message in map(_message, events) if message is not None]
    produced.reverse()
    return produced
