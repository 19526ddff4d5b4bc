"""Emperor Servers / Assetto Corsa Server Manager (ACSM) race-control feed (``/api/race-control``).

:class:`EmperorFeed` is a pure state machine: ``receive(text, timestamp)`` takes one websocket text
frame and the caller's receive time (Unix seconds) and returns the :class:`FeedEvent` list it
caused; ``feed.model`` is the current :class:`TimingModel`. It never reads a clock, never does I/O
and never raises: a frame it cannot use becomes a ``bad_frame`` event (or ``unknown_event`` for an
EventType it does not handle) and leaves the state as it was.

Protocol facts are from ``shared/spec/emperor-race-control.md`` (section numbers below refer to it).

Ground rules
============

* **Every ``200`` snapshot is the truth** (§6.1). Everything it holds (drivers, lap counters, best
  laps, splits, pit counters, temperatures) is copied from it; laps are found by comparing each
  driver's counters with the previous snapshot. The other events only update what they are about
  until the ``200`` that normally follows them.
* **CarID ↔ driver** comes from ``ConnectedDrivers.Drivers[*].CarInfo.CarID`` (rebuilt on every
  ``200``) plus ``51``/``52``; ``CarIDToGUID`` is never read because it is stale by design (§4.1).
* **Times** are converted to seconds (lap and split times are integer nanoseconds, §4.4).

Car identity (one timing entry per car)
=======================================

An entry is a *car*: the entry-list slot (``CarID``) a driver occupies, for the life of the session.
The spec's advice for car-based timing (§6.2, "aggregate by CarID") is followed:

1. A driver (keyed by ``DriverGUID``) who connects into a slot that already has an entry joins
   that entry; if somebody else was the entry's current driver this is a **driver change** (a
   driver swap in a race shows up as ``52`` old driver, ``51`` new driver, same CarID). The laps of
   all drivers stay together on the car's entry.
2. A driver who connects into a slot without an entry, having left a *different* slot whose entry
   nobody else is driving, takes that entry with him (a practice driver who rejoins in another
   car keeps one row). Otherwise a new entry is created for the slot.
3. A disconnected driver stays on the entry he last drove. Drivers only seen in
   ``DisconnectedDrivers`` (e.g. in the first snapshot after connecting) join the entry of their
   ``CarID`` or create it.
4. An entry is removed when none of the drivers (GUIDs) who drove it this session is in either
   driver map of a ``200`` (§6.1 rule 1: the snapshot is the whole truth). A leaver with laps stays
   (ACSM keeps him in ``DisconnectedDrivers``), and so does a car after a driver swap while its new
   driver is there; a leaver without laps vanishes with his entry, as in ACSM. A car that ACSM ages
   out of ``DisconnectedDrivers`` (reported for v2.x, §4.2) therefore leaves the table too. A
   snapshot whose ``ConnectedDrivers`` or ``DisconnectedDrivers`` is not a driver map object is
   not the whole truth: it removes only entries without laps.

A driver's name is the last ``DriverName`` seen; a driver object without one keeps the known name,
and a driver never named is shown as ``Driver <CarID>`` (never his GUID) until his name arrives.

``Entry.key`` is ``"car<CarID>"`` (with a ``-2``, ``-3``… suffix if that key was already used in
the session) and never changes while the session lasts. ``Entry.number`` is the v2.x
``RaceNumber`` when it is set, otherwise the CarID, made unique with a letter suffix.
``Entry.car_class`` is the first 8 characters of the v2.x ``ClassID`` (a UUID; ACSM sends no class
names, and a prefix stays the same label across restarts and reconnects, unlike "Class A/B"), set
only when the field has more than one real class; the all-zero UUID means "no class", and a
``CarInfo`` without ``ClassID`` leaves the class as it was.

Lap counting: per driver, the increase of ``TotalNumLaps`` (laps over all cars he used; the sum of
``Cars[*].NumLaps`` when absent) is added to the entry he is driving, with ``LastLap`` as the time
of the newest lap and ``LastLapCompletedTime`` as its crossing. A jump of several laps (frames
lost while reconnecting, or the first snapshot after connecting mid-session) records the missing
laps as counted, ``inferred``, with the times that can be known: the newest from ``LastLap``, and
when exactly one lap is missing its time from the increase of ``TotalLapTime``. A *decrease* is a
reset of that driver's counters (he was re-created) and adds nothing. A driver first seen joining
a car whose lap count equals his own is assumed to carry the car's counters (a v2.x manager that
merges laps per car, §9.6) and adds nothing. A driver object without any lap counter
(no ``TotalNumLaps`` and no ``Cars[*].NumLaps``) says nothing about laps and is not a reset.
Lap, best-lap and split times must be positive and at most 24 hours (longer values are garbage
such as 999999999 ms, the "no lap" value of AC's result files): a lap whose time fails this is
counted without a time.

Classification (``TimingModel.entries``, recomputed on each ``200``): races by laps (more first),
then the time the last lap was completed (earlier first; the crossing of the same lap number),
then ACSM's own order (equal crossings only happen when both were read from one snapshot), then
total lap time; other sessions by best lap, then laps. Ties keep ACSM's own order.

Pit state
=========

When the manager reports it (v2e and later: ``IsInPits`` in ``53`` and ``200``,
``DriverSwap.IsInDriverSwap``, ``NumPits``), that is used: ``IsInPits`` gives the state, an
increase of ``NumPits`` (summed over the car's drivers) the pit count. Otherwise (v1) the state is
**inferred** from the ``53`` position reports:

* a driver who has connected but not finished loading is in the pits, and so is a driver who just
  joined (cars spawn in their garage). Loaded means a ``58``, a non-zero ``LoadedTime``, a ``53``
  from the car, or a zero ``ConnectedTime`` (v1 zeroes both times of every driver when a session
  changes although nobody reloads);
* in the first snapshot after connecting mid-session, loaded cars are assumed on track;
* a car in the pits leaves them when it moves faster than 15 km/h more than 20 m away from the spot
  where it last stood still in the pits (its garage, remembered per track, layout and CarID);
* a car on track enters the pits when it stands still (< 3 km/h) within 20 m of its garage, or
  when it is found standing still far (> 100 m and more than it could have driven) from its
  previous report a few seconds earlier (AC's "return to pits" teleport);
* nothing is inferred on a race grid before the start, and a race session starts with every car on
  track (on the grid); practice and qualifying sessions start with every car in the pits;
* without ``NumPits`` the pit count is the number of times a car that had been out on track entered
  the pits.

Leaving the pits puts a car on an out-lap (``OUT``) until it next crosses the line. A car whose
driver disconnected is ``RET``, except in a race when he left in the pits (``PIT``: a driver swap
is probably under way). A car is ``FIN`` once it took the flag: ``HasCompletedSession`` (v2.x),
or a line crossing after the flag turned chequered (the leader's crossing that completes a
lap-limited race counts). Before the start of a race cars are ``N/S``.

Session clock and flag (§5.3)
=============================

Each ``ElapsedMilliseconds`` reading gives a candidate start time ``receive_time − elapsed`` on the
caller's clock; readings can only be late (the manager refreshes the value every 30 s and caches
snapshots), so the *earliest* candidate of the session is used. This is the spec's recommended
``SessionStartTime + WaitTime`` plus minimum-skew estimate, written without the terms that cancel.
A reading of exactly 0 while the session has a wait time is skipped (the not-yet-polled value of a
session's first snapshot). Without any reading, ``SessionStartTime + WaitTime`` (v2: seconds; v1:
``WaitTime / 126.166667`` s) is used with the two clocks assumed equal.

The flag is ``none`` before the start (no session, or a race's grid wait), ``green`` while the
session runs, and ``chequered`` once a timed session's clock reaches its length, a lap-limited
race's leader completes the last lap, a car reports ``HasCompletedSession`` in a race, or a ``55``
arrives. It is re-evaluated on every frame with one comparison.

Sessions (§6.1 rules 6-7, §6.2)
===============================

* ``50`` (or a ``200`` whose ``SessionStartTime`` changed without a ``50``) starts a new session:
  ``Session.generation`` increases. Like ACSM, a practice that follows a practice at the same track,
  layout and name is *looped*: entries and laps are kept, the clock restarts. Any other new session
  drops every entry; the next ``200`` rebuilds them.
* ``56`` (acServer restarted) drops all session state and waits for the ``50``.
* A server stop (a ``52`` per driver, then a ``200`` without drivers) needs nothing special.

Events returned
===============

``lap`` (``data``: ``lap``, ``time``, ``driver``, ``entry``, ``inferred``, ``initial`` (counted
from the first snapshot seen of a session), ``personal_best``, ``session_best``, ``position``,
``sectors``), ``chat`` (de-duplicated on ``(Time, CarID, Message)``: stored chats arrive twice,
§1.7; ``data``: ``sender``, ``message``, ``car_id``, ``guid``, ``time`` (the manager's), ``server``,
``team``; a chat is linked to a car by the sender's GUID only, as admin broadcasts use CarID 0),
``collision`` (``data``: ``with`` "car"/"environment", ``speed`` km/h, ``other_car``,
``world_pos``, ``team``), ``join``, ``leave``, ``loaded``, ``driver_change`` (``data``: ``old``,
``new``), ``pit_in`` and ``pit_out`` (``data``: ``tyre``, ``lap``, ``inferred``: true when judged
by the rules above rather than reported by the manager), ``tyre_change`` (compound names that
only flip between short and long forms, "M"/"Medium", §8.2, are not changes),
``session_change`` (``data``: ``name``, ``type``, ``track``, ``layout``, ``looped``, ``initial``,
``generation``), ``server_restart``, ``flag``, ``bad_frame`` and ``unknown_event``.

Performance: a ``53`` costs one ``json.loads``, two dict look-ups and a few float operations;
derived values (order, bests, states) are only recomputed on ``200`` frames and on the events that
change them.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from datetime import datetime
from typing import Any

from livetiming.racing import FlagStatus
from livetiming.service.plugins.carobama.model import (
    CarState,
    Entry,
    EventKind,
    FeedEvent,
    Lap,
    Session,
    SessionType,
    TimingModel,
    TrackMap,
)

__all__ = ["EmperorFeed", "parse_split", "parse_time"]

_INF = math.inf
_NS = 1e9
#: Largest plausible duration in nanoseconds (~11.6 days); anything bigger is treated as garbage.
_MAX_NS = 10**15
#: Longest text kept from a frame (names, chat, track...): a hostile frame must not put megabytes
#: of text into every later state (messages are kept 100 deep and published every cycle).
_MAX_TEXT = 500
#: Longest plausible lap or sector time (24 h). Longer values, e.g. 999999999 ms (the "no lap" value
#: of AC's result files), are not times: such a lap is counted without a time.
_MAX_LAP_NS = 24 * 3600 * 10**9
_SERVER_CAR_ID = 255
_V1_WAIT_DIVISOR = 126.166667
_ZERO_TIME_PREFIX = "0001-01-01"

# Pit inference thresholds (see the module docstring).
_STOPPED_KMH = 3.0
_MOVING_KMH = 15.0
_GARAGE_RADIUS_M = 20.0
_TELEPORT_MIN_M = 100.0
_TELEPORT_MAX_GAP_S = 5.0
_MAX_KMH = 1000.0
#: A 53 for a CarID not (yet) known is applied when the CarID turns up within this many seconds.
_PENDING_MAX_AGE_S = 5.0

_SESSION_TYPES = {1: SessionType.PRACTICE, 2: SessionType.QUALIFYING, 3: SessionType.RACE}
_EVENT_NAMES = {
    54: "CarInfo",
    59: "SessionInfo",
    60: "Error",
    73: "LapCompleted",
    100: "SplitCompleted",
    130: "ClientEvent",
}


# --------------------------------------------------------------------------------------------
# Value helpers: every upstream value is vetted, nothing here raises on odd input.
# --------------------------------------------------------------------------------------------


def _int(value: Any, default: int | None = None) -> int | None:
    """An int from an int or an integral finite float (bools and everything else give default)."""
    kind = type(value)
    if kind is int:
        return value
    if kind is float and math.isfinite(value) and value == int(value):
        return int(value)
    return default


def _num(value: Any) -> float | None:
    """A finite float from an int or float (bools and everything else give None)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        if -1e300 < value < 1e300:
            return float(value)
    return None


