"""Benchmark: a simulated 24-hour, 40-car race played as fast as possible (issue #8: endurance).

Method
------
The load generator (``bench/load.py``, in its own process, through a pipe) streams a 24-hour
Emperor race of 40 cars (``v1``
flavour: a ``200`` snapshot on every lap completion; three-driver crews with driver swaps and
pit stops; positions every 10 s per car so that the run fits the ``make bench`` budget: a
position update changes nothing that accumulates). The frames go, as they are generated, into
the real carobama service in this process (``Service._on_frame``, the entry point the upstream
connection calls), with analysis, recording (``-r``) and the database (SQLite) on, on a
``task.Clock`` that follows the frames' time, so every timer (publication, state file, analysis
saves) runs as it would in 24 real hours; publishing goes to a sink that keeps the last message.
To fit the budget the service publishes once every 30 race seconds (laps too) instead of every
0.5 s: about 2,900 update cycles instead of some 200,000, each one still on the full 40-car state
with every lap of the race behind it in the analysis (a lap takes about 95 s, so no lap is missed).

The analysis saves its state once a race minute (live: within seconds of a lap, which at
hundreds of times real time would take the whole run by itself), and the database writer
commits every 10 ms of wall time instead of every 0.5 s (0.5 s of wall time is minutes of race
here; live it holds a handful of frames).

Every update-and-publish cycle (``_updateAndPublishRaceState``) is timed. At race hours 1, 6, 12
and 24 the process's resident memory (``VmRSS``) is read after the database writer has drained
its buffer and a ``gc.collect()`` (the writer thread commits while the race plays; every 100
frames the race waits until the writer holds fewer than 100 items, as it would live; waiting is
not counted), and the median cycle time of the hour just ended is noted. Targets: RSS at hour
24 <= 1.5 x hour 1 and <= 300 MB; cycle time at hour 24 <= 1.5 x hour 1.

Run: ``.venv/bin/python bench/bench_endurance.py`` (``--quick`` plays positions every 20 s).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, add_common_args, finish  # noqa: E402
from bench.states import EPOCH, LastPublished  # noqa: E402

NAME = "bench_endurance"
HOURS = (1, 6, 12, 24)
MEMORY_RATIO = 1.5
MEMORY_CAP_MB = 300.0
CYCLE_RATIO = 1.5
#: Race seconds between two publications in this run (a lap takes about 95 s, so the analysis
#: still sees every lap; live, the service publishes every 0.5 s and laps within 50 ms).
PUBLISH_EVERY = 30.0
#: Race seconds between two saves of the analysis state after changes (see ``make_service``).
SAVE_EVERY = 60.0


def rss_mb() -> float:
    """This process's resident memory in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_service(folder: Path):
    """The carobama service in this process, everything on, on a task.Clock, publishing to a sink."""
    from twisted.internet import task

    import livetiming.analysis
    from livetiming.service import parse_args
    from livetiming.service.plugins.carobama.service import Service

    # Live, the analysis saves within seconds of a lap (at most 2 % of the reactor); at hundreds
    # of times real time that alone would take the whole run, so here it saves once a race minute.
    livetiming.analysis.SOON_SAVE_INTERVAL = SAVE_EVERY
    for kind in ("state", "log", "analysis", "recordings", "data"):
        os.environ[f"LIVETIMING_{kind.upper()}_DIR"] = str(folder / kind)
    args, extra = parse_args(["carobama", "--uuid", "endurance", "-r", str(folder / "race24.zip"),
                              "--url", "ws://127.0.0.1:9/api/race-control",
                              "--database", f"sqlite:///{folder / 'race24.db'}"])
    service = Service(args, extra)
    # One publication per PUBLISH_EVERY race seconds, laps included (see the module docstring).
    service.min_publish_interval = service.urgent_publish_interval = PUBLISH_EVERY
    if service.store is not None:
        # Live, the writer commits every 0.5 s: a handful of frames. Here 0.5 s of wall time is
        # minutes of race, so it commits as often as it can to hold what it holds live.
        service.store.writer.flush_interval = 0.01
    service.clock = task.Clock()
    service.clock.advance(EPOCH)
    service.sink = LastPublished()
    service.add_publisher(service.sink)
    return service


def drain(service, timeout: float = 120.0, below: int = 1) -> None:
    """Wait (wall clock, bounded) until the database writer holds fewer than ``below`` items.

    Played as fast as possible, the race would outrun the writer thread (live it has 24 hours);
    letting it catch up keeps the buffer, and so the memory read, what a live run would have.
    """
    writer = getattr(service.store, "writer", None)
    deadline = time.monotonic() + timeout
    while writer is not None and sum(writer.pending) >= below and time.monotonic() < deadline:
        time.sleep(0.01)


def streamed_race(hz: float) -> Iterator[tuple[float, str]]:
    """The 24-hour race's frames, generated by the load generator in another process.

    The simulator keeps the race's history (for its truth), so running it here would add its
    memory to the service's; as a separate process it also has the other core to itself.
    """
    argv = [sys.executable, str(Path(__file__).with_name("load.py")), "emperor", "--cars", "40",
            "--hz", str(hz), "--minutes", str(24 * 60), "--flavour", "v1", "--seed", "24", "--out", "-"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, encoding="utf-8",
                          bufsize=1 << 20) as generator:
        assert generator.stdout is not None
        generator.stdout.readline()  # the capture header
        loads = json.loads
        try:
            for line in generator.stdout:
                record = loads(line)
                yield record["t"], record["data"]
        finally:
            generator.kill()


