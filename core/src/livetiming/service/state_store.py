"""Saving and resuming a service's state as JSON, crash-safely.

The state file is for resuming (``-s``), not for clients, so it is written at
most once a second on the reactor clock (``ThrottledStateFile``) rather than
inside every update; shutdown writes the last state. A process killed
outright loses at most the last second.

Format: the state object (``cars``, ``session``, ``messages``, ``highlight``)
plus, from this framework, ``colSpec`` (the columns the cars were rendered
with, as in the manifest) and ``trackDataSpec``. The original framework reads
the file as a state and ignores the two extra keys; files without them (the
original's) load here too.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

#: Seconds between state file writes at most.
STATE_FILE_INTERVAL = 1.0
log = Logger()


def state_dir() -> Path:
    """``$LIVETIMING_STATE_DIR`` (default: the working directory), created when missing."""
    path = Path(os.environ.get("LIVETIMING_STATE_DIR") or os.getcwd())
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json_atomically(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as compact JSON so that a crash leaves either the old or the new file.

    Objects JSON does not know are written as their ``str()``.
    """
    write_text_atomically(path, json_text(data))


def json_text(data: Any) -> str:
    """Compact JSON for a state file; objects JSON does not know become their ``str()``."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) so that a crash leaves either the old or the new file.

    The text goes to a temporary file in the same folder which then replaces
    the target in one rename.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_state(path: str | os.PathLike) -> dict:
    """Read a saved state; raises ValueError with a clear reason when unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError as error:
        raise ValueError(f"initial state file {path} does not exist") from error
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"initial state file {path} is not readable JSON: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"initial state file {path} does not hold a state object")
    return state


#: Keys of a state file that describe the state rather than belong to it.
SPEC_KEYS = ("colSpec", "trackDataSpec")


def with_specs(state_text: str, colspec: list[list[str]] | None,
               track_data_spec: list[str] | None) -> str:
    """A state's JSON object text with ``colSpec`` and ``trackDataSpec`` added (those not None).

    The state's text is reused as it is (it is the text compressed for
    publishing); the specs are appended before its closing brace.
    """
    extra = [f'"{key}":{json_text(value)}' for key, value in
             zip(SPEC_KEYS, (colspec, track_data_spec), strict=True) if value is not None]
    if not extra or not state_text.endswith("}"):
        return state_text
    body = state_text[:-1].rstrip()
    separator = "" if body == "{" else ","
    return body + separator + ",".join(extra) + "}"


def pop_specs(state: dict) -> tuple[list[list[str]] | None, list[str] | None]:
    """Take ``colSpec`` and ``trackDataSpec`` out of a loaded state file.

    Returns them (None for one missing or malformed: ``colSpec`` must be a
    list of lists of strings, ``trackDataSpec`` a list of strings); the state
    is left with its own keys only.
    """
    colspec = state.pop("colSpec", None)
    track_data_spec = state.pop("trackDataSpec", None)
    if not (isinstance(colspec, list) and all(
            isinstance(column, list) and column and all(isinstance(part, str) for part in column)
            for column in colspec)):
        colspec = None
    if not (isinstance(track_data_spec, list)
            and all(isinstance(heading, str) for heading in track_data_spec)):
        track_data_spec = None
    return colspec, track_data_spec


class ThrottledStateFile:
    """A state file written soon after each change, but at most once per ``interval`` seconds.

    ``changed(clock)`` marks the state changed and schedules a write on that
    clock (now if the last write is ``interval`` seconds old, else when it
    will be); ``flush()`` writes at once if anything is unwritten (shutdown).
    ``render()`` gives the text to write when the write happens, so bursts of
    updates are written once, with the newest state.
    """

    def __init__(self, path: str | os.PathLike, render: Callable[[], str],
                 interval: float = STATE_FILE_INTERVAL):
        self.path = path
        self.render = render
        self.interval = interval
        self._dirty = False
        self._call: Any = None
        self._clock: Any = None
        self._written_at: float | None = None

    def changed(self, clock: Any) -> None:
        """The state changed: write it when the last write is ``interval`` seconds old."""
        self._dirty = True
        self._clock = clock
        if self._call is not None and self._call.active():
            return
        now = clock.seconds()
        delay = 0.0 if self._written_at is None else max(0.0, self._written_at + self.interval - now)
        self._call = clock.callLater(delay, self.flush)

    def flush(self) -> None:
        """Write now if the state changed since the last write (also cancels a pending write)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self._dirty:
            return
        self._dirty = False
        self._written_at = self._clock.seconds()
        try:
            write_text_atomically(self.path, self.render())
        except (OSError, ValueError, TypeError) as error:
            log.warn("Could not save state to {path}: {error}", path=self.path, error=error)
