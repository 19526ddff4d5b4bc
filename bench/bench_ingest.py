"""Benchmark: frames per second through the feeds (parse and apply), on one core (issue #8).

Method
------
Frames come from the load generator (``bench/load.py``): a 30-car Emperor race (``v2x``
flavour, positions 5 times a second per car, a ``200`` snapshot per lap and per sector split)
and a 10-kart BMI endurance heat. They are generated first and kept in memory, so only the feed
is measured: ``EmperorFeed.receive(text, t)`` / ``BMIFeed.receive(text, t)``, which parse the
JSON, apply it to the timing model and return the events, exactly as the service calls them.

The Emperor frames are fed in their real order (a snapshot only makes sense after the frames
before it); each call is timed with ``perf_counter`` and the time summed per frame type, so the
position updates (``53``) and the full snapshots (``200``, every car of the grid) get their own
rates without being taken out of context. The first 2 minutes (grid, start) warm the feed up
and are not counted. The whole run is single-threaded; the process CPU time is printed beside
the wall time to show it used one core. Targets: >= 20,000 position frames/s and >= 200 full
30-car snapshots/s.

Run: ``.venv/bin/python bench/bench_ingest.py`` (``--quick`` for the short form).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, add_common_args, finish  # noqa: E402
from bench.load import BmiLoad, EmperorLoad  # noqa: E402

NAME = "bench_ingest"
POSITION_TARGET = 20_000
SNAPSHOT_TARGET = 200
WARMUP_SECONDS = 120.0


def time_emperor(load: EmperorLoad) -> dict[str, float]:
    """Feed the race through a new EmperorFeed; seconds and counts per frame type after warm-up."""
    from livetiming.service.plugins.carobama.feeds.emperor import EmperorFeed

    frames = list(load.frames())
    feed = EmperorFeed()
    spent = {"53": 0.0, "200": 0.0, "other": 0.0}
    counts = {"53": 0, "200": 0, "other": 0}
    snapshot_cars = 0
    perf = time.perf_counter
    cpu0, wall0 = time.process_time(), perf()
    for t, text in frames:
        kind = "53" if text.startswith('{"EventType":53,') else (
            "200" if text.startswith('{"EventType":200,') else "other")
        started = perf()
        feed.receive(text, t)
        elapsed = perf() - started
        if t >= WARMUP_SECONDS:
            spent[kind] += elapsed
            counts[kind] += 1
            if kind == "200":
                snapshot_cars = max(snapshot_cars, len(feed.model.entries))
    return {"position_rate": counts["53"] / spent["53"], "snapshot_rate": counts["200"] / spent["200"],
            "positions": counts["53"], "snapshots": counts["200"], "snapshot_cars": snapshot_cars,
            "all_rate": sum(counts.values()) / sum(spent.values()),
            "cpu": time.process_time() - cpu0, "wall": perf() - wall0}


def time_bmi(load: BmiLoad) -> dict[str, float]:
    """Feed the heat through a new BmiFeed; frames per second."""
    from livetiming.service.plugins.carobama.feeds.bmi import BMIFeed

    frames = list(load.frames())
    feed = BMIFeed()
    started = time.perf_counter()
    for t, text in frames:
        feed.receive(text, t)
    return {"rate": len(frames) / (time.perf_counter() - started), "frames": len(frames)}


def measure(minutes: float) -> list[Row]:
    """Time both feeds and return the result rows."""
    emperor = time_emperor(EmperorLoad(cars=30, hz=5.0, minutes=minutes, seed=8))
    bmi = time_bmi(BmiLoad(karts=10, minutes=minutes * 3, seed=8))
    pos, snap = emperor["position_rate"], emperor["snapshot_rate"]
    return [
        Row(NAME, "Emperor position updates (53) through the feed", pos, "frames/s",
            f">= {POSITION_TARGET:,}", pos >= POSITION_TARGET),
        Row(NAME, f"Emperor full {emperor['snapshot_cars']}-car snapshots (200) through the feed", snap,
            "frames/s", f">= {SNAPSHOT_TARGET}", snap >= SNAPSHOT_TARGET and emperor["snapshot_cars"] >= 30),
        Row(NAME, "Emperor, every frame of the race in order", emperor["all_rate"], "frames/s"),
        Row(NAME, "Emperor frames counted (positions / snapshots)",
            emperor["positions"] + emperor["snapshots"], "frames"),
        Row(NAME, "Emperor run: CPU time / wall time", emperor["cpu"] / emperor["wall"], "cores"),
        Row(NAME, "BMI endurance heat frames through the feed", bmi["rate"], "frames/s"),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the rows say whether the targets hold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_args(parser)
    parser.add_argument("--minutes", type=float, default=None,
                        help="minutes of racing (default 15, 6 with --quick)")
    args = parser.parse_args(argv)
    minutes = args.minutes or (6.0 if args.quick else 15.0)
    print(f"{NAME}: 30-car Emperor race x 5 Hz, {minutes:g} min; BMI 10-kart heat", flush=True)
    rows = measure(minutes)
    method = (f"`bench/bench_ingest.py`{' --quick' if args.quick else ''}: frames of the load "
              f"generator (30-car v2x Emperor race, positions at 5 Hz per car, {minutes:g} min; "
              f"10-kart BMI endurance heat, {minutes * 3:g} min) generated first, then fed in order "
              "through a new feed's receive() (parse and apply, events out) in one thread; each call "
              "timed with perf_counter and summed per frame type after 2 minutes of warm-up.")
    finish(args, "Ingest: frames per second through the feeds", method, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
