"""Upstream feeds: pure state machines turning frames into the :mod:`..model` and events.

A feed never reads a clock, opens a socket or touches the reactor: the caller hands it each frame's
text with the frame's receive time (Unix seconds) and gets back a list of
:class:`~livetiming.service.plugins.carobama.model.FeedEvent`; the current state is in
``feed.model``.
"""

from livetiming.service.plugins.carobama.feeds.bmi import BMIFeed
from livetiming.service.plugins.carobama.feeds.emperor import EmperorFeed, parse_split

__all__ = ["BMIFeed", "EmperorFeed", "parse_split"]