def play(hz: float, folder: Path, progress=print) -> dict:
    """Play the 24-hour race; memory and cycle medians at each hour of ``HOURS``."""
    service = make_service(folder)
    cycles: list[float] = []
    update = service._updateAndPublishRaceState
    perf = time.perf_counter

    def timed_update() -> None:
        started = perf()
        update()
        cycles.append(perf() - started)

    service._updateAndPublishRaceState = timed_update
    service._startUpdates()
    clock, receive = service.clock, service._on_frame
    marks: dict[int, dict] = {}
    hour_start = 0
    next_hour = 1
    wall0 = time.monotonic()
    frames = 0
    for t, text in streamed_race(hz):
        while t >= next_hour * 3600:
            if next_hour in HOURS:
                drain(service)
                gc.collect()
                laps = sum(len(entry.laps) for entry in service.feed.model.entries)
                marks[next_hour] = {"rss": rss_mb(), "cycle": statistics.median(cycles[hour_start:]) * 1000,
                                    "laps": laps, "wall": time.monotonic() - wall0}
                progress(f"  hour {next_hour:2d}: RSS {marks[next_hour]['rss']:.0f} MB, cycle median "
                         f"{marks[next_hour]['cycle']:.2f} ms, {laps:,} laps, {frames:,} frames, "
                         f"{marks[next_hour]['wall']:.0f} s")
            hour_start = len(cycles)
            next_hour += 1
        target = EPOCH + t
        if target > clock.seconds():
            clock.advance(target - clock.seconds())
        receive(text, t)
        frames += 1
        if frames % 100 == 0:
            drain(service, below=100)
        if next_hour > HOURS[-1]:
            break
    clock.advance(10)
    published = service.sink.last.get(f"livetiming.service.{service.uuid}")
    dropped = service.store.writer.stats.frames_dropped + service.store.writer.stats.rows_dropped \
        if service.store is not None else 0
    service._stopUpdates()
    service.shutdown()
    if service.store is not None:
        service.store.close(service.feed.model)
    return {"marks": marks, "frames": frames, "published": published is not None, "dropped": dropped,
            "cars": len(service.state.get("cars", [])), "wall": time.monotonic() - wall0}


def measure(hz: float) -> tuple[list[Row], list[str]]:
    """Run the race and turn the hour marks into rows."""
    with tempfile.TemporaryDirectory(prefix="bench-endurance-") as scratch:
        result = play(hz, Path(scratch))
    marks = result["marks"]
    missing = [hour for hour in HOURS if hour not in marks]
    if missing:
        raise SystemExit(f"{NAME}: the race ended before hour(s) {missing}")
    first, last = marks[1], marks[24]
    rows = [Row(NAME, f"resident memory at hour {hour}", marks[hour]["rss"], "MB") for hour in HOURS]
    memory_ratio = last["rss"] / first["rss"]
    cycle_ratio = last["cycle"] / first["cycle"]
    rows += [
        Row(NAME, "memory, hour 24 / hour 1", memory_ratio, "x", f"<= {MEMORY_RATIO}",
            memory_ratio <= MEMORY_RATIO),
        Row(NAME, "memory at hour 24", last["rss"], "MB", f"<= {MEMORY_CAP_MB:.0f} MB",
            last["rss"] <= MEMORY_CAP_MB),
        Row(NAME, "update cycle median, hour 1", first["cycle"], "ms"),
        Row(NAME, "update cycle median, hour 24", last["cycle"], "ms"),
        Row(NAME, "update cycle, hour 24 / hour 1", cycle_ratio, "x", f"<= {CYCLE_RATIO}",
            cycle_ratio <= CYCLE_RATIO),
        Row(NAME, "laps completed in 24 hours", last["laps"], "laps"),
        Row(NAME, "frames played", result["frames"], "frames"),
        Row(NAME, "database writes dropped", result["dropped"], "rows/frames", "0", result["dropped"] == 0),
        Row(NAME, "wall time for 24 race hours", result["wall"], "s"),
    ]
    notes = [f"hour {hour}: {marks[hour]['laps']:,} laps so far, reached after {marks[hour]['wall']:.0f} s"
             for hour in HOURS]
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the rows say whether the targets hold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_args(parser)
    parser.add_argument("--hz", type=float, default=None,
                        help="position updates per car per second (default 0.1, 0.05 with --quick)")
    args = parser.parse_args(argv)
    hz = args.hz or (0.05 if args.quick else 0.1)
    print(f"{NAME}: 24-hour, 40-car race as fast as possible, positions {hz:g} Hz per car", flush=True)
    rows, notes = measure(hz)
    method = (f"`bench/bench_endurance.py`{' --quick' if args.quick else ''}: the load generator's "
              f"24-hour 40-car v1 Emperor race (a 200 per lap, driver swaps, pit stops; positions "
              f"{hz:g} Hz per car) streamed into the real carobama service in-process on a task.Clock "
              "following the frames (analysis, recording, SQLite database on; one publication per 30 race "
              "seconds, to a sink; analysis saved once a race minute; the database writer committing "
              "every 10 ms and drained every 100 frames); every "
              "update cycle timed; RSS read at race hours 1, 6, 12, 24 after the database writer drained "
              "and a gc.collect(); cycle figures are the median of the hour just ended.")
    finish(args, "Endurance: 24 hours, 40 cars, as fast as possible", method, rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
