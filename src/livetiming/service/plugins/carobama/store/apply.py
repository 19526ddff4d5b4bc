"""How each write operation becomes SQL (used by the writer thread only).

Every operation is idempotent: rows are inserted with ``ON CONFLICT DO NOTHING`` or upserted on
their natural keys (see :mod:`.schema`), so writing a batch again after a commit whose outcome was
unknown changes nothing. Laps are upserted with "keep what is stored, fill in what it lacks": a
restarted feed that reports a lap again without its time (laps counted from its first snapshot)
never erases the time recorded the first time.

The statements are built once (:class:`Statements`) and executed with parameter dictionaries, so
SQLAlchemy compiles each of them once. :class:`Applier` caches database ids (run, session, entry,
driver) by natural key; the caches are transactional: entries added inside a transaction or
savepoint that is rolled back are undone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection

from livetiming.service.plugins.carobama.store import schema as s
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

__all__ = ["Applier", "MissingReference", "Statements"]

_MISSING = object()

#: Session columns a :class:`SessionUpsert` sets (besides its identity and ``started_at``).
SESSION_FIELDS = ("name", "type", "track", "layout", "track_id", "layout_id", "heat_start", "duration",
                  "laps_total", "mode", "extra", "last_frame_at")
ENTRY_FIELDS = ("number", "car_class", "team", "car", "car_model", "position", "best_lap", "pit_count",
                "state")
LAP_FIELDS = ("time", "position", "flag", "sectors", "tyre", "timestamp", "received_at", "inferred",
              "personal_best", "session_best", "cuts", "top_speed", "carried")
PIT_IN_FIELDS = ("in_lap", "out_lap", "driver_in", "tyre_in", "inferred", "extra")
PIT_OUT_FIELDS = ("out_lap", "driver_out", "tyre_out")


class MissingReference(LookupError):
    """An operation refers to a run, session or entry that was never written (its creation was
    dropped); the operation is skipped."""


def _p(name: str) -> Any:
    """A bound parameter (prefixed: UPDATE … SET may not reuse a column's name)."""
    return bindparam(f"p_{name}")


class Statements:
    """The store's statements for one dialect, built once."""

    def __init__(self, dialect: str):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise ValueError(f"unsupported database {dialect!r}")
        self.insert = insert
        runs, sessions, entries, drivers = s.runs.c, s.sessions.c, s.entries.c, s.drivers.c
        laps, stops = s.laps.c, s.pit_stops.c

        self.run_insert = insert(s.runs).on_conflict_do_nothing()
        self.run_id = select(runs.id).where(runs.uid == _p("uid"))
        self.run_end = update(s.runs).where(runs.uid == _p("uid")).values(ended_at=_p("ended_at"))

        self.session_find = select(sessions.id).where(
            sessions.source == _p("source"), sessions.host == _p("host"), sessions.server == _p("server"),
            sessions.session_key == _p("session_key"))
        self.session_insert = insert(s.sessions).on_conflict_do_nothing()
        self.session_update = update(s.sessions).where(sessions.id == _p("id")).values(
            started_at=func.coalesce(sessions.started_at, _p("started_at")),
            **{name: _p(name) for name in SESSION_FIELDS})
        self.session_rekey = update(s.sessions).where(sessions.id == _p("id")).values(
            server=_p("server"), session_key=_p("session_key"))
        self.session_end = update(s.sessions).where(
            sessions.id == _p("id"), sessions.ended_at.is_(None),
        ).values(ended_at=_p("ended_at"), end_reason=_p("reason"))
        self.segment_insert = insert(s.session_segments).on_conflict_do_nothing()

        self.entry_bare = insert(s.entries).on_conflict_do_nothing()
        self.entry_id = select(entries.id).where(entries.session_id == _p("session_id"),
                                                 entries.entry_key == _p("entry_key"))
        upsert = insert(s.entries)
        changes: dict[str, Any] = {name: upsert.excluded[name] for name in ENTRY_FIELDS}
        changes["first_seen_at"] = func.coalesce(entries.first_seen_at, upsert.excluded.first_seen_at)
        self.entry_upsert = upsert.on_conflict_do_update(index_elements=["session_id", "entry_key"],
                                                         set_=changes)

        self.driver_insert = insert(s.drivers).on_conflict_do_nothing()
        self.driver_id = select(drivers.id).where(drivers.entry_id == _p("entry_id"),
                                                  drivers.name == _p("name"))

        lap = insert(s.laps)
        fill = ("driver_id", *(name for name in LAP_FIELDS if name not in ("inferred", "carried")))
        lap_changes: dict[str, Any] = {name: func.coalesce(laps[name], lap.excluded[name]) for name in fill}
        lap_changes["inferred"] = and_(laps.inferred, lap.excluded.inferred)
        self.lap_upsert = lap.on_conflict_do_update(index_elements=["entry_id", "number"], set_=lap_changes)
        corrected = dict(lap_changes, time=lap.excluded.time)
        self.lap_correct = lap.on_conflict_do_update(index_elements=["entry_id", "number"], set_=corrected)
        self.laps_truncate = delete(s.laps).where(laps.entry_id == _p("entry_id"), laps.number > _p("count"))
        self.pits_uncount = update(s.pit_stops).where(
            stops.entry_id == _p("entry_id"), stops.inferred.is_(True), stops.in_lap > _p("count"),
        ).values(number=None)

        next_number = (select(func.coalesce(func.max(stops.number), 0) + 1)
                       .where(stops.entry_id == _p("entry_id")).scalar_subquery())
        pit_values = {name: _p(name)
                      for name in ("session_id", "entry_id", "in_at", "run_id", *PIT_IN_FIELDS)}
        self.pit_in = insert(s.pit_stops).values(origin="event", number=None, **pit_values) \
            .on_conflict_do_nothing()
        self.pit_in_counted = insert(s.pit_stops).values(origin="event", number=next_number, **pit_values) \
            .on_conflict_do_nothing()
        self.pit_seen_before = select(stops.id).where(
            stops.entry_id == _p("entry_id"), stops.in_lap == _p("in_lap"), stops.run_id != _p("run_id"),
        ).limit(1)
        self.pit_latest = select(stops.id, stops.in_at, stops.out_at).where(
            stops.entry_id == _p("entry_id"), stops.in_at.is_not(None), stops.in_at <= _p("at"),
        ).order_by(stops.in_at.desc()).limit(1)
        self.pit_close = update(s.pit_stops).where(stops.id == _p("id")).values(
            out_at=_p("out_at"), duration=_p("duration"), **{name: _p(name) for name in PIT_OUT_FIELDS})
        self.pit_counted = select(func.coalesce(func.max(stops.number), 0)).where(
            stops.entry_id == _p("entry_id"))
        self.pit_uncounted = select(stops.id).where(
            stops.entry_id == _p("entry_id"), stops.number.is_(None), stops.in_at.is_not(None),
        ).order_by(stops.in_at.desc()).limit(_p("limit"))
        self.pit_number = update(s.pit_stops).where(stops.id == _p("id")).values(number=_p("number"))
        self.pit_placeholder = insert(s.pit_stops).on_conflict_do_nothing()

        self.message_insert = insert(s.messages).on_conflict_do_nothing()
        self.frame_insert = insert(s.frames).on_conflict_do_nothing()


class Applier:
    """Applies :mod:`.records` operations on a connection (see the module docstring)."""

    def __init__(self, dialect: str, warn: Callable[[str], None] | None = None):
        self.sql = Statements(dialect)
        self._warn = warn or (lambda _message: None)
        self.runs: dict[str, int] = {}
        self.sessions: dict[SessionRef, tuple[int, tuple[str, str]]] = {}
        self.entries: dict[tuple[int, str], int] = {}
        self.drivers: dict[tuple[int, str], int] = {}
        self._undo: list[tuple[dict, Any, Any]] = []
        self._handlers: dict[type, Callable[[Connection, Any], None]] = {
            RunStart: self._run_start,
            RunEnd: self._run_end,
            SessionUpsert: self._session_upsert,
            SessionEnd: self._session_end,
            EntryUpsert: self._entry_upsert,
            DriverSeen: self._driver_seen,
            LapRecord: self._lap,
            LapsTruncate: self._laps_truncate,
            PitIn: self._pit_in,
            PitOut: self._pit_out,
            PitCount: self._pit_count,
            MessageRecord: self._message,
        }

    # ----- transactional caches --------------------------------------------------------------

    def _remember(self, cache: dict, key: Any, value: Any) -> None:
        self._undo.append((cache, key, cache.get(key, _MISSING)))
        cache[key] = value

    def mark(self) -> int:
        """A point the caches can be rolled back to."""
        return len(self._undo)

    def rollback(self, mark: int = 0) -> None:
        """Forget cache entries made after ``mark`` (their transaction was rolled back)."""
        while len(self._undo) > mark:
            cache, key, old = self._undo.pop()
            if old is _MISSING:
                cache.pop(key, None)
            else:
                cache[key] = old

    def commit(self) -> None:
        """The transaction committed: the cache entries are final."""
        self._undo.clear()

    # ----- entry points ----------------------------------------------------------------------

    def apply(self, conn: Connection, op: Any) -> None:
        """Apply one operation (any record except :class:`FrameRecord`)."""
        self._handlers[type(op)](conn, op)

    def frames(self, conn: Connection, records: list[FrameRecord]) -> None:
        """Insert raw frames (one multi-row statement; repeats are ignored)."""
        if not records:
            return
        run_ids: dict[str, int] = {}
        rows = []
        for record in records:
            run_id = run_ids.get(record.run)
            if run_id is None:
                run_id = run_ids[record.run] = self._run_id(conn, record.run)
            rows.append({"run_id": run_id, "seq": record.seq, "received_at": record.received_at,
                         "t": record.t, "data": record.data, "escaped": record.escaped})
        conn.execute(self.sql.frame_insert, rows)

    # ----- look-ups ----------------------------------------------------------------------------

    def _run_id(self, conn: Connection, uid: str) -> int:
        run_id = self.runs.get(uid)
        if run_id is None:
            run_id = conn.execute(self.sql.run_id, {"p_uid": uid}).scalar()
            if run_id is None:
                raise MissingReference(f"run {uid}")
            self._remember(self.runs, uid, run_id)
        return run_id

    def _session_id(self, ref: SessionRef) -> int:
        cached = self.sessions.get(ref)
        if cached is None:
            raise MissingReference(f"session {ref.run}:{ref.generation}")
        return cached[0]

    def _entry_id(self, conn: Connection, ref: SessionRef, entry_key: str) -> tuple[int, int]:
        """``(session_id, entry_id)``; an entry not written yet is created bare."""
        session_id = self._session_id(ref)
        entry_id = self.entries.get((session_id, entry_key))
        if entry_id is None:
            conn.execute(self.sql.entry_bare, {"session_id": session_id, "entry_key": entry_key})
            entry_id = self._lookup_entry(conn, session_id, entry_key)
        return session_id, entry_id

    def _lookup_entry(self, conn: Connection, session_id: int, entry_key: str) -> int:
        entry_id = conn.execute(self.sql.entry_id, {"p_session_id": session_id,
                                                    "p_entry_key": entry_key}).scalar_one()
        self._remember(self.entries, (session_id, entry_key), entry_id)
        return entry_id

    def _driver_id(self, conn: Connection, entry_id: int, name: str, at: float | None) -> int:
        driver_id = self.drivers.get((entry_id, name))
        if driver_id is None:
            conn.execute(self.sql.driver_insert, {"entry_id": entry_id, "name": name, "first_seen_at": at})
            driver_id = conn.execute(self.sql.driver_id,
                                     {"p_entry_id": entry_id, "p_name": name}).scalar_one()
            self._remember(self.drivers, (entry_id, name), driver_id)
        return driver_id

    # ----- runs and sessions -------------------------------------------------------------------

    def _run_start(self, conn: Connection, op: RunStart) -> None:
        conn.execute(self.sql.run_insert, {
            "uid": op.run, "source": op.source, "upstream": op.upstream, "service_uuid": op.service_uuid,
            "version": op.version, "started_at": op.started_at})
        self._run_id(conn, op.run)

    def _run_end(self, conn: Connection, op: RunEnd) -> None:
        conn.execute(self.sql.run_end, {"p_uid": op.run, "p_ended_at": op.ended_at})

    def _find_session(self, conn: Connection, op: SessionUpsert) -> int | None:
        return conn.execute(self.sql.session_find, {
            "p_source": op.source, "p_host": op.host, "p_server": op.server, "p_session_key": op.key,
        }).scalar()

    def _session_upsert(self, conn: Connection, op: SessionUpsert) -> None:
        fields = {name: op.fields.get(name) for name in SESSION_FIELDS}
        started_at = op.fields.get("started_at")
        identity = (op.server, op.key)
        cached = self.sessions.get(op.ref)
        if cached is None:
            session_id = self._find_session(conn, op)
            if session_id is None:
                conn.execute(self.sql.session_insert, {
                    "source": op.source, "host": op.host, "server": op.server, "session_key": op.key,
                    "started_at": started_at, **fields})
                session_id = self._find_session(conn, op)
                assert session_id is not None
            else:
                self._update_session(conn, session_id, started_at, fields)
            conn.execute(self.sql.segment_insert, {
                "session_id": session_id, "run_id": self._run_id(conn, op.ref.run),
                "first_seq": op.first_seq})
        else:
            session_id, old_identity = cached
            if old_identity != identity:
                other = self._find_session(conn, op)
                if other is None:
                    conn.execute(self.sql.session_rekey, {"p_id": session_id, "p_server": op.server,
                                                          "p_session_key": op.key})
                elif other != session_id:
                    self._warn(f"session {op.server!r} {op.key!r} is already stored (row {other}); "
                               f"this run keeps writing to row {session_id}")
            self._update_session(conn, session_id, started_at, fields)
        self._remember(self.sessions, op.ref, (session_id, identity))

    def _update_session(self, conn: Connection, session_id: int, started_at: float | None,
                        fields: dict[str, Any]) -> None:
        params = {f"p_{name}": value for name, value in fields.items()}
        conn.execute(self.sql.session_update, {"p_id": session_id, "p_started_at": started_at, **params})

    def _session_end(self, conn: Connection, op: SessionEnd) -> None:
        conn.execute(self.sql.session_end, {"p_id": self._session_id(op.ref), "p_ended_at": op.ended_at,
                                            "p_reason": op.reason})

    # ----- entries, drivers, laps --------------------------------------------------------------

    def _entry_upsert(self, conn: Connection, op: EntryUpsert) -> None:
        session_id = self._session_id(op.ref)
        params = {name: op.fields.get(name) for name in ENTRY_FIELDS}
        conn.execute(self.sql.entry_upsert, {"session_id": session_id, "entry_key": op.entry_key,
                                             "first_seen_at": op.fields.get("first_seen_at"), **params})
        if (session_id, op.entry_key) not in self.entries:
            self._lookup_entry(conn, session_id, op.entry_key)

    def _driver_seen(self, conn: Connection, op: DriverSeen) -> None:
        _session_id, entry_id = self._entry_id(conn, op.ref, op.entry_key)
        self._driver_id(conn, entry_id, op.name, op.at)

    def _lap(self, conn: Connection, op: LapRecord) -> None:
        session_id, entry_id = self._entry_id(conn, op.ref, op.entry_key)
        fields = op.fields
        driver_id = self._driver_id(conn, entry_id, op.driver, fields.get("received_at")) \
            if op.driver else None
        params = {name: fields.get(name) for name in LAP_FIELDS}
        params["inferred"] = bool(params["inferred"])
        params["carried"] = bool(params["carried"])
        statement = self.sql.lap_correct if op.correction else self.sql.lap_upsert
        conn.execute(statement, {"session_id": session_id, "entry_id": entry_id, "number": op.number,
                                 "driver_id": driver_id, **params})

    def _laps_truncate(self, conn: Connection, op: LapsTruncate) -> None:
        _session_id, entry_id = self._entry_id(conn, op.ref, op.entry_key)
        conn.execute(self.sql.laps_truncate, {"p_entry_id": entry_id, "p_count": op.count})
        conn.execute(self.sql.pits_uncount, {"p_entry_id": entry_id, "p_count": op.count})

    # ----- pit stops ---------------------------------------------------------------------------

    def _pit_in(self, conn: Connection, op: PitIn) -> None:
        session_id, entry_id = self._entry_id(conn, op.ref, op.entry_key)
        run_id = self._run_id(conn, op.ref.run)
        in_lap = op.fields.get("in_lap")
        if in_lap is not None and conn.execute(self.sql.pit_seen_before, {
                "p_entry_id": entry_id, "p_in_lap": in_lap, "p_run_id": run_id}).first() is not None:
            return  # another run recorded this stop: the same history seen again
        params = {f"p_{name}": op.fields.get(name) for name in PIT_IN_FIELDS}
        params["p_run_id"] = run_id
        statement = self.sql.pit_in_counted if op.counted else self.sql.pit_in
        conn.execute(statement, {"p_session_id": session_id, "p_entry_id": entry_id, "p_in_at": op.at,
                                 **params})

    def _pit_out(self, conn: Connection, op: PitOut) -> None:
        _session_id, entry_id = self._entry_id(conn, op.ref, op.entry_key)
        latest = conn.execute(self.sql.pit_latest, {"p_entry_id": entry_id, "p_at": op.at}).first()
        if latest is None or latest.out_at is not None:
            return  # leaving the garage without having come in: not a stop
        params = {f"p_{name}": op.fields.get(name) for name in PIT_OUT_FIELDS}
        conn.execute(self.sql.pit_close, {"p_id": latest.id, "p_out_at": op.at,
                                          "p_duration": op.at - latest.in_at, **params})

    def _pit_count(self, conn: Connection, op: PitCount) -> None:
        session_id, entry_id = self._entry_id(conn, op.ref, op.entry_key)
        counted = conn.execute(self.sql.pit_counted, {"p_entry_id": entry_id}).scalar_one()
        missing = op.count - counted
        if missing <= 0:
            return
        candidates = conn.execute(self.sql.pit_uncounted, {"p_entry_id": entry_id,
                                                           "p_limit": missing}).scalars().all()
        number = counted
        for stop_id in reversed(candidates):  # the latest stops not counted yet, oldest first
            number += 1
            conn.execute(self.sql.pit_number, {"p_id": stop_id, "p_number": number})
        while number < op.count:  # stops only the counter knows about
            number += 1
            conn.execute(self.sql.pit_placeholder, {
                "session_id": session_id, "entry_id": entry_id, "number": number, "origin": "counter",
                "run_id": self._run_id(conn, op.ref.run), "extra": {"laps_when_counted": op.lap}})

    # ----- messages ----------------------------------------------------------------------------

    def _message(self, conn: Connection, op: MessageRecord) -> None:
        session_id = self._session_id(op.ref) if op.ref is not None else None
        conn.execute(self.sql.message_insert, {
            "run_id": self._run_id(conn, op.run), "seq": op.seq, "idx": op.idx, "session_id": session_id,
            "received_at": op.received_at, "kind": op.kind, "car_number": op.car_number, "text": op.text,
            "data": op.data or None, "dedup_key": op.dedup_key})
