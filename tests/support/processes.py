"""Run the project's commands as real subprocesses and wait on what they print.

Every wait has a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
STANDALONE_LINE = re.compile(r"Standalone server for uuid:(\S+) listening on port:(\d+)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody is listening on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A subprocess whose stdout and stderr lines are collected as they arrive."""

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | os.PathLike | None = None):
        full_env = dict(os.environ)
        full_env.pop("LIVETIMING_ROUTER", None)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd,
            text=True, encoding="utf-8", errors="replace",
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        for stream, sink, name in ((self.proc.stdout, self.stdout, "stdout"),
                                   (self.proc.stderr, self.stderr, "stderr")):
            threading.Thread(target=self._pump, args=(stream, sink, name), daemon=True).start()

    def _pump(self, stream, sink, name):
        for line in stream:
            sink.append(line.rstrip("\n"))
            self._lines.put((name, line.rstrip("\n")))

    def wait_for_line(self, pattern: str | re.Pattern, stream: str | None = None,
                      timeout: float = 20.0) -> re.Match:
        """Wait until a line (already seen or new) matches ``pattern``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        for name, lines in (("stdout", self.stdout), ("stderr", self.stderr)):
            if stream in (None, name):
                for line in list(lines):
                    found = regex.search(line)
                    if found:
                        return found
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line matching {regex.pattern!r} within {timeout}s;\n"
                                   f"stdout: {self.stdout[-20:]}\nstderr: {self.stderr[-20:]}")
            try:
                name, line = self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    raise TimeoutError(f"process exited ({self.proc.returncode}) before printing "
                                       f"{regex.pattern!r}; stderr: {self.stderr[-20:]}") from None
                continue
            if stream in (None, name):
                found = regex.search(line)
                if found:
                    return found

    def output(self) -> str:
        """Everything printed so far, stdout then stderr."""
        return "\n".join(self.stdout + self.stderr)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL now."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class ServiceProcess(Process):
    """``livetiming-service`` in standalone mode; knows its uuid and port once started."""

    def __init__(self, plugin: str, *args: str, env: dict | None = None, cwd=None):
        super().__init__([str(BIN / "livetiming-service"), plugin, "--standalone", "-v", *args],
                         env=env, cwd=cwd)
        found = self.wait_for_line(STANDALONE_LINE, stream="stderr", timeout=30)
        self.uuid = found.group(1)
        self.port = int(found.group(2))

    @property
    def url(self) -> str:
        """WebSocket URL of the standalone server."""
        return f"ws://127.0.0.1:{self.port}/"
