"""Hostile input against the real service process (issue 9 part 6): a 64 MiB frame, a frame flood.

The frames are written into a capture that ``carobama-replay`` sends over a real loopback
websocket as fast as the service reads (``--speed 0``): the race-v2x capture with the hostile
frames inserted after its first snapshot. The service runs with ``--capture`` (journal) and
``--database`` (SQLite); its resident memory is sampled all along. Checks: the process lives,
the published timing still reaches the capture's truth, the journal and the database hold every
frame the replay sent (the hostile ones included; the journal byte for byte), and bad frames are
logged at most ten a minute.

Bound: frames up to 64 MiB (``upstream.DEFAULT_MAX_PAYLOAD``; the Emperor spec asks for at least
16 MiB) are accepted; a bigger one is refused by the websocket layer (close code 1009), which
drops the connection with one log line and reconnects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from livetiming.service.plugins.carobama.capture import read_capture
from livetiming.service.plugins.carobama.store import schema as s
from livetiming.service.plugins.carobama.upstream import DEFAULT_MAX_PAYLOAD
from tests.faults.rss import RssSampler, mib
from tests.integration.test_emperor_end_to_end import CAPTURES, Replay, wait_for_truth
from tests.integration.test_store_end_to_end import query, stop_cleanly, wait_until
from tests.support.processes import ServiceProcess
from tests.support.stores import truth_of
from tests.support.wsclient import StandaloneClient

BAD_LINE = "Ignored an upstream frame: "
SUMMARY = re.compile(r"(\d+) more bad upstream frames in the last minute")


def hostile_capture(folder: Path, hostile: list[str]) -> tuple[Path, list[str]]:
    """race-v2x with ``hostile`` frames after its first snapshot; returns the file and all frames."""
    header, frames = read_capture(CAPTURES / "race-v2x.jsonl")
    frames = list(frames)
    first_snapshot = next(i for i, (_t, data) in enumerate(frames) if '"EventType":200' in data)
    t = frames[first_snapshot][0]
    played = frames[:first_snapshot + 1] + [(t, data) for data in hostile] + frames[first_snapshot + 1:]
    path = folder / "hostile.jsonl"
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps(header) + "\n")
        for when, data in played:
            out.write(json.dumps({"t": when, "data": data}) + "\n")
    return path, [data for _t, data in played]


def huge_chat_frame(size: int) -> str:
    """A well-formed chat frame (EventType 57) of exactly ``size`` bytes."""
    frame = {"EventType": 57, "Message": {"CarID": 255, "RecipientCarID": 255, "Message": "",
                                          "DriverGUID": "", "DriverName": "Server",
                                          "Time": "2024-06-01T19:01:30Z"}}
    frame["Message"]["Message"] = "y" * (size - len(json.dumps(frame)))
    text = json.dumps(frame)
    assert len(text.encode("utf-8")) == size
    return text


def flood(count: int) -> list[str]:
    """Small garbage frames of a few kinds: not JSON, wrong types, unknown events, bad values."""
    kinds = ["garbage %d", '{"EventType":"%d"}', '[%d]', '{"EventType":53,"Message":{"CarID":%d,"Pos":"x"}}',
             '{"EventType":9999,"Message":%d}', '{"EventType":57,"Message":{"CarID":NaN,"Message":%d}}']
    return [kinds[index % len(kinds)] % index for index in range(count)]


def run_hostile(service_env: dict, tmp_path: Path, hostile: list[str], figures) -> tuple[Any, str, dict]:
    """Play the hostile capture into the service; checks and figures common to both tests."""
    capture, sent = hostile_capture(tmp_path, hostile)
    journal = tmp_path / "journal.jsonl"
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    replay = Replay(capture, "--speed", "0")
    proc = ServiceProcess("carobama", "--url", replay.url, "--publish-interval", "0.2",
                          "--capture", str(journal), "--database", url, env=service_env)
    try:
        with RssSampler(proc.proc.pid) as rss:
            client = StandaloneClient(proc.url)
            state, _manifest = wait_for_truth(client, proc.uuid, truth_of("race-v2x"), timeout=180)
            client.close()
            wait_until(lambda: journal.exists() and journal_frames(journal) >= len(sent), 120,
                       "every frame in the journal")
            assert proc.proc.poll() is None, "the service died"
            stop_cleanly(proc)
    finally:
        proc.stop()
        replay.stop()
    journaled = [data for _t, data in read_capture(journal)[1]]
    assert journaled == sent, "the journal differs from what the replay sent"
    stored = query(url, lambda conn: conn.execute(select(func.count()).select_from(s.frames)).scalar_one())
    output = proc.output()
    assert stored == len(sent) and "Store buffer full" not in output, "raw frames missing in the store"
    bad_lines = output.count(BAD_LINE)
    figures["frames_sent"] = len(sent)
    figures["frames_journaled"] = len(journaled)
    figures["frames_in_database"] = stored
    figures["crashes"] = 0
    figures["rss_max_mib"] = mib(rss.max)
    figures["bad_frame_log_lines"] = bad_lines
    figures["store_buffer_full_lines"] = output.count("Store buffer full")
    return rss, output, state


@pytest.mark.timeout(600)
def test_a_64_mib_frame_is_accepted_journaled_and_its_text_cut(service_env, tmp_path, figures):
    size = DEFAULT_MAX_PAYLOAD
    rss, output, state = run_hostile(service_env, tmp_path, [huge_chat_frame(size)], figures)
    assert "upstream dropped" not in output, "the 64 MiB frame was refused"
    [chat] = [message[2] for message in state["messages"] if message[2].startswith("yyy")]
    assert chat == "y" * 500  # the server's chat line, cut
    figures["frame_bytes"] = size
    # Receiving, decoding, parsing, journaling and storing it need a few copies of 64 MiB.
    assert rss.max < 1024 * 1048576, mib(rss.max)


@pytest.mark.timeout(600)
def test_a_flood_of_garbage_frames_is_journaled_with_rate_limited_log_lines(
        soak, service_env, tmp_path, figures):
    count = 200_000 if soak else 50_000
    rss, output, _state = run_hostile(service_env, tmp_path, flood(count), figures)
    bad_lines = output.count(BAD_LINE)
    minutes = len(SUMMARY.findall(output)) + 1
    assert bad_lines <= 10 * minutes + 2, f"{bad_lines} bad-frame lines for {count} bad frames"
    assert rss.max < 512 * 1048576, mib(rss.max)
    figures["flood_frames"] = count


def journal_frames(path: Path) -> int:
    """Frames readable in a journal right now."""
    return sum(1 for _ in read_capture(path)[1])
