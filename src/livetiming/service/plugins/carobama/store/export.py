"""``carobama-export``: read the store back — sessions, laps, stints, pit stops, captures.

::

    carobama-export [--database URL] sessions            [--format csv|json] [-o FILE]
    carobama-export [--database URL] laps     SESSION    [--format csv|json] [-o FILE]
    carobama-export [--database URL] stints   SESSION    [--format csv|json] [-o FILE]
    carobama-export [--database URL] pits     SESSION    [--format csv|json] [-o FILE]
    carobama-export [--database URL] capture  SESSION    [-o FILE]

``SESSION`` is a session id from ``sessions`` or ``latest``. ``--database`` defaults like the
service's (``CAROBAMA_DATABASE``, else ``carobama.sqlite`` in ``$LIVETIMING_DATA_DIR``); the
exporter never creates or migrates a database. Output goes to stdout unless ``-o`` is given.

Absolute times are ISO 8601 UTC strings (``…Z``); lap, sector and stop times are seconds.

Stints: an entry's laps split at its pit stops. A stop that came in during lap *n* ends the stint
with lap *n* (the in-lap); the next stint starts with the lap the car went out on (or *n* + 1).
Stops known only from the pit counter (no lap) do not split.

``capture`` writes the session's raw frames as a capture file (``shared/spec/README.md``) that
``carobama-replay`` plays: the frames of each run that recorded the session, from the frame that
started the session up to the next session of that run, with ``t`` rebuilt from the run's own
connection clock and the wall-clock gap between two runs (a service restart) kept.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from livetiming.service.plugins.carobama.capture import CAPTURE_VERSION, _encode_line
from livetiming.service.plugins.carobama.store import schema as s
from livetiming.service.plugins.carobama.store.db import StoreURLError, display_url, make_engine
from livetiming.service.plugins.carobama.store.recorder import unescape_frame

__all__ = [
    "capture_lines",
    "laps",
    "main",
    "pit_stops",
    "resolve_session",
    "sessions",
    "stints",
    "write_capture",
]


class ExportError(Exception):
    """A one-line reason the export cannot be made (exit status 1)."""


def iso(value: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds (None stays None)."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----- queries ----------------------------------------------------------------------------------


def sessions(conn: Connection) -> list[dict[str, Any]]:
    """Every stored session, oldest first, with its numbers of entries, laps and pit stops."""
    c = s.sessions.c
    entry_count = (select(func.count()).select_from(s.entries)
                   .where(s.entries.c.session_id == c.id).scalar_subquery())
    lap_count = select(func.count()).select_from(s.laps).where(s.laps.c.session_id == c.id).scalar_subquery()
    stop_count = (select(func.count()).select_from(s.pit_stops)
                  .where(s.pit_stops.c.session_id == c.id).scalar_subquery())
    rows = conn.execute(select(
        c.id, c.source, c.host, c.server, c.session_key, c.name, c.type, c.track, c.layout, c.heat_start,
        c.started_at, c.ended_at, c.end_reason, c.last_frame_at,
        entry_count.label("entries"), lap_count.label("laps"), stop_count.label("pit_stops"),
    ).order_by(func.coalesce(c.started_at, c.heat_start), c.id)).mappings()
    result = []
    for row in rows:
        item = dict(row)
        for name in ("heat_start", "started_at", "ended_at", "last_frame_at"):
            item[name] = iso(item[name])
        result.append(item)
    return result


def resolve_session(conn: Connection, selector: str) -> int:
    """The id of session ``selector`` (an id or ``latest``); raises :class:`ExportError`."""
    c = s.sessions.c
    if selector == "latest":
        found = conn.execute(select(c.id).order_by(
            func.coalesce(c.started_at, c.heat_start).desc(), c.id.desc()).limit(1)).scalar()
        if found is None:
            raise ExportError("the database holds no session yet")
        return found
    try:
        session_id = int(selector)
    except ValueError:
        raise ExportError(f"SESSION must be a session id or 'latest', not {selector!r}") from None
    if conn.execute(select(c.id).where(c.id == session_id)).scalar() is None:
        raise ExportError(f"no session {session_id} (see: carobama-export sessions)")
    return session_id


def laps(conn: Connection, session_id: int) -> list[dict[str, Any]]:
    """Every lap of a session, by entry (car number) then lap number."""
    e, lap, d = s.entries.c, s.laps.c, s.drivers.c
    rows = conn.execute(
        select(e.number, e.entry_key, e.car_class, e.team, e.car, d.name.label("driver"),
               lap.number.label("lap"), lap.time, lap.position, lap.flag, lap.sectors, lap.tyre,
               lap.timestamp, lap.received_at, lap.inferred, lap.personal_best, lap.session_best,
               lap.cuts, lap.top_speed, lap.carried)
        .select_from(s.laps.join(s.entries, e.id == lap.entry_id).outerjoin(s.drivers, d.id == lap.driver_id))
        .where(lap.session_id == session_id)
        .order_by(e.number, e.entry_key, lap.number)
    ).mappings()
    result = []
    for row in rows:
        item = dict(row)
        item["timestamp"] = iso(item["timestamp"])
        item["received_at"] = iso(item["received_at"])
        result.append(item)
    return result


def pit_stops(conn: Connection, session_id: int) -> list[dict[str, Any]]:
    """Every pit stop of a session, by entry then time (stops only counted, without time, last)."""
    e, p = s.entries.c, s.pit_stops.c
    rows = conn.execute(
        select(e.number, e.entry_key, p.number.label("stop"), p.in_lap, p.out_lap, p.in_at, p.out_at,
               p.duration, p.driver_in, p.driver_out, p.tyre_in, p.tyre_out, p.inferred, p.origin)
        .select_from(s.pit_stops.join(s.entries, e.id == p.entry_id))
        .where(p.session_id == session_id)
        .order_by(e.number, e.entry_key, p.in_at.is_(None), p.in_at, p.number)
    ).mappings()
    result = []
    for row in rows:
        item = dict(row)
        item["counted"] = item["stop"] is not None
        item["in_at"] = iso(item["in_at"])
        item["out_at"] = iso(item["out_at"])
        result.append(item)
    return result


def stints(conn: Connection, session_id: int) -> list[dict[str, Any]]:
    """Each entry's laps split at its pit stops (rule in the module docstring)."""
    by_entry: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for lap in laps(conn, session_id):
        by_entry.setdefault((lap["number"], lap["entry_key"]), []).append(lap)
    starts: dict[str, list[int]] = {}
    for stop in pit_stops(conn, session_id):
        if stop["in_lap"] is not None:
            first = max(stop["in_lap"] + 1, stop["out_lap"] or 0)
            starts.setdefault(stop["entry_key"], []).append(first)
    result = []
    for (number, entry_key), entry_laps in by_entry.items():
        boundaries = sorted(set(starts.get(entry_key, [])))
        current: list[dict[str, Any]] = []
        stint = 1
        index = 0
        for lap in entry_laps:
            while index < len(boundaries) and lap["lap"] >= boundaries[index]:
                index += 1
                if current:
                    result.append(_stint(number, entry_key, stint, current, "pit"))
                    stint += 1
                    current = []
            current.append(lap)
        if current:
            ended_by = "pit" if index < len(boundaries) else "end"
            result.append(_stint(number, entry_key, stint, current, ended_by))
    return result


