"""The store with the real service: captures → carobama-replay → service (--database) → database.

Each test first waits until the published timing (standalone websocket) shows the capture's truth,
then stops the service and checks that the database holds exactly that: the laps, pit stops and
sessions the timing showed. Against an SQLite file and the shared PostgreSQL (a database of its own
per test, dropped afterwards; skipped with the reason when that server is unreachable). The outage
test runs a PostgreSQL server of its own so that it can really take it away.

Every wait has a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from livetiming.service.compression import decompress_state
from livetiming.service.plugins.carobama.capture import read_capture
from livetiming.service.plugins.carobama.store import schema as s
from livetiming.service.plugins.carobama.store.db import make_engine
from tests.integration.test_bmi_end_to_end import Run as BMIRun
from tests.integration.test_bmi_end_to_end import checkpoint, cut
from tests.integration.test_emperor_end_to_end import Replay, wait_for_truth
from tests.support.postgres import private_database
from tests.support.processes import BIN, Process, ServiceProcess
from tests.support.stores import (
    BACKENDS,
    CAPTURES,
    compare_with_truth,
    database_url,
    latest_session,
    stored_cars,
    truth_of,
)
from tests.support.wsclient import StandaloneClient, rows_fit_manifest

STORING = re.compile(r"Storing sessions, laps and raw frames in (\S+)")


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """An empty store on each backend."""
    yield from database_url(request.param, tmp_path)


@pytest.fixture
def started():
    """Processes to stop at the end of the test, newest first."""
    processes: list[Any] = []
    yield processes
    for process in reversed(processes):
        if hasattr(process, "stop"):
            process.stop()


def service(started: list, url: str, service_env: dict, *args: str) -> ServiceProcess:
    proc = ServiceProcess("carobama", "--url", url, "--publish-interval", "0.2", *args, env=service_env)
    started.append(proc)
    return proc


def query(url: str, function: Any) -> Any:
    """Run ``function(connection)`` on a fresh engine (what another process sees)."""
    engine = make_engine(url, create_folder=False)
    try:
        with engine.connect() as conn:
            return function(conn)
    finally:
        engine.dispose()


def lap_count(url: str) -> int:
    try:
        return query(url, lambda conn: conn.execute(select(func.count()).select_from(s.laps)).scalar_one())
    except Exception:  # not created yet
        return 0


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop_cleanly(proc: Process) -> None:
    assert proc.stop(timeout=30) == 0, proc.output()[-3000:]


# ----- what is stored equals what was published ---------------------------------------------------


@pytest.mark.parametrize("name", ["practice-v1", "race-v2x", "session-change-v1", "edge-cases"])
def test_emperor_capture_stores_what_the_timing_published(store_url, name, service_env, started):
    truth = truth_of(name)
    replay = Replay(CAPTURES / f"{name}.jsonl", "--speed", "0")
    started.append(replay)
    proc = service(started, replay.url, service_env, "--database", store_url)
    proc.wait_for_line(STORING)
    client = StandaloneClient(proc.url)
    wait_for_truth(client, proc.uuid, truth)
    client.close()
    stop_cleanly(proc)

    def check(conn: Any) -> None:
        session_id = latest_session(conn)
        assert compare_with_truth(stored_cars(conn, session_id), name) == []
        row = conn.execute(select(s.sessions).where(s.sessions.c.id == session_id)).mappings().one()
        assert row["name"] == truth["session"]["name"]
        assert row["track_id"] == truth["session"]["track"]
        assert conn.execute(select(func.count()).select_from(s.frames)).scalar_one() == truth["frames"]
        assert conn.execute(select(s.runs.c.ended_at)).scalar_one() is not None

    query(store_url, check)


@pytest.mark.parametrize("name", ["bmi-endurance", "bmi-sequence"])
def test_bmi_capture_stores_what_the_timing_published(store_url, name, service_env, started, tmp_path):
    final = checkpoint(name, ":finished")
    run = BMIRun(cut(name, final["frames"], tmp_path), service_env, "--database", store_url)
    started.append(run)
    run.wait_for(final)
    run.client.close()
    stop_cleanly(run.service)

    def check(conn: Any) -> None:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), name) == []
        heats = conn.execute(select(s.sessions.c.name, s.sessions.c.end_reason)
                             .order_by(s.sessions.c.id)).all()
        expected = [(heat["title"], "finished") for heat in truth_of(name)["heats"]]
        assert [tuple(heat) for heat in heats] == expected

    query(store_url, check)


def test_database_none_stores_nothing(service_env, started, tmp_path):
    replay = Replay(CAPTURES / "edge-cases.jsonl", "--speed", "0")
    started.append(replay)
    proc = service(started, replay.url, service_env, "--database", "none")
    client = StandaloneClient(proc.url)
    wait_for_truth(client, proc.uuid, truth_of("edge-cases"))
    client.close()
    stop_cleanly(proc)
    assert not STORING.search(proc.output())
    assert not list(Path(service_env["LIVETIMING_DATA_DIR"]).parent.rglob("*.sqlite*"))


def test_the_default_store_is_in_the_data_folder(service_env, started):
    replay = Replay(CAPTURES / "edge-cases.jsonl", "--speed", "0")
    started.append(replay)
    proc = service(started, replay.url, service_env)
    client = StandaloneClient(proc.url)
    wait_for_truth(client, proc.uuid, truth_of("edge-cases"))
    client.close()
    stop_cleanly(proc)
    path = Path(service_env["LIVETIMING_DATA_DIR"]) / "carobama.sqlite"
    assert f"sqlite:///{path}" in proc.output()
    cars = query(f"sqlite:///{path}", lambda conn: stored_cars(conn, latest_session(conn)))
    assert compare_with_truth(cars, "edge-cases") == []


# ----- export round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["race-v2x", "session-change-v1"])
def test_an_exported_capture_replays_to_the_same_published_timing(name, service_env, started, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    truth = truth_of(name)
    replay = Replay(CAPTURES / f"{name}.jsonl", "--speed", "0")
    started.append(replay)
    proc = service(started, replay.url, service_env, "--database", url)
    client = StandaloneClient(proc.url)
    wait_for_truth(client, proc.uuid, truth)
    client.close()
    stop_cleanly(proc)
    exported = tmp_path / "exported.jsonl"
    export = Process([str(BIN / "carobama-export"), "--database", url, "capture", "latest",
                      "-o", str(exported)])
    assert export.proc.wait(60) == 0, export.output()
    again = Replay(exported, "--speed", "0")
    started.append(again)
    second = service(started, again.url, service_env, "--database", "none")
    client = StandaloneClient(second.url)
    wait_for_truth(client, second.uuid, truth)
    client.close()


# ----- SIGKILL and restart ----------------------------------------------------------------------


def test_sigkill_mid_session_then_restart_loses_no_committed_lap_and_stores_none_twice(
        store_url, service_env, started, tmp_path):
    name = "race-v2x"
    truth = truth_of(name)
    frames = list(read_capture(CAPTURES / f"{name}.jsonl")[1])
    replay = Replay(CAPTURES / f"{name}.jsonl", "--speed", "20")
    started.append(replay)
    first = service(started, replay.url, service_env, "--database", store_url, "--uuid", "storekill")
    wait_until(lambda: lap_count(store_url) >= 6, 60, "six stored laps")
    first.proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    first.proc.wait(10)
    replay.stop()

    def committed(conn: Any) -> tuple[dict, int, float]:
        cars = stored_cars(conn, latest_session(conn))
        count, last = conn.execute(select(func.count(), func.max(s.frames.c.received_at))).one()
        return cars, count, last

    before, frames_before, last_frame_at = query(store_url, committed)
    # At most the last second is missing: frames flowed continuously until the kill.
    assert killed_at - last_frame_at < 1.0, killed_at - last_frame_at
    assert 6 <= sum(len(car["laps"]) for car in before.values()) < 18

    # The restarted process resumes from its state file and the first frame it did not store.
    state_file = Path(service_env["LIVETIMING_STATE_DIR"]) / "storekill.json"
    assert state_file.exists()
    replay = Replay(CAPTURES / f"{name}.jsonl", "--speed", "20", "--start-at", str(frames[frames_before][0]))
    started.append(replay)
    second = service(started, replay.url, service_env, "--database", store_url, "-s", str(state_file))
    client = StandaloneClient(second.url)
    wait_for_truth(client, second.uuid, truth, timeout=60)
    client.close()
    stop_cleanly(second)

    def check(conn: Any) -> None:
        assert conn.execute(select(func.count()).select_from(s.sessions)).scalar_one() == 1
        after = stored_cars(conn, latest_session(conn))  # raises on a duplicate lap
        assert compare_with_truth(after, name) == []
        for number, car in before.items():
            for lap, time_ in car["laps"].items():
                assert after[number]["laps"][lap] == time_, f"committed lap {number}/{lap} changed"
        assert conn.execute(select(func.count()).select_from(s.laps)).scalar_one() == 18
        assert conn.execute(select(func.count()).select_from(s.runs)).scalar_one() == 2
        per_run = conn.execute(select(func.count(), func.min(s.frames.c.seq), func.max(s.frames.c.seq))
                               .group_by(s.frames.c.run_id).order_by(s.frames.c.run_id)).all()
        assert [tuple(run) for run in per_run][0] == (frames_before, 0, frames_before - 1)
        assert all(count == last + 1 and first == 0 for count, first, last in per_run), "a frame is missing"

    query(store_url, check)

    # The session's frames from both runs, exported, replay to the same timing.
    exported = tmp_path / "exported.jsonl"
    export = Process([str(BIN / "carobama-export"), "--database", store_url, "capture", "latest", "-o",
                      str(exported)])
    assert export.proc.wait(60) == 0, export.output()
    again = Replay(exported, "--speed", "0")
    started.append(again)
    third = service(started, again.url, service_env, "--database", "none")
    client = StandaloneClient(third.url)
    wait_for_truth(client, third.uuid, truth)
    client.close()


# ----- PostgreSQL taken away ----------------------------------------------------------------------


class LapWatcher:
    """Reads published states from a standalone client: the most laps any car shows."""

    def __init__(self, client: StandaloneClient, uuid: str):
        self.client = client
        self.uuid = uuid
        self.manifest: dict | None = None

    def most_laps(self, seconds: float) -> int:
        """Most laps shown by any car in the states received in the next ``seconds``."""
        until = time.monotonic() + seconds
        best = -1
        while time.monotonic() < until:
            try:
                channel, message = self.client.recv(timeout=max(0.05, until - time.monotonic()))
            except TimeoutError:
                break
            if channel == "livetiming.control":
                self.manifest = message["payload"]
            elif channel == f"livetiming.service.{self.uuid}" and self.manifest is not None:
                state = decompress_state(message["payload"])
                if not rows_fit_manifest(state, self.manifest):
                    continue
                columns = [column[0] for column in self.manifest["colSpec"]]
                index = columns.index("Laps")
                for car in state["cars"]:
                    cell = car[index]
                    best = max(best, (cell[0] if isinstance(cell, list) else cell) or 0)
        return best


def test_postgres_taken_away_mid_session_publishing_goes_on_and_buffered_rows_are_written(
        service_env, started):
    pg, url = private_database(started)
    name = "race-v2x"
    truth = truth_of(name)
    frame_count = truth["frames"]
    replay = Replay(CAPTURES / f"{name}.jsonl", "--speed", "12")
    started.append(replay)
    proc = service(started, replay.url, service_env, "--database", url)
    client = StandaloneClient(proc.url)
    wait_until(lambda: lap_count(url) >= 3, 60, "three stored laps")

    watcher = LapWatcher(client, proc.uuid)
    watcher.most_laps(0.5)
    pg.stop("immediate")  # the database goes away mid-session
    proc.wait_for_line(r"Database \S+ unavailable", timeout=20)
    during = watcher.most_laps(3)
    assert during > 0, "publishing stopped while the database was down"
    later = watcher.most_laps(6)
    assert later > during or later == 6, "timing did not move on during the outage"
    assert proc.proc.poll() is None

    client.close()
    pg.start()
    proc.wait_for_line(r"Database \S+ available again", timeout=30)
    client = StandaloneClient(proc.url)  # a new client is sent the manifest again
    wait_for_truth(client, proc.uuid, truth, timeout=60)
    client.close()
    stop_cleanly(proc)
    output = proc.output()
    assert len(re.findall(r"Database \S+ unavailable", output)) == 1, output[-3000:]
    assert len(re.findall(r"available again", output)) == 1
    assert "dropping" not in output

    def check(conn: Any) -> None:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), name) == []
        count, last = conn.execute(select(func.count(), func.max(s.frames.c.seq))).one()
        assert count == last + 1 and count > frame_count // 2, "frames received during the outage are missing"
        messages = conn.execute(select(s.messages.c.kind)).scalars().all()
        assert {"flag", "chat", "collision", "driver_change"} <= set(messages)
        stops = conn.execute(select(s.pit_stops.c.duration).where(s.pit_stops.c.number.is_not(None))).all()
        assert len(stops) == 2 and all(stop.duration > 0 for stop in stops)

    query(url, check)
