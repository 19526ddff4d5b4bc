"""BMI Leisure (SMS-Timing stack) karting heat feed: one websocket text frame = the whole heat.

:class:`BMIFeed` is a pure state machine like :class:`~.emperor.EmperorFeed`: ``receive(text,
timestamp)`` takes one frame and the caller's receive time (Unix seconds) and returns the
:class:`FeedEvent` list it caused; ``feed.model`` is the current :class:`TimingModel`. It never
reads a clock, never does I/O and never raises. The frame format is in ``shared/spec/bmi-heat.md``::

    {"T":1708452000,"CE":1,"CS":1,"D":[{"LP":0,"A":41825,"B":36580,"K":"8","G":"","D":3591187,
     "L":11,"T":36580,"R":5,"N":"Maty","P":1,"M":0}, ...],"EM":0,"C":410909,
     "N":"[HEAT] 33 - Carrera XL ","E":1,"R":1,"L":0,"S":1}

Every frame is the complete heat, so the frame is the truth: what a frame lacks (a driver who is no
longer listed) is gone, what it holds replaces what the previous one said. Laps are found by
comparing each driver's lap counter with the previous frame.

Heats (sessions)
================

* ``"{}"`` means *no heat loaded*: a real state, not an error. The table empties, the flag is
  ``none``, and one ``session_state`` event (state ``"none"``, "No heat loaded") is returned for a
  run of such frames.
* A heat is identified by its start time ``T`` (Unix seconds) when it has one (a renamed heat with
  the same ``T`` is the same heat). A heat that has not started yet may have no ``T``; it is then
  identified by its name, and keeps its identity when it gets a ``T`` under the same name (and when
  its ``T`` changes before it ever ran: a planned time replaced by the actual one). A frame whose
  ``T`` (or, without ``T``, whose name) differs from the current heat's is a new heat; so is a
  not-started frame (``S`` 0 or 5) without ``T`` after a finished heat of the same name (the next
  heat of an "open session" series). A frame with neither a ``T`` nor a name changes nothing.
* A new heat is a new timing session: ``Session.generation`` increases, every entry is dropped and
  a ``session_change`` event is returned (``text`` = the heat name without ``[HEAT]``; ``data``:
  ``name``, ``raw_name``, ``heat_start``, ``generation``, ``initial`` (the first heat this feed
  saw), ``mode``, ``end``, ``message``). The service resets analysis and starts a new recording
  segment on it.
* A heat is *finalised* once, on the first of: its state reaching 4 (finished), another heat
  replacing it, or ``"{}"``. That returns one ``session_end`` event (``data``: ``reason``
  ``finished``/``replaced``/``unloaded``, ``generation``, ``name``, ``results``).

Heat state ``S`` → flag and ``session_state`` events (one per transition, so repeated frames say
nothing twice): 0 not started → ``none``; 1 running → ``green`` ("Heat started" the first time,
"Heat resumed" after a pause or stop); 2 paused → ``red`` ("Heat paused"); 3 stopped → ``red``
("Heat stopped"); 4 finished → ``chequered`` ("Heat finished", once per heat); 5 next heat →
``none``. The first frame of a heat announces only a paused, stopped or finished state.

The clock: both readings of ``C``
=================================

``C`` is a counter in milliseconds; public consumers disagree on whether it is the time *elapsed*
(counting up) or the time *remaining* (counting down). The feed keeps the raw value
(``Session.extra["C"]``) and decides per heat:

1. **Observed direction (wins).** The first change of ``C`` between two frames of the heat that are
   both running (``S`` 1 with ``CS`` not 0) decides: ``C`` rose → elapsed reading, ``C`` fell →
   remaining reading. The decision holds for the rest of the heat. It needs no clock, so it works
   the same live and in a fast replay.
2. **Before that**, a frame of the heat before its clock started (``S`` 0 or 5, or ``CS`` 0)
   hints: a countdown shows the heat's length there, a count-up shows 0. So ``C`` > 0 in a heat that
   ends after a time means the remaining reading, ``C`` 0 (or a heat without a time limit) the
   elapsed reading.
3. **Without either** (joining a running or paused heat), the end condition decides: a heat that
   ends after a time (``E`` 1 or 3) counts down (remaining reading); a manual or laps-only heat
   (``E`` 0 or 2) counts up (elapsed reading; in a laps race ``C`` keeps counting).
4. The ``counter`` argument (``"elapsed"`` / ``"remaining"``) forces one reading; ``"auto"`` (the
   default) applies the rules above, in that order.

Values, at the frame's receive time:

* elapsed reading: ``time_elapsed = C``; the frames do not carry the heat's length, so
  ``time_remaining`` is unknown (None) and clients show the elapsed clock;
* remaining reading: ``time_remaining = C``; ``time_elapsed`` is the heat's length minus ``C``
  when the length is known (the value of ``C`` seen before the clock started: state 0 or 5, or
  ``CS`` 0), otherwise the feed's own running time since it saw the clock start, otherwise
  ``receive time − T`` less the time seen paused (only when that lies between 0 and 24 hours),
  otherwise unknown;
* a stopped or finished heat reporting ``C`` 0 keeps the elapsed time it had (a finished heat is
  re-sent with ``C`` 0), and the remaining time is 0;
* between frames the clock runs (``Session.clock_running``) only while ``S`` is 1 and ``CS`` is
  not 0: paused, stopped and finished heats and clocks not yet started stand still;
* heats that end after laps (``E`` 2 or 3) also have ``Session.laps_remaining`` = the heat's ``L``
  (``lapsRemain`` in Common Timing Data) and ``laps_total`` = leader's laps + ``L``.

Entries and laps
================

* Entries are keyed by the driver id ``D`` (``"d<id>"``), or, without a usable id, by name and
  kart (``"n<name>|k<kart>"``); a kart number may change between stints of an endurance heat
  without starting a new entry. ``Entry.number`` is the kart ``K`` (made unique with a letter
  suffix when two drivers share a kart number in one frame).
* Order is the source's ``P`` (trusted, never re-sorted on other grounds); drivers without a
  usable ``P`` follow in frame order.
* Laps, per driver, from the lap counter ``L`` compared with the previous frame:

  - unchanged: nothing (repeated frames); a changed ``T`` corrects the last lap's time;
  - the newest lap keeps the source's gap to the leader at that line crossing (``Lap.gap``:
    seconds, 0 for the leader's empty ``G``, None when lapped) in heats won by most laps, so that
    intervals can be computed between two karts' crossings of the same lap;
  - +1: one lap with time ``T``, crossed at the receive time (``Lap.timestamp`` is the caller's
    clock for this feed: BMI frames carry no crossing time);
  - +n (a gap in the feed): n laps; the newest has time ``T``, the others are ``inferred`` with an
    unknown time, except that when exactly one is missing and the best lap ``B`` improved without
    being ``T``, the missing lap was that best lap;
  - lower (a correction by the timekeeper): laps beyond ``L`` are removed (with any pit stop
    inferred from them);
  - the first sight of a driver (joining mid-heat) records his ``L`` laps as ``initial``, the
    newest with time ``T``.

  Laps keep counting after the chequered flag (a two-phase finish); a driver who completes a lap
  while the heat is finished (or in the frame that finished it) is ``FIN``.
* ``Entry.last_lap`` / ``best_lap`` / ``average_lap`` are the source's ``T`` / ``B`` / ``A`` in
  seconds (the driver's own laps when the source gives none); ``Entry.reported_gap`` is the source's
  ``G`` (seconds for ``"00.998"``, ``"1:02.345"`` or a number; ``"1 lap"`` / ``"N laps"`` for a lap
  count such as ``"1 Lap"``, ``"2L"`` or a bare integer; other text as it is; None for the leader's
  empty gap), also split into ``reported_interval`` (seconds) and ``reported_interval_laps``.

Pit stops (inferred)
====================

BMI frames have no pit flag; in endurance heats a stop shows as one very long lap. A lap is taken
as a pit stop when its time is more than ``pit_threshold`` (default 1.5) times the median of the
driver's *clean* laps so far, and the driver has at least 3 clean laps. Clean laps are timed laps
other than lap 1 (standing start or out of the pit lane), laps that were themselves pit stops and
laps during which the heat was paused or stopped (a red flag makes the lap in progress long for
everyone); those laps are never judged either. A pit stop adds one to ``Entry.pit_count`` and
returns a ``pit_in`` event with ``data["inferred"]`` True whose text says it was inferred.

Events returned
===============

``lap`` (``data``: ``lap``, ``time``, ``driver``, ``entry``, ``kart``, ``inferred``, ``initial``,
``personal_best``, ``session_best``, ``position``), ``pit_in`` (``data``: ``inferred``, ``lap``,
``time``, ``median``, ``ratio``, ``threshold``, ``entry``), ``session_change``, ``session_state``
(``data``: ``state`` one of ``none started resumed paused stopped finished``, ``style``, ``heat``),
``session_end``, ``flag`` (``data["flag"]``) and ``bad_frame``: a frame that cannot be used at all
(not JSON, not an object, not a heat), which leaves the state unchanged, or, with
``data["partial"]`` True, a heat frame used except for the parts the text names.

Limits against hostile input: at most :data:`MAX_DRIVERS` drivers per frame, :data:`MAX_LAPS`
laps per driver and :data:`MAX_NEW_LAPS` laps created per frame; times outside their plausible
range count as missing.
"""

