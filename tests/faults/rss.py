"""Resident memory of a process, sampled in the background while a fault is injected."""

from __future__ import annotations

import threading


def rss_bytes(pid: int) -> int | None:
    """Current resident set size of ``pid`` (Linux ``/proc``), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a daemon thread; ``max`` is the peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            value = rss_bytes(self.pid)
            if value is not None:
                self.samples.append(value)
            if self._stop.wait(self.interval):
                return

    @property
    def max(self) -> int:
        """Highest RSS seen (bytes)."""
        return max(self.samples, default=0)


def mib(value: float) -> float:
    """Bytes as MiB, one decimal."""
    return round(value / 1048576, 1)
