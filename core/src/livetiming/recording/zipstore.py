"""Moving journal records into the recording ZIP without rewriting it, crash-safely.

The ZIP is only ever changed here, by appending: new entries and a new
central directory go *after* the current end of the file, and entries the
journal supersedes (an older ``manifest.json``) are simply left out of the
new central directory. Nothing already in the file is rewritten or moved.

Crash safety, step by step (``finalise``):

1. The ZIP's current size ``N`` is written to the journal as a ``#finalise``
   marker and the journal is fsync-ed, *before* the ZIP is touched.
2. Entries are appended beyond byte ``N``; the new central directory and end
   record are written last, then the ZIP is fsync-ed.
3. Only then is the journal deleted.

A kill before step 1 leaves the ZIP untouched and the journal complete. A
kill during step 2 leaves the first ``N`` bytes of the ZIP exactly as they
were (a complete ZIP, or nothing when ``N`` is 0) followed by a partial tail;
the journal still holds every frame. A kill before step 3 leaves a complete
ZIP and a redundant journal. In every case the next ``finalise`` (or a
reader) truncates the ZIP back to ``N`` (readers just ignore the bytes after
``N``) and repeats step 2, so no frame written to the journal is ever lost.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from collections.abc import Iterable

from livetiming.recording import journal as journal_module
from livetiming.recording.journal import JournalBusy, journal_path, try_lock

FRAME_NAME = re.compile(r"^([0-9]{5,11})(i?)\.json$")
COLSPEC_NAME = re.compile(r"^colspec-([0-9]{5,11})\.json$")


class RecordingException(Exception):
    """A file is not a usable recording (no manifest, unknown version, damaged)."""


def colspec_second(name: str) -> int | None:
    """The second a column-spec entry takes effect, or None for other names."""
    found = COLSPEC_NAME.match(name)
    return int(found.group(1)) if found else None


def frame_second(name: str) -> int | None:
    """The second a frame entry name stands for, or None for other names."""
    found = FRAME_NAME.match(name)
    return int(found.group(1)) if found else None


class PrefixFile(io.RawIOBase):
    """The first ``size`` bytes of a file, as a seekable read-only file.

    Used to read a ZIP whose tail is a partial append interrupted by a crash.
    """

    def __init__(self, path: str | os.PathLike, size: int):
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move within the first ``size`` bytes (positions beyond read as end of file)."""
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        else:
            position = self._size + offset
        if position < 0:
            raise OSError("negative seek position")
        self._pos = position
        return position

    def readinto(self, buffer) -> int:
        """Read into ``buffer``, never past ``size``."""
        count = min(len(buffer), self._size - self._pos)
        if count <= 0:
            return 0
        self._file.seek(self._pos)
        data = self._file.read(count)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        """Close the underlying file."""
        if not self.closed:
            self._file.close()
        super().close()


def open_zip(path: str | os.PathLike, size: int | None = None) -> zipfile.ZipFile | None:
    """Open a recording ZIP for reading, optionally only its first ``size`` bytes.

    Returns None when there is no ZIP (missing file, or ``size`` 0); raises
    RecordingException when the bytes are not a readable ZIP.
    """
    try:
        actual = os.path.getsize(path)
    except FileNotFoundError:
        if size:
            raise RecordingException(f"{path} is missing although its journal says it existed") from None
        return None
    if size == 0 or actual == 0:
        return None
    try:
        if size is not None and size < actual:
            return zipfile.ZipFile(PrefixFile(path, size))
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise RecordingException(f"{path} is not a readable ZIP: {error}") from error


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _minimal_manifest(first_second: int | None) -> bytes:
    manifest = {"version": 1, "startTime": first_second, "name": "", "description": "",
                "colSpec": [], "trackDataSpec": [], "pollInterval": 1, "uuid": "",
                "hasAnalysis": False, "hidden": False}
    return json.dumps(manifest, separators=(",", ":")).encode("ascii")


