"""Raw upstream journal ("capture") files: writing and reading.

A capture is the exact text of every frame the plugin received from its upstream websocket, one
JSON object per line (UTF-8), as described in ``shared/spec/README.md``::

    {"capture": 1, "source": "emperor", "url": "wss://host/api/race-control", "started": "2024-…Z"}
    {"t": 0.0, "data": "{\\"EventType\\":200,…}"}
    {"t": 0.52, "data": "{\\"EventType\\":53,…}"}

The header line is optional. ``data`` is the frame text exactly as received (malformed JSON
included), so a capture can reproduce any upstream bug. The same files are test fixtures, the demo
feed (played by :mod:`.replay`) and the evidence attached to bug reports.

Time axis
---------
``t`` is a float number of seconds on one monotonic timeline per file, starting at 0 when the
first connection recorded in the file opened, and it never goes backwards. Gaps between
connections are kept, so a replay reproduces the outage the client saw:

* A caller whose clock already runs across reconnects (such as
  :class:`~.upstream.UpstreamConnection`, whose ``t`` counts from the *first* connection) simply
  passes that ``t`` to :meth:`CaptureWriter.write` and never calls
  :meth:`CaptureWriter.start_connection`.
* A caller whose ``t`` restarts at 0 on every connection calls
  :meth:`CaptureWriter.start_connection` right after each reconnect. The writer then shifts the
  caller's ``t`` so the new connection continues after the last written line plus the downtime it
  measured on its own monotonic clock.
* When a writer appends to an existing non-empty file it continues after the last ``t`` in the file
  (the wall-clock time between the two processes is unknown to a monotonic clock and not kept).

A ``t`` that would go backwards is written as the previous ``t`` (and counted in
:attr:`CaptureWriter.clamped`).

Durability: each line is written with one ``write`` call and flushed to the operating system, so
killing the process (even with SIGKILL) loses at most the line being written. A line torn by the
kill is skipped by :func:`read_capture`, and a writer that appends to such a file first ends the
torn line so that its own lines stay valid. Lines are not ``fsync``-ed (a power cut can lose the
last seconds); that cost is not worth paying at tens of frames per second.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = [
    "CAPTURE_VERSION",
    "CaptureFrames",
    "CaptureWriter",
    "read_capture",
    "redact_url",
]

#: Value of the ``capture`` key in the header line written by this module.
CAPTURE_VERSION = 1

_GZIP_MAGIC = b"\x1f\x8b"

#: Query parameters whose values are not secret and help when reading logs and headers.
_PUBLIC_QUERY_KEYS = frozenset({"server"})


def redact_url(url: str) -> str:
    """Return ``url`` without secrets, for logs and capture headers.

    Removes the user-info part (``user:password@``) and the fragment, and replaces the value of
    every query parameter except a short allow-list (``server``, the ACSM server index) by
    ``***``, so session tokens passed in the query never reach a log file or a shared capture.
    Unparseable input is returned as ``"<unparseable url>"`` rather than echoed.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    query_items = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        shown = value if key in _PUBLIC_QUERY_KEYS else "***"
        query_items.append(f"{quote(key, safe='')}={quote(shown, safe='*')}")
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(query_items), ""))


def _encode_line(obj: dict[str, Any]) -> bytes:
    """Serialise one capture line (with its newline) as UTF-8 bytes.

    Non-ASCII text is written as UTF-8 rather than ``\\uXXXX`` escapes (smaller, greppable). A
    string holding lone surrogates cannot be UTF-8 encoded; such a line falls back to ASCII escapes,
    which :func:`json.loads` turns back into the very same string.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, separators=(", ", ": ")).encode("ascii") + b"\n"


def _valid_t(value: Any) -> bool:
    """True for a finite, non-negative JSON number that is not a boolean."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _last_t_in_file(path: str, chunk: int = 1 << 16) -> float | None:
    """Return the ``t`` of the last valid frame line of a plain capture file, or None.

    Scans backwards from the end so that appending to a big journal does not read it whole.
    """
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        tail = b""
        pos = end
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
            lines = tail.split(b"\n")
            # lines[0] may be incomplete unless we reached the start of the file
            complete = lines if pos == 0 else lines[1:]
            for raw in reversed(complete):
                obj = _parse_line(raw)
                if isinstance(obj, dict) and _valid_t(obj.get("t")) and isinstance(obj.get("data"), str):
                    return float(obj["t"])
            tail = lines[0] if pos > 0 else b""
    return None


