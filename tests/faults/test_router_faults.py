"""Issue 9 §3: the Crossbar router is stopped and started under a running carobama service.

The carobama service runs in WAMP mode (deploy/crossbar's router, WAMP-CRA) with a replay
upstream that has already delivered a whole practice session, so its state is fixed and known.
The router is stopped and started again (``make soak``: several times); each time the service
must rejoin and republish within 10 s, and a new anonymous subscriber asking for the retained
state (``get_retained``) must get the current one: the same cars as ``requestState`` answers and
as the capture's truth.
"""

from __future__ import annotations

import time

from livetiming.service.compression import decompress_state
from tests.faults.secrets_check import assert_secret_absent
from tests.faults.upstream import wait_for_count
from tests.integration.test_emperor_end_to_end import CAPTURES, Replay, truth_of
from tests.integration.test_wamp_mode import probe
from tests.support.processes import BIN, Process

UUID = "faults-router"
JOINED = r"Joined WAMP realm timing as"


def retained_state(router_url: str, timeout: float = 15) -> dict:
    """What a new anonymous subscriber gets as the retained state of the service."""
    code, records = probe(router_url, "subscribe", f"livetiming.service.{UUID}", "--get-retained",
                          timeout=timeout)
    assert code == 0, records
    return decompress_state(records[-1]["event"]["payload"])


def requested_state(router_url: str) -> dict:
    """The service's answer to ``requestState`` (plain, uncompressed)."""
    code, records = probe(router_url, "call", f"livetiming.service.requestState.{UUID}")
    assert code == 0, records
    return records[-1]["result"]


def test_router_restarts_the_service_rejoins_and_republishes_the_current_state(
        fresh_crossbar_router, service_env, soak, figures):
    router = fresh_crossbar_router
    truth = truth_of("practice-v1")
    replay = Replay(CAPTURES / "practice-v1.jsonl", "--speed", "0")
    env = {**service_env, "LIVETIMING_ROUTER": router.url, "LIVETIMING_SHARED_SECRET": router.secret,
           "LIVETIMING_AUTH_ID": router.authid}
    service = Process([str(BIN / "livetiming-service"), "carobama", "-v", "--uuid", UUID,
                       "--url", replay.url, "--stale-after", "600", "--publish-interval", "0.2"], env=env)
    rejoins: list[float] = []
    republished: list[float] = []
    try:
        wait_for_count(service, JOINED, 1, timeout=60)
        before = retained_state(router.url)
        by_id = {car["car_id"]: car for car in truth["cars"]}
        numbers = [by_id[car_id]["number"] for car_id in truth["order"]]
        assert [car[0] for car in before["cars"]] == numbers
        for restart in range(5 if soak else 1):
            router.stop()
            router.start()
            back = time.monotonic()
            rejoins.append(wait_for_count(service, JOINED, restart + 2, timeout=30) - back)
            after = retained_state(router.url)
            republished.append(time.monotonic() - back)
            assert after["cars"] == before["cars"] == requested_state(router.url)["cars"]
        assert service.proc.poll() is None
    finally:
        service.stop()
        replay.stop()
    assert max(republished) <= 10.0, republished
    assert "Traceback" not in service.output()
    assert_secret_absent(router.secret, [service, replay], texts=[router.log_text()])
    figures["router_restarts"] = len(rejoins)
    figures["rejoin_max_s"] = round(max(rejoins), 3)
    figures["rejoin_median_s"] = round(sorted(rejoins)[len(rejoins) // 2], 3)
    figures["retained_state_back_max_s"] = round(max(republished), 3)
    figures["cars_in_retained_state"] = len(before["cars"])
    figures["crashes"] = 0
