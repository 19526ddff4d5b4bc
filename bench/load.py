"""The load generator: synthetic upstream traffic for benchmarks and tests, played at any speed.

Two kinds of load, both deterministic for a given seed (equal arguments give equal frames):

- :class:`EmperorLoad`: an Emperor Servers (ACSM) race of ``cars`` cars whose position updates
  (``53`` CarUpdate) come ``hz`` times a second per car, with a ``200`` snapshot on every lap
  completion (and on every sector split for the ``v2x`` flavour), driver swaps, pit stops,
  collisions and chat, for ``minutes`` of racing (a 24-hour race is ``minutes=1440``);
- :class:`BmiLoad`: a BMI karting endurance heat of ``karts`` team karts (up to 10) for ``minutes``, with team
  pit stops, a frame on every line crossing and one every ``period`` seconds.

Each load gives its frames as ``(t, text)`` pairs (``t`` in seconds since the client connected),
streaming, so a 24-hour race never sits in memory; :meth:`write` saves a capture file that
``carobama-replay`` plays. :func:`serve` plays a load to websocket clients from this process, in
real time (``speed=1``), faster, or as fast as the client reads (``speed=inf``), and can report
when chosen frames leave (the latency benchmark marks lap-completing frames with
:func:`lap_frames`).

As a command (``.venv/bin/python bench/load.py emperor --cars 40 --hz 5 --minutes 10 --port 0``)
it serves the load and prints ``carobama-replay listening on ws://127.0.0.1:<port>/`` like the
replay server, or writes a capture with ``--out FILE``. ``--sent-log FILE`` writes one JSON line
``{"i": index, "t": unix_time, "laps": [[car, lap], ...]}`` per lap-completing frame as it is
sent, after a first line ``{"laps_column": N}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livetiming.service.plugins.carobama.sim.emperor import build_race, write_capture  # noqa: E402

Frame = tuple[float, str]


class SimulatedLoad:
    """What every load offers; a subclass says which simulator, with ``_simulator()``."""

    def _simulator(self) -> Any:
        raise NotImplementedError

    def frames(self) -> Iterator[Frame]:
        """The race's frames in time order (streaming: generated as they are taken)."""
        return self._simulator().frames()

    def header(self) -> dict:
        """The capture header the simulator writes."""
        return self._simulator().header()

    def write(self, path: str | Path) -> int:
        """Save the load as a capture file (gzip when the name ends in ``.gz``); returns the frames."""
        sim = self._simulator()
        count, _ = write_capture(sim.frames(), str(path), sim.header())
        return count


@dataclass(frozen=True)
class EmperorLoad(SimulatedLoad):
    """A synthetic Emperor race: ``cars`` cars, positions ``hz`` times a second each."""

    cars: int = 40
    hz: float = 5.0
    minutes: float = 10.0
    flavour: str = "v2x"
    seed: int = 1
    track: str | None = None

    source = "emperor"

    def _simulator(self) -> Any:
        if not 0.05 <= self.hz <= 20:
            raise ValueError("hz must be between 0.05 and 20 position updates per car per second")
        return build_race(self.flavour, cars=self.cars, minutes=self.minutes, rate=self.hz,
                          seed=self.seed, track=self.track, split_snapshots=self.flavour == "v2x")


@dataclass(frozen=True)
class BmiLoad(SimulatedLoad):
    """A synthetic BMI karting endurance heat of ``karts`` karts lasting ``minutes``."""

    karts: int = 10
    minutes: float = 60.0
    seed: int = 1
    period: float = 5.0

    source = "bmi"

    def _simulator(self) -> Any:
        from livetiming.service.plugins.carobama.sim.bmi import _TEAMS, BMISimulator, HeatPlan

        if not 1 <= self.karts <= len(_TEAMS):
            raise ValueError(f"a BMI endurance heat has 1 to {len(_TEAMS)} team karts")
        plan = HeatPlan(number=34, title=f"34 - Endurance {self.minutes:g} min", minutes=self.minutes,
                        karts=self.karts, base_lap=46.0, teams=True,
                        pit_laps=tuple(range(25, int(self.minutes * 60 / 46) + 1, 27)),
                        kart_swap=2, prelude_seconds=30.0, period=self.period)
        return BMISimulator([plan], seed=self.seed)


@dataclass
class LapMarks:
    """Which frames complete laps, and where a state shows the laps (see :func:`lap_frames`)."""

    #: frame index → ``[(car number, lap number), ...]`` completed by that frame
    by_frame: dict[int, list[tuple[str, int]]]
    #: index of the Laps column in the cars of the service's state for this race
    laps_column: int