from __future__ import annotations

import json
import math
import re
from bisect import insort
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
)

__all__ = [
    "END_CONDITIONS",
    "HEAT_STATES",
    "MAX_DRIVERS",
    "MAX_LAPS",
    "MAX_NEW_LAPS",
    "RACE_MODES",
    "BMIFeed",
    "clean_heat_name",
    "parse_gap",
    "venue_from_url",
]

#: ``R`` race mode → words (used in the description).
RACE_MODES = {0: "most laps wins", 1: "best lap wins", 2: "best average wins"}
#: ``E`` end condition → words.
END_CONDITIONS = {0: "manual end", 1: "after time", 2: "after laps", 3: "after laps or time"}
#: ``S`` heat state → words.
HEAT_STATES = {0: "not started", 1: "running", 2: "paused", 3: "stopped", 4: "finished", 5: "next heat"}

_FLAGS = {
    0: FlagStatus.NONE,
    1: FlagStatus.GREEN,
    2: FlagStatus.RED,
    3: FlagStatus.RED,
    4: FlagStatus.CHEQUERED,
    5: FlagStatus.NONE,
}
_SESSION_TYPES = {0: SessionType.RACE, 1: SessionType.QUALIFYING, 2: SessionType.QUALIFYING}

#: Most drivers used from one frame (a kart heat has a few dozen).
MAX_DRIVERS = 500
#: Most laps one driver can have (a 24-hour kart race is about 2,500 laps).
MAX_LAPS = 5000
#: Most laps created by one frame (first sight of a long endurance heat fits easily).
MAX_NEW_LAPS = 50_000
#: Longest plausible lap (ms): a pit stop lap of an endurance heat, red flags included.
_MAX_LAP_MS = 4 * 3600 * 1000
#: Largest plausible counter value (ms): one week.
_MAX_COUNTER_MS = 7 * 24 * 3600 * 1000
#: Heat start times outside this range (Unix seconds) are not times.
_MIN_UNIX, _MAX_UNIX = 1.0, 1e11
_MAX_TEXT = 200
_MIN_CLEAN_LAPS = 3
_HEAT_PREFIX = re.compile(r"^\s*\[heat\]\s*", re.IGNORECASE)
_GAP_TIME = re.compile(r"^\+?(?:(\d+):)?(\d+(?:\.\d+)?)$")
_GAP_LAPS = re.compile(r"^\+?(\d+)\s*(?:l|lap|laps|rnd|rnds|ronde|rondes|runde|runden|vuelta|vueltas)?\.?$",
                       re.IGNORECASE)
