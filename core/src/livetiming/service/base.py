"""The service base classes plugins extend.

A plugin subclasses ``BaseService`` and says *what* the timing looks like
(name, columns, ``getRaceState()``); the framework does the rest: the update
cycle (messages, highlight, state file, analysis, recording), the manifest,
and publishing, either on its own WebSocket server (standalone) or through a
WAMP router.
"""

from __future__ import annotations

import os
import sys
import uuid as uuid_module
from argparse import Namespace
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from livetiming import VERSION
from livetiming.messages import (
    CarPitMessage,
    DriverChangeMessage,
    FastLapMessage,
    FlagChangeMessage,
    TimingMessage,
)
from livetiming.network import RPC, Channel, Message, MessageClass
from livetiming.racing import colspec_entry
from livetiming.service import state_store
from livetiming.service.compression import StateCompressor

PLUGIN_PREFIX = "livetiming.service.plugins."
#: Marks an analyser not created yet (``BaseService.analyser`` is created on first use).
_NOT_CREATED = object()
MAX_MESSAGES = 100


def initial_state() -> dict:
    """The state of a service that has not updated yet."""
    return {
        "messages": [],
        "session": {"flagState": "green", "timeElapsed": 0, "timeRemain": 0},
        "cars": [],
    }


def resolve_uuid(args: Namespace) -> str:
    """``--uuid``, else the initial state file's basename, else a fresh hex uuid4."""
    explicit = getattr(args, "uuid", None)
    if explicit:
        return explicit
    initial = getattr(args, "initial_state", None)
    if initial:
        return os.path.splitext(os.path.basename(initial))[0]
    return uuid_module.uuid4().hex


def service_class_name(args: Namespace) -> str:
    """The plugin's short name as shown in manifests (``-m`` overrides it)."""
    masquerade = getattr(args, "masquerade", None)
    if masquerade:
        return masquerade
    name = getattr(args, "service_class", None) or "unknown"
    return name[len(PLUGIN_PREFIX):] if name.startswith(PLUGIN_PREFIX) else name


def _default_args() -> Namespace:
    from livetiming.service.cli import parse_args

    args, _extra = parse_args(["unknown"])
    return args


