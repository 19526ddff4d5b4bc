"""The recorder: frames, feed events and the timing model in, store write operations out.

:class:`Recorder` runs on the reactor thread right after the feed handled a frame. Like the feeds it
is pure: no I/O, no clock (every time comes from the caller), no database. It hands
:mod:`.records` operations to two sinks (the writer's queues), which must never block.

What it writes
==============

* **Every frame**, numbered ``seq`` 0, 1, 2 … within the run, with its receive time and the
  upstream connection's ``t``.
* **Sessions**: one per feed *generation* (``Session.generation``). A session row is identified by
  the upstream host, the server name and the upstream's own identity of the session
  (``Session.session_id``, plus ``@<start>`` in Unix seconds once ``Session.started_at`` is known,
  so that BMI heats named alike on different days stay apart), so that a restarted service finds
  the row it was filling. Feeds only learn that identity with the session's first snapshot, so a
  new generation is *settled* (its row created) only when it is known: when ``session_id``
  differs from the previous generation's, when the first lap or pit stop arrives, or
  ``settle_after`` seconds after the generation began (then with a provisional key, re-keyed
  when the real one turns up). Until then its messages wait in the recorder. A generation
  replaced before it settled is not stored; its messages are kept without a session. A settled
  session whose identity the feed then loses (BMI ``{}``: no heat loaded) is left as it was.
* **Entries, drivers and laps** from the model, not from the events: after every frame with
  events, and at least once a second of frames, each entry's lap list is compared with what was
  already handed over and the new laps are written (with the ``personal_best``/``session_best``
  flags of their ``lap`` event when there was one). So the laps a feed reports from its first
  snapshot after a (re)connection, and the laps a looped practice keeps (``carried``), are stored
  like any other; the writer's unique ``(entry, lap number)`` makes the repeats harmless. A last
  lap whose time the feed corrected is written again as a correction; laps the feed removed (a
  timekeeper's correction) are removed. Entries also carry their published position, best lap,
  pit counter and state.
* **Pit stops** from ``pit_in`` / ``pit_out`` events, paired by the writer. A stop *counts* (gets a
  ``number``) when the entry's pit counter rose in the same frame; a counter that rises on its
  own (a manager that reports ``NumPits`` after the car came in, or stops made while
  disconnected) promotes the latest stop that does not count yet, or adds a stop known only from
  the counter. A ``pit_in`` with a lap time in its data (the BMI feed judges a stop from a slow
  lap) is a stop made *during* lap ``lap``; otherwise ``lap`` is the number of laps completed
  when the car came in.
* **Messages**: every other event except ``lap``, ``bad_frame`` and ``unknown_event`` (those are in
  the raw frames), with their frame's ``seq``. Chats carry a de-duplication key (the manager's
  time, sender and text) because a manager repeats its stored chats to every new connection.

All text that reaches the database is made storable: NUL characters and lone surrogates (which
PostgreSQL or SQLite refuse) are replaced in names and messages, non-finite floats in JSON data
become ``null``. A raw frame holding them is stored JSON-escaped (``escaped``), so it reads back
exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from livetiming.service.plugins.carobama.model import Entry, EventKind, FeedEvent, Lap, Session, TimingModel
from livetiming.service.plugins.carobama.store.records import (
    DriverSeen,
    EntryUpsert,
    FrameRecord,
    LapRecord,
    LapsTruncate,
    MessageRecord,
    PitCount,
    PitIn,
    PitOut,
    RunEnd,
    RunStart,
    SessionEnd,
    SessionRef,
    SessionUpsert,
)

__all__ = ["Recorder", "clean_json", "clean_text", "escape_frame", "session_key", "unescape_frame"]

#: Events that are not stored as messages (laps have their table, bad frames are in the frames).
_NOT_MESSAGES = frozenset({EventKind.LAP, EventKind.BAD_FRAME, EventKind.UNKNOWN_EVENT})
#: Go's zero time: Emperor's "no session start" value is no identity.
_ZERO_TIME_PREFIX = "0001-01-01"
#: Seconds between two updates of a session's ``last_frame_at`` (and raw ``extra``).
_TOUCH_EVERY = 5.0
#: Longest time between two comparisons of the model's entries with what was written.
_SYNC_EVERY = 1.0

_SURROGATE = re.compile("[\ud800-\udfff]")

Sink = Callable[[Any], None]


def clean_text(value: Any) -> str | None:
    """``value`` as text any database stores: NUL and lone surrogates become U+FFFD."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATE.sub("\ufffd", text)
    return text


