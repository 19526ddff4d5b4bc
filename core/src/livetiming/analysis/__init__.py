"""Live analysis: stints, laps, flags and messages built from a service's states.

``Analyser(uuid, publish, interval)`` is what ``BaseService`` creates (unless
``--disable-analysis``). Every update it receives a state; it publishes the
seven keys of ``timing71-wire.md`` §4 (``static``, ``driver``, ``messages``,
``session``, ``lap``, ``stint``, ``car_messages``) to
``livetiming.analysis/<uuid>/<key>``, per car for ``lap``, ``stint`` and
``car_messages`` (``lap/<num>`` ...), each key at most once per ``interval``
seconds; full dumps go out on ``publish_all()`` (a standalone client
connecting) and are returned by ``get_current_state()`` (the
``requestAnalysisData`` RPC).

How it differs from the original framework, on purpose:

* It runs on the reactor thread and is incremental: an update costs a
  few field look-ups per car; states are taken in at most once per second
  (the newest state of each second wins, exactly like the recorder), which
  also makes the offline analysis of a recording (``livetiming-analysis``)
  equal to the live analysis of the same session.
* A car's final stint closes when it takes the chequered flag or its state
  becomes ``FIN`` (see ``model.py`` for all rules; lap detection needs the
  ``Laps`` or ``Last`` column to change).
* Its state is saved as JSON (atomically) to
  ``$LIVETIMING_ANALYSIS_DIR/<uuid>.json`` and resumed when a service with
  the same uuid starts. No pickle. A committed second that changed anything
  (a lap, a stint, a flag, a message ...) is saved soon, on a timer of its
  own (never inside an update), coalesced to at most one save every
  ``SOON_SAVE_INTERVAL`` seconds, or ``SAVE_COST_FACTOR`` times the last
  save's duration when that is longer (a long race's big state costs the
  reactor at most 1/``SAVE_COST_FACTOR`` of its time); otherwise once a
  minute; and on shutdown. A process killed outright loses at most the last
  few seconds of analysis.
* Timestamps are whole Unix seconds.
* After a start with no saved state, or a ``reset()`` (new session), the
  first second takes in every message the state shows (as the offline
  analysis does with the first frame of a recording file); later seconds
  take the messages that are new since the previous second.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from livetiming.analysis import data as analysis_data
from livetiming.analysis.model import AnalysisModel, Car, Changes, Stint, cell_value
from livetiming.racing import FlagStatus, Stat

ANALYSIS_PUBLISH_INTERVAL = 60
#: Seconds between saves of the analysis state while nothing but the time changes.
SAVE_INTERVAL = 60
#: Seconds at least between the saves that follow changes (laps, stints, flags, messages).
SOON_SAVE_INTERVAL = 2.0
#: After a save taking ``d`` seconds, the next one waits at least ``SAVE_COST_FACTOR * d``.
SAVE_COST_FACTOR = 50
#: Minimum seconds between two full dumps triggered by ``publish_all``.
PUBLISH_ALL_INTERVAL = 1.0
STATE_FORMAT = "livetiming-analysis-state"
STATE_VERSION = 1
RETAINED_EXCEPT = frozenset(("lap", "stint"))

class _LazyLogger:
    """A twisted Logger imported on first use (offline tools never pay for loading twisted)."""

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._logger = None

    def __getattr__(self, name: str) -> Any:
        if self._logger is None:
            from twisted.logger import Logger

            self._logger = Logger(namespace=self._namespace)
        return getattr(self._logger, name)


__all__ = [
    "ANALYSIS_PUBLISH_INTERVAL",
    "Analyser",
    "FieldExtractor",
    "analysis_dir",
    "map_stint_with",
    "per_car",
]


def analysis_dir() -> str:
    """``$LIVETIMING_ANALYSIS_DIR`` (default: the working directory), created when missing."""
    path = os.environ.get("LIVETIMING_ANALYSIS_DIR") or os.getcwd()
    os.makedirs(path, exist_ok=True)
    return path


class FieldExtractor:
    """Reads a column of a car row by ``Stat`` (or column tuple), whatever the column order.

    Columns are matched as the original framework does: by exact tuple, else
    by title (``Stat.from_title``, ``"Lap"`` meaning Laps).
    """

    def __init__(self, colSpec: list):
        self.mapping: dict[Any, int] = {}
        for index, column in enumerate(Stat.parse_colspec(colSpec)):
            key = column if isinstance(column, Stat) else tuple(column)
            self.mapping.setdefault(key, index)
            if isinstance(column, Stat):
                self.mapping.setdefault(column.value, index)

    def index(self, field: Any) -> int | None:
        """The column index of ``field``, or None when the spec has no such column."""
        if isinstance(field, list):
            field = tuple(field)
        found = self.mapping.get(field)
        if found is None and isinstance(field, Stat):
            found = self.mapping.get(field.value)
        return found

    def get(self, car: Any, field: Any, default: Any = None) -> Any:
        """The value of ``field`` in the row ``car`` (``default`` when absent)."""
        if not car:
            return default
        index = self.index(field)
        if index is None or index >= len(car):
            return default
        return car[index]


_ROW_FIELDS = (Stat.NUM, Stat.STATE, Stat.LAPS, Stat.LAST_LAP, Stat.DRIVER)
_STATIC_FIELDS = (Stat.CLASS, Stat.TEAM, Stat.CAR)
#: Every column analysis reads.
ANALYSED_FIELDS = _ROW_FIELDS + _STATIC_FIELDS


def _colspec_key(colspec: list) -> tuple:
    return tuple(column if isinstance(column, Stat) else tuple(column) for column in colspec)


def _plain(value: Any) -> Any:
    if type(value) is list or type(value) is tuple:
        return value[0] if value else None
    return value


def extract_rows(cars: list, indexes: tuple) -> list[tuple]:
    """The values analysis needs from every car row (cars without a number are skipped).

    ``indexes`` are the columns of Num, State, Laps, Last and Driver (None
    when missing). Each result is ``((num, state, laps, last, driver), row)``
    with cell flags dropped (``[value, flag]`` gives value, ``[name, rank]``
    gives name) and the row itself, from which class, team and car are read
    while they are still unknown.
    """
    rows = []
    append = rows.append
    if None not in indexes:
        getter = itemgetter(*indexes)
        for car in cars:
            try:
                num, state, laps, last, driver = getter(car)
            except (IndexError, TypeError, KeyError):
                _slow_row(car, indexes, append)
                continue
            if type(num) is not str:
                if num is None:
                    continue
                num = _plain(num)
                if num is None:
                    continue
                num = str(num)
            if not num:
                continue
            if type(state) is list:
                state = _plain(state)
            if type(laps) is list:
                laps = _plain(laps)
            if type(last) is list:
                last = last[0] if last else None
            if type(driver) is list:
                driver = _plain(driver)
            append(((num, state, laps, last, driver), car))
        return rows
    for car in cars:
        _slow_row(car, indexes, append)
    return rows


def _slow_row(car: Any, indexes: tuple, append: Callable[[tuple], Any]) -> None:
    try:
        size = len(car)
    except TypeError:
        return
    values = [_plain(car[index]) if index is not None and index < size else None
              for index in indexes]
    num = values[0]
    if num is None or num == "":
        return
    values[0] = num if type(num) is str else str(num)
    append((tuple(values), car))


class _Pending:
    """The newest state of the second being received, not yet taken into the model."""

    __slots__ = ("second", "rows", "flag", "messages", "state_messages", "static_indexes")

    def __init__(self, second: int, rows: list, flag: Any, messages: list | None,
                 state_messages: list, static_indexes: tuple):
        self.second = second
        self.static_indexes = static_indexes
        self.rows = rows
        self.flag = flag
        self.messages = messages
        self.state_messages = state_messages


class Analyser:
    """Builds and publishes analysis data from a service's successive states.

    ``publish`` is the service's ``publish(topic, message, options)`` (None
    for offline use, which publishes nothing, never schedules timers and
    does not load or save state). ``clock`` (default: the reactor) is used
    for rate limits and timers; ``persist`` (default: on when publishing)
    saves and resumes ``$LIVETIMING_ANALYSIS_DIR/<uuid>.json``.
    """

    log = _LazyLogger("livetiming.analysis")

    def __init__(self, uuid: str, publish: Callable[..., Any] | None,
                 interval: float = ANALYSIS_PUBLISH_INTERVAL, *, clock: Any = None,
                 persist: bool | None = None):
        self.uuid = uuid
        self.publish = publish
        self.interval = interval if interval and interval > 0 else 1
        if clock is None and publish is not None:
            from twisted.internet import reactor

            clock = reactor
        self.clock = clock
        self.persist = publish is not None if persist is None else persist
        self.model = AnalysisModel()
        self._pending: _Pending | None = None
        self._commit_call = None
        self._colspec_key: tuple | None = None
        self._colspec: list | None = None
        self._indexes: tuple = ()
        self._static_indexes: tuple = (None, None, None)
        self._queued: dict[str, None] = {}
        self._last_sent: dict[str, float] = {}
        self._flush_call = None
        self._last_publish_all: float | None = None
        self._publish_all_call = None
        self._last_save: float | None = None
        self._save_call = None
        #: Seconds at least between two saves after changes (grows with the cost of a save).
        self._soon_save_gap = SOON_SAVE_INTERVAL
        if self.persist:
            self._load()

    # ----- taking in states --------------------------------------------------------

    @property
    def data_centre(self) -> AnalysisModel:
        """The model (the original framework's name for it)."""
        return self.model

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()

    def receiveStateUpdate(self, newState: dict, colSpec: list, timestamp: float | None = None,
                           new_messages: list | None = None) -> None:
        """Take in a state published at ``timestamp`` with this update's ``new_messages``.

        Cheap: it extracts the few values analysis needs and keeps them as the
        newest state of their second; the model takes a second in when the
        next second starts (or on ``commit()``). When ``new_messages`` is None
        they are worked out by comparing the state's messages with the
        previous second's.
        """
        second = int(self._now() if timestamp is None else timestamp)
        pending = self._pending
        floor = pending.second if pending is not None else self.model.latest_timestamp
        if floor is not None and second < floor:
            second = floor
        if pending is not None and second > pending.second:
            self.commit()
            pending = None
        if colSpec != self._colspec:
            key = _colspec_key(colSpec)
            if key != self._colspec_key:
                extractor = FieldExtractor(colSpec)
                self._indexes = tuple(extractor.index(field) for field in _ROW_FIELDS)
                self._static_indexes = tuple(extractor.index(field) for field in _STATIC_FIELDS)
                self._colspec_key = key
            self._colspec = list(colSpec)
        rows = extract_rows(newState.get("cars", []), self._indexes)
        flag = (newState.get("session") or {}).get("flagState")
        state_messages = newState.get("messages", [])
        if pending is not None:
            pending.rows = rows
            pending.static_indexes = self._static_indexes
            pending.flag = flag
            pending.state_messages = state_messages
            if new_messages is not None and pending.messages is not None:
                pending.messages = list(new_messages) + pending.messages
            else:
                pending.messages = None
        else:
            self._pending = _Pending(second, rows, flag,
                                     list(new_messages) if new_messages is not None else None,
                                     state_messages, self._static_indexes)
            self._schedule_commit(second)

    def _schedule_commit(self, second: int) -> None:
        if self.publish is None or self.clock is None:
            return
        if self._commit_call is not None and self._commit_call.active():
            self._commit_call.cancel()
        delay = max(0.0, second + 1 - self.clock.seconds())
        self._commit_call = self.clock.callLater(delay, self._commit_from_timer)

    def _commit_from_timer(self) -> None:
        self._commit_call = None
        try:
            self.commit()
        except Exception:
            self.log.failure("Analysis of an update failed")

    def commit(self) -> None:
        """Take the pending second into the model now and queue what changed for publishing."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if self._commit_call is not None and self._commit_call.active():
            self._commit_call.cancel()
        self._commit_call = None
        model = self.model
        new_messages = pending.messages
        if model.latest_timestamp is None:
            # The first second after a start or reset takes every message the state shows, as
            # the offline analysis of a recording (or a segment) does with its first frame.
            new_messages = list(pending.state_messages)
        elif new_messages is None:
            new_messages = _new_messages(model.last_messages, pending.state_messages)
        changes = Changes() if self.publish is not None else None
        model.apply(pending.second, pending.rows, pending.flag, new_messages, changes,
                    pending.static_indexes)
        model.last_messages = pending.state_messages
        if changes is not None:
            self._queue_changes(changes)
        if self.persist:
            self._schedule_save(changes is not None and changes.any())

    def _schedule_save(self, soon: bool) -> None:
        """Have the state saved: ``soon`` (something changed) or within ``SAVE_INTERVAL``.

        The save runs on its own timer, never in the caller (an update may be
        the caller); without a clock (offline use) it runs in the caller, once
        a minute at most.
        """
        now = self._now()
        if self._last_save is None and not soon:
            self._last_save = now  # the minute starts now
        last = self._last_save
        due = now if last is None else last + (self._soon_save_gap if soon else SAVE_INTERVAL)
        if self.clock is None:
            if due <= now:
                self._save()
            return
        call = self._save_call
        if call is not None and call.active():
            if call.getTime() <= due:
                return
            call.cancel()
        self._save_call = self.clock.callLater(max(0.0, due - now), self._save_from_timer)

    def _save_from_timer(self) -> None:
        self._save_call = None
        try:
            self._save()
        except Exception:
            self.log.failure("Saving the analysis state failed")

    # ----- publishing --------------------------------------------------------------

    def _queue_changes(self, changes: Changes) -> None:
        queue = self._queued
        if changes.static:
            queue["static"] = None
        if changes.driver:
            queue["driver"] = None
        if changes.messages:
            queue["messages"] = None
        if changes.session:
            queue["session"] = None
        for num in changes.cars_full:
            queue[f"lap/{num}"] = None
            queue[f"stint/{num}"] = None
            queue[f"car_messages/{num}"] = None
        for num in changes.laps:
            queue[f"lap/{num}"] = None
        for num in changes.stints:
            queue[f"stint/{num}"] = None
        for num in changes.car_messages:
            queue[f"car_messages/{num}"] = None
        if queue:
            self._flush()

    def _send(self, key: str, payload: Any, now: float) -> None:
        from livetiming.network import Message, MessageClass

        retain = key not in RETAINED_EXCEPT
        options = None
        if retain:
            try:
                from autobahn.wamp.types import PublishOptions

                options = PublishOptions(retain=True)
            except ImportError:  # pragma: no cover - autobahn is a dependency
                options = None
        self._last_sent[key] = now
        try:
            self.publish(f"livetiming.analysis/{self.uuid}/{key}",
                         Message(MessageClass.ANALYSIS_DATA, payload, retain=retain), options)
        except Exception:
            self.log.failure("Publishing analysis key {key} failed", key=key)

    def _flush(self) -> None:
        self._flush_call = None
        if self.publish is None:
            self._queued.clear()
            return
        now = self._now()
        next_due = None
        for key in list(self._queued):
            due = self._last_sent.get(key)
            due = now if due is None else due + self.interval
            if due <= now:
                del self._queued[key]
                self._send(key, analysis_data.get_key(self.model, key), now)
            elif next_due is None or due < next_due:
                next_due = due
        if next_due is not None and self.clock is not None:
            self._flush_call = self.clock.callLater(next_due - now, self._flush)

    def publish_all(self) -> None:
        """Publish every key in full now (at most once a second; later calls are coalesced)."""
        if self.publish is None:
            return
        now = self._now()
        if self._last_publish_all is not None and now - self._last_publish_all < PUBLISH_ALL_INTERVAL:
            if (self._publish_all_call is None or not self._publish_all_call.active()) \
                    and self.clock is not None:
                delay = self._last_publish_all + PUBLISH_ALL_INTERVAL - now
                self._publish_all_call = self.clock.callLater(delay, self.publish_all)
            return
        self._publish_all_call = None
        self._last_publish_all = now
        for key, builder in analysis_data.MODULES.items():
            self._send(key, builder(self.model), now)
        # The full dumps carry everything the queued deltas would have.
        self._queued.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    def get_current_state(self) -> dict:
        """Every key's full value: ``static``, ``driver``, ``messages``, ``session``,
        ``lap``, ``stint`` and ``car_messages``."""
        return analysis_data.get_all(self.model)

    def getData(self) -> dict:
        """Alias of ``get_current_state()``."""
        return self.get_current_state()

    # ----- state on disk -----------------------------------------------------------

    def _state_file(self) -> str:
        return os.path.join(analysis_dir(), f"{self.uuid}.json")

    def _save(self) -> None:
        from livetiming.recording.tools import write_json_atomically

        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        started = time.monotonic()
        path = self._state_file()
        try:
            write_json_atomically(path, {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                "uuid": self.uuid,
                "model": self.model.to_json(),
            })
        except (OSError, ValueError, TypeError) as error:
            self.log.warn("Could not save analysis state to {path}: {error}", path=path, error=error)
            return
        took = time.monotonic() - started
        self._last_save = self._now()
        self._soon_save_gap = max(SOON_SAVE_INTERVAL, SAVE_COST_FACTOR * took)
        self.log.debug("Analysis state saved to {path} in {secs:.3f} s", path=path, secs=took)

    def _load(self) -> None:
        path = self._state_file()
        try:
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            self.log.warn("Ignoring unreadable analysis state {path}: {error}", path=path,
                          error=error)
            return
        if (not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT
                or saved.get("version") != STATE_VERSION):
            self.log.warn("Ignoring analysis state {path}: not a version {version} analysis state",
                          path=path, version=STATE_VERSION)
            return
        try:
            self.model = AnalysisModel.from_json(saved["model"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            self.log.warn("Ignoring damaged analysis state {path}: {error}", path=path, error=error)
            self.model = AnalysisModel()
            return
        self.log.info("Resumed analysis from {path} ({cars} cars)", path=path,
                      cars=len(self.model.cars))

    def save_data_centre(self) -> None:
        """Take in the pending second and save the analysis state (the service calls this on
        shutdown)."""
        self.commit()
        if self.persist:
            self._save()

    def reset(self) -> None:
        """Forget everything (a new session starts); clients get the emptied keys."""
        self._pending = None
        if self._commit_call is not None and self._commit_call.active():
            self._commit_call.cancel()
        self._commit_call = None
        self.model = AnalysisModel()
        self._queued = {key: None for key in analysis_data.MODULES}
        if self.persist:
            self._save()
        if self.publish is not None:
            self._flush()
        else:
            self._queued.clear()


def _new_messages(previous: list, current: list) -> list:
    from livetiming.recording.recorder import new_messages_between

    found = new_messages_between(previous, current)
    if found is None:
        found = [message for message in current if message not in previous]
    return found


def map_stint_with(car: Car, timestamp: int | None) -> Callable[[Stint | None], list | None]:
    """A function turning a stint of ``car`` into its published tuple at ``timestamp``.

    ``[startLap, startTime, endLap, endTime, inProgress, driverIndex, bestLap,
    yellowLaps, averageLap, [[laptime, flag], ...]]``; an in-progress stint
    ends at the car's current lap and at ``timestamp``.
    """

    def map_stint(stint: Stint | None) -> list | None:
        return car.stint_tuple(stint, timestamp)

    return map_stint


def per_car(key: str, data_func: Callable[[Any], Any]):
    """Decorator for analysis functions written per car, as in the original framework.

    The decorated ``func(dc, race_num, position, old_car, new_car, f, flag,
    timestamp, new_messages)`` (returning True when it changed something) is
    called for every car of the new state; the result is
    ``inner(dc, old_state, new_state, colspec, timestamp, new_messages)``
    returning ``[(key, data_func(dc))]`` when any car changed, else ``[]``.
    """

    def decorate(func: Callable[..., bool]):
        def inner(dc: Any, old_state: dict, new_state: dict, colspec: list, timestamp: Any,
                  new_messages: list) -> list:
            flag = FlagStatus.fromString(new_state.get("session", {}).get("flagState", "none"))
            extractor = FieldExtractor(colspec)
            old_cars = {}
            for car in old_state.get("cars", []):
                num = extractor.get(car, Stat.NUM)
                if num:
                    old_cars.setdefault(num, car)
            changed = False
            for position, new_car in enumerate(new_state.get("cars", []), start=1):
                num = extractor.get(new_car, Stat.NUM)
                if num:
                    changed = func(dc, num, position, old_cars.get(num), new_car, extractor, flag,
                                   timestamp, new_messages) or changed
            return [(key, data_func(dc))] if changed else []

        return inner

    return decorate


# Names the original framework's analysis exposed for plugins and tools.
__all__ += ["AnalysisModel", "Car", "Stint", "cell_value"]