def _str(value: Any) -> str:
    """The value if it is a string (cut to ``_MAX_TEXT`` characters), else ""."""
    return value[:_MAX_TEXT] if type(value) is str else ""


def _dict(value: Any) -> dict:
    """The value if it is a dict, else an empty dict."""
    return value if type(value) is dict else {}


def _ns(value: Any) -> int | None:
    """A positive nanosecond duration, or None for 0/absent/garbage."""
    number = _int(value)
    if number is None or number <= 0 or number > _MAX_NS:
        return None
    return number


def _lap_ns(value: Any) -> int | None:
    """A plausible lap or sector time in nanoseconds (positive, at most a day), else None."""
    number = _ns(value)
    return number if number is not None and number <= _MAX_LAP_NS else None


def _placeholder(car_id: int | None) -> str:
    """Display name for a driver whose ``DriverName`` was never seen (never his GUID)."""
    return f"Driver {car_id}" if car_id is not None else "Unknown driver"


def _counter(value: Any) -> int | None:
    """A non-negative count (laps, pits), None when absent or implausible."""
    number = _int(value)
    if number is None or number < 0 or number > 1_000_000:
        return None
    return number


_TIME_CACHE: dict[str, float | None] = {}


def parse_time(text: Any) -> float | None:
    """Unix seconds of an RFC 3339 time as ACSM writes it (nanoseconds, any offset).

    The zero time (``0001-01-01T00:00:00Z``, "never"), empty or unparseable text give None.
    Results are cached because the same strings recur in every snapshot.
    """
    if type(text) is not str or not text:
        return None
    try:
        return _TIME_CACHE[text]
    except KeyError:
        pass
    value: float | None = None
    if not text.startswith(_ZERO_TIME_PREFIX) and len(text) <= 64:
        try:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is not None:
                value = parsed.timestamp()
        except (ValueError, OverflowError, OSError):
            value = None
    if len(_TIME_CACHE) > 4096:
        _TIME_CACHE.clear()
    _TIME_CACHE[text] = value
    return value


_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|μs|ns|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_CLOCK = re.compile(r"(-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")
_LAPS = re.compile(r"(\d+)\s*laps?", re.IGNORECASE)
_BARE = re.compile(r"-?\d+(?:\.\d+)?")


def parse_split(text: Any) -> tuple[float | None, int | None]:
    """Parse ACSM's ``Split``/``Gap`` text into ``(seconds, laps)`` (§5.2).

    Accepted: ``""`` → (None, None); Go durations (``"1.234s"``, ``"1m2.345s"``, ``"283ms"``,
    ``"0s"``, ``"-1.5s"``, ``"1h2m3s"``, ``µs``/``us``/``ns``); clock text ``"[HH:]MM:SS.mmm"``;
    ``"1 lap"`` / ``"3 laps"`` (any case) → (None, laps); a bare number (milliseconds). Anything
    else gives (None, None).
    """
    if type(text) is not str:
        if type(text) in (int, float) and _num(text) is not None:
            return _num(text) / 1000.0, None
        return None, None
    text = text.strip()
    if not text or len(text) > 40:
        return None, None
    match = _LAPS.fullmatch(text)
    if match:
        return None, int(match.group(1))
    match = _CLOCK.fullmatch(text)
    if match:
        sign, hours, minutes, seconds = match.groups()
        value = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
        return (-value if sign else value), None
    if _BARE.fullmatch(text):
        return float(text) / 1000.0, None
    negative = text.startswith("-")
    body = text[1:] if negative else text
    total = 0.0
    position = 0
    for part in _GO_PART.finditer(body):
        if part.start() != position:
            return None, None
        total += float(part.group(1)) * _GO_UNITS[part.group(2)]
        position = part.end()
    if position == 0 or position != len(body):
        return None, None
    return (-total if negative else total), None


def _prettify(identifier: str) -> str:
    """A display name from a content folder name.

    "ks_laguna_seca" → "Laguna Seca", "club_circuit" → "Club Circuit", "layout_gp" → "GP".
    """
    name = identifier
    for prefix in ("ks_", "layout_", "layout-"):
        if name.lower().startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
    words = [word for word in name.replace("_", " ").replace("-", " ").split(" ") if word]
    pretty = []
    for word in words:
        if word.islower():
            word = word.upper() if len(word) <= 2 and word.isalpha() else word[:1].upper() + word[1:]
        pretty.append(word)
    return " ".join(pretty)


_WEATHER_PREFIX = re.compile(r"^(?:sol_)?\d+_", re.IGNORECASE)


def _weather(graphics: str) -> str | None:
    """Display text for ``WeatherGraphics`` ("3_clear" → "Clear"; Sol suffixes removed)."""
    if not graphics:
        return None
    name = graphics.split("_type=", 1)[0]
    name = _WEATHER_PREFIX.sub("", name).replace("_", " ").strip()
    return name[:1].upper() + name[1:] if name else graphics


def _fmt_lap(seconds: float | None) -> str:
    """``M:SS.sss`` for event texts."""
    if seconds is None:
        return "unknown time"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:06.3f}"