def lap_frames(frames: list[Frame]) -> LapMarks:
    """Find the lap-completing frames by running the Emperor feed (a pure state machine) over them.

    "Completes a lap" then means exactly what the service will make of the frames; laps only
    inferred after a gap are left out (no single frame completes them).
    """
    from livetiming.racing import Stat
    from livetiming.service.plugins.carobama import ctd
    from livetiming.service.plugins.carobama.feeds.emperor import EmperorFeed

    feed = EmperorFeed()
    marks: dict[int, list[tuple[str, int]]] = {}
    laps_column = -1
    for index, (t, text) in enumerate(frames):
        for event in feed.receive(text, t):
            if event.kind == "lap" and event.car_number and not event.data.get("inferred"):
                marks.setdefault(index, []).append((event.car_number, int(event.data["lap"])))
        if index in marks:  # the table's columns while laps are being completed (the race's)
            laps_column = ctd.column_spec(feed.model).index(Stat.LAPS)
    return LapMarks(marks, laps_column)


def serve(frames: list[Frame], port: int = 0, speed: float = 1.0,
          on_sent: Callable[[int], None] | None = None, marked: set[int] | None = None) -> Any:
    """Play ``frames`` to every websocket client of ``127.0.0.1:port`` on the running reactor.

    ``speed`` scales time (``math.inf``: as fast as the client reads). ``on_sent(index)`` is
    called right after each frame whose index is in ``marked`` is written to a client. Returns
    the listening port object (``getHost().port`` is the port).
    """
    from livetiming.service.plugins.carobama.replay import (
        ReplayServerFactory,
        ReplayServerProtocol,
        listen,
    )

    encoded = [(t, text.encode("utf-8")) for t, text in frames]
    watched = {id(encoded[i][1]): i for i in (marked or ())}

    class Protocol(ReplayServerProtocol):
        def sendMessage(self, payload: bytes, isBinary: bool = False, *args: Any, **kwargs: Any) -> None:
            super().sendMessage(payload, isBinary, *args, **kwargs)
            index = watched.get(id(payload))
            if index is not None and on_sent is not None:
                on_sent(index)

    factory = ReplayServerFactory(encoded, speed=speed)
    factory.protocol = Protocol
    return listen(factory, port, "127.0.0.1")


def _load_from(args: argparse.Namespace) -> EmperorLoad | BmiLoad:
    if args.source == "emperor":
        return EmperorLoad(cars=args.cars, hz=args.hz, minutes=args.minutes, flavour=args.flavour,
                           seed=args.seed, track=args.track)
    return BmiLoad(karts=args.cars, minutes=args.minutes, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    """Serve a load (or write it as a capture) from the command line."""
    parser = argparse.ArgumentParser(description="Synthetic upstream load for benchmarks and tests.")
    parser.add_argument("source", choices=("emperor", "bmi"))
    parser.add_argument("--cars", type=int, default=40, help="cars (karts for bmi), default 40")
    parser.add_argument("--hz", type=float, default=5.0, help="emperor: positions per car per second")
    parser.add_argument("--minutes", type=float, default=10.0, help="race length in minutes")
    parser.add_argument("--flavour", choices=("v1", "v2x"), default="v2x", help="emperor manager flavour")
    parser.add_argument("--track", default=None, help="emperor track (default: by race length)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=1.0,
                        help="time scale when serving (1 = real time, 0 = as fast as possible)")
    parser.add_argument("--start-at", type=float, default=0.0, help="skip frames before this second")
    parser.add_argument("--port", type=int, default=0, help="serve on this loopback port (0: any)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write a capture file instead of serving ('-': to stdout)")
    parser.add_argument("--sent-log", type=Path, default=None,
                        help="emperor: log when each lap-completing frame is sent (JSON lines)")
    args = parser.parse_args(argv)
    try:
        load = _load_from(args)
        if args.out is not None:
            if str(args.out) == "-":  # a stream for another process (the endurance benchmark)
                sim = load._simulator()
                write_capture(sim.frames(), sys.stdout, sim.header())
                return 0
            count = load.write(args.out)
            print(f"wrote {count:,} frames to {args.out}", file=sys.stderr)
            return 0
        frames = [(t - args.start_at, text) for t, text in load.frames() if t >= args.start_at]
    except ValueError as error:
        parser.error(str(error))
    from twisted.internet import reactor

    marked: set[int] = set()
    on_sent = None
    if args.sent_log is not None:
        if args.source != "emperor":
            parser.error("--sent-log needs the emperor load")
        marks = lap_frames(frames)
        marked = set(marks.by_frame)
        log = args.sent_log.open("w", encoding="utf-8")
        log.write(json.dumps({"laps_column": marks.laps_column}) + "\n")
        log.flush()

        def on_sent(index: int) -> None:
            log.write(json.dumps({"i": index, "t": time.time(), "laps": marks.by_frame[index]}) + "\n")
            log.flush()

    speed = math.inf if args.speed == 0 else args.speed
    port = serve(frames, args.port, speed, on_sent, marked)
    print(f"carobama-replay listening on ws://127.0.0.1:{port.getHost().port}/  "
          f"({len(frames):,} frames, {len(marked):,} lap-completing)", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