def _stint(number: str, entry_key: str, stint: int, stint_laps: list[dict[str, Any]], ended_by: str) -> dict:
    times = [lap["time"] for lap in stint_laps if lap["time"] is not None]
    drivers: list[str] = []
    for lap in stint_laps:
        if lap["driver"] and lap["driver"] not in drivers:
            drivers.append(lap["driver"])
    return {
        "number": number, "entry_key": entry_key, "stint": stint,
        "first_lap": stint_laps[0]["lap"], "last_lap": stint_laps[-1]["lap"], "laps": len(stint_laps),
        "timed_laps": len(times), "drivers": "; ".join(drivers),
        "best": min(times) if times else None,
        "average": round(sum(times) / len(times), 3) if times else None,
        "total_time": round(sum(times), 3) if times else None,
        "ended_by": ended_by,
    }


def capture_lines(conn: Connection, session_id: int) -> Iterator[bytes]:
    """The session's raw frames as capture-file lines (header first); see the module docstring."""
    c, seg, runs, f = s.sessions.c, s.session_segments.c, s.runs.c, s.frames.c
    session = conn.execute(select(c.source, c.started_at).where(c.id == session_id)).one()
    segments = conn.execute(
        select(seg.run_id, seg.first_seq, runs.upstream, runs.started_at)
        .select_from(s.session_segments.join(s.runs, runs.id == seg.run_id))
        .where(seg.session_id == session_id).order_by(runs.started_at, seg.run_id, seg.first_seq)
    ).all()
    upstream = next((row.upstream for row in segments if row.upstream), "")
    header_written = False
    out_t = 0.0
    previous: tuple[float, float] | None = None  # (t written, received_at) of the last frame
    for segment in segments:
        end = conn.execute(select(func.min(seg.first_seq)).where(
            seg.run_id == segment.run_id, seg.first_seq > segment.first_seq)).scalar()
        query = select(f.received_at, f.t, f.data, f.escaped).where(
            f.run_id == segment.run_id, f.seq >= segment.first_seq)
        if end is not None:
            query = query.where(f.seq < end)
        base: float | None = None
        offset = 0.0
        for received_at, t, data, escaped in conn.execution_options(yield_per=1000).execute(
                query.order_by(f.seq)):
            if not header_written:
                started = received_at if received_at is not None else session.started_at
                yield _encode_line({"capture": CAPTURE_VERSION, "source": session.source,
                                    "url": upstream or "", "started": iso(started)})
                header_written = True
            if base is None:
                base = t
                offset = 0.0 if previous is None else previous[0] + max(0.0, received_at - previous[1])
            out_t = max(out_t, offset + max(0.0, t - base))
            previous = (out_t, received_at)
            yield _encode_line({"t": round(out_t, 6), "data": unescape_frame(data, escaped)})
    if not header_written:
        yield _encode_line({"capture": CAPTURE_VERSION, "source": session.source, "url": upstream or "",
                            "started": iso(session.started_at)})


