"""WAMP mode against a real Crossbar router (timing71-wire §2, §8 6-7)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from livetiming.service.compression import decompress_state
from tests.support.analysis_checks import check_analysis
from tests.support.processes import BIN, REPO, Process

PLUGIN = "legacy_example"


def probe(router_url, *args, timeout=20):
    """Run the one-shot WAMP client; returns (exit status, list of JSON records)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.wamp_probe", router_url, *args, "--timeout", str(timeout)],
        capture_output=True, text=True, cwd=REPO, timeout=timeout + 30,
    )
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, records


def start_service(router, service_env, *argv, secret=None, authid=None):
    env = {**service_env, "LIVETIMING_ROUTER": router.url,
           "LIVETIMING_SHARED_SECRET": router.secret if secret is None else secret,
           "LIVETIMING_AUTH_ID": authid or router.authid}
    proc = Process([str(BIN / "livetiming-service"), PLUGIN, "-v", "--uuid", "wamptest",
                    "--poll", "1", *argv], env=env)
    proc.env = env
    return proc


def wait_joined(proc, timeout=30):
    return proc.wait_for_line(r"Joined WAMP realm timing as", timeout=timeout)


def test_service_joins_and_publishes_retained_state(crossbar_router, service_env):
    proc = start_service(crossbar_router, service_env)
    try:
        wait_joined(proc)
        code, records = probe(crossbar_router.url, "subscribe", "livetiming.service.wamptest",
                              "--get-retained")
        assert code == 0, records
        message = records[-1]["event"]
        assert message["msgClass"] == 8 and message["retain"] is True
        state = decompress_state(message["payload"])
        assert state["session"]["flagState"] == "green" and state["cars"]

        code, records = probe(crossbar_router.url, "call", "livetiming.service.requestState.wamptest")
        assert code == 0, records
        plain = records[-1]["result"]
        assert isinstance(plain, dict) and set(plain) >= {"cars", "session", "messages"}

        code, records = probe(crossbar_router.url, "call", "livetiming.service.isAlive.wamptest")
        assert records[-1]["result"] is True
        # Analysis takes a second in when the next one starts: right after joining it may
        # still be empty, so ask again until it holds the cars (with a deadline).
        deadline = time.monotonic() + 20
        while True:
            code, records = probe(crossbar_router.url, "call",
                                  "livetiming.service.requestAnalysisData.wamptest")
            assert code == 0, records
            check_analysis(records[-1]["result"])
            if records[-1]["result"]["static"] or time.monotonic() > deadline:
                break
        assert set(records[-1]["result"]["static"]) == {"1", "2", "3"}
        # Analysis keys are retained (all but the full lap/stint dumps) with the wrapper flag.
        code, records = probe(crossbar_router.url, "subscribe", "livetiming.analysis/wamptest/static",
                              "--get-retained")
        assert code == 0, records
        static = records[-1]["event"]
        assert static["msgClass"] == 7 and static["retain"] is True
        assert set(static["payload"]) == {"1", "2", "3"}
    finally:
        proc.stop()
    assert crossbar_router.secret not in proc.output()


def test_service_joins_a_router_with_salted_secrets(crossbar_router_salted, service_env):
    proc = start_service(crossbar_router_salted, service_env)
    try:
        wait_joined(proc)
    finally:
        proc.stop()


def test_wrong_secret_is_refused_clearly_and_the_process_exits_nonzero(crossbar_router, service_env):
    proc = start_service(crossbar_router, service_env, secret="definitely-wrong-secret")
    try:
        proc.wait_for_line(r"refused authentication as services", timeout=30)
        proc.proc.wait(timeout=60)
    finally:
        proc.stop()
    assert proc.proc.returncode not in (0, None)
    assert "Giving up on the WAMP router" in proc.output()
    assert "definitely-wrong-secret" not in proc.output()


def test_initialise_directory_makes_the_service_publish_its_manifest(crossbar_router, service_env):
    proc = start_service(crossbar_router, service_env, "--poll", "30")
    try:
        wait_joined(proc)
        listener = subprocess.Popen(
            [sys.executable, "-m", "tests.support.wamp_probe", crossbar_router.url, "subscribe",
             "livetiming.control", "--count", "2", "--timeout", "20"],
            stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert json.loads(listener.stdout.readline()) == {"subscribed": "livetiming.control"}
        code, records = probe(crossbar_router.url, "publish", "livetiming.control",
                              json.dumps({"msgClass": 1, "date": 0, "payload": None}),
                              f"--authid={crossbar_router.authid}", f"--secret={crossbar_router.secret}")
        assert code == 0, records
        events = [json.loads(line)["event"] for line in listener.stdout]
        listener.wait(10)
        manifests = [e for e in events if e["msgClass"] == 2]
        assert manifests and manifests[0]["payload"]["uuid"] == "wamptest"
        assert manifests[0]["payload"]["colSpec"][0] == ["Num", "text", "Car number"]
    finally:
        proc.stop()


def test_service_comes_back_after_the_router_restarts(fresh_crossbar_router, service_env):
    crossbar_router = fresh_crossbar_router
    proc = start_service(crossbar_router, service_env)
    try:
        wait_joined(proc)
        crossbar_router.stop()
        proc.wait_for_line(r"Left the WAMP router|Connection failed|connection lost|lost", timeout=30)
        crossbar_router.start()
        restarted = time.monotonic()
        code, records = probe(crossbar_router.url, "subscribe", "livetiming.service.wamptest",
                              "--get-retained", timeout=15)
        elapsed = time.monotonic() - restarted
        assert code == 0, (records, proc.output()[-3000:])
        assert records[-1]["event"]["msgClass"] == 8
        assert elapsed <= 10.0, f"state back after {elapsed:.1f}s"
    finally:
        proc.stop()


def test_without_analysis_the_rpc_answers_null(crossbar_router, service_env):
    proc = start_service(crossbar_router, service_env, "--disable-analysis")
    try:
        wait_joined(proc)
        code, records = probe(crossbar_router.url, "call",
                              "livetiming.service.requestAnalysisData.wamptest")
        assert code == 0 and records[-1]["result"] is None
    finally:
        proc.stop()
