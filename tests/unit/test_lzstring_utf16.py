"""Our LZString UTF-16 codec against the JavaScript library Timing71 clients use."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import lzstring
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetiming.service import lzstring_utf16
from livetiming.service.lzstring_utf16 import (
    compress_to_utf16,
    compress_to_utf16_python,
    decompress_from_utf16,
)
from tests.support.processes import REPO
from tests.unit.lzstring_reference import reference_compress_to_utf16

JS = REPO / "tests" / "js"

#: Both compressors must give the clients' payload to the character: the Python one and, where
#: it was built (a C compiler at install), the C one that ``compress_to_utf16`` then is.
COMPRESSORS = [pytest.param(compress_to_utf16_python, id="python")]
if lzstring_utf16.COMPRESSOR == "c":
    COMPRESSORS.append(pytest.param(compress_to_utf16, id="c"))
each_compressor = pytest.mark.parametrize("compress", COMPRESSORS)


def js_compress(texts: list[str]) -> list[str]:
    if not (JS / "node_modules" / "lz-string").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "-q"], cwd=JS, check=True)
    result = subprocess.run(["node", str(JS / "compress.mjs")], cwd=JS, check=True, text=True,
                            capture_output=True, input="".join(json.dumps(t) + "\n" for t in texts))
    return [json.loads(line) for line in result.stdout.split("\n") if line]


def samples() -> list[str]:
    rng = random.Random(71)
    alphabet = "abc{}[]\",:0123456789 -_.éü李🏎\\"
    texts = ["a", "ab", "aaaaaaaaaaaaaaaaaaaa", "\u00e9", "\u674e\u96f7", "\U0001F3CE racing", "x" * 70000]
    for size in (5, 50, 500, 5000, 40000):
        for _ in range(4):
            texts.append("".join(rng.choice(alphabet) for _ in range(size)))
    texts.append("".join(chr(rng.randrange(32, 0xD7FF)) for _ in range(3000)))
    state = {"cars": [[str(i), "RUN", f"Driver {i}", i, [90.1 + i, "pb"]] for i in range(40)],
             "session": {"flagState": "green"}, "messages": []}
    texts.append(json.dumps(state))
    return texts


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@each_compressor
def test_output_is_identical_to_javascript_lz_string(compress):
    texts = samples()
    expected = js_compress(texts)
    for text, reference in zip(texts, expected, strict=True):
        assert compress(text) == reference, text[:40]


@each_compressor
def test_matches_the_python_port_and_round_trips(compress):
    port = lzstring.LZString()
    for text in samples():
        if max(text) <= "\uffff":
            assert compress(text) == port.compressToUTF16(text)
        assert decompress_from_utf16(compress(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
@each_compressor
def test_round_trip_of_any_text(compress, text):
    packed = compress(text)
    assert decompress_from_utf16(packed) == (text if text else None)


@each_compressor
def test_empty_input(compress):
    assert compress("") == ""
    assert decompress_from_utf16("") is None


# The fast codec against the previous implementation (tests/unit/lzstring_reference.py) and the
# PyPI port: the payload clients decode must not change by a single character.

JSON_ALPHABET = st.sampled_from(list('{}[]",:0123456789.-abcdefgRUNPIT ') + ["\\u00e9", "\\ud83c"])


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=600))
@each_compressor
def test_identical_to_the_reference_for_any_text(compress, text):
    assert compress(text) == reference_compress_to_utf16(text)


@settings(max_examples=150, deadline=None)
@given(st.lists(JSON_ALPHABET, min_size=1, max_size=3000).map("".join))
@each_compressor
def test_identical_to_the_reference_and_the_port_for_json_like_text(compress, text):
    expected = reference_compress_to_utf16(text)
    assert compress(text) == expected
    assert lzstring.LZString().compressToUTF16(text) == expected


@each_compressor
def test_identical_when_codes_are_wider_than_16_bits(compress):
    rng = random.Random(8)
    text = "".join(chr(rng.randrange(0x4E00, 0x4E40)) for _ in range(150_000))
    assert compress(text) == reference_compress_to_utf16(text)


@each_compressor
def test_identical_for_framework_states(compress):
    from livetiming.service.compression import state_json

    rng = random.Random(5)
    for cars in (1, 10, 40, 80):
        state = {"cars": [[str(i), rng.choice(["RUN", "PIT"]), f"Driver {i} \u00e9", i,
                           [rng.uniform(80, 100), rng.choice(["", "pb", "sb-new"])]]
                          for i in range(cars)],
                 "session": {"flagState": "green", "timeElapsed": cars}, "messages": [],
                 "highlight": []}
        text = state_json(state)
        assert compress(text) == reference_compress_to_utf16(text)


def test_the_c_compressor_is_built_where_a_compiler_is():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the Python compressor is used")
    assert lzstring_utf16.COMPRESSOR == "c", "the optional _lzstring extension was not built"
