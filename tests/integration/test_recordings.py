"""Recordings with real processes: SIGKILL during a recorded session, the tools on the result,
the recordings index and the ``livetiming-recordings`` WAMP service (timing71-wire §5, §8 13-14)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from livetiming.analysis import Analyser
from livetiming.recording import RecordingFile, TimingRecorder
from livetiming.recording.journal import journal_path
from tests.integration.test_emperor_end_to_end import CAPTURES, Replay, truth_of, wait_for_truth
from tests.support.analysis_checks import check_analysis
from tests.support.processes import BIN, REPO, Process, ServiceProcess
from tests.support.wsclient import StandaloneClient

PLUGIN = "legacy_example"


def frames_in(path: Path) -> int:
    """Frames readable right now (the recording may be live)."""
    try:
        with RecordingFile(path) as recording:
            return recording.frames
    except Exception:
        return 0


def wait_for_frames(path: Path, count: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        found = frames_in(path)
        if found >= count:
            return found
        assert time.monotonic() < deadline, f"only {found} frames in {path} after {timeout}s"
        time.sleep(0.1)


def run_analysis(recording: Path, out: Path) -> dict:
    result = subprocess.run([str(BIN / "livetiming-analysis"), str(recording), "-o", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def check_readable(path: Path) -> RecordingFile:
    """Every recorded second reconstructs to a well-formed state."""
    recording = RecordingFile(path)
    for second in recording.seconds:
        state = recording.getStateAtTimestamp(second)
        assert set(state) >= {"cars", "session", "messages"}
        assert state["session"]["flagState"]
    return recording


def test_sigkill_at_random_moments_leaves_a_readable_recording_that_continues(service_env, tmp_path):
    path = tmp_path / "killed.zip"
    rng = random.Random(71)
    total_before = 0
    for round_number in range(3):
        proc = ServiceProcess(PLUGIN, "--poll", "0.3", "--cars", "12", "-r", str(path),
                              "--uuid", "killed", env=service_env)
        wait_for_frames(path, total_before + 3)
        time.sleep(rng.uniform(0.0, 1.5))  # any moment
        proc.kill()
        recording = check_readable(path)
        assert recording.frames >= total_before + 3
        total_before = recording.frames
        recording.close()
        if round_number == 0:
            assert not path.exists() and Path(journal_path(path)).exists()
        analysis = run_analysis(path, tmp_path / f"after-kill-{round_number}.json")
        check_analysis(analysis, with_service=True)
        assert len(analysis["static"]) == 12
    # A clean stop finalises everything into the ZIP, readable with plain zipfile.
    proc = ServiceProcess(PLUGIN, "--poll", "0.3", "--cars", "12", "-r", str(path), "--uuid", "killed",
                          env=service_env)
    wait_for_frames(path, total_before + 3)
    assert proc.stop() == 0
    assert not Path(journal_path(path)).exists()
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names.count("manifest.json") == 1 and len(names) == len(set(names))
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["version"] == 1 and manifest["uuid"] == "killed"
    recording = check_readable(path)
    assert recording.frames >= total_before + 3
    recording.close()


def test_recording_refuses_a_file_a_live_service_is_recording(service_env, tmp_path):
    path = tmp_path / "busy.zip"
    proc = ServiceProcess(PLUGIN, "--poll", "0.5", "-r", str(path), env=service_env)
    try:
        wait_for_frames(path, 1)
        second = subprocess.run([str(BIN / "livetiming-service"), PLUGIN, "--standalone", "-r",
                                 str(path)], capture_output=True, text=True, timeout=60,
                                env={**_env(service_env)})
        assert second.returncode == 2 and "in use" in second.stderr
    finally:
        proc.stop()


def _env(service_env):
    import os

    env = {**os.environ, **service_env}
    env.pop("LIVETIMING_ROUTER", None)
    return env


def test_carobama_recording_killed_mid_race_reads_back_and_analyses(service_env, tmp_path):
    path = tmp_path / "race.zip"
    replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "30")
    service = ServiceProcess("carobama", "--url", replay.url, "--publish-interval", "0.2",
                             "--uuid", "carorace", "-r", str(path), env=service_env)
    try:
        wait_for_frames(path, 5)
        service.kill()
        recording = check_readable(path)
        killed_frames = recording.frames
        recording.close()
        check_analysis(run_analysis(path, tmp_path / "killed.json"), with_service=True)
        # Continue the same recording to the end of the race, then stop cleanly.
        replay.stop()
        replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "60")
        service = ServiceProcess("carobama", "--url", replay.url, "--publish-interval", "0.2",
                                 "--uuid", "carorace", "-r", str(path), env=service_env)
        client = StandaloneClient(service.url)
        wait_for_truth(client, service.uuid, truth_of("race-v2x"), timeout=60)
        client.close()
        assert service.stop() == 0
    finally:
        service.stop()
        replay.stop()
    recording = check_readable(path)
    assert recording.frames > killed_frames
    recording.close()
    check_analysis(run_analysis(path, tmp_path / "race.json"), with_service=True)


def test_carobama_offline_analysis_equals_the_live_analysis_saved_at_shutdown(service_env, tmp_path,
                                                                              monkeypatch):
    path = tmp_path / "race.zip"
    replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "60")
    service = ServiceProcess("carobama", "--url", replay.url, "--publish-interval", "0.2",
                             "--uuid", "carorace", "-r", str(path), env=service_env)
    try:
        client = StandaloneClient(service.url)
        wait_for_truth(client, service.uuid, truth_of("race-v2x"), timeout=60)
        client.close()
        assert service.stop() == 0
    finally:
        service.stop()
        replay.stop()
    offline = run_analysis(path, tmp_path / "race.json")
    check_analysis(offline, with_service=True)
    assert any(data for data in offline["stint"].values())
    monkeypatch.setenv("LIVETIMING_ANALYSIS_DIR", service_env["LIVETIMING_ANALYSIS_DIR"])
    live = Analyser("carorace", None, persist=True)  # loads what the service saved on shutdown
    live_data = json.loads(json.dumps(live.get_current_state()))
    assert {key: offline[key] for key in live_data} == live_data


def test_index_tool_indexes_recordings_and_skips_foreign_files_with_one_line_each(service_env,
                                                                                   tmp_path):
    folder = Path(service_env["LIVETIMING_RECORDINGS_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    first = ServiceProcess(PLUGIN, "--poll", "0.3", "-r", str(folder / "abc_2.zip"), "--uuid", "abc",
                           "-d", "Heat two", env=service_env)
    second = ServiceProcess(PLUGIN, "--poll", "0.3", "-r", str(folder / "other.zip"), "-H",
                            env=service_env)
    wait_for_frames(folder / "abc_2.zip", 3)
    wait_for_frames(folder / "other.zip", 3)
    first.stop()
    second.kill()  # its journal is abandoned: the index finalises it
    (folder / "corrupt.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with zipfile.ZipFile(folder / "foreign.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    (folder / "notes.txt").write_text("ignored")
    (folder / "abc_2.json").write_text("{}")
    result = subprocess.run([str(BIN / "livetiming-recordings-index")], capture_output=True,
                            text=True, timeout=120, env=_env(service_env), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    index = json.loads((folder / "index.json").read_text())
    assert set(index) == {"abc:2", "other"}
    entry = index["abc:2"]
    assert entry["filename"] == "abc_2.zip" and entry["uuid"] == "abc"
    assert entry["description"] == "Heat two" and entry["name"] == "Legacy Example"
    assert entry["hasAnalysis"] is True and entry["duration"] >= 1
    assert isinstance(entry["startTime"], int)
    assert index["other"]["hidden"] is True and index["other"]["hasAnalysis"] is False
    assert not Path(journal_path(folder / "other.zip")).exists()
    for name in ("corrupt.zip", "foreign.zip"):
        assert sum(name in line for line in result.stderr.splitlines()) == 1, result.stderr
    assert "notes.txt" not in result.stderr
    (folder / "other.zip").unlink()
    subprocess.run([str(BIN / "livetiming-recordings-index")], check=True, capture_output=True,
                   timeout=120, env=_env(service_env), cwd=tmp_path)
    assert set(json.loads((folder / "index.json").read_text())) == {"abc:2"}


def probe(router_url, *args, timeout=20):
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tests.support.wamp_probe", router_url, *args, "--timeout", str(timeout)],
        capture_output=True, text=True, cwd=REPO, timeout=timeout + 30)
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()
                               if line.startswith("{")]


def test_recordings_service_answers_page_names_manifest_and_guards_update(crossbar_router,
                                                                          service_env, tmp_path):
    folder = Path(service_env["LIVETIMING_RECORDINGS_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for uuid, description in (("one", "Practice"), ("two", "Race")):
        proc = ServiceProcess(PLUGIN, "--poll", "0.3", "-r", str(folder / f"{uuid}.zip"), "--uuid",
                              uuid, "-d", description, env=service_env)
        wait_for_frames(folder / f"{uuid}.zip", 2)
        proc.stop()
    env = {**service_env, "LIVETIMING_ROUTER": crossbar_router.url,
           "LIVETIMING_SHARED_SECRET": crossbar_router.secret,
           "LIVETIMING_AUTH_ID": crossbar_router.authid, "LIVETIMING_ADMIN_AUTHCODE": "letmein"}
    service = Process([str(BIN / "livetiming-recordings")], env=env, cwd=tmp_path)
    try:
        service.wait_for_line(r"Recordings directory service ready", timeout=40)
        code, records = probe(crossbar_router.url, "call", "livetiming.recordings.page")
        assert code == 0, records
        page = records[-1]["result"]
        assert page["total"] == 2 and page["pages"] == 1
        assert [r["uuid"] for r in page["recordings"]] == ["two", "one"]  # newest first
        code, records = probe(crossbar_router.url, "call", "livetiming.recordings.names")
        assert records[-1]["result"] == ["Legacy Example"]
        code, records = probe(crossbar_router.url, "call", "livetiming.recordings.manifest",
                              json.dumps(["one"]))
        assert records[-1]["result"]["description"] == "Practice"
        update = {"args": [{"uuid": "one", "description": "Free practice", "hidden": True},
                           "wrong"]}
        code, records = probe(crossbar_router.url, "call", "livetiming.recordings.updateManifest",
                              json.dumps(update))
        assert code == 1 and records[-1]["error"] == "livetiming.error.not_authorised"
        update["args"][1] = "letmein"
        code, records = probe(crossbar_router.url, "call", "livetiming.recordings.updateManifest",
                              json.dumps(update))
        assert code == 0, records
        assert records[-1]["result"]["description"] == "Free practice"
        code, records = probe(crossbar_router.url, "call", "livetiming.recordings.page")
        assert records[-1]["result"]["total"] == 1  # hidden now
        code, records = probe(crossbar_router.url, "call", "livetiming.recordings.page",
                              json.dumps({"kwargs": {"show_hidden": True}}))
        assert records[-1]["result"]["total"] == 2
    finally:
        service.stop()
    with zipfile.ZipFile(folder / "one.zip") as archive:
        assert archive.namelist().count("manifest.json") == 1
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["description"] == "Free practice" and manifest["hidden"] is True
    assert json.loads((folder / "index.json").read_text())["one"]["hidden"] is True



@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_web_replay_zip_reader_reads_appended_recordings(tmp_path, monkeypatch):
    """zip.js (the web app's ZIP reader) on a recording that was continued after a restart, so
    the ZIP holds an earlier central directory in the middle; states equal what was published."""
    from tests.support.scripted import EPOCH
    from tests.unit.test_recording import run_scripted_session

    monkeypatch.setenv("LIVETIMING_STATE_DIR", str(tmp_path / "state"))
    js_dir = REPO / "tests" / "js"
    if not (js_dir / "node_modules" / "@zip.js" / "zip.js").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "-q"], cwd=js_dir, check=True)
    path = tmp_path / "appended.zip"
    _service, sink = run_scripted_session(path)
    published = sink.by_second()
    recorder = TimingRecorder(path)  # a restart continues the same file
    for offset in range(1, 15):
        state = json.loads(json.dumps(published[max(published)]))
        state["session"]["timeElapsed"] = 100 + offset
        state["cars"] = state["cars"][: 1 + offset % 4]
        recorder.writeState(state, EPOCH + 100 + offset)
        published[EPOCH + 100 + offset] = state
    recorder.close()
    result = subprocess.run(["node", str(js_dir / "replay.mjs"), str(path)], capture_output=True,
                            text=True, check=True, cwd=js_dir, timeout=120)
    replayed = json.loads(result.stdout)
    assert replayed["manifest"]["version"] == 1
    states = {int(second): state for second, state in replayed["states"].items()}
    assert sorted(states) == sorted(published)
    for second, state in published.items():
        assert states[second] == state, second


def test_each_new_bmi_heat_starts_a_new_recording_file_and_a_new_analysis(service_env, tmp_path,
                                                                          monkeypatch):
    """Three heats back to back: ``heats.zip``, ``heats-2.zip``, ``heats-3.zip``, each with its own
    manifest and only its own heat; the live analysis at the end holds only the last heat."""
    from tests.integration.test_bmi_end_to_end import Run, checkpoint

    path = tmp_path / "heats.zip"
    truth = checkpoint("bmi-sequence", "2:42 - Consistency challenge:finished")
    run = Run(CAPTURES / "bmi-sequence.jsonl", service_env, "--uuid", "caroheats", "-r", str(path),
              speed="40")  # about 20 s: every heat spans several recorded seconds
    try:
        run.wait_for(truth, timeout=60)
        assert run.service.stop() == 0
    finally:
        run.stop()
    files = [path, tmp_path / "heats-2.zip", tmp_path / "heats-3.zip"]
    assert sorted(tmp_path.glob("heats*.zip")) == sorted(files)
    descriptions = []
    for file in files:
        recording = check_readable(file)
        descriptions.append(recording.manifest["description"])
        recording.close()
    assert "Final 5 laps" in descriptions[1] and "Consistency challenge" in descriptions[2], descriptions
    last = RecordingFile(files[2])
    karts = {car[0] for car in last.getStateAtTimestamp(last.seconds[-1])["cars"]}
    assert karts == {car["kart"] for car in truth["cars"]}
    last.close()
    monkeypatch.setenv("LIVETIMING_ANALYSIS_DIR", service_env["LIVETIMING_ANALYSIS_DIR"])
    live = Analyser("caroheats", None, persist=True)
    assert set(live.get_current_state()["static"]) == karts


def test_an_emperor_session_change_starts_a_new_recording_file(service_env, tmp_path):
    """Qualifying, race, then practice on another track: three files, each with its own session."""
    path = tmp_path / "weekend.zip"
    replay = Replay(CAPTURES / "session-change-v1.jsonl", "--speed", "15")
    service = ServiceProcess("carobama", "--url", replay.url, "--publish-interval", "0.2",
                             "--uuid", "caroweekend", "-r", str(path), env=service_env)
    try:
        client = StandaloneClient(service.url)
        wait_for_truth(client, service.uuid, truth_of("session-change-v1"), timeout=60)
        client.close()
        assert service.stop() == 0
    finally:
        service.stop()
        replay.stop()
    files = [path, tmp_path / "weekend-2.zip", tmp_path / "weekend-3.zip"]
    assert sorted(tmp_path.glob("weekend*.zip")) == sorted(files)
    descriptions = []
    for file in files:
        recording = check_readable(file)
        descriptions.append(recording.manifest["description"])
        recording.close()
    assert "Race" in descriptions[1] and "Practice" in descriptions[2], descriptions
