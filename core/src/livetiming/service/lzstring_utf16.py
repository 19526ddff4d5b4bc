"""LZString ``compressToUTF16`` and ``decompressFromUTF16``, output-identical to JavaScript's lz-string 1.5.

Timing71 clients decode state payloads with the JavaScript library, so the
output must match it exactly. The algorithm is the library's (LZW-style phrase
dictionary, variable-width codes written least-significant bit first, 15 bits
per output character offset by 32); the compressor is arranged for CPython:
phrases are integer keys (one integer lookup per input character), each code
written is a precomputed bit string, and the bits become characters with a
few whole-integer operations at the end. That makes a 40-car state about 1-4 ms
(the published Python port: about 13 ms). The same compressor in C (``_lzstring.c``,
an optional extension built at install) takes about 0.3 ms for a 40-car carobama state
(17.6 KB; the Python one: 4.4 ms) and is used when present.
``tests/unit/test_lzstring_utf16.py`` checks both against the JavaScript library, the PyPI
port and the previous, simpler implementation (``tests/unit/lzstring_reference.py``).
"""

from __future__ import annotations

from array import array

_BITS_PER_CHAR = 15


class _WideCodes(dict):
    """Bit strings of codes wider than 16 bits, made on demand (only huge inputs need them)."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def __missing__(self, value: int) -> str:
        bits = self[value] = format(value, f"0{self.width}b")[::-1]
        return bits


_CODE_TABLES: dict[int, list[str] | _WideCodes] = {}


def _code_table(width: int) -> list[str] | _WideCodes:
    """Each ``width``-bit value as the '0'/'1' string LZString writes for it (least significant first)."""
    table = _CODE_TABLES.get(width)
    if table is None:
        if width <= 16:
            table = [format(value, f"0{width}b")[::-1] for value in range(1 << width)]
        else:
            table = _WideCodes(width)
        _CODE_TABLES[width] = table
    return table


_CHAR8 = _code_table(8)


def _code_units(text: str) -> tuple[bytes | array, int]:
    """``text`` as the integers JavaScript sees (bytes for ASCII, else UTF-16 code units) and their bound."""
    if text.isascii():
        return text.encode("ascii"), 0x80
    return array("H", text.encode("utf-16-le", "surrogatepass")), 0x10000


def _literal(unit: int, table: list[str] | _WideCodes) -> str:
    """The bits introducing a new character: marker 0 and 8 bits, or marker 1 and 16 bits."""
    if unit < 256:
        return table[0] + _CHAR8[unit]
    return table[1] + _code_table(16)[unit]


#: Within a 128-bit block of eight 15-bit characters, the characters that move left by 4, 2
#: and 1 bits (index bit 2, 1, 0 set; positions after the earlier moves) to reach 16-bit lanes.
_SPREAD_STEPS = tuple(
    (shift, sum(((1 << 15) - 1) << (15 * j + (j & ~(2 * shift - 1))) for j in range(8) if j & shift)
     .to_bytes(16, "big"))
    for shift in (4, 2, 1)
)


def _pack_utf16(bits: str) -> str:
    """The bit string as compressToUTF16 characters: 15 bits each plus 32, the last one zero-padded.

    The stream is read as one integer and its 15-bit characters are spread into 16-bit lanes
    with whole-integer operations: eight characters (15 bytes) make a 16-byte block, then
    three masked shifts move the characters within every block at once. Adding 32 to every
    lane at once cannot carry (a lane holds at most 0x7fff).
    """
    count = len(bits) // _BITS_PER_CHAR + 1  # JavaScript always emits a final, padded character
    blocks = -(-count // 8)
    value = int(bits.ljust(count * _BITS_PER_CHAR, "0"), 2)
    packed = value.to_bytes(15 * blocks, "big")
    value = int.from_bytes(b"".join([b"\0" + packed[i:i + 15] for i in range(0, 15 * blocks, 15)]),
                           "big")
    for shift, pattern in _SPREAD_STEPS:
        mask = int.from_bytes(pattern * blocks, "big")
        moving = value & mask
        value = (value ^ moving) | moving << shift
    value += int.from_bytes(b"\x00\x20" * (8 * blocks), "big")
    return value.to_bytes(16 * blocks, "big")[2 * (8 * blocks - count):].decode("utf-16-be")


def compress_to_utf16_python(text: str) -> str:
    """Compress ``text`` exactly as JavaScript ``LZString.compressToUTF16`` does (in Python).

    Phrases are integers, not strings: single characters are looked up by code unit in a
    list, and the phrase "``w`` followed by ``c``" is keyed ``code(w) << 16 | c`` in a dict.
    Extending the current phrase by one character, the step taken for most of the input, is
    then one integer hash lookup. Each code written is
    one precomputed bit string appended to a list; the bits become characters in one go at
    the end (``_pack_utf16``).
    """
    if not text:
        return ""
    code_units, bound = _code_units(text)
    units = iter(code_units)
    first = next(units)
    # Codes are kept shifted left by 16, so the key of phrase w followed by c is ``w | c``.
    dictionary: dict[int, int] = {}  # phrases of two or more characters
    lookup = dictionary.get
    singles = [0] * bound  # single characters (0: not seen yet)
    singles[first] = 3 << 16
    parts: list[str] = []
    append = parts.append
    next_code, num_bits, enlarge_in = 4 << 16, 2, 2  # the next dictionary code, shifted
    table = _code_table(num_bits)
    # The current phrase: its shifted code, its character when it is a single one, and whether
    # that character is new (a new character is written out as a literal, then by its code; it
    # cannot be extended before it is written, as no phrase starts with it yet).
    w, w_unit, fresh = 3 << 16, first, True
    for c in units:
        key = w | c
        extended = lookup(key)
        if extended:  # the common case: the phrase keeps growing
            w = extended
            continue
        if fresh:
            append(_literal(w_unit, table))
            enlarge_in -= 1
            if enlarge_in == 0:
                enlarge_in = 1 << num_bits
                num_bits += 1
                table = _code_table(num_bits)
        else:
            append(table[w >> 16])
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1
            table = _code_table(num_bits)
        w = singles[c]
        fresh = not w
        if fresh:
            w = singles[c] = next_code
            next_code += 0x10000
            w_unit = c
        dictionary[key] = next_code
        next_code += 0x10000

    if fresh:
        append(_literal(w_unit, table))
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1
            table = _code_table(num_bits)
    else:
        append(table[w >> 16])
    enlarge_in -= 1
    if enlarge_in == 0:
        num_bits += 1
        table = _code_table(num_bits)
    append(table[2])  # end of stream
    return _pack_utf16("".join(parts)) + " "


try:  # the same compressor in C (``_lzstring.c``), built when a compiler was there at install
    from livetiming.service._lzstring import compress_to_utf16 as _compress_in_c
except ImportError:  # pragma: no cover - depends on the build
    _compress_in_c = None

#: ``LZString.compressToUTF16``: the C compressor when it was built, else the Python one.
compress_to_utf16 = _compress_in_c or compress_to_utf16_python
#: Which compressor ``compress_to_utf16`` is ("c" or "python"), for benchmarks and logs.
COMPRESSOR = "c" if _compress_in_c is not None else "python"


def _join_code_units(parts: list[str]) -> str:
    """Join decoded UTF-16 code units, turning surrogate pairs back into single characters."""
    text = "".join(parts)
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return text


def decompress_from_utf16(payload: str) -> str | None:
    """Inverse of ``compress_to_utf16`` (as JavaScript ``LZString.decompressFromUTF16``)."""
    if payload is None:
        return ""
    if payload == "":
        return None
    values = [ord(ch) - 32 for ch in payload]
    position = 0  # bit position in the stream
    total_bits = len(values) * _BITS_PER_CHAR

    def read(width: int) -> int:
        nonlocal position
        result = 0
        for shift in range(width):
            if position >= total_bits:
                return result
            index, offset = divmod(position, _BITS_PER_CHAR)
            bit = values[index] >> (_BITS_PER_CHAR - 1 - offset) & 1
            result |= bit << shift
            position += 1
        return result

    dictionary: list[str] = ["", "", ""]
    enlarge_in = 4
    num_bits = 3
    first = read(2)
    if first == 0:
        c = chr(read(8))
    elif first == 1:
        c = chr(read(16))
    else:
        return ""
    dictionary.append(c)
    w = c
    result = [c]
    while True:
        if position > total_bits:
            return ""
        code = read(num_bits)
        if code == 0 or code == 1:
            dictionary.append(chr(read(8 if code == 0 else 16)))
            code = len(dictionary) - 1
            enlarge_in -= 1
        elif code == 2:
            return _join_code_units(result)
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1
        if code < len(dictionary) and dictionary[code]:
            entry = dictionary[code]
        elif code == len(dictionary):
            entry = w + w[0]
        else:
            return None
        result.append(entry)
        dictionary.append(w + entry[0])
        enlarge_in -= 1
        w = entry
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1