class AbstractService:
    """What every service has: identity, a clock, publishing and the manifest.

    Plugins normally extend ``BaseService``; this class holds the parts that
    do not depend on how timing is produced. Override ``getName()``,
    ``getDefaultDescription()``, ``getColumnSpec()``, ``getRaceState()`` and
    ``getVersion()``; optionally ``getTrackDataSpec()``,
    ``getPollInterval()``, ``getExtraMessageGenerators()`` and the class
    attributes ``auto_poll`` and ``attribution`` (``[name, url]``).
    """

    #: When True the service is updated every ``getPollInterval()`` seconds.
    auto_poll = True
    #: ``[name, url]`` credited as the data source in the manifest.
    attribution = None
    log = Logger()

    def __init__(self, args: Namespace | None = None, extra_args: list[str] | None = None):
        self.args = args if args is not None else _default_args()
        self.extra_args = list(extra_args or [])
        self.uuid = resolve_uuid(self.args)
        from twisted.internet import reactor

        #: The reactor's clock; tests may replace it with ``task.Clock``.
        self.clock = reactor
        self._publishers: list[Any] = []
        self._manifest_call = None
        self._last_manifest: dict | None = None

    # ----- what a plugin describes -------------------------------------------------

    def getName(self) -> str:
        """Series or venue name shown to users."""
        raise NotImplementedError

    def getDefaultDescription(self) -> str:
        """Session description used unless ``-d`` is given."""
        raise NotImplementedError

    def getDescription(self) -> str:
        """The description in force: ``-d`` or the plugin's default."""
        return getattr(self.args, "description", None) or self.getDefaultDescription()

    def getColumnSpec(self) -> list:
        """Columns of each car row: ``Stat`` members or raw tuples; Num first."""
        raise NotImplementedError

    def getTrackDataSpec(self) -> list[str]:
        """Headings of the track data values in ``session.trackData``."""
        return []

    def getPollInterval(self) -> float:
        """Seconds between updates for ``auto_poll`` services."""
        return 10

    def getExtraMessageGenerators(self) -> list[TimingMessage]:
        """Message generators run after the built-in ones."""
        return []

    def getVersion(self) -> str:
        """The plugin's version, reported in the manifest."""
        return "unknown"

    def getRaceState(self) -> dict:
        """The current timing: ``{"cars": [...], "session": {...}}``."""
        raise NotImplementedError

    # ----- manifest --------------------------------------------------------------

    def has_analysis(self) -> bool:
        """True when this service produces analysis data."""
        return False

    def _createServiceRegistration(self) -> dict:
        """The manifest clients use to describe and display this service."""
        manifest = {
            "uuid": self.uuid,
            "name": self.getName(),
            "serviceClass": service_class_name(self.args),
            "description": self.getDescription(),
            "colSpec": [colspec_entry(column) for column in self.getColumnSpec()],
            "trackDataSpec": list(self.getTrackDataSpec()),
            "pollInterval": self.getPollInterval() or 1,
            "hasAnalysis": self.has_analysis(),
            "hidden": bool(getattr(self.args, "hidden", False)),
            "livetimingVersion": {"core": VERSION, "plugin": self.getVersion()},
        }
        if self.attribution:
            manifest["source"] = list(self.attribution)
        if getattr(self.args, "do_not_record", False):
            manifest["doNotRecord"] = True
        return manifest

    def publishManifest(self) -> None:
        """Publish the manifest soon; calls within a second are coalesced into one."""
        if self._manifest_call is not None and self._manifest_call.active():
            return
        self._manifest_call = self.clock.callLater(1, self._publishManifestNow)

    def _publishManifestNow(self) -> None:
        self._manifest_call = None
        try:
            manifest = self._createServiceRegistration()
        except Exception:
            self.log.failure("Could not build the manifest")
            return
        self._last_manifest = manifest
        self._on_manifest(manifest)
        self.publish(Channel.CONTROL, Message(MessageClass.SERVICE_REGISTRATION, manifest))

    def _on_manifest(self, manifest: dict) -> None:
        """Hook: a manifest is about to be published (recorders store it)."""

    # ----- publishing ------------------------------------------------------------

    def add_publisher(self, publisher: Any) -> None:
        """Attach a sink with ``publish(topic, message_dict, retain)``."""
        self._publishers.append(publisher)

    def remove_publisher(self, publisher: Any) -> None:
        """Detach a sink (for example a WAMP session that left)."""
        if publisher in self._publishers:
            self._publishers.remove(publisher)

    def publish(self, topic: str, message: Any, options: Any = None) -> None:
        """Publish a ``Message`` (or an already serialised dict) to every sink.

        ``options`` may be WAMP ``PublishOptions``; its ``retain`` is honoured.
        """
        data = message.serialise() if isinstance(message, Message) else message
        retain = bool(getattr(options, "retain", False)) or bool(
            isinstance(message, Message) and message.retain
        )
        for publisher in list(self._publishers):
            try:
                publisher.publish(topic, data, retain)
            except Exception:
                self.log.failure("Publishing to {topic} failed", topic=topic)

    # ----- running ---------------------------------------------------------------

    def start(self) -> None:
        """Run the service until the reactor stops (standalone or WAMP)."""
        from livetiming.service.runner import run_service

        run_service(self)


