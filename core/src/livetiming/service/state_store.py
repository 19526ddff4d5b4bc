"""Saving and resuming a service's state as JSON, crash-safely."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    """``$LIVETIMING_STATE_DIR`` (default: the working directory), created when missing."""
    path = Path(os.environ.get("LIVETIMING_STATE_DIR") or os.getcwd())
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json_atomically(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON so that a crash leaves either the old or the new file.

    The JSON goes to a temporary file in the same folder which then replaces
    the target in one rename.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"), allow_nan=False, default=str)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_state(path: str | os.PathLike) -> dict:
    """Read a saved state; raises ValueError with a clear reason when unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError as error:
        raise ValueError(f"initial state file {path} does not exist") from error
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"initial state file {path} is not readable JSON: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"initial state file {path} does not hold a state object")
    return state
