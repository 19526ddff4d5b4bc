"""The framework's update cycle, manifest and publishing, driven by task.Clock."""

from __future__ import annotations

import json

import pytest
from twisted.internet import task

from livetiming.messages import RaceControlMessage
from livetiming.network import Message, MessageClass
from livetiming.racing import FlagStatus, Stat
from livetiming.service import BaseService, DuePublisher, parse_args
from livetiming.service.compression import decompress_state


class Recorder:
    """A publisher that remembers what it was given."""

    def __init__(self):
        self.published: list[tuple[str, dict, bool]] = []

    def publish(self, topic, message, retain=False):
        self.published.append((topic, message, retain))

    def on(self, prefix):
        return [(t, m, r) for t, m, r in self.published if t.startswith(prefix)]


class Plugin(BaseService):
    def __init__(self, args, extra_args=None):
        super().__init__(args, extra_args)
        self.cars = [["1", "RUN", "Ann", 1, [90.0, ""]], ["2", "RUN", "Ben", 1, [91.0, ""]]]
        self.flag = "green"
        self.rc = []

    def getName(self):
        return "Series"

    def getDefaultDescription(self):
        return "Race"

    def getColumnSpec(self):
        return [Stat.NUM, Stat.STATE, Stat.DRIVER, Stat.LAPS, Stat.LAST_LAP]

    def getPollInterval(self):
        return 5

    def getExtraMessageGenerators(self):
        return [RaceControlMessage(self.rc)]

    def getRaceState(self):
        return {"cars": [list(c) for c in self.cars], "session": {"flagState": self.flag}}


def make(cls=Plugin, *argv, tmp_path=None):
    args, extra = parse_args(["plugin", *argv])
    service = cls(args, extra)
    service.clock = task.Clock()
    service.clock.advance(1_700_000_000)
    sink = Recorder()
    service.add_publisher(sink)
    return service, sink


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVETIMING_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def saved_state(path) -> dict:
    """A state file's state, without the column and track data specs kept beside it."""
    saved = json.loads(path.read_text())
    saved.pop("colSpec", None)
    saved.pop("trackDataSpec", None)
    return saved


def test_initial_state_is_the_documented_one():
    service, _sink = make()
    assert service.state == {"messages": [], "session": {"flagState": "green", "timeElapsed": 0,
                                                         "timeRemain": 0}, "cars": []}


def test_update_generates_messages_highlight_and_saves_state(state_dir):
    service, sink = make()
    service._updateAndPublishRaceState()
    service.cars[0][1] = "PIT"
    service.cars[1][4] = [88.5, "sb-new"]
    service.flag = "sc"
    service.rc.append("Car #2 under investigation")
    service.clock.advance(3)
    service._updateAndPublishRaceState()
    texts = [m[2] for m in service.state["messages"]]
    assert "Safety car deployed" in texts
    assert "#1 (Ann) has entered the pits" in texts
    assert "#2 (Ben) set a new overall best: 1:28.500" in texts
    assert "Car #2 under investigation" in texts
    assert sorted(service.state["highlight"]) == ["1", "2", "2"]
    assert all(m[0] == 1_700_000_003 for m in service.state["messages"])
    service.clock.advance(1)  # the state file is written on the clock, within a second
    saved = saved_state(state_dir / f"{service.uuid}.json")
    assert saved == service.state
    topic, message, retain = sink.on("livetiming.service.")[-1]
    assert topic == f"livetiming.service.{service.uuid}" and retain
    assert message["msgClass"] == 8 and message["retain"] is True
    assert decompress_state(message["payload"]) == service.state


def test_messages_are_kept_newest_first_and_capped_at_100():
    service, _sink = make()
    for index in range(120):
        service.rc.append(f"note {index}")
        service.clock.advance(1)
        service._updateAndPublishRaceState()
    messages = service.state["messages"]
    assert len(messages) == 100
    assert messages[0][2] == "note 119"
    assert [m[0] for m in messages] == sorted((m[0] for m in messages), reverse=True)


def test_highlight_is_recomputed_every_update():
    service, _sink = make()
    service._updateAndPublishRaceState()
    service.cars[0][1] = "PIT"
    service._updateAndPublishRaceState()
    assert service.state["highlight"] == ["1"]
    service._updateAndPublishRaceState()
    assert service.state["highlight"] == []


def test_no_write_state_writes_nothing(state_dir):
    service, _sink = make(Plugin, "--no-write-state")
    service._updateAndPublishRaceState()
    assert not state_dir.exists() or not list(state_dir.iterdir())


class CountingWrites:
    """Counts state file writes (``state_store.write_text_atomically``) and keeps the texts."""

    def __init__(self, monkeypatch):
        from livetiming.service import state_store

        self.texts: list[str] = []
        real = state_store.write_text_atomically

        def write(path, text):
            self.texts.append(text)
            real(path, text)

        monkeypatch.setattr(state_store, "write_text_atomically", write)


