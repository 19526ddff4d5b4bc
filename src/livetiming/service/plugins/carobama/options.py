"""The plugin's own command-line options (the framework passes them as ``extra_args``).

Every option also reads a ``CAROBAMA_*`` environment variable (listed in
``livetiming.env.example``); the command line wins. Bad or missing values
end the program with one clear line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

SOURCES = ("emperor", "bmi")


@dataclass(frozen=True)
class Options:
    """Validated plugin options."""

    source: str
    url: str
    team: str | None
    capture: str | None
    origin: str | None
    stale_after: float
    handshake: str | None
    pit_threshold: float
    venue: str | None
    publish_interval: float
    #: Pit-wall page port in WAMP mode (0: any free port); standalone serves it on its own port.
    web_port: int = 0
    #: Port of the modern Timing71 (``t71://``) stream, None when off.
    t71_port: int | None = None
    #: SQLAlchemy URL of the store (sessions, laps, raw frames), None when storage is off.
    database: str | None = None


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(message)


def create_argument_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The argparse parser of the plugin's options, with environment defaults."""
    env = os.environ if environ is None else environ
    parser = _OneLineParser(
        prog="livetiming-service carobama",
        description="Live timing from Emperor Servers (Assetto Corsa Server Manager) race control "
                    "or a BMI karting track.",
    )
    parser.add_argument("--source", choices=SOURCES, default=env.get("CAROBAMA_SOURCE") or "emperor",
                        help="upstream feed (env CAROBAMA_SOURCE; default emperor)")
    parser.add_argument("--url", default=env.get("CAROBAMA_URL"),
                        help="upstream websocket, e.g. wss://HOST/api/race-control (env CAROBAMA_URL)")
    parser.add_argument("--team", default=env.get("CAROBAMA_TEAM"),
                        help="team tag in driver names, e.g. YORK for 'Jane Doe-YORK' (env CAROBAMA_TEAM)")
    parser.add_argument("--capture", default=env.get("CAROBAMA_CAPTURE"),
                        help="append every raw upstream frame to this capture file (env CAROBAMA_CAPTURE)")
    parser.add_argument("--origin", default=env.get("CAROBAMA_ORIGIN"),
                        help="Origin header sent upstream (default: the upstream's own origin)")
    parser.add_argument("--stale-after", type=float, default=_float(env, "CAROBAMA_STALE_AFTER", 30.0),
                        help="seconds without upstream data before reconnecting (default 30)")
    parser.add_argument("--handshake", default=env.get("CAROBAMA_HANDSHAKE"),
                        help="BMI: text sent after every (re)connect, e.g. 'START -1@venue'")
    parser.add_argument("--pit-threshold", type=float,
                        default=_float(env, "CAROBAMA_PIT_THRESHOLD", 1.5),
                        help="BMI: a lap this many times the driver's median counts as a pit stop")
    parser.add_argument("--venue", default=env.get("CAROBAMA_VENUE"),
                        help="BMI: venue name shown as the series (default: from the host)")
    parser.add_argument("--publish-interval", type=float,
                        default=_float(env, "CAROBAMA_PUBLISH_INTERVAL", 0.5),
                        help="minimum seconds between state publications (default 0.5)")
    parser.add_argument("--web-port", default=env.get("CAROBAMA_WEB_PORT") or 0,
                        help="WAMP mode: port of the pit-wall web page (default: any free port; "
                             "standalone mode serves the page on the standalone port)")
    parser.add_argument("--t71-port", default=env.get("CAROBAMA_T71_PORT") or None,
                        help="serve the modern Timing71 stream (t71://) on this port; 24771 is the "
                             "port Timing71 expects (default: off)")
    parser.add_argument("--database", metavar="URL",
                        default=env.get("CAROBAMA_DATABASE") or default_database_url(env),
                        help="store sessions, laps, pit stops, messages and raw frames here: "
                             "sqlite:///FILE or postgresql+psycopg://USER@HOST/DB, or none "
                             "(env CAROBAMA_DATABASE; default carobama.sqlite in $LIVETIMING_DATA_DIR)")
    return parser


def default_database_url(env: Mapping[str, str]) -> str:
    """``sqlite:///…/carobama.sqlite`` in ``$LIVETIMING_DATA_DIR`` (default: the working directory)."""
    folder = os.path.expanduser(env.get("LIVETIMING_DATA_DIR") or ".")
    return "sqlite:///" + os.path.abspath(os.path.join(folder, "carobama.sqlite"))


def _database(value: str | None) -> str | None:
    """The store URL, or None for ``none``; checked here so that a bad one exits with status 2."""
    if value is None or value.strip().lower() in ("none", ""):
        return None
    from livetiming.service.plugins.carobama.store.db import StoreURLError, parse_url

    try:
        parse_url(value)
    except StoreURLError as error:
        raise OptionsError(str(error)) from None
    return value


def _port(value: object, name: str) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise OptionsError(f"--{name} must be a port number, not {value!r}") from None
    if not 0 <= port <= 65535:
        raise OptionsError(f"--{name} must be a port number (0-65535), not {value!r}")
    return port


def _float(env: Mapping[str, str], name: str, default: float) -> float | str:
    value = env.get(name)
    return value if value else default


class OptionsError(ValueError):
    """An option is missing or invalid."""


def validate(namespace: argparse.Namespace) -> Options:
    """Check the parsed options; raises OptionsError with a one-line reason."""
    if not namespace.url:
        raise OptionsError("--url (or CAROBAMA_URL) is required, e.g. "
                           "--url wss://HOST/api/race-control")
    parts = urlsplit(namespace.url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise OptionsError(f"--url must be a ws:// or wss:// websocket URL, not {namespace.url!r}")
    for name in ("stale_after", "pit_threshold", "publish_interval"):
        value = getattr(namespace, name)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise OptionsError(f"--{name.replace('_', '-')} must be a number, not {value!r}") from None
        if not value > 0 or value != value:
            raise OptionsError(f"--{name.replace('_', '-')} must be a positive number")
        setattr(namespace, name, value)
    if namespace.team is not None:
        namespace.team = namespace.team.strip().lstrip("-") or None
    return Options(
        source=namespace.source, url=namespace.url, team=namespace.team, capture=namespace.capture,
        origin=namespace.origin, stale_after=namespace.stale_after, handshake=namespace.handshake,
        pit_threshold=namespace.pit_threshold, venue=namespace.venue,
        publish_interval=namespace.publish_interval,
        web_port=_port(namespace.web_port, "web-port"),
        t71_port=_port(namespace.t71_port, "t71-port") if namespace.t71_port not in (None, "") else None,
        database=_database(namespace.database),
    )


def parse_options(extra_args: Sequence[str], environ: Mapping[str, str] | None = None) -> Options:
    """Parse and validate; on error print one line and exit with status 2."""
    parser = create_argument_parser(environ)
    namespace, unknown = parser.parse_known_args(list(extra_args))
    if unknown:
        _fail(f"unrecognised option(s): {' '.join(unknown)}")
    try:
        return validate(namespace)
    except OptionsError as error:
        _fail(str(error))
    raise AssertionError("unreachable")


def _fail(message: str) -> None:
    print(f"carobama: {message}", file=sys.stderr)
    raise SystemExit(2)
