"""``carobama-simulate``: write simulated upstream captures.

    carobama-simulate emperor --cars 20 --minutes 25 --seed 1 --flavour v2x --rate 1 \\
        --out race.capture.jsonl.gz --truth race.truth.json
    carobama-simulate bmi --scenario demo --counter remaining --seed 1 \\
        --out heats.capture.jsonl.gz --truth heats.truth.json

Progress goes to stderr (a ``tqdm`` bar when tqdm is installed, otherwise a line every few seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .bmi import COUNTERS as BMI_COUNTERS
from .bmi import SCENARIOS as BMI_SCENARIOS
from .bmi import build_bmi
from .emperor import FLAVOURS, TRACKS, build_race, write_capture


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="carobama-simulate", description="Write simulated upstream captures.")
    sub = ap.add_subparsers(dest="source", required=True)
    em = sub.add_parser("emperor", help="Emperor Servers / ACSM race-control websocket (a race)")
    em.add_argument("--cars", type=int, default=20, help="number of cars (default 20)")
    length = em.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=None, help="timed race length (default 25)")
    length.add_argument("--laps", type=int, default=None, help="lap race length")
    em.add_argument("--seed", type=int, default=1, help="random seed (same seed, same bytes)")
    em.add_argument("--flavour", choices=FLAVOURS, default="v2x", help="manager version (default v2x)")
    em.add_argument("--rate", type=float, default=1.0, help="CarUpdate (53) frames per second per car")
    em.add_argument("--track", choices=sorted(TRACKS), default=None, help="track (default by race length)")
    em.add_argument(
        "--no-split-snapshots",
        action="store_true",
        help="v2x: no 200 per sector split (lap and event snapshots only)",
    )
    em.add_argument(
        "--no-events", action="store_true", help="no pit stops, swaps, collisions, chat, weather or leavers"
    )
    em.add_argument("--compresslevel", type=int, default=6, help="gzip level for .gz output (1-9)")
    em.add_argument("--out", required=True, help="capture file (.gz for gzip; '-' for stdout)")
    em.add_argument("--truth", default=None, help="also write the truth JSON here")
    em.add_argument("--quiet", action="store_true", help="no progress output")
    bmi = sub.add_parser("bmi", help="BMI karting heat websocket (heats back to back)")
    bmi.add_argument("--scenario", choices=BMI_SCENARIOS, default="demo",
                     help="which heats (default demo: sprint, lap race, qualifying, average, endurance)")
    bmi.add_argument("--counter", choices=BMI_COUNTERS, default="remaining",
                     help="what the counter C shows in timed heats (default remaining)")
    bmi.add_argument("--seed", type=int, default=1, help="random seed (same seed, same bytes)")
    bmi.add_argument("--compresslevel", type=int, default=9, help="gzip level for .gz output (1-9)")
    bmi.add_argument("--out", required=True, help="capture file (.gz for gzip; '-' for stdout)")
    bmi.add_argument("--truth", default=None, help="also write the truth JSON (checkpoints) here")
    return ap


def _main_bmi(args: argparse.Namespace) -> int:
    sim = build_bmi(args.scenario, seed=args.seed, counter=args.counter)
    out: Any = sys.stdout if args.out == "-" else args.out
    write_capture(sim.frames(), out, sim.header(), args.compresslevel)
    if args.truth:
        with open(args.truth, "w", encoding="utf-8") as fh:
            json.dump(sim.truth(), fh, indent=1, ensure_ascii=False)
            fh.write("\n")
    return 0


class _Progress:
    """tqdm bar if available, else a stderr line every few seconds."""

    def __init__(self, total_s: float, quiet: bool) -> None:
        self.total_s = max(total_s, 1.0)
        self.quiet = quiet
        self.start = time.monotonic()
        self.last = self.start
        self.bar: Any = None
        if not quiet:
            try:
                from tqdm import tqdm  # type: ignore[import-not-found]
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=round(self.total_s), unit="sim-s", file=sys.stderr)

    def update(self, sim_s: float, frames: int, size: int) -> None:
        """Report simulated seconds done, frames and characters written so far."""
        if self.quiet:
            return
        sim_s = min(sim_s, self.total_s)
        if self.bar is not None:
            self.bar.n = round(sim_s)
            self.bar.set_postfix(frames=frames, MB=round(size / 1e6, 1), refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last >= 3.0:
            self.last = now
            pct = 100.0 * sim_s / self.total_s
            print(
                f"  {pct:5.1f}%  sim {sim_s / 60:6.1f}/{self.total_s / 60:.1f} min  {frames} frames  "
                f"{size / 1e6:.1f} MB  {now - self.start:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def close(self, frames: int, size: int) -> None:
        """Final line (or bar close)."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.n = round(self.total_s)
            self.bar.close()
        print(
            f"done: {frames} frames, {size / 1e6:.1f} MB of text in {time.monotonic() - self.start:.1f} s",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    """Console script entry point."""
    args = _parser().parse_args(argv)
    if args.source == "bmi":
        return _main_bmi(args)
    minutes = args.minutes if args.laps is None else None
    if minutes is None and args.laps is None:
        minutes = 25.0
    if args.rate <= 0 or args.cars < 1:
        print("--rate must be > 0 and --cars >= 1", file=sys.stderr)
        return 2
    sim = build_race(
        args.flavour,
        cars=args.cars,
        minutes=minutes,
        laps=args.laps,
        seed=args.seed,
        rate=args.rate,
        track=args.track,
        events=not args.no_events,
        split_snapshots=False if args.no_split_snapshots else None,
    )
    c0 = sim.planned_connect_ms
    total = ((sim.expected_end_ms or 0) - c0) / 1000.0
    progress = _Progress(total, args.quiet)

    def report(frames: int, size: int) -> None:
        progress.update((sim.progress_ms() - c0) / 1000.0, frames, size)

    out: Any = sys.stdout if args.out == "-" else args.out
    frames, size = write_capture(sim.frames(), out, sim.header(), args.compresslevel, report)
    progress.close(frames, size)
    if args.truth:
        with open(args.truth, "w", encoding="utf-8") as fh:
            json.dump(sim.truth(), fh, indent=1, ensure_ascii=False)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