_GENERIC_HOST_LABELS = {"www", "live", "livetiming", "timing", "ws", "wss", "api", "app", "backend"}


# --------------------------------------------------------------------------------------------
# Value helpers: every upstream value is vetted, nothing here raises on odd input.
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite float from an int, a float or a numeric string (bools and the rest give None)."""
    kind = type(value)
    if kind is int:
        if abs(value) > 1e18:
            return None
        return float(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is str and 0 < len(value) <= 32:
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _int(value: Any, low: int, high: int) -> int | None:
    """An integral number within [low, high], or None."""
    number = _number(value)
    if number is None or number != int(number):
        return None
    result = int(number)
    return result if low <= result <= high else None


def _ms(value: Any, high: float) -> float | None:
    """A positive duration in milliseconds up to ``high``, as seconds (rounded to the ms)."""
    number = _number(value)
    if number is None or not 0 < number <= high:
        return None
    return round(number / 1000.0, 3)


def _text(value: Any) -> str | None:
    """Stripped text (numbers become text), at most 200 characters; None when empty or not text."""
    kind = type(value)
    if kind is str:
        text = value.strip()
    elif kind is int and abs(value) < 10**18:
        text = str(value)
    else:
        return None
    return text[:_MAX_TEXT] or None


def clean_heat_name(name: str | None) -> str:
    """The heat name for display: without the ``[HEAT]`` prefix and surrounding blanks."""
    if not name:
        return "Heat"
    return _HEAT_PREFIX.sub("", name).strip() or "Heat"


def parse_gap(value: Any) -> tuple[float | str | None, float | None, int | None]:
    """The source's gap ``G`` as (display value, seconds, laps).

    ``""`` (the leader) gives Nones; ``"00.998"``, ``"1:02.345"`` or a JSON number give seconds;
    ``"1 Lap"``, ``"2 laps"``, ``"3L"`` or a bare integer ``"2"`` give a lap count shown as
    ``"2 laps"``; anything else is shown as it is.
    """
    if type(value) in (int, float):
        seconds = _number(value)
        if seconds is None or seconds < 0 or seconds > 1e6:
            return None, None, None
        return round(seconds, 3), round(seconds, 3), None
    text = _text(value)
    if text is None:
        return None, None, None
    if "." not in text and ":" not in text:
        laps = _GAP_LAPS.match(text)
        if laps and int(laps.group(1)[:9]) > 0:
            count = int(laps.group(1)[:9])
            return ("1 lap" if count == 1 else f"{count} laps"), None, count
    found = _GAP_TIME.match(text)
    if found:
        minutes = int(found.group(1)[:9]) if found.group(1) else 0
        seconds = round(minutes * 60 + float(found.group(2)[:20]), 3)
        return seconds, seconds, None
    return text[:20], None, None


def venue_from_url(url: str | None) -> str | None:
    """A venue name guessed from the upstream URL's host.

    ``wss://live.kartcenter-berlin.de:8443/`` gives ``"Kartcenter Berlin"``: generic labels
    (``www``, ``live``, ``timing`` …) and the top-level domain are dropped, hyphens become spaces.
    An IP address or a one-label host (``localhost``) is returned as it is.
    """
    try:
        host = urlsplit(url or "").hostname or ""
    except ValueError:
        return None
    if not host:
        return None
    labels = host.split(".")
    if len(labels) == 1 or all(label.isdigit() for label in labels) or ":" in host:
        return host
    useful = [label for label in labels[:-1] if label.lower() not in _GENERIC_HOST_LABELS]
    if not useful:
        return host
    words = " ".join(useful[:1] if len(useful) > 1 and len(useful[0]) > 3 else useful)
    return words.replace("-", " ").replace("_", " ").title()


def _format_time(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:06.3f}" if minutes else f"{rest:.3f} s"


# --------------------------------------------------------------------------------------------
# Per-heat state
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Kart:
    """What the feed remembers about one entry beyond the model's :class:`Entry`."""

    entry: Entry
    #: The source's lap counter in the previous frame (None before the first sight).
    upstream_laps: int | None = None
    #: The heat's pause count when this driver last crossed the line (or was first seen).
    pause_mark: int = 0
    #: Lap number → time of clean laps (see the module docstring), and their times sorted.
    clean: dict[int, float] = field(default_factory=dict)
    clean_sorted: list[float] = field(default_factory=list)
    #: Lap numbers inferred as pit stops.
    pit_laps: set[int] = field(default_factory=set)
    #: The source's best lap (seconds) in the previous frame.
    source_best: float | None = None

    def forget_laps_after(self, count: int) -> None:
        """Drop the bookkeeping of laps numbered above ``count`` (a correction)."""
        if any(number > count for number in self.clean):
            self.clean = {n: t for n, t in self.clean.items() if n <= count}
            self.clean_sorted = sorted(self.clean.values())
        self.pit_laps = {n for n in self.pit_laps if n <= count}


