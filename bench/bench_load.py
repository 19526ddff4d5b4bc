"""Benchmark: latency and cost at load, 40 cars x 5 Hz, standalone and through Crossbar (issue #8).

Method
------
The load generator (``bench/load.py``, as a process) serves a synthetic 40-car Emperor race
(``v2x``: positions 5 times a second per car, a ``200`` snapshot per lap and per sector) in
real time from its start, on a 44-second track so that laps come often (about one a second
over the grid). Before serving, it runs the Emperor feed over the frames to know which frames
complete which laps, and while serving it logs the wall time at which each of those frames has
been written to the service's socket.

The real service (``livetiming-service carobama``) reads it with everything on: analysis,
recording (``-r``), the database (SQLite), the capture journal, its default publish interval.
It runs twice on the same race, one mode at a time:

1. standalone (``--standalone``), with a client of the legacy protocol (``bench/listener.py``);
2. WAMP, publishing through a real Crossbar router (``deploy/crossbar``, on a free loopback
   port) to a subscriber of the service's topic (``bench/listener.py wamp``).

The client writes down when each state arrives. Afterwards each state is decoded, and for every
lap-completing frame the latency is the time from the frame leaving the load generator to the
first state showing that car with that many laps (the clocks are the same machine's wall clock).
The CPU of the service process (and of every Crossbar process) comes from ``/proc/<pid>/stat``
over the race after a 20-second warm-up. Targets: latency p99 <= 250 ms in both modes, service
CPU <= 25 % of one core.

Run: ``.venv/bin/python bench/bench_load.py`` (``--quick`` for the short form). Needs Crossbar
(``make crossbar``; ``CROSSBAR`` names its executable).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_cycle import percentile  # noqa: E402
from bench.bench_page import CpuMeter, descendants  # noqa: E402
from bench.common import REPO, Row, add_common_args, finish  # noqa: E402

NAME = "bench_load"
LATENCY_TARGET_MS = 250.0
CPU_TARGET = 25.0
#: The simulated race's grid wait; the load starts there (its snapshot), see bench_page.
START_AT = 59.0
TRACK = "ks_vallelunga/club_circuit"
WARMUP = 20.0
PYTHON = sys.executable


def read_jsonl(path: Path) -> list[dict]:
    """The JSON lines of ``path`` (a last line still being written is skipped)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def latencies(sent: list[dict], arrived: list[dict]) -> tuple[list[float], int]:
    """Milliseconds from each lap-completing frame sent to its lap shown; and laps never shown."""
    from livetiming.service.compression import decompress_state

    laps_column = sent[0]["laps_column"]
    shown: list[tuple[float, dict[str, int]]] = []
    for record in arrived:
        cars = decompress_state(record["payload"]).get("cars", [])
        shown.append((record["t"], {str(car[0]): _int(car[laps_column]) for car in cars
                                    if len(car) > laps_column}))
    found, missing = [], 0
    for mark in sent[1:]:
        for number, lap in mark["laps"]:
            at = next((t for t, laps in shown if t >= mark["t"] and laps.get(number, -1) >= lap), None)
            if at is None:
                missing += 1
            else:
                found.append((at - mark["t"]) * 1000)
    return found, missing


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def run_mode(mode: str, folder: Path, minutes: float, cars: int, hz: float) -> dict:
    """One run of the race in ``mode`` ("standalone" or "crossbar"); latencies and CPU."""
    from tests.support.crossbar import CrossbarRouter
    from tests.support.processes import BIN, STANDALONE_LINE, Process

    run = folder / mode
    run.mkdir()
    sent_log, arrivals = run / "sent.jsonl", run / "arrived.jsonl"
    load = Process([PYTHON, str(REPO / "bench" / "load.py"), "emperor", "--cars", str(cars),
                    "--hz", str(hz), "--minutes", str(minutes), "--track", TRACK, "--seed", "40",
                    "--start-at", str(START_AT), "--sent-log", str(sent_log)])
    url = load.wait_for_line(r"listening on (ws://\S+)", timeout=120).group(1) + "api/race-control"
    env = {f"LIVETIMING_{kind.upper()}_DIR": str(run / kind)
           for kind in ("state", "log", "analysis", "recordings", "data")}
    argv = [str(BIN / "livetiming-service"), "carobama", "-v", "--uuid", f"load{mode}",
            "-r", str(run / "recording.zip"), "--url", url, "--database",
            f"sqlite:///{run / 'store.db'}", "--capture", str(run / "journal.jsonl")]
    router = service = listener = None
    try:
        if mode == "crossbar":
            router = CrossbarRouter().start()
            env.update(LIVETIMING_ROUTER=router.url, LIVETIMING_SHARED_SECRET=router.secret,
                       LIVETIMING_AUTH_ID=router.authid)
            service = Process(argv, env=env)
            service.wait_for_line(r"Joined WAMP realm", timeout=60)
            listener = Process([PYTHON, str(REPO / "bench" / "listener.py"), "wamp", router.url,
                                "--uuid", f"load{mode}", "--out", str(arrivals)])
        else:
            service = Process(argv[:3] + ["--standalone"] + argv[3:], env=env)
            port = service.wait_for_line(STANDALONE_LINE, timeout=60).group(2)
            listener = Process([PYTHON, str(REPO / "bench" / "listener.py"), "standalone",
                                f"ws://127.0.0.1:{port}/", "--out", str(arrivals)])
        listener.wait_for_line("listening", timeout=60)
        started = time.monotonic()
        time.sleep(WARMUP)
        service_cpu = CpuMeter([service.proc.pid])
        router_pids = ([router.pid] + descendants(router.pid, "")) if router is not None else []
        router_cpu = CpuMeter(router_pids)
        service_cpu.start()
        router_cpu.start()
        time.sleep(max(10.0, minutes * 60 + 20 - (time.monotonic() - started)))
        result = {"service_cpu": service_cpu.stop(), "router_cpu": router_cpu.stop() if router_pids else None}
        rss = _rss_mb(service.proc.pid)
    finally:
        for process in (listener, service, load):
            if process is not None:
                process.stop()
        if router is not None:
            router.close()
    found, missing = latencies(read_jsonl(sent_log), read_jsonl(arrivals))
    problems = [line for line in service.stderr if "Traceback" in line or "[error]" in line.lower()]
    return {**result, "latencies": found, "missing": missing, "rss": rss, "problems": problems}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def mode_rows(mode: str, result: dict) -> list[Row]:
    """The figures of one mode's run."""
    label = "standalone client" if mode == "standalone" else "WAMP subscriber through Crossbar"
    values = result["latencies"]
    rows = []
    if values:
        p99 = percentile(values, 0.99)
        rows += [
            Row(NAME, f"latency to {label}, p50", statistics.median(values), "ms"),
            Row(NAME, f"latency to {label}, p99", p99, "ms", f"<= {LATENCY_TARGET_MS:.0f} ms",
                p99 <= LATENCY_TARGET_MS and result["missing"] == 0),
            Row(NAME, f"latency to {label}, max", max(values), "ms"),
        ]
    rows += [
        Row(NAME, f"laps measured ({mode}) / never shown", len(values), f"laps, {result['missing']} missing"),
        Row(NAME, f"service CPU ({mode}: analysis, recording, database, journal)", result["service_cpu"],
            "% of one core", f"<= {CPU_TARGET:.0f} %", result["service_cpu"] <= CPU_TARGET),
        Row(NAME, f"service resident memory at the end ({mode})", result["rss"], "MB"),
    ]
    if result["router_cpu"] is not None:
        rows.append(Row(NAME, "Crossbar CPU (all its processes)", result["router_cpu"], "% of one core"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run both modes and report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_args(parser)
    parser.add_argument("--minutes", type=float, default=None,
                        help="minutes of race per mode (default 6, 2.5 with --quick)")
    parser.add_argument("--cars", type=int, default=40)
    parser.add_argument("--hz", type=float, default=5.0)
    args = parser.parse_args(argv)
    minutes = args.minutes or (2.5 if args.quick else 6.0)
    print(f"{NAME}: {args.cars} cars x {args.hz:g} Hz, {minutes:g} min per mode", flush=True)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch:
        for mode in ("standalone", "crossbar"):
            result = run_mode(mode, Path(scratch), minutes, args.cars, args.hz)
            rows += mode_rows(mode, result)
            if result["problems"]:
                notes.append(f"{mode}: service logged {len(result['problems'])} errors, first: "
                             f"{result['problems'][0][:160]}")
    method = (f"`bench/bench_load.py`{' --quick' if args.quick else ''}: the load generator serves a "
              f"{args.cars}-car v2x Emperor race (positions {args.hz:g} Hz per car, a 200 per lap and "
              f"sector, 44 s laps) in real time for {minutes:g} min, logging when each lap-completing "
              "frame is written; the service (analysis, recording, SQLite database, capture journal, "
              "default publish interval) runs standalone with a legacy-protocol client, then in WAMP "
              "mode through a real Crossbar router with a subscriber; latency = frame sent to the "
              "first state showing the lap; CPU from /proc over the race after 20 s of warm-up.")
    finish(args, f"Latency and cost at load, {args.cars} cars x {args.hz:g} Hz", method, rows, notes)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
