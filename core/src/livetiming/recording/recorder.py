"""``TimingRecorder``: writes a service's states as a Timing71 recording.

The result is the ZIP format every Timing71 replay reader understands
(``timing71-wire.md`` §5.1): ``manifest.json`` (the service manifest plus
``version: 1`` and ``startTime``) and one entry per recorded second,
``NNNNNNNNNNN.json`` (keyframe: the whole state) or ``NNNNNNNNNNNi.json``
(intra-frame: dictdiffer diffs of ``cars`` and ``session`` against the
previous frame, the messages that are new since it and ``highlight``).

Differences from the original framework's recorder, all deliberate:

* At most one frame per second: a newer state in the same second replaces
  the frame of that second (its diff is against the previous second), so
  entry names never collide.
* A keyframe every ``INTRA_FRAMES`` (10) frames and also whenever an
  intra-frame would remove list items (cars leaving the table), replace
  the whole state, or could not carry the messages exactly.
* New messages are found by content (the previous frame's messages must
  follow them), never by timestamp, so several messages in one second are
  all kept.
* Frames go to an append-only journal first (``journal.py``) and reach the
  ZIP when the recorder closes, changes segment or is opened again after a
  crash (``zipstore.py``): the ZIP is never rewritten, and a kill at any
  moment loses nothing written before it.
* The column spec in force is stored whenever it changes, as
  ``colspec-NNNNNNNNNNN.json`` (ignored by other readers), so offline
  analysis reads every frame with the columns it was published with.
* ``start_new_segment()`` (used by ``BaseService.start_new_session()``)
  continues in ``NAME-2.zip``, ``NAME-3.zip`` ... each with its own manifest.
  Opening a recorder on ``NAME.zip`` continues the highest existing segment.
"""

from __future__ import annotations

import json
import marshal
import os
import re
import time
from typing import Any

from livetiming.recording import zipstore
from livetiming.recording.diff import diff, json_copy
from livetiming.recording.journal import JournalBusy, JournalWriter, journal_path

INTRA_FRAMES = 10
MAX_MESSAGES = 100
STATE_KEYS = frozenset(("cars", "session", "messages", "highlight"))
FSYNC_INTERVAL = 10.0


