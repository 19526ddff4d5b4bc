"""The append-only journal a live recording writes before frames reach the ZIP.

A ZIP file cannot be appended to safely while it is being written: until the
central directory at its end is complete, ordinary readers cannot open it.
The recorder therefore writes every frame (and every manifest) as one line of
``NAME.zip.journal`` and moves the frames into the ZIP only when the
recording stops, changes segment or is reopened after a crash
(``zipstore.finalise``).

Line format (ASCII)::

    <crc32 of the rest, 8 hex digits> <entry name> <JSON>\\n

The entry name is the name the entry gets in the ZIP (``manifest.json``,
``01700000000.json``, ``01700000001i.json``) or a control record starting
with ``#``: ``#journal`` (header) and ``#finalise`` (written, with the ZIP's
size, before the ZIP is touched). Each line is written with one ``write``
call on an unbuffered file (so it is with the operating system when
``writeState`` returns), so a killed process loses at most the line it was
writing; such a torn line fails its checksum and it and
anything after it are ignored.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

try:  # pragma: no cover - platform dependent
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

JOURNAL_SUFFIX = ".journal"
HEADER = "#journal"
FINALISE = "#finalise"
MANIFEST = "manifest.json"
FORMAT = "livetiming-recording-journal"


def journal_path(zip_path: str | os.PathLike) -> str:
    """The journal that belongs to a recording ZIP (``NAME.zip.journal``)."""
    return os.fspath(zip_path) + JOURNAL_SUFFIX


def encode_line(name: str, payload: str) -> bytes:
    """One journal line for an entry whose JSON text is ``payload`` (ASCII)."""
    body = f"{name} {payload}".encode("ascii")
    return b"%08x " % zlib.crc32(body) + body + b"\n"


@dataclass
class JournalRecord:
    """One intact journal line: the entry name and where its JSON text lies in the file."""

    name: str
    offset: int
    length: int


class JournalContents:
    """What a journal holds: its frame and manifest records and any finalise marker."""

    def __init__(self) -> None:
        self.records: list[JournalRecord] = []
        #: ZIP size recorded by the first ``#finalise`` marker, or None.
        self.finalise_zip_size: int | None = None
        #: Bytes of the journal that hold intact lines.
        self.valid_length = 0
        #: True when the file ends with a torn or damaged line (ignored).
        self.damaged_tail = False


def scan(handle: BinaryIO) -> JournalContents:
    """Index every intact line of a journal opened in binary mode, from the start.

    Reading stops at the first line without a newline, with a bad checksum
    or that does not parse: everything before it is usable.
    """
    contents = JournalContents()
    handle.seek(0)
    offset = 0
    for line in handle:
        if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
            contents.damaged_tail = True
            break
        body = line[9:-1]
        try:
            crc = int(line[:8], 16)
        except ValueError:
            contents.damaged_tail = True
            break
        space = body.find(b" ")
        if zlib.crc32(body) != crc or space <= 0:
            contents.damaged_tail = True
            break
        name = body[:space].decode("ascii", "replace")
        start = offset + 9 + space + 1
        length = len(body) - space - 1
        if name == FINALISE:
            if contents.finalise_zip_size is None:
                try:
                    contents.finalise_zip_size = int(json.loads(body[space + 1:])["zip_size"])
                except (ValueError, KeyError, TypeError):
                    contents.damaged_tail = True
                    break
        elif name != HEADER:
            contents.records.append(JournalRecord(name, start, length))
        offset += len(line)
        contents.valid_length = offset
    return contents


def read_payload(handle: BinaryIO, record: JournalRecord) -> bytes:
    """The JSON text of one record."""
    handle.seek(record.offset)
    return handle.read(record.length)


def iter_payloads(handle: BinaryIO, contents: JournalContents) -> Iterator[tuple[str, bytes]]:
    """Every record's (name, JSON bytes) in file order."""
    for record in contents.records:
        yield record.name, read_payload(handle, record)


class JournalWriter:
    """Appends records to a journal, one unbuffered ``write`` per record, under an exclusive lock.

    The lock (``flock``, where available) tells other processes that a live
    recorder owns the journal, so that tools finalise only abandoned ones. A
    write that fails (a full disk) is cut off again, so that later records
    do not end up behind a torn line.
    """

    def __init__(self, path: str | os.PathLike, zip_name: str):
        self.path = os.fspath(path)
        for _attempt in range(5):
            self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
            if not try_lock(self._handle):
                self._handle.close()
                raise JournalBusy(f"{self.path} is being written by another process")
            # A tool may have finalised (and deleted) the new file between open and lock.
            try:
                if os.stat(self.path).st_ino == os.fstat(self._handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            self._handle.close()
        else:
            raise JournalBusy(f"{self.path} keeps being removed by another process")
        self._good = os.fstat(self._handle.fileno()).st_size
        if self._good == 0:
            header = json.dumps({"format": FORMAT, "version": 1, "zip": zip_name},
                                separators=(",", ":"))
            self._write(encode_line(HEADER, header))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = self._handle.write(view)
                view = view[written:]
        except OSError:
            try:
                os.ftruncate(self._handle.fileno(), self._good)
            except OSError:
                pass
            raise
        self._good += len(data)

    def append(self, name: str, payload: str) -> None:
        """Write one record and hand it to the operating system."""
        self._write(encode_line(name, payload))

    def sync(self) -> None:
        """Ask the operating system to put the journal on disk (survives power loss)."""
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file (which releases the lock)."""
        if not self._handle.closed:
            self._handle.close()

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._handle.closed


class JournalBusy(Exception):
    """Another live process holds the journal."""


def try_lock(handle: BinaryIO) -> bool:
    """Take a non-blocking exclusive lock on an open file; True when taken (or unsupported)."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def is_locked(path: str | os.PathLike) -> bool:
    """True when a live process holds the journal at ``path``."""
    try:
        with open(path, "rb") as handle:
            if not try_lock(handle):
                return True
    except FileNotFoundError:
        return False
    return False
