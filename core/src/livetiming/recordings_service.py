"""``livetiming-recordings``: the recordings directory as a WAMP service.

It keeps ``index.json`` of ``$LIVETIMING_RECORDINGS_DIR`` up to date (on
start and every ``--rescan`` seconds) and answers (``timing71-wire.md`` §5.2):

* ``livetiming.recordings.page(page_number=1, filter_name=None, show_hidden=False)``
  → ``{recordings: [...50 entries, newest first], pages, total}``
* ``livetiming.recordings.names(show_hidden=False)`` → the series names, sorted
* ``livetiming.recordings.manifest(uuid)`` → one index entry
* ``livetiming.recordings.updateManifest(manifest, authcode)`` → the updated
  entry; changes ``name``, ``description``, ``hidden`` or ``external`` of a
  recording (in its ZIP, by appending, and in the index). Refused unless
  ``authcode`` equals ``LIVETIMING_ADMIN_AUTHCODE`` (refused always when
  that is unset).

The directory logic is in ``RecordingsDirectory`` (no WAMP needed, for
tests); the session joins realm ``timing`` with WAMP-CRA like services do.
"""

from __future__ import annotations

import argparse
import hmac
import json
import math
import os
import sys
from typing import Any

from livetiming.recording import journal as journal_module
from livetiming.recording.reader import RecordingFile
from livetiming.recording.tools import (
    index_entry,
    recordings_dir,
    update_recordings_index,
    write_json_atomically,
)
from livetiming.recording.zipstore import RecordingException, finalise

PAGE_SIZE = 50
#: Manifest fields ``updateManifest`` may change.
EDITABLE_FIELDS = ("name", "description", "hidden", "external")
ERROR_UNAUTHORISED = "livetiming.error.not_authorised"
ERROR_NO_RECORDING = "livetiming.error.no_such_recording"
ERROR_BUSY = "livetiming.error.recording_busy"


class DirectoryError(Exception):
    """A refused request: ``error`` is the WAMP error URI sent to the caller."""

    def __init__(self, error: str, message: str):
        super().__init__(message)
        self.error = error


class RecordingsDirectory:
    """The index of one recordings directory and the answers to the ``livetiming.recordings.*`` RPCs."""

    def __init__(self, directory: str | os.PathLike | None = None, log: Any = None):
        self.directory = os.path.abspath(os.fspath(directory or recordings_dir()))
        self.index_file = os.path.join(self.directory, "index.json")
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.index: dict[str, dict] = {}

    def refresh(self) -> dict:
        """Rescan the directory and rewrite ``index.json``; returns the index."""
        self.index = update_recordings_index(self.index_file, log=self._log)
        return self.index

    def _visible(self, show_hidden: bool) -> list[dict]:
        return [entry for entry in self.index.values() if show_hidden or not entry.get("hidden")]

    def page(self, page_number: int = 1, filter_name: str | None = None,
             show_hidden: bool = False) -> dict:
        """One page (``PAGE_SIZE`` entries, newest first) of the recordings, optionally of one series."""
        entries = self._visible(bool(show_hidden))
        if filter_name:
            entries = [entry for entry in entries if entry.get("name") == filter_name]
        entries.sort(key=lambda entry: (entry.get("startTime") or 0), reverse=True)
        total = len(entries)
        try:
            number = max(1, int(page_number or 1))
        except (TypeError, ValueError):
            number = 1
        start = (number - 1) * PAGE_SIZE
        return {
            "recordings": entries[start:start + PAGE_SIZE],
            "pages": max(1, math.ceil(total / PAGE_SIZE)),
            "total": total,
        }

    def names(self, show_hidden: bool = False) -> list[str]:
        """The distinct series names of the recordings, sorted."""
        return sorted({entry.get("name") or "" for entry in self._visible(bool(show_hidden))})

    def _key_for(self, uuid: str) -> str:
        if uuid in self.index:
            return uuid
        for key, entry in self.index.items():
            if entry.get("uuid") == uuid:
                return key
        raise DirectoryError(ERROR_NO_RECORDING, f"no recording {uuid!r}")

    def manifest(self, uuid: str) -> dict:
        """The index entry of a recording, by index key or manifest uuid."""
        return self.index[self._key_for(uuid)]

    def updateManifest(self, manifest: dict, authcode: str | None) -> dict:
        """Change the editable fields of a recording's manifest (admin only); returns the entry."""
        expected = os.environ.get("LIVETIMING_ADMIN_AUTHCODE")
        if not expected or not isinstance(authcode, str) or not hmac.compare_digest(
                authcode.encode(), expected.encode()):
            raise DirectoryError(ERROR_UNAUTHORISED, "wrong or missing authcode")
        if not isinstance(manifest, dict) or not manifest.get("uuid"):
            raise DirectoryError(ERROR_NO_RECORDING, "the manifest has no uuid")
        key = self._key_for(str(manifest["uuid"]))
        path = os.path.join(self.directory, self.index[key]["filename"])
        if journal_module.is_locked(journal_module.journal_path(path)):
            raise DirectoryError(ERROR_BUSY, f"{key} is still being recorded")
        try:
            with RecordingFile(path) as recording:
                current = dict(recording.manifest)
        except RecordingException as error:
            raise DirectoryError(ERROR_NO_RECORDING, str(error)) from None
        changed = False
        for field in EDITABLE_FIELDS:
            if field in manifest and current.get(field) != manifest[field]:
                current[field] = manifest[field]
                changed = True
        if changed:
            replace_manifest(path, current)
            with RecordingFile(path) as recording:
                entry = index_entry(path, recording.augmentedManifest())
            entry["hasAnalysis"] = self.index[key].get("hasAnalysis", False)
            self.index[key] = entry
            write_json_atomically(self.index_file, self.index)
        return self.index[key]


