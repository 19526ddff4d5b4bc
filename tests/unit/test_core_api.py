"""Public names of the framework and the behaviour of its small utilities."""

from __future__ import annotations

import importlib
import io
import json

import pytest
from twisted.internet import task

import livetiming
from livetiming.messages import (
    CAR_NUMBER_REGEX,
    CarPitMessage,
    DriverChangeMessage,
    FastLapMessage,
    FlagChangeMessage,
    PerCarMessage,
    formatTime,
)
from livetiming.network import RPC, Channel, Message, MessageClass, Realm, compute_signature
from livetiming.racing import Stat
from livetiming.service import Watchdog

API = {
    "livetiming": ["load_env", "make_component", "VERSION", "USER_AGENT"],
    "livetiming.racing": ["FlagStatus", "Stat"],
    "livetiming.messages": ["TimingMessage", "PerCarMessage", "FlagChangeMessage", "CarPitMessage",
                            "DriverChangeMessage", "FastLapMessage", "SlowZoneMessage",
                            "RaceControlMessage", "formatTime", "CAR_NUMBER_REGEX"],
    "livetiming.network": ["Realm", "Channel", "RPC", "MessageClass", "Message",
                           "authenticatedService"],
    "livetiming.service": ["AbstractService", "BaseService", "DuePublisher", "Fetcher",
                           "JSONFetcher", "MultiLineFetcher", "Watchdog",
                           "ReconnectingWebSocketClientFactory", "main", "parse_args"],
}


@pytest.mark.parametrize("module", sorted(API))
def test_public_names_exist(module):
    imported = importlib.import_module(module)
    for name in API[module]:
        assert hasattr(imported, name), f"{module}.{name} missing"


def test_stat_tuples_are_exact():
    assert Stat.NUM.value == ("Num", "text", "Car number")
    assert Stat.STATE.value == ("State", "text")
    assert Stat.LAST_LAP.value == ("Last", "time", "Last lap time")
    assert Stat.PITS.value == ("Pits", "numeric")
    assert Stat.NO_TOW_SPEED.value == ("NTS", "numeric", "No-tow speed - best speed without tow")
    assert Stat.from_title("Lap") is Stat.LAPS
    assert Stat.sector(7) == ("S7", "time", "Sector 7 time")
    assert Stat.best_sector(2) == ("BS2", "time", "Best sector 2 time")
    assert Stat.parse_colspec([["Num", "text", "Car number"], ["Odd", "text"]]) == [
        Stat.NUM, ("Odd", "text")]
    assert Stat.CLASS.description is None and Stat.GAP.type == "delta"


def test_network_names():
    assert Realm.TIMING == "timing" and Channel.CONTROL == "livetiming.control"
    assert RPC.REQUEST_STATE.format("u") == "livetiming.service.requestState.u"
    assert MessageClass.SERVICE_DATA_COMPRESSED == 8
    message = Message(MessageClass.SERVICE_REGISTRATION, {"a": 1}, date=5)
    assert message.serialise() == {"msgClass": 2, "date": 5, "payload": {"a": 1}}
    assert Message(8, "x", retain=True).serialise()["retain"] is True
    assert Message.parse({"msgClass": 1, "date": 3}).msgClass == 1


def test_wampcra_signature_salted_and_unsalted():
    from autobahn.wamp import auth

    challenge = '{"nonce": "abc"}'
    plain = compute_signature({"challenge": challenge}, "s3cret")
    assert plain == auth.compute_wcs("s3cret", challenge).decode()
    salted = compute_signature({"challenge": challenge, "salt": "salt", "iterations": 100,
                                "keylen": 32}, "s3cret")
    assert salted == auth.compute_wcs(auth.derive_key("s3cret", "salt", 100, 32), challenge).decode()


def test_format_time_and_car_number_regex():
    assert formatTime(65.5) == "1:05.500"
    assert formatTime(45.2) == "0:45.200"
    assert CAR_NUMBER_REGEX.search("Car #12 warned").group(1) == "12"


