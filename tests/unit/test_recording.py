"""Recordings: the ZIP format (timing71-wire §5.1, §8 item 13), round trips, crash safety."""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path

import dictdiffer
import pytest

from livetiming.recording import (
    RecordingException,
    RecordingFile,
    TimingRecorder,
    applyIntraFrame,
    zipstore,
)
from livetiming.recording.diff import diff, json_copy, patch_in_place
from livetiming.recording.journal import journal_path
from tests.support.scripted import EPOCH, car, make_scripted

FRAME = re.compile(r"^([0-9]{11})(i?)\.json$")


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVETIMING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIVETIMING_ANALYSIS_DIR", str(tmp_path / "analysis"))


# ----- reference readers written from the format description ---------------------------------


def reference_state_at(zip_path: Path, second: int) -> dict:
    """The original framework's reconstruction: latest keyframe, then ``dictdiffer.patch``."""
    with zipfile.ZipFile(zip_path) as archive:
        keys, intras = [], []
        for name in archive.namelist():
            found = FRAME.match(name)
            if found:
                (intras if found.group(2) else keys).append(int(found.group(1)))
        key = max([k for k in keys if k <= second] + [min(keys)])
        state = json.loads(archive.read(f"{key:011d}.json"))
        for intra in sorted(i for i in intras if key < i <= second):
            frame = json.loads(archive.read(f"{intra:011d}i.json"))
            state = {
                "cars": dictdiffer.patch(frame["cars"], state["cars"]),
                "session": dictdiffer.patch(frame["session"], state["session"]),
                "messages": (frame["messages"] + state["messages"])[:100],
                "highlight": frame.get("highlight", []),
            }
        return state


def _js_lookup(dest, path, parent=False):
    if path in ("", []):
        return dest
    nodes = list(path) if isinstance(path, list) else path.split(".")
    if parent:
        nodes = nodes[:-1]
    for node in nodes:
        key = node if isinstance(dest, dict) else int(node)
        if isinstance(dest, dict) and not dest.get(key) or isinstance(dest, list) and not dest[key]:
            dest[key] = [] if isinstance(path, list) else {}
        dest = dest[key]
    return dest


def js_patch(ops, target):
    """The web replay's patcher as timing71-wire §5.1 describes it: adds assign, list removes
    leave holes (``null``), missing or falsy path nodes are created."""
    dest = json.loads(json.dumps(target))
    for action, path, changes in ops:
        if action == "add":
            node = _js_lookup(dest, path)
            for key, value in changes:
                if isinstance(node, list):
                    while len(node) <= key:
                        node.append(None)
                node[key] = value
        elif action == "change":
            node = _js_lookup(dest, path, parent=True)
            last = path[-1] if isinstance(path, list) else path.split(".")[-1]
            node[last if isinstance(node, dict) else int(last)] = changes[1]
        else:
            node = _js_lookup(dest, path)
            for key, _value in changes:
                if isinstance(node, list):
                    node[key] = None
                else:
                    del node[key]
    return dest


def js_state_at(zip_path: Path, second: int) -> dict:
    """The web replay's reconstruction (Replay.getStateAt)."""
    with zipfile.ZipFile(zip_path) as archive:
        keys, intras = {}, {}
        for name in archive.namelist():
            found = FRAME.match(name)
            if found:
                (intras if found.group(2) else keys)[int(found.group(1))] = name
        key = max(k for k in keys if k <= second)
        state = json.loads(archive.read(keys[key]))
        for intra in sorted(i for i in intras if key < i <= second):
            frame = json.loads(archive.read(intras[intra]))
            state = {**state, "cars": js_patch(frame["cars"], state["cars"]),
                     "session": js_patch(frame["session"], state["session"]),
                     "messages": (frame["messages"] + state["messages"])[:100],
                     "highlight": frame.get("highlight") or []}
        return state


# ----- diffs ---------------------------------------------------------------------------------


