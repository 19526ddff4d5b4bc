"""The ``livetiming-plugins`` command: list the plugins installed in the namespace."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import sys
from collections.abc import Iterator


def _distribution_versions() -> dict[str, str]:
    """Plugin name → version of the distribution that installed it."""
    versions: dict[str, str] = {}
    prefix = "livetiming/service/plugins/"
    for dist in importlib.metadata.distributions():
        for path in dist.files or ():
            text = str(path).replace("\\", "/")
            if text.startswith(prefix):
                name = text[len(prefix):].split("/")[0].removesuffix(".py")
                versions.setdefault(name, dist.version)
    return versions


def installed_plugins() -> Iterator[tuple[str, str, str]]:
    """(name, version, description) of every plugin that can be found."""
    try:
        namespace = importlib.import_module("livetiming.service.plugins")
    except ImportError:
        return
    versions = _distribution_versions()
    seen = set()
    for info in sorted(pkgutil.iter_modules(namespace.__path__), key=lambda i: i.name):
        if info.name in seen or info.name.startswith("_"):
            continue
        seen.add(info.name)
        description = ""
        version = versions.get(info.name, "")
        try:
            module = importlib.import_module(f"livetiming.service.plugins.{info.name}")
            description = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
            version = version or str(getattr(module, "__version__", "") or "")
        except Exception as error:  # a broken plugin is listed, not fatal
            description = f"(cannot be imported: {type(error).__name__}: {error})"
        yield info.name, version or "unknown", description


def main(argv: list[str] | None = None) -> None:
    """Print one line per installed plugin: name, version, description."""
    rows = list(installed_plugins())
    if not rows:
        print("No livetiming plugins are installed.", file=sys.stderr)
        return
    width = max(len(name) for name, _v, _d in rows)
    for name, version, description in rows:
        print(f"{name:<{width}}  {version:<10}  {description}")