COLSPEC = [Stat.NUM, Stat.STATE, Stat.CLASS, Stat.DRIVER, Stat.CAR, Stat.LAST_LAP]


def car(num="7", state="RUN", driver="Alice", last=None, clazz="GT3"):
    return [num, state, clazz, driver, "Ferrari", last or [90.0, ""]]


@pytest.mark.parametrize("old,new,text,style", [
    ("RUN", "PIT", "#7 (Alice) has entered the pits", "pit"),
    ("PIT", "OUT", "#7 (Alice) has left the pits", "out"),
    ("RUN", "FUEL", "#7 (Alice) has entered the fuelling area", "pit"),
    ("RUN", "RET", "#7 (Alice) has retired", ""),
    ("RUN", "STOP", "#7 (Alice) is running slowly or stopped", "yellow"),
    ("STOP", "RUN", "#7 (Alice) has resumed", ""),
])
def test_car_pit_messages(old, new, text, style):
    generator = CarPitMessage(COLSPEC)
    generator.clock = task.Clock()
    messages = generator.process({"cars": [car(state=old)]}, {"cars": [car(state=new)]})
    assert messages == [[0, "GT3", text, style, "7"]]


def test_driver_change_messages():
    generator = DriverChangeMessage(COLSPEC)
    one = generator.process({"cars": [car(driver="A")]}, {"cars": [car(driver="B")]})
    assert one[0][2] == "#7 Driver change (A to B)"
    assert generator.process({"cars": [car(driver="")]}, {"cars": [car(driver="B")]})[0][2] == \
        "#7 Driver change (to B)"
    assert generator.process({"cars": [car(driver="A")]}, {"cars": [car(driver="")]})[0][2] == \
        "#7 Driver change (from A to nobody)"


def test_fast_lap_messages_only_when_the_lap_changes():
    generator = FastLapMessage(COLSPEC)
    pb = generator.process({"cars": [car()]}, {"cars": [car(last=[89.1, "pb"])]})
    assert pb[0][2:4] == ["#7 (Alice) set a new personal best: 1:29.100", "pb"]
    sb = generator.process({"cars": [car()]}, {"cars": [car(last=[88.0, "sb-new"])]})
    assert sb[0][2:4] == ["#7 (Alice) set a new overall best: 1:28.000", "sb"]
    same = generator.process({"cars": [car(last=[89.1, "pb"])]}, {"cars": [car(last=[89.1, "pb"])]})
    assert same == []


def test_flag_change_messages():
    generator = FlagChangeMessage()
    messages = generator.process({"session": {"flagState": "green"}}, {"session": {"flagState": "red"}})
    assert messages[0][1:] == ["Track", "Red flag", "red"]
    assert generator.process({"session": {"flagState": "red"}}, {"session": {"flagState": "red"}}) == []


def test_per_car_pairs_by_number_car_and_class():
    seen = []

    class Spy(PerCarMessage):
        def _consider(self, old, new):
            seen.append((old and old[0], new[0]))

    Spy(COLSPEC).process({"cars": [car("1"), car("2", clazz="GT4")]},
                         {"cars": [car("2", clazz="GT3"), car("1")]})
    assert seen == [(None, "2"), ("1", "1")]


def test_built_in_generators_skip_unchanged_rows_and_custom_ones_do_not():
    considered = []

    class CountingPit(CarPitMessage):
        def _consider(self, old, new):
            considered.append(new[0])
            return super()._consider(old, new)

    before = {"cars": [car("1"), car("2"), car("3")]}
    after = {"cars": [car("1"), car("2", state="PIT"), car("3", last=[89.0, "pb"])]}
    messages = CountingPit(COLSPEC).process(before, after)
    assert considered == ["2", "3"]
    assert [m[2] for m in messages] == ["#2 (Alice) has entered the pits"]
    assert FastLapMessage(COLSPEC).process(before, after)[0][2] == \
        "#3 (Alice) set a new personal best: 1:29.000"


