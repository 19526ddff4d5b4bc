"""Store recorder: frames, feed events and the model → write operations (pure: no database, no clock)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from livetiming.racing import FlagStatus
from livetiming.service.plugins.carobama.capture import read_capture
from livetiming.service.plugins.carobama.feeds.bmi import BMIFeed
from livetiming.service.plugins.carobama.feeds.emperor import EmperorFeed
from livetiming.service.plugins.carobama.model import Entry, EventKind, FeedEvent, Lap, TimingModel
from livetiming.service.plugins.carobama.store.recorder import (
    Recorder,
    clean_json,
    clean_text,
    escape_frame,
    unescape_frame,
)
from livetiming.service.plugins.carobama.store.records import (
    DriverSeen,
    EntryUpsert,
    FrameRecord,
    LapRecord,
    LapsTruncate,
    MessageRecord,
    PitCount,
    PitIn,
    PitOut,
    RunEnd,
    RunStart,
    SessionEnd,
    SessionUpsert,
)

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
T0 = 1_717_000_000.0


class Harness:
    """A recorder with list sinks and a hand-driven model."""

    def __init__(self, source: str = "emperor", settle_after: float = 5.0):
        self.rows: list[Any] = []
        self.frames: list[FrameRecord] = []
        self.recorder = Recorder(self.rows.append, self.frames.append, run="run1", source=source,
                                 host="timing.example", settle_after=settle_after)
        self.model = TimingModel()
        self.model.session.server_name = "Server"
        self.now = T0

    def frame(self, *events: FeedEvent, text: str = "{}", step: float = 0.5) -> list[Any]:
        """Record one frame; returns the operations it produced."""
        self.now += step
        before = len(self.rows)
        self.recorder.record(text, self.now - T0, self.now, list(events), self.model)
        return self.rows[before:]

    def new_session(self, generation: int, session_id: str, name: str = "Race", **data: Any) -> FeedEvent:
        session = self.model.session
        session.generation = generation
        session.session_id = session_id
        session.name = name
        return FeedEvent(EventKind.SESSION_CHANGE, self.now, text=name,
                         data={"generation": generation, **data})

    def entry(self, key: str, number: str, driver: str = "Ann") -> Entry:
        entry = Entry(key=key, number=number, driver=driver, drivers=[driver])
        self.model.entries.append(entry)
        entry.position = len(self.model.entries)
        return entry

    def lap(self, entry: Entry, time: float | None, **data: Any) -> FeedEvent:
        lap = Lap(number=entry.lap_count + 1, time=time, driver=entry.driver, position=entry.position)
        entry.laps.append(lap)
        return FeedEvent(EventKind.LAP, self.now, car_number=entry.number,
                         data={"lap": lap.number, "time": time, "entry": entry.key, **data})


def of(kind: type, ops: list[Any]) -> list[Any]:
    return [op for op in ops if isinstance(op, kind)]


# ----- frames ----------------------------------------------------------------------------------


def test_every_frame_is_handed_over_in_order_with_its_times():
    h = Harness()
    for text in ("a", "b", "c"):
        h.frame(text=text)
    assert [(f.seq, f.data) for f in h.frames] == [(0, "a"), (1, "b"), (2, "c")]
    assert [f.received_at for f in h.frames] == [T0 + 0.5, T0 + 1.0, T0 + 1.5]
    assert [f.t for f in h.frames] == [0.5, 1.0, 1.5]
    assert h.recorder.frames_seen == 3


@pytest.mark.parametrize("text", ["plain", "Ζωή 李 🏁", "nul\x00inside", "lone \ud800 surrogate",
                                  '{"a": "\\u0000"}'])
def test_frames_any_database_refuses_are_escaped_and_read_back_exactly(text):
    stored, escaped = escape_frame(text)
    assert escaped == ("\x00" in text or "\ud800" in text)
    if escaped:
        stored.encode("utf-8")  # storable
        assert "\x00" not in stored
    assert unescape_frame(stored, escaped) == text


def test_text_and_json_are_made_storable():
    assert clean_text("O'Brien \"Bob\"; DROP TABLE laps;--") == "O'Brien \"Bob\"; DROP TABLE laps;--"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x\ud800y") == "x\ufffdy"
    assert clean_json({"a": float("nan"), "b": [float("inf"), 1.5, "\x00"], "c": (1, True)}) == {
        "a": None, "b": [None, 1.5, "\ufffd"], "c": [1, True]}


def test_the_run_is_announced_and_ended():
    h = Harness()
    h.recorder.start(T0, upstream="wss://host/api", service_uuid="u", version="1")
    h.recorder.stop(T0 + 9)
    assert isinstance(h.rows[0], RunStart) and h.rows[0].run == "run1" and h.rows[0].upstream == "wss://host/api"
    assert isinstance(h.rows[-1], RunEnd) and h.rows[-1].ended_at == T0 + 9


# ----- sessions --------------------------------------------------------------------------------


def test_a_session_is_written_with_its_upstream_identity_and_first_frame():
    h = Harness()
    h.frame(text="before any session")
    change = h.new_session(1, "2024-06-01T19:00:00Z")
    h.model.session.started_at = 1_717_268_400.0
    ops = h.frame(change, text="snapshot")
    upsert = of(SessionUpsert, ops)[0]
    assert (upsert.source, upsert.host, upsert.server) == ("emperor", "timing.example", "Server")
    assert upsert.key == "2024-06-01T19:00:00Z@1717268400"
    assert upsert.first_seq == 1 and upsert.fields["started_at"] == h.now
    assert upsert.fields["name"] == "Race" and upsert.fields["heat_start"] == 1_717_268_400.0
    message = of(MessageRecord, ops)[0]
    assert message.kind == "session_change" and message.ref == upsert.ref and message.seq == 1


def test_a_new_session_waits_until_the_feed_knows_its_identity():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    h.frame()
    # A "new session" event: the model's session id is still the old one until the next snapshot.
    change = h.new_session(2, "S1", name="Qualify")
    held = h.frame(change, FeedEvent(EventKind.CHAT, h.now, text="hi", data={"message": "hi"}))
    assert of(SessionUpsert, held) == [] and of(MessageRecord, held) == []
    assert of(SessionEnd, held)[0].reason == "replaced"
    h.model.session.session_id = "S2"
    ops = h.frame()
    upsert = of(SessionUpsert, ops)[0]
    assert upsert.key == "S2" and upsert.ref.generation == 2 and upsert.first_seq == 2
    assert [m.kind for m in of(MessageRecord, ops)] == ["session_change", "chat"]
    assert all(m.ref == upsert.ref for m in of(MessageRecord, ops))


def test_a_session_whose_identity_never_changes_gets_a_provisional_key_then_the_real_one():
    h = Harness(settle_after=5.0)
    h.frame(h.new_session(1, "S1"))
    h.frame(h.new_session(2, "S1"))
    assert of(SessionUpsert, h.frame(step=4.0)) == []
    provisional = of(SessionUpsert, h.frame(step=1.0))[0]
    assert provisional.key == "S1#run1:2"
    h.model.session.session_id = "S2"
    assert of(SessionUpsert, h.frame(step=1.0))[0].key == "S2"


def test_a_lap_settles_a_session_at_once():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    h.frame(h.new_session(2, "S1"))
    car = h.entry("car1", "7")
    ops = h.frame(h.lap(car, 61.5))
    assert of(SessionUpsert, ops)[0].key == "S1#run1:2"
    assert of(LapRecord, ops)[0].ref.generation == 2


def test_a_session_replaced_before_it_settled_keeps_its_messages_without_a_session():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    h.frame(h.new_session(2, "S1"), FeedEvent(EventKind.SERVER_RESTART, h.now, text="Server restarted"))
    ops = h.frame(h.new_session(3, "S3"))
    orphans = [m for m in of(MessageRecord, ops) if m.ref is None]
    assert [m.kind for m in orphans] == ["session_change", "server_restart"]
    assert all(op.ref.generation == 3 for op in of(SessionUpsert, ops))


def test_messages_of_a_session_not_settled_at_stop_are_kept_without_a_session():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    h.frame(h.new_session(2, "S1"), FeedEvent(EventKind.CHAT, h.now, text="bye", data={"message": "bye"}))
    before = len(h.rows)
    h.recorder.stop(h.now)
    kept = of(MessageRecord, h.rows[before:])
    assert [(m.kind, m.ref) for m in kept] == [("session_change", None), ("chat", None)]
    assert isinstance(h.rows[-1], RunEnd)


def test_the_row_of_a_finished_session_is_frozen_when_the_feed_loses_its_identity():
    h = Harness(source="bmi")
    h.model.session.started_at = 1_708_452_000.0
    h.frame(h.new_session(1, "Heat 3"))
    h.model.session.session_id = ""  # BMI "{}": no heat loaded, same generation
    h.model.session.name = "No heat loaded"
    assert of(SessionUpsert, h.frame(step=10)) == []


def test_a_heat_known_by_its_name_is_re_keyed_with_its_start():
    h = Harness(source="bmi")
    first = of(SessionUpsert, h.frame(h.new_session(1, "Heat 3")))[0]
    assert first.key == "Heat 3"
    h.model.session.started_at = 1_708_452_000.0
    h.frame()  # an event-less frame is compared at most every second
    assert of(SessionUpsert, h.frame(step=1.0))[0].key == "Heat 3@1708452000"


def test_session_end_event_ends_the_row_once():
    h = Harness(source="bmi")
    h.frame(h.new_session(1, "Heat 3"))
    ops = h.frame(FeedEvent(EventKind.SESSION_END, h.now, text="Heat 3", data={"reason": "finished"}))
    assert [(op.reason, op.ended_at) for op in of(SessionEnd, ops)] == [("finished", h.now)]
    assert of(SessionEnd, h.frame(h.new_session(2, "Heat 4"))) == []


# ----- entries and laps ------------------------------------------------------------------------


def test_entries_drivers_and_laps_come_from_the_model_once_each():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    car = h.entry("car1", "7", driver="Ann")
    h.model.session.flag = FlagStatus.GREEN
    ops = h.frame(h.lap(car, 61.5, personal_best=True, session_best=True))
    entry = of(EntryUpsert, ops)[0]
    assert (entry.entry_key, entry.fields["number"], entry.fields["first_seen_at"]) == ("car1", "7", h.now)
    assert [(d.entry_key, d.name) for d in of(DriverSeen, ops)] == [("car1", "Ann")]
    lap = of(LapRecord, ops)[0]
    assert (lap.number, lap.driver, lap.fields["time"], lap.fields["flag"]) == (1, "Ann", 61.5, "green")
    assert lap.fields["personal_best"] is True and lap.fields["session_best"] is True
    assert lap.fields["received_at"] == h.now and lap.fields["carried"] is False
    # Nothing changed: nothing more is written.
    assert [op for op in h.frame(step=2) if not isinstance(op, SessionUpsert)] == []
    car.driver = "Bob"
    car.drivers.append("Bob")
    change = FeedEvent(EventKind.DRIVER_CHANGE, h.now, car_number="7", data={"old": "Ann", "new": "Bob"})
    ops = h.frame(change, h.lap(car, 60.0))
    assert [d.name for d in of(DriverSeen, ops)] == ["Bob"]
    assert [(lap.number, lap.driver) for lap in of(LapRecord, ops)] == [(2, "Bob")]


def test_laps_reported_without_events_are_picked_up_within_a_second():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    car = h.entry("car1", "7")
    h.frame(step=1.0)
    car.laps.append(Lap(number=1, time=None, inferred=True))
    car.laps.append(Lap(number=2, time=62.0))
    assert of(LapRecord, h.frame(step=0.2)) == []
    laps = of(LapRecord, h.frame(step=1.0))
    assert [(lap.number, lap.fields["inferred"], lap.fields["time"]) for lap in laps] == [
        (1, True, None), (2, False, 62.0)]


def test_a_looped_session_writes_the_laps_it_keeps_as_carried():
    h = Harness()
    h.frame(h.new_session(1, "S1", name="Practice"))
    car = h.entry("car1", "7")
    h.frame(h.lap(car, 61.0))
    h.frame(h.new_session(2, "S1", name="Practice", looped=True))
    h.model.session.session_id = "S2"
    ops = h.frame(h.lap(car, 60.5))
    laps = [(lap.ref.generation, lap.number, lap.fields["carried"]) for lap in of(LapRecord, ops)]
    assert laps == [(2, 1, True), (2, 2, False)]


def test_a_corrected_last_lap_and_removed_laps_are_handed_over():
    h = Harness(source="bmi")
    h.frame(h.new_session(1, "Heat"))
    kart = h.entry("d1", "12")
    h.frame(h.lap(kart, 45.0))
    h.frame(h.lap(kart, 46.0))
    kart.laps[-1].time = 44.5  # the timekeeper corrected the last lap
    ops = h.frame(step=1.0)
    assert [(op.number, op.fields["time"], op.correction) for op in of(LapRecord, ops)] == [(2, 44.5, True)]
    del kart.laps[1:]  # ... then removed it
    ops = h.frame(step=1.0)
    assert [(op.entry_key, op.count) for op in of(LapsTruncate, ops)] == [("d1", 1)]
    assert of(LapRecord, h.frame(h.lap(kart, 47.0)))[0].number == 2


# ----- pit stops -------------------------------------------------------------------------------


def _pit(h: Harness, kind: str, car: Entry, **data: Any) -> FeedEvent:
    return FeedEvent(kind, h.now, car_number=car.number, data={"lap": car.lap_count, **data})


def test_a_pit_stop_counts_when_the_counter_rises_with_it():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    car = h.entry("car1", "7")
    h.frame()
    car.pit_count = 1
    ops = h.frame(_pit(h, EventKind.PIT_IN, car, tyre="S"))
    stop = of(PitIn, ops)[0]
    assert stop.counted and stop.entry_key == "car1" and stop.at == h.now
    assert stop.fields["in_lap"] == 1 and stop.fields["tyre_in"] == "S"
    assert of(PitCount, ops) == []
    out = of(PitOut, h.frame(_pit(h, EventKind.PIT_OUT, car, tyre="M")))[0]
    assert out.fields["out_lap"] == 1 and out.fields["tyre_out"] == "M"


def test_a_counter_that_rises_after_the_car_came_in_counts_that_stop():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    car = h.entry("car1", "7")
    h.frame()
    stop = of(PitIn, h.frame(_pit(h, EventKind.PIT_IN, car)))[0]
    assert not stop.counted
    car.pit_count = 1
    h.frame(step=0.2)
    counts = of(PitCount, h.frame(step=1.0))
    assert [(c.entry_key, c.count) for c in counts] == [("car1", 1)]


def test_pit_stops_made_before_the_recorder_saw_the_entry_are_counted_once():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    car = h.entry("car1", "7")
    car.pit_count = 2
    ops = h.frame(step=1.0)
    assert [(c.count, c.lap) for c in of(PitCount, ops)] == [(2, 0)]
    assert of(PitCount, h.frame(step=2)) == []


def test_a_stop_judged_from_a_slow_lap_happened_during_that_lap():
    h = Harness(source="bmi")
    h.frame(h.new_session(1, "Heat"))
    kart = h.entry("d1", "12")
    h.frame(h.lap(kart, 45.0))
    kart.pit_count = 1
    event = h.lap(kart, 95.0)
    pit = FeedEvent(EventKind.PIT_IN, h.now, car_number="12",
                    data={"inferred": True, "lap": 2, "time": 95.0, "median": 45.0, "entry": "d1"})
    stop = of(PitIn, h.frame(event, pit))[0]
    assert stop.counted and stop.fields["inferred"] is True
    assert (stop.fields["in_lap"], stop.fields["out_lap"]) == (2, 2)
    assert stop.fields["extra"] == {"time": 95.0, "median": 45.0}


# ----- messages --------------------------------------------------------------------------------


def test_messages_keep_their_frame_and_chats_a_deduplication_key():
    h = Harness()
    h.frame(h.new_session(1, "S1"))
    chat = FeedEvent(EventKind.CHAT, h.now, text="Ann: hi",
                     data={"time": "2024-06-01T19:00:01Z", "guid": "765", "message": "hi", "x": float("nan")})
    bad = FeedEvent(EventKind.BAD_FRAME, h.now, text="not JSON")
    ops = h.frame(bad, chat)
    [message] = of(MessageRecord, ops)
    assert (message.seq, message.idx, message.kind) == (1, 1, "chat")
    assert message.dedup_key == "chat|2024-06-01T19:00:01Z|765|hi"
    assert message.data["x"] is None


# ----- whole captures --------------------------------------------------------------------------


def _replay(name: str, feed: Any, source: str) -> Harness:
    h = Harness(source=source)
    _header, frames = read_capture(CAPTURES / f"{name}.jsonl")
    for t, data in frames:
        events = feed.receive(data, T0 + t)
        h.recorder.record(data, t, T0 + t, events, feed.model)
    return h


def _final(h: Harness) -> tuple[int, list[Any]]:
    last = max(op.ref.generation for op in h.rows if isinstance(op, SessionUpsert))
    return last, [op for op in h.rows if getattr(op, "ref", None) is not None and op.ref.generation == last]


def _laps_by_number(ops: list[Any]) -> dict[str, dict[int, float | None]]:
    """What the operations leave in a laps table, by car number (the writer's rules in miniature)."""
    numbers = {op.entry_key: op.fields["number"] for op in of(EntryUpsert, ops)}
    stored: dict[str, dict[int, float | None]] = {}
    for op in ops:
        if isinstance(op, LapRecord):
            laps = stored.setdefault(numbers[op.entry_key], {})
            if op.correction or laps.get(op.number) is None:
                laps[op.number] = op.fields["time"]
        elif isinstance(op, LapsTruncate):
            laps = stored.setdefault(numbers[op.entry_key], {})
            for number in [n for n in laps if n > op.count]:
                del laps[number]
    return stored


@pytest.mark.parametrize("name", ["practice-v1", "race-v2x", "session-change-v1", "edge-cases"])
def test_emperor_captures_give_the_laps_the_timing_showed(name):
    truth = json.loads((CAPTURES / f"{name}.truth.json").read_text())
    feed = EmperorFeed()
    h = _replay(name, feed, "emperor")
    assert len(h.frames) == truth["frames"]
    _generation, ops = _final(h)
    laps = _laps_by_number(ops)
    for car in truth["cars"]:
        stored = laps.get(car["number"], {})
        assert sorted(stored) == list(range(1, car["laps"] + 1)), car["number"]
        if car["laps"]:
            assert stored[car["laps"]] == car["last_lap"]
        for number, expected in enumerate(car["lap_times"] or [], start=1):
            assert stored[number] in (None, expected)


@pytest.mark.parametrize("name", ["bmi-endurance", "bmi-laps", "bmi-sequence", "bmi-sprint", "bmi-hostile"])
def test_bmi_captures_give_the_laps_and_pit_stops_the_timing_showed(name):
    truth = json.loads((CAPTURES / f"{name}.truth.json").read_text(encoding="utf-8"))
    h = _replay(name, BMIFeed(), "bmi")
    final = truth["checkpoints"][-1]
    _generation, ops = _final(h)
    numbers = {op.entry_key: op.fields["number"] for op in of(EntryUpsert, ops)}
    laps = _laps_by_number(ops)
    stops = Counter(numbers[stop.entry_key] for stop in of(PitIn, ops) if stop.counted)
    for car in final["cars"]:
        assert len(laps[car["kart"]]) == car["laps"], car
        if car["laps"]:
            assert laps[car["kart"]][car["laps"]] == car["last"], car
        assert stops[car["kart"]] == car["pits"], car
