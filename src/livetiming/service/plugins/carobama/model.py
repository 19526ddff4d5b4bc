"""The timing model every carobama feed produces, independent of the upstream protocol.

A *feed* (``feeds/emperor.py``, later a BMI karting feed) is a pure state machine that turns
upstream frames into this model plus a list of :class:`FeedEvent`; the Common Timing Data view
(``ctd.py``), the store and the pit-wall page only ever read the model. Keeping it generic means
a new upstream only needs a new feed.

Overview (in the style of FastF1's data model)::

    TimingModel
    ├── session: Session          what is running, where, the clock and the flag
    ├── entries: list[Entry]      one per car, in classification order (P1 first)
    │     └── laps: list[Lap]     every lap the car completed, all drivers together
    ├── best_lap / best_sectors   session bests (for "sb" flags)
    └── sector_count              number of timed sectors per lap (0 = no splits)

    FeedEvent                     something that happened, returned by ``feed.receive()``

Units everywhere: times and durations in **seconds** (floats), speeds in **km/h**, temperatures
in **°C**, positions in the upstream's world metres. Timestamps are Unix seconds; where a
timestamp comes from the upstream's own clock rather than from the caller, the field says so.

The feed owns the objects and mutates them in place; readers must treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from livetiming.racing import FlagStatus

__all__ = [
    "CarState",
    "Entry",
    "EventKind",
    "FeedEvent",
    "Lap",
    "Session",
    "SessionType",
    "TimingModel",
    "TrackMap",
]


class SessionType(StrEnum):
    """Kind of session; decides how cars are classified and how gaps are computed.

    ``RACE`` sessions are classified by laps then crossing time; all others by best lap.
    """

    PRACTICE = "practice"
    QUALIFYING = "qualifying"
    RACE = "race"
    #: Anything else (e.g. a booking phase) or not known yet.
    OTHER = "other"


class CarState(StrEnum):
    """Car status as Timing71 clients show it in the ``State`` column (the value is the wire text)."""

    #: On track.
    RUN = "RUN"
    #: In the pit lane / garage.
    PIT = "PIT"
    #: On an out-lap (left the pits, has not crossed the line since).
    OUT = "OUT"
    #: Took the chequered flag.
    FIN = "FIN"
    #: Not started (before the start of a race, or never on track).
    NOT_STARTED = "N/S"
    #: Retired (left the session while out on track).
    RET = "RET"


class EventKind(StrEnum):
    """Kinds of :class:`FeedEvent`. Being a ``StrEnum``, ``event.kind == "lap"`` works."""

    #: A car completed a lap (one event per lap, including laps only inferred after a gap).
    LAP = "lap"
    #: A chat message (de-duplicated).
    CHAT = "chat"
    #: Contact with another car or with the environment (``data["with"]`` is "car" or "environment").
    COLLISION = "collision"
    #: A driver connected.
    JOIN = "join"
    #: A driver disconnected.
    LEAVE = "leave"
    #: A driver finished loading into the session.
    LOADED = "loaded"
    #: A new session started (``data["looped"]`` when laps are carried over, ``data["initial"]`` for
    #: the first session seen after connecting).
    SESSION_CHANGE = "session_change"
    #: The upstream server process restarted; all session state was dropped.
    SERVER_RESTART = "server_restart"
    #: Another driver took over a car.
    DRIVER_CHANGE = "driver_change"
    #: A car entered the pits.
    PIT_IN = "pit_in"
    #: A car left the pits.
    PIT_OUT = "pit_out"
    #: A car's tyre compound changed.
    TYRE_CHANGE = "tyre_change"
    #: The session's flag changed (``data["flag"]`` is the lower-case FlagStatus name).
    FLAG = "flag"
    #: The session's run state changed: started, paused, resumed, stopped, finished, or nothing
    #: loaded (``data["state"]``); ``text`` is the message for the timing screen.
    SESSION_STATE = "session_state"
    #: A session's results became final (``data["reason"]``); emitted at most once per session.
    SESSION_END = "session_end"
    #: A frame that could not be used; ``text`` holds a one-line reason. State is unchanged.
    BAD_FRAME = "bad_frame"
    #: A well-formed frame of a type this feed does not use; ``text`` says which.
    UNKNOWN_EVENT = "unknown_event"


@dataclass(slots=True)
class FeedEvent:
    """Something that happened, as returned by a feed's ``receive()``.

    Events feed the Timing71 messages (``ctd.messages``) and the store. Pit and driver changes are
    reported here for the store, but the framework derives their *messages* from the State and
    Driver columns, so ``ctd.messages`` ignores them.

    Attributes:
        kind: one of :class:`EventKind` (a ``str``).
        timestamp: Unix seconds of the frame that produced the event, as given by the caller.
        car_number: the car's number (``Entry.number``) when the event concerns one car.
        text: a one-line human readable description (the message text for messages).
        data: details that depend on the kind (see the feed's documentation); always JSON-able.
    """

    kind: str
    timestamp: float
    car_number: str | None = None
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Lap:
    """One completed lap of a car.

    Attributes:
        number: 1-based lap number *of the car* (laps of all its drivers counted together).
        time: lap time in seconds, or None when the lap is known to have happened but its time was
            not seen (e.g. laps completed while disconnected from the upstream).
        driver: name of the driver who drove it (None when unknown).
        sectors: sector times in seconds (None for a sector not seen); empty without splits.
        tyre: compound at the end of the lap, if the feed reports tyres.
        position: the car's classification position right after the lap.
        cuts: track-limit cuts on the lap, None when the feed does not say.
        timestamp: Unix seconds of the line crossing **on the upstream's clock** (None when
            unknown); differences between two crossings are exact, comparisons with the caller's
            clock are only as good as the two clocks' agreement.
        top_speed: highest speed seen during the lap in km/h (None when not measured).
        inferred: True when the lap's existence was deduced from a lap counter jump rather than
            seen directly.
        gap: the upstream's own gap to the leader reported as the car completed this lap, in
            seconds (0 for the leader), when the upstream gives one and the car was not lapped.
    """

    number: int
    time: float | None = None
    driver: str | None = None
    sectors: list[float | None] = field(default_factory=list)
    tyre: str | None = None
    position: int | None = None
    cuts: int | None = None
    timestamp: float | None = None
    top_speed: float | None = None
    inferred: bool = False
    gap: float | None = None


@dataclass(slots=True)
class Entry:
    """One car in the session, with every driver who drove it.

    Attributes:
        key: stable identity of the entry for the life of the session (see the feed for the rule).
        number: car number as shown to users (a string, unique within the model).
        driver: current (or, for a car that left, last) driver's name.
        drivers: every driver seen in this car this session, in order of first appearance.
        team: team name when the upstream gives one.
        car: car make/model as shown to users.
        car_model: the upstream's identifier of the car model.
        car_class: class name, None when the upstream does not classify cars.
        laps: completed laps of the car, oldest first; ``len(laps)`` is the lap count.
        last_lap: time of the most recent lap (seconds) or None.
        last_lap_is_new: True when ``last_lap`` was completed by the most recent update of the
            feed (drives the ``sb-new`` flag).
        best_lap: best valid lap time (seconds) or None.
        sectors: sector times of the lap in progress (None where not yet timed).
        best_sectors: best time per sector this session.
        pit_count: number of pit stops.
        state: current :class:`CarState`.
        position: 1-based classification position (index in ``TimingModel.entries`` + 1).
        total_time: sum of the car's lap times in seconds (None when unknown).
        top_speed: highest speed seen this session, km/h.
        tyre: current tyre compound as the upstream names it.
        connected: True while a driver is in the car (connected to the server).
        is_team: True when a driver of this car matches the ``--team`` tag.
        in_pits: True while the car is in the pit lane or garage.
        finished: True once the car took the chequered flag.
        x, y, z: last world position in metres (y is height; x/z is the map plane).
        speed: last instantaneous speed, km/h.
        spline: last fraction of the lap completed (0..1, 0 at the line), if reported.
        position_at: caller timestamp of the last position report.
        reported_position: the upstream's own live position, if it sends one.
        reported_interval: the upstream's own interval/gap in seconds, if it sends one.
        reported_interval_laps: laps behind according to the upstream's own gap text.
        reported_gap: the upstream's own gap to the leader as it should be shown: seconds, or text
            such as "1 lap" (None when the upstream gives none).
        average_lap: the upstream's average lap time in seconds, if it reports one.
    """

    key: str
    number: str
    driver: str | None = None
    drivers: list[str] = field(default_factory=list)
    team: str | None = None
    car: str | None = None
    car_model: str | None = None
    car_class: str | None = None
    laps: list[Lap] = field(default_factory=list)
    last_lap: float | None = None
    last_lap_is_new: bool = False
    best_lap: float | None = None
    sectors: list[float | None] = field(default_factory=list)
    best_sectors: list[float | None] = field(default_factory=list)
    pit_count: int = 0
    state: CarState = CarState.NOT_STARTED
    position: int = 0
    total_time: float | None = None
    top_speed: float | None = None
    tyre: str | None = None
    connected: bool = False
    is_team: bool = False
    in_pits: bool = False
    finished: bool = False
    x: float | None = None
    y: float | None = None
    z: float | None = None
    speed: float | None = None
    spline: float | None = None
    position_at: float | None = None
    reported_position: int | None = None
    reported_interval: float | None = None
    reported_interval_laps: int | None = None
    reported_gap: float | str | None = None
    average_lap: float | None = None

    @property
    def lap_count(self) -> int:
        """Number of completed laps (all drivers)."""
        return len(self.laps)

    def crossing_time(self, lap_number: int) -> float | None:
        """Upstream-clock time at which lap ``lap_number`` ended (0 = never), or None if unknown.

        Falls back to the neighbouring crossing plus/minus the lap time when the crossing itself
        was not seen (e.g. the laps before we connected), which is exact when the times are known.
        """
        laps = self.laps
        if lap_number < 1 or lap_number > len(laps):
            return None
        lap = laps[lap_number - 1]
        if lap.timestamp is not None:
            return lap.timestamp
        if lap_number < len(laps):
            following = laps[lap_number]
            if following.timestamp is not None and following.time is not None:
                return following.timestamp - following.time
        if lap_number > 1:
            previous = laps[lap_number - 2]
            if previous.timestamp is not None and lap.time is not None:
                return previous.timestamp + lap.time
        return None


@dataclass(slots=True)
class TrackMap:
    """How to draw world positions on the track map image.

    Pixel coordinates of a world point are ``((x + offset_x) / scale, (z + offset_z) / scale)`` in
    an image of ``width`` × ``height`` pixels; ``image`` is the image path on the upstream server.
    """

    width: float
    height: float
    scale: float
    offset_x: float
    offset_z: float
    image: str | None = None


@dataclass(slots=True)
class Session:
    """The running session: identity, venue, conditions, clock and flag.

    Attributes:
        source: which feed produced it ("emperor", "bmi", ...).
        server_name: name of the upstream server (shown as the service name).
        name: session name as configured ("Practice", "Race", ...).
        type: :class:`SessionType`.
        track, layout: track and layout names for display (layout None for single-layout tracks).
        track_id, layout_id: the upstream's identifiers of track and layout.
        air_temp, road_temp: °C.
        weather: weather description for display.
        flag: current :class:`livetiming.racing.FlagStatus`.
        time_elapsed, time_remaining: session clock in seconds *as of* ``clock_at`` (None when
            unknown; elapsed may be negative before a race starts). Use :meth:`elapsed_at` /
            :meth:`remaining_at` for another instant.
        clock_at: caller timestamp at which the two values above were true.
        clock_running: whether the clock advances after ``clock_at``.
        duration: scheduled length in seconds for timed sessions, None for lap-limited ones.
        laps_total: scheduled laps of a lap-limited race, None otherwise.
        laps_remaining: laps the leader still has to complete (lap-limited races only).
        generation: increases by one every time a new session starts (including a looped practice
            that keeps its laps) or the upstream's state is reset; use it to key stored sessions.
        session_id: the upstream's identity of the session (opaque text), "" when unknown.
        started_at: when the session started on the upstream's clock (Unix seconds), if known.
        index, count: position of this session in the event and number of sessions, if known.
        track_map: map drawing parameters, if the upstream provides them.
        last_frame_at: caller timestamp of the last frame received (freshness).
        mode: how the session is won, in words, when the upstream says (BMI: "most laps wins").
        extra: upstream session attributes kept raw (BMI: the heat's ``CE``, ``EM``, ``C`` …).
    """

    source: str = ""
    server_name: str = ""
    name: str = ""
    type: SessionType = SessionType.OTHER
    track: str | None = None
    layout: str | None = None
    track_id: str | None = None
    layout_id: str | None = None
    air_temp: float | None = None
    road_temp: float | None = None
    weather: str | None = None
    flag: FlagStatus = FlagStatus.NONE
    time_elapsed: float | None = None
    time_remaining: float | None = None
    clock_at: float | None = None
    clock_running: bool = False
    duration: float | None = None
    laps_total: int | None = None
    laps_remaining: int | None = None
    generation: int = 0
    session_id: str = ""
    started_at: float | None = None
    index: int | None = None
    count: int | None = None
    track_map: TrackMap | None = None
    last_frame_at: float | None = None
    mode: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def elapsed_at(self, now: float | None = None) -> float | None:
        """Elapsed session time in seconds at caller time ``now`` (default: ``clock_at``)."""
        if self.time_elapsed is None:
            return None
        if now is None or self.clock_at is None or not self.clock_running:
            return self.time_elapsed
        return self.time_elapsed + (now - self.clock_at)

    def remaining_at(self, now: float | None = None) -> float | None:
        """Remaining session time in seconds at caller time ``now``, never below 0."""
        if self.time_remaining is None:
            return None
        if now is None or self.clock_at is None or not self.clock_running:
            return max(0.0, self.time_remaining)
        # Before a race's start the remaining time does not run down.
        elapsed_then = self.time_elapsed if self.time_elapsed is not None else 0.0
        elapsed_now = elapsed_then + (now - self.clock_at)
        run = max(0.0, elapsed_now) - max(0.0, elapsed_then)
        return max(0.0, self.time_remaining - run)


@dataclass(slots=True)
class TimingModel:
    """Everything a feed knows: the session and the cars in classification order.

    Attributes:
        session: the :class:`Session`.
        entries: cars, P1 first.
        best_lap: fastest valid lap of the session (seconds) or None.
        best_sectors: fastest time per sector this session.
        sector_count: number of timed sectors per lap (0 when the upstream gives no splits).
    """

    session: Session = field(default_factory=Session)
    entries: list[Entry] = field(default_factory=list)
    best_lap: float | None = None
    best_sectors: list[float | None] = field(default_factory=list)
    sector_count: int = 0

    def entry(self, number: str) -> Entry | None:
        """The entry with car number ``number``, or None."""
        for candidate in self.entries:
            if candidate.number == number:
                return candidate
        return None