@dataclass(slots=True)
class _Heat:
    """The current heat's identity and the state needed to interpret its next frame."""

    key: float | None
    raw_name: str
    name: str
    state: int | None = None
    started: bool = False
    #: True once "Heat finished" was said (once per heat, even if ``S`` leaves 4 and comes back).
    finish_said: bool = False
    #: True once some driver of the heat completed a lap.
    karts_with_laps: bool = False
    finalised: bool = False
    pause_count: int = 0
    #: "elapsed" or "remaining" once ``C``'s direction was observed.
    direction: str | None = None
    #: "elapsed" or "remaining" as suggested by ``C`` before the clock started.
    hint: str | None = None
    #: Last counter value (ms) of a running frame, for the direction rule.
    running_counter: float | None = None
    #: The heat's length in seconds (``C`` seen before the clock started, remaining reading).
    length: float | None = None
    #: True once the feed saw the heat before its clock started.
    saw_start: bool = False
    #: Own-clock seconds the heat ran / stood paused while the feed watched.
    run_seconds: float = 0.0
    paused_seconds: float = 0.0
    #: Caller time and state of the previous frame of this heat.
    last_ts: float | None = None
    last_running: bool = False
    karts: dict[str, _Kart] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The feed
# --------------------------------------------------------------------------------------------


