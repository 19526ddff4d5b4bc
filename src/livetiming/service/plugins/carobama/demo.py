"""``carobama-demo``: the whole product on one laptop with no network.

Plays a bundled capture through the replay server on loopback (as if it were
the upstream manager) and runs ``livetiming-service carobama`` against it in
standalone mode, in one process and one reactor. Prints what to open.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from importlib import resources

DEMOS = {
    "emperor": ("demo-emperor-race.capture.jsonl.gz", "/api/race-control"),
    "bmi": ("demo-bmi.capture.jsonl.gz", "/"),
}
#: Options the demo adds for a source (the service's own options can still override them).
DEMO_OPTIONS = {
    "bmi": ["--venue", "Demo Karting"],
}


def demo_capture(source: str) -> str:
    """Path of the bundled capture for ``source``."""
    name, _path = DEMOS[source]
    return str(resources.files("livetiming.service.plugins.carobama") / "data" / name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    """Start the replay upstream and the service; runs until interrupted."""
    parser = argparse.ArgumentParser(prog="carobama-demo", description=__doc__)
    parser.add_argument("--source", choices=sorted(DEMOS), default="emperor")
    parser.add_argument("--capture", help="play this capture instead of the bundled one")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed factor (default 1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LIVETIMING_STANDALONE_PORT") or 0),
                        help="standalone port (default: any free port)")
    args, service_args = parser.parse_known_args(argv)

    from twisted.internet import reactor

    from livetiming.service.cli import main as service_main
    from livetiming.service.plugins.carobama.replay import ReplayServerFactory, load_replay_frames

    capture = args.capture or demo_capture(args.source)
    if not os.path.exists(capture):
        print(f"carobama-demo: capture {capture} not found", file=sys.stderr)
        raise SystemExit(2)
    _header, frames, _skipped = load_replay_frames(capture)
    upstream = reactor.listenTCP(0, ReplayServerFactory(frames, speed=args.speed, loop=True),
                                 interface="127.0.0.1")
    upstream_url = f"ws://127.0.0.1:{upstream.getHost().port}{DEMOS[args.source][1]}"
    port = args.port or _free_port()
    os.environ["LIVETIMING_STANDALONE_PORT"] = str(port)
    print(f"carobama demo: replaying {os.path.basename(capture)} ({len(frames)} frames) as the "
          f"upstream at {upstream_url}", flush=True)
    print(f"carobama demo: open http://127.0.0.1:{port}/ in a browser for the pit wall, or "
          f"ws://127.0.0.1:{port}/ in a Timing71 client (standalone protocol); Ctrl-C stops", flush=True)
    service_main(["carobama", "--standalone", "-v", "--source", args.source, "--url", upstream_url,
                  *DEMO_OPTIONS.get(args.source, []), *service_args])


if __name__ == "__main__":
    main()
