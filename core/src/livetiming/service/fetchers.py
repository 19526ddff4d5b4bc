"""HTTP polling helpers for plugins whose upstream is a URL to fetch repeatedly."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from livetiming import USER_AGENT


class Fetcher:
    """Fetches ``url`` every ``interval`` seconds and calls ``callback(body_bytes)``.

    ``url`` may be a string or a callable returning one (for URLs that change
    over time). After a failure it retries after 1, 2, 4 … seconds (never
    longer than ``interval`` or 60 s) and logs the failure once, not on every
    retry; recovery is logged too.
    """

    log = Logger()

    def __init__(self, url: str | Callable[[], str], callback: Callable[[Any], Any], interval: float,
                 clock=None, agent=None, headers: dict | None = None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.url = url
        self.callback = callback
        self.interval = interval
        self.clock = clock
        self._agent = agent
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._call = None
        self._running = False
        self._failures = 0

    def _current_url(self) -> str:
        return self.url() if callable(self.url) else self.url

    def _get_agent(self):
        if self._agent is None:
            self._agent = Agent(self.clock)
        return self._agent

    def start(self) -> None:
        """Fetch now and then every ``interval`` seconds."""
        self._running = True
        self._schedule(0)

    def stop(self) -> None:
        """Stop polling."""
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, delay: float) -> None:
        if self._running:
            self._call = self.clock.callLater(delay, self._run)

    @defer.inlineCallbacks
    def _run(self):
        try:
            body = yield self._fetch()
            result = self._parse(body)
        except Exception as error:  # every failure is retried with backoff
            self._failures += 1
            if self._failures == 1:
                self.log.warn("Fetching {url} failed, retrying with backoff: {error}",
                              url=self._current_url(), error=error)
            self._schedule(min(2 ** (self._failures - 1), self.interval, 60))
            return
        if self._failures:
            self.log.info("Fetching {url} works again after {n} failures",
                          url=self._current_url(), n=self._failures)
        self._failures = 0
        try:
            self.callback(result)
        except Exception:
            self.log.failure("Fetcher callback failed")
        self._schedule(self.interval)

    @defer.inlineCallbacks
    def _fetch(self):
        headers = Headers({k: [v] for k, v in self._headers.items()})
        response = yield self._get_agent().request(b"GET", self._current_url().encode(), headers)
        body = yield readBody(response)
        if response.code >= 400:
            raise OSError(f"HTTP {response.code}")
        return body

    def _parse(self, body: bytes) -> Any:
        return body


class JSONFetcher(Fetcher):
    """A Fetcher whose callback receives the parsed JSON document."""

    def _parse(self, body: bytes) -> Any:
        return json.loads(body)


class MultiLineFetcher(Fetcher):
    """A Fetcher whose callback receives the body as a list of text lines."""

    def _parse(self, body: bytes) -> Any:
        return body.decode("utf-8", errors="replace").splitlines()
