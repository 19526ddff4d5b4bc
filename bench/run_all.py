"""Run every issue-#8 benchmark in its short form and print one table of figure, target, verdict.

``make bench`` runs this. Each benchmark is a separate process (``bench/bench_*.py --quick
--results FILE``), so one's memory and threads never disturb the next; each appends its own
dated entry (method, machine, commit) to docs/BENCHMARKS.md unless ``--no-append`` is given.
The exit status is 1 when a target is missed or a benchmark fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DOC, REPO, Row, commit, machine  # noqa: E402

#: docs/BENCHMARKS.md keeps the table of the latest full run between these two lines.
LATEST_BEGIN, LATEST_END = "<!-- latest make bench -->", "<!-- /latest make bench -->"

#: In the order they run (the quiet, in-process ones first, the real-time ones last).
BENCHMARKS = ("bench_ingest", "bench_cycle", "bench_analysis", "bench_endurance", "bench_load",
              "bench_page")


def run_one(name: str, results: Path, no_append: bool) -> tuple[list[Row], float, int]:
    """Run one benchmark; its rows, wall time and exit status."""
    argv = [sys.executable, str(REPO / "bench" / f"{name}.py"), "--quick", "--results", str(results)]
    if no_append:
        argv.append("--no-append")
    started = time.monotonic()
    status = subprocess.run(argv, cwd=REPO).returncode
    rows = [Row(**row) for row in json.loads(results.read_text())] if results.exists() else []
    return rows, time.monotonic() - started, status


def targeted(rows: list[Row]) -> list[tuple[Row, str]]:
    """The rows that have a target, each with its value as shown."""
    return [(row, f"{row.value:,.0f}" if abs(row.value) >= 1000 else f"{row.value:,.3g}")
            for row in rows if row.ok is not None]


def table(rows: list[Row]) -> str:
    """The rows with a target as a fixed-width table."""
    lines = [f"{'figure':<72} {'value':>14}  {'target':<18} result", "-" * 114]
    for row, value in targeted(rows):
        lines.append(f"{row.figure[:72]:<72} {value + ' ' + row.unit[:5]:>14}  {row.target:<18} "
                     f"{'PASS' if row.ok else 'FAIL'}")
    return "\n".join(lines)


def write_latest(rows: list[Row], seconds: float, measured_on: str) -> None:
    """Put the table of this full run at the top of docs/BENCHMARKS.md (replacing the last one)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [LATEST_BEGIN, f"## Latest `make bench`: {when}, commit {measured_on}", "",
             f"Machine: {machine()}. All {len(BENCHMARKS)} benchmarks in their short form, "
             f"{seconds / 60:.1f} minutes in all; each one's entry below has its method and every "
             "figure.", "", "| figure | value | target | result |", "| --- | --- | --- | --- |"]
    for row, value in targeted(rows):
        lines.append(f"| {row.benchmark}: {row.figure} | {value} {row.unit} | {row.target} | "
                     f"{'PASS' if row.ok else '**FAIL**'} |")
    lines.append(LATEST_END)
    text = DOC.read_text(encoding="utf-8")
    if LATEST_BEGIN in text and LATEST_END in text:
        head, rest = text.split(LATEST_BEGIN, 1)
        tail = rest.split(LATEST_END, 1)[1]
    else:
        cut = text.find("\n## ")
        cut = len(text) if cut < 0 else cut + 1
        head, tail = text[:cut], text[cut:]
    DOC.write_text(head.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n\n" + tail.lstrip("\n"),
                   encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (all, or those named) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("only", nargs="*", choices=[[], *BENCHMARKS], default=[],
                        help="run only these benchmarks")
    parser.add_argument("--no-append", action="store_true", help="leave docs/BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    all_rows: list[Row] = []
    failed: list[str] = []
    started = time.monotonic()
    measured_on = commit()
    with tempfile.TemporaryDirectory(prefix="bench-results-") as scratch:
        for index, name in enumerate(names, 1):
            print(f"\n[{index}/{len(names)}] {name} (elapsed {time.monotonic() - started:.0f} s)", flush=True)
            rows, seconds, status = run_one(name, Path(scratch) / f"{name}.json", args.no_append)
            print(f"[{index}/{len(names)}] {name}: {seconds:.0f} s, exit status {status}", flush=True)
            if not rows:
                failed.append(name)
            all_rows += rows
    print(f"\nmake bench: {len(names)} benchmarks in {time.monotonic() - started:.0f} s\n")
    print(table(all_rows))
    missed = [row for row in all_rows if row.ok is False]
    if failed:
        print(f"\nno results from: {', '.join(failed)}")
    print(f"\n{sum(row.ok is True for row in all_rows)} targets met, {len(missed)} missed")
    if not args.no_append and not args.only:
        write_latest(all_rows, time.monotonic() - started, measured_on)
        print(f"table written to the top of {DOC.relative_to(REPO)}")
    return 1 if missed or failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
