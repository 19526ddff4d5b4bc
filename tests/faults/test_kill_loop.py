"""Service killed (issue 9 part 4): SIGKILL at random moments, restarted with ``-s`` each time.

The carobama service runs against ``carobama-replay`` playing an Emperor race capture, with state
resume (``-s``, from the second run on), a recording (``-r``), a database (``--database``, SQLite;
PostgreSQL too under ``--soak`` when the shared server answers) and the raw journal
(``--capture``). A seeded RNG picks the moment of each SIGKILL. After each kill:

* the database holds every lap it held after the previous kills, with the same time, and no lap
  twice;
* the recording reads back with ``RecordingFile`` up to its last frame, and never has fewer frames
  than before;
* the restarted service publishes, within 30 s, a state with at least the laps of the state file
  the killed one left, and no state after it shows fewer; the analysis state file is loaded again
  with at least the laps it had, and even the very first state shows the saved laps (the
  service publishes the resumed state until the feed has the upstream's snapshot).

The analysis saves within seconds of a lap, so at the end it knows every lap of the race although
runs were killed between its saves.

The replay of each restart begins at the last snapshot (``200``) before the first frame the
database did not commit, as the manager sends a snapshot on connect (the upstream does not lose
data; what is tested is the service's own durability, upstream resync is part 1), so frames after
that snapshot are seen and stored a second time, which must not double anything.
At the end the race runs to its finish: the database equals the capture's truth.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from livetiming.recording import RecordingFile
from livetiming.service.compression import decompress_state
from livetiming.service.plugins.carobama.capture import read_capture
from livetiming.service.plugins.carobama.store import schema as s
from tests.integration.test_emperor_end_to_end import Replay, column_index, value
from tests.integration.test_store_end_to_end import lap_count, query, stop_cleanly, wait_until
from tests.support.postgres import shared_database, shared_server_problem
from tests.support.processes import ServiceProcess
from tests.support.stores import (
    CAPTURES,
    compare_with_truth,
    frames_of,
    latest_session,
    make_feed,
    stored_cars,
    truth_of,
)
from tests.support.wsclient import StandaloneClient, rows_fit_manifest

UUID = "killloop"


def committed_laps(url: str) -> dict[tuple[str, int], float | None]:
    """(car number, lap) → time of every lap in the database (asserts none is there twice)."""
    def read(conn: Any) -> dict:
        laps = {}
        for number, car in stored_cars(conn, latest_session(conn)).items():
            for lap, time_ in car["laps"].items():
                laps[(number, lap)] = time_
        return laps

    try:
        return query(url, read)
    except Exception:  # nothing stored yet (no session)
        return {}


def duplicate_laps(url: str) -> int:
    """Rows of the laps table that repeat an (entry, lap number)."""
    def count(conn: Any) -> int:
        groups = conn.execute(select(func.count()).select_from(s.laps)
                              .group_by(s.laps.c.entry_id, s.laps.c.number)).scalars().all()
        return sum(n - 1 for n in groups)

    return query(url, count)


def stored_frames(url: str) -> int:
    """Raw frames committed, all runs together."""
    return query(url, lambda conn: conn.execute(select(func.count()).select_from(s.frames)).scalar_one())


def laps_in_state(state: dict, laps_column: int) -> dict[str, int]:
    """Car number → laps shown, from a (saved or published) timing state."""
    return {str(car[0]): value(car[laps_column]) or 0 for car in state.get("cars", [])}


def analysis_laps(path: Path) -> int:
    """Sum of the laps analysis knows per car, from its saved state file (0 when there is none)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    cars = saved["model"]["cars"]
    return sum(int(car.get("current_lap") or 0) for car in
               (cars.values() if isinstance(cars, dict) else cars))


def recording_frames(path: Path) -> int:
    """Frames of a recording, every second of it reconstructed (raises when unreadable)."""
    with RecordingFile(path) as recording:
        for second in recording.seconds:
            state = recording.getStateAtTimestamp(second)
            assert state["session"]["flagState"]
        return recording.frames