def test_state_file_is_written_at_most_once_a_second_with_the_newest_state(state_dir, monkeypatch):
    writes = CountingWrites(monkeypatch)
    service, _sink = make()
    for step in range(10):  # five updates a second for two seconds
        service.cars[0][3] = step
        service._updateAndPublishRaceState()
        service.clock.advance(0.2)
    assert 2 <= len(writes.texts) <= 3
    service.clock.advance(1)
    saved = state_dir / f"{service.uuid}.json"
    assert saved_state(saved) == service.state
    assert service.state["cars"][0][3] == 9
    count = len(writes.texts)
    service.clock.advance(5)  # nothing changed: nothing written
    assert len(writes.texts) == count


def test_state_file_text_is_the_compact_ascii_json_of_the_state(state_dir):
    service, _sink = make()
    service.cars[0][2] = "Zo\u00eb \U0001F3CE"
    service._updateAndPublishRaceState()
    service.clock.advance(0)
    text = (state_dir / f"{service.uuid}.json").read_text(encoding="utf-8")
    specs = {"colSpec": [list(column.value) for column in service.getColumnSpec()],
             "trackDataSpec": []}
    assert text == json.dumps({**service.state, **specs}, separators=(",", ":"), allow_nan=False)
    assert text.isascii()


def test_state_file_keeps_the_specs_and_resumes_them_without_publishing_them(state_dir):
    """The column spec of the saved state is in the file (the original framework ignores the
    extra keys) and comes back as resumed_column_spec; the published state does not carry it."""
    service, _sink = make()
    service._updateAndPublishRaceState()
    service.shutdown()
    path = state_dir / f"{service.uuid}.json"
    saved = json.loads(path.read_text())
    assert saved["colSpec"] == [list(column.value) for column in service.getColumnSpec()]
    assert saved["trackDataSpec"] == []
    resumed, sink = make(Plugin, "-s", str(path))
    assert resumed.resumed_column_spec == saved["colSpec"]
    assert resumed.resumed_track_data_spec == []
    assert "colSpec" not in resumed.state and resumed.state["cars"] == saved["cars"]
    resumed._publishRaceState()
    published = decompress_state(sink.on("livetiming.service.")[-1][1]["payload"])
    assert set(published) == {"cars", "session", "messages", "highlight"}


def test_a_state_file_without_specs_or_with_malformed_ones_still_resumes(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"cars": [["9"]], "session": {"flagState": "red"}, "messages": [],
                                "colSpec": [["Num"], 3], "trackDataSpec": "Track"}))
    service, _ = make(Plugin, "-s", str(path))
    assert service.state["cars"] == [["9"]]
    assert service.resumed_column_spec is None and service.resumed_track_data_spec is None
    path.write_text(json.dumps({"cars": [], "session": {}, "messages": []}))
    service, _ = make(Plugin, "-s", str(path))
    assert service.resumed_column_spec is None


def test_shutdown_writes_the_state_not_written_yet(state_dir):
    service, _sink = make()
    service._updateAndPublishRaceState()
    service.clock.advance(0.1)
    service.flag = "red"
    service._updateAndPublishRaceState()  # within the second: its write is still pending
    saved = state_dir / f"{service.uuid}.json"
    assert json.loads(saved.read_text())["session"]["flagState"] == "green"
    service.shutdown()
    assert saved_state(saved) == service.state
    assert service.state["session"]["flagState"] == "red"
    assert not service.clock.getDelayedCalls()


def test_state_that_is_not_json_is_still_saved_with_str(state_dir):
    import datetime

    service, sink = make()
    service.cars[0][3] = datetime.date(2026, 11, 22)
    service._updateAndPublishRaceState()
    service.clock.advance(0)
    assert sink.on("livetiming.service.") == []  # not published: clients could not read it
    saved = json.loads((state_dir / f"{service.uuid}.json").read_text())
    assert saved["cars"][0][3] == "2026-11-22"


def test_failing_plugin_keeps_previous_state_and_keeps_running():
    service, sink = make()
    service._updateAndPublishRaceState()
    before = service.state

    def broken():
        raise RuntimeError("upstream exploded")

    service.getRaceState = broken
    service._updateAndPublishRaceState()
    assert service.state is before
    assert len(sink.on("livetiming.service.")) == 2


def test_auto_poll_publishes_every_poll_interval_even_when_unchanged():
    service, sink = make()
    service._startUpdates()
    assert len(sink.on("livetiming.service.")) == 1
    service.clock.advance(5)
    service.clock.advance(5)
    assert len(sink.on("livetiming.service.")) == 3
    service._stopUpdates()


