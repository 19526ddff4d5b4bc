"""Issue 9 §2: an upstream that goes silent with its socket still open.

Two injections, the service running with ``--stale-after 3``:

* **half-open**: the replay server is frozen with SIGSTOP in the middle of a race. Its kernel keeps
  the TCP connection (and new connections' handshakes) open, but no byte arrives, exactly as
  with a server that hangs or a NAT that forgot the connection. The service must declare the
  feed stale about 3 s after the last frame, abort, keep retrying, show the stale state to its
  clients meanwhile, and be back once the server is thawed (SIGCONT).
* **never a frame**: a server that accepts the websocket and then sends nothing at all (an empty
  capture, pings off): the connection is declared stale 3 s after it opened and retried.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable

from tests.faults.secrets_check import assert_secret_absent, with_password
from tests.faults.upstream import wait_for_count
from tests.integration.test_emperor_end_to_end import CAPTURES, Replay, truth_of, wait_for_truth
from tests.support.processes import ServiceProcess
from tests.support.wsclient import StandaloneClient

STALE_AFTER = 3.0
CONNECTED = r"upstream connected to"
STALE_DROP = re.compile(r"upstream dropped from .*: stale: no (frame|connection) for "
                        r".*reconnecting in ([0-9.]+) s")
NOT_LIVE = {"stale", "reconnecting", "connecting"}


def wait_for_connection(client: StandaloneClient, uuid: str, accept: Callable[[dict], bool],
                        timeout: float) -> tuple[float, dict]:
    """Read states until ``accept(session)`` holds; returns (when, session)."""
    deadline = time.monotonic() + timeout
    while True:
        state = client.wait_for_state(uuid, timeout=max(0.1, deadline - time.monotonic()))
        if accept(state["session"]):
            return time.monotonic(), state["session"]


def stale_drops(service: ServiceProcess) -> list[re.Match]:
    """Every "dropped ...: stale" line the service printed, in order."""
    return [found for found in map(STALE_DROP.search, service.stdout + service.stderr) if found]


def test_frozen_upstream_is_detected_within_the_staleness_time_and_recovers(service_env, tmp_path, soak,
                                                                           figures):
    replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "10")
    url, password = with_password(replay.url)
    service = ServiceProcess("carobama", "--url", url, "--publish-interval", "0.2",
                             "--stale-after", str(STALE_AFTER), env=service_env)
    client = StandaloneClient(service.url)
    detections, seen, retries, thaws, texts = [], [], [], [], []
    try:
        for cycle in range(6 if soak else 1):
            wait_for_connection(client, service.uuid, lambda s: s["connection"]["state"] == "connected"
                                and s["connection"]["lastFrameAgo"] is not None, timeout=30)
            drops = len(stale_drops(service))
            time.sleep(2.0)  # the fault schedule: let the race run a little
            os.kill(replay.proc.pid, signal.SIGSTOP)
            frozen = time.monotonic()
            seen_at, session = wait_for_connection(
                client, service.uuid, lambda s: s["connection"]["state"] in NOT_LIVE,
                timeout=STALE_AFTER + 10)
            seen.append(seen_at - frozen)
            texts.append(session["trackData"][-1])
            detections.append(wait_for_count(service, STALE_DROP.pattern, drops + 1,
                                             timeout=STALE_AFTER + 10) - frozen)
            retries.append(float(stale_drops(service)[drops].group(2)))
            # keep it frozen through one more attempt: it hangs in the opening handshake
            wait_for_count(service, STALE_DROP.pattern, drops + 2, timeout=STALE_AFTER * 3 + 10)
            os.kill(replay.proc.pid, signal.SIGCONT)
            thawed = time.monotonic()
            thaws.append(wait_for_count(service, CONNECTED, cycle + 2, timeout=STALE_AFTER + 35) - thawed)
        # the capture played to its end once more, at full speed: the table ends at the truth
        replay.stop()
        first = replay
        replay = Replay(CAPTURES / "race-v2x.jsonl", "--speed", "0", port=replay.port)
        wait_for_truth(client, service.uuid, truth_of("race-v2x"), timeout=60)
        assert service.proc.poll() is None
    finally:
        if replay.proc.poll() is None:
            os.kill(replay.proc.pid, signal.SIGCONT)
        client.close()
        service.stop()
        replay.stop()
    assert max(seen) <= STALE_AFTER + 2.0, seen
    assert_secret_absent(password, [service, first, replay], [tmp_path])
    assert all(STALE_AFTER - 1.0 <= d <= STALE_AFTER + 1.0 for d in detections), detections
    assert max(retries) < STALE_AFTER, "the first retry must come within the staleness time"
    assert all("stale" in text or "reconnecting" in text for text in texts), texts
    figures["stale_after_s"] = STALE_AFTER
    figures["freezes"] = len(detections)
    figures["detected_after_freeze_s"] = [round(d, 3) for d in detections]
    figures["client_saw_stale_after_s_max"] = round(max(seen), 3)
    figures["client_feed_texts"] = sorted(set(texts))
    figures["first_retry_delay_s_max"] = max(retries)
    figures["reconnected_after_thaw_s"] = [round(t, 3) for t in thaws]
    figures["crashes"] = 0


def test_upstream_that_never_sends_is_dropped_after_the_staleness_time(service_env, tmp_path, figures):
    empty = tmp_path / "empty.jsonl"
    empty.write_text((CAPTURES / "race-v2x.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n",
                     encoding="utf-8")
    replay = Replay(empty, "--ping-interval", "0")
    service = ServiceProcess("carobama", "--url", replay.url, "--publish-interval", "0.2",
                             "--stale-after", str(STALE_AFTER), env=service_env)
    client = StandaloneClient(service.url)
    try:
        opened = wait_for_count(service, CONNECTED, 1, timeout=30)
        _seen, session = wait_for_connection(client, service.uuid,
                                             lambda s: s["connection"]["state"] in NOT_LIVE - {"connecting"},
                                             timeout=STALE_AFTER + 10)
        detected = wait_for_count(service, STALE_DROP.pattern, 1, timeout=STALE_AFTER + 10)
        retried = wait_for_count(service, CONNECTED, 2, timeout=STALE_AFTER + 10)
        assert service.proc.poll() is None
    finally:
        client.close()
        service.stop()
        replay.stop()
    detection = detected - opened
    assert STALE_AFTER - 0.5 <= detection <= STALE_AFTER + 1.0, detection
    assert retried - detected < STALE_AFTER
    figures["stale_after_s"] = STALE_AFTER
    figures["detected_after_open_s"] = round(detection, 3)
    figures["reconnected_after_detection_s"] = round(retried - detected, 3)
    figures["client_feed_text"] = session["trackData"][-1]