def test_driver_change_ignores_a_changed_flag_on_the_same_driver():
    generator = DriverChangeMessage(COLSPEC)
    assert generator.process({"cars": [car(driver=["A", ""])]}, {"cars": [car(driver=["A", "pb"])]}) == []
    changed = generator.process({"cars": [car(driver=["A", ""])]}, {"cars": [car(driver=["B", ""])]})
    assert changed[0][2] == "#7 Driver change (A to B)"


def test_per_car_generators_tolerate_short_rows():
    before, after = {"cars": [["7"], []]}, {"cars": [["7", "PIT"], []]}
    pit = CarPitMessage(COLSPEC).process(before, after)
    assert [m[1:] for m in pit] == [["Pits", "#7 has entered the pits", "pit", "7"]]
    assert DriverChangeMessage(COLSPEC).process(before, after) == []
    assert FastLapMessage(COLSPEC).process(before, after) == []


def test_watchdog_uses_the_reactor_clock():
    clock = task.Clock()
    fired = []
    dog = Watchdog(10, fired.append, "stale", clock=clock)
    dog.start()
    clock.advance(9)
    dog.notify()
    clock.advance(9)
    assert fired == []
    clock.advance(1.5)
    assert fired == ["stale"]
    clock.advance(10)
    assert fired == ["stale", "stale"]
    dog.stop()
    clock.advance(100)
    assert len(fired) == 2


def test_reconnecting_factory_resets_its_backoff_after_a_connection():
    from autobahn.twisted.websocket import WebSocketClientProtocol

    from livetiming.service import ReconnectingWebSocketClientFactory

    opened = []

    class Client(WebSocketClientProtocol):
        def onOpen(self):
            opened.append(True)

    factory = ReconnectingWebSocketClientFactory("ws://127.0.0.1:1/", ping_interval=10)
    factory.protocol = Client
    factory.clock = task.Clock()
    factory.delay = 30
    factory.retries = 6
    protocol = factory.buildProtocol(None)
    protocol.onOpen()
    assert opened == [True]
    assert factory.delay == factory.initialDelay and factory.retries == 0
    assert factory.maxDelay == 30
    assert factory.autoPingInterval == 10


def test_load_env_reads_file_from_parent_without_overriding(tmp_path, monkeypatch):
    (tmp_path / "livetiming.env").write_text("LT_TEST_A=from_file\nLT_TEST_B=from_file\n")
    child = tmp_path / "a" / "b"
    child.mkdir(parents=True)
    monkeypatch.setenv("LT_TEST_B", "from_env")
    monkeypatch.delenv("LT_TEST_A", raising=False)
    assert livetiming.load_env(child) == tmp_path / "livetiming.env"
    import os

    assert os.environ["LT_TEST_A"] == "from_file" and os.environ["LT_TEST_B"] == "from_env"
    monkeypatch.delenv("LT_TEST_A")


def test_router_transports():
    assert livetiming.router_transport("ws://127.0.0.1:8080/ws")["type"] == "websocket"
    assert livetiming.router_transport("rs://127.0.0.1:9000")["endpoint"] == {
        "type": "tcp", "host": "127.0.0.1", "port": 9000}
    assert livetiming.router_transport("rs://unix/tmp/sock")["endpoint"] == {
        "type": "unix", "path": "/tmp/sock"}
    with pytest.raises(ValueError):
        livetiming.router_transport("http://nope")


def test_json_logs_carry_context_and_never_secrets(monkeypatch):
    from twisted.logger import Logger, LogLevel

    from livetiming.service.logs import LOG_CONTEXT, JSONLogObserver

    monkeypatch.setenv("LIVETIMING_SHARED_SECRET", "hunter2-very-secret")
    monkeypatch.setitem(LOG_CONTEXT, "uuid", "u1")
    out = io.StringIO()
    log = Logger(namespace="test", observer=JSONLogObserver(out))
    log.emit(LogLevel.info, "connecting with {secret}", secret="hunter2-very-secret", source="emperor")
    record = json.loads(out.getvalue())
    assert record["uuid"] == "u1" and record["source"] == "emperor" and record["level"] == "info"
    assert "hunter2" not in out.getvalue()
