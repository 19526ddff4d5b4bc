"""Store writer and schema against real databases: SQLite files and the shared PostgreSQL.

The writer runs without its thread here (``flush_now``), except where the thread itself is tested;
outages are simulated by an engine that refuses connections. Nothing sleeps.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import OperationalError

from livetiming.service.plugins.carobama.model import Entry, EventKind, FeedEvent, Lap, TimingModel
from livetiming.service.plugins.carobama.store import export
from livetiming.service.plugins.carobama.store import schema as s
from livetiming.service.plugins.carobama.store.db import current_revision, head_revision, make_engine, upgrade
from livetiming.service.plugins.carobama.store.recorder import Recorder
from livetiming.service.plugins.carobama.store.records import EntryUpsert, FrameRecord, LapRecord, SessionRef
from livetiming.service.plugins.carobama.store.writer import StoreWriter
from tests.support.stores import (
    BACKENDS,
    BMI_CAPTURES,
    EMPEROR_CAPTURES,
    T0,
    Player,
    compare_with_truth,
    database_url,
    frames_of,
    latest_session,
    store_capture,
    stored_cars,
)


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """An empty store on each backend."""
    yield from database_url(request.param, tmp_path)


TABLES = ("runs", "sessions", "session_segments", "entries", "drivers", "laps", "pit_stops", "messages",
          "frames")


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        result = {name: conn.execute(select(func.count()).select_from(s.metadata.tables[name])).scalar_one()
                  for name in TABLES}
    engine.dispose()
    return result


class Logs(list):
    """A writer ``log`` callable that keeps ``(level, text)``."""

    def __call__(self, level: str, text: str) -> None:
        self.append((level, text))

    def having(self, needle: str) -> list[tuple[str, str]]:
        return [entry for entry in self if needle in entry[1]]


class Flaky:
    """An engine whose database can be taken away (``down = True``): connecting raises the
    ``OperationalError`` a refused PostgreSQL connection gives."""

    def __init__(self, engine: Any):
        self._engine = engine
        self.down = False
        self.attempts = 0

    def begin(self) -> Any:
        self.attempts += 1
        if self.down:
            raise OperationalError("connect", {}, ConnectionRefusedError("connection refused"))
        return self._engine.begin()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


# ----- schema ----------------------------------------------------------------------------------


def test_the_migrations_create_exactly_the_tables_the_code_uses(store_url):
    engine = make_engine(store_url)
    assert current_revision(engine) is None
    upgrade(engine)
    upgrade(engine)  # nothing to do the second time
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": s.VERSION_TABLE})
        assert compare_metadata(context, s.metadata) == []
        names = set(inspect(conn).get_table_names())
    assert names == set(TABLES) | {s.VERSION_TABLE}
    engine.dispose()


def test_a_database_from_a_newer_version_disables_storage_and_says_why(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {s.VERSION_TABLE} SET version_num = '9999_future'"))
    engine.dispose()
    logs = Logs()
    writer = StoreWriter(make_engine(url), log=logs)
    player = Player(writer, "emperor", "run1")
    player.play(frames_of("edge-cases"))
    assert not writer.flush_now()
    [disabled] = logs.having("Store disabled")
    assert disabled[0] == "error" and "9999_future" in disabled[1]
    assert not logs.having("unavailable")


def test_sqlite_stores_are_in_wal_mode(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'deep' / 'folder' / 'store.sqlite'}")
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


# ----- what is stored --------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMPEROR_CAPTURES + BMI_CAPTURES)
def test_a_capture_is_stored_as_the_timing_showed_it(store_url, name):
    player = store_capture(store_url, name)
    engine = make_engine(store_url)
    with engine.connect() as conn:
        session_id = latest_session(conn)
        assert compare_with_truth(stored_cars(conn, session_id), name) == []
        session = conn.execute(select(s.sessions).where(s.sessions.c.id == session_id)).mappings().one()
        model = player.feed.model.session
        assert (session["name"], session["track"], session["server"]) == (model.name, model.track,
                                                                          model.server_name)
        assert conn.execute(select(func.count()).select_from(s.frames)).scalar_one() == len(frames_of(name))
        run = conn.execute(select(s.runs)).mappings().one()
        assert run["ended_at"] == T0 + 10_000 and run["source"] == ("bmi" if "bmi" in name else "emperor")
    engine.dispose()


def test_sessions_of_a_capture_with_session_changes_each_get_their_row(store_url):
    store_capture(store_url, "session-change-v1")
    engine = make_engine(store_url)
    with engine.connect() as conn:
        rows = conn.execute(select(s.sessions.c.name, s.sessions.c.end_reason)
                            .order_by(s.sessions.c.id)).all()
        orphans = conn.execute(select(s.messages.c.kind).where(s.messages.c.session_id.is_(None))).scalars()
        assert [tuple(row) for row in rows] == [("Qualify", "replaced"), ("Race", "replaced"),
                                                ("Practice", None)]
        assert "server_restart" in list(orphans)
    engine.dispose()


def test_race_pit_stops_are_paired_and_counted_like_the_timing(store_url):
    store_capture(store_url, "race-v2x")
    engine = make_engine(store_url)
    with engine.connect() as conn:
        p, e = s.pit_stops.c, s.entries.c
        rows = conn.execute(select(e.number, p.number, p.in_lap, p.out_lap, p.duration, p.driver_in,
                                   p.driver_out, p.tyre_in, p.tyre_out, p.origin)
                            .join(s.entries, e.id == p.entry_id).order_by(p.in_at)).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("48", 1, 3, 4, 44.0, "Kenji Tanaka", "Lena Vogel-YORK", "S", "M", "event"),
        ("7", 1, 4, 5, 17.0, "Ines Duarte", "Ines Duarte", "S", "M", "event"),
        ("23", None, 7, None, None, "Oskar Lindqvist-YORK", None, "S", None, "event"),  # after the flag
    ]


def test_writing_the_same_operations_again_changes_nothing(store_url):
    ops: list[Any] = []
    frames: list[Any] = []
    player_writer = StoreWriter(make_engine(store_url))
    player = Player(player_writer, "emperor", "run1")
    player.recorder = Recorder(ops.append, frames.append, run="run1", source="emperor", host="127.0.0.1")
    player.recorder.start(T0)
    player.play(frames_of("race-v2x"))
    player.stop(T0 + 1000)
    for writer in (player_writer, StoreWriter(make_engine(store_url), migrate=False)):
        for _round in range(2):
            for op in ops:
                writer.submit(op)
            for frame in frames:
                writer.submit_frame(frame)
            assert writer.flush_now()
            if _round == 0 and writer is player_writer:
                first = counts(store_url)
            assert counts(store_url) == first
        writer.engine.dispose()
    assert first["laps"] == 18 and first["frames"] == len(frames)


def test_a_restarted_service_neither_loses_nor_duplicates_laps(store_url):
    frames = frames_of("race-v2x")
    half = len(frames) // 2
    writer = StoreWriter(make_engine(store_url))
    first = Player(writer, "emperor", "run1")
    first.play(frames[:half])
    assert writer.flush_now()  # no RunEnd: the first run was killed
    engine = make_engine(store_url)
    with engine.connect() as conn:
        before = stored_cars(conn, latest_session(conn))
    second = Player(writer, "emperor", "run2")  # a new process: new feed, new recorder, new run
    second.play(frames[half:])
    second.stop(T0 + 1000)
    assert writer.flush_now()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.sessions)).scalar_one() == 1
        session_id = latest_session(conn)
        after = stored_cars(conn, session_id)
        assert compare_with_truth(after, "race-v2x") == []
        for number, car in before.items():
            for lap, time in car["laps"].items():
                assert after[number]["laps"][lap] == time, "a committed lap changed"
        segments = conn.execute(select(s.session_segments.c.run_id)).scalars().all()
        assert len(segments) == 2
    engine.dispose()
    writer.engine.dispose()


@pytest.mark.parametrize("name", ["race-v2x", "bmi-endurance"])
def test_the_same_history_seen_by_two_runs_is_stored_once(store_url, name):
    store_capture(store_url, name, run="run1")
    store_capture(store_url, name, run="run2")  # e.g. a capture replayed into the same store
    engine = make_engine(store_url)
    with engine.connect() as conn:
        session_id = latest_session(conn)
        assert compare_with_truth(stored_cars(conn, session_id), name) == []
        stops = conn.execute(select(func.count()).select_from(s.pit_stops)
                             .where(s.pit_stops.c.session_id == session_id)).scalar_one()
        assert stops == {"race-v2x": 3, "bmi-endurance": 12}[name]
        assert conn.execute(select(func.count()).select_from(s.runs)).scalar_one() == 2
    engine.dispose()


def test_laps_seen_again_without_their_time_keep_the_stored_time(store_url):
    writer = StoreWriter(make_engine(store_url))
    model = TimingModel()
    model.session.generation, model.session.session_id, model.session.name = 1, "S1", "Race"
    car = Entry(key="car1", number="7", driver="Ann", drivers=["Ann"], position=1)
    car.laps = [Lap(number=1, time=60.0, driver="Ann"), Lap(number=2, time=59.5, driver="Ann")]
    model.entries = [car]
    for run in ("run1", "run2"):
        recorder = Recorder(writer.submit, writer.submit_frame, run=run, source="emperor", host="h")
        recorder.start(T0)
        recorder.record("{}", 0.0, T0, [FeedEvent(EventKind.SESSION_CHANGE, T0)], model)
        assert writer.flush_now()
        car.laps = [Lap(number=1, inferred=True), Lap(number=2, inferred=True), Lap(number=3, time=61.0)]
    engine = make_engine(store_url)
    with engine.connect() as conn:
        laps = conn.execute(select(s.laps.c.number, s.laps.c.time, s.laps.c.inferred)
                            .order_by(s.laps.c.number)).all()
    assert [tuple(row) for row in laps] == [(1, 60.0, False), (2, 59.5, False), (3, 61.0, False)]
    engine.dispose()
    writer.engine.dispose()


@pytest.mark.parametrize("name", ["O'Brien \"Bobby\"; DROP TABLE laps;--", "Zoë Ångström-Ø", "李小龍 🏁",
                                  "Robert'); DELETE FROM drivers WHERE ('1'='1", "back\\slash %s {x}"])
def test_driver_names_with_quotes_sql_and_non_ascii_are_stored_and_exported_unchanged(store_url, name):
    writer = StoreWriter(make_engine(store_url))
    recorder = Recorder(writer.submit, writer.submit_frame, run="run1", source="emperor", host="h")
    recorder.start(T0)
    model = TimingModel()
    model.session.generation, model.session.session_id = 1, "S1"
    car = Entry(key="car1", number="7", driver=name, drivers=[name], team=name, position=1)
    car.laps = [Lap(number=1, time=60.0, driver=name)]
    model.entries = [car]
    chat = FeedEvent(EventKind.CHAT, T0, text=f"{name}: hi", data={"sender": name, "message": name})
    recorder.record(f'{{"name": {name!r}}}', 0.0, T0, [chat], model)
    assert writer.flush_now()
    engine = make_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(select(s.drivers.c.name)).scalars().all() == [name]
        assert conn.execute(select(s.entries.c.team)).scalars().all() == [name]
        message = conn.execute(select(s.messages.c.text, s.messages.c.data)).one()
        assert message.text == f"{name}: hi" and message.data["sender"] == name
        assert conn.execute(select(s.frames.c.data)).scalar_one() == f'{{"name": {name!r}}}'
        exported = export.laps(conn, latest_session(conn))
    engine.dispose()
    writer.engine.dispose()
    assert [row["driver"] for row in exported] == [name]
    as_csv, as_json = io.StringIO(), io.StringIO()
    export.write_rows(exported, "csv", as_csv)
    export.write_rows(exported, "json", as_json)
    assert [row["driver"] for row in csv.DictReader(io.StringIO(as_csv.getvalue()))] == [name]
    assert [row["driver"] for row in json.loads(as_json.getvalue())] == [name]


def test_frames_with_nul_characters_are_kept_exactly(store_url):
    from livetiming.service.plugins.carobama.store.export import capture_lines

    writer = StoreWriter(make_engine(store_url))
    recorder = Recorder(writer.submit, writer.submit_frame, run="run1", source="emperor", host="h")
    recorder.start(T0)
    model = TimingModel()
    model.session.generation, model.session.session_id = 1, "S1"
    texts = ['{"EventType":50}', "bad\x00frame", "lone \ud800"]
    for index, frame in enumerate(texts):
        recorder.record(frame, float(index), T0 + index, [], model)
    assert writer.flush_now()
    engine = make_engine(store_url)
    with engine.connect() as conn:
        lines = [json.loads(line) for line in capture_lines(conn, latest_session(conn))]
    assert [line["data"] for line in lines[1:]] == texts
    engine.dispose()
    writer.engine.dispose()


# ----- outages, bounds, bad operations ---------------------------------------------------------


def test_an_outage_is_logged_once_buffered_and_written_on_recovery(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    logs = Logs()
    writer = StoreWriter(make_engine(url), log=logs)
    flaky = Flaky(writer.engine)
    writer.engine = flaky
    frames = frames_of("race-v2x")
    player = Player(writer, "emperor", "run1")
    player.play(frames[:300])
    assert writer.flush_now()
    flaky.down = True
    player.play(frames[300:900])
    assert not writer.flush_now()
    assert not writer.flush_now()
    assert not writer.available
    assert writer.pending[1] == 600
    player.play(frames[900:])
    assert not writer.flush_now()
    assert len(logs.having("unavailable")) == 1 and logs.having("unavailable")[0][0] == "warn"
    flaky.down = False
    assert writer.flush_now()
    assert writer.available and writer.pending == (0, 0)
    assert len(logs.having("available again")) == 1 and len(logs.having("unavailable")) == 1
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), "race-v2x") == []
        assert conn.execute(select(func.count()).select_from(s.frames)).scalar_one() == len(frames)
    engine.dispose()


def test_a_database_down_at_start_up_is_migrated_and_written_once_it_answers(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    logs = Logs()
    writer = StoreWriter(make_engine(url), log=logs)
    flaky = Flaky(writer.engine)
    writer.engine = flaky
    flaky.down = True
    player = Player(writer, "emperor", "run1")
    player.play(frames_of("edge-cases"))
    assert not writer.flush_now() and not writer.flush_now()
    assert len(logs.having("unavailable")) == 1
    flaky.down = False
    assert writer.flush_now()
    assert len(logs.having("available again")) == 1
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), "edge-cases") == []
    engine.dispose()


def test_a_full_buffer_drops_new_items_and_says_so_once_per_kind(tmp_path):
    logs = Logs()
    writer = StoreWriter(make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}"), log=logs, max_rows=50,
                         max_frame_bytes=20_000)
    flaky = Flaky(writer.engine)
    writer.engine = flaky
    flaky.down = True
    player = Player(writer, "emperor", "run1")
    player.play(frames_of("race-v2x"))
    assert not writer.flush_now()
    rows, frames = writer.pending
    assert rows == 50 and writer.stats.rows_dropped > 0 and writer.stats.frames_dropped > 0
    assert len(logs.having("dropping new laps/events")) == 1
    assert len(logs.having("dropping new raw frames")) == 1
    flaky.down = False
    assert writer.flush_now()
    [recovered] = logs.having("available again")
    assert f"{writer.stats.rows_dropped} operations and {writer.stats.frames_dropped} raw frames were " \
           f"dropped" in recovered[1]


def test_an_operation_the_database_refuses_is_skipped_and_the_rest_written(tmp_path):
    logs = Logs()
    writer = StoreWriter(make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}"), log=logs)
    player = Player(writer, "emperor", "run1")
    frames = frames_of("practice-v1")
    player.play(frames[:50])
    writer.submit(LapRecord(ref=SessionRef("no-such-run", 9), entry_key="car1", number=1, driver=None))
    player.play(frames[50:])
    assert writer.flush_now()
    assert writer.stats.bad_operations == 1 and len(logs.having("skipped a LapRecord")) == 1
    engine = make_engine(writer.engine.url)
    with engine.connect() as conn:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), "practice-v1") == []
    engine.dispose()


def test_a_row_the_database_rejects_is_skipped_without_losing_the_batch(store_url):
    logs = Logs()
    writer = StoreWriter(make_engine(store_url), log=logs)
    player = Player(writer, "emperor", "run1")
    frames = frames_of("practice-v1")
    player.play(frames[:50])
    writer.submit(EntryUpsert(ref=SessionRef("run1", 1), entry_key=None))  # NOT NULL violated
    player.play(frames[50:])
    assert writer.flush_now()
    assert writer.stats.bad_operations == 1 and len(logs.having("skipped a EntryUpsert")) == 1
    assert writer.available and not logs.having("unavailable")
    engine = make_engine(store_url)
    with engine.connect() as conn:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), "practice-v1") == []
        assert conn.execute(select(func.count()).select_from(s.frames)).scalar_one() == len(frames)
    engine.dispose()
    writer.engine.dispose()


# ----- the thread --------------------------------------------------------------------------------


def test_the_thread_writes_everything_before_it_stops(store_url):
    done = threading.Event()
    writer = StoreWriter(make_engine(store_url), flush_interval=0.05, on_closed=done.set)
    writer.start()
    player = Player(writer, "emperor", "run1")
    player.play(frames_of("race-v2x"))
    player.stop(T0 + 1000)
    writer.close()
    assert done.wait(30) and writer.join(1)
    assert writer.unwritten == (0, 0) and writer.stats.batches >= 1
    engine = make_engine(store_url)
    with engine.connect() as conn:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), "race-v2x") == []
    engine.dispose()


def test_close_gives_up_after_its_timeout_while_the_database_is_down(tmp_path):
    logs = Logs()
    writer = StoreWriter(make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}"), log=logs, retry_max=0.05)
    flaky = Flaky(writer.engine)
    writer.engine = flaky
    flaky.down = True
    writer.start()
    player = Player(writer, "emperor", "run1")
    player.play(frames_of("edge-cases"))
    writer.close(timeout=0.2)
    assert writer.join(10)
    rows, frames = writer.unwritten
    assert frames == len(frames_of("edge-cases")) and rows > 0
    assert len(logs.having("not written")) == 1
    assert len([entry for entry in logs.having("unavailable") if entry[0] == "warn"]) == 1
    writer.submit_frame(FrameRecord("run1", 999, T0, 0.0, "late"))  # after the end: dropped
    assert writer.stats.frames_dropped == 1


def test_a_frame_as_big_as_the_upstream_accepts_is_buffered_next_to_others(tmp_path):
    """A 64 MiB frame (the upstream limit) no longer fills the frame buffer by itself: with the
    old 64 MiB bound it was dropped, or every frame after it was (found by tests/faults)."""
    from livetiming.service.plugins.carobama.upstream import DEFAULT_MAX_PAYLOAD

    logs = Logs()
    writer = StoreWriter(make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}"), log=logs)
    player = Player(writer, "emperor", "run1")
    frames = frames_of("race-v2x")
    huge = json.dumps({"EventType": 9999, "Message": "y" * (DEFAULT_MAX_PAYLOAD - 40)})
    player.play(frames[:100] + [(frames[100][0], huge)] + frames[100:])
    assert writer.stats.frames_dropped == 0 and not logs.having("dropping")
    assert writer.pending[1] == len(frames) + 1
    assert writer.flush_now()
