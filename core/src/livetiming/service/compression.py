"""State compression as Timing71 clients expect it (msgClass 8 payloads).

The JSON is ASCII-escaped before compression: Python's and JavaScript's
LZString disagree on characters outside the Basic Multilingual Plane, but
agree on ASCII text, and clients ``JSON.parse`` the escapes back.
"""

from __future__ import annotations

import json
from typing import Any

import lzstring

_LZ = lzstring.LZString()


def state_json(state: Any) -> str:
    """Compact, ASCII-only JSON for a state (NaN/Infinity are refused)."""
    return json.dumps(state, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def compress_state(state: Any) -> str:
    """``LZString.compressToUTF16`` of the state's ASCII JSON."""
    return _LZ.compressToUTF16(state_json(state))


def decompress_state(payload: str) -> Any:
    """Inverse of ``compress_state`` (for tests and tools)."""
    text = lzstring._decompress(len(payload), 16384, lambda index: ord(payload[index]) - 32)
    return json.loads(text)