class BaseService(AbstractService):
    """A service with the standard update cycle.

    Every update: ``getRaceState()``; the built-in and extra message
    generators compare it with the previous state; new messages are
    prepended (100 kept); ``highlight`` lists the cars they name; the state
    is handed to analysis and the recorder, and published. The state file
    ``$LIVETIMING_STATE_DIR/<uuid>.json`` (unless ``--no-write-state``) is
    written on a timer, at most once a second, and on ``shutdown()``.

    The state file also keeps the column spec the state was rendered with
    (``colSpec``) and the track data spec (``trackDataSpec``), as the
    manifest spells them; the original framework ignores these keys. After
    ``-s FILE`` they are in ``resumed_column_spec`` and
    ``resumed_track_data_spec`` (None for a file without them), so a plugin
    whose columns depend on its data can go on showing the resumed state
    until it has data of its own (an extension of this framework: plugins
    read them with ``getattr(self, "resumed_column_spec", None)``).
    """

    def __init__(self, args: Namespace | None = None, extra_args: list[str] | None = None):
        self._analyser: Any = _NOT_CREATED
        self.recorder = None
        #: Column spec (manifest ``colSpec`` form) of the ``-s`` state file, or None.
        self.resumed_column_spec: list[list[str]] | None = None
        #: Track data spec of the ``-s`` state file, or None.
        self.resumed_track_data_spec: list[str] | None = None
        super().__init__(args, extra_args)
        self.state = self._getInitialState()
        self._compressor = StateCompressor()
        self._message_generators: list[TimingMessage] | None = None
        self._poll_loop: task.LoopingCall | None = None
        self._state_file: state_store.ThrottledStateFile | None = None
        self._recorded_colspec: list | None = None
        #: The column spec of ``self.state`` (kept in the state file), None until known.
        self._state_colspec: list | None = None
        if not getattr(self.args, "no_write_state", False):
            self._state_file = state_store.ThrottledStateFile(
                os.path.join(state_store.state_dir(), f"{self.uuid}.json"), self._stateFileText)
        self.recorder = self._createRecorder()

    @property
    def analyser(self):
        """The analyser, created on first use (plugins may still be initialising before that).

        None when analysis is disabled or could not be created.
        """
        if self._analyser is _NOT_CREATED:
            self._analyser = None
            try:
                self._analyser = self._createAnalyser()
            except Exception:
                self.log.failure("Could not start analysis; continuing without it")
        return self._analyser

    @analyser.setter
    def analyser(self, value) -> None:
        self._analyser = value

    @property
    def clock(self):
        """The reactor's clock (tests replace it with ``task.Clock``; analysis follows it)."""
        return self._clock

    @clock.setter
    def clock(self, value) -> None:
        self._clock = value
        analyser = getattr(self, "_analyser", None)
        if analyser is not None and analyser is not _NOT_CREATED and hasattr(analyser, "clock"):
            analyser.clock = value

    # ----- analysis and recording ----------------------------------------------------

    def _createAnalyser(self):
        """The analyser (``livetiming.analysis``), or None with ``--disable-analysis``.

        Its state is saved to and resumed from ``$LIVETIMING_ANALYSIS_DIR``
        unless ``--no-write-state`` is given.
        """
        if getattr(self.args, "disable_analysis", False):
            return None
        try:
            from livetiming.analysis import Analyser
        except ImportError:
            return None
        return Analyser(self.uuid, self.publish, interval=max(self.getPollInterval() or 1, 10),
                        clock=self.clock,
                        persist=not getattr(self.args, "no_write_state", False))

    def _createRecorder(self):
        """The recorder for ``-r FILE`` (``.zip`` added when missing), or None.

        A recording that cannot be opened (in use by another process, or an
        existing file that is not a recording) is a ValueError: the command
        line reports it and exits with status 2.
        """
        filename = getattr(self.args, "recording_file", None)
        if not filename:
            return None
        try:
            from livetiming.recording import TimingRecorder
        except ImportError:
            self.log.warn("Recording requested but livetiming.recording is not available")
            return None
        if not filename.endswith(".zip"):
            filename += ".zip"
        try:
            recorder = TimingRecorder(filename)
        except OSError as error:
            raise ValueError(f"cannot record to {filename}: {error}") from None
        self.log.info("Recording to {path}", path=recorder.recordFile)
        return recorder

    def start_new_session(self) -> None:
        """A new session began: analysis starts again and the recording continues in a new file.

        Plugins call this when their source starts a new session (for
        example through ``getattr(self, "start_new_session", None)``, so they
        still run on frameworks without it). The recording goes on in
        ``NAME-2.zip``, ``NAME-3.zip`` ... each with its own manifest. Safe
        to call with analysis or recording disabled.
        """
        if self.analyser is not None:
            try:
                self.analyser.reset()
            except Exception:
                self.log.failure("Resetting analysis for the new session failed")
        if self.recorder is not None:
            start_segment = getattr(self.recorder, "start_new_segment", None)
            if start_segment is not None:
                try:
                    start_segment()
                    self.log.info("New session: recording continues in {path}",
                                  path=getattr(self.recorder, "recordFile", "?"))
                except Exception:
                    self.log.failure("Starting a new recording file failed")
        self._recorded_colspec = None

    def _record(self, state: dict, colspec: list, timestamp: float) -> None:
        recorder = self.recorder
        if not getattr(recorder, "has_manifest", True):
            try:
                manifest = self._createServiceRegistration()
            except Exception:
                self.log.failure("Could not build the manifest for the recording")
            else:
                recorder.writeManifest(manifest)
        note_colspec = getattr(recorder, "noteColumnSpec", None)
        if note_colspec is not None and colspec != self._recorded_colspec:
            note_colspec([colspec_entry(column) for column in colspec], timestamp)
            self._recorded_colspec = list(colspec)
        if getattr(recorder, "accepts_state_text", False):
            try:
                text = self._compressor.json_text(state)  # made once, published after
            except (TypeError, ValueError):
                text = None
            recorder.writeState(state, timestamp, text=text)
        else:
            recorder.writeState(state, timestamp)

    def has_analysis(self) -> bool:
        return self.analyser is not None

    def _on_manifest(self, manifest: dict) -> None:
        if self.recorder is not None:
            try:
                self.recorder.writeManifest(manifest)
            except Exception:
                self.log.failure("Could not write the manifest to the recording")

    # ----- state -----------------------------------------------------------------

    def _getInitialState(self) -> dict:
        path = getattr(self.args, "initial_state", None)
        if path:
            state = state_store.load_state(path)
            self.resumed_column_spec, self.resumed_track_data_spec = \
                state_store.pop_specs(state)
            state.setdefault("messages", [])
            state.setdefault("cars", [])
            state.setdefault("session", initial_state()["session"])
            return state
        return initial_state()

    def _saveState(self) -> None:
        """Have the state file written soon (at most once a second, on ``self.clock``)."""
        if self._state_file is not None:
            self._state_file.changed(self.clock)

    def _stateFileText(self) -> str:
        """The state file's JSON: the text compressed for publishing when it is of this state,
        with the column and track data specs added (``state_store.with_specs``)."""
        try:
            text = self._compressor.json_text(self.state)
        except TypeError:  # objects JSON does not know: written as their str()
            text = state_store.json_text(self.state)
        colspec = self._state_colspec
        try:
            track_data_spec = list(self.getTrackDataSpec())
        except Exception:
            track_data_spec = None
        return state_store.with_specs(
            text, [colspec_entry(column) for column in colspec] if colspec is not None else None,
            track_data_spec)

    # ----- update cycle ----------------------------------------------------------

    def _message_generators_in_use(self) -> list[TimingMessage]:
        if self._message_generators is None:
            colspec = self.getColumnSpec()
            generators = [
                FlagChangeMessage(),
                CarPitMessage(colspec),
                DriverChangeMessage(colspec),
                FastLapMessage(colspec),
            ] + list(self.getExtraMessageGenerators())
            for generator in generators:
                if getattr(generator, "clock", None) is None:
                    generator.clock = self.clock
            self._message_generators = generators
        return self._message_generators

    def _reset_message_generators(self) -> None:
        """Rebuild generators on the next update (call after the column spec changes)."""
        self._message_generators = None

    def _generate_messages(self, old_state: dict, new_state: dict) -> list[list]:
        messages: list[list] = []
        for generator in self._message_generators_in_use():
            try:
                messages.extend(generator.process(old_state, new_state))
            except Exception:
                self.log.failure("Message generator {name} failed", name=type(generator).__name__)
        messages.sort(key=lambda message: message[0], reverse=True)
        return messages

    def _updateRaceState(self) -> bool:
        """Take a new state from the plugin; returns False when the plugin failed."""
        try:
            race_state = self.getRaceState()
        except Exception:
            self.log.failure("getRaceState() failed; keeping the previous state")
            return False
        new_state = {
            "cars": list(race_state.get("cars", [])),
            "session": dict(race_state.get("session", {})),
        }
        new_messages = self._generate_messages(self.state, new_state)
        new_state["messages"] = (new_messages + list(self.state.get("messages", [])))[:MAX_MESSAGES]
        new_state["highlight"] = [message[4] for message in new_messages
                                  if len(message) > 4 and message[4] is not None]
        self.state = new_state
        timestamp = self.clock.seconds()
        colspec = None
        if self.analyser is not None or self.recorder is not None or self._state_file is not None:
            try:
                colspec = self.getColumnSpec()
            except Exception:
                self.log.failure("getColumnSpec() failed; update not analysed or recorded")
        self._state_colspec = colspec
        self._saveState()
        if colspec is None:
            return True
        if self.analyser is not None:
            try:
                self.analyser.receiveStateUpdate(new_state, colspec, timestamp, new_messages)
            except Exception:
                self.log.failure("Analysis of the update failed")
        if self.recorder is not None:
            try:
                self._record(new_state, colspec, timestamp)
            except Exception:
                self.log.failure("Recording the update failed")
        return True

    def _updateAndPublishRaceState(self) -> None:
        """One update cycle: new state, messages, save, analyse, record, publish."""
        self._updateRaceState()
        self._publishRaceState()

    def _publishRaceState(self) -> None:
        """Publish the current state (compressed, retained)."""
        try:
            payload = self._compressor.compress(self.state)
        except (TypeError, ValueError) as error:
            self.log.error("State is not valid JSON, not published: {error}", error=error)
            return
        self.publish(
            f"livetiming.service.{self.uuid}",
            Message(MessageClass.SERVICE_DATA_COMPRESSED, payload, retain=True),
        )

    def _startUpdates(self) -> None:
        """Begin updating: every poll interval for ``auto_poll`` services."""
        if self.auto_poll:
            self._poll_loop = task.LoopingCall(self._updateAndPublishRaceState)
            self._poll_loop.clock = self.clock
            self._poll_loop.start(self.getPollInterval() or 1, now=True)

    def _stopUpdates(self) -> None:
        if self._poll_loop is not None and self._poll_loop.running:
            self._poll_loop.stop()

    # ----- hooks used by the transports ------------------------------------------

    def onClientConnected(self) -> None:
        """A standalone client connected: manifest (soon), state (now), analysis."""
        self.publishManifest()
        self._publishRaceState()
        if self.analyser is not None:
            self.analyser.publish_all()

    def onControlMessage(self, message: Any) -> None:
        """A control-channel message: INITIALISE_DIRECTORY asks for our manifest."""
        try:
            parsed = Message.parse(message) if isinstance(message, dict) else message
        except Exception:
            return
        if getattr(parsed, "msgClass", None) == MessageClass.INITIALISE_DIRECTORY:
            self.publishManifest()

    def rpc_handlers(self) -> dict[str, Callable[..., Any]]:
        """The procedures a WAMP-connected service registers."""
        return {
            RPC.LIVENESS_CHECK.format(self.uuid): lambda *a, **k: True,
            RPC.REQUEST_STATE.format(self.uuid): lambda *a, **k: self.state,
            RPC.REQUEST_ANALYSIS_DATA.format(self.uuid): self._analysis_data,
        }

    def _analysis_data(self, *args, **kwargs):
        if self.analyser is None:
            return None
        return self.analyser.get_current_state()

    def shutdown(self) -> None:
        """Stop updating and flush what must not be lost (called when the reactor stops)."""
        self._stopUpdates()
        if self._state_file is not None:
            self._state_file.flush()
        if self.recorder is not None:
            try:
                self.recorder.close()
            except Exception:
                self.log.failure("Finishing the recording failed")
        if self._analyser is not _NOT_CREATED and self._analyser is not None:
            try:
                self._analyser.save_data_centre()
            except Exception:
                self.log.failure("Saving the analysis state failed")


