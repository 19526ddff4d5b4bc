"""The secrets sweep of the fault suite (issue 9 §8): a secret must never be printed or written."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from pathlib import Path

from tests.support.processes import Process


def with_password(url: str) -> tuple[str, str]:
    """``url`` with a fresh random password as user-info (``ws://timing:<password>@…``), and the
    password: the upstream URL is where a venue's credentials live."""
    password = "pw-" + secrets.token_hex(8)
    return url.replace("://", f"://timing:{password}@", 1), password


def files_under(folders: Iterable[Path]) -> list[Path]:
    """Every regular file below the folders (logs, state files, journals, databases)."""
    return [path for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()]


def assert_secret_absent(secret: str, processes: Iterable[Process], folders: Iterable[Path] = (),
                         texts: Iterable[str] = ()) -> int:
    """Fail if ``secret`` appears in a process's stdout/stderr, any file below ``folders`` or
    ``texts``; returns how many streams and files were searched."""
    searched = 0
    needle = secret.encode("utf-8")
    for process in processes:
        assert secret not in process.output(), f"secret printed by {process.argv[0]}"
        searched += 2
    for text in texts:
        assert secret not in text, "secret found in a log"
        searched += 1
    for path in files_under(folders):
        assert needle not in path.read_bytes(), f"secret written to {path}"
        searched += 1
    return searched
