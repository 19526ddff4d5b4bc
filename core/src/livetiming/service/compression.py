"""State compression as Timing71 clients expect it (msgClass 8 payloads).

The JSON is ASCII-escaped before compression, as the original framework
does, so payloads are plain ASCII whatever the names contain; clients
``JSON.parse`` the escapes back. The codec is ours (``lzstring_utf16``): the
PyPI ``lzstring`` port is output-compatible but several times slower and its
decoder is broken for UTF-16 input.
"""

from __future__ import annotations

import json
from typing import Any

from livetiming.service.lzstring_utf16 import compress_to_utf16, decompress_from_utf16


def state_json(state: Any) -> str:
    """Compact, ASCII-only JSON for a state (NaN/Infinity are refused)."""
    return json.dumps(state, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def compress_state(state: Any) -> str:
    """``LZString.compressToUTF16`` of the state's ASCII JSON."""
    return compress_to_utf16(state_json(state))


class StateCompressor:
    """Compresses states, reusing the last payload when the state has not changed.

    Services republish unchanged states on every poll; serialising is cheap,
    compressing is not, so the JSON text is compared first. The JSON of a
    state is made once (``json_text``): the recorder, the compressor and the
    state file all take it from there.
    """

    def __init__(self) -> None:
        self._last_json: str | None = None
        self._last_payload: str | None = None
        self._text_state: Any = None
        self._text = ""

    def json_text(self, state: Any) -> str:
        """``state_json(state)``, made once per state object (the recorder, the compressor and
        the state file need it for the same state)."""
        if state is not self._text_state:
            self._text = state_json(state)
            self._text_state = state
        return self._text

    def compress(self, state: Any) -> str:
        """The compressed payload for ``state``."""
        text = self.json_text(state)
        if text != self._last_json:
            self._last_payload = compress_to_utf16(text)
            self._last_json = text
        return self._last_payload


def decompress_state(payload: str) -> Any:
    """Inverse of ``compress_state`` (for tests and tools)."""
    return json.loads(decompress_from_utf16(payload))