def _random_value(rng, depth=0):
    roll = rng.random()
    if depth > 2 or roll < 0.4:
        return rng.choice(["a", "b", None, "", 7, 3.25, "1:02.3"])
    if roll < 0.7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["k", "l", "m", "d.t", "n"]): _random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _mutate(rng, value):
    if isinstance(value, list):
        value = [_mutate(rng, item) if rng.random() < 0.3 else item for item in value]
        if rng.random() < 0.2:
            value.append(_random_value(rng))
        if value and rng.random() < 0.2:
            value.pop()
        return value
    if isinstance(value, dict):
        value = {k: (_mutate(rng, v) if rng.random() < 0.3 else v) for k, v in value.items()}
        if rng.random() < 0.2:
            value[rng.choice(["x", "y", "z.w"])] = _random_value(rng)
        if value and rng.random() < 0.2:
            value.pop(rng.choice(list(value)))
        return value
    return _random_value(rng) if rng.random() < 0.5 else value


def test_diff_output_equals_dictdiffer_and_patches_back_with_dictdiffer():
    rng = random.Random(5)
    for _ in range(3000):
        first = {"cars": [_random_value(rng) for _ in range(3)], "s": _random_value(rng)}
        second = _mutate(rng, json_copy(first))
        ours = json.loads(json.dumps(diff(first, second).ops))
        assert ours == json.loads(json.dumps(list(dictdiffer.diff(first, second))))
        assert dictdiffer.patch(ours, first) == second
        assert patch_in_place(ours, json_copy(first)) == second


def test_diff_flags_list_removals_and_root_replacement_for_a_keyframe():
    assert not diff([[1], [2]], [[1], [3]]).needs_keyframe
    assert diff([[1], [2]], [[1]]).needs_keyframe
    assert diff({"t": [1, 2]}, {"t": [1]}).needs_keyframe
    assert not diff({"a": 1}, {}).needs_keyframe  # dict removal is safe for every reader
    assert diff([1], {"a": 1}).needs_keyframe


# ----- the scripted round trip ---------------------------------------------------------------


def run_scripted_session(path: Path, *argv: str):
    """Cars joining and leaving, session keys appearing and disappearing, >100 messages,
    several messages and several updates in one second, a gap without updates."""
    service, sink = make_scripted("-r", str(path), *argv)
    service.cars = [car("1", laps=0), car("2", laps=0), car("3", laps=0)]
    for t in range(0, 60):
        for row in service.cars:
            if t % 3 == int(row[0]) % 3:
                row[6] += 1
                row[8] = [90.0 + t / 10 + int(row[0]), "pb" if t % 2 else ""]
        if t == 5:
            service.cars.append(car("4"))
        if t == 7:
            service.rc.extend(["Car #1 warned", "Car #4 warned", "Track limits at T3"])
        if t == 10:
            service.session["lapsRemain"] = 20
        if t == 12:
            del service.cars[1]  # car 2 leaves: the table shrinks
        if t == 13:
            service.cars.append(car("5", driver="New Driver"))
        if t == 15:
            service.session["trackData"] = ["20C", "dry"]
        if t == 16:
            service.session["trackData"] = ["21C"]
        if t == 20:
            service.cars.reverse()
        if t == 25:
            service.cars[0] = car("6")
        if t == 30:
            del service.session["lapsRemain"]
        if t == 35:
            service.rc.extend(f"Burst message {i}" for i in range(120))
        if t > 35:
            service.rc.append(f"Message at {t}")
        if t == 40:
            saved, service.cars = service.cars, []
        if t == 41:
            service.cars = saved
        if t == 45:
            service.session["flagState"] = "yellow"
        if t == 47:
            service.session["flagState"] = "green"
        service.session["timeElapsed"] = t
        service.at(t)
        if t == 8:
            for fraction in (0.3, 0.6):  # more updates, and messages, in the same second
                service.rc.append(f"Same second {fraction}")
                service.cars[0][7] = f"+{fraction}"
                service.at(t + fraction)
    service.at(75)  # after a gap of 15 seconds
    service.shutdown()
    return service, sink


