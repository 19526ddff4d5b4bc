"""Watchdog: notice when something that should keep happening has stopped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime


class Watchdog:
    """Calls ``action`` when ``notify()`` has not been called for ``timeout`` seconds.

    Time comes from the reactor's clock (``clock``, default the global
    reactor), never the wall clock, so it is immune to clock changes and can
    be driven by ``twisted.internet.task.Clock`` in tests. After firing it
    re-arms, so a source that stays silent triggers the action again every
    ``timeout`` seconds.
    """

    def __init__(self, timeout: float, action: Callable[..., Any], *args: Any, **kwargs: Any):
        clock = kwargs.pop("clock", None)
        if clock is None:
            from twisted.internet import reactor as clock
        self.timeout = timeout
        self.action = action
        self.args = args
        self.kwargs = kwargs
        self.clock: IReactorTime = clock
        self._call = None

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._call is not None

    def start(self) -> None:
        """Begin watching; the countdown starts now."""
        self.stop()
        self._call = self.clock.callLater(self.timeout, self._fire)

    def notify(self) -> None:
        """Record a sign of life, restarting the countdown."""
        if self._call is not None and self._call.active():
            self._call.reset(self.timeout)

    def stop(self) -> None:
        """Stop watching."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = self.clock.callLater(self.timeout, self._fire)
        self.action(*self.args, **self.kwargs)
