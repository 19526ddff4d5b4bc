"""Benchmark: ``livetiming-analysis`` on a generated 2-hour, 30-car recording (target: at most 2 s).

Method
------
1. A synthetic endurance race is played through the real framework (``BaseService`` on a
   ``task.Clock``, built-in message generators, analysis on, recording with ``-r``): 30 cars in
   three classes, one update per second for two hours, lap times 88-100 s with three sector
   splits, gaps and intervals changing every second, pit stops about every 25 laps with driver
   changes, two yellow periods and a safety car, the chequered flag at the end. Every update is
   recorded, so the recording has 7,200 frames.
2. ``livetiming-analysis RECORDING -o OUT -q`` is run as a separate process (wall clock,
   interpreter start-up included), ``--runs`` times; the best and median are reported.
(The framework's update cycle is ``bench/bench_cycle.py``.)

Run: ``.venv/bin/python bench/bench_analysis.py`` (``--quick``: 3 runs; ``--no-append`` to leave
docs/BENCHMARKS.md alone). Figures are printed and appended to ``docs/BENCHMARKS.md`` with the
method, machine, date and commit.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import task

from livetiming.racing import Stat
from livetiming.recording import RecordingFile
from livetiming.service import BaseService, parse_args

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import Row, add_common_args, finish  # noqa: E402

NAME = "bench_analysis"
TARGET_S = 2.0
BIN = Path(sys.executable).parent
EPOCH = 1_700_000_000
COLUMNS = [Stat.NUM, Stat.STATE, Stat.CLASS, Stat.TEAM, Stat.DRIVER, Stat.CAR, Stat.LAPS, Stat.GAP,
           Stat.INT, Stat.S1, Stat.S2, Stat.S3, Stat.LAST_LAP, Stat.BEST_LAP, Stat.PITS]


class SyntheticRace(BaseService):
    """A deterministic endurance race generated on the fly, one state per update."""

    def __init__(self, args, extra_args=None, cars: int = 30, seed: int = 1):
        super().__init__(args, extra_args)
        self.rng = random.Random(seed)
        self.cars = []
        for index in range(cars):
            self.cars.append({
                "num": str(index + 1), "class": ("LMP2", "GTE", "GT3")[index % 3],
                "team": f"Team {index + 1}", "car": f"Car {index % 7}",
                "drivers": [f"Driver {index + 1}{letter}" for letter in "ABC"], "driver": 0,
                "pace": 88.0 + (index % 3) * 4 + self.rng.random() * 2,
                "lap_start": 0.0, "laps": 0, "distance": 0.0, "sectors": [None, None, None],
                "last": None, "best": None, "pits": 0, "pit_until": None,
                "next_stop": 20 + self.rng.randint(0, 10),
            })
        self.elapsed = 0.0
        self.flag = "green"

    def getName(self):
        """Series name."""
        return "Synthetic Endurance"

    def getDefaultDescription(self):
        """Session name."""
        return "2 hours"

    def getColumnSpec(self):
        """The columns of a typical endurance timing screen."""
        return COLUMNS

    def getPollInterval(self):
        """One update a second."""
        return 1

    def getRaceState(self):
        """The race at ``self.elapsed`` seconds (advanced by the caller)."""
        now = self.elapsed
        minutes = now / 60
        self.flag = ("yellow" if 30 <= minutes < 32 or 75 <= minutes < 76 else
                     "sc" if 95 <= minutes < 99 else "chequered" if minutes >= 119 else "green")
        slow = 1.4 if self.flag in ("yellow", "sc") else 1.0
        for entry in self.cars:
            if entry["pit_until"] is not None:
                if now >= entry["pit_until"]:
                    entry["pit_until"] = None
                    entry["lap_start"] = now
                continue
            lap_time = entry["pace"] * slow
            progress = (now - entry["lap_start"]) / lap_time
            for sector in range(3):
                if progress >= (sector + 1) / 3 and entry["sectors"][sector] is None:
                    entry["sectors"][sector] = round(lap_time / 3 + self.rng.uniform(-0.4, 0.4), 3)
            if progress >= 1:
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
            entry["distance"] = entry["laps"] + (now - entry["lap_start"]) / (entry["pace"] * slow)
        order = sorted(self.cars, key=lambda e: -e["distance"])
        leader = order[0]
        rows = []
        previous = None
        for entry in order:
            gap = round((leader["distance"] - entry["distance"]) * entry["pace"], 3)
            interval = round((previous["distance"] - entry["distance"]) * entry["pace"], 3) \
                if previous else ""
            previous = entry
            state = "PIT" if entry["pit_until"] is not None else "RUN"
            rows.append([
                entry["num"], state, entry["class"], entry["team"],
                entry["drivers"][entry["driver"]], entry["car"], entry["laps"], gap or "", interval,
                *[[s, ""] if s is not None else "" for s in entry["sectors"]],
                [entry["last"], "pb" if entry["last"] == entry["best"] else ""] if entry["last"] else "",
                [entry["best"], ""] if entry["best"] else "", entry["pits"],
            ])
        return {"cars": rows, "session": {"flagState": self.flag, "timeElapsed": round(now),
                                          "timeRemain": max(0, 7200 - round(now))}}


class Sink:
    """A publisher that drops everything (timing only)."""

    def publish(self, topic, message, retain=False):
        """Drop the message."""


def make_service(argv: list[str], cars: int) -> SyntheticRace:
    """A synthetic race service on a task.Clock with the given framework options."""
    args, extra = parse_args(["synthetic", "--uuid", "bench", *argv])
    service = SyntheticRace(args, extra, cars=cars)
    service.clock = task.Clock()
    service.clock.advance(EPOCH)
    service.add_publisher(Sink())
    return service


def generate(path: Path, seconds: int, cars: int) -> float:
    """Record ``seconds`` of the synthetic race; returns the wall seconds it took."""
    service = make_service(["-r", str(path)], cars)
    started = time.perf_counter()
    for second in range(seconds):
        service.clock.advance(1)
        service.elapsed = second
        service._updateAndPublishRaceState()
    service.shutdown()
    return time.perf_counter() - started


class Precomputed(SyntheticRace):
    """Hands out race states computed beforehand, so timing sees only the framework."""

    states: list[dict] = []

    def getRaceState(self):
        """The precomputed state of this second."""
        return self.states[int(self.elapsed)]


def time_cli(recording: Path, runs: int) -> list[float]:
    """Wall-clock seconds of ``livetiming-analysis`` runs as separate processes."""
    times = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([str(BIN / "livetiming-analysis"), str(recording), "-o",
                            os.path.join(scratch, "out.json"), "-q"], check=True)
            times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    """Generate, time, print and (unless ``--no-append``) append to docs/BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--seconds", type=int, default=7200, help="race length (default 7200)")
    parser.add_argument("--cars", type=int, default=30)
    parser.add_argument("--runs", type=int, default=None,
                        help="timed livetiming-analysis runs (default 7, 3 with --quick)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    print(f"bench_analysis: {args.seconds} s x {args.cars} cars, {runs} runs", flush=True)
    os.environ.setdefault("LIVETIMING_STATE_DIR", tempfile.mkdtemp(prefix="bench-state-"))
    os.environ.setdefault("LIVETIMING_ANALYSIS_DIR", tempfile.mkdtemp(prefix="bench-analysis-"))
    with tempfile.TemporaryDirectory() as scratch:
        recording = Path(scratch) / "synthetic.zip"
        gen_wall = generate(recording, args.seconds, args.cars)
        with RecordingFile(recording) as rec:
            frames, keyframes = rec.frames, len(rec.keyframes)
        size = recording.stat().st_size
        times = time_cli(recording, runs)
    best, median = min(times), statistics.median(times)
    hours = args.seconds / 3600
    rows = [
        Row(NAME, f"livetiming-analysis, {hours:g} h x {args.cars} cars, median of {runs}", median, "s",
            f"<= {TARGET_S:g} s", median <= TARGET_S),
        Row(NAME, "livetiming-analysis, best run", best, "s"),
        Row(NAME, "analysis throughput (median run)", frames / median, "frames/s"),
    ]
    notes = [f"recording: {args.seconds} s, {args.cars} cars, {frames} frames ({keyframes} keyframes), "
             f"{size / 1e6:.1f} MB, generated in {gen_wall:.1f} s",
             "the original framework: about 30 s for the same recording (issue #8, quoted: it is "
             "not installable here)"]
    method = (f"`bench/bench_analysis.py`{' --quick' if args.quick else ''}: a synthetic "
              f"{hours:g}-hour, {args.cars}-car endurance race is played through the real framework "
              "(one update per second, every update recorded with `-r`, message generators and "
              "analysis on), then `livetiming-analysis RECORDING -o OUT -q` runs as a separate "
              f"process {runs} times (wall clock, interpreter start-up included).")
    finish(args, f"livetiming-analysis on a {hours:g}-hour, {args.cars}-car recording", method, rows, notes)
    return 0 if median <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
