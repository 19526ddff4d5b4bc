"""Reading recordings: ``RecordingFile`` and ``applyIntraFrame``.

``RecordingFile`` keeps the original framework's interface (``manifest``,
``keyframes``, ``iframes``, ``duration``, ``frames``, ``getStateAt``,
``getStateAtTimestamp``, ``augmentedManifest``) and adds what the original
lacked: it reads only the entries a requested second needs (the ZIP's
central directory is the index), it keeps the last reconstructed state so
that stepping forward costs one intra-frame, it never changes the working
directory, and it also reads a recording that is still being written or was
interrupted by a crash (the journal next to the ZIP, see ``zipstore``),
without modifying anything.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from collections.abc import Iterator
from typing import Any

from livetiming.recording import journal as journal_module
from livetiming.recording import zipstore
from livetiming.recording.diff import json_copy, patch_in_place
from livetiming.recording.recorder import MAX_MESSAGES, new_messages_between
from livetiming.recording.zipstore import RecordingException, colspec_second, frame_second


def applyIntraFrame(initial: dict, iframe: dict) -> dict:
    """The state after applying ``iframe`` to ``initial`` (``initial`` is not modified)."""
    return _apply(json_copy(initial), iframe)


def _apply(state: dict, iframe: dict, keep_columns: frozenset | None = None) -> dict:
    """Apply an intra-frame to a state the caller owns, in place where possible."""
    return {
        "cars": patch_in_place(iframe.get("cars", []), state.get("cars", []), keep_columns),
        "session": patch_in_place(iframe.get("session", []), state.get("session", {})),
        "messages": (list(iframe.get("messages", [])) + list(state.get("messages", [])))[:MAX_MESSAGES],
        "highlight": list(iframe.get("highlight", [])),
    }


class Frame:
    """Where one recorded second is stored: a ZIP entry or a journal record."""

    __slots__ = ("second", "is_keyframe", "zip_name", "record")

    def __init__(self, second: int, is_keyframe: bool, zip_name: str | None = None,
                 record: journal_module.JournalRecord | None = None):
        self.second = second
        self.is_keyframe = is_keyframe
        self.zip_name = zip_name
        self.record = record


class RecordingFile:
    """A recording opened for reading (a ZIP, its journal, or both).

    Raises RecordingException for files that are not usable recordings (no
    manifest, an unknown version, no frames, a damaged ZIP).
    """

    def __init__(self, filename: str | os.PathLike, force_compat: bool = False):
        self.filename = os.fspath(filename)
        self._archive = None
        self._journal = None
        self._cache: tuple[int, dict] | None = None
        for attempt in range(3):
            try:
                self._open(force_compat)
                break
            except RecordingException:
                # A recorder finishing the file right now can leave the ZIP mid-append for
                # a moment; read again (the journal then says how much of it is complete).
                live = self._journal is not None
                self.close()
                if not live or attempt == 2:
                    raise
            except BaseException:
                self.close()
                raise

    def _open(self, force_compat: bool) -> None:
        jpath = journal_module.journal_path(self.filename)
        contents = None
        if os.path.exists(jpath):
            self._journal = open(jpath, "rb")  # noqa: SIM115 - closed in close()
            contents = journal_module.scan(self._journal)
        zip_size = contents.finalise_zip_size if contents is not None else None
        if contents is None and not os.path.exists(self.filename):
            raise RecordingException(f"{self.filename} does not exist")
        self._archive = zipstore.open_zip(self.filename, zip_size)
        manifest_bytes = None
        frames: dict[int, Frame] = {}
        colspecs: dict[int, bytes] = {}
        if self._archive is not None:
            for name in self._archive.namelist():
                second = frame_second(name)
                if second is not None:
                    frames[second] = Frame(second, not name.endswith("i.json"), zip_name=name)
                elif name == "manifest.json":
                    manifest_bytes = self._archive.read(name)
                elif colspec_second(name) is not None:
                    colspecs[colspec_second(name)] = self._archive.read(name)
        if contents is not None:
            for record in contents.records:
                if record.name == journal_module.MANIFEST:
                    manifest_bytes = journal_module.read_payload(self._journal, record)
                    continue
                second = frame_second(record.name)
                if second is not None:
                    frames[second] = Frame(second, not record.name.endswith("i.json"), record=record)
                elif colspec_second(record.name) is not None:
                    colspecs[colspec_second(record.name)] = journal_module.read_payload(
                        self._journal, record)
        if manifest_bytes is None:
            raise RecordingException(
                f"{self.filename} contains no manifest.json, this is not a usable recording")
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as error:
            raise RecordingException(f"{self.filename} has an unreadable manifest: {error}") from None
        if not isinstance(manifest, dict):
            raise RecordingException(f"{self.filename} has an unreadable manifest")
        if "version" not in manifest and not force_compat:
            raise RecordingException(f"{self.filename} is a pre-version-1 recording, unsupported")
        if "version" in manifest and manifest["version"] != 1:
            raise RecordingException(
                f"{self.filename} has unknown recording version {manifest['version']!r}")
        if not frames:
            raise RecordingException(f"{self.filename} holds no frames")
        self.manifest = manifest
        self._frames = [frames[second] for second in sorted(frames)]
        self._seconds = [frame.second for frame in self._frames]
        self.keyframes = [frame.second for frame in self._frames if frame.is_keyframe]
        self.iframes = [frame.second for frame in self._frames if not frame.is_keyframe]
        if not self.keyframes:
            raise RecordingException(f"{self.filename} holds no keyframe")
        self.startTime = self._seconds[0]
        self.manifest["startTime"] = self.startTime
        self.duration = self._seconds[-1] - self._seconds[0]
        self.frames = len(self._frames)
        self._colspec_seconds = sorted(colspecs)
        self._colspecs = []
        for second in self._colspec_seconds:
            try:
                self._colspecs.append(json.loads(colspecs[second]))
            except ValueError:
                self._colspecs.append(None)

    def colspec_at(self, second: int) -> list:
        """The column spec of the state at ``second`` (the manifest's when not recorded)."""
        index = bisect_right(self._colspec_seconds, second) - 1
        if index < 0 and self._colspecs:
            index = 0  # before the first change: the columns the recording began with
        while index >= 0:
            colspec = self._colspecs[index]
            if isinstance(colspec, list):
                return colspec
            index -= 1
        return self.manifest.get("colSpec", [])

    # ----- resources -------------------------------------------------------------

    def close(self) -> None:
        """Release the open files."""
        for resource in (self._archive, self._journal):
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # pragma: no cover
                    pass
        self._archive = None
        self._journal = None

    def __enter__(self) -> RecordingFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----- frames ----------------------------------------------------------------

    def _load(self, frame: Frame) -> dict:
        if frame.record is not None:
            data = journal_module.read_payload(self._journal, frame.record)
        else:
            data = self._archive.read(frame.zip_name)
        return json.loads(data)

    @property
    def seconds(self) -> list[int]:
        """Every recorded second, ascending."""
        return list(self._seconds)

    def colspecs(self) -> list[list]:
        """Every column spec the recording used (recorded changes, then the manifest's)."""
        found = [colspec for colspec in self._colspecs if isinstance(colspec, list)]
        return found + [self.manifest.get("colSpec", [])]

    def iter_frames(self, keep_columns: frozenset | None = None
                    ) -> Iterator[tuple[int, dict, list, bool]]:
        """Every frame in order as ``(second, state, new_messages, is_keyframe)``.

        The same state object is updated in place from frame to frame (fast
        sequential reading); copy it to keep it. ``new_messages`` are the
        messages that appeared since the previous frame, newest first. With
        ``keep_columns`` only those columns of the car rows are kept up to
        date between keyframes.
        """
        state: dict | None = None
        for frame in self._frames:
            data = self._load(frame)
            if frame.is_keyframe or state is None:
                previous = state["messages"] if state is not None else []
                state = data if frame.is_keyframe else _apply({"cars": [], "session": {},
                                                               "messages": []}, data)
                current = state.get("messages", [])
                new = new_messages_between(previous, current)
                if new is None:
                    new = [message for message in current if message not in previous]
            else:
                new = data.get("messages", [])
                state = _apply(state, data, keep_columns)
            yield frame.second, state, new, frame.is_keyframe

    def getStateAt(self, interval: float) -> dict:
        """The state ``interval`` seconds after the recording's start."""
        return self.getStateAtTimestamp(self.manifest["startTime"] + interval)

    def getStateAtTimestamp(self, timecode: float) -> dict:
        """The state shown at Unix time ``timecode`` (the first frame when earlier)."""
        index = bisect_right(self._seconds, timecode) - 1
        if index < 0:
            index = self._seconds.index(self.keyframes[0])
        key_index = index
        while key_index >= 0 and not self._frames[key_index].is_keyframe:
            key_index -= 1
        if key_index < 0:  # recording starting with intra-frames: begin at the first keyframe
            key_index = index = self._seconds.index(self.keyframes[0])
        cached = self._cache
        if cached is not None and key_index <= cached[0] <= index:
            start, state = cached[0] + 1, cached[1]
        else:
            start, state = key_index + 1, self._load(self._frames[key_index])
        for position in range(start, index + 1):
            state = _apply(state, self._load(self._frames[position]))
        self._cache = (index, state)
        return json_copy(state)

    def augmentedManifest(self) -> dict:
        """The manifest with ``startTime`` and ``duration`` computed from the frames."""
        manifest = dict(self.manifest)
        manifest["startTime"] = self.startTime
        manifest["duration"] = self.duration
        return manifest


def read_manifest_only(filename: str | os.PathLike) -> dict[str, Any]:
    """A recording's augmented manifest (used by the index); raises RecordingException."""
    with RecordingFile(filename) as recording:
        return recording.augmentedManifest()