def write_capture(conn: Connection, session_id: int, out: IO[bytes]) -> int:
    """Write the session's capture to a binary stream; returns the number of frames."""
    count = -1
    for line in capture_lines(conn, session_id):
        out.write(line)
        count += 1
    return count


# ----- output -----------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def write_rows(rows: Sequence[dict[str, Any]], fmt: str, out: IO[str], columns: Iterable[str] = ()) -> None:
    """Rows as CSV (header line, RFC 4180 quoting) or as a JSON array of objects."""
    if fmt == "json":
        json.dump(list(rows), out, ensure_ascii=False, indent=1)
        out.write("\n")
        return
    names = list(rows[0].keys()) if rows else list(columns)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in names])


_COLUMNS = {
    "sessions": ("id", "source", "host", "server", "session_key", "name", "type", "track", "layout",
                 "heat_start", "started_at", "ended_at", "end_reason", "last_frame_at", "entries", "laps",
                 "pit_stops"),
    "laps": ("number", "entry_key", "car_class", "team", "car", "driver", "lap", "time", "position", "flag",
             "sectors", "tyre", "timestamp", "received_at", "inferred", "personal_best", "session_best",
             "cuts", "top_speed", "carried"),
    "stints": ("number", "entry_key", "stint", "first_lap", "last_lap", "laps", "timed_laps", "drivers",
               "best", "average", "total_time", "ended_by"),
    "pits": ("number", "entry_key", "stop", "in_lap", "out_lap", "in_at", "out_at", "duration", "driver_in",
             "driver_out", "tyre_in", "tyre_out", "inferred", "origin", "counted"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carobama-export",
        description="Export what the carobama store recorded: sessions, laps, stints, pit stops, "
                    "or a session's raw frames as a capture file for carobama-replay.")
    parser.add_argument("--database", metavar="URL", default=None,
                        help="the store (default: $CAROBAMA_DATABASE, else carobama.sqlite in "
                             "$LIVETIMING_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub: argparse.ArgumentParser, with_format: bool = True) -> None:
        if with_format:
            sub.add_argument("--format", choices=("csv", "json"), default="csv", help="default csv")
        sub.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    common(commands.add_parser("sessions", help="list the stored sessions"))
    for name, text in (("laps", "every lap of a session"), ("stints", "the stints of a session"),
                       ("pits", "the pit stops of a session")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("session", metavar="SESSION", help="session id or 'latest'")
        common(sub)
    sub = commands.add_parser("capture", help="a session's raw frames as a capture file")
    sub.add_argument("session", metavar="SESSION", help="session id or 'latest'")
    common(sub, with_format=False)
    return parser


def _database(value: str | None) -> str:
    from livetiming.service.plugins.carobama.options import default_database_url

    return value or os.environ.get("CAROBAMA_DATABASE") or default_database_url(os.environ)


def _open(url: str) -> Engine:
    engine = make_engine(url, create_folder=False)
    if engine.dialect.name == "sqlite":
        path = engine.url.database or ""
        if not os.path.exists(path):
            raise ExportError(f"no store at {path} (give --database or set CAROBAMA_DATABASE)")
    return engine


def run(args: argparse.Namespace, stdout: IO[str], stdout_bytes: IO[bytes]) -> int:
    """Run one export; returns the exit status."""
    url = _database(args.database)
    if url.strip().lower() == "none":
        raise ExportError("--database none: there is no store to export from")
    engine = _open(url)
    try:
        with engine.connect() as conn:
            if args.command == "capture":
                session_id = resolve_session(conn, args.session)
                if args.output:
                    with open(args.output, "wb") as out:
                        frames = write_capture(conn, session_id, out)
                    print(f"carobama-export: {frames} frames of session {session_id} written to "
                          f"{args.output}", file=sys.stderr)
                else:
                    write_capture(conn, session_id, stdout_bytes)
                    stdout_bytes.flush()
                return 0
            if args.command == "sessions":
                rows = sessions(conn)
            else:
                session_id = resolve_session(conn, args.session)
                rows = {"laps": laps, "stints": stints, "pits": pit_stops}[args.command](conn, session_id)
    except SQLAlchemyError as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        raise ExportError(f"cannot read {display_url(url)}: {reason}") from None
    finally:
        engine.dispose()
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            write_rows(rows, args.format, out, _COLUMNS[args.command])
    else:
        text = io.StringIO()
        write_rows(rows, args.format, text, _COLUMNS[args.command])
        stdout.write(text.getvalue())
        stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``carobama-export``; returns the exit status (2: bad options, 1: failure)."""
    args = _parser().parse_args(argv)
    try:
        return run(args, sys.stdout, sys.stdout.buffer)
    except (ExportError, StoreURLError) as error:
        print(f"carobama-export: {error}", file=sys.stderr)
        return 2 if isinstance(error, StoreURLError) else 1
    except OSError as error:
        print(f"carobama-export: {error.strerror or error}: {getattr(error, 'filename', '')}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
