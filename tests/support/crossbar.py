"""Run the project's Crossbar router (deploy/crossbar) as a subprocess for tests.

    router = CrossbarRouter()            # or CrossbarRouter(salt="...") for salted WAMP-CRA
    router.start()                       # blocks until the WebSocket transport accepts connections
    ... connect to router.url with authid router.authid and secret router.secret ...
    router.restart()                     # same port, same credentials
    router.close()                       # stop() + delete the temporary node directory

or ``with CrossbarRouter() as router: ...``. The pytest fixtures ``crossbar_router`` and
``crossbar_router_salted`` in tests/conftest.py wrap this class.

The crossbar executable is looked up by :func:`find_crossbar`. Each router gets its own copy of
deploy/crossbar in a temporary directory (Crossbar writes key.priv, key.pub and node.pid into its
node directory), a free loopback port and a random secret. Everything Crossbar prints goes to
``router.log_path`` (kept until close(), appended to across restarts); ``router.log_tail()``
returns its end for assertion messages.

Framework-neutral on purpose (plain subprocess and sockets, no reactor), so Twisted trial tests,
plain pytest tests and asyncio tests can all use it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CROSSBAR_NODE_TEMPLATE = REPO_ROOT / "deploy" / "crossbar"
REPO_CROSSBAR = REPO_ROOT / ".venv-crossbar" / "bin" / "crossbar"

# Files Crossbar generates in its node directory; never copied from the template.
_GENERATED = ("key.priv", "key.pub", "node.pid", "*.log", "__pycache__", ".crossbar")

# Variables of the router's environment that the helper sets itself; any value inherited from the
# developer's shell (or a loaded livetiming.env) is dropped first.
_ROUTER_ENV_PREFIXES = ("LIVETIMING_", "CROSSBAR_")

# Settings of the salted router fixture (crossbar_router_salted in tests/conftest.py).
TEST_SALT = "carobama-test-salt"
TEST_ITERATIONS = 100
TEST_KEYLEN = 32

DEFAULT_STARTUP_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 20.0


class CrossbarNotFound(RuntimeError):
    """No crossbar executable is available (tests should be skipped)."""


class CrossbarStartError(RuntimeError):
    """The router did not come up; the message ends with the tail of its log."""


def find_crossbar() -> str | None:
    """Locate the crossbar executable.

    Order: ``$CROSSBAR`` (relative paths are tried against the working directory, then the repo
    root), then ``<repo>/.venv-crossbar/bin/crossbar`` (created by ``make crossbar``), then
    ``crossbar`` on PATH. Returns None when there is none. A ``$CROSSBAR`` that points nowhere
    raises CrossbarNotFound instead: an explicit setting (as ``make test`` passes) must not turn
    into silently skipped tests.
    """
    explicit = os.environ.get("CROSSBAR", "").strip()
    if explicit:
        for candidate in (Path(explicit), REPO_ROOT / explicit):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate.resolve())
        found = shutil.which(explicit)
        if found:
            return found
        raise CrossbarNotFound(f"CROSSBAR={explicit!r} is not an executable file")
    if REPO_CROSSBAR.is_file() and os.access(REPO_CROSSBAR, os.X_OK):
        return str(REPO_CROSSBAR)
    return shutil.which("crossbar")


SKIP_REASON = (
    "crossbar executable not found: run `make crossbar` (installs .venv-crossbar from "
    "deploy/crossbar/requirements.txt), set CROSSBAR=/path/to/crossbar or put crossbar on PATH"
)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel's choice of an ephemeral port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class CrossbarRouter:
    """One Crossbar node started from a temporary copy of deploy/crossbar.

    :param secret: the services' shared secret (``LIVETIMING_SHARED_SECRET``); random when None.
        An empty string starts the router without a secret (it then refuses to start).
    :param authid: the services' authid (``LIVETIMING_AUTH_ID``).
    :param salt: when set, the router uses salted WAMP-CRA (``LIVETIMING_SHARED_SECRET_SALT``)
        with ``iterations`` / ``keylen`` (None = the router's defaults, 1000 and 32).
    :param port: fixed port, else a free one is picked at the first start() and kept.
    :param executable: crossbar executable; default :func:`find_crossbar`.
    :param extra_env: more environment variables for the router process.
    """

    host = "127.0.0.1"
    path = "/ws"
    realm = "timing"

    def __init__(
        self,
        *,
        secret: str | None = None,
        authid: str = "services",
        salt: str | None = None,
        iterations: int | None = None,
        keylen: int | None = None,
        port: int | None = None,
        executable: str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        extra_env: dict[str, str] | None = None,
    ):
        self.secret = secrets.token_urlsafe(24) if secret is None else secret
        self.authid = authid
        self.salt = salt
        self.iterations = iterations
        self.keylen = keylen
        self.port = port
        self._fixed_port = port is not None
        self.executable = executable
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_env = dict(extra_env or {})
        self.workdir: Path | None = None
        self.node_dir: Path | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None  # duration of the last successful start()
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    # -- public API -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("router not started yet: no port assigned")
        return f"ws://{self.host}:{self.port}{self.path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> CrossbarRouter:
        """Start the node and block until its transport accepts TCP connections.

        After stop(), start() reuses the same port, credentials and node directory.
        Raises CrossbarNotFound or CrossbarStartError.
        """
        if self.running:
            raise RuntimeError("router already running")
        if self.executable is None:
            self.executable = find_crossbar()
            if self.executable is None:
                raise CrossbarNotFound(SKIP_REASON)
        self._prepare_node_dir()
        # An auto-picked port can be taken by someone else between picking and binding; only
        # the first start may move to another port (restarts must keep the URL).
        attempts = 3 if (self.starts == 0 and not self._fixed_port) else 1
        for attempt in range(1, attempts + 1):
            if self.port is None or (attempt > 1):
                self.port = free_tcp_port(self.host)
            try:
                self._start_once()
                self.starts += 1
                return self
            except CrossbarStartError as exc:
                if attempt < attempts and "cannot_listen" in str(exc):
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self) -> int | None:
        """SIGTERM the node, SIGKILL its process group after stop_timeout; wait for the exit.

        Returns the node's exit code (None if it was not running). The port is free afterwards.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self._kill_group(proc.pid)
                    proc.wait(timeout=self.stop_timeout)
            # Workers run in the node's process group; make sure none outlives the controller
            # (a lingering router worker would keep the port bound and break restart()).
            self._wait_group_gone(proc.pid)
            return proc.returncode
        finally:
            self._write_marker(f"stopped (exit code {proc.returncode})")
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def restart(self) -> CrossbarRouter:
        """stop() then start() on the same port with the same credentials."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """stop() and delete the temporary node directory (and the log with it)."""
        try:
            self.stop()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = self.node_dir = self.log_path = None

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        if self._log_file is not None:
            self._log_file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def environment(self) -> dict[str, str]:
        """The environment the router process is started with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ROUTER_ENV_PREFIXES)}
        env.update(
            PYTHONUNBUFFERED="1",
            LIVETIMING_SHARED_SECRET=self.secret,
            LIVETIMING_AUTH_ID=self.authid,
            LIVETIMING_ROUTER_PORT=str(self.port),
            LIVETIMING_ROUTER_INTERFACE=self.host,
        )
        if self.salt is not None:
            env["LIVETIMING_SHARED_SECRET_SALT"] = self.salt
            if self.iterations is not None:
                env["LIVETIMING_SHARED_SECRET_ITERATIONS"] = str(self.iterations)
            if self.keylen is not None:
                env["LIVETIMING_SHARED_SECRET_KEYLEN"] = str(self.keylen)
        env.update(self.extra_env)
        return env

    def __enter__(self) -> CrossbarRouter:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<CrossbarRouter {state} port={self.port} pid={self.pid} node_dir={self.node_dir}>"

    # -- internals ------------------------------------------------------------------------

    def _prepare_node_dir(self) -> None:
        if self.workdir is not None:
            return
        self.workdir = Path(tempfile.mkdtemp(prefix="carobama-crossbar-"))
        self.node_dir = self.workdir / "node"
        shutil.copytree(CROSSBAR_NODE_TEMPLATE, self.node_dir, ignore=shutil.ignore_patterns(*_GENERATED))
        self.log_path = self.workdir / "crossbar.log"

    def _command(self) -> list[str]:
        # "edge": the standalone personality does not hand the worker controller to router
        # components, which deploy/crossbar/authenticator.py needs (see deploy/crossbar/README.md).
        return [
            self.executable,
            "edge",
            "start",
            "--cbdir",
            str(self.node_dir),
            "--color",
            "false",
            "--logformat",
            "standard",
            "--loglevel",
            "info",
        ]

    def _write_marker(self, text: str) -> None:
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.write(f"===== carobama test helper: {text} =====\n")
            self._log_file.flush()

    def _start_once(self) -> None:
        if self._log_file is None:
            self._log_file = open(self.log_path, "a", encoding="utf-8")
        self._write_marker(f"starting {' '.join(self._command())} on port {self.port}")
        began = time.monotonic()
        self._proc = subprocess.Popen(
            self._command(),
            cwd=self.workdir,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() can reach the workers too
        )
        deadline = began + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise CrossbarStartError(
                    f"crossbar exited with code {code} before listening on port {self.port}\n"
                    + self.log_tail()
                )
            if _port_accepts(self.host, self.port):
                self.startup_seconds = time.monotonic() - began
                self._write_marker(f"listening on port {self.port} after {self.startup_seconds:.2f}s")
                return
            if time.monotonic() > deadline:
                self.stop()
                raise CrossbarStartError(
                    f"crossbar did not listen on port {self.port} within {self.startup_timeout:.0f}s\n"
                    + self.log_tail()
                )
            time.sleep(0.1)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_group_gone(self, pgid: int) -> None:
        deadline = time.monotonic() + self.stop_timeout
        killed = False
        while True:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            if time.monotonic() > deadline:
                if killed:
                    return  # only zombies waiting for a reaper can be left; they hold no port
                self._kill_group(pgid)
                killed = True
                deadline = time.monotonic() + 5
            time.sleep(0.05)