def test_every_recorded_second_reconstructs_the_state_published_in_it(tmp_path):
    path = tmp_path / "race.zip"
    service, sink = run_scripted_session(path)
    published = sink.by_second()
    assert sum(len(state["messages"]) for state in published.values()) > 100
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert len(names) == len(set(names))
    frames = sorted((int(m.group(1)), bool(m.group(2))) for m in map(FRAME.match, names) if m)
    assert [second for second, _ in frames] == sorted(published)
    recording = RecordingFile(path)
    with recording:
        for second in range(EPOCH, EPOCH + 80):
            shown = max(s for s in published if s <= second)
            assert recording.getStateAtTimestamp(second) == published[shown], second
            assert reference_state_at(path, second) == published[shown], second
            assert js_state_at(path, second) == published[shown], second
    messages = [m[2] for m in published[EPOCH + 8]["messages"]]
    assert "Same second 0.3" in messages and "Same second 0.6" in messages
    assert sum("Burst message" in m[2] for m in published[EPOCH + 35]["messages"]) == 100


def test_keyframes_every_ten_frames_and_whenever_a_list_shrinks(tmp_path):
    path = tmp_path / "race.zip"
    _service, sink = run_scripted_session(path)
    published = sink.by_second()
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if FRAME.match(n))
        since_key = 0
        previous = None
        for name in names:
            second = int(name[:11])
            is_key = not name.endswith("i.json")
            since_key = 0 if is_key else since_key + 1
            assert since_key < 10
            if not is_key:
                frame = json.loads(archive.read(name))
                assert set(frame) == {"cars", "session", "messages", "highlight"}
                for op, _path, changes in frame["cars"] + frame["session"]:
                    if op == "remove":  # only dict keys: list removals would leave JS holes
                        assert all(isinstance(key, str) for key, _value in changes), name
            if previous is not None and len(published[second]["cars"]) < len(published[previous]["cars"]):
                assert is_key, f"{name}: cars left but no keyframe"
            previous = second
    assert f"{EPOCH + 12:011d}.json" in names  # car 2 left
    assert f"{EPOCH + 16:011d}.json" in names  # trackData shrank
    assert f"{EPOCH + 40:011d}.json" in names  # everybody left


def test_manifest_has_version_start_time_and_the_service_fields(tmp_path):
    path = tmp_path / "race.zip"
    run_scripted_session(path)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["version"] == 1 and manifest["startTime"] == EPOCH
    assert manifest["uuid"] == "scripted" and manifest["name"] == "Scripted Series"
    assert manifest["colSpec"][0] == ["Num", "text", "Car number"]
    recording = RecordingFile(path)
    assert recording.duration == 75 and recording.frames == 61
    augmented = recording.augmentedManifest()
    assert augmented["duration"] == 75 and augmented["startTime"] == EPOCH
    assert recording.keyframes[0] == EPOCH and EPOCH + 1 in recording.iframes
    assert recording.getStateAt(0) == recording.getStateAtTimestamp(EPOCH)
    assert recording.getStateAtTimestamp(EPOCH - 100) == recording.getStateAtTimestamp(EPOCH)
    recording.close()


def test_random_access_reads_only_the_frames_it_needs(tmp_path):
    path = tmp_path / "race.zip"
    _service, sink = run_scripted_session(path)
    published = sink.by_second()
    recording = RecordingFile(path)
    reads = []
    original = recording._load
    recording._load = lambda frame: reads.append(frame.second) or original(frame)
    assert recording.getStateAtTimestamp(EPOCH + 57) == published[EPOCH + 57]
    assert len(reads) <= 10
    reads.clear()
    assert recording.getStateAtTimestamp(EPOCH + 58) == published[EPOCH + 58]
    assert reads == [EPOCH + 58]  # stepping forward applies one intra-frame
    recording.close()