class BMIFeed:
    """BMI karting heat frames in, :class:`TimingModel` and :class:`FeedEvent` out.

    Args:
        pit_threshold: a lap longer than this many times the driver's median is a pit stop.
        venue: the venue's name (``Session.server_name``, shown as the service name).
        counter: how to read ``C``: ``"auto"`` (see the module docstring), ``"elapsed"`` or
            ``"remaining"``.
    """

    def __init__(self, pit_threshold: float = 1.5, venue: str | None = None, counter: str = "auto"):
        threshold = _number(pit_threshold)
        self.pit_threshold = threshold if threshold is not None and threshold > 1.0 else 1.5
        self.counter = counter if counter in ("elapsed", "remaining") else "auto"
        self._model = TimingModel(session=Session(source="bmi", server_name=venue or "BMI karting"))
        self._heat: _Heat | None = None
        self._heats_seen = 0
        self._no_heat_announced = False

    @property
    def model(self) -> TimingModel:
        """The current timing model (owned by the feed; read-only for callers)."""
        return self._model

    # ---------------------------------------------------------------- entry point

    def receive(self, text: str, timestamp: float) -> list[FeedEvent]:
        """Process one frame received at ``timestamp`` (Unix seconds); return what it caused.

        Never raises: an unusable frame gives a ``bad_frame`` event with a one-line reason.
        """
        ts = _number(timestamp)
        if ts is None:
            last = self._model.session.last_frame_at
            ts = last if last is not None else 0.0
        try:
            return self._receive(text, ts)
        except Exception as exc:  # a safety net: input is vetted, so this means a bug here
            return [self._bad(ts, f"internal error: {type(exc).__name__}: {exc}"[:300])]

    def _bad(self, ts: float, reason: str, partial: bool = False) -> FeedEvent:
        return FeedEvent(EventKind.BAD_FRAME, ts, text=" ".join(reason.split()),
                         data={"partial": True} if partial else {})

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
        except RecursionError:
            return [self._bad(ts, "not JSON: nested too deeply")]
        except ValueError as exc:
            if not text.strip():
                return [self._bad(ts, "empty frame")]
            return [self._bad(ts, f"not JSON: {exc}"[:200])]
        if type(frame) is not dict:
            return [self._bad(ts, f"frame is a JSON {type(frame).__name__}, not an object")]
        if not frame:
            return self._no_heat(ts)
        if not any(key in frame for key in ("N", "S", "D", "T", "C", "E", "R")):
            return [self._bad(ts, "not a heat frame (none of N, S, D, T, C, E, R)")]
        return self._on_heat(frame, ts)

    # ---------------------------------------------------------------- heats

    def _no_heat(self, ts: float) -> list[FeedEvent]:
        events: list[FeedEvent] = []
        if self._heat is not None:
            self._finalise(self._heat, "unloaded", ts, events)
            self._heat = None
        model = self._model
        current = model.session
        if current.flag is not FlagStatus.NONE:
            events.append(FeedEvent(EventKind.FLAG, ts, data={"flag": "none"}))
        model.entries = []
        model.best_lap = None
        current.name = "No heat loaded"
        current.flag = FlagStatus.NONE
        current.mode = None
        current.session_id = ""
        current.started_at = None
        current.time_elapsed = current.time_remaining = None
        current.clock_running = False
        current.clock_at = ts
        current.duration = current.laps_total = current.laps_remaining = None
        current.extra = {}
        if not self._no_heat_announced:
            self._no_heat_announced = True
            events.append(FeedEvent(EventKind.SESSION_STATE, ts, text="No heat loaded",
                                    data={"state": "none", "style": "raceControl", "heat": None}))
        return events

    def _identify(self, key: float | None, raw_name: str, state: int | None) -> bool:
        """True when a frame with this heat start, name and state belongs to the current heat."""
        heat = self._heat
        if heat is None:
            return False
        same_name = raw_name == heat.raw_name
        if key is not None and heat.key is not None and key == heat.key:
            return True
        if key is not None:
            # A heat without a start time (or one that never ran) that starts under its name now.
            if same_name and (heat.key is None or (not heat.started and not heat.karts_with_laps)):
                heat.key = key
                return True
            return False
        if key is None and not raw_name:
            return True  # nothing in the frame says the heat changed
        if heat.key is not None and heat.state == 4 and state in (0, 5):
            return False  # the next heat, loaded under the same name as the finished one
        return same_name

    def _finalise(self, heat: _Heat, reason: str, ts: float, events: list[FeedEvent]) -> None:
        if heat.finalised:
            return
        heat.finalised = True
        results = [
            {"position": index + 1, "kart": entry.number, "driver": entry.driver, "key": entry.key,
             "laps": entry.lap_count, "best": entry.best_lap, "average": entry.average_lap,
             "pits": entry.pit_count}
            for index, entry in enumerate(self._model.entries)
        ]
        events.append(FeedEvent(EventKind.SESSION_END, ts, text=heat.name, data={
            "reason": reason, "generation": self._model.session.generation, "name": heat.name,
            "results": results,
        }))

    def _new_heat(self, key: float | None, raw_name: str, frame: dict, ts: float,
                  events: list[FeedEvent]) -> _Heat:
        if self._heat is not None:
            self._finalise(self._heat, "replaced", ts, events)
        heat = _Heat(key=key, raw_name=raw_name, name=clean_heat_name(raw_name))
        self._heat = heat
        self._heats_seen += 1
        self._no_heat_announced = False
        model = self._model
        model.entries = []
        model.best_lap = None
        current = model.session
        current.generation += 1
        current.name = heat.name
        current.session_id = f"{key:.0f}" if key is not None else heat.name
        current.time_elapsed = current.time_remaining = None
        current.duration = current.laps_total = current.laps_remaining = None
        current.clock_running = False
        current.mode = None
        mode = _int(frame.get("R"), 0, 2)
        end = _int(frame.get("E"), 0, 3)
        mode_words = RACE_MODES.get(mode) if mode is not None else None
        initial = self._heats_seen == 1
        label = f"{heat.name} ({mode_words})" if mode_words else heat.name
        events.append(FeedEvent(EventKind.SESSION_CHANGE, ts, text=heat.name, data={
            "name": heat.name, "raw_name": raw_name, "heat_start": key,
            "generation": current.generation, "initial": initial, "looped": False,
            "mode": mode_words, "end": END_CONDITIONS.get(end) if end is not None else None,
            "message": f"Heat: {label}" if initial else f"New heat: {label}",
        }))
        return heat

    def _on_heat(self, frame: dict, ts: float) -> list[FeedEvent]:
        events: list[FeedEvent] = []
        problems: list[str] = []
        key = _number(frame.get("T"))
        if key is not None and not _MIN_UNIX <= key <= _MAX_UNIX:
            key = None
        raw_name = frame.get("N") if type(frame.get("N")) is str else ""
        raw_name = raw_name[:_MAX_TEXT]
        state = _int(frame.get("S"), 0, 5)
        if "S" in frame and state is None:
            problems.append("unknown heat state S")
        heat = self._heat
        if not self._identify(key, raw_name, state):
            heat = self._new_heat(key, raw_name, frame, ts, events)
        assert heat is not None
        first_frame = heat.last_ts is None
        current = self._model.session
        if heat.raw_name != raw_name and raw_name:  # renamed, same start time
            heat.raw_name, heat.name = raw_name, clean_heat_name(raw_name)
            current.name = heat.name
        if key is not None:
            current.started_at = key
        mode = _int(frame.get("R"), 0, 2)
        end = _int(frame.get("E"), 0, 3)
        if mode is not None:
            current.mode = RACE_MODES[mode]
        current.type = SessionType.RACE if mode == 0 or end in (2, 3) else _SESSION_TYPES.get(
            mode, SessionType.OTHER)
        current.extra = {name: frame.get(name) for name in ("T", "S", "E", "R", "C", "CS", "L", "CE", "EM")
                         if name in frame and type(frame.get(name)) in (int, float, str, bool)}

        previous_state = heat.state
        new_state = state if state is not None else previous_state
        finishing = new_state == 4 and previous_state != 4
        if new_state is not None:
            self._state_change(heat, previous_state, new_state, first_frame, ts, events)
            heat.state = new_state

        drivers = frame.get("D")
        if drivers is None:
            problems.append("no driver list D")
        elif type(drivers) is not list:
            problems.append(f"driver list D is a {type(drivers).__name__}")
        else:
            self._drivers(heat, drivers, ts, first_frame, problems, events)

        self._clock(heat, frame, new_state, ts)
        if finishing:
            self._finalise(heat, "finished", ts, events)
        heat.last_ts = ts
        if problems:
            events.append(self._bad(ts, "heat frame partly unusable: " + "; ".join(problems[:5]),
                                    partial=True))
        return events

    def _state_change(self, heat: _Heat, old: int | None, new: int, first: bool, ts: float,
                      events: list[FeedEvent]) -> None:
        current = self._model.session
        flag = _FLAGS[new]
        if flag is not current.flag:
            current.flag = flag
            events.append(FeedEvent(EventKind.FLAG, ts, data={"flag": flag.name.lower()}))
        if new in (2, 3) and old not in (2, 3):
            heat.pause_count += 1
        if old == new:
            return
        said: tuple[str, str, str] | None = None
        if new == 1:
            if not heat.started:
                heat.started = True
                if not first:
                    said = ("started", "Heat started", "green")
            elif old in (2, 3):
                said = ("resumed", "Heat resumed", "green")
        elif new == 2:
            said = ("paused", "Heat paused", "red")
        elif new == 3:
            said = ("stopped", "Heat stopped", "red")
        elif new == 4 and not heat.finish_said:
            heat.finish_said = True
            said = ("finished", "Heat finished", "track")
        if new in (2, 3, 4):
            heat.started = True
        if said is not None:
            state, text, style = said
            events.append(FeedEvent(EventKind.SESSION_STATE, ts, text=f"{text}: {heat.name}",
                                    data={"state": state, "style": style, "heat": heat.name}))

    # ---------------------------------------------------------------- drivers and laps

    def _drivers(self, heat: _Heat, drivers: list, ts: float, first_frame: bool,
                 problems: list[str], events: list[FeedEvent]) -> None:
        if len(drivers) > MAX_DRIVERS:
            problems.append(f"{len(drivers)} drivers, only the first {MAX_DRIVERS} used")
            drivers = drivers[:MAX_DRIVERS]
        model = self._model
        budget = [MAX_NEW_LAPS]
        rows: list[tuple[int, int, _Kart]] = []
        seen: set[str] = set()
        skipped = 0
        for index, raw in enumerate(drivers):
            if type(raw) is not dict:
                skipped += 1
                continue
            key = self._key(raw)
            if key in seen:
                suffix = 2
                while f"{key}~{suffix}" in seen:
                    suffix += 1
                key = f"{key}~{suffix}"
            seen.add(key)
            kart = heat.karts.get(key)
            if kart is None:
                kart = _Kart(Entry(key=key, number="", state=CarState.NOT_STARTED),
                             pause_mark=heat.pause_count)
                heat.karts[key] = kart
            self._driver(heat, kart, raw, ts, first_frame, budget, problems, events)
            position = _int(raw.get("P"), 1, 100_000)
            rows.append((position if position is not None else 1 << 30, index, kart))
        if skipped:
            problems.append(f"{skipped} driver entries are not objects")
        if budget[0] < 0:
            problems.append("too many new laps in one frame; some lap counters left as they were")
        rows.sort(key=lambda row: (row[0], row[1]))
        entries = [row[2].entry for row in rows]
        used: set[str] = set()
        for position, entry in enumerate(entries, start=1):
            entry.position = position
            number = entry.number or "?"
            if number in used:
                stem, letter = number, ord("b")
                while f"{stem}{chr(letter)}" in used and letter < ord("z"):
                    letter += 1
                number = f"{stem}{chr(letter)}"
                suffix = 2
                while number in used:
                    number = f"{stem}-{suffix}"
                    suffix += 1
            used.add(number)
            entry.number = number
        model.entries = entries
        bests = [entry.best_lap for entry in entries if entry.best_lap is not None]
        model.best_lap = min(bests) if bests else None

    @staticmethod
    def _key(raw: dict) -> str:
        driver_id = raw.get("D")
        if type(driver_id) in (int, float) and _int(driver_id, 1, 10**15) is not None:
            return f"d{int(driver_id)}"
        text = _text(driver_id)
        if text is not None and text != "0":
            return f"d{text}"
        return f"n{_text(raw.get('N')) or ''}|k{_text(raw.get('K')) or ''}"

    def _driver(self, heat: _Heat, kart: _Kart, raw: dict, ts: float, first_frame: bool,
                budget: list[int], problems: list[str],
                events: list[FeedEvent]) -> None:
        entry = kart.entry
        name = _text(raw.get("N"))
        if name is not None and name != entry.driver:
            entry.driver = name
            if name not in entry.drivers:
                entry.drivers.append(name)
        number = _text(raw.get("K"))
        if number is not None:
            entry.number = number
        elif not entry.number:
            entry.number = "?"
        entry.reported_position = _int(raw.get("P"), 1, 100_000)
        entry.reported_gap, entry.reported_interval, entry.reported_interval_laps = parse_gap(raw.get("G"))
        last = _ms(raw.get("T"), _MAX_LAP_MS)
        best = _ms(raw.get("B"), _MAX_LAP_MS)
        average = _ms(raw.get("A"), _MAX_LAP_MS)
        laps = _int(raw.get("L"), 0, MAX_LAPS)
        before = len(entry.laps)
        if laps is not None:
            gap: float | None = None
            if self._model.session.extra.get("R") not in (1, 2):  # G is a gap at the line
                gap = 0.0 if _text(raw.get("G")) is None else entry.reported_interval
            self._laps(heat, kart, laps, last, best, gap, ts, budget, events)
        elif "L" in raw:
            problems.append(f"driver {entry.number}: lap count L unusable")
        crossed = len(entry.laps) > before
        # Times: the source's, else the driver's own laps.
        timed = [lap.time for lap in entry.laps if lap.time is not None]
        entry.last_lap = last if last is not None and entry.laps else (
            entry.laps[-1].time if entry.laps else None)
        entry.best_lap = best if best is not None else (min(timed) if timed else None)
        entry.average_lap = average if average is not None else (
            round(sum(timed) / len(timed), 3) if timed else None)
        kart.source_best = best
        entry.total_time = round(sum(timed), 3) if timed and len(timed) == len(entry.laps) else None
        entry.pit_count = len(kart.pit_laps)
        state = heat.state
        if entry.laps:
            heat.karts_with_laps = True
        if state == 4 and (crossed or first_frame):
            entry.finished = True
        if state in (0, 5) or state is None and not entry.laps:
            entry.state = CarState.NOT_STARTED
        elif entry.finished:
            entry.state = CarState.FIN
        else:
            entry.state = CarState.RUN

    def _laps(self, heat: _Heat, kart: _Kart, count: int, last: float | None, best: float | None,
              gap: float | None, ts: float, budget: list[int], events: list[FeedEvent]) -> None:
        entry = kart.entry
        have = len(entry.laps)
        previous = kart.upstream_laps
        if count < have:  # a correction: the timekeeper removed laps
            del entry.laps[count:]
            kart.forget_laps_after(count)
            if entry.laps and last is not None:
                entry.laps[-1].time = last
            kart.upstream_laps = count
            return
        if count == have:
            if entry.laps and last is not None and entry.laps[-1].time != last and previous is not None:
                entry.laps[-1].time = last  # the last lap's time was corrected
                kart.clean.pop(count, None)
                kart.clean_sorted = sorted(kart.clean.values())
            kart.upstream_laps = count
            return
        new = count - have
        if new > budget[0]:
            budget[0] = -1
            return
        budget[0] -= new
        initial = previous is None
        spans_pause = kart.pause_mark != heat.pause_count
        missing_time: float | None = None
        if (not initial and new == 2 and best is not None and best != last
                and (kart.source_best is None or best < kart.source_best)):
            missing_time = best
        position = entry.reported_position
        session_best = self._model.best_lap
        for number in range(have + 1, count + 1):
            newest = number == count
            time = last if newest else (missing_time if number == count - 1 else None)
            inferred = not newest and time is None
            lap = Lap(number=number, time=time, driver=entry.driver, position=position,
                      timestamp=ts if newest and new == 1 and not initial else None, inferred=inferred,
                      gap=gap if newest else None)
            entry.laps.append(lap)
            personal = time is not None and (entry.best_lap is None or time < entry.best_lap - 1e-9)
            overall = time is not None and (session_best is None or time < session_best - 1e-9)
            if overall:
                session_best = time
            events.append(FeedEvent(EventKind.LAP, ts, car_number=entry.number, data={
                "lap": number, "time": time, "driver": entry.driver, "entry": entry.key,
                "kart": entry.number, "inferred": inferred, "initial": initial,
                "personal_best": personal, "session_best": overall, "position": position,
            }))
            if newest and time is not None and number >= 2 and not initial and not spans_pause:
                self._judge(heat, kart, lap, ts, events)
        kart.upstream_laps = count
        kart.pause_mark = heat.pause_count

    def _judge(self, heat: _Heat, kart: _Kart, lap: Lap, ts: float, events: list[FeedEvent]) -> None:
        """Pit stop inference for a lap seen completed (see the module docstring)."""
        time = lap.time
        assert time is not None
        clean = kart.clean_sorted
        if len(clean) >= _MIN_CLEAN_LAPS:
            middle = len(clean) // 2
            median = clean[middle] if len(clean) % 2 else (clean[middle - 1] + clean[middle]) / 2
            if median > 0 and time > self.pit_threshold * median:
                kart.pit_laps.add(lap.number)
                entry = kart.entry
                entry.pit_count = len(kart.pit_laps)
                ratio = time / median
                who = f"Kart {entry.number}" + (f" ({entry.driver})" if entry.driver else "")
                events.append(FeedEvent(EventKind.PIT_IN, ts, car_number=entry.number, text=(
                    f"{who} made a pit stop (inferred: lap {lap.number} took {_format_time(time)}, "
                    f"{ratio:.1f}× the median {_format_time(median)})"), data={
                    "inferred": True, "lap": lap.number, "time": time, "median": round(median, 3),
                    "ratio": round(ratio, 2), "threshold": self.pit_threshold, "entry": entry.key,
                }))
                return
        kart.clean[lap.number] = time
        insort(clean, time)

    # ---------------------------------------------------------------- clock

    def _reading(self, heat: _Heat, end: int | None) -> str:
        if self.counter != "auto":
            return self.counter
        if heat.direction is not None:
            return heat.direction
        if heat.hint is not None:
            return heat.hint
        return "remaining" if end in (1, 3) else "elapsed"

    def _clock(self, heat: _Heat, frame: dict, state: int | None, ts: float) -> None:
        current = self._model.session
        counter_ms = _number(frame.get("C"))
        if counter_ms is not None and not 0 <= counter_ms <= _MAX_COUNTER_MS:
            counter_ms = None
        clock_started = frame.get("CS")
        started = clock_started is None or clock_started not in (0, False, "0")
        running = state == 1 and started
        end = _int(frame.get("E"), 0, 3)
        # Own clock: how long the heat ran or stood paused while we watched.
        if heat.last_ts is not None and ts > heat.last_ts:
            step = ts - heat.last_ts
            if heat.last_running and running:
                heat.run_seconds += step
            elif state in (2, 3):
                heat.paused_seconds += step
        # Direction of C: the first change between two running frames.
        if running and counter_ms is not None:
            previous = heat.running_counter
            if heat.direction is None and previous is not None and counter_ms != previous:
                heat.direction = "elapsed" if counter_ms > previous else "remaining"
            heat.running_counter = counter_ms
        elif not running:
            heat.running_counter = None
        if state in (0, 5) or (state == 1 and not started):
            heat.saw_start = True
            heat.run_seconds = 0.0
            if counter_ms is not None:
                heat.hint = "remaining" if counter_ms > 0 and end in (1, 3) else "elapsed"
            if counter_ms and self._reading(heat, end) == "remaining":
                heat.length = counter_ms / 1000.0
        reading = self._reading(heat, end)
        elapsed, remaining = current.time_elapsed, current.time_remaining
        counter = counter_ms / 1000.0 if counter_ms is not None else None
        finished_zero = state in (3, 4, 5) and counter == 0 and heat.started
        if reading == "elapsed":
            if counter is not None and not finished_zero:
                elapsed = counter
            remaining = 0.0 if state == 4 and end in (1, 3) else None
        else:
            if counter is not None:
                remaining = counter
            if heat.length is not None and remaining is not None and heat.length >= remaining:
                elapsed = heat.length - remaining
            elif state in (3, 4, 5) and heat.started and elapsed is not None:
                pass  # stopped or finished: the elapsed time stands still
            elif heat.saw_start:
                elapsed = heat.run_seconds if state not in (0, 5) else 0.0
            elif heat.key is not None and 0 <= ts - heat.key <= 86_400:
                elapsed = max(0.0, ts - heat.key - heat.paused_seconds)
            else:
                elapsed = None
        current.time_elapsed = round(elapsed, 3) if elapsed is not None else None
        current.time_remaining = round(remaining, 3) if remaining is not None else None
        current.duration = heat.length if reading == "remaining" else None
        current.clock_at = ts
        current.clock_running = running
        heat.last_running = running
        laps_left = _int(frame.get("L"), 0, 100_000)
        if end in (2, 3) and laps_left is not None:
            leader = max((entry.lap_count for entry in self._model.entries), default=0)
            current.laps_remaining = laps_left
            current.laps_total = max(current.laps_total or 0, leader + laps_left) or None
        else:
            current.laps_remaining = current.laps_total = None
