"""WAMP names and the message wrapper every Timing71 publication uses.

Topics, procedures and message classes are part of the wire contract with
Timing71 clients, relays and the directory; their spelling must not change.
"""

from __future__ import annotations

import os
import time
from enum import IntEnum
from typing import Any

from autobahn.wamp import auth


class Realm:
    """WAMP realms."""

    TIMING = "timing"


class Channel:
    """Well-known topics."""

    CONTROL = "livetiming.control"
    DIRECTORY = "livetiming.directory"
    SCHEDULER = "livetiming.scheduler"
    RECORDING = "livetiming.recordings"


class RPC:
    """Procedure names; those with ``{}`` are formatted with a service uuid."""

    AUTHENTICATE = "livetiming.authenticate"
    AUTHENTICATE_LOOKUP = "livetiming.authenticate.lookup"
    DIRECTORY_LISTING = "livetiming.directory.listServices"
    SCHEDULE_LISTING = "livetiming.schedule.list"
    LIVENESS_CHECK = "livetiming.service.isAlive.{}"
    REQUEST_STATE = "livetiming.service.requestState.{}"
    REQUEST_ANALYSIS_DATA = "livetiming.service.requestAnalysisData.{}"
    REQUEST_ANALYSIS_MANIFEST = "livetiming.service.requestAnalysisManifest.{}"
    REQUEST_ANALYSIS_CAR_LIST = "livetiming.service.requestAnalysisCarList.{}"
    RECORDINGS_PAGE = "livetiming.recordings.page"
    RECORDINGS_NAMES = "livetiming.recordings.names"
    RECORDINGS_MANIFEST = "livetiming.recordings.manifest"
    RECORDINGS_UPDATE_MANIFEST = "livetiming.recordings.updateManifest"


class MessageClass(IntEnum):
    """The ``msgClass`` of a wrapped message."""

    INITIALISE_DIRECTORY = 1
    SERVICE_REGISTRATION = 2
    SERVICE_DEREGISTRATION = 3
    SERVICE_DATA = 4
    DIRECTORY_LISTING = 5
    SCHEDULE_LISTING = 6
    ANALYSIS_DATA = 7
    SERVICE_DATA_COMPRESSED = 8
    ANALYSIS_DATA_COMPRESSED = 9
    RECORDING_LISTING = 10


class Message:
    """The wrapper ``{msgClass, date, payload[, retain]}`` around every publication.

    ``date`` is milliseconds since the epoch. ``retain`` asks relays to
    re-publish the message with WAMP retain (a workaround for routers that
    do not pass retain through).
    """

    def __init__(self, msgClass: int, payload: Any = None, date: Any = None, retain: bool = False):
        self.msgClass = msgClass
        self.payload = payload
        self.date = date if date is not None else int(time.time() * 1000)
        self.retain = retain

    def serialise(self) -> dict:
        """The JSON-ready dict sent on the wire."""
        msg_class = self.msgClass
        if isinstance(msg_class, IntEnum):
            msg_class = int(msg_class)
        data = {"msgClass": msg_class, "date": self.date, "payload": self.payload}
        if self.retain:
            data["retain"] = True
        return data

    @staticmethod
    def parse(raw: dict) -> Message:
        """Rebuild a Message from its serialised dict."""
        return Message(
            raw.get("msgClass"),
            raw.get("payload"),
            raw.get("date"),
            bool(raw.get("retain", False)),
        )

    def __repr__(self) -> str:
        return f"Message({self.msgClass!r}, date={self.date!r}, retain={self.retain!r})"


def _secret() -> str:
    return os.environ.get("LIVETIMING_SHARED_SECRET", "")


def compute_signature(challenge_extra: dict, secret: str) -> str:
    """WAMP-CRA signature of a challenge, deriving the key first when salted."""
    key: str | bytes = secret
    if "salt" in challenge_extra:
        key = auth.derive_key(
            secret,
            challenge_extra["salt"],
            challenge_extra.get("iterations", 1000),
            challenge_extra.get("keylen", 32),
        )
    return auth.compute_wcs(key, challenge_extra["challenge"]).decode("ascii")


def authenticatedService(cls):
    """Class decorator: make an ApplicationSession join realm ``timing`` with WAMP-CRA.

    The authid comes from ``LIVETIMING_AUTH_ID`` (default ``services``) and the
    secret from ``LIVETIMING_SHARED_SECRET``; salted secrets (PBKDF2) are
    handled when the router's challenge carries a salt.
    """

    def onConnect(self):
        authid = os.environ.get("LIVETIMING_AUTH_ID", "services")
        realm = getattr(self.config, "realm", None) or Realm.TIMING
        self.join(realm, ["wampcra", "anonymous"], authid)

    def onChallenge(self, challenge):
        if challenge.method != "wampcra":
            raise Exception(f"Unsupported authentication method: {challenge.method}")
        return compute_signature(challenge.extra, _secret())

    cls.onConnect = onConnect
    cls.onChallenge = onChallenge
    return cls
