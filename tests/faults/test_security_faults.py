"""Issue 9 §8: security of the deployment as the fault suite runs it.

* The router of deploy/crossbar refuses a wrong WAMP-CRA secret, and refuses anonymous clients
  publishing or registering under ``livetiming.`` (tried with the one-shot WAMP probe; the full
  permission matrix is tests/integration/test_crossbar_security.py).
* Secrets never reach a log: a service in WAMP mode logging to its log file (``--debug``), with a
  password in its upstream URL and the router's shared secret in its environment, is run and every
  file it wrote, its stdout/stderr and the router's log are searched for both. (Every other fault
  test does the same sweep over its own runs: tests/faults/secrets_check.py.)
* The standalone server, the page (standalone port, ``--web-port``) and the t71 stream listen on
  127.0.0.1 unless ``--listen`` says otherwise (read from the kernel's socket table; the test moves
  them to 127.0.0.2, as it must not open anything beyond loopback), and README documents
  ``--listen``.
* The page escapes every text it shows: tests/integration/test_pitwall_browser.py renders HTML
  driver names and chat in Chromium and checks nothing is interpreted.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.faults.secrets_check import assert_secret_absent, with_password
from tests.faults.upstream import wait_for_count
from tests.integration.test_wamp_mode import probe
from tests.support.pitwall import CAPTURES, PitWallService, Replay
from tests.support.processes import BIN, REPO, Process, free_port

REFUSED = {"wamp.error.not_authorized", "wamp.error.authentication_failed"}


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process is listening on, from /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address[:width])
            if width == 8:
                text = ".".join(str(b) for b in raw[::-1])
            else:
                text = "::" if not any(raw) else raw.hex()
            found.add((text, int(port, 16)))
    return found


def test_router_refuses_wrong_secrets_and_anonymous_publish_and_register(crossbar_router, figures):
    router = crossbar_router
    attempts = {
        "publish with a wrong secret": ("publish", "livetiming.service.forged", "1",
                                        f"--authid={router.authid}", f"--secret=wrong-{router.secret}"),
        "anonymous publish of a state": ("publish", "livetiming.service.forged", "1"),
        "anonymous publish on livetiming.control": ("publish", "livetiming.control", "1"),
        "anonymous register of a service procedure": ("register", "livetiming.service.isAlive.forged"),
        "anonymous register of the directory": ("register", "livetiming.directory.listServices"),
    }
    refusals = {}
    for what, argv in attempts.items():
        code, records = probe(router.url, *argv, timeout=15)
        assert code == 1 and records and records[0].get("error") in REFUSED, (what, records)
        refusals[what] = records[0]["error"]
    # "--secret=…" in one argument: a random secret may begin with "-"
    code, records = probe(router.url, "register", "livetiming.service.isAlive.genuine",
                          f"--authid={router.authid}", f"--secret={router.secret}", timeout=15)
    assert code == 0, records  # the right secret still works
    assert router.secret not in router.log_text()
    figures["refusals"] = refusals


def test_secrets_never_reach_logs_and_sockets_bind_to_loopback(crossbar_router, service_env, tmp_path,
                                                              figures):
    router = crossbar_router
    replay = Replay(CAPTURES / "practice-v1.jsonl", "--speed", "0")
    url, password = with_password(replay.url)
    env = {**service_env, "LIVETIMING_ROUTER": router.url, "LIVETIMING_SHARED_SECRET": router.secret,
           "LIVETIMING_AUTH_ID": router.authid}
    web_port, t71_port = free_port(), free_port()
    wamp = Process([str(BIN / "livetiming-service"), "carobama", "--debug", "--uuid", "faults-security",
                    "--url", url, "--web-port", str(web_port), "--t71-port", str(t71_port)], env=env)
    standalone = PitWallService(url, "--t71-port", str(free_port()), env=service_env)
    # --listen moves the sockets; tests stay on loopback, so 127.0.0.2 stands for 0.0.0.0
    opened = PitWallService(url, "--listen", "127.0.0.2", env=service_env)
    try:
        log_file = Path(service_env["LIVETIMING_LOG_DIR"]) / "carobama.log"
        wait_for_count(wamp, r"Pit wall page", 1, timeout=60)
        code, records = probe(router.url, "subscribe", "livetiming.service.faults-security", "--get-retained")
        assert code == 0, records
        bound = {
            "wamp": listening_addresses(wamp.proc.pid),
            "standalone": listening_addresses(standalone.proc.pid),
            "listen 127.0.0.2": listening_addresses(opened.proc.pid),
            "replay": listening_addresses(replay.proc.pid),
        }
    finally:
        for process in (wamp, standalone, opened, replay):
            process.stop()
    assert {port for _a, port in bound["wamp"]} >= {web_port, t71_port}
    for name in ("wamp", "standalone", "replay"):
        assert bound[name] and {address for address, _p in bound[name]} == {"127.0.0.1"}, bound
    assert {address for address, _p in bound["listen 127.0.0.2"]} == {"127.0.0.2"}, bound
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "--listen" in readme and "127.0.0.1" in readme
    assert log_file.exists() and log_file.stat().st_size > 0
    searched = 0
    for secret in (password, router.secret):
        searched += assert_secret_absent(secret, [wamp, standalone, opened, replay], [tmp_path],
                                         texts=[router.log_text()])
    figures["listening"] = {name: sorted(f"{a}:{p}" for a, p in found) for name, found in bound.items()}
    figures["secret_places_searched"] = searched
    figures["secrets_found"] = 0