def _parse_line(raw: bytes) -> Any:
    """Decode and parse one line; None when it is not UTF-8 JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


class CaptureWriter:
    """Append-only writer of a capture file (the raw upstream journal).

    ``CaptureWriter(path, source, url)`` opens ``path`` for appending (an existing file is never
    truncated) and writes the header line only when the file is new or empty. Each
    :meth:`write` adds one ``{"t", "data"}`` line and flushes it. See the module documentation for
    how ``t`` behaves across reconnects and process restarts.

    ``monotonic`` is the clock used to measure downtime between connections (injectable for tests);
    ``started`` overrides the header's ISO 8601 start time. ``url`` is stored redacted
    (:func:`redact_url`): the header documents where the data came from, it is not a credential
    store.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        source: str,
        url: str,
        *,
        started: datetime | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.fspath(path)
        self.source = source
        self.url = redact_url(url)
        self._monotonic = monotonic
        #: number of lines whose ``t`` would have gone backwards and was clamped
        self.clamped = 0
        #: number of frame lines written by this writer
        self.frames_written = 0
        self._offset = 0.0
        self._last_t: float | None = None
        self._last_write_mono: float | None = None

        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        needs_newline = False
        if size > 0:
            with open(self.path, "rb") as fh:
                if fh.read(2) == _GZIP_MAGIC:
                    raise ValueError(f"cannot append to a gzip-compressed capture: {self.path}")
                fh.seek(size - 1)
                needs_newline = fh.read(1) != b"\n"
            last_t = _last_t_in_file(self.path)
            if last_t is not None:
                self._last_t = last_t
                self._offset = last_t
        self._fh: BinaryIO | None = open(self.path, "ab")  # closed in close()
        if needs_newline:
            # The previous writer was killed mid-line: end that torn line so ours stay parseable.
            self._write_raw(b"\n")
        if size == 0:
            when = (started or datetime.now(UTC)).astimezone(UTC)
            header = {
                "capture": CAPTURE_VERSION,
                "source": source,
                "url": self.url,
                "started": when.isoformat().replace("+00:00", "Z"),
            }
            self._write_raw(_encode_line(header))

    def _write_raw(self, data: bytes) -> None:
        if self._fh is None:
            raise ValueError("capture writer is closed")
        self._fh.write(data)
        self._fh.flush()

    def start_connection(self) -> None:
        """Mark a new upstream connection whose caller-side ``t`` starts again at 0.

        Frames written after this call are placed after the last written frame plus the time that
        passed since it (measured on the writer's monotonic clock), so ``t`` stays monotonic and a
        replay reproduces the downtime. Calling it before the first frame is harmless.
        """
        if self._last_t is None:
            self._offset = 0.0
            return
        gap = 0.0
        if self._last_write_mono is not None:
            gap = max(0.0, self._monotonic() - self._last_write_mono)
        self._offset = self._last_t + gap

    def write(self, data: str, t: float) -> float:
        """Append one received text frame and flush it; return the ``t`` written to the file.

        ``data`` is stored exactly (any Unicode, any size, invalid JSON included); ``t`` is the
        caller's monotonic seconds since its connection opened (see the module documentation).
        """
        if not isinstance(data, str):
            raise TypeError(f"capture data must be str, not {type(data).__name__}")
        if not _valid_t(t):
            raise ValueError(f"capture t must be a finite number >= 0, not {t!r}")
        file_t = self._offset + float(t)
        if self._last_t is not None and file_t < self._last_t:
            file_t = self._last_t
            self.clamped += 1
        self._write_raw(_encode_line({"t": round(file_t, 6), "data": data}))
        self._last_t = file_t
        self._last_write_mono = self._monotonic()
        self.frames_written += 1
        return file_t

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._fh is None

    def close(self) -> None:
        """Flush and close the file; further writes raise :class:`ValueError`."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureFrames:
    """Lazy iterator of ``(t, data)`` over the frame lines of a capture file.

    Invalid lines are skipped, never fatal: each skip is counted in :attr:`skipped` under a reason
    (``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``bad_t``, ``bad_data``,
    ``misplaced_header``, ``blank``, ``truncated_last_line``, ``truncated_gzip``). The counts are
    complete once the iterator is exhausted. Lines are split on ``\\n`` only, so frames containing
    U+2028 or other Unicode line separators are read back intact. The file is closed at the end,
    on :meth:`close`, or when used as a context manager.
    """

    def __init__(
        self, fh: BinaryIO, first_line: bytes | None, path: str, skipped: Counter[str] | None = None
    ) -> None:
        self.path = path
        #: reason -> number of lines skipped for that reason
        self.skipped: Counter[str] = skipped if skipped is not None else Counter()
        #: number of frames yielded so far
        self.frames = 0
        self._fh: BinaryIO | None = fh
        self._gen = self._generate(first_line)

    def _generate(self, first_line: bytes | None) -> Iterator[tuple[float, str]]:
        fh = self._fh
        assert fh is not None
        try:
            if first_line is not None:
                item = self._parse(first_line)
                if item is not None:
                    self.frames += 1
                    yield item
            while self._fh is not None and not self.skipped["truncated_gzip"]:
                try:
                    raw = fh.readline()
                except (EOFError, zlib.error, gzip.BadGzipFile):
                    self.skipped["truncated_gzip"] += 1
                    return
                if not raw:
                    return
                item = self._parse(raw)
                if item is not None:
                    self.frames += 1
                    yield item
        finally:
            self.close()

    def _parse(self, raw: bytes) -> tuple[float, str] | None:
        complete = raw.endswith(b"\n")
        body = raw.rstrip(b"\r\n") if complete else raw
        if not body.strip():
            self.skipped["blank"] += 1
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped["invalid_utf8" if complete else "truncated_last_line"] += 1
            return None
        try:
            obj = json.loads(text)
        except ValueError:
            self.skipped["invalid_json" if complete else "truncated_last_line"] += 1
            return None
        if not isinstance(obj, dict):
            self.skipped["not_an_object"] += 1
            return None
        if "capture" in obj and "data" not in obj:
            self.skipped["misplaced_header"] += 1
            return None
        t = obj.get("t")
        if not _valid_t(t):
            self.skipped["bad_t"] += 1
            return None
        data = obj.get("data")
        if not isinstance(data, str):
            self.skipped["bad_data"] += 1
            return None
        return float(t), data

    def __iter__(self) -> CaptureFrames:
        return self

    def __next__(self) -> tuple[float, str]:
        return next(self._gen)

    def close(self) -> None:
        """Close the underlying file (idempotent)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CaptureFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self._gen.close()
        self.close()