class KillLoop:
    """Runs, kills and restarts the service; keeps what each check needs between rounds."""

    def __init__(self, name: str, speed: str, url: str, service_env: dict, tmp_path: Path):
        self.name = name
        self.speed = speed
        self.url = url
        self.env = service_env
        frames = list(read_capture(CAPTURES / f"{name}.jsonl")[1])
        self.times = [t for t, _data in frames]
        self.snapshots = [i for i, (_t, data) in enumerate(frames) if '"EventType":200' in data]
        self.recording = tmp_path / "race.zip"
        self.journal = tmp_path / "journal.jsonl"
        self.state_file = Path(service_env["LIVETIMING_STATE_DIR"]) / f"{UUID}.json"
        self.analysis_file = Path(service_env["LIVETIMING_ANALYSIS_DIR"]) / f"{UUID}.json"
        self.position = 0  # index of the first frame the database has not committed
        self.stored_before = 0  # frames committed before the current run
        self.replay: Replay | None = None
        self.service: ServiceProcess | None = None
        self.laps_column: int | None = None
        self.resume_seconds: list[float] = []
        self.committed: dict[tuple[str, int], float | None] = {}
        self.frames_recorded = 0
        self.laps_lost = 0
        self.analysis_before = 0
        self.laps_at_kills: list[int] = []
        self.first_state_behind = 0  # restarts whose first published state had fewer laps

    def start(self) -> StandaloneClient:
        """Replay from the snapshot before the first uncommitted frame (the manager sends a 200
        snapshot on connect); a service resuming from the state file."""
        snapshot = max((i for i in self.snapshots if i <= self.position), default=0)
        start_at = self.times[snapshot]
        self.position = next(i for i, t in enumerate(self.times) if t >= start_at)
        self.stored_before = stored_frames(self.url) if self.committed or self.position else 0
        self.replay = Replay(CAPTURES / f"{self.name}.jsonl", "--speed", self.speed,
                             "--start-at", str(start_at))
        resume = ["-s", str(self.state_file)] if self.state_file.exists() else ["--uuid", UUID]
        before = self.saved_laps()
        self.analysis_saved = self.analysis_file.exists()  # the service saves its own soon
        began = time.monotonic()
        self.service = ServiceProcess(
            "carobama", "--url", self.replay.url, "--publish-interval", "0.2", *resume,
            "-r", str(self.recording), "--database", self.url, "--capture", str(self.journal),
            env=self.env)
        assert self.service.uuid == UUID
        client = StandaloneClient(self.service.url)
        self.shown = self.check_resumed(client, before, began)
        return client

    def saved_laps(self) -> dict[str, int]:
        if not self.state_file.exists() or self.laps_column is None:
            return {}
        return laps_in_state(json.loads(self.state_file.read_text(encoding="utf-8")), self.laps_column)

    def check_resumed(self, client: StandaloneClient, before: dict[str, int], began: float) -> dict[str, int]:
        """Wait (30 s at most) for a published state with at least the laps saved before the
        kill; count the restarts whose very first state showed fewer. Returns the laps shown."""
        manifest, states = None, []  # a new client is sent the state at once, the manifest soon after
        deadline = time.monotonic() + 30
        while True:
            channel, message = client.recv(timeout=max(0.1, deadline - time.monotonic()))
            if channel == "livetiming.control":
                manifest = message["payload"]
            elif channel == f"livetiming.service.{UUID}":
                states.append(decompress_state(message["payload"]))
            if manifest is None or not states or not rows_fit_manifest(states[-1], manifest):
                continue
            self.laps_column = column_index(manifest)["Laps"]
            shown = laps_in_state(states[-1], self.laps_column)
            if all(shown.get(car, 0) >= laps for car, laps in before.items()):
                break
        # The first state whose rows the manifest describes (normally the very first one).
        first = laps_in_state(next(s for s in states if rows_fit_manifest(s, manifest)), self.laps_column)
        self.first_state_behind += any(first.get(car, 0) < laps for car, laps in before.items())
        self.resume_seconds.append(time.monotonic() - began)
        if self.analysis_saved:
            self.service.wait_for_line(r"Resumed analysis from", timeout=30)
        return {car: max(laps, before.get(car, 0)) for car, laps in shown.items()}

    def watch(self, client: StandaloneClient, seconds: float) -> None:
        """Read published states for ``seconds``: no car ever shows fewer laps than before."""
        until = time.monotonic() + seconds
        while (remaining := until - time.monotonic()) > 0:
            try:
                channel, message = client.recv(timeout=remaining)
            except TimeoutError:
                return
            if channel != f"livetiming.service.{UUID}":
                continue
            shown = laps_in_state(decompress_state(message["payload"]), self.laps_column)
            fewer = {car: (laps, shown.get(car, 0)) for car, laps in self.shown.items()
                     if shown.get(car, 0) < laps}
            assert not fewer, f"a published state went back (before, now): {fewer}"
            self.shown.update(shown)

    def kill_at_random(self, client: StandaloneClient, rng: random.Random, most: float) -> None:
        """SIGKILL after a random time (the fault itself; nothing is asserted on timing), watching
        the published states meanwhile."""
        self.watch(client, rng.uniform(0.2, most))
        self.service.kill()
        self.replay.stop()

    def check_after_kill(self) -> None:
        """Nothing committed is lost or doubled; the recording and analysis read back."""
        laps = committed_laps(self.url)
        missing = [key for key, time_ in self.committed.items() if laps.get(key, "missing") != time_]
        self.laps_lost += len(missing)
        assert not missing, f"committed laps lost or changed: {missing}"
        assert duplicate_laps(self.url) == 0
        self.committed = laps
        self.laps_at_kills.append(len(laps))
        self.position += stored_frames(self.url) - self.stored_before
        frames = recording_frames(self.recording)
        assert frames >= self.frames_recorded
        self.frames_recorded = frames
        analysed = analysis_laps(self.analysis_file)
        assert analysed >= self.analysis_before
        self.analysis_before = analysed


