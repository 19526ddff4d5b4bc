"""The ``livetiming-service`` command: parse options, load a plugin, run it."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

PLUGIN_PREFIX = "livetiming.service.plugins."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livetiming-service",
        description="Run a Timing71 live-timing service plugin.",
        add_help=False,
        epilog="Options not listed here are passed to the plugin.",
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help (and the plugin's)")
    parser.add_argument("service_class", nargs="?", help="plugin name, e.g. carobama")
    parser.add_argument("-s", "--initial-state", dest="initial_state",
                        help="resume from a saved state file (its basename becomes the uuid)")
    parser.add_argument("-r", "--recording-file", "--recording-filename", dest="recording_file",
                        help="record the session to this ZIP file")
    parser.add_argument("-d", "--description", help="session description (overrides the plugin's)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log to stdout instead of $LIVETIMING_LOG_DIR/<plugin>.log")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="text (default) or json: one JSON object per line")
    parser.add_argument("--disable-analysis", action="store_true", help="produce no analysis data")
    parser.add_argument("-H", "--hidden", action="store_true", help="hide from the directory")
    parser.add_argument("-N", "--do-not-record", dest="do_not_record", action="store_true",
                        help="ask relays not to record this service")
    parser.add_argument("-m", "--masquerade", help="report this service class instead of the plugin's")
    parser.add_argument("--standalone", action="store_true",
                        help="serve clients directly on a local WebSocket (default when "
                             "LIVETIMING_ROUTER is unset)")
    parser.add_argument("--listen", default=None,
                        help="interface the standalone server binds to (default 127.0.0.1; "
                             "0.0.0.0 opens it to the network)")
    parser.add_argument("--no-write-state", dest="no_write_state", action="store_true",
                        help="do not save state to $LIVETIMING_STATE_DIR")
    parser.add_argument("--upnp", action="store_true", help="map the standalone port with UPnP")
    parser.add_argument("--uuid", help="service uuid (default: random)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Split the command line into framework options and the plugin's ``extra_args``."""
    args, extra = _parser().parse_known_args(argv)
    if not args.upnp and os.environ.get("LIVETIMING_USE_UPNP"):
        args.upnp = True
    return args, extra


class UnknownPlugin(Exception):
    """No plugin of that name is installed."""


def plugin_module_names(name: str) -> list[str]:
    """Module paths tried for a plugin name, in order."""
    if name.startswith(PLUGIN_PREFIX):
        return [name]
    return [PLUGIN_PREFIX + name, name] if "." in name else [PLUGIN_PREFIX + name]


def load_plugin(name: str):
    """Import a plugin module and return its ``Service`` class.

    Raises UnknownPlugin when no module of that name exists, and ImportError
    when the plugin exists but cannot be imported (a missing dependency).
    """
    for module_name in plugin_module_names(name):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue
            raise
        service = getattr(module, "Service", None)
        if service is None:
            raise UnknownPlugin(f"{module_name} has no Service class")
        return service
    raise UnknownPlugin(f"no plugin named {name!r} is installed (try livetiming-plugins)")


def _plugin_help(service_class) -> str | None:
    factory = getattr(service_class, "create_argument_parser", None)
    if factory is None:
        module = sys.modules.get(service_class.__module__)
        factory = getattr(module, "create_argument_parser", None)
    if factory is None:
        return None
    return factory().format_help()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``livetiming-service``."""
    from livetiming import load_env

    load_env()
    args, extra_args = parse_args(argv)
    parser = _parser()
    if args.help or not args.service_class:
        if not args.service_class:
            parser.print_help()
            raise SystemExit(0 if args.help else 2)
        parser.print_help()
    try:
        service_class = load_plugin(args.service_class)
    except UnknownPlugin as error:
        print(f"livetiming-service: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:
        print(f"livetiming-service: plugin {args.service_class!r} failed to load: "
              f"{type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.help:
        plugin_help = _plugin_help(service_class)
        if plugin_help:
            print(f"\nOptions of plugin {args.service_class}:\n")
            print(plugin_help)
        raise SystemExit(0)

    from livetiming.service.base import service_class_name
    from livetiming.service.logs import LOG_CONTEXT, add_secret, setup_logging

    short_name = service_class_name(args)
    setup_logging(short_name, verbose=args.verbose or args.standalone or not os.environ.get(
        "LIVETIMING_ROUTER"), debug=args.debug, log_format=args.log_format)
    add_secret(os.environ.get("LIVETIMING_SHARED_SECRET"))
    LOG_CONTEXT["plugin"] = short_name
    _start_sentry()
    try:
        service = service_class(args, extra_args)
    except SystemExit:
        raise
    except ValueError as error:
        print(f"livetiming-service: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    LOG_CONTEXT["uuid"] = service.uuid
    service.start()


def _start_sentry() -> None:
    dsn = os.environ.get("SENTRY_DSN")
    if not dsn:
        return
    try:
        import sentry_sdk
    except ImportError:
        print("livetiming-service: SENTRY_DSN is set but sentry-sdk is not installed; "
              "errors are not reported", file=sys.stderr)
        return
    sentry_sdk.init(dsn=dsn)