def test_apply_intra_frame_does_not_modify_its_input():
    base = {"cars": [["1", 1]], "session": {"flagState": "green"}, "messages": [[1, "a", "b", ""]],
            "highlight": []}
    frame = {"cars": [["change", [0, 1], [1, 2]]], "session": [["add", "", [["x", 1]]]],
             "messages": [[2, "a", "c", ""]], "highlight": ["1"]}
    before = json_copy(base)
    result = applyIntraFrame(base, frame)
    assert base == before
    assert result == {"cars": [["1", 2]], "session": {"flagState": "green", "x": 1},
                      "messages": [[2, "a", "c", ""], [1, "a", "b", ""]], "highlight": ["1"]}


def test_the_newest_state_of_a_second_wins_and_names_never_collide(tmp_path):
    recorder = TimingRecorder(tmp_path / "x.zip")
    recorder.writeManifest({"uuid": "u", "colSpec": []})
    state = {"cars": [["1", 0]], "session": {"flagState": "green"}, "messages": [], "highlight": []}
    for step in range(30):
        state = json_copy(state)
        state["cars"][0][1] = step
        recorder.writeState(state, EPOCH + step / 4)
    recorder.close()
    with zipfile.ZipFile(tmp_path / "x.zip") as archive:
        names = archive.namelist()
    assert len(names) == len(set(names)) == 9  # manifest + 8 seconds
    recording = RecordingFile(tmp_path / "x.zip")
    assert [recording.getStateAtTimestamp(EPOCH + s)["cars"][0][1] for s in range(8)] == [
        3, 7, 11, 15, 19, 23, 27, 29]


# ----- crash safety ----------------------------------------------------------------------------


def _write_frames(recorder, start, count, cars=3):
    states = []
    for index in range(count):
        state = {"cars": [[str(n), start + index] for n in range(cars)],
                 "session": {"flagState": "green", "t": start + index},
                 "messages": [[EPOCH + n, "c", f"m{n}", ""]
                              for n in range(start + index, max(-1, start + index - 100), -1)],
                 "highlight": []}
        recorder.writeState(state, EPOCH + start + index)
        states.append(state)
    return states


def test_a_kill_at_any_byte_of_the_journal_keeps_every_complete_frame(tmp_path):
    path = tmp_path / "live.zip"
    recorder = TimingRecorder(path)
    recorder.writeManifest({"uuid": "u", "colSpec": []})
    _write_frames(recorder, 0, 25)
    journal = Path(journal_path(path))
    content = journal.read_bytes()
    recorder._journal.close()  # as if the process died: no finalise
    line_ends = [i + 1 for i, byte in enumerate(content) if byte == 0x0A]
    frame_ends = [end for start, end in zip([0] + line_ends, line_ends, strict=False)
                  if FRAME.match(content[start + 9:end].split(b" ")[0].decode())]
    for cut in range(line_ends[-4], len(content) + 1):
        journal.write_bytes(content[:cut])
        complete = sum(1 for end in frame_ends if end <= cut)
        with RecordingFile(path) as recording:
            assert recording.frames == complete
            last = EPOCH + complete - 1
            assert recording.getStateAtTimestamp(last)["session"]["t"] == complete - 1
    # A restarted recorder finalises the journal and continues after the frames it kept.
    journal.write_bytes(content[:line_ends[-1] - 5])
    recorder = TimingRecorder(path)
    _write_frames(recorder, 30, 5)
    recorder.close()
    with RecordingFile(path) as recording:
        assert recording.frames == 24 + 5
        assert EPOCH + 30 in recording.keyframes  # a restart begins with a keyframe
        assert recording.getStateAtTimestamp(EPOCH + 23)["session"]["t"] == 23
        assert recording.getStateAtTimestamp(EPOCH + 34)["session"]["t"] == 34
    assert not journal.exists()
    zipfile.ZipFile(path).testzip()


