"""Realistic timing states for benchmarks: a synthetic endurance race and services that replay it.

``EnduranceRace`` generates, second by second, the table of an endurance race as a timing screen
shows it (Emperor-like columns: number, state, class, team, driver, car, laps, gap, interval,
three sectors, last and best lap, pit stops): cars in three classes, lap times 88-100 s with
sector splits, gaps and intervals changing every second, pit stops about every 25 laps with
driver changes, two yellow periods, a safety car and the chequered flag at 119 minutes. It is
deterministic for a given seed, so every benchmark measures the same race.

``ReplayedRace`` is a framework service (``BaseService``) whose ``getRaceState()`` hands out
states computed beforehand, so timing the framework's cycle measures the framework only.
"""

from __future__ import annotations

import random
from argparse import Namespace

from twisted.internet import task

from livetiming.racing import Stat
from livetiming.service import BaseService, parse_args

#: Unix time the benchmark clocks start at.
EPOCH = 1_700_000_000
COLUMNS = [Stat.NUM, Stat.STATE, Stat.CLASS, Stat.TEAM, Stat.DRIVER, Stat.CAR, Stat.LAPS, Stat.GAP,
           Stat.INT, Stat.S1, Stat.S2, Stat.S3, Stat.LAST_LAP, Stat.BEST_LAP, Stat.PITS]
CLASSES = ("LMP2", "GTE", "GT3")
RACE_SECONDS = 7200


def _flag_at(minutes: float) -> str:
    """Track status of the scripted race at ``minutes`` into it."""
    if 30 <= minutes < 32 or 75 <= minutes < 76:
        return "yellow"
    if 95 <= minutes < 99:
        return "sc"
    return "chequered" if minutes >= 119 else "green"


class EnduranceRace:
    """A deterministic endurance race; ``state(second)`` advances it (call with rising seconds)."""

    def __init__(self, cars: int = 30, seed: int = 1):
        self.rng = random.Random(seed)
        self.entries = [self._entry(index) for index in range(cars)]
        self.flag = "green"

    def _entry(self, index: int) -> dict:
        rng = self.rng
        return {
            "num": str(index + 1), "class": CLASSES[index % 3], "team": f"Team {index + 1}",
            "car": f"Car {index % 7}", "drivers": [f"Driver {index + 1}{c}" for c in "ABC"],
            "driver": 0, "pace": 88.0 + (index % 3) * 4 + rng.random() * 2,
            "lap_start": 0.0, "laps": 0, "distance": 0.0, "sectors": [None, None, None],
            "last": None, "best": None, "pits": 0, "pit_until": None,
            "next_stop": 20 + rng.randint(0, 10),
        }

    def _advance(self, entry: dict, now: float, slow: float) -> None:
        """Move one car to ``now``: sectors, laps, pit stops and its distance covered."""
        if entry["pit_until"] is not None:  # in the pits: the car rejoins with a new lap
            if now >= entry["pit_until"]:
                entry["pit_until"] = None
                entry["lap_start"] = now
            return
        lap_time = entry["pace"] * slow
        progress = (now - entry["lap_start"]) / lap_time
        sectors = entry["sectors"]
        for sector in range(3):
            if sectors[sector] is None and progress >= (sector + 1) / 3:
                sectors[sector] = round(lap_time / 3 + self.rng.uniform(-0.4, 0.4), 3)
        if progress >= 1:
            self._complete_lap(entry, now)
        entry["distance"] = entry["laps"] + (now - entry["lap_start"]) / lap_time

    def _complete_lap(self, entry: dict, now: float) -> None:
        laptime = round(sum(entry["sectors"]), 3)
        entry["laps"] += 1
        entry["last"] = laptime
        entry["best"] = laptime if entry["best"] is None else min(entry["best"], laptime)
        entry["lap_start"] = now
        entry["sectors"] = [None, None, None]
        if entry["laps"] >= entry["next_stop"] and self.flag != "chequered":
            entry["pit_until"] = now + 60 + self.rng.randint(0, 30)
            entry["pits"] += 1
            entry["driver"] = (entry["driver"] + 1) % 3
            entry["next_stop"] = entry["laps"] + 22 + self.rng.randint(0, 6)

    def state(self, now: float) -> dict:
        """The timing state ``now`` seconds into the race (``{"cars": [...], "session": {...}}``)."""
        self.flag = _flag_at(now / 60)
        slow = 1.4 if self.flag in ("yellow", "sc") else 1.0
        for entry in self.entries:
            self._advance(entry, now, slow)
        order = sorted(self.entries, key=lambda e: -e["distance"])
        leader, previous = order[0], None
        rows = []
        for entry in order:
            gap = round((leader["distance"] - entry["distance"]) * entry["pace"], 3)
            interval = (round((previous["distance"] - entry["distance"]) * entry["pace"], 3)
                        if previous else "")
            previous = entry
            rows.append(self._row(entry, gap, interval))
        return {"cars": rows, "session": {"flagState": self.flag, "timeElapsed": round(now),
                                          "timeRemain": max(0, RACE_SECONDS - round(now))}}

    @staticmethod
    def _row(entry: dict, gap: float, interval: float | str) -> list:
        last, best = entry["last"], entry["best"]
        return [
            entry["num"], "PIT" if entry["pit_until"] is not None else "RUN", entry["class"],
            entry["team"], entry["drivers"][entry["driver"]], entry["car"], entry["laps"],
            gap or "", interval,
            *[[s, ""] if s is not None else "" for s in entry["sectors"]],
            [last, "pb" if last == best else ""] if last else "",
            [best, ""] if best else "", entry["pits"],
        ]


