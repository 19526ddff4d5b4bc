"""Logging set-up: twisted.logger everywhere, human-readable or one JSON object per line.

Every event carries the service's context (uuid, plugin and whatever the
plugin adds, e.g. upstream source and session) as structured fields. Known
secrets are masked in every line as a last line of defence.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer

#: Fields added to every log event (uuid, plugin, …); plugins may add more.
LOG_CONTEXT: dict[str, object] = {}

_SECRET_VARIABLES = ("LIVETIMING_SHARED_SECRET", "LIVETIMING_ADMIN_AUTHCODE", "SENTRY_DSN")
_extra_secrets: set[str] = set()
_STANDARD_KEYS = {"log_time", "log_level", "log_namespace", "log_format", "log_logger",
                  "log_source", "log_io", "log_failure", "log_text", "log_system", "log_trace",
                  "log_flattened", "message", "format", "isError", "failure", "why", "system",
                  "time", "log_legacy", "log_stack", "message_text"}


def add_secret(value: str | None) -> None:
    """Register a value that must never appear in a log line."""
    if value and len(value) >= 4:
        _extra_secrets.add(value)


def _secrets() -> Iterable[str]:
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            yield value
    yield from _extra_secrets


def redact(text: str) -> str:
    """Mask any known secret in ``text``."""
    for secret in _secrets():
        if secret in text:
            text = text.replace(secret, "********")
    return text


def _event_text(event: dict) -> str:
    text = formatEvent(event) or ""
    failure = event.get("log_failure")
    if failure is not None:
        try:
            text = f"{text}\n{failure.getTraceback()}"
        except Exception:  # a broken failure must not break logging
            text = f"{text} ({failure!r})"
    return redact(text)


def _context_fields(event: dict) -> dict:
    fields = dict(LOG_CONTEXT)
    for key, value in event.items():
        if key in _STANDARD_KEYS or key.startswith("log_") or key.startswith("_"):
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            fields[key] = value
    return fields


@implementer(ILogObserver)
class HumanLogObserver:
    """``2026-11-22 04:50:01+0000 [namespace] INFO: text`` lines."""

    def __init__(self, out: IO[str]):
        self.out = out

    def __call__(self, event: dict) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S%z", time.localtime(event.get("log_time", time.time())))
        level = event.get("log_level", LogLevel.info)
        namespace = event.get("log_namespace", "-")
        tag = LOG_CONTEXT.get("plugin")
        prefix = f"{namespace}" if not tag else f"{tag}|{namespace}"
        line = f"{stamp} [{prefix}] {level.name.upper()}: {_event_text(event)}\n"
        try:
            self.out.write(line)
            self.out.flush()
        except (OSError, ValueError):
            pass


@implementer(ILogObserver)
class JSONLogObserver:
    """One JSON object per line: time, level, namespace, message and context fields."""

    def __init__(self, out: IO[str]):
        self.out = out

    def __call__(self, event: dict) -> None:
        record = {
            "time": event.get("log_time", time.time()),
            "level": event.get("log_level", LogLevel.info).name,
            "namespace": event.get("log_namespace", "-"),
            "message": _event_text(event),
        }
        for key, value in _context_fields(event).items():
            record.setdefault(key, redact(value) if isinstance(value, str) else value)
        try:
            self.out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass


def log_file_path(service_class: str) -> str:
    """``$LIVETIMING_LOG_DIR/<service_class>.log`` (directory created when missing)."""
    folder = os.environ.get("LIVETIMING_LOG_DIR") or os.getcwd()
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{service_class}.log")


def setup_logging(service_class: str, verbose: bool = False, debug: bool = False,
                  log_format: str = "text", out: IO[str] | None = None) -> IO[str]:
    """Start twisted logging for a service; returns the stream logs go to.

    ``verbose`` logs to stdout, otherwise to the service's log file.
    """
    if out is None:
        out = sys.stdout if verbose else open(log_file_path(service_class), "a", encoding="utf-8")
    observer = JSONLogObserver(out) if log_format == "json" else HumanLogObserver(out)
    level = LogLevel.debug if debug else LogLevel.info
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     redirectStandardIO=False)
    return out