def test_a_kill_during_finalise_loses_nothing_and_the_zip_is_only_appended_to(tmp_path, monkeypatch):
    path = tmp_path / "rec.zip"
    recorder = TimingRecorder(path)
    recorder.writeManifest({"uuid": "u", "colSpec": [], "description": "first"})
    first = _write_frames(recorder, 0, 15)
    recorder.close()
    original_zip = path.read_bytes()
    recorder = TimingRecorder(path)  # continue the same recording
    recorder.writeManifest({"uuid": "u", "colSpec": [], "description": "second"})
    second = _write_frames(recorder, 20, 15)
    recorder._journal.sync()
    captured = {}
    real_append = zipstore._append

    def spy(zip_path, zip_size, handle, contents):
        captured["journal"] = Path(journal_path(zip_path)).read_bytes()
        real_append(zip_path, zip_size, handle, contents)

    monkeypatch.setattr(zipstore, "_append", spy)
    recorder.close()
    final_zip = path.read_bytes()
    assert final_zip.startswith(original_zip)  # nothing before the old end was rewritten
    with RecordingFile(path) as recording:
        assert recording.manifest["description"] == "second"
        expected_frames = recording.frames
    assert expected_frames == 30
    journal = Path(journal_path(path))
    step = max(1, (len(final_zip) - len(original_zip)) // 40)
    for cut in list(range(len(original_zip), len(final_zip), step)) + [len(final_zip)]:
        path.write_bytes(final_zip[:cut])
        journal.write_bytes(captured["journal"])
        with RecordingFile(path) as recording:  # readers see everything, read-only
            assert recording.frames == 30
            assert recording.getStateAtTimestamp(EPOCH + 34)["cars"] == second[-1]["cars"]
            assert recording.getStateAtTimestamp(EPOCH + 14)["cars"] == first[-1]["cars"]
        assert zipstore.finalise(path)  # recovery: truncate to the old end, append again
        assert not journal.exists()
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
            assert len([n for n in archive.namelist() if FRAME.match(n)]) == 30
            assert archive.namelist().count("manifest.json") == 1
        assert path.read_bytes().startswith(original_zip)


def test_a_live_recording_is_refused_to_a_second_recorder(tmp_path):
    recorder = TimingRecorder(tmp_path / "busy.zip")
    with pytest.raises(ValueError, match="in use"):
        TimingRecorder(tmp_path / "busy.zip")
    recorder.close()
    TimingRecorder(tmp_path / "busy.zip").close()


def test_a_file_that_is_not_a_recording_is_refused(tmp_path):
    (tmp_path / "foreign.zip").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(ValueError, match="foreign.zip"):
        TimingRecorder(tmp_path / "foreign.zip")
    with pytest.raises(RecordingException):
        RecordingFile(tmp_path / "foreign.zip")


def test_segments_continue_in_numbered_files_each_with_its_own_manifest(tmp_path):
    recorder = TimingRecorder(tmp_path / "event")  # .zip is added
    recorder.writeManifest({"uuid": "u", "colSpec": [], "description": "Qualifying"})
    _write_frames(recorder, 0, 5)
    recorder.start_new_segment()
    assert recorder.recordFile == str(tmp_path / "event-2.zip")
    _write_frames(recorder, 10, 5, cars=2)
    recorder.writeManifest({"uuid": "u", "colSpec": [], "description": "Race"})
    recorder.start_new_segment()
    _write_frames(recorder, 20, 3)
    recorder.close()
    descriptions = []
    for name in ("event.zip", "event-2.zip", "event-3.zip"):
        with RecordingFile(tmp_path / name) as recording:
            descriptions.append(recording.manifest["description"])
            assert recording.keyframes[0] == recording.seconds[0]
    assert descriptions == ["Qualifying", "Race", "Race"]
    with RecordingFile(tmp_path / "event-2.zip") as recording:
        assert recording.startTime == EPOCH + 10 and recording.manifest["startTime"] == EPOCH + 10
    # Reopening the recording continues its latest segment.
    recorder = TimingRecorder(tmp_path / "event.zip")
    assert recorder.recordFile == str(tmp_path / "event-3.zip")
    recorder.close()


def test_base_service_start_new_session_starts_a_new_file_and_resets_analysis(tmp_path):
    path = tmp_path / "meeting.zip"
    service, _sink = make_scripted("-r", str(path))
    service.cars = [car("1", laps=1, last=90.0)]
    service.at(0)
    service.cars = [car("1", laps=2, last=91.0)]
    service.at(1)
    service.start_new_session()
    service.cars = [car("7", laps=0)]
    service.at(2)
    service.at(3)
    assert list(service.analyser.get_current_state()["static"]) == ["7"]
    service.shutdown()
    with RecordingFile(path) as first, RecordingFile(tmp_path / "meeting-2.zip") as second:
        assert first.seconds == [EPOCH, EPOCH + 1]
        assert second.seconds == [EPOCH + 2, EPOCH + 3]
        assert second.manifest["uuid"] == "scripted" and second.manifest["version"] == 1
        assert second.getStateAtTimestamp(EPOCH + 3)["cars"][0][0] == "7"


def test_start_new_session_is_safe_without_recording_or_analysis():
    service, _sink = make_scripted("--disable-analysis")
    service.start_new_session()
    service.at(0)


def test_column_changes_are_recorded_for_offline_readers(tmp_path):
    path = tmp_path / "cols.zip"
    service, _sink = make_scripted("-r", str(path))
    service.cars = [car("1")]
    service.at(0)
    service.columns = service.columns[:2]
    service.cars = [["1", "RUN"]]
    service.at(1)
    service.publishManifest()  # as plugins do when their columns change
    service.at(2)
    service.shutdown()
    with RecordingFile(path) as recording:
        assert len(recording.colspec_at(EPOCH)) == 11
        assert recording.colspec_at(EPOCH + 1) == [["Num", "text", "Car number"], ["State", "text"]]
        assert recording.manifest["colSpec"] == recording.colspec_at(EPOCH + 1)


def test_recording_file_reads_a_live_recording_without_touching_it(tmp_path):
    path = tmp_path / "live.zip"
    recorder = TimingRecorder(path)
    recorder.writeManifest({"uuid": "u", "colSpec": []})
    _write_frames(recorder, 0, 12)
    before = Path(journal_path(path)).read_bytes()
    with RecordingFile(path) as recording:
        assert recording.frames == 12
    assert Path(journal_path(path)).read_bytes() == before and not path.exists()
    recorder.close()
    assert path.exists() and not Path(journal_path(path)).exists()


def test_no_manifest_or_unknown_version_is_not_a_recording(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("01700000000.json", "{}")
    with pytest.raises(RecordingException, match="manifest"):
        RecordingFile(tmp_path / "a.zip")
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as archive:
        archive.writestr("manifest.json", json.dumps({"version": 2}))
        archive.writestr("01700000000.json", "{}")
    with pytest.raises(RecordingException, match="version"):
        RecordingFile(tmp_path / "b.zip")


def test_a_failed_journal_write_is_cut_off_and_recording_goes_on(tmp_path):
    path = tmp_path / "full.zip"
    recorder = TimingRecorder(path)
    recorder.writeManifest({"uuid": "u", "colSpec": []})
    states = _write_frames(recorder, 0, 3)
    real = recorder._journal._handle

    class FullDisk:
        def __init__(self):
            self.failed = False

        def write(self, data):
            if not self.failed:
                self.failed = True
                real.write(bytes(data[: len(data) // 2]))
                raise OSError(28, "No space left on device")
            return real.write(data)

        def __getattr__(self, name):
            return getattr(real, name)

    recorder._journal._handle = FullDisk()
    with pytest.raises(OSError):
        _write_frames(recorder, 3, 1)
    states += _write_frames(recorder, 4, 3)
    recorder._journal._handle = real
    recorder.close()
    with RecordingFile(path) as recording:
        assert recording.seconds == [EPOCH + s for s in (0, 1, 2, 4, 5, 6)]
        for state in states:
            second = EPOCH + state["session"]["t"]
            assert recording.getStateAtTimestamp(second) == json.loads(json.dumps(state))