def race_states(seconds: int, cars: int = 40, seed: int = 1) -> list[dict]:
    """The race's states for seconds ``0 .. seconds-1`` (one update per second)."""
    race = EnduranceRace(cars, seed)
    return [race.state(second) for second in range(seconds)]


class DropPublisher:
    """A publisher that drops everything (benchmarks time the framework, not a transport)."""

    def publish(self, topic: str, message: dict, retain: bool = False) -> None:
        """Drop the message."""


class LastPublished:
    """A publisher that keeps only the last message of each topic (cheap, and checkable)."""

    def __init__(self) -> None:
        self.last: dict[str, dict] = {}

    def publish(self, topic: str, message: dict, retain: bool = False) -> None:
        """Keep the message, replacing the previous one on its topic."""
        self.last[topic] = message


class ReplayedRace(BaseService):
    """A framework service handing out precomputed states, one per update, in order."""

    def __init__(self, args: Namespace, extra_args: list[str] | None = None,
                 states: list[dict] | None = None):
        super().__init__(args, extra_args)
        self.states = list(states or [])
        self.index = 0

    def getName(self) -> str:
        """Series name."""
        return "Synthetic Endurance"

    def getDefaultDescription(self) -> str:
        """Session name."""
        return "2 hours"

    def getColumnSpec(self) -> list:
        """The columns of ``EnduranceRace`` rows."""
        return COLUMNS

    def getPollInterval(self) -> float:
        """One update a second."""
        return 1

    def getRaceState(self) -> dict:
        """The next precomputed state (the last one again once they run out)."""
        state = self.states[min(self.index, len(self.states) - 1)]
        self.index += 1
        return state


def replayed_service(states: list[dict], argv: list[str], uuid: str = "bench") -> ReplayedRace:
    """A ``ReplayedRace`` with framework options ``argv`` on a ``task.Clock`` at ``EPOCH``.

    Its publisher (``service.sink``, a ``LastPublished``) keeps the last message of each topic.
    """
    args, extra = parse_args(["synthetic", "--uuid", uuid, *argv])
    service = ReplayedRace(args, extra, states=states)
    service.clock = task.Clock()
    service.clock.advance(EPOCH)
    service.sink = LastPublished()
    service.add_publisher(service.sink)
    return service


def carobama_service(folder, uuid: str = "bench", database: bool = True):
    """The real carobama service in this process, everything on, on a ``task.Clock`` at ``EPOCH``.

    Recording (``-r``), analysis and (with ``database``) a SQLite store under ``folder``; its
    directories pointed at ``folder`` too; it publishes to ``service.sink`` (a ``LastPublished``).
    Frames go in through ``service._on_frame(text, t)``, as from its upstream connection.
    """
    import os

    from livetiming.service.plugins.carobama.service import Service

    for kind in ("state", "log", "analysis", "recordings", "data"):
        os.environ[f"LIVETIMING_{kind.upper()}_DIR"] = str(folder / kind)
    argv = ["carobama", "--uuid", uuid, "-r", str(folder / f"{uuid}.zip"),
            "--url", "ws://127.0.0.1:9/api/race-control"]
    if database:
        argv += ["--database", f"sqlite:///{folder / f'{uuid}.db'}"]
    args, extra = parse_args(argv)
    service = Service(args, extra)
    service.clock = task.Clock()
    service.clock.advance(EPOCH)
    service.sink = LastPublished()
    service.add_publisher(service.sink)
    return service


def play_into(service, frames) -> None:
    """Hand ``(t, text)`` frames to an in-process carobama ``service``, its clock following them."""
    clock, receive = service.clock, service._on_frame
    for t, text in frames:
        target = EPOCH + t
        if target > clock.seconds():
            clock.advance(target - clock.seconds())
        receive(text, t)


def time_updates(service) -> list[tuple[float, float]]:
    """Time every update-and-publish cycle of ``service`` from now on.

    Returns the list it fills: ``(clock seconds, duration in seconds)`` per cycle.
    """
    import time

    cycles: list[tuple[float, float]] = []
    update, perf, clock = service._updateAndPublishRaceState, time.perf_counter, service.clock

    def timed_update() -> None:
        started = perf()
        update()
        cycles.append((clock.seconds(), perf() - started))

    service._updateAndPublishRaceState = timed_update
    return cycles
