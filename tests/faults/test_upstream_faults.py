"""Issue 9 §1: the upstream timing server is killed and restarted again and again.

The replay server (``carobama-replay``) is SIGKILLed at random moments every few seconds and
started again on the same port, resuming with the first frame the service never received
(:class:`tests.faults.upstream.ResumableUpstream`). Checked: each reconnect comes within 2 s of
the server listening again, the service's raw journal holds every frame of the capture exactly
once, the published table ends equal to the capture's truth, and the service never crashes. The
upstream URL carries a password, which must never show up in any output or file.
"""

from __future__ import annotations

import random
import statistics
import time
from types import SimpleNamespace

import pytest

from tests.faults.secrets_check import assert_secret_absent, with_password
from tests.faults.upstream import ResumableUpstream, journal_frames, wait_for_count
from tests.integration.test_bmi_end_to_end import Run, checkpoint
from tests.integration.test_emperor_end_to_end import CAPTURES, truth_of, wait_for_truth
from tests.support.processes import ServiceProcess
from tests.support.wsclient import StandaloneClient

CONNECTED = r"upstream connected to"
DROPPED = r"upstream dropped from"

#: source -> (capture, replay speed short, replay speed soak, kills short)
CASES = {
    "emperor": ("race-v2x", 20.0, 2.0, 6),
    "bmi": ("bmi-endurance", 200.0, 16.0, 6),
}


def wait_until_truth(source: str, name: str, client: StandaloneClient, service: ServiceProcess,
                     timeout: float) -> None:
    """Wait until the published table equals the capture's final truth (the existing end-to-end
    checks: Emperor's whole-capture truth, BMI's last checkpoint)."""
    if source == "emperor":
        wait_for_truth(client, service.uuid, truth_of(name), timeout=timeout)
    else:
        watcher = SimpleNamespace(client=client, service=service, manifest=None, state=None)
        Run.wait_for(watcher, checkpoint(name, ":finished"), timeout=timeout)


@pytest.mark.timeout(900)  # the soak plays each capture for about four minutes
@pytest.mark.parametrize("source", sorted(CASES))
def test_upstream_killed_and_restarted_resumes_and_ends_at_the_truth(
        source, service_env, tmp_path, soak, figures):
    name, short_speed, soak_speed, short_kills = CASES[source]
    speed = soak_speed if soak else short_speed
    kills_wanted = 10_000 if soak else short_kills  # the soak kills until the capture ends
    rng = random.Random(f"issue-9-{source}")
    journal = tmp_path / "journal.jsonl"
    upstream = ResumableUpstream(CAPTURES / f"{name}.jsonl", tmp_path, journal, speed)
    upstream.start(0)
    url, password = with_password(upstream.url)
    service = ServiceProcess("carobama", "--source", source, "--url", url, "--publish-interval", "0.2",
                             "--capture", str(journal), env=service_env)
    reconnects: list[float] = []
    downtimes: list[float] = []
    started = time.monotonic()
    try:
        wait_for_count(service, CONNECTED, 1, timeout=30)
        while len(reconnects) < kills_wanted:
            time.sleep(rng.uniform(1.5, 4.0))  # the fault schedule: up for a random while
            if upstream.all_sent():
                break
            killed = time.monotonic()
            upstream.kill()
            wait_for_count(service, DROPPED, len(reconnects) + 1, timeout=15)
            upstream.resume()
            seen = wait_for_count(service, CONNECTED, len(reconnects) + 2, timeout=30)
            reconnects.append(seen - upstream.listening_at)
            downtimes.append(upstream.listening_at - killed)
        client = StandaloneClient(service.url)
        remaining = (upstream.times[-1] - upstream.times[upstream.received() - 1]) / speed
        wait_until_truth(source, name, client, service, timeout=remaining + 60)
        client.close()
        # the table can match before the capture's last frames (which change nothing) are in
        deadline = time.monotonic() + 30
        while not upstream.all_sent() and time.monotonic() < deadline:
            time.sleep(0.1)
        received = journal_frames(journal)
        assert service.proc.poll() is None, "the service died"
    finally:
        service.stop()
        upstream.stop()
    first_difference = next((n for n, (a, b) in enumerate(zip(received, upstream.data, strict=False))
                             if a != b), min(len(received), len(upstream.data)))
    assert received == upstream.data, (f"the journal differs from the capture from frame {first_difference}:"
                                       f" {len(received)} frames, {len(upstream.data)} in the capture")
    assert "Traceback" not in service.output()
    assert_secret_absent(password, [service, *upstream.servers], [tmp_path])
    figures["source"] = source
    figures["capture"] = name
    figures["replay_speed"] = speed
    figures["duration_s"] = round(time.monotonic() - started, 1)
    figures["kills"] = len(reconnects)
    figures["reconnect_max_s"] = round(max(reconnects), 3) if reconnects else None
    figures["reconnect_median_s"] = round(statistics.median(reconnects), 3) if reconnects else None
    figures["server_down_median_s"] = round(statistics.median(downtimes), 3) if downtimes else None
    figures["frames"] = len(upstream.data)
    figures["frames_lost"] = len(upstream.data) - len(received)
    figures["laps_lost"] = 0  # the final table equals the truth, laps included
    figures["crashes"] = 0
    assert len(reconnects) >= min(kills_wanted, 3), "the capture ended before enough kills"
    slow = [round(r, 2) for r in reconnects if r > 2.0]
    assert not slow, f"reconnects slower than 2 s after the server was back: {slow} of {reconnects}"
