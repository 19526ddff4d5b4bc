"""Issue 9 §7: clients that stop reading.

A 40-car race (simulated, replayed in real time) makes large states and a 5 Hz position stream.
Next to a healthy standalone client and a healthy page client (both read all the time, in
threads), laggards connect and never read a byte: a standalone websocket client and a page
(``/pitwall/socket``) client, each with a 4 KiB receive buffer so the service's buffers fill. The
service must drop every laggard with a log line, keep serving the healthy clients without a gap,
and its memory (VmRSS) must stay bounded.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.secrets_check import assert_secret_absent, with_password
from tests.faults.upstream import count_lines
from tests.support.pitwall import JsonSocket, PitWallService, Replay
from tests.support.processes import BIN
from tests.support.wsclient import StandaloneClient, raw_handshake

STANDALONE_DROP = r"Dropping standalone client .* stopped reading"
PAGE_DROP = r"Dropping pit-wall client|Pit wall client \S+ disconnected"


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (VmRSS in /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


class Reader(threading.Thread):
    """Reads a healthy client all the time and notes when each frame arrived."""

    def __init__(self, receive: Callable[[float], object]):
        super().__init__(daemon=True)
        self.receive = receive
        self.times: list[float] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.receive(1.0)
            except TimeoutError:
                continue
            except Exception:
                return
            self.times.append(time.monotonic())

    def longest_gap(self, since: float) -> float:
        """The longest time without a frame since ``since`` (up to now)."""
        marks = [since] + [t for t in self.times if t >= since] + [time.monotonic()]
        return max(b - a for a, b in zip(marks, marks[1:], strict=False))


@pytest.fixture(scope="module")
def big_race(tmp_path_factory) -> Path:
    """A simulated 40-car race, 4 minutes, one car update per car per second."""
    path = tmp_path_factory.mktemp("big-race") / "race-40.jsonl"
    subprocess.run([str(BIN / "carobama-simulate"), "emperor", "--cars", "40", "--minutes", "4",
                    "--rate", "1", "--seed", "9", "--out", str(path), "--quiet"], check=True, timeout=120)
    return path


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; returns when it did."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic()


def test_clients_that_stop_reading_are_dropped_and_the_others_keep_receiving(
        big_race, service_env, tmp_path, soak, figures):
    laggards = 8 if soak else 1
    replay = Replay(big_race, "--speed", "1", "--loop")
    # 20 states a second: the laggards' buffers fill sooner
    url, password = with_password(replay.url)
    service = PitWallService(url, "--publish-interval", "0.05",
                             env={**service_env, "LIVETIMING_STANDALONE_MAX_STALL": "3"})
    standalone = StandaloneClient(service.url)
    page = JsonSocket(f"ws://127.0.0.1:{service.port}/pitwall/socket")
    readers = [Reader(standalone.recv), Reader(page.recv)]
    for reader in readers:
        reader.start()
    stalled = []
    rss_samples: list[int] = []
    try:
        wait_until(lambda: all(len(r.times) >= 20 for r in readers), 60, "the healthy clients")
        rss_before = rss_kib(service.proc.pid)
        began = time.monotonic()
        for _ in range(laggards):
            stalled.append(raw_handshake(service.port, rcvbuf=4096)[0])
            stalled.append(raw_handshake(service.port, path="/pitwall/socket", rcvbuf=4096)[0])

        drops: dict[str, float] = {}

        def both_dropped() -> bool:
            rss_samples.append(rss_kib(service.proc.pid))
            for pattern in (STANDALONE_DROP, PAGE_DROP):
                if pattern not in drops and count_lines(service, pattern) >= laggards:
                    drops[pattern] = time.monotonic()
            return len(drops) == 2

        wait_until(both_dropped, 150, "both laggards to be dropped")
        after_drops = time.monotonic()
        wait_until(lambda: all(len([t for t in r.times if t > after_drops]) >= 5 for r in readers), 30,
                   "frames after the drops")
        gaps = [reader.longest_gap(began) for reader in readers]
        rss_after = rss_kib(service.proc.pid)
        assert service.proc.poll() is None
    finally:
        for reader in readers:
            reader.running = False
        for sock in stalled:
            sock.close()
        standalone.close()
        page.close()
        service.stop()
        replay.stop()
    growth_mib = (max(rss_samples + [rss_after]) - rss_before) / 1024
    assert_secret_absent(password, [service, replay], [tmp_path])
    assert max(gaps) < 5.0, f"a healthy client waited {max(gaps):.1f} s for a frame"
    assert growth_mib < 64, f"the service grew by {growth_mib:.0f} MiB"
    figures["laggards_per_kind"] = laggards
    figures["standalone_drop_after_s"] = round(drops[STANDALONE_DROP] - began, 2)
    figures["page_drop_after_s"] = round(drops[PAGE_DROP] - began, 2)
    figures["standalone_max_stall_setting_s"] = 3
    figures["healthy_longest_gap_s"] = round(max(gaps), 2)
    figures["rss_before_mib"] = round(rss_before / 1024, 1)
    figures["rss_peak_growth_mib"] = round(growth_mib, 1)
    figures["rss_after_mib"] = round(rss_after / 1024, 1)