def run_kill_loop(loop: KillLoop, kills: int, seed: int, figures, most: float = 2.5) -> None:
    """Clean stop once, then ``kills`` SIGKILLs up to ``most`` seconds after each client connects,
    then the race to its end; checks as in the module doc; figures saved."""
    rng = random.Random(seed)
    truth = truth_of(loop.name)
    try:
        client = loop.start()
        client.close()
        # A clean stop first, so that an analysis state file exists for the restarts to load.
        wait_until(lambda: lap_count(loop.url) >= 1, 60, "a first stored lap")
        stop_cleanly(loop.service)
        loop.replay.stop()
        loop.check_after_kill()
        for _kill in range(kills):
            client = loop.start()
            loop.kill_at_random(client, rng, most)
            client.close()
            loop.check_after_kill()
        loop.start().close()  # to the end of the race: the database must reach the truth
        wait_until(lambda: query(loop.url, lambda conn: compare_with_truth(
            stored_cars(conn, latest_session(conn)), loop.name)) == [], 120, "the truth in the store")
        stop_cleanly(loop.service)
    finally:
        for process in (loop.service, loop.replay):
            if process is not None:
                process.stop()
    loop.check_after_kill()

    def final(conn: Any) -> None:
        assert compare_with_truth(stored_cars(conn, latest_session(conn)), loop.name) == []
        assert conn.execute(select(func.count()).select_from(s.sessions)).scalar_one() == 1
    query(loop.url, final)
    assert sum(1 for _ in read_capture(loop.journal)[1]) >= loop.position
    figures["replay_speed"] = loop.speed
    figures["kill_window_s"] = [0.2, most]
    figures["kills"] = kills
    figures["restarts"] = kills + 1
    figures["laps_in_truth"] = sum(car["laps"] for car in truth["cars"])
    figures["laps_lost"] = loop.laps_lost
    figures["laps_duplicated"] = duplicate_laps(loop.url)
    figures["recordings_unreadable"] = 0
    figures["recorded_frames"] = loop.frames_recorded
    figures["resume_seconds_median"] = round(statistics.median(loop.resume_seconds), 2)
    figures["resume_seconds_max"] = round(max(loop.resume_seconds), 2)
    figures["laps_committed_after_each_stop"] = loop.laps_at_kills
    figures["restarts_whose_first_state_was_behind"] = loop.first_state_behind
    figures["analysis_laps_at_end"] = loop.analysis_before
    assert loop.first_state_behind == 0, "a restart's first published state had fewer laps than saved"
    assert loop.analysis_before == figures["laps_in_truth"], "laps missing from the analysis"


@pytest.mark.timeout(600)
def test_sigkill_in_a_loop_loses_no_committed_lap_and_every_restart_resumes(
        soak, service_env, tmp_path, figures):
    kills = 20 if soak else 5
    loop = KillLoop("race-v2x", "10" if soak else "20", f"sqlite:///{tmp_path / 'store.sqlite'}",
                    service_env, tmp_path)
    run_kill_loop(loop, kills, seed=9, figures=figures, most=5.0 if soak else 2.5)
    figures["database"] = "sqlite"


@pytest.mark.timeout(900)
def test_sigkill_in_a_loop_with_postgresql(soak, service_env, tmp_path, figures):
    if not soak:
        pytest.skip("soak only (make soak)")
    problem = shared_server_problem()
    if problem:
        pytest.skip(problem)
    with shared_database() as url:
        loop = KillLoop("race-v2x", "10", url, service_env, tmp_path)
        run_kill_loop(loop, 20, seed=10, figures=figures, most=5.0)
    figures["database"] = "postgresql"


def test_joining_a_finished_race_at_its_last_snapshot_shows_the_truth():
    """Found by the kill-loop soak: the snapshot holds car 48's new driver (connected, 3 laps) and
    the one who handed over (disconnected, 3 earlier laps); his laps go first, so the car's last
    lap and its place are the new driver's."""
    from livetiming.service.plugins.carobama import ctd

    frames = frames_of("race-v2x")
    last_snapshot = max(i for i, (_t, data) in enumerate(frames) if '"EventType":200' in data)
    feed = make_feed("emperor")
    for t, data in frames[last_snapshot:]:
        feed.receive(data, 1_717_000_000 + t)
    state = {"cars": ctd.cars(feed.model, ctd.column_spec(feed.model)), "session": {}}
    manifest = {"colSpec": [getattr(column, "value", column) for column in ctd.column_spec(feed.model)]}
    rows = [(row[column_index(manifest)["Num"]], value(row[column_index(manifest)["Last"]]))
            for row in state["cars"]]
    truth = truth_of("race-v2x")
    by_id = {car["car_id"]: car for car in truth["cars"]}
    assert rows == [(by_id[i]["number"], by_id[i]["last_lap"]) for i in truth["order"]]
    for entry in feed.model.entries:
        assert [lap.number for lap in entry.laps] == list(range(1, len(entry.laps) + 1))
        stamps = [lap.timestamp for lap in entry.laps if lap.timestamp is not None]
        assert stamps == sorted(stamps), f"#{entry.number}: laps out of order"