def finalise(zip_path: str | os.PathLike) -> bool:
    """Move the journal of ``zip_path`` (if any) into the ZIP and delete the journal.

    Safe to call after a crash at any point of a previous call. Raises
    JournalBusy when a live recorder holds the journal and
    RecordingException when the existing ZIP is damaged in a way no crash of
    ours can cause. Returns True when a journal was finalised.
    """
    zip_path = os.fspath(zip_path)
    jpath = journal_path(zip_path)
    try:
        handle = open(jpath, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    try:
        if not try_lock(handle):
            raise JournalBusy(f"{jpath} is being written by another process")
        contents = journal_module.scan(handle)
        if contents.finalise_zip_size is not None:
            zip_size = contents.finalise_zip_size
            _truncate_zip(zip_path, zip_size)
        else:
            zip_size = os.path.getsize(zip_path) if os.path.exists(zip_path) else 0
            if zip_size:
                existing = open_zip(zip_path)  # raises when damaged
                if existing is not None:
                    existing.close()
            # Drop a torn tail so the marker starts a fresh line, then record the size.
            handle.seek(contents.valid_length)
            handle.truncate()
            marker = json.dumps({"zip_size": zip_size}, separators=(",", ":"))
            handle.write(journal_module.encode_line(journal_module.FINALISE, marker))
            handle.flush()
            os.fsync(handle.fileno())
        _append(zip_path, zip_size, handle, contents)
        handle.close()
        os.unlink(jpath)
        _fsync_dir(jpath)
        return True
    finally:
        if not handle.closed:
            handle.close()


def _truncate_zip(zip_path: str, size: int) -> None:
    if size == 0:
        try:
            os.unlink(zip_path)
        except FileNotFoundError:
            pass
        return
    if not os.path.exists(zip_path):
        raise RecordingException(f"{zip_path} is missing although its journal says it existed")
    with open(zip_path, "r+b") as zip_file:
        zip_file.truncate(size)
        os.fsync(zip_file.fileno())


def _append(zip_path: str, zip_size: int, handle, contents) -> None:
    manifest: bytes | None = None
    frames: dict[int, tuple[str, bytes]] = {}
    others: dict[str, bytes] = {}
    for name, payload in journal_module.iter_payloads(handle, contents):
        if name == journal_module.MANIFEST:
            manifest = payload
            continue
        second = frame_second(name)
        if second is not None:
            frames[second] = (name, payload)  # the newest record of a second wins
        else:
            others[name] = payload
    if not frames and manifest is None and not others:
        return
    if zip_size == 0:
        if not frames:
            return
        entries: list[tuple[str, bytes]] = [
            ("manifest.json", manifest if manifest is not None else _minimal_manifest(min(frames)))]
        entries += sorted(others.items())
        entries += [frames[second] for second in sorted(frames)]
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            _write_entries(archive, entries)
        _sync_file(zip_path)
        return
    entries = []
    if manifest is not None:
        entries.append(("manifest.json", manifest))
    entries += sorted(others.items())
    entries += [frames[second] for second in sorted(frames)]
    superseded = {name for name, _payload in entries}
    with open(zip_path, "r+b") as raw:
        archive = zipfile.ZipFile(raw, "a", zipfile.ZIP_DEFLATED)
        try:
            kept = []
            for info in archive.filelist:
                second = frame_second(info.filename)
                if info.filename in superseded or (second is not None and second in frames):
                    continue
                kept.append(info)
            archive.filelist = kept
            archive.NameToInfo = {info.filename: info for info in kept}
            # New entries go after everything already in the file (including the old
            # central directory), so the first zip_size bytes never change.
            raw.seek(0, os.SEEK_END)
            archive.start_dir = raw.tell()
            archive._didModify = True
            _write_entries(archive, entries)
        finally:
            archive.close()
        raw.flush()
        os.fsync(raw.fileno())


def _write_entries(archive: zipfile.ZipFile, entries: Iterable[tuple[str, bytes]]) -> None:
    for name, payload in entries:
        info = zipfile.ZipInfo(name, date_time=_date_time(name))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        archive.writestr(info, payload)


def _date_time(name: str) -> tuple[int, int, int, int, int, int]:
    second = frame_second(name)
    if second is None:
        second = colspec_second(name)
    when = time.gmtime(second if second is not None else time.time())
    if when.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return tuple(when[:6])  # type: ignore[return-value]


def _sync_file(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    _fsync_dir(path)