def dumps(data: Any) -> str:
    """Compact, ASCII-only JSON as stored in recordings (NaN refused)."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def snapshot_state(state: dict) -> dict:
    """A deep copy of a state, so a plugin changing its rows later cannot change our basis.

    ``marshal`` copies plain data (dicts, lists, strings, numbers) at C speed;
    it is only an in-memory copy, nothing is stored in that form. States with
    other types fall back to a Python copy.
    """
    try:
        return marshal.loads(marshal.dumps(state))
    except ValueError:
        return json_copy(state)


def segment_path(base: str, number: int) -> str:
    """The file of segment ``number`` of a recording: ``NAME.zip``, ``NAME-2.zip``, ..."""
    if number <= 1:
        return base
    root = base[:-4] if base.endswith(".zip") else base
    return f"{root}-{number}.zip"


def existing_segments(base: str) -> list[int]:
    """Segment numbers that have a ZIP or a journal on disk, ascending."""
    folder = os.path.dirname(os.path.abspath(base))
    root = os.path.basename(base[:-4] if base.endswith(".zip") else base)
    pattern = re.compile(re.escape(root) + r"-([0-9]+)\.zip(\.journal)?$")
    found = set()
    if os.path.exists(base) or os.path.exists(journal_path(base)):
        found.add(1)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        names = []
    for name in names:
        match = pattern.match(name)
        if match and int(match.group(1)) >= 2:
            found.add(int(match.group(1)))
    return sorted(found)


def new_messages_between(previous: list, current: list) -> list | None:
    """The messages an intra-frame must carry so readers rebuild ``current`` from ``previous``.

    Readers compute ``(iframe_messages + previous)[:100]``; this returns the
    shortest prefix of ``current`` for which that equals ``current``, or
    None when no prefix does (messages were removed or reordered).
    """
    length = len(current)
    if length > MAX_MESSAGES:
        return None
    if length < MAX_MESSAGES:
        count = length - len(previous)
        if count < 0 or current[count:] != previous:
            return None
        return current[:count]
    for count in range(max(0, length - len(previous)), length + 1):
        if current[count:] == previous[:length - count]:
            return current[:count]
    return None  # pragma: no cover - count == length always matches


def intra_frame(previous: dict, state: dict) -> dict | None:
    """The intra-frame from ``previous`` to ``state``, or None when a keyframe is needed."""
    if previous.keys() != STATE_KEYS or state.keys() != STATE_KEYS:
        return None
    if (type(state["cars"]) is not list or type(previous["cars"]) is not list
            or type(state["session"]) is not dict or type(previous["session"]) is not dict
            or type(state["messages"]) is not list or type(previous["messages"]) is not list):
        return None
    cars = diff(previous["cars"], state["cars"])
    if cars.needs_keyframe:
        return None
    session = diff(previous["session"], state["session"])
    if session.needs_keyframe:
        return None
    messages = new_messages_between(previous["messages"], state["messages"])
    if messages is None:
        return None
    return {"cars": cars.ops, "session": session.ops, "messages": messages,
            "highlight": state["highlight"]}


class TimingRecorder:
    """Records states and manifests to ``path`` (a ``.zip``), crash-safely.

    ``writeManifest(manifest)`` and ``writeState(state, timestamp)`` are the
    original framework's interface; ``close()`` finalises the ZIP (the
    service calls it on shutdown) and ``start_new_segment()`` starts the next
    file of the recording.
    """

    #: ``writeState`` takes the state's JSON text (``text=``) made for publishing.
    accepts_state_text = True

    def __init__(self, recordFile: str | os.PathLike, fsync_interval: float = FSYNC_INTERVAL):
        path = os.fspath(recordFile)
        if not path.endswith(".zip"):
            path += ".zip"
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.base_path = path
        self.fsync_interval = fsync_interval
        self._journal: JournalWriter | None = None
        self._manifest: dict | None = None
        self.closed = False
        segments = existing_segments(path) or [1]
        for number in segments:
            try:
                zipstore.finalise(segment_path(path, number))
            except JournalBusy as error:
                raise ValueError(f"recording {path} is in use: {error}") from None
            except zipstore.RecordingException as error:
                raise ValueError(f"cannot continue recording {path}: {error}") from None
        self._open_segment(segments[-1])

    # ----- segments --------------------------------------------------------------

    def _open_segment(self, number: int) -> None:
        self.segment = number
        self.recordFile = segment_path(self.base_path, number)
        first = last = None
        try:
            archive = zipstore.open_zip(self.recordFile)
        except zipstore.RecordingException as error:
            raise ValueError(f"cannot continue recording {self.recordFile}: {error}") from None
        if archive is not None:
            with archive:
                seconds = [s for s in map(zipstore.frame_second, archive.namelist()) if s is not None]
            if seconds:
                first, last = min(seconds), max(seconds)
        self.first_frame: int | None = first
        self.latest_frame: int | None = last
        self.frames = 0
        self._basis: dict | None = None
        self._basis_since_key = 0
        self._current_second: int | None = None
        self._current_state: dict | None = None
        self._current_since_key = 0
        self._manifest_guessed_start = False
        self._colspec: str | None = None
        try:
            self._journal = JournalWriter(journal_path(self.recordFile),
                                          os.path.basename(self.recordFile))
        except JournalBusy as error:
            raise ValueError(f"recording {self.recordFile} is in use: {error}") from None
        self._last_sync = time.monotonic()

    def _finalise_segment(self) -> None:
        if self._journal is not None and not self._journal.closed:
            self._journal.sync()
            self._journal.close()
        zipstore.finalise(self.recordFile)

    def start_new_segment(self) -> None:
        """Finish this file and continue in the next one (``NAME-2.zip`` ...).

        The new file gets its own manifest (the latest one, with a new
        ``startTime``) and starts with a keyframe.
        """
        if self.closed:
            return
        manifest = self._manifest
        self._finalise_segment()
        self._open_segment(self.segment + 1)
        if manifest is not None:
            self.writeManifest(manifest)

    # ----- writing ---------------------------------------------------------------

    @property
    def has_manifest(self) -> bool:
        """True once a manifest has been written to the current segment."""
        return self._manifest is not None

    def writeManifest(self, serviceRegistration: dict) -> None:
        """Store the manifest (plus ``version: 1`` and ``startTime``) for this segment."""
        if self.closed or self._journal is None:
            return
        manifest = dict(serviceRegistration)
        manifest["version"] = 1
        if self.first_frame is not None:
            manifest["startTime"] = self.first_frame
            self._manifest_guessed_start = False
        else:
            manifest["startTime"] = int(time.time())
            self._manifest_guessed_start = True
        self._manifest = manifest
        self._journal.append("manifest.json", dumps(manifest))

    def _second(self, timestamp: float | None) -> int:
        second = int(time.time() if timestamp is None else timestamp)
        floor = self._current_second if self._current_second is not None else self.latest_frame
        if floor is not None and second < floor:
            second = floor  # clocks going backwards never reorder frames
        return second

    def noteColumnSpec(self, colspec: list, timestamp: float | None = None) -> None:
        """Remember the columns of the states from ``timestamp`` on (stored when they change).

        ``colspec`` is the manifest form (lists of title, type[, description]).
        """
        if self.closed or self._journal is None:
            return
        payload = dumps(colspec)
        if payload == self._colspec:
            return
        self._colspec = payload
        self._journal.append(f"colspec-{self._second(timestamp):011d}.json", payload)

    def writeState(self, state: dict, timestamp: float | None = None, text: str | None = None) -> None:
        """Record ``state`` as the frame of the second of ``timestamp`` (default: now).

        ``text``, when given, is the state's compact ASCII JSON (``dumps(state)``) already made
        for publishing: the recorder then copies and stores the state from it.
        """
        if self.closed or self._journal is None:
            return
        second = self._second(timestamp)
        if self._current_second is not None and second > self._current_second:
            self._basis = self._current_state
            self._basis_since_key = self._current_since_key
        snapshot = snapshot_state(state) if text is None else json.loads(text)
        frame = None
        if self._basis is not None and self._basis_since_key + 1 < INTRA_FRAMES:
            frame = intra_frame(self._basis, snapshot)
        if frame is None:
            name = f"{second:011d}.json"
            payload = dumps(snapshot) if text is None else text
            since_key = 0
        else:
            name = f"{second:011d}i.json"
            payload = dumps(frame)
            since_key = self._basis_since_key + 1
        self._journal.append(name, payload)
        if self._current_second != second:
            self.frames += 1
        self._current_second = second
        self._current_state = snapshot
        self._current_since_key = since_key
        if self.first_frame is None:
            self.first_frame = second
        self.latest_frame = second
        if self._manifest_guessed_start and self._manifest is not None:
            self.writeManifest(self._manifest)
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval:
            self._journal.sync()
            self._last_sync = now

    @property
    def duration(self) -> int:
        """Seconds between the first and the latest frame of this segment."""
        if self.first_frame is None or self.latest_frame is None:
            return 0
        return self.latest_frame - self.first_frame

    def close(self) -> None:
        """Move everything recorded into the ZIP; later writes are ignored."""
        if self.closed:
            return
        self.closed = True
        self._finalise_segment()
