"""Upstream faults for the fault suite: a replay server that is killed and resumed where it stopped.

:class:`ResumableUpstream` plays a capture with ``carobama-replay`` on a fixed loopback port. After
it is killed (SIGKILL, like a crashed or restarted timing server), :meth:`ResumableUpstream.resume`
starts a new replay server on the same port that continues with the first frame the service never
received: the number of frames the service received is read from its own ``--capture`` journal
(flushed frame by frame), the remaining frames are written to a new capture file, and the replay
is started with ``--start-at`` the time of that frame so its pacing continues where it was. The
service therefore gets every frame exactly once, whatever moment the kill hit, and the journal
proves it (frames lost: 0, duplicated: 0).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from livetiming.service.plugins.carobama.capture import read_capture
from tests.integration.test_emperor_end_to_end import Replay
from tests.support.processes import Process


def count_lines(process: Process, pattern: str) -> int:
    """How many lines the process has printed (stdout and stderr) that match ``pattern``."""
    regex = re.compile(pattern)
    return sum(1 for line in process.stdout + process.stderr if regex.search(line))


def wait_for_count(process: Process, pattern: str, count: int, timeout: float) -> float:
    """Wait until ``count`` lines match ``pattern``; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while count_lines(process, pattern) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} lines matching {pattern!r} within {timeout}s;\n"
                               f"{process.output()[-3000:]}")
        if process.proc.poll() is not None:
            raise AssertionError(f"process exited ({process.proc.returncode}):\n{process.output()[-3000:]}")
        time.sleep(0.02)
    return time.monotonic()


def journal_frames(journal: Path) -> list[str]:
    """The data of every frame in a capture journal, in order (empty if it does not exist yet)."""
    if not journal.exists():
        return []
    _header, frames = read_capture(journal)
    with frames:
        return [data for _t, data in frames]


class ResumableUpstream:
    """A capture served by ``carobama-replay`` that can be killed and resumed exactly.

    ``capture`` is the original capture, ``folder`` where the resumed remainders are written,
    ``journal`` the service's ``--capture`` file (what it really received), ``speed`` the replay
    speed. ``servers`` lists every replay process started, for log checks.
    """

    def __init__(self, capture: Path, folder: Path, journal: Path, speed: float):
        lines = capture.read_text(encoding="utf-8").splitlines(keepends=True)
        self.header = lines[0] if '"capture"' in lines[0] else ""
        self.lines = lines[1:] if self.header else lines
        self.times = [json.loads(line)["t"] for line in self.lines]
        self.data = [json.loads(line)["data"] for line in self.lines]
        self.folder = folder
        self.journal = journal
        self.speed = speed
        self.port = 0
        self.replay: Replay | None = None
        self.servers: list[Replay] = []
        self.listening_at = 0.0

    @property
    def url(self) -> str:
        """The replay's websocket URL (the same across restarts)."""
        assert self.replay is not None
        return self.replay.url

    def received(self) -> int:
        """Frames the service has journaled so far."""
        return len(journal_frames(self.journal))

    def start(self, index: int = 0) -> Replay:
        """Serve the frames from ``index`` on, paced as in the capture from that frame's time."""
        remainder = self.folder / f"remainder-{index}.jsonl"
        remainder.write_text(self.header + "".join(self.lines[index:]), encoding="utf-8")
        start_at = self.times[index] if index < len(self.times) else 0.0
        self.replay = Replay(remainder, "--speed", repr(self.speed), "--start-at", repr(start_at),
                             port=self.port)
        self.listening_at = time.monotonic()
        self.port = self.replay.port
        self.servers.append(self.replay)
        return self.replay

    def kill(self) -> None:
        """SIGKILL the replay server: the connection ends without a websocket Close."""
        assert self.replay is not None
        self.replay.kill()

    def resume(self) -> Replay:
        """Start again with the first frame the service has not received."""
        return self.start(self.received())

    def all_sent(self) -> bool:
        """True once the service has received every frame of the capture."""
        return self.received() >= len(self.data)

    def stop(self) -> None:
        """Stop every replay server still running."""
        for server in self.servers:
            server.stop()