def replace_manifest(zip_path: str, manifest: dict) -> None:
    """Give a finished recording a new ``manifest.json`` by appending it (crash-safe, see zipstore)."""
    writer = journal_module.JournalWriter(journal_module.journal_path(zip_path),
                                          os.path.basename(zip_path))
    try:
        writer.append(journal_module.MANIFEST,
                      json.dumps(manifest, ensure_ascii=True, separators=(",", ":")))
        writer.sync()
    finally:
        writer.close()
    finalise(zip_path)


def create_session(directory: RecordingsDirectory) -> type:
    """The WAMP session class serving ``directory``."""
    from autobahn.twisted.wamp import ApplicationSession
    from autobahn.wamp.exception import ApplicationError
    from autobahn.wamp.types import RegisterOptions
    from twisted.internet.defer import inlineCallbacks

    from livetiming.network import RPC, authenticatedService

    def answering(method):
        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except DirectoryError as error:
                raise ApplicationError(error.error, str(error)) from None
        return call

    @authenticatedService
    class RecordingsSession(ApplicationSession):
        @inlineCallbacks
        def onJoin(self, details):
            options = RegisterOptions(force_reregister=True)
            yield self.register(answering(directory.page), RPC.RECORDINGS_PAGE, options=options)
            yield self.register(answering(directory.names), RPC.RECORDINGS_NAMES, options=options)
            yield self.register(answering(directory.manifest), RPC.RECORDINGS_MANIFEST,
                                options=options)
            yield self.register(answering(directory.updateManifest),
                                RPC.RECORDINGS_UPDATE_MANIFEST, options=options)
            self.log.info("Recordings directory service ready ({count} recordings)",
                          count=len(directory.index))

    return RecordingsSession


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``livetiming-recordings``."""
    from livetiming import load_env

    load_env()
    parser = argparse.ArgumentParser(
        prog="livetiming-recordings",
        description="Serve the recordings directory ($LIVETIMING_RECORDINGS_DIR) over WAMP.")
    parser.add_argument("--rescan", type=float, default=300.0,
                        help="seconds between directory rescans (default 300)")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    if not os.environ.get("LIVETIMING_ROUTER"):
        print("livetiming-recordings: LIVETIMING_ROUTER is not set", file=sys.stderr)
        raise SystemExit(2)

    from twisted.internet import reactor, task
    from twisted.logger import Logger

    from livetiming import make_component
    from livetiming.service.logs import setup_logging

    setup_logging("recordings", verbose=True, debug=args.debug)
    log = Logger(namespace="livetiming.recordings")
    directory = RecordingsDirectory(log=lambda line: log.info("{line}", line=line))
    directory.refresh()
    rescan = task.LoopingCall(directory.refresh)
    rescan.start(max(args.rescan, 1.0), now=False)
    component = make_component(create_session(directory))
    component.start(reactor)
    reactor.run()
