"""The carobama service restarted with ``-s``: the saved state stays published until the feed
has a session (docs/RELIABILITY.md §4, finding 1), on a task.Clock with frames fed in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet import task

from livetiming.service import parse_args
from tests.support.scripted import EPOCH, StateSink, play_frames
from tests.support.stores import frames_of

carobama = pytest.importorskip("livetiming.service.plugins.carobama.service")

UUID = "resumed"
FRAMES = frames_of("race-v2x")
SNAPSHOTS = [i for i, (_t, data) in enumerate(FRAMES) if '"EventType":200' in data]


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVETIMING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIVETIMING_ANALYSIS_DIR", str(tmp_path / "analysis"))


def start(*argv: str):
    """An in-process carobama service on a task.Clock at EPOCH, updates started, with a sink."""
    args, extra = parse_args(["carobama", *argv, "--url", "ws://127.0.0.1:9/api/race-control",
                              "--publish-interval", "0.2"])
    service = carobama.Service(args, extra)
    service.clock = task.Clock()
    service.clock.advance(EPOCH)
    sink = StateSink(service.clock)
    service.add_publisher(sink)
    service._startUpdates()
    return service, sink


def play(service, frames) -> None:
    """Feed ``frames`` at their times (relative to EPOCH + 5 s), then let 2 s pass."""
    play_frames(service, frames)
    service.clock.advance(2)


def manifests(sink: StateSink) -> list[dict]:
    return [message["payload"] for _t, topic, message, _r in sink.messages
            if topic == "livetiming.control"]


def laps(state: dict, manifest: dict) -> dict[str, int]:
    column = [c[0] for c in manifest["colSpec"]].index("Laps")
    return {car[0]: car[column] for car in state["cars"]}


def saved_run(tmp_path: Path, until: int) -> tuple[Path, dict]:
    """A first run fed frames up to ``until`` and shut down: its state file and last manifest."""
    service, sink = start("--uuid", UUID)
    play(service, FRAMES[:until])
    service._stopUpdates()
    service.shutdown()
    return tmp_path / "state" / f"{UUID}.json", manifests(sink)[-1]


def test_a_restart_publishes_the_saved_state_until_the_feed_has_a_session(tmp_path):
    path, manifest = saved_run(tmp_path, SNAPSHOTS[len(SNAPSHOTS) // 2] + 40)
    saved = json.loads(path.read_text())
    assert saved["colSpec"] == manifest["colSpec"] and len(saved["colSpec"]) > 11
    assert saved["trackDataSpec"] == manifest["trackDataSpec"]
    saved_laps = laps(saved, manifest)
    assert sum(saved_laps.values()) > 0

    service, sink = start("-s", str(path))
    first = sink.states[0][1]
    assert laps(first, manifest) == saved_laps  # not the empty model's table
    assert first["cars"] == saved["cars"]
    assert first["session"]["trackData"][:-1] == saved["session"]["trackData"][:-1]
    assert first["session"]["trackData"][-1] == "connecting"
    service._on_frame('{"EventType":0,"Message":null}', 0)  # not a session: still the saved state
    service.clock.advance(1)
    assert manifests(sink)[-1]["colSpec"] == saved["colSpec"]
    assert all(state["cars"] == saved["cars"] for _t, state in sink.states)

    start_at = max(i for i in SNAPSHOTS if i <= SNAPSHOTS[len(SNAPSHOTS) // 2] + 40)
    play(service, FRAMES[start_at:start_at + 1])  # the upstream's snapshot: the feed's own data
    assert service.feed.model.session.generation > 0
    latest = manifests(sink)[-1]
    assert latest["colSpec"] == [list(getattr(c, "value", c)) for c in service.getColumnSpec()]
    now = laps(sink.states[-1][1], latest)
    assert all(now[car] >= count for car, count in saved_laps.items())
    service._stopUpdates()


def _drop_specs(saved: dict) -> None:
    del saved["colSpec"], saved["trackDataSpec"]


def _cut_columns(saved: dict) -> None:
    saved["colSpec"] = saved["colSpec"][:11]


@pytest.mark.parametrize("damage", [_drop_specs, _cut_columns], ids=["no-specs", "rows-do-not-fit"])
def test_without_usable_specs_the_service_starts_from_the_feed_model(tmp_path, damage):
    """A state file of the original framework (no colSpec), or rows that do not fit the saved
    columns: nothing to show the cars with, so the service renders its (empty) model as before."""
    path, _manifest = saved_run(tmp_path, SNAPSHOTS[1] + 40)
    saved = json.loads(path.read_text())
    damage(saved)
    path.write_text(json.dumps(saved))
    service, sink = start("-s", str(path))
    assert sink.states[0][1]["cars"] == []
    service._stopUpdates()


def test_a_restart_before_any_session_saves_the_resumed_state_again(tmp_path):
    """Killed again before the upstream answered: the state file still holds the saved laps."""
    path, manifest = saved_run(tmp_path, SNAPSHOTS[1] + 40)
    saved = json.loads(path.read_text())
    service, _sink = start("-s", str(path))
    service.clock.advance(3)
    again = json.loads(path.read_text())
    assert again["cars"] == saved["cars"] and again["colSpec"] == saved["colSpec"]
    assert laps(again, manifest) == laps(saved, manifest)
    service._stopUpdates()