class DuePublisher:
    """Mixin (put it first in the bases): publish when the plugin says data changed.

    The plugin calls ``set_due_publish()`` whenever its data changes; the
    service updates and publishes soon after, at most once per
    ``min_publish_interval`` seconds (bursts are coalesced) and at least every
    ``max_publish_interval`` seconds.

    Some changes should not wait that long: a completed lap, a pit stop or a
    flag is what people watch for. ``set_due_publish(urgent=True)`` (an
    extension of this framework; the original takes no argument) publishes
    after at most ``urgent_publish_interval`` seconds since the last
    publication instead, still coalescing a burst (a snapshot completing
    several laps) into one update.
    """

    max_publish_interval = 60
    min_publish_interval = 1.0
    urgent_publish_interval = 0.05

    def set_due_publish(self, urgent: bool = False) -> None:
        """Ask for an update-and-publish soon (``urgent``: within ``urgent_publish_interval``)."""
        last = getattr(self, "_last_due_publish", None)
        now = self.clock.seconds()
        interval = min(self.urgent_publish_interval, self.min_publish_interval) if urgent \
            else self.min_publish_interval
        delay = 0.0 if last is None else max(0.0, last + interval - now)
        call = getattr(self, "_due_call", None)
        if call is not None and call.active():
            if call.getTime() <= now + delay:
                return  # already due as soon as this asks
            call.cancel()
        self._due_call = self.clock.callLater(delay, self._publish_due)

    def _publish_due(self) -> None:
        for name in ("_due_call", "_idle_call"):
            call = getattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
        self._due_call = None
        self._last_due_publish = self.clock.seconds()
        self._idle_call = self.clock.callLater(self.max_publish_interval, self._publish_due)
        self._updateAndPublishRaceState()

    def _startUpdates(self) -> None:
        self._publish_due()

    def _stopUpdates(self) -> None:
        for name in ("_due_call", "_idle_call"):
            call = getattr(self, name, None)
            if call is not None and call.active():
                call.cancel()


def fatal(message: str, status: int = 2) -> None:
    """Print one clear line to stderr and exit with ``status``."""
    print(message, file=sys.stderr)
    raise SystemExit(status)
