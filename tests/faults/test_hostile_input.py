"""Hostile input, in process (issue 9 part 6): property-based fuzzing of both feeds.

Each hypothesis example plays a window of a real capture into a fresh feed with hostile frames
(tests/faults/hostile.py) mixed in. After every frame the feed must not have raised, must not have
hit its internal-error safety net, and its events must render as messages; after every example the
timing model must render as Common Timing Data that serialises to strict JSON (``allow_nan=False``,
what ``compress_state`` does before a state is published). At least 10,000 hostile frames per feed
in ``make test`` (more under ``--soak``). The service layer's rate-limited log of bad frames is
tested here too; the real process under a flood is in test_hostile_service.py.
"""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import Logger

from livetiming.service.compression import state_json
from livetiming.service.plugins.carobama import ctd
from livetiming.service.plugins.carobama.model import EventKind
from livetiming.service.plugins.carobama.service import BAD_FRAME_LOG_LIMIT, FrameProblemLog
from tests.faults.hostile import Templates
from tests.support.stores import make_feed

T0 = 1_717_000_000.0
#: Hostile frames per hypothesis example (short form) and examples per feed.
PER_EXAMPLE = 40
EXAMPLES = 260
#: Longest text a published state or message may hold: a hostile frame must not be able to make
#: every later state (kept 100 messages deep, compressed each cycle) megabytes long.
MAX_TEXT = 2000


class FuzzTally:
    """What one fuzz run saw: frames played, bad-frame events, internal errors."""

    def __init__(self) -> None:
        self.hostile = 0
        self.valid = 0
        self.bad_events = 0
        self.internal_errors: list[str] = []
        self.seconds = 0.0


def longest_text(value) -> int:
    """Length of the longest string anywhere in a JSON-like value."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        value = list(value.values()) + list(value)
    if isinstance(value, list | tuple):
        return max(map(longest_text, value), default=0)
    return 0


def render(feed) -> str:
    """The model as the service publishes it: CTD cars and session, as strict JSON."""
    model = feed.model
    spec = ctd.column_spec(model)
    cars = ctd.cars(model, spec)
    assert all(len(row) == len(spec) for row in cars)
    ctd.description(model)
    ctd.name(model)
    state = {"cars": cars, "session": ctd.session(model, T0 + 10_000)}
    assert longest_text(state) <= MAX_TEXT
    return state_json(state)


def fuzz_feed(source: str, captures: list[str], examples: int) -> FuzzTally:
    """Run the hypothesis fuzz of one feed; returns the tally (asserts inside)."""
    templates = Templates(captures)
    tally = FuzzTally()
    valid = templates.texts

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(min_value=0, max_value=len(valid) - 1),
           st.lists(templates.frames(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE + 10),
           st.lists(st.one_of(st.just(None), st.floats(allow_nan=True, allow_infinity=True)),
                    min_size=1, max_size=3))
    def example(offset, hostile, odd_times):
        feed = make_feed(source)
        start = offset
        if source == "emperor":  # begin at the snapshot before the window so the cars are known
            while start > 0 and '"EventType":200' not in valid[start]:
                start -= 1
        window = valid[start:start + len(hostile)]
        now = T0
        for index, frame in enumerate(hostile):
            now += 0.05
            if index < len(window):
                feed.receive(window[index], now)
                tally.valid += 1
            timestamp = odd_times[index % len(odd_times)] if index % 17 == 16 else now
            events = feed.receive(frame, timestamp if timestamp is not None else now)
            tally.hostile += 1
            for event in events:
                if event.kind == EventKind.BAD_FRAME:
                    tally.bad_events += 1
                    if "internal error" in event.text:
                        tally.internal_errors.append(event.text)
            messages = ctd.messages(events)
            json.dumps(messages, allow_nan=False)
            assert longest_text(messages) <= MAX_TEXT, "a message is too long"
        render(feed)

    started = time.monotonic()
    example()
    tally.seconds = time.monotonic() - started
    return tally


def check_and_report(tally: FuzzTally, examples: int, figures) -> None:
    assert tally.internal_errors == [], tally.internal_errors[:5]
    assert tally.hostile >= examples * PER_EXAMPLE >= 10_000
    assert tally.bad_events > tally.hostile // 10, "most hostile frames should be reported as bad"
    figures["hostile_frames"] = tally.hostile
    figures["valid_frames_mixed_in"] = tally.valid
    figures["bad_frame_events"] = tally.bad_events
    figures["crashes"] = 0
    figures["internal_errors"] = len(tally.internal_errors)
    figures["seconds"] = round(tally.seconds, 1)


def test_emperor_feed_survives_hostile_frames(soak, figures):
    examples = EXAMPLES * (10 if soak else 1)
    tally = fuzz_feed("emperor", ["race-v2x", "practice-v1", "session-change-v1", "edge-cases"], examples)
    check_and_report(tally, examples, figures)


def test_bmi_feed_survives_hostile_frames(soak, figures):
    examples = EXAMPLES * (10 if soak else 1)
    tally = fuzz_feed("bmi", ["bmi-sequence", "bmi-hostile", "bmi-laps"], examples)
    check_and_report(tally, examples, figures)


class ListLog:
    """A Logger stand-in that keeps the formatted warnings."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def warn(self, format: str, **fields) -> None:
        self.lines.append(format.format(**fields))


def test_bad_frames_are_logged_at_most_ten_a_minute_then_counted(figures):
    log = ListLog()
    problems = FrameProblemLog(log)  # type: ignore[arg-type]
    for index in range(50_000):  # a flood within one minute
        problems.report(100.0 + index * 0.001, f"not JSON #{index}")
    assert len(log.lines) == BAD_FRAME_LOG_LIMIT
    assert all(line.startswith("Ignored an upstream frame: not JSON #") for line in log.lines)
    problems.report(161.0, "late")  # the next minute says how many were not logged
    assert log.lines[BAD_FRAME_LOG_LIMIT] == f"{50_000 - BAD_FRAME_LOG_LIMIT} more bad upstream frames " \
                                             "in the last minute (not logged)"
    assert log.lines[-1] == "Ignored an upstream frame: late"
    figures["flood_frames"] = 50_000
    figures["log_lines"] = len(log.lines)


def test_frame_problem_log_works_with_a_real_logger():
    FrameProblemLog(Logger(namespace="carobama.test")).report(0.0, "x")