def _one_line(text: str, limit: int = 160) -> str:
    """Squash a reason into one short line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _splits(value: Any) -> dict[int, float]:
    """``{"0": Split, …}`` (or a list of Splits) → ``{index: seconds}``."""
    result: dict[int, float] = {}
    if type(value) is dict:
        items = value.items()
    elif type(value) is list:
        items = enumerate(value)
    else:
        return result
    for key, split in items:
        if type(split) is not dict:
            continue
        index = _int(split.get("SplitIndex"))
        if index is None:
            index = key if type(key) is int else _int_key(key)
        if index is None or not 0 <= index < 64:
            continue
        time_ns = _lap_ns(split.get("SplitTime"))
        if time_ns is not None:
            result[index] = time_ns / _NS
    return result


_TYRE_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def _tyre_key(name: str) -> str:
    """Canonical compound for comparisons: "M"/"Medium" → "M", "SS"/"Super Soft"/"SuperSoft" → "SS"."""
    text = name.strip()
    if len(text) <= 3:
        return text.upper()
    return "".join(word[0].upper() for word in _TYRE_WORDS.findall(text)) or text.upper()


def _same(a: float | None, b: float | None) -> bool:
    """Two lap times are the same (both known and equal to well under a nanosecond)."""
    return a is not None and b is not None and abs(a - b) < 1e-6


def _int_key(key: Any) -> int | None:
    """A decimal map key ("3") as an int."""
    if type(key) is str and key.isdigit() and len(key) < 6:
        return int(key)
    return None


# --------------------------------------------------------------------------------------------
# Internal state
# --------------------------------------------------------------------------------------------


class _Driver:
    """What the feed remembers about one driver (GUID) in the current session."""

    __slots__ = (
        "guid",
        "name",
        "named",
        "car",
        "connected",
        "loaded",
        "counted_laps",
        "counted_ns",
        "counted_pits",
        "best_ns",
        "counters_seen",
        "best_splits_raw",
    )

    def __init__(self, guid: str, name: str, named: bool = True) -> None:
        self.guid = guid
        self.name = name
        #: False while ``name`` is only a placeholder (no DriverName seen yet).
        self.named = named
        self.car: _Car | None = None
        self.connected = False
        self.loaded = False
        self.counted_laps = 0
        self.counted_ns = 0
        self.counted_pits = 0
        self.best_ns: int | None = None
        self.counters_seen = False
        self.best_splits_raw: Any = None


class _Car:
    """Feed-side companion of an :class:`Entry`: drivers, slot and pit-inference memory."""

    __slots__ = (
        "entry",
        "car_id",
        "drivers",
        "current",
        "rank",
        "present",
        "pits_reported",
        "pit_count_reported",
        "has_run",
        "out_lap",
        "garage",
        "px",
        "pz",
        "pt",
        "pspeed",
        "lap_vmax",
        "splits",
        "splits_raw",
        "gap_text",
        "class_id",
    )

    def __init__(self, entry: Entry, car_id: int | None) -> None:
        self.entry = entry
        self.car_id = car_id
        self.drivers: list[_Driver] = []
        self.current: _Driver | None = None
        self.rank = 1_000_000
        self.present = False
        self.pits_reported = False
        self.pit_count_reported = False
        self.has_run = False
        self.out_lap = False
        self.garage: tuple[float, float] | None = None
        self.px: float | None = None
        self.pz: float | None = None
        self.pt: float | None = None
        self.pspeed = 0.0
        self.lap_vmax = 0.0
        self.splits: dict[int, float] = {}
        self.splits_raw: Any = None
        self.class_id: str | None = None
        self.gap_text: Any = None


class _Info:
    """A vetted ``SessionInfo`` (§3.1)."""

    __slots__ = (
        "version",
        "index",
        "count",
        "server_name",
        "track",
        "config",
        "name",
        "type",
        "minutes",
        "laps",
        "wait",
        "ambient",
        "road",
        "weather",
        "elapsed_ms",
    )

    def __init__(self, raw: dict) -> None:
        self.version = _int(raw.get("Version"))
        self.index = _int(raw.get("CurrentSessionIndex"), _int(raw.get("SessionIndex")))
        self.count = _int(raw.get("SessionCount"))
        self.server_name = _str(raw.get("ServerName"))
        self.track = _str(raw.get("Track"))
        self.config = _str(raw.get("TrackConfig"))
        self.name = _str(raw.get("Name"))
        self.type = _int(raw.get("Type"), -1)
        self.minutes = _num(raw.get("Time"))
        self.laps = _counter(raw.get("Laps"))
        self.wait = _num(raw.get("WaitTime"))
        self.ambient = _num(raw.get("AmbientTemp"))
        self.road = _num(raw.get("RoadTemp"))
        self.weather = _str(raw.get("WeatherGraphics"))
        elapsed = _num(raw.get("ElapsedMilliseconds"))
        self.elapsed_ms = elapsed if elapsed is not None and abs(elapsed) < 1e11 else None

    def loops_into(self, other: _Info) -> bool:
        """ACSM's looped-practice rule: both practice at the same track, layout and name."""
        return (
            self.type == 1
            and other.type == 1
            and self.track == other.track
            and self.config == other.config
            and self.name == other.name
        )


# --------------------------------------------------------------------------------------------
# The feed
# --------------------------------------------------------------------------------------------


