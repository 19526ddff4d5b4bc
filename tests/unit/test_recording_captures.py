"""Recording round trips and live-versus-offline analysis on realistic data: the fixture captures
played into the carobama service in-process, on a ``task.Clock``.

The service is fed through its upstream frame handler (``_on_frame``), the same entry point its
websocket client uses, so every update, publish and recorded frame happens on the test's clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import task

from livetiming.recording import RecordingFile, generate_analysis
from livetiming.service import parse_args
from tests.support.analysis_checks import check_analysis
from tests.support.scripted import EPOCH, StateSink, play_frames

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
EMPEROR = ["practice-v1", "race-v2x", "session-change-v1", "edge-cases"]
BMI = ["bmi-sprint", "bmi-laps", "bmi-endurance"]


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVETIMING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIVETIMING_ANALYSIS_DIR", str(tmp_path / "analysis"))


def play(name: str, source: str, recording: Path):
    """Play a capture at real speed into an in-process carobama service recording to ``recording``."""
    carobama = pytest.importorskip("livetiming.service.plugins.carobama.service")
    from livetiming.service.plugins.carobama.capture import read_capture

    args, extra = parse_args(["carobama", "--uuid", name, "-r", str(recording), "--source", source,
                              "--url", "ws://127.0.0.1:9/api/race-control",
                              "--publish-interval", "0.2"])
    service = carobama.Service(args, extra)
    if not hasattr(service, "_on_frame"):
        pytest.skip("the carobama service has no _on_frame entry point any more")
    service.clock = task.Clock()
    service.clock.advance(EPOCH)
    sink = StateSink(service.clock)
    service.add_publisher(sink)
    service._startUpdates()
    _header, frames = read_capture(CAPTURES / f"{name}.jsonl")
    play_frames(service, frames)
    service.clock.advance(3)
    service._stopUpdates()
    service.shutdown()
    return service, sink


def recording_files(recording: Path) -> list[Path]:
    """The recording and its later segments (new sessions), in order."""
    files = [recording]
    number = 2
    while (candidate := recording.with_name(f"{recording.stem}-{number}.zip")).exists():
        files.append(candidate)
        number += 1
    return files


@pytest.mark.parametrize("name,source", [(n, "emperor") for n in EMPEROR] + [(n, "bmi") for n in BMI])
def test_capture_round_trip_and_offline_analysis_equal_to_live(tmp_path, name, source):
    if source == "bmi" and not (CAPTURES / f"{name}.jsonl").exists():
        pytest.skip("no such capture")
    recording = tmp_path / f"{name}.zip"
    service, sink = play(name, source, recording)
    published = sink.by_second()
    assert len(published) > 5
    files = recording_files(recording)
    covered: set[int] = set()
    for index, path in enumerate(files):
        with RecordingFile(path) as rec:
            last_segment = index == len(files) - 1
            for second in range(rec.seconds[0], rec.seconds[-1] + 1):
                state = rec.getStateAtTimestamp(second)
                if not last_segment and second == rec.seconds[-1]:
                    # A session's last second may be the next session's first: it closes this
                    # file with the newest state of its own session published in that second.
                    assert state in [s for when, s in sink.states if int(when) == second], \
                        (path.name, second)
                else:
                    shown = max(s for s in published if s <= second)
                    assert state == published[shown], (path.name, second)
                covered.add(second)
    # Every second in which a state was published is in a recording (a silent gap between two
    # sessions, with nothing published, ends one file and the next begins after it).
    assert set(published) <= covered
    assert covered <= set(range(min(published), max(published) + 1))
    # The last segment's offline analysis equals what the live analyser ended with.
    live = service.analyser.get_current_state()
    offline = generate_analysis(files[-1], tmp_path / "out.json")
    check_analysis(offline, with_service=True)
    check_analysis(live)
    assert {key: offline[key] for key in live} == live
    assert offline["state"] == published[max(published)]