def test_manifest_publishing_is_coalesced_to_one_per_second():
    service, sink = make(Plugin, "-d", "Custom", "-H", "-N", "-m", "Other")
    service.publishManifest()
    service.publishManifest()
    assert sink.on("livetiming.control") == []
    service.clock.advance(1)
    service.publishManifest()
    service.clock.advance(1)
    manifests = sink.on("livetiming.control")
    assert len(manifests) == 2
    manifest = manifests[0][1]["payload"]
    assert manifest["description"] == "Custom" and manifest["hidden"] is True
    assert manifest["doNotRecord"] is True and manifest["serviceClass"] == "Other"
    assert manifest["colSpec"][0] == ["Num", "text", "Car number"]
    assert manifest["colSpec"][1] == ["State", "text"]
    assert manifest["pollInterval"] == 5 and manifest["hasAnalysis"] is True
    assert "retain" not in manifests[0][1]


def test_control_channel_initialise_directory_triggers_manifest():
    service, sink = make()
    service.onControlMessage(Message(MessageClass.INITIALISE_DIRECTORY).serialise())
    service.onControlMessage(Message(MessageClass.DIRECTORY_LISTING, []).serialise())
    service.clock.advance(1)
    assert len(sink.on("livetiming.control")) == 1


def test_rpc_handlers_answer_liveness_and_plain_state():
    service, _sink = make()
    service._updateAndPublishRaceState()
    handlers = service.rpc_handlers()
    assert handlers[f"livetiming.service.isAlive.{service.uuid}"]() is True
    assert handlers[f"livetiming.service.requestState.{service.uuid}"]() == service.state
    analysis = handlers[f"livetiming.service.requestAnalysisData.{service.uuid}"]()
    assert set(analysis) == {"static", "driver", "lap", "stint", "car_messages", "messages",
                             "session"}
    without, _sink = make(Plugin, "--disable-analysis")
    assert without.rpc_handlers()[f"livetiming.service.requestAnalysisData.{without.uuid}"]() is None


class DuePlugin(DuePublisher, Plugin):
    pass


def test_due_publisher_coalesces_bursts_and_respects_the_minimum_interval():
    service, sink = make(DuePlugin)
    service._startUpdates()
    assert len(sink.on("livetiming.service.")) == 1
    for _ in range(10):
        service.set_due_publish()
    service.clock.advance(0.5)
    assert len(sink.on("livetiming.service.")) == 1
    service.clock.advance(0.5)
    assert len(sink.on("livetiming.service.")) == 2
    service.clock.advance(59)
    assert len(sink.on("livetiming.service.")) == 2
    service.clock.advance(1)
    assert len(sink.on("livetiming.service.")) == 3


def test_uuid_comes_from_option_then_initial_state_then_random(tmp_path):
    state_file = tmp_path / "abc123.json"
    state_file.write_text(json.dumps({"cars": [["9"]], "session": {"flagState": "red"},
                                      "messages": [[1, "Track", "Red flag", "red"]]}))
    service, _ = make(Plugin, "-s", str(state_file))
    assert service.uuid == "abc123" and service.state["cars"] == [["9"]]
    service, _ = make(Plugin, "--uuid", "given")
    assert service.uuid == "given"
    a, _ = make()
    b, _ = make()
    assert len(a.uuid) == 32 and a.uuid != b.uuid


def test_unreadable_initial_state_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        make(Plugin, "-s", str(bad))


def test_unknown_options_are_passed_to_the_plugin():
    args, extra = parse_args(["plugin", "-v", "--team", "YORK", "--url=ws://x"])
    assert args.verbose and extra == ["--team", "YORK", "--url=ws://x"]


def test_flag_status_names():
    assert FlagStatus.fromString("Code_60") == FlagStatus.CODE_60
    assert FlagStatus.fromString("nonsense") == FlagStatus.NONE
    assert int(FlagStatus.CODE_60_ZONE) == 12


def test_due_publisher_publishes_urgent_changes_within_the_urgent_interval():
    service, sink = make(DuePlugin)
    service._startUpdates()
    assert len(sink.on("livetiming.service.")) == 1
    service.clock.advance(0.01)
    service.set_due_publish()  # an ordinary change: waits for the 1 s slot
    service.clock.advance(0.1)
    assert len(sink.on("livetiming.service.")) == 1
    service.set_due_publish(urgent=True)  # a lap: pulled forward to now
    service.clock.advance(0)
    assert len(sink.on("livetiming.service.")) == 2
    service.set_due_publish(urgent=True)  # a burst right after: coalesced, 50 ms later
    service.set_due_publish(urgent=True)
    service.set_due_publish()
    service.clock.advance(0.04)
    assert len(sink.on("livetiming.service.")) == 2
    service.clock.advance(0.01)
    assert len(sink.on("livetiming.service.")) == 3
    service.clock.advance(1)
    assert len(sink.on("livetiming.service.")) == 3  # nothing changed since: no extra publication