class EmperorFeed:
    """Pure state machine for the ACSM race-control websocket; see the module docstring.

    Args:
        team_tag: a tag such as ``"-YORK"``; entries with a driver whose name carries it
            (case-insensitive, not followed by a letter or digit) get ``Entry.is_team``.
    """

    source = "emperor"

    def __init__(self, team_tag: str | None = None) -> None:
        self.team_tag = team_tag.strip() if team_tag and team_tag.strip() else None
        self._team_pattern: re.Pattern[str] | None = None
        if self.team_tag:
            before = r"(?<![0-9A-Za-z])" if self.team_tag[0].isalnum() else ""
            self._team_pattern = re.compile(before + re.escape(self.team_tag) + r"(?![0-9A-Za-z])", re.I)
        self._model = TimingModel(session=Session(source=self.source))
        self._version: int | None = None
        self._chat_keys: set[tuple] = set()
        self._chat_order: deque[tuple] = deque()
        #: Garage spots learnt by pit inference: (track, layout, CarID) -> (x, z).
        self._garages: dict[tuple[str, str, int], tuple[float, float]] = {}
        #: Latest 53 per CarID not yet mapped to a driver, with its time (kept across session resets).
        self._pending: dict[int, tuple[dict, float]] = {}
        self._generation = 0
        self._reset_session_state()
        self._info: _Info | None = None
        self._start_raw: str | None = None
        self._awaiting_start = False

    # ---------------------------------------------------------------- public interface

    @property
    def model(self) -> TimingModel:
        """The current session and entries in classification order (live object, read-only)."""
        return self._model

    def receive(self, text: str, timestamp: float) -> list[FeedEvent]:
        """Process one frame received at ``timestamp`` (Unix seconds); return what it caused.

        Never raises: unusable input gives a ``bad_frame`` event with a one-line reason and leaves
        the state unchanged.
        """
        ts = _num(timestamp)
        if ts is None:
            last = self._model.session.last_frame_at
            ts = last if last is not None else 0.0
        try:
            events = self._receive(text, ts)
        except Exception as exc:  # a safety net; input is vetted, so this means a bug here
            events = [self._bad(ts, f"internal error: {type(exc).__name__}: {exc}")]
        try:
            if ts >= self._flag_check_at:
                self._flag_tick(ts, events)
        except Exception as exc:  # pragma: no cover - same safety net
            events.append(self._bad(ts, f"internal error: {type(exc).__name__}: {exc}"))
        return events

    # ---------------------------------------------------------------- dispatch

    def _receive(self, text: Any, ts: float) -> list[FeedEvent]:
        if type(text) is not str:
            if isinstance(text, (bytes, bytearray)):
                try:
                    text = bytes(text).decode("utf-8")
                except UnicodeDecodeError:
                    return [self._bad(ts, "frame is not valid UTF-8")]
            else:
                return [self._bad(ts, f"frame is a {type(text).__name__}, not text")]
        self._model.session.last_frame_at = ts
        try:
            frame = json.loads(text)
        except ValueError as exc:
            if not text.strip():
                return [self._bad(ts, "empty frame")]
            return [self._bad(ts, f"not JSON: {exc}")]
        except RecursionError:
            return [self._bad(ts, "not JSON: nested too deeply")]
        if type(frame) is not dict:
            return [self._bad(ts, f"frame is a JSON {type(frame).__name__}, not an object")]
        event_type = frame.get("EventType")
        if type(event_type) is not int:
            return [self._bad(ts, "EventType missing or not an integer")]
        message = frame.get("Message")
        if event_type == 53:
            return self._on_car_update(message, ts)
        handler = self._handlers.get(event_type)
        if handler is None:
            name = _EVENT_NAMES.get(event_type)
            label = f"EventType {event_type}" + (f" ({name})" if name else "")
            return [
                FeedEvent(EventKind.UNKNOWN_EVENT, ts, text=f"ignored {label}", data={"type": event_type})
            ]
        return handler(self, message, ts)

    def _bad(self, ts: float, reason: str) -> FeedEvent:
        return FeedEvent(EventKind.BAD_FRAME, ts, text=_one_line(reason))

    # ---------------------------------------------------------------- state reset

    def _reset_session_state(self) -> None:
        """Forget every car and driver of the session (not the session description itself)."""
        self._drivers: dict[str, _Driver] = {}
        self._cars: dict[str, _Car] = {}
        self._slots: dict[int, _Car] = {}
        self._live: dict[int, _Car] = {}
        self._numbers: set[str] = set()
        self._keys_used: set[str] = set()
        self._chequer_laps: dict[str, int] | None = None
        self._anchor_sample: float | None = None
        self._anchor: float | None = None
        self._flag_check_at = _INF
        self._snapshot_seen = False
        self._top_best_ns: int | None = None
        self._top_best_splits: dict[int, float] = {}
        self._new_laps: list[tuple[_Car, Lap, bool]] = []
        self._snap_claimed: set[int] = set()
        self._created: _Car | None = None
        #: True when this session's start (its 50) was seen, so every car's starting place is known.
        self._from_start = False
        self._model.entries = []
        self._model.best_lap = None
        self._model.best_sectors = []
        self._model.sector_count = 0

    def _new_generation(self) -> int:
        self._generation += 1
        self._model.session.generation = self._generation
        return self._generation

    # ---------------------------------------------------------------- 200: snapshot

    def _on_snapshot(self, message: Any, ts: float) -> list[FeedEvent]:
        if type(message) is not dict:
            return [self._bad(ts, "200 snapshot Message is not an object")]
        events: list[FeedEvent] = []
        raw_info = message.get("SessionInfo")
        info = _Info(raw_info) if type(raw_info) is dict else None
        start_raw = _str(message.get("SessionStartTime"))

        # Which session is this?
        if self._awaiting_start:
            self._awaiting_start = False
            self._start_raw = start_raw
        elif self._start_raw is None:
            if info is not None:
                self._begin_session(info, ts, looped=False, events=events, initial=self._generation == 0)
            self._start_raw = start_raw
        elif start_raw and start_raw != self._start_raw and info is not None:
            looped = self._info is not None and self._info.loops_into(info)
            self._begin_session(info, ts, looped=looped, events=events, initial=False)
            self._start_raw = start_raw

        session = self._model.session
        if info is not None:
            self._apply_info(info)
        session.session_id = start_raw
        session.started_at = parse_time(start_raw)
        self._apply_track(message)
        self._clock_sample(info, ts)

        top_best = _lap_ns(message.get("BestLap"))
        if top_best is not None:
            self._top_best_ns = top_best
        if "BestSplits" in message:
            top_splits = _splits(message.get("BestSplits"))
            if top_splits:
                self._top_best_splits = top_splits

        initial = not self._snapshot_seen
        self._snapshot_seen = True
        self._apply_drivers(message, ts, events, initial)

        chats = message.get("ChatMessages")
        if type(chats) is list:
            for chat in chats:
                if type(chat) is dict:
                    events.extend(self._chat(chat, ts))

        self._refresh_clock(ts)
        self._flag_tick(ts, events)
        return events

    def _apply_info(self, info: _Info) -> None:
        """Copy a vetted SessionInfo onto the model's session."""
        session = self._model.session
        self._info = info
        if info.version is not None:
            self._version = info.version
        if info.server_name:
            session.server_name = info.server_name
        session.name = info.name
        session.type = _SESSION_TYPES.get(info.type, SessionType.OTHER)
        if info.track != session.track_id or info.config != (session.layout_id or ""):
            session.track_id = info.track or None
            session.layout_id = info.config or None
            session.track = _prettify(info.track) if info.track else None
            session.layout = _prettify(info.config) if info.config else None
        session.air_temp = info.ambient
        session.road_temp = info.road
        session.weather = _weather(info.weather)
        session.index = info.index
        session.count = info.count
        minutes = info.minutes if info.minutes is not None and 0 < info.minutes < 100_000 else None
        session.duration = minutes * 60.0 if minutes else None
        session.laps_total = info.laps if info.laps and not minutes else None

    def _apply_track(self, message: dict) -> None:
        """TrackInfo name and TrackMapData (§4.6, §4.7)."""
        session = self._model.session
        track_info = message.get("TrackInfo")
        if type(track_info) is dict:
            name = _str(track_info.get("name")).strip()
            if name:
                session.track = name
        map_data = message.get("TrackMapData")
        if type(map_data) is dict:
            scale = _num(map_data.get("scale_factor"))
            width = _num(map_data.get("width"))
            height = _num(map_data.get("height"))
            if scale and scale > 0 and width and height and session.track_id:
                folder = session.track_id + (f"/{session.layout_id}" if session.layout_id else "")
                session.track_map = TrackMap(
                    width=width,
                    height=height,
                    scale=scale,
                    offset_x=_num(map_data.get("offset_x")) or 0.0,
                    offset_z=_num(map_data.get("offset_y")) or 0.0,
                    image=f"/content/tracks/{folder}/map.png",
                )

    def _apply_drivers(self, message: dict, ts: float, events: list[FeedEvent], initial: bool) -> None:
        # The snapshot is the whole truth (§6.1 rule 1) only when both driver maps are there.
        complete = _is_driver_map(message.get("ConnectedDrivers")) and _is_driver_map(
            message.get("DisconnectedDrivers")
        )
        connected = _driver_map(message.get("ConnectedDrivers"))
        disconnected = _driver_map(message.get("DisconnectedDrivers"))
        for car in self._cars.values():
            car.present = False
            car.rank = 1_000_000 + car.rank % 1_000_000
        self._snap_claimed: set[int] = set()
        seen: set[str] = set()
        live: dict[int, _Car] = {}
        rank = 0
        for is_connected, drivers in ((True, connected), (False, disconnected)):
            for guid, raw in drivers:
                if guid in seen:
                    continue
                seen.add(guid)
                rank += 1
                car = self._apply_driver(guid, raw, is_connected, rank, ts, events, initial)
                if is_connected and car is not None and car.car_id is not None and car.current is not None:
                    if car.current.guid == guid:
                        live[car.car_id] = car

        # Drivers who vanished from the snapshot: they left (the 52 may have been lost).
        for guid, driver in list(self._drivers.items()):
            if guid in seen:
                continue
            if driver.connected:
                driver.connected = False
                if driver.car is not None:
                    events.append(
                        self._event(
                            EventKind.LEAVE,
                            ts,
                            driver.car,
                            f"#{driver.car.entry.number} ({driver.name}) left the server",
                            driver=driver.name,
                            inferred=True,
                        )
                    )
            if driver.car is None or not driver.car.entry.laps:
                del self._drivers[guid]
                if driver.car is not None:
                    if driver in driver.car.drivers:
                        driver.car.drivers.remove(driver)
                    if driver.car.current is driver:
                        driver.car.current = None

        self._live = live
        for car_id in list(self._pending):
            if car_id in live:
                pending, when = self._pending.pop(car_id)
                if 0 <= ts - when <= _PENDING_MAX_AGE_S:
                    self._on_car_update(pending, when)

        for car in list(self._cars.values()):
            entry = car.entry
            entry.connected = (
                car.current is not None and car.current.connected and live.get(car.car_id) is car  # type: ignore[arg-type]
            )
            if not car.present and (complete or not entry.laps) and not entry.connected:
                self._drop(car)  # none of the car's drivers is in the snapshot: ACSM forgot it
        self._finish_update(ts, events)

    def _apply_driver(
        self,
        guid: str,
        raw: dict,
        connected: bool,
        rank: int,
        ts: float,
        events: list[FeedEvent],
        initial: bool,
    ) -> _Car | None:
        """Bind one snapshot driver to its car and take over his counters."""
        info = _dict(raw.get("CarInfo"))
        car_id = _int(info.get("CarID"))
        if car_id is not None and not 0 <= car_id < 65536:
            car_id = None
        driver = self._drivers.get(guid)
        if driver is None:
            driver = _Driver(guid, "", named=False)
            self._drivers[guid] = driver
        self._set_name(driver, _str(info.get("DriverName")), car_id)
        driver.connected = connected
        loaded_raw = raw.get("LoadedTime")
        if connected and not driver.loaded:
            # Sticky until the driver disconnects. v1 zeroes LoadedTime *and* ConnectedTime when a
            # session changes although nobody reloads (no 58 follows): a zero ConnectedTime means
            # "carried over from the previous session", hence loaded. A 53 also proves it.
            if "LoadedTime" in raw:
                connected_raw = raw.get("ConnectedTime")
                driver.loaded = (
                    type(loaded_raw) is str
                    and bool(loaded_raw)
                    and not loaded_raw.startswith(_ZERO_TIME_PREFIX)
                ) or (type(connected_raw) is str and connected_raw.startswith(_ZERO_TIME_PREFIX))
            elif initial:
                driver.loaded = True
        claim = connected and (car_id is None or car_id not in self._snap_claimed)
        self._created = None
        car = self._bind(driver, car_id, connected, ts, events, initial, claim=claim)
        if connected and car_id is not None and car.current is driver:
            self._snap_claimed.add(car_id)
        car.present = True
        car.rank = min(car.rank, rank)
        entry = car.entry
        if self._created is car:
            reported = raw.get("IsInPits")
            if type(reported) is bool:
                entry.in_pits = reported or _dict(raw.get("DriverSwap")).get("IsInDriverSwap") is True
            elif not connected:
                entry.in_pits = False
            elif self._from_start:
                entry.in_pits = self._model.session.type is not SessionType.RACE
            else:  # joined mid-session: on track unless still loading
                entry.in_pits = not driver.loaded

        cars = _dict(raw.get("Cars"))
        model_id = _str(info.get("CarModel"))
        current = _dict(cars.get(model_id)) if model_id else {}
        total_laps = _counter(raw.get("TotalNumLaps"))
        total_ns = 0
        best_ns: int | None = None
        laps_sum = 0
        laps_seen = False
        for car_laps in cars.values():
            if type(car_laps) is not dict:
                continue
            laps = _counter(car_laps.get("NumLaps"))
            if laps is not None:
                laps_seen = True
                laps_sum += laps
            total_ns += _ns(car_laps.get("TotalLapTime")) or 0
            best = _lap_ns(car_laps.get("BestLap"))
            if best is not None and (best_ns is None or best < best_ns):
                best_ns = best
        # A driver object without any lap counter (hostile or truncated) says nothing about laps:
        # it must not read as a reset to zero.
        counters_known = total_laps is not None or laps_seen
        if not laps_seen:
            total_ns = driver.counted_ns  # no per-car times: the total time is not known either
        if total_laps is None:
            total_laps = laps_sum if laps_seen else driver.counted_laps
        pits = _counter(raw.get("NumPits"))

        if (
            counters_known
            and not driver.counters_seen
            and car.entry.laps
            and total_laps == len(car.entry.laps)
            and not initial
        ):
            # A v2.x manager that carries the car's counters over to the new driver.
            driver.counted_laps = total_laps
            driver.counted_ns = total_ns
            driver.counted_pits = pits or 0

        if car.current is driver or car.current is None:
            self._apply_car_info(car, driver, info, ts, events)

        if counters_known:
            driver.counters_seen = True

        # Laps.
        delta = total_laps - driver.counted_laps
        if delta > 0:
            last_ns = _lap_ns(current.get("LastLap"))
            self._add_laps(car, driver, delta, total_ns - driver.counted_ns, last_ns, current, ts, initial)
        elif delta < 0:
            driver.best_ns = None  # the driver was re-created: his counters start again
        if delta != 0:
            driver.counted_laps = total_laps
            driver.counted_ns = total_ns

        if best_ns is not None and (driver.best_ns is None or best_ns < driver.best_ns):
            driver.best_ns = best_ns
            seconds = best_ns / _NS
            if entry.best_lap is None or seconds < entry.best_lap:
                entry.best_lap = seconds

        # Pit counter (v2.x).
        if pits is not None:
            car.pit_count_reported = True
            if pits > driver.counted_pits:
                entry.pit_count += pits - driver.counted_pits
            driver.counted_pits = pits

        if car.current is driver:
            self._apply_live_fields(car, driver, raw, current, ts, events)
        raw_best = current.get("BestSplits")
        if raw_best is not None and raw_best != driver.best_splits_raw:
            driver.best_splits_raw = raw_best
            self._apply_best_splits(entry, raw_best)
        top = _num(current.get("TopSpeedBestLap"))
        this_lap = _num(current.get("TopSpeedThisLap"))
        for speed in (top, this_lap):
            if (
                speed is not None
                and 0 < speed < _MAX_KMH
                and (entry.top_speed is None or speed > entry.top_speed)
            ):
                entry.top_speed = speed
        return car

    def _set_name(self, driver: _Driver, name: str, car_id: int | None) -> None:
        """Take the ``DriverName`` of a frame; without one keep the known name or a placeholder.

        The placeholder is ``Driver <CarID>`` (never the GUID). When the real name arrives it
        replaces the placeholder wherever it was shown (the entry's driver list and its laps).
        """
        named = bool(name.strip())
        if not named:
            if driver.named:
                return
            if car_id is None and driver.car is not None:
                car_id = driver.car.car_id
            name = _placeholder(car_id)
        old, was_placeholder = driver.name, not driver.named
        driver.named = named
        if name == old:
            return
        driver.name = name
        car = driver.car
        if car is None or not was_placeholder:
            return
        entry = car.entry
        if old in entry.drivers:
            index = entry.drivers.index(old)
            if name in entry.drivers:
                del entry.drivers[index]
            else:
                entry.drivers[index] = name
        if entry.driver == old:
            entry.driver = name
        for lap in entry.laps:
            if lap.driver == old:
                lap.driver = name

    def _apply_live_fields(
        self, car: _Car, driver: _Driver, raw: dict, current: dict, ts: float, events: list[FeedEvent]
    ) -> None:
        """Fields that describe the car's present: splits, pit flags, ACSM's own order and gap."""
        entry = car.entry
        raw_splits = current.get("CurrentLapSplits")
        if raw_splits is not None and raw_splits != car.splits_raw:  # cheap C-level compare first
            car.splits_raw = raw_splits
            splits = _splits(raw_splits)
            car.splits = splits
            entry.sectors = self._sector_list(splits)
        position = _int(raw.get("Position"))
        entry.reported_position = position if position and position > 0 else None
        split = raw.get("Split")
        if split != car.gap_text:
            car.gap_text = split
            entry.reported_interval, entry.reported_interval_laps = parse_split(split)
        in_pits = raw.get("IsInPits")
        swap = _dict(raw.get("DriverSwap")).get("IsInDriverSwap")
        if type(in_pits) is bool or swap is True:
            car.pits_reported = True
            self._set_pits(car, in_pits is True or swap is True, ts, events)
        if raw.get("HasCompletedSession") is True:
            self._mark_finished(car, ts, events)

    def _apply_car_info(
        self, car: _Car, driver: _Driver, info: dict, ts: float, events: list[FeedEvent]
    ) -> None:
        """Copy the current driver's CarInfo (car, tyre, team, class) onto the entry."""
        entry = car.entry
        self._set_number(car, _int(info.get("RaceNumber")))
        model_id = _str(info.get("CarModel"))
        if model_id:
            entry.car_model = model_id
            entry.car = _str(info.get("CarName")) or _prettify(model_id)
        team = _str(info.get("TeamName"))
        if team:
            entry.team = team
        if "ClassID" in info:  # a CarInfo without the field says nothing about the class
            class_id = _str(info.get("ClassID")).strip()
            car.class_id = class_id if class_id.strip("0-") else None  # the zero UUID: no class
        tyre = _str(info.get("Tyres"))
        if tyre:
            self._set_tyre(car, tyre, ts, events)

    def _set_tyre(self, car: _Car, tyre: str, ts: float, events: list[FeedEvent]) -> None:
        """A compound change; "M" and "Medium" are the same compound (names flip, §8.2)."""
        entry = car.entry
        if entry.tyre is None or _tyre_key(entry.tyre) != _tyre_key(tyre):
            old = entry.tyre
            entry.tyre = tyre
            if old is not None:
                events.append(
                    self._event(
                        EventKind.TYRE_CHANGE,
                        ts,
                        car,
                        f"tyres {old} → {tyre}",
                        old=old,
                        new=tyre,
                        in_pits=entry.in_pits,
                    )
                )

    def _apply_best_splits(self, entry: Entry, raw_best: Any) -> None:
        """Fold a driver's ``BestSplits`` into the entry's best sectors."""
        best = _splits(raw_best)
        if not best:
            return
        sectors = entry.best_sectors
        for index, seconds in best.items():
            while len(sectors) <= index:
                sectors.append(None)
            if sectors[index] is None or seconds < sectors[index]:
                sectors[index] = seconds
        if len(sectors) > self._model.sector_count:
            self._model.sector_count = len(sectors)

    def _sector_list(self, splits: dict[int, float]) -> list[float | None]:
        if not splits:
            return []
        size = max(splits) + 1
        if size > self._model.sector_count:
            self._model.sector_count = size
        return [splits.get(index) for index in range(size)]

    def _add_laps(
        self,
        car: _Car,
        driver: _Driver,
        count: int,
        delta_ns: int,
        last_ns: int | None,
        current: dict,
        ts: float,
        initial: bool,
    ) -> None:
        """Append ``count`` laps just found in the counters of ``driver`` to ``car``."""
        entry = car.entry
        times: list[float | None] = [None] * count
        stamps: list[float | None] = [None] * count
        if last_ns is not None:
            times[-1] = last_ns / _NS
        crossing = parse_time(current.get("LastLapCompletedTime"))
        stamps[-1] = crossing
        if count == 2 and last_ns is not None and 0 < delta_ns - last_ns <= _MAX_LAP_NS:
            times[0] = (delta_ns - last_ns) / _NS
            if crossing is not None:
                stamps[0] = crossing - times[-1]
        if delta_ns > 0:
            entry.total_time = (entry.total_time or 0.0) + delta_ns / _NS
        elif entry.total_time is None and all(t is not None for t in times):
            entry.total_time = sum(times)  # type: ignore[arg-type]

        sectors = self._completed_sectors(car, current, times[-1])
        top_speed = car.lap_vmax or None
        at = self._chronological_slot(car, crossing)
        for index in range(count):
            newest = index == count - 1
            lap = Lap(
                number=at + index + 1,
                time=times[index],
                driver=driver.name,
                sectors=sectors if newest else [],
                tyre=entry.tyre,
                timestamp=stamps[index],
                top_speed=top_speed if newest and not initial else None,
                inferred=not newest,
            )
            entry.laps.insert(at + index, lap)
            self._new_laps.append((car, lap, initial))
        # Laps found before in this update but completed later move up by ``count``.
        for number, lap in enumerate(entry.laps[at + count:], start=at + count + 1):
            lap.number = number
        entry.last_lap = entry.laps[-1].time
        entry.last_lap_is_new = not initial
        car.out_lap = False
        car.has_run = True
        car.lap_vmax = 0.0
        if self._chequer_laps is not None and len(entry.laps) > self._chequer_laps.get(entry.key, _INF):
            entry.finished = True

    def _chronological_slot(self, car: _Car, crossing: float | None) -> int:
        """Where laps completed at ``crossing`` go in the car's list: at the end, except when laps
        found earlier in this same update (not handed on yet) were completed later. That happens
        when a snapshot shows a car's drivers after a swap (the new driver first, the one who
        left in ``DisconnectedDrivers``): his laps go before his successor's."""
        laps = car.entry.laps
        slot = len(laps)
        if crossing is None or not laps or (laps[-1].timestamp is not None
                                            and laps[-1].timestamp <= crossing):
            return slot  # the usual case: after every lap the car has
        pending = {id(lap) for pending_car, lap, _initial in self._new_laps if pending_car is car}
        while slot > 0 and id(laps[slot - 1]) in pending and (
                laps[slot - 1].timestamp is None or laps[slot - 1].timestamp > crossing):
            slot -= 1
        return slot

    def _completed_sectors(self, car: _Car, current: dict, lap_time: float | None) -> list[float | None]:
        """Sector times of the lap that just ended.

        The number of sectors is the most seen anywhere (splits of the current lap, the driver's
        best splits, earlier laps). Tried in turn: the new snapshot's ``CurrentLapSplits`` if they
        still hold the whole lap; the previous snapshot's splits completed with the lap time minus
        the known sectors (ACSM sends a snapshot per split, so the final split of a lap is never
        seen before the lap ends; on the first lap this also reveals the last sector); the
        driver's ``BestLapSplits`` when they add up to this lap. A candidate must have every sector
        and add up to the lap time (±50 ms). Otherwise the sectors seen are returned as they are.
        """
        new = _splits(current.get("CurrentLapSplits")) if "CurrentLapSplits" in current else {}
        best_lap = _splits(current.get("BestLapSplits"))
        count = self._model.sector_count
        for seen in (new, best_lap, _splits(current.get("BestSplits"))):
            if seen:
                count = max(count, max(seen) + 1)

        def complete(candidate: dict[int, float]) -> bool:
            return len(candidate) == count and (
                lap_time is None or abs(sum(candidate.values()) - lap_time) < 0.05
            )

        previous = dict(car.splits)
        if lap_time is not None and previous and max(previous) + 1 == len(previous):
            rest = lap_time - sum(previous.values())
            if len(previous) == count - 1 and rest > 0:
                previous[count - 1] = rest
            elif len(previous) >= count and rest > 0.5:
                previous[len(previous)] = rest  # the lap had one sector more than seen so far
                count = len(previous)
        if count > self._model.sector_count:
            self._model.sector_count = count
        if count == 0:
            return []
        for candidate in (new, previous, best_lap if lap_time is not None else {}):
            if candidate and complete(candidate):
                return [candidate.get(index) for index in range(count)]
        if car.splits:
            return [car.splits.get(index) for index in range(count)]
        return []

    # ---------------------------------------------------------------- binding drivers to cars

    def _bind(
        self,
        driver: _Driver,
        car_id: int | None,
        connected: bool,
        ts: float,
        events: list[FeedEvent],
        initial: bool,
        claim: bool = True,
    ) -> _Car:
        """Find (or create) the car ``driver`` is in, applying the car identity rule."""
        current_car = driver.car
        target: _Car | None
        if connected and car_id is not None:
            slot_car = self._slots.get(car_id)
            if current_car is None:
                target = slot_car
            elif current_car is slot_car:
                target = slot_car
            elif slot_car is None:
                others = any(d is not driver and d.connected for d in current_car.drivers)
                if not others and current_car.current in (driver, None):
                    # He left one car and came back in a free slot: the entry follows him.
                    if current_car.car_id is not None and self._slots.get(current_car.car_id) is current_car:
                        del self._slots[current_car.car_id]
                    if current_car.car_id is not None and self._live.get(current_car.car_id) is current_car:
                        del self._live[current_car.car_id]
                    current_car.car_id = car_id
                    self._slots[car_id] = current_car
                    target = current_car
                else:
                    target = None
            else:
                target = slot_car
        elif current_car is not None:
            target = current_car
        else:
            target = self._slots.get(car_id) if car_id is not None else None
        if target is None:
            target = self._new_car(car_id, driver)
        if driver.car is not target:
            driver.car = target
            if driver not in target.drivers:
                target.drivers.append(driver)
        entry = target.entry
        if driver.name not in entry.drivers:
            if connected or not entry.drivers:
                entry.drivers.append(driver.name)
            else:
                entry.drivers.insert(max(0, len(entry.drivers) - 1), driver.name)
        previous = target.current
        if previous is None:
            target.current = driver
            entry.driver = driver.name
        elif previous is not driver and connected and claim:
            target.current = driver
            entry.driver = driver.name
            if not initial:
                events.append(
                    self._event(
                        EventKind.DRIVER_CHANGE,
                        ts,
                        target,
                        f"driver change: {previous.name} → {driver.name}",
                        old=previous.name,
                        new=driver.name,
                    )
                )
        elif previous is driver:
            entry.driver = driver.name
        if self._team_pattern is not None and not entry.is_team and self._team_pattern.search(driver.name):
            entry.is_team = True
        return target

    def _new_car(self, car_id: int | None, driver: _Driver) -> _Car:
        base_key = f"car{car_id}" if car_id is not None else f"guid{driver.guid}"
        key = base_key
        suffix = 2
        while key in self._keys_used:
            key = f"{base_key}-{suffix}"
            suffix += 1
        self._keys_used.add(key)
        entry = Entry(key=key, number=self._unique_number(str(car_id) if car_id is not None else "?"))
        car = _Car(entry, car_id)
        self._created = car
        self._cars[key] = car
        if car_id is not None and car_id not in self._slots:
            self._slots[car_id] = car
        entry.in_pits = self._model.session.type is not SessionType.RACE
        if car_id is not None and self._model.session.track_id:
            garage = self._garages.get(
                (self._model.session.track_id, self._model.session.layout_id or "", car_id)
            )
            car.garage = garage
        self._model.entries.append(entry)
        return car

    def _unique_number(self, base: str) -> str:
        """``base``, or ``base`` + "b", "c", … (then "-27", "-28", …) when already in use."""
        number = base
        suffix = 1
        while number in self._numbers:
            suffix += 1
            number = f"{base}{chr(ord('a') + suffix - 1)}" if suffix <= 26 else f"{base}-{suffix}"
        self._numbers.add(number)
        return number

    def _set_number(self, car: _Car, race_number: int | None) -> None:
        """Use the v2.x RaceNumber as the car number while the entry has no history yet."""
        entry = car.entry
        if race_number is None or race_number <= 0 or entry.laps:
            return
        wanted = str(race_number)
        if entry.number == wanted:
            return
        self._numbers.discard(entry.number)
        entry.number = self._unique_number(wanted)

    def _drop(self, car: _Car) -> None:
        entry = car.entry
        self._cars.pop(entry.key, None)
        self._numbers.discard(entry.number)
        if car.car_id is not None:
            if self._slots.get(car.car_id) is car:
                del self._slots[car.car_id]
            if self._live.get(car.car_id) is car:
                del self._live[car.car_id]
        for driver in car.drivers:
            if driver.car is car:
                driver.car = None
                self._drivers.pop(driver.guid, None)
        try:
            self._model.entries.remove(entry)
        except ValueError:
            pass

    # ---------------------------------------------------------------- derived values

    def _finish_update(self, ts: float, events: list[FeedEvent]) -> None:
        """Classification, bests, states and lap events after a snapshot."""
        model = self._model
        session = model.session
        race = session.type is SessionType.RACE
        if race:

            def race_key(car: _Car) -> tuple:
                entry = car.entry
                crossing = entry.crossing_time(len(entry.laps)) if entry.laps else None
                return (
                    -len(entry.laps),
                    crossing if crossing is not None else _INF,
                    car.rank,  # same crossing: ACSM's order (v2e sorts equal laps by track position)
                    entry.total_time if entry.total_time is not None else _INF,
                )

            ordered = sorted(self._cars.values(), key=race_key)
        else:

            def best_key(car: _Car) -> tuple:
                entry = car.entry
                best = entry.best_lap
                return (best is None, best if best is not None else 0.0, -len(entry.laps), car.rank)

            ordered = sorted(self._cars.values(), key=best_key)
        entries = [car.entry for car in ordered]
        for index, entry in enumerate(entries):
            entry.position = index + 1

        # Classes: ACSM only sends class ids (UUIDs), no names. Shown (as the id's first 8
        # characters, stable across restarts) only when the field really has several classes.
        class_ids = {car.class_id for car in ordered if car.class_id}
        for car in ordered:
            car.entry.car_class = car.class_id[:8] if len(class_ids) > 1 and car.class_id else None
        model.entries = entries

        # Session bests.
        best = self._top_best_ns / _NS if self._top_best_ns is not None else None
        for entry in entries:
            if entry.best_lap is not None and (best is None or entry.best_lap < best):
                best = entry.best_lap
        model.best_lap = best
        size = model.sector_count
        best_sectors: list[float | None] = [None] * size
        for index, seconds in self._top_best_splits.items():
            if index < size:
                best_sectors[index] = seconds
        for entry in entries:
            for index, seconds in enumerate(entry.best_sectors[:size]):
                if seconds is not None and (best_sectors[index] is None or seconds < best_sectors[index]):
                    best_sectors[index] = seconds
        model.best_sectors = best_sectors

        # Lap-limited race: the leader completing the last lap ends it.
        if race and session.laps_total:
            leader_laps = len(entries[0].laps) if entries else 0
            session.laps_remaining = max(0, session.laps_total - leader_laps)
            if (
                leader_laps >= session.laps_total
                and session.flag is not FlagStatus.CHEQUERED
                and self._anchor is not None
            ):
                self._set_flag(FlagStatus.CHEQUERED, ts, events)
                for car in ordered:
                    if len(car.entry.laps) >= session.laps_total:
                        self._mark_finished(car, ts, events)
        else:
            session.laps_remaining = None

        # Lap events, now that positions are known.
        new_laps, self._new_laps = self._new_laps, []
        fresh = {id(car) for car, _lap, initial in new_laps if not initial}
        for car in ordered:
            if id(car) not in fresh:
                car.entry.last_lap_is_new = False
        for car, lap, initial in new_laps:
            entry = car.entry
            lap.position = entry.position
            personal = _same(lap.time, entry.best_lap)  # a cut lap can be faster than the best
            overall = personal and _same(lap.time, best)
            events.append(
                self._event(
                    EventKind.LAP,
                    ts,
                    car,
                    f"{self._label(car)} lap {lap.number}: {_fmt_lap(lap.time)}",
                    lap=lap.number,
                    time=lap.time,
                    driver=lap.driver,
                    entry=entry.key,
                    inferred=lap.inferred,
                    initial=initial,
                    personal_best=personal,
                    session_best=overall,
                    position=lap.position,
                    sectors=list(lap.sectors),
                )
            )
        for car in ordered:
            car.entry.state = self._state(car)

    def _state(self, car: _Car) -> CarState:
        """Car state from what the feed knows (rules in the module docstring)."""
        entry = car.entry
        if entry.finished:
            return CarState.FIN
        session = self._model.session
        if not entry.connected:
            in_race = session.type is SessionType.RACE
            return CarState.PIT if entry.in_pits and in_race else CarState.RET
        if session.type is SessionType.RACE and session.flag is FlagStatus.NONE:
            return CarState.NOT_STARTED
        current = car.current
        if current is None or not current.loaded or entry.in_pits:
            return CarState.PIT
        if car.out_lap:
            return CarState.OUT
        return CarState.RUN

    def _set_pits(self, car: _Car, in_pits: bool, ts: float, events: list[FeedEvent]) -> None:
        entry = car.entry
        if entry.in_pits == in_pits:
            return
        entry.in_pits = in_pits
        if in_pits:
            if car.has_run and not car.pit_count_reported:
                entry.pit_count += 1
            events.append(
                self._event(
                    EventKind.PIT_IN,
                    ts,
                    car,
                    f"{self._label(car)} in the pits",
                    tyre=entry.tyre,
                    lap=len(entry.laps),
                    inferred=not car.pits_reported,
                )
            )
        else:
            car.out_lap = True
            car.has_run = True
            events.append(
                self._event(
                    EventKind.PIT_OUT,
                    ts,
                    car,
                    f"{self._label(car)} left the pits",
                    tyre=entry.tyre,
                    lap=len(entry.laps),
                    inferred=not car.pits_reported,
                )
            )
        entry.state = self._state(car)

    def _mark_finished(self, car: _Car, ts: float, events: list[FeedEvent]) -> None:
        entry = car.entry
        if entry.finished:
            return
        entry.finished = True
        entry.state = CarState.FIN
        session = self._model.session
        if (
            session.type is SessionType.RACE
            and session.flag is not FlagStatus.CHEQUERED
            and self._anchor is not None
        ):
            self._set_flag(FlagStatus.CHEQUERED, ts, events)

    # ---------------------------------------------------------------- clock and flag

    def _wait_seconds(self) -> float:
        info = self._info
        if info is None or not info.wait or info.wait <= 0:
            return 0.0
        if self._version is not None and self._version >= 200:
            return info.wait
        return info.wait / _V1_WAIT_DIVISOR

    def _clock_sample(self, info: _Info | None, ts: float) -> None:
        """Take one ElapsedMilliseconds reading into the start-time estimate (§5.3)."""
        if info is None or info.elapsed_ms is None:
            return
        if info.elapsed_ms == 0 and info.wait and info.wait > 0:
            return
        sample = ts - info.elapsed_ms / 1000.0
        if self._anchor_sample is None or sample < self._anchor_sample:
            self._anchor_sample = sample

    def _refresh_clock(self, ts: float) -> None:
        session = self._model.session
        anchor = self._anchor_sample
        if anchor is None and session.started_at is not None:
            anchor = session.started_at + self._wait_seconds()
        if not session.track_id:
            anchor = None
        self._anchor = anchor
        session.clock_at = ts
        if anchor is None:
            session.time_elapsed = None
            session.time_remaining = session.duration
            session.clock_running = False
            self._flag_check_at = _INF
            return
        elapsed = ts - anchor
        session.time_elapsed = elapsed
        session.clock_running = True
        if session.duration is not None:
            session.time_remaining = max(0.0, session.duration - max(0.0, elapsed))
        else:
            session.time_remaining = None
        self._flag_check_at = ts  # re-evaluate now

    def _flag_tick(self, ts: float, events: list[FeedEvent]) -> None:
        """Move the flag on with the session clock; schedule the next check."""
        session = self._model.session
        anchor = self._anchor
        self._flag_check_at = _INF
        if anchor is None:
            return
        elapsed = ts - anchor
        flag = session.flag
        if flag is FlagStatus.CHEQUERED:
            return
        if elapsed < 0:
            if flag is FlagStatus.NONE:
                self._flag_check_at = anchor
            return
        if session.duration is not None and elapsed >= session.duration:
            self._set_flag(FlagStatus.CHEQUERED, ts, events)
            return
        if flag is not FlagStatus.GREEN:
            self._set_flag(FlagStatus.GREEN, ts, events)
        if session.duration is not None:
            self._flag_check_at = anchor + session.duration

    def _set_flag(self, flag: FlagStatus, ts: float, events: list[FeedEvent]) -> None:
        session = self._model.session
        if session.flag is flag:
            return
        session.flag = flag
        if flag is FlagStatus.CHEQUERED:
            self._chequer_laps = {car.entry.key: len(car.entry.laps) for car in self._cars.values()}
        else:
            self._chequer_laps = None
        events.append(
            FeedEvent(EventKind.FLAG, ts, text=f"flag {flag.name.lower()}", data={"flag": flag.name.lower()})
        )
        for car in self._cars.values():
            car.entry.state = self._state(car)

    # ---------------------------------------------------------------- 50, 56, 59, 55

    def _on_new_session(self, message: Any, ts: float) -> list[FeedEvent]:
        if type(message) is not dict:
            return [self._bad(ts, "50 NewSession Message is not an object")]
        info = _Info(message)
        events: list[FeedEvent] = []
        looped = self._info is not None and self._start_raw is not None and self._info.loops_into(info)
        self._begin_session(info, ts, looped=looped, events=events, initial=self._generation == 0)
        self._awaiting_start = True
        self._from_start = True
        self._model.session.started_at = None
        self._clock_sample(info, ts)
        self._refresh_clock(ts)
        self._flag_tick(ts, events)
        return events

    def _begin_session(
        self, info: _Info, ts: float, looped: bool, events: list[FeedEvent], initial: bool
    ) -> None:
        """Start a new session (looped: keep entries and laps)."""
        session = self._model.session
        generation = self._new_generation()
        if looped:
            self._anchor_sample = None
            self._anchor = None
            self._chequer_laps = None
            self._flag_check_at = _INF
            in_pits = info.type != 3  # AC sends cars to their garage (practice) or the grid (race)
            for car in self._cars.values():
                car.entry.finished = False
                if car.entry.connected:
                    car.entry.in_pits = in_pits
                car.out_lap = False
                car.px = car.pz = car.pt = None
        else:
            self._reset_session_state()
        session.flag = FlagStatus.NONE
        session.time_elapsed = None
        session.time_remaining = None
        session.laps_remaining = None
        self._apply_info(info)
        track = session.track or info.track
        if not initial:
            for car in self._cars.values():
                car.entry.state = self._state(car)
        text = f"{info.name or 'Session'} at {track}" if track else (info.name or "Session")
        if looped:
            text = f"{info.name or 'Session'} restarted (looped, laps kept)"
        events.append(
            FeedEvent(
                EventKind.SESSION_CHANGE,
                ts,
                text=text,
                data={
                    "name": info.name,
                    "type": session.type.value,
                    "track": session.track,
                    "layout": session.layout,
                    "looped": looped,
                    "initial": initial,
                    "generation": generation,
                },
            )
        )

    def _on_version(self, message: Any, ts: float) -> list[FeedEvent]:
        version = _int(message)
        if version is None:
            return [self._bad(ts, "56 Version Message is not an integer")]
        self._version = version
        self._pending.clear()
        self._reset_session_state()
        self._info = None
        self._start_raw = None
        self._awaiting_start = False
        session = self._model.session
        session.flag = FlagStatus.NONE
        session.time_elapsed = None
        session.time_remaining = None
        session.clock_running = False
        session.laps_remaining = None
        session.name = ""
        session.type = SessionType.OTHER
        self._new_generation()
        return [FeedEvent(EventKind.SERVER_RESTART, ts, text="Server restarted", data={"version": version})]

    def _on_session_info(self, message: Any, ts: float) -> list[FeedEvent]:
        """59 (not emitted by known managers): a poll of temperatures, weather and elapsed time."""
        if type(message) is not dict:
            return [self._bad(ts, "59 SessionInfo Message is not an object")]
        info = _Info(message)
        session = self._model.session
        if info.ambient is not None:
            session.air_temp = info.ambient
        if info.road is not None:
            session.road_temp = info.road
        if info.weather:
            session.weather = _weather(info.weather)
        self._clock_sample(info, ts)
        events: list[FeedEvent] = []
        if self._start_raw is not None:
            self._refresh_clock(ts)
        return events

    def _on_end_session(self, message: Any, ts: float) -> list[FeedEvent]:
        """55 (not emitted by known managers): the session ended."""
        events: list[FeedEvent] = []
        if self._anchor is not None:
            self._set_flag(FlagStatus.CHEQUERED, ts, events)
        return events

    # ---------------------------------------------------------------- 51, 52, 58, 101

    def _on_connect(self, message: Any, ts: float) -> list[FeedEvent]:
        if type(message) is not dict:
            return [self._bad(ts, "51 NewConnection Message is not an object")]
        guid = _str(message.get("DriverGUID"))
        car_id = _int(message.get("CarID"))
        if not guid or car_id is None or not 0 <= car_id < 65536:
            return [self._bad(ts, "51 NewConnection without DriverGUID or CarID")]
        events: list[FeedEvent] = []
        driver = self._drivers.get(guid)
        if driver is None:
            driver = _Driver(guid, "", named=False)
            self._drivers[guid] = driver
        self._set_name(driver, _str(message.get("DriverName")), car_id)
        name = driver.name
        driver.connected = True
        driver.loaded = False
        car = self._bind(driver, car_id, True, ts, events, initial=False)
        car.current = driver
        car.entry.driver = name
        self._apply_car_info(car, driver, message, ts, events)
        entry = car.entry
        entry.connected = True
        self._live[car_id] = car
        if (
            self._model.session.type is not SessionType.RACE
            or self._model.session.flag is not FlagStatus.NONE
        ):
            entry.in_pits = True  # joining drivers spawn in their garage
        car.out_lap = False
        events.insert(
            0,
            self._event(
                EventKind.JOIN, ts, car, f"{self._label(car)} joined the server", driver=name, guid=guid
            ),
        )
        self._pending.pop(car_id, None)  # reports from before this connection are not this driver's
        entry.state = self._state(car)
        return events

    def _on_disconnect(self, message: Any, ts: float) -> list[FeedEvent]:
        if type(message) is not dict:
            return [self._bad(ts, "52 ConnectionClosed Message is not an object")]
        guid = _str(message.get("DriverGUID"))
        car_id = _int(message.get("CarID"))
        name = _str(message.get("DriverName")) or _placeholder(car_id)
        if not guid and car_id is None:
            return [self._bad(ts, "52 ConnectionClosed without DriverGUID or CarID")]
        driver = self._drivers.get(guid) if guid else None
        if driver is None and car_id is not None:
            car = self._live.get(car_id)
            if car is not None and car.current is not None and not guid:
                driver = car.current
        if driver is None or driver.car is None:
            return [
                FeedEvent(
                    EventKind.LEAVE, ts, text=f"{name} left the server", data={"driver": name, "guid": guid}
                )
            ]
        driver.connected = False
        driver.loaded = False
        car = driver.car
        entry = car.entry
        if car.car_id is not None and self._live.get(car.car_id) is car and car.current is driver:
            del self._live[car.car_id]
        if car.current is driver:
            entry.connected = False
            entry.speed = None
        entry.state = self._state(car)
        return [
            self._event(
                EventKind.LEAVE,
                ts,
                car,
                f"#{entry.number} ({driver.name}) left the server",
                driver=driver.name,
                guid=guid,
            )
        ]

    def _on_loaded(self, message: Any, ts: float) -> list[FeedEvent]:
        car_id = _int(message)
        if car_id is None:
            return [self._bad(ts, "58 ClientLoaded Message is not an integer CarID")]
        car = self._live.get(car_id)
        if car is None or car.current is None:
            return []
        car.current.loaded = True
        car.entry.state = self._state(car)
        return [self._event(EventKind.LOADED, ts, car, f"{car.current.name} loaded", driver=car.current.name)]

    def _on_tyres(self, message: Any, ts: float) -> list[FeedEvent]:
        if type(message) is not dict:
            return [self._bad(ts, "101 TyresChanged Message is not an object")]
        tyre = _str(message.get("Tyres"))
        guid = _str(message.get("DriverGUID"))
        driver = self._drivers.get(guid) if guid else None
        car = driver.car if driver is not None else self._live.get(_int(message.get("CarID"), -1))  # type: ignore[arg-type]
        if car is None or not tyre:
            return []
        events: list[FeedEvent] = []
        self._set_tyre(car, tyre, ts, events)
        return events

    # ---------------------------------------------------------------- 53: car update (hot path)

    def _on_car_update(self, message: Any, ts: float) -> list[FeedEvent]:
        if type(message) is not dict:
            return [self._bad(ts, "53 CarUpdate Message is not an object")]
        car_id = message.get("CarID")
        if type(car_id) is not int:
            return [self._bad(ts, "53 CarUpdate without an integer CarID")]
        car = self._live.get(car_id)
        if car is None:
            if 0 <= car_id < 256:
                self._pending[car_id] = (message, ts)
            return []
        entry = car.entry
        events: list[FeedEvent] = []
        current = car.current
        if current is not None and not current.loaded:
            current.loaded = True  # position reports only come from cars on the server
            entry.state = self._state(car)
        pos = message.get("Pos")
        x = z = None
        if type(pos) is dict:
            x = _num(pos.get("X"))
            z = _num(pos.get("Z"))
            if x is not None and z is not None:
                entry.x = x
                entry.z = z
                entry.y = _num(pos.get("Y"))
                entry.position_at = ts
        velocity = message.get("Velocity")
        speed = None
        if type(velocity) is dict:
            vx = _num(velocity.get("X")) or 0.0
            vy = _num(velocity.get("Y")) or 0.0
            vz = _num(velocity.get("Z")) or 0.0
            speed = math.sqrt(vx * vx + vy * vy + vz * vz) * 3.6
            if speed < _MAX_KMH:
                entry.speed = speed
                if speed > _MOVING_KMH and not entry.in_pits:
                    car.has_run = True  # out on track: a later pit entry is a pit stop
                if speed > car.lap_vmax:
                    car.lap_vmax = speed
                    if entry.top_speed is None or speed > entry.top_speed:
                        entry.top_speed = speed
            else:
                speed = None
        spline = message.get("NormalisedSplinePos")
        if type(spline) is float or type(spline) is int:
            entry.spline = _num(spline)
        in_pits = message.get("IsInPits")
        if type(in_pits) is bool:
            car.pits_reported = True
            if in_pits != entry.in_pits:
                self._set_pits(car, in_pits, ts, events)
        elif not car.pits_reported and x is not None and z is not None and speed is not None:
            self._infer_pits(car, x, z, speed, ts, events)
        race_position = message.get("RacePosition")  # v2e+ fields from here on
        if type(race_position) is int:
            entry.reported_position = race_position if race_position > 0 else None
        gap = message.get("Gap")
        if gap is not None and gap != car.gap_text:
            car.gap_text = gap
            entry.reported_interval, entry.reported_interval_laps = parse_split(gap)
        if message.get("HasCompletedSession") is True and not entry.finished:
            self._mark_finished(car, ts, events)
        return events

    def _infer_pits(
        self, car: _Car, x: float, z: float, speed: float, ts: float, events: list[FeedEvent]
    ) -> None:
        """v1 pit inference from position reports (rules in the module docstring)."""
        session = self._model.session
        entry = car.entry
        if session.type is SessionType.RACE and session.flag is FlagStatus.NONE:
            car.px, car.pz, car.pt, car.pspeed = x, z, ts, speed
            return
        garage = car.garage
        if entry.in_pits:
            if speed < _STOPPED_KMH:
                if car.current is not None and car.current.loaded:
                    self._remember_garage(car, x, z)
            elif speed > _MOVING_KMH and (
                garage is None or math.hypot(x - garage[0], z - garage[1]) > _GARAGE_RADIUS_M
            ):
                self._set_pits(car, False, ts, events)
        elif speed < _STOPPED_KMH:
            teleported = False
            if car.pt is not None and car.px is not None and car.pz is not None:
                gap = ts - car.pt
                if 0 <= gap <= _TELEPORT_MAX_GAP_S:
                    reach = max(_TELEPORT_MIN_M, 50.0 + 1.5 * max(car.pspeed, _MOVING_KMH) / 3.6 * gap)
                    teleported = math.hypot(x - car.px, z - car.pz) > reach
            at_garage = garage is not None and math.hypot(x - garage[0], z - garage[1]) <= _GARAGE_RADIUS_M
            if teleported or at_garage:
                self._set_pits(car, True, ts, events)
                self._remember_garage(car, x, z)
        car.px, car.pz, car.pt, car.pspeed = x, z, ts, speed

    def _remember_garage(self, car: _Car, x: float, z: float) -> None:
        car.garage = (x, z)
        session = self._model.session
        if car.car_id is not None and session.track_id:
            key = (session.track_id, session.layout_id or "", car.car_id)
            if key not in self._garages and len(self._garages) > 10_000:
                self._garages.clear()
            self._garages[key] = (x, z)

    # ---------------------------------------------------------------- 57, 10, 11

    def _on_chat(self, message: Any, ts: float) -> list[FeedEvent]:
        if type(message) is not dict:
            return [self._bad(ts, "57 Chat Message is not an object")]
        return self._chat(message, ts)

    def _chat(self, message: dict, ts: float) -> list[FeedEvent]:
        text = _str(message.get("Message"))
        car_id = _int(message.get("CarID"))
        time_raw = _str(message.get("Time"))
        key = (time_raw, car_id, text)
        if key in self._chat_keys or not text:
            return []
        self._chat_keys.add(key)
        self._chat_order.append(key)
        if len(self._chat_order) > 1000:
            self._chat_keys.discard(self._chat_order.popleft())
        guid = _str(message.get("DriverGUID"))
        sender = _str(message.get("DriverName")) or "?"
        driver = self._drivers.get(guid) if guid else None
        car = driver.car if driver is not None else None
        server = car_id == _SERVER_CAR_ID or (guid in ("", "0") and sender == "Server")
        team = bool(car is not None and car.entry.is_team) or bool(
            self._team_pattern is not None and self._team_pattern.search(sender)
        )
        return [
            FeedEvent(
                EventKind.CHAT,
                ts,
                car_number=car.entry.number if car is not None else None,
                text=f"{sender}: {text}",
                data={
                    "sender": sender,
                    "message": text,
                    "car_id": car_id,
                    "guid": guid,
                    "time": parse_time(time_raw),
                    "server": server,
                    "team": team,
                },
            )
        ]

    def _on_collision(self, message: Any, ts: float, with_car: bool) -> list[FeedEvent]:
        number = 10 if with_car else 11
        if type(message) is not dict:
            return [self._bad(ts, f"{number} collision Message is not an object")]
        car_id = _int(message.get("CarID"))
        if car_id is None:
            return [self._bad(ts, f"{number} collision without an integer CarID")]
        car = self._live.get(car_id)
        other_id = _int(message.get("OtherCarID")) if with_car else None
        other = self._live.get(other_id) if other_id is not None else None
        impact = _num(message.get("ImpactSpeed"))
        speed = None
        if impact is not None:
            speed = impact if (self._version or 0) >= 200 else impact * 3.6
            if not 0 <= speed < _MAX_KMH:
                speed = None
        world = _dict(message.get("WorldPos"))
        world_pos = {axis.lower(): _num(world.get(axis)) for axis in ("X", "Y", "Z")} if world else None
        who = self._label(car) if car is not None else f"CarID {car_id}"
        if with_car:
            whom = self._label(other) if other is not None else f"CarID {other_id}"
            text = f"{who} contact with {whom}"
        else:
            text = f"{who} contact with the wall"
        if speed is not None:
            text += f", {speed:.0f} km/h"
        team = bool((car is not None and car.entry.is_team) or (other is not None and other.entry.is_team))
        return [
            FeedEvent(
                EventKind.COLLISION,
                ts,
                car_number=car.entry.number if car is not None else None,
                text=text,
                data={
                    "with": "car" if with_car else "environment",
                    "speed": speed,
                    "car_id": car_id,
                    "other_car": other.entry.number if other is not None else None,
                    "other_car_id": other_id,
                    "world_pos": world_pos,
                    "team": team,
                },
            )
        ]

    # ---------------------------------------------------------------- helpers

    def _label(self, car: _Car) -> str:
        entry = car.entry
        return f"#{entry.number} ({entry.driver})" if entry.driver else f"#{entry.number}"

    def _event(self, kind: str, ts: float, car: _Car, text: str, **data: Any) -> FeedEvent:
        return FeedEvent(kind, ts, car_number=car.entry.number, text=text, data=data)

    _handlers = {
        200: _on_snapshot,
        50: _on_new_session,
        51: _on_connect,
        52: _on_disconnect,
        55: _on_end_session,
        56: _on_version,
        57: _on_chat,
        58: _on_loaded,
        59: _on_session_info,
        101: _on_tyres,
        10: lambda self, message, ts: self._on_collision(message, ts, True),
        11: lambda self, message, ts: self._on_collision(message, ts, False),
    }


def _is_driver_map(value: Any) -> bool:
    """``{"Drivers": {...} | null, ...}``: a driver map as ACSM sends it, even an empty one."""
    return type(value) is dict and type(value.get("Drivers", 0)) in (dict, type(None))


def _driver_map(value: Any) -> list[tuple[str, dict]]:
    """``{"Drivers": {guid: driver}, "GUIDsInPositionalOrder": [...]}`` → ordered (guid, driver)."""
    drivers = _dict(_dict(value).get("Drivers"))
    if not drivers:
        return []
    order = _dict(value).get("GUIDsInPositionalOrder")
    result: list[tuple[str, dict]] = []
    used: set[str] = set()
    if type(order) is list:
        for guid in order:
            if type(guid) is str and guid not in used:
                raw = drivers.get(guid)
                if type(raw) is dict:
                    result.append((guid, raw))
                    used.add(guid)
    for guid, raw in drivers.items():
        if guid not in used and type(raw) is dict:
            result.append((guid, raw))
            used.add(guid)
    return result
