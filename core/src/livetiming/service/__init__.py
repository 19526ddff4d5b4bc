"""Services: the base classes plugins extend and the ``livetiming-service`` command.

Plugins import ``AbstractService``, ``BaseService``, ``DuePublisher``,
``Fetcher``, ``JSONFetcher``, ``MultiLineFetcher``, ``Watchdog`` and
``ReconnectingWebSocketClientFactory`` from here.
"""

import pkgutil

# Plugins live in the namespace package ``livetiming.service.plugins``, which
# separately installed distributions (or checkouts on sys.path) extend.
__path__ = pkgutil.extend_path(__path__, __name__)

from livetiming.service.base import AbstractService, BaseService, DuePublisher  # noqa: E402
from livetiming.service.cli import main, parse_args  # noqa: E402
from livetiming.service.fetchers import Fetcher, JSONFetcher, MultiLineFetcher  # noqa: E402
from livetiming.service.watchdog import Watchdog  # noqa: E402
from livetiming.service.websocket_client import ReconnectingWebSocketClientFactory  # noqa: E402

__all__ = [
    "AbstractService",
    "BaseService",
    "DuePublisher",
    "Fetcher",
    "JSONFetcher",
    "MultiLineFetcher",
    "ReconnectingWebSocketClientFactory",
    "Watchdog",
    "main",
    "parse_args",
]