def clean_json(value: Any) -> Any:
    """A copy of ``value`` that strict JSON (and PostgreSQL) accepts: NaN and ±inf become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(key): clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [clean_json(item) for item in value]
    if value is None or isinstance(value, bool | int):
        return value
    return clean_text(value)


def escape_frame(data: str) -> tuple[str, bool]:
    """``(stored text, escaped)``: frames with NUL or lone surrogates are stored as JSON strings."""
    if "\x00" in data:
        return json.dumps(data), True
    if not data.isascii():
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(data), True
    return data, False


def unescape_frame(data: str, escaped: bool) -> str:
    """The frame text exactly as received (inverse of :func:`escape_frame`)."""
    return json.loads(data) if escaped else data


def session_key(session: Session) -> str | None:
    """The upstream's identity of the session, or None when the feed does not know it (yet)."""
    key = session.session_id
    if not key or key.startswith(_ZERO_TIME_PREFIX):
        return None
    return clean_text(key)


@dataclass(slots=True)
class _Generation:
    """What the recorder knows about one feed generation in this run."""

    ref: SessionRef
    first_seq: int
    first_at: float
    previous_key: str | None
    looped: bool = False
    carried: dict[str, int] = field(default_factory=dict)
    settled: bool = False
    ended: bool = False
    identity: tuple[str, str] | None = None
    provisional: bool = False
    signature: tuple | None = None
    touched_at: float = -math.inf
    synced_at: float = -math.inf
    held: list[Callable[[SessionRef | None], Any]] = field(default_factory=list)
    entries: dict[str, tuple] = field(default_factory=dict)
    drivers: dict[str, int] = field(default_factory=dict)
    laps: dict[str, int] = field(default_factory=dict)
    last_lap: dict[str, tuple[int, float | None] | None] = field(default_factory=dict)
    pits: dict[str, int] = field(default_factory=dict)


