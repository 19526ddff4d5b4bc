"""The store's tables (SQLAlchemy Core), the reference the migrations must produce.

The schema is *created and upgraded only by the Alembic migrations* in ``migrations/``; this
module describes the result for the writer and the exporter (and a test checks that the two
agree). Times are Unix seconds (double precision) like everywhere in carobama; lap and sector
times and durations are seconds.

::

    runs ─┬─< frames            every raw upstream frame of one service run, in receive order
          │                     (run_id, seq) is the primary key: writes are idempotent
          └─< session_segments >─ sessions   which stretch of a run's frames belongs to a session
    sessions ─< entries ─< drivers
                   │  └──< laps  (unique per entry and lap number: no duplicates after a restart)
                   └────< pit_stops
    sessions ─< messages (also linked to the frame that produced them)

Identity rules:

* a **session** is unique on ``(source, host, server, session_key)``: the upstream's host name,
  the feed's name of the server (or venue) and the upstream's own session identity (Emperor: the
  session start time; BMI: the heat start), so a restarted service finds the session it was
  recording;
* an **entry** (car or kart) is unique on ``(session_id, entry_key)`` (``Entry.key``);
* a **lap** is unique on ``(entry_id, number)``;
* a **pit stop** is unique on ``(entry_id, in_at)`` when its entry was seen and on
  ``(entry_id, number)`` once it counts in the published pit counter; a stop another run already
  recorded on the same lap (the same history seen again, e.g. a capture replayed into the same
  store) is not written twice.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "VERSION_TABLE",
    "drivers",
    "entries",
    "frames",
    "laps",
    "messages",
    "metadata",
    "pit_stops",
    "runs",
    "session_segments",
    "sessions",
]

#: Alembic's version table (named so that it never clashes with another application's).
VERSION_TABLE = "carobama_alembic_version"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

#: An auto-incrementing 64-bit key (SQLite only auto-increments INTEGER PRIMARY KEY).
Key = BigInteger().with_variant(Integer(), "sqlite")

runs = Table(
    "runs", metadata,
    Column("id", Key, primary_key=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("source", String(16), nullable=False),
    Column("upstream", Text, comment="upstream URL without secrets"),
    Column("service_uuid", String(64)),
    Column("version", String(32)),
    Column("started_at", Double, nullable=False),
    Column("ended_at", Double),
    comment="One service process: the frames it received and the sessions it saw.",
)

sessions = Table(
    "sessions", metadata,
    Column("id", Key, primary_key=True),
    Column("source", String(16), nullable=False, comment="emperor or bmi"),
    Column("host", Text, nullable=False, comment="upstream host name"),
    Column("server", Text, nullable=False, comment="upstream server name or venue"),
    Column("session_key", Text, nullable=False, comment="the upstream's identity of the session"),
    Column("name", Text),
    Column("type", String(16), comment="practice, qualifying, race or other"),
    Column("track", Text),
    Column("layout", Text),
    Column("track_id", Text),
    Column("layout_id", Text),
    Column("heat_start", Double, comment="start of the session on the upstream's clock"),
    Column("started_at", Double, comment="first frame of the session received"),
    Column("ended_at", Double, comment="results final, or replaced by the next session"),
    Column("end_reason", Text),
    Column("last_frame_at", Double),
    Column("duration", Double, comment="scheduled length (timed sessions)"),
    Column("laps_total", Integer, comment="scheduled laps (lap-limited races)"),
    Column("mode", Text),
    Column("extra", JSON(none_as_null=True)),
    UniqueConstraint("source", "host", "server", "session_key"),
)

session_segments = Table(
    "session_segments", metadata,
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("first_seq", BigInteger, primary_key=True,
           comment="first frame of the session in that run; it lasts until the run's next segment"),
    Index("ix_session_segments_run", "run_id", "first_seq"),
)

entries = Table(
    "entries", metadata,
    Column("id", Key, primary_key=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("entry_key", Text, nullable=False, comment="the feed's stable key (Entry.key)"),
    Column("number", Text, comment="car or kart number"),
    Column("car_class", Text),
    Column("team", Text),
    Column("car", Text),
    Column("car_model", Text),
    Column("first_seen_at", Double),
    Column("position", Integer, comment="classification as last published"),
    Column("best_lap", Double, comment="best lap as last published (also when its lap was not seen)"),
    Column("pit_count", Integer, comment="pit counter as last published"),
    Column("state", String(8), comment="RUN, PIT, OUT, FIN, N/S or RET as last published"),
    UniqueConstraint("session_id", "entry_key"),
)

drivers = Table(
    "drivers", metadata,
    Column("id", Key, primary_key=True),
    Column("entry_id", ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("first_seen_at", Double),
    UniqueConstraint("entry_id", "name"),
)

laps = Table(
    "laps", metadata,
    Column("id", Key, primary_key=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("entry_id", ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("driver_id", ForeignKey("drivers.id", ondelete="SET NULL")),
    Column("time", Double, comment="lap time in seconds; NULL when not seen"),
    Column("position", Integer, comment="classification right after the lap"),
    Column("flag", String(16), comment="session flag when the lap was completed"),
    Column("sectors", JSON(none_as_null=True)),
    Column("tyre", Text),
    Column("timestamp", Double, comment="line crossing on the upstream's clock"),
    Column("received_at", Double, comment="when the frame that completed it arrived"),
    Column("inferred", Boolean, nullable=False, default=False),
    Column("personal_best", Boolean),
    Column("session_best", Boolean),
    Column("cuts", Integer),
    Column("top_speed", Double),
    Column("carried", Boolean, nullable=False, default=False,
           comment="kept from the previous session (a looped practice)"),
    UniqueConstraint("entry_id", "number"),
    Index("ix_laps_session", "session_id"),
)

pit_stops = Table(
    "pit_stops", metadata,
    Column("id", Key, primary_key=True),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("entry_id", ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, comment="1, 2, … as counted by the published pit counter; NULL if not counted"),
    Column("in_lap", Integer, comment="the lap during which the car came in"),
    Column("out_lap", Integer, comment="the lap on which it went out"),
    Column("in_at", Double),
    Column("out_at", Double),
    Column("duration", Double, comment="out_at - in_at"),
    Column("driver_in", Text),
    Column("driver_out", Text),
    Column("tyre_in", Text),
    Column("tyre_out", Text),
    Column("inferred", Boolean, comment="True: deduced by the feed; False: reported; NULL: not said"),
    Column("origin", String(16), nullable=False, comment="'event' (seen) or 'counter' (only counted)"),
    Column("run_id", ForeignKey("runs.id", ondelete="SET NULL"), comment="the run that saw it"),
    Column("extra", JSON(none_as_null=True)),
    UniqueConstraint("entry_id", "in_at"),
    UniqueConstraint("entry_id", "number"),
    Index("ix_pit_stops_session", "session_id"),
)

messages = Table(
    "messages", metadata,
    Column("id", Key, primary_key=True),
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False, comment="the frame that produced it"),
    Column("idx", Integer, nullable=False, comment="position among that frame's events"),
    Column("session_id", ForeignKey("sessions.id", ondelete="CASCADE")),
    Column("received_at", Double, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("car_number", Text),
    Column("text", Text),
    Column("data", JSON(none_as_null=True)),
    Column("dedup_key", Text, comment="same upstream message seen again (e.g. a chat replayed)"),
    UniqueConstraint("run_id", "seq", "idx"),
    UniqueConstraint("session_id", "dedup_key"),
)

frames = Table(
    "frames", metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, comment="0, 1, 2 … in receive order within the run"),
    Column("received_at", Double, nullable=False, comment="wall clock, Unix seconds"),
    Column("t", Double, nullable=False, comment="seconds since the run's first upstream connection"),
    Column("data", Text, nullable=False, comment="the frame text exactly as received"),
    Column("escaped", Boolean, nullable=False, default=False,
           comment="data holds json.dumps(text): the text had NUL or lone surrogates"),
)
