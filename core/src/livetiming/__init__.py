"""livetiming: the Timing71 live-timing framework (clean-room implementation).

Plugins import from here ``load_env``, ``make_component``, ``VERSION`` and
``USER_AGENT``; the rest lives in ``livetiming.racing``, ``.messages``,
``.network`` and ``.service``.
"""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path
from urllib.parse import urlparse

# Plugins and add-ons installed elsewhere on sys.path (for example an
# editable checkout) extend this package rather than shadow it.
__path__ = pkgutil.extend_path(__path__, __name__)

VERSION = "1.0.0"
USER_AGENT = f"Mozilla/5.0 (compatible; livetiming/{VERSION}; +https://www.timing71.org/)"

#: Size of WAMP message fragments sent to the router.
AUTO_FRAGMENT_SIZE = 128 * 1024


def find_env_file(start: str | os.PathLike | None = None, name: str = "livetiming.env") -> Path | None:
    """The nearest ``livetiming.env`` in ``start`` (default: cwd) or its parents."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def load_env(start: str | os.PathLike | None = None) -> Path | None:
    """Load ``livetiming.env`` into the environment; variables already set win.

    Returns the file loaded, or None when there is none.
    """
    from dotenv import dotenv_values

    env_file = find_env_file(start)
    if env_file is None:
        return None
    for key, value in dotenv_values(env_file).items():
        if value is not None and key not in os.environ:
            os.environ[key] = value
    return env_file


def router_transport(url: str) -> dict:
    """An autobahn Component transport description for a ``LIVETIMING_ROUTER`` URL.

    ``ws://``/``wss://`` give a WebSocket transport; ``rs://host:port`` and
    ``rs://unix/<path>`` give RawSocket over TCP or a Unix socket.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("ws", "wss"):
        return {
            "type": "websocket",
            "url": url,
            "options": {"autoFragmentSize": AUTO_FRAGMENT_SIZE},
        }
    if parsed.scheme == "rs":
        if parsed.hostname == "unix":
            endpoint = {"type": "unix", "path": parsed.path}
        else:
            endpoint = {"type": "tcp", "host": parsed.hostname, "port": parsed.port or 8080}
        return {"type": "rawsocket", "url": url, "endpoint": endpoint}
    raise ValueError(f"LIVETIMING_ROUTER must be a ws://, wss:// or rs:// URL, not {url!r}")


def make_component(session_class, router: str | None = None, **kwargs):
    """An autobahn Component joining realm ``timing`` on ``LIVETIMING_ROUTER``.

    ``session_class`` is the ApplicationSession factory (usually decorated with
    ``livetiming.network.authenticatedService``). Extra keyword arguments go to
    ``Component`` (for example ``is_fatal``).
    """
    from autobahn.twisted.component import Component

    from livetiming.network import Realm

    url = router or os.environ.get("LIVETIMING_ROUTER")
    if not url:
        raise ValueError("LIVETIMING_ROUTER is not set")
    transport = router_transport(url)
    transport.setdefault("max_retries", -1)
    transport.setdefault("initial_retry_delay", 1.0)
    transport.setdefault("max_retry_delay", 2.0)
    transport.setdefault("retry_delay_growth", 1.5)
    return Component(
        transports=[transport],
        realm=Realm.TIMING,
        session_factory=session_class,
        **kwargs,
    )
