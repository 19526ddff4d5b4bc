"""Initial schema: runs, sessions, segments, entries, drivers, laps, pit stops, messages, frames.

Revision ID: 0001
Revises:
Create Date: 2024-06-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: 64-bit auto-incrementing keys (SQLite only auto-increments INTEGER PRIMARY KEY).
KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "runs",
        sa.Column("id", KEY, primary_key=True),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("upstream", sa.Text, comment="upstream URL without secrets"),
        sa.Column("service_uuid", sa.String(64)),
        sa.Column("version", sa.String(32)),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("ended_at", sa.Double),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("uid", name="uq_runs_uid"),
        comment="One service process: the frames it received and the sessions it saw.",
    )
    op.create_table(
        "sessions",
        sa.Column("id", KEY, primary_key=True),
        sa.Column("source", sa.String(16), nullable=False, comment="emperor or bmi"),
        sa.Column("host", sa.Text, nullable=False, comment="upstream host name"),
        sa.Column("server", sa.Text, nullable=False, comment="upstream server name or venue"),
        sa.Column("session_key", sa.Text, nullable=False, comment="the upstream's identity of the session"),
        sa.Column("name", sa.Text),
        sa.Column("type", sa.String(16), comment="practice, qualifying, race or other"),
        sa.Column("track", sa.Text),
        sa.Column("layout", sa.Text),
        sa.Column("track_id", sa.Text),
        sa.Column("layout_id", sa.Text),
        sa.Column("heat_start", sa.Double, comment="start of the session on the upstream's clock"),
        sa.Column("started_at", sa.Double, comment="first frame of the session received"),
        sa.Column("ended_at", sa.Double, comment="results final, or replaced by the next session"),
        sa.Column("end_reason", sa.Text),
        sa.Column("last_frame_at", sa.Double),
        sa.Column("duration", sa.Double, comment="scheduled length (timed sessions)"),
        sa.Column("laps_total", sa.Integer, comment="scheduled laps (lap-limited races)"),
        sa.Column("mode", sa.Text),
        sa.Column("extra", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("source", "host", "server", "session_key",
                            name="uq_sessions_source_host_server_session_key"),
    )
    op.create_table(
        "session_segments",
        sa.Column("session_id", KEY, nullable=False),
        sa.Column("run_id", KEY, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False,
                  comment="first frame of the session in that run; it lasts until the run's next segment"),
        sa.PrimaryKeyConstraint("session_id", "run_id", "first_seq", name="pk_session_segments"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name="fk_session_segments_session_id_sessions"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE",
                                name="fk_session_segments_run_id_runs"),
    )
    op.create_index("ix_session_segments_run", "session_segments", ["run_id", "first_seq"])
    op.create_table(
        "entries",
        sa.Column("id", KEY, primary_key=True),
        sa.Column("session_id", KEY, nullable=False),
        sa.Column("entry_key", sa.Text, nullable=False, comment="the feed's stable key (Entry.key)"),
        sa.Column("number", sa.Text, comment="car or kart number"),
        sa.Column("car_class", sa.Text),
        sa.Column("team", sa.Text),
        sa.Column("car", sa.Text),
        sa.Column("car_model", sa.Text),
        sa.Column("first_seen_at", sa.Double),
        sa.Column("position", sa.Integer, comment="classification as last published"),
        sa.Column("best_lap", sa.Double,
                  comment="best lap as last published (also when its lap was not seen)"),
        sa.Column("pit_count", sa.Integer, comment="pit counter as last published"),
        sa.Column("state", sa.String(8), comment="RUN, PIT, OUT, FIN, N/S or RET as last published"),
        sa.PrimaryKeyConstraint("id", name="pk_entries"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name="fk_entries_session_id_sessions"),
        sa.UniqueConstraint("session_id", "entry_key", name="uq_entries_session_id_entry_key"),
    )
    op.create_table(
        "drivers",
        sa.Column("id", KEY, primary_key=True),
        sa.Column("entry_id", KEY, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("first_seen_at", sa.Double),
        sa.PrimaryKeyConstraint("id", name="pk_drivers"),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], ondelete="CASCADE",
                                name="fk_drivers_entry_id_entries"),
        sa.UniqueConstraint("entry_id", "name", name="uq_drivers_entry_id_name"),
    )
    op.create_table(
        "laps",
        sa.Column("id", KEY, primary_key=True),
        sa.Column("session_id", KEY, nullable=False),
        sa.Column("entry_id", KEY, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("driver_id", KEY),
        sa.Column("time", sa.Double, comment="lap time in seconds; NULL when not seen"),
        sa.Column("position", sa.Integer, comment="classification right after the lap"),
        sa.Column("flag", sa.String(16), comment="session flag when the lap was completed"),
        sa.Column("sectors", sa.JSON),
        sa.Column("tyre", sa.Text),
        sa.Column("timestamp", sa.Double, comment="line crossing on the upstream's clock"),
        sa.Column("received_at", sa.Double, comment="when the frame that completed it arrived"),
        sa.Column("inferred", sa.Boolean, nullable=False),
        sa.Column("personal_best", sa.Boolean),
        sa.Column("session_best", sa.Boolean),
        sa.Column("cuts", sa.Integer),
        sa.Column("top_speed", sa.Double),
        sa.Column("carried", sa.Boolean, nullable=False,
                  comment="kept from the previous session (a looped practice)"),
        sa.PrimaryKeyConstraint("id", name="pk_laps"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name="fk_laps_session_id_sessions"),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], ondelete="CASCADE",
                                name="fk_laps_entry_id_entries"),
        sa.ForeignKeyConstraint(["driver_id"], ["drivers.id"], ondelete="SET NULL",
                                name="fk_laps_driver_id_drivers"),
        sa.UniqueConstraint("entry_id", "number", name="uq_laps_entry_id_number"),
    )
    op.create_index("ix_laps_session", "laps", ["session_id"])
    op.create_table(
        "pit_stops",
        sa.Column("id", KEY, primary_key=True),
        sa.Column("session_id", KEY, nullable=False),
        sa.Column("entry_id", KEY, nullable=False),
        sa.Column("number", sa.Integer,
                  comment="1, 2, … as counted by the published pit counter; NULL if not counted"),
        sa.Column("in_lap", sa.Integer, comment="the lap during which the car came in"),
        sa.Column("out_lap", sa.Integer, comment="the lap on which it went out"),
        sa.Column("in_at", sa.Double),
        sa.Column("out_at", sa.Double),
        sa.Column("duration", sa.Double, comment="out_at - in_at"),
        sa.Column("driver_in", sa.Text),
        sa.Column("driver_out", sa.Text),
        sa.Column("tyre_in", sa.Text),
        sa.Column("tyre_out", sa.Text),
        sa.Column("inferred", sa.Boolean,
                  comment="True: deduced by the feed; False: reported; NULL: not said"),
        sa.Column("origin", sa.String(16), nullable=False,
                  comment="'event' (seen) or 'counter' (only counted)"),
        sa.Column("run_id", KEY, comment="the run that saw it"),
        sa.Column("extra", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_pit_stops"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name="fk_pit_stops_session_id_sessions"),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], ondelete="CASCADE",
                                name="fk_pit_stops_entry_id_entries"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="SET NULL",
                                name="fk_pit_stops_run_id_runs"),
        sa.UniqueConstraint("entry_id", "in_at", name="uq_pit_stops_entry_id_in_at"),
        sa.UniqueConstraint("entry_id", "number", name="uq_pit_stops_entry_id_number"),
    )
    op.create_index("ix_pit_stops_session", "pit_stops", ["session_id"])
    op.create_table(
        "messages",
        sa.Column("id", KEY, primary_key=True),
        sa.Column("run_id", KEY, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, comment="the frame that produced it"),
        sa.Column("idx", sa.Integer, nullable=False, comment="position among that frame's events"),
        sa.Column("session_id", KEY),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("car_number", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("data", sa.JSON),
        sa.Column("dedup_key", sa.Text,
                  comment="same upstream message seen again (e.g. a chat replayed)"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE",
                                name="fk_messages_run_id_runs"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name="fk_messages_session_id_sessions"),
        sa.UniqueConstraint("run_id", "seq", "idx", name="uq_messages_run_id_seq_idx"),
        sa.UniqueConstraint("session_id", "dedup_key", name="uq_messages_session_id_dedup_key"),
    )
    op.create_table(
        "frames",
        sa.Column("run_id", KEY, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False,
                  comment="0, 1, 2 … in receive order within the run"),
        sa.Column("received_at", sa.Double, nullable=False, comment="wall clock, Unix seconds"),
        sa.Column("t", sa.Double, nullable=False,
                  comment="seconds since the run's first upstream connection"),
        sa.Column("data", sa.Text, nullable=False, comment="the frame text exactly as received"),
        sa.Column("escaped", sa.Boolean, nullable=False,
                  comment="data holds json.dumps(text): the text had NUL or lone surrogates"),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_frames"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE",
                                name="fk_frames_run_id_runs"),
    )


def downgrade() -> None:
    """Drop every table."""
    for table in ("frames", "messages", "pit_stops", "laps", "drivers", "entries", "session_segments",
                  "sessions", "runs"):
        op.drop_table(table)
