"""What every benchmark in ``bench/`` shares: the command-line contract, result rows and the
docs/BENCHMARKS.md entry.

Contract (``bench/run_all.py`` and ``make bench`` rely on it): each ``bench/bench_*.py`` script
accepts ``--quick`` (the shortened form ``make bench`` runs), ``--results FILE`` (write its rows
as JSON there) and ``--no-append`` (leave docs/BENCHMARKS.md alone), prints its figures, and
unless told otherwise appends a dated section with its method and machine to
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "BENCHMARKS.md"


@dataclass
class Row:
    """One measured figure against its target (``target`` is text, e.g. "<= 3 ms median")."""

    benchmark: str
    figure: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None  # None: recorded only, no target

    def text(self) -> str:
        """The row as one line for the terminal and the Markdown entry."""
        verdict = "" if self.ok is None else (" PASS" if self.ok else " FAIL")
        target = f" (target {self.target})" if self.target else ""
        value = f"{self.value:,.0f}" if abs(self.value) >= 1000 else f"{self.value:,.3g}"
        return f"{self.figure}: {value} {self.unit}{target}{verdict}"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--quick``, ``--results`` and ``--no-append`` to a benchmark's parser."""
    parser.add_argument("--quick", action="store_true",
                        help="the shortened form run by make bench")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the result rows as JSON to this file")
    parser.add_argument("--no-append", action="store_true",
                        help="do not append to docs/BENCHMARKS.md")


def commit() -> str:
    """The checkout's commit (with ``+dirty`` when it has uncommitted changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        # The benchmarks' own entries in docs/BENCHMARKS.md do not make the measured code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)docs/BENCHMARKS.md"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    """CPU model, core count, Python and OS, for the record."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def finish(args: argparse.Namespace, title: str, method: str, rows: list[Row],
           notes: list[str] | None = None) -> None:
    """Print the rows, write ``--results`` and append the docs entry unless ``--no-append``."""
    for row in rows:
        print(f"  {row.text()}")
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps([asdict(row) for row in rows], indent=1))
    if not args.no_append:
        append_entry(title, method, [row.text() for row in rows] + list(notes or []))


def append_entry(title: str, method: str, lines: list[str]) -> None:
    """Append a dated section (method, machine, commit, figures) to docs/BENCHMARKS.md."""
    today = datetime.date.today().isoformat()
    text = (f"\n## {title} ({today}, commit {commit()})\n\n"
            f"Method: {method}\n\nMachine: {machine()}.\n\n"
            + "".join(f"- {line}\n" for line in lines))
    with DOC.open("a", encoding="utf-8") as doc:
        doc.write(text)