class Recorder:
    """Turns what the service receives into store write operations (see the module docstring).

    Args:
        rows: sink for every operation except frames (the writer's row queue).
        frames: sink for :class:`FrameRecord` (the writer's frame queue).
        run: unique id of this service run (e.g. ``uuid4().hex``).
        source: the feed ("emperor" or "bmi").
        host: the upstream's host name (part of a session's identity).
        settle_after: seconds after which a new session whose identity is still unknown gets a
            provisional one.
    """

    def __init__(self, rows: Sink, frames: Sink, *, run: str, source: str, host: str,
                 settle_after: float = 5.0):
        self._rows = rows
        self._frames = frames
        self.run = run
        self.source = source
        self.host = clean_text(host) or ""
        self.settle_after = settle_after
        self._seq = 0
        self._gen: _Generation | None = None
        #: the session key the model had after the previous frame
        self._key_before: str | None = None

    # ----- run ---------------------------------------------------------------------------

    def start(self, at: float, *, upstream: str | None = None, service_uuid: str | None = None,
              version: str | None = None) -> None:
        """Announce the run (call once, before the first frame)."""
        self._rows(RunStart(run=self.run, source=self.source, upstream=clean_text(upstream),
                            service_uuid=service_uuid, version=version, started_at=at))

    def stop(self, at: float, model: TimingModel | None = None) -> None:
        """The service stops: bring the current session's row up to date and end the run."""
        gen = self._gen
        if gen is not None and gen.settled and model is not None:
            self._upsert_session(gen, model.session, at, force=True)
        elif gen is not None:  # never settled: keep its messages, without a session
            held, gen.held = gen.held, []
            for build in held:
                op = build(None)
                if op is not None:
                    self._rows(op)
        self._rows(RunEnd(run=self.run, ended_at=at))

    @property
    def frames_seen(self) -> int:
        """Number of frames recorded in this run (the next frame's ``seq``)."""
        return self._seq

    # ----- frames ------------------------------------------------------------------------

    def record(self, text: str, t: float, received_at: float, events: Iterable[FeedEvent],
               model: TimingModel) -> None:
        """Record one frame and what the feed made of it (``model`` as it is after the frame)."""
        seq = self._seq
        self._seq += 1
        data, escaped = escape_frame(text)
        self._frames(FrameRecord(run=self.run, seq=seq, received_at=received_at, t=t, data=data,
                                 escaped=escaped))
        events = list(events)
        session = model.session
        gen = self._gen
        if gen is None or session.generation != gen.ref.generation:
            gen = self._new_generation(session, model, events, seq, received_at)
        lap_flags: dict[tuple[str, int], tuple[Any, Any]] = {}
        pit_in_entries: set[str] = set()
        substantial = False
        for event in events:
            if event.kind == EventKind.LAP:
                substantial = True
                data_ = event.data
                entry_key = data_.get("entry") or self._entry_key(model, event.car_number)
                if entry_key is not None and isinstance(data_.get("lap"), int):
                    lap_flags[(entry_key, data_["lap"])] = (data_.get("personal_best"),
                                                            data_.get("session_best"))
            elif event.kind in (EventKind.PIT_IN, EventKind.PIT_OUT):
                substantial = True
                if event.kind == EventKind.PIT_IN:
                    entry_key = event.data.get("entry") or self._entry_key(model, event.car_number)
                    if entry_key is not None:
                        pit_in_entries.add(entry_key)
        settling = not gen.settled and session.generation != 0
        if settling:
            self._maybe_settle(gen, model, received_at, substantial)

        counted: set[str] = set()
        trailing: list[PitCount] = []
        # Frames without events (most of them: position reports) change no entry, lap or pit
        # counter, except snapshots that only adjust what is reported (a team name, a pit counter):
        # those are picked up at least every _SYNC_EVERY seconds.
        if gen.settled and (events or settling or received_at - gen.synced_at >= _SYNC_EVERY):
            gen.synced_at = received_at
            self._upsert_session(gen, session, received_at)
            counted, trailing = self._sync_entries(gen, model, received_at, lap_flags, pit_in_entries)

        for idx, event in enumerate(events):
            self._event(gen, model, event, seq, idx, received_at, counted)
        for op in trailing:
            self._rows(op)
        self._key_before = session_key(session)

    # ----- generations and sessions --------------------------------------------------------

    def _new_generation(self, session: Session, model: TimingModel, events: list[FeedEvent], seq: int,
                        at: float) -> _Generation:
        old = self._gen
        if old is not None:
            if old.settled:
                if not old.ended:
                    self._rows(SessionEnd(ref=old.ref, ended_at=at, reason="replaced"))
            else:
                for build in old.held:  # never settled: keep its messages, without a session
                    op = build(None)
                    if op is not None:
                        self._rows(op)
        looped = any(event.kind == EventKind.SESSION_CHANGE and event.data.get("looped")
                     for event in events)
        gen = _Generation(ref=SessionRef(self.run, session.generation), first_seq=seq, first_at=at,
                          previous_key=self._key_before if old is not None else None, looped=looped)
        if looped:
            gen.carried = {entry.key: entry.lap_count for entry in model.entries}
        self._gen = gen
        return gen

    def _maybe_settle(self, gen: _Generation, model: TimingModel, at: float, substantial: bool) -> None:
        key = session_key(model.session)
        fresh = key is not None and key != gen.previous_key
        if not (fresh or substantial or at - gen.first_at >= self.settle_after):
            return
        gen.settled = True
        self._upsert_session(gen, model.session, at, force=True)
        held, gen.held = gen.held, []
        for build in held:
            op = build(gen.ref)
            if op is not None:
                self._rows(op)

    def _identity(self, gen: _Generation, session: Session) -> tuple[str, str] | None:
        """``(server, key)`` of the generation's row, or None: keep the row as it is.

        The key is the upstream's session identity plus ``@<start>`` (Unix seconds) once the start
        is known, so that heats known only by a name that repeats every day stay apart. It is
        provisional (``…#<run>:<generation>``) while the identity is unknown or still the previous
        session's. Once the session had a real identity, losing it (a BMI ``{}`` "no heat
        loaded") freezes the row: what the model shows next is not this session any more.
        """
        server = clean_text(session.server_name) or ""
        raw = session_key(session)
        if raw is None or raw == gen.previous_key:
            if gen.identity is not None:
                return None if not gen.provisional else gen.identity
            gen.provisional = True
            return server, f"{raw or ''}#{self.run}:{gen.ref.generation}"
        gen.provisional = False
        start = _finite(session.started_at)
        if start is not None:
            stamp = f"{start:.0f}"
            return server, raw if raw == stamp else f"{raw}@{stamp}"
        if gen.identity is not None and gen.identity[1].startswith(raw + "@"):
            return server, gen.identity[1]  # a start once known is not forgotten
        return server, raw

    def _upsert_session(self, gen: _Generation, session: Session, at: float, force: bool = False) -> None:
        identity = self._identity(gen, session)
        if identity is None:
            return
        signature = (session.name, session.type, session.track, session.layout, session.track_id,
                     session.layout_id, session.started_at, session.duration, session.laps_total,
                     session.mode)
        due = at - gen.touched_at >= _TOUCH_EVERY
        if not force and identity == gen.identity and signature == gen.signature and not due:
            return
        gen.identity, gen.signature, gen.touched_at = identity, signature, at
        fields: dict[str, Any] = {
            "name": clean_text(session.name),
            "type": str(session.type.value if hasattr(session.type, "value") else session.type),
            "track": clean_text(session.track),
            "layout": clean_text(session.layout),
            "track_id": clean_text(session.track_id),
            "layout_id": clean_text(session.layout_id),
            "heat_start": _finite(session.started_at),
            "duration": _finite(session.duration),
            "laps_total": session.laps_total,
            "mode": clean_text(session.mode),
            "extra": clean_json(session.extra) or None,
            "started_at": gen.first_at,
            "last_frame_at": at,
        }
        self._rows(SessionUpsert(ref=gen.ref, source=self.source, host=self.host, server=identity[0],
                                 key=identity[1], first_seq=gen.first_seq, fields=fields))

    # ----- entries, drivers, laps, pit counters ----------------------------------------------

    def _sync_entries(self, gen: _Generation, model: TimingModel, at: float,
                      lap_flags: dict[tuple[str, int], tuple[Any, Any]],
                      pit_in_entries: set[str]) -> tuple[set[str], list[PitCount]]:
        """Hand over what changed in the model's entries; returns (entries whose pit_in counts,
        pit counter operations to write after this frame's events)."""
        ref = gen.ref
        flag = _flag_name(model.session.flag)
        counted: set[str] = set()
        trailing: list[PitCount] = []
        for entry in model.entries:
            key = entry.key
            signature = (entry.number, entry.car_class, entry.team, entry.car, entry.car_model,
                         entry.position, entry.best_lap, entry.pit_count, entry.state)
            if gen.entries.get(key) != signature:
                first = key not in gen.entries
                gen.entries[key] = signature
                fields = {"number": clean_text(entry.number), "car_class": clean_text(entry.car_class),
                          "team": clean_text(entry.team), "car": clean_text(entry.car),
                          "car_model": clean_text(entry.car_model), "position": entry.position or None,
                          "best_lap": _finite(entry.best_lap), "pit_count": entry.pit_count,
                          "state": str(entry.state.value if hasattr(entry.state, "value") else entry.state)}
                if first:
                    fields["first_seen_at"] = at
                self._rows(EntryUpsert(ref=ref, entry_key=key, fields=fields))
            names = entry.drivers
            known = gen.drivers.get(key, 0)
            if len(names) > known:
                for name in names[known:]:
                    if name:
                        self._rows(DriverSeen(ref=ref, entry_key=key, name=clean_text(name) or "", at=at))
                gen.drivers[key] = len(names)
            elif len(names) < known:
                gen.drivers[key] = len(names)
            self._sync_laps(gen, entry, at, flag, lap_flags)
            self._sync_pits(gen, entry, pit_in_entries, counted, trailing)
        return counted, trailing

    def _sync_laps(self, gen: _Generation, entry: Entry, at: float, flag: str | None,
                   lap_flags: dict[tuple[str, int], tuple[Any, Any]]) -> None:
        key = entry.key
        laps = entry.laps
        sent = gen.laps.get(key, 0)
        if len(laps) < sent:  # the feed removed laps (a correction by the timekeeper)
            self._rows(LapsTruncate(ref=gen.ref, entry_key=key, count=len(laps)))
            sent = len(laps)
        last = gen.last_lap.get(key)
        if last is not None and sent and laps[sent - 1].number == last[0]:
            lap = laps[sent - 1]
            if _finite(lap.time) != last[1]:  # the last lap's time was corrected
                self._rows(self._lap_record(gen, key, lap, at, flag, lap_flags, correction=True))
        for lap in laps[sent:]:
            self._rows(self._lap_record(gen, key, lap, at, flag, lap_flags))
        gen.laps[key] = len(laps)
        gen.last_lap[key] = (laps[-1].number, _finite(laps[-1].time)) if laps else None

    def _lap_record(self, gen: _Generation, key: str, lap: Lap, at: float, flag: str | None,
                    lap_flags: dict[tuple[str, int], tuple[Any, Any]], correction: bool = False) -> LapRecord:
        carried = lap.number <= gen.carried.get(key, 0)
        personal, overall = lap_flags.get((key, lap.number), (None, None))
        fields = {
            "time": _finite(lap.time),
            "position": lap.position,
            "flag": None if carried else flag,
            "sectors": clean_json(list(lap.sectors)) if lap.sectors else None,
            "tyre": clean_text(lap.tyre),
            "timestamp": _finite(lap.timestamp),
            "received_at": at,
            "inferred": bool(lap.inferred),
            "personal_best": personal if isinstance(personal, bool) else None,
            "session_best": overall if isinstance(overall, bool) else None,
            "cuts": lap.cuts,
            "top_speed": _finite(lap.top_speed),
            "carried": carried,
        }
        return LapRecord(ref=gen.ref, entry_key=key, number=lap.number, driver=clean_text(lap.driver),
                         fields=fields, correction=correction)

    def _sync_pits(self, gen: _Generation, entry: Entry, pit_in_entries: set[str], counted: set[str],
                   trailing: list[PitCount]) -> None:
        key = entry.key
        count = entry.pit_count
        came_in = key in pit_in_entries
        known = gen.pits.get(key)
        if known is None:  # first sight: the counter so far (minus a stop made in this frame)
            known = count - 1 if came_in and count > 0 else count
            if known > 0:
                self._rows(PitCount(ref=gen.ref, entry_key=key, count=known, lap=entry.lap_count))
        if count > known:
            if came_in:
                counted.add(key)
                known += 1
            if count > known:
                trailing.append(PitCount(ref=gen.ref, entry_key=key, count=count, lap=entry.lap_count))
        gen.pits[key] = count

    # ----- events --------------------------------------------------------------------------

    def _event(self, gen: _Generation, model: TimingModel, event: FeedEvent, seq: int, idx: int, at: float,
               counted: set[str]) -> None:
        kind = event.kind
        if kind in (EventKind.PIT_IN, EventKind.PIT_OUT):
            build = self._pit_builder(model, event, at, counted)
            if build is None:
                return
        elif kind == EventKind.SESSION_END:
            reason = clean_text(event.data.get("reason")) or "ended"
            message = self._message_builder(event, seq, idx, at)

            def build(ref: SessionRef | None) -> Any:
                if ref is not None and self._gen is not None and self._gen.ref == ref:
                    self._gen.ended = True
                    self._rows(SessionEnd(ref=ref, ended_at=at, reason=reason))
                return message(ref)
        elif kind in _NOT_MESSAGES:
            return
        else:
            build = self._message_builder(event, seq, idx, at)
        if gen.settled:
            op = build(gen.ref)
            if op is not None:
                self._rows(op)
        elif gen.ref.generation == 0:
            op = build(None)
            if op is not None:
                self._rows(op)
        else:
            gen.held.append(build)

    def _message_builder(self, event: FeedEvent, seq: int, idx: int,
                         at: float) -> Callable[[SessionRef | None], Any]:
        data = clean_json(event.data) if event.data else {}
        dedup = None
        if event.kind == EventKind.CHAT and data.get("time") is not None:
            sender = data.get("guid") or data.get("car_id") or data.get("sender")
            dedup = f"chat|{data.get('time')}|{sender}|{data.get('message')}"
        kind = str(event.kind)
        car_number = clean_text(event.car_number)
        text = clean_text(event.text) or ""
        run = self.run

        def build(ref: SessionRef | None) -> MessageRecord:
            return MessageRecord(ref=ref, run=run, seq=seq, idx=idx, received_at=at, kind=kind,
                                 car_number=car_number, text=text, data=data,
                                 dedup_key=dedup if ref is not None else None)

        return build

    def _pit_builder(self, model: TimingModel, event: FeedEvent, at: float,
                     counted: set[str]) -> Callable[[SessionRef | None], Any] | None:
        data = event.data
        entry_key = data.get("entry") or self._entry_key(model, event.car_number)
        if entry_key is None:
            return None
        entry = _find(model, entry_key)
        lap = data.get("lap") if isinstance(data.get("lap"), int) else None
        during = "time" in data  # a stop judged from a slow lap happened during that lap
        driver = clean_text(entry.driver) if entry is not None else None
        tyre = clean_text(data.get("tyre")) if "tyre" in data else (
            clean_text(entry.tyre) if entry is not None else None)
        inferred = data.get("inferred") if isinstance(data.get("inferred"), bool) else None
        if event.kind == EventKind.PIT_IN:
            is_counted = entry_key in counted
            counted.discard(entry_key)
            in_lap = None if lap is None else (lap if during else lap + 1)
            extra = {name: clean_json(value) for name, value in data.items()
                     if name not in ("entry", "lap", "tyre", "inferred")}
            fields = {"in_lap": in_lap, "out_lap": in_lap if during else None, "driver_in": driver,
                      "tyre_in": tyre, "inferred": inferred, "extra": extra or None}

            def build_in(ref: SessionRef | None) -> PitIn | None:
                if ref is None:
                    return None
                return PitIn(ref=ref, entry_key=entry_key, at=at, counted=is_counted, fields=fields)

            return build_in
        out_lap = None if lap is None else lap + 1
        out_fields = {"out_lap": out_lap, "driver_out": driver, "tyre_out": tyre}

        def build_out(ref: SessionRef | None) -> PitOut | None:
            if ref is None:
                return None
            return PitOut(ref=ref, entry_key=entry_key, at=at, fields=out_fields)

        return build_out

    @staticmethod
    def _entry_key(model: TimingModel, number: str | None) -> str | None:
        if number is None:
            return None
        entry = model.entry(number)
        return entry.key if entry is not None else None


def _find(model: TimingModel, key: str) -> Entry | None:
    for entry in model.entries:
        if entry.key == key:
            return entry
    return None


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag_name(flag: Any) -> str | None:
    name = getattr(flag, "name", None)
    return name.lower() if isinstance(name, str) else None
