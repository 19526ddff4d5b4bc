"""Helpers for the store tests: database URLs for both backends, captures played into a store,
and what a store holds, read back in the shape of the capture truth files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from livetiming.service.plugins.carobama.capture import read_capture
from livetiming.service.plugins.carobama.store import schema as s
from livetiming.service.plugins.carobama.store.db import make_engine
from livetiming.service.plugins.carobama.store.recorder import Recorder
from livetiming.service.plugins.carobama.store.writer import StoreWriter
from tests.support.postgres import shared_database, shared_server_problem

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
T0 = 1_717_000_000.0
EMPEROR_CAPTURES = ["practice-v1", "race-v2x", "session-change-v1", "edge-cases"]
BMI_CAPTURES = ["bmi-endurance", "bmi-laps", "bmi-sequence", "bmi-sprint", "bmi-hostile"]


BACKENDS = ["sqlite", "postgresql"]


def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty store for a ``store_url`` fixture: an SQLite file, or a new database on the shared
    PostgreSQL (dropped afterwards; the test is skipped, with the reason, when it is unreachable)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    problem = shared_server_problem()
    if problem:
        pytest.skip(problem)
    with shared_database() as url:
        yield url


def truth_of(name: str) -> dict:
    """The simulator's truth of a capture fixture."""
    return json.loads((CAPTURES / f"{name}.truth.json").read_text(encoding="utf-8"))


def source_of(name: str) -> str:
    return "bmi" if name.startswith("bmi") else "emperor"


def make_feed(source: str) -> Any:
    if source == "bmi":
        from livetiming.service.plugins.carobama.feeds.bmi import BMIFeed

        return BMIFeed()
    from livetiming.service.plugins.carobama.feeds.emperor import EmperorFeed

    return EmperorFeed()


def frames_of(name: str) -> list[tuple[float, str]]:
    return list(read_capture(CAPTURES / f"{name}.jsonl")[1])


class Player:
    """A feed and a recorder writing through a :class:`StoreWriter` without its thread."""

    def __init__(self, writer: StoreWriter, source: str, run: str, host: str = "127.0.0.1",
                 t0: float = T0):
        self.writer = writer
        self.feed = make_feed(source)
        self.recorder = Recorder(writer.submit, writer.submit_frame, run=run, source=source, host=host)
        self.recorder.start(t0, upstream=f"ws://{host}/api")
        self.t0 = t0

    def play(self, frames: list[tuple[float, str]]) -> None:
        for t, data in frames:
            events = self.feed.receive(data, self.t0 + t)
            self.recorder.record(data, t, self.t0 + t, events, self.feed.model)

    def stop(self, at: float) -> None:
        self.recorder.stop(at, self.feed.model)


def store_capture(url: str, name: str, run: str = "run1") -> Player:
    """Play a capture fixture into the store at ``url`` and write everything."""
    writer = StoreWriter(make_engine(url))
    player = Player(writer, source_of(name), run)
    player.play(frames_of(name))
    player.stop(T0 + 10_000)
    assert writer.flush_now()
    writer.engine.dispose()
    return player


def latest_session(conn: Any) -> int:
    c = s.sessions.c
    return conn.execute(select(c.id).order_by(c.started_at.desc(), c.id.desc()).limit(1)).scalar_one()


def stored_cars(conn: Any, session_id: int) -> dict[str, dict[str, Any]]:
    """Per car number: laps (number → time), counted pit stops, best lap, drivers."""
    e, lap, p, d = s.entries.c, s.laps.c, s.pit_stops.c, s.drivers.c
    cars: dict[str, dict[str, Any]] = {}
    for row in conn.execute(select(e.id, e.number, e.best_lap, e.position).where(e.session_id == session_id)):
        cars[row.number] = {"id": row.id, "laps": {}, "pits": 0, "best": row.best_lap, "drivers": [],
                            "position": row.position}
    by_id = {car["id"]: car for car in cars.values()}
    for row in conn.execute(select(lap.entry_id, lap.number, lap.time).where(lap.session_id == session_id)):
        assert row.number not in by_id[row.entry_id]["laps"], "duplicate lap"
        by_id[row.entry_id]["laps"][row.number] = row.time
    for row in conn.execute(select(p.entry_id).where(p.session_id == session_id, p.number.is_not(None))):
        by_id[row.entry_id]["pits"] += 1
    for row in conn.execute(select(d.entry_id, d.name).order_by(d.id)):
        if row.entry_id in by_id:
            by_id[row.entry_id]["drivers"].append(row.name)
    return cars


def expected_cars(name: str) -> dict[str, dict[str, Any]]:
    """What the published timing showed at the end of a capture, per car number."""
    truth = truth_of(name)
    result: dict[str, dict[str, Any]] = {}
    if source_of(name) == "bmi":
        for car in truth["checkpoints"][-1]["cars"]:
            result[car["kart"]] = {"laps": car["laps"], "last": car["last"], "best": car["best"],
                                   "pits": car["pits"], "times": None}
        return result
    for car in truth["cars"]:
        result[car["number"]] = {"laps": car["laps"], "last": car["last_lap"], "best": car["best_lap"],
                                 "pits": car["pits"], "times": car["lap_times"]}
    return result


def compare_with_truth(cars: dict[str, dict[str, Any]], name: str) -> list[str]:
    """Differences between stored cars and the capture's truth (empty when they agree).

    Every lap the timing counted must be stored exactly once; a stored time must be the true
    one (laps reported only by a counter have no time); the last lap's time, the best lap and
    the counted pit stops must equal what the timing showed.
    """
    problems = []
    for number, want in expected_cars(name).items():
        got = cars.get(number)
        if got is None:
            if want["laps"]:
                problems.append(f"car {number} missing")
            continue
        laps = got["laps"]
        if sorted(laps) != list(range(1, want["laps"] + 1)):
            problems.append(f"car {number}: laps {sorted(laps)} != 1..{want['laps']}")
            continue
        if want["laps"] and laps[want["laps"]] != want["last"]:
            problems.append(f"car {number}: last lap {laps[want['laps']]} != {want['last']}")
        for index, time in enumerate(want["times"] or [], start=1):
            if laps.get(index) not in (None, time):
                problems.append(f"car {number}: lap {index} {laps.get(index)} != {time}")
        if got["best"] != want["best"]:
            problems.append(f"car {number}: best {got['best']} != {want['best']}")
        if want["pits"] is not None and got["pits"] != want["pits"]:
            problems.append(f"car {number}: pit stops {got['pits']} != {want['pits']}")
    return problems