def _open_capture(path: str) -> BinaryIO:
    """Open a capture for binary reading, transparently un-gzipping it (detected by magic bytes)."""
    raw = open(path, "rb")  # handed to the caller, closed by CaptureFrames
    magic = raw.read(2)
    raw.seek(0)
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def read_capture(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, CaptureFrames]:
    """Open a capture file and return ``(header, frames)``.

    ``header`` is the parsed first line when it is a header object (has a ``capture`` key), else
    None (the header is optional). ``frames`` is a lazy :class:`CaptureFrames` iterator of
    ``(t, data)`` tuples in file order, with counted skips for invalid lines; the file is read a
    line at a time, so large captures do not have to fit in memory. Plain and gzip-compressed
    files are both accepted (detected by content, not by name), and a truncated last line (or
    truncated gzip stream) ends the iteration quietly.
    """
    spath = os.fspath(path)
    fh = _open_capture(spath)
    header: dict[str, Any] | None = None
    first_line: bytes | None = None
    skipped: Counter[str] = Counter()
    try:
        line = fh.readline()
    except (EOFError, zlib.error, gzip.BadGzipFile):
        skipped["truncated_gzip"] += 1
        line = b""
    if line:
        obj = _parse_line(line)
        if isinstance(obj, dict) and "capture" in obj and "data" not in obj:
            header = obj
        else:
            first_line = line
    return header, CaptureFrames(fh, first_line, spath, skipped)
