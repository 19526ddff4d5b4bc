"""The previous ``compress_to_utf16`` (string phrases, one dict lookup per character), kept as a slow
reference: the fast codec in ``livetiming.service.lzstring_utf16`` must produce the same output."""
from __future__ import annotations

from array import array

_BITS_PER_CHAR = 15
_CHAR_MASK = (1 << _BITS_PER_CHAR) - 1


def _reverse_table(width: int) -> list[int]:
    table = [0] * (1 << width)
    for value in range(1 << width):
        result = 0
        for bit in range(width):
            if value >> bit & 1:
                result |= 1 << (width - 1 - bit)
        table[value] = result
    return table


_REV16 = _reverse_table(16)


def _reversed_bits(value: int, width: int) -> int:
    """``value``'s lowest ``width`` bits in reverse order (the stream order LZString uses)."""
    if width <= 16:
        return _REV16[value] >> (16 - width)
    return int(format(value, f"0{width}b")[::-1], 2)


def reference_compress_to_utf16(text: str) -> str:
    """Compress ``text`` exactly as JavaScript ``LZString.compressToUTF16`` does."""
    if not text:
        return ""
    if max(text) > "\uffff":
        # JavaScript strings are UTF-16: characters outside the BMP are two code units.
        units = array("H", text.encode("utf-16-le", "surrogatepass"))
        text = "".join(map(chr, units))
    out: list[str] = []
    acc = 0  # pending bits, most significant first
    nbits = 0
    dictionary: dict[str, int] = {}
    to_create: set[str] = set()
    dict_size = 3
    num_bits = 2
    enlarge_in = 2
    rev = _REV16

    def emit_phrase(phrase: str) -> None:
        nonlocal acc, nbits, enlarge_in, num_bits
        if phrase in to_create:
            code = ord(phrase[0])
            if code < 256:
                # marker 0 in num_bits bits, then the 8-bit character
                acc = (acc << (num_bits + 8)) | rev[code] >> 8
            else:
                acc = (acc << num_bits | _reversed_bits(1, num_bits)) << 16 | rev[code]
                nbits += 8
            nbits += num_bits + 8
            enlarge_in -= 1
            if enlarge_in == 0:
                enlarge_in = 1 << num_bits
                num_bits += 1
            to_create.discard(phrase)
        else:
            value = dictionary[phrase]
            if num_bits <= 16:
                acc = acc << num_bits | rev[value] >> (16 - num_bits)
            else:
                acc = acc << num_bits | _reversed_bits(value, num_bits)
            nbits += num_bits
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1

    # First character: always new, becomes the current phrase.
    w = text[0]
    dictionary[w] = dict_size
    dict_size += 1
    to_create.add(w)
    for c in text[1:]:
        wc = w + c
        if wc in dictionary:  # the common case: the phrase keeps growing
            w = wc
            continue
        if c not in dictionary:
            dictionary[c] = dict_size
            dict_size += 1
            to_create.add(c)
        # emit w (inlined emit_phrase for speed; keep the two in step)
        if w in to_create:
            code = ord(w[0])
            if code < 256:
                acc = (acc << (num_bits + 8)) | rev[code] >> 8
                nbits += num_bits + 8
            else:
                acc = (acc << num_bits | _reversed_bits(1, num_bits)) << 16 | rev[code]
                nbits += num_bits + 16
            enlarge_in -= 1
            if enlarge_in == 0:
                enlarge_in = 1 << num_bits
                num_bits += 1
            to_create.discard(w)
        elif num_bits <= 16:
            acc = acc << num_bits | rev[dictionary[w]] >> (16 - num_bits)
            nbits += num_bits
        else:
            acc = acc << num_bits | _reversed_bits(dictionary[w], num_bits)
            nbits += num_bits
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1
        while nbits >= _BITS_PER_CHAR:
            nbits -= _BITS_PER_CHAR
            out.append(chr((acc >> nbits & _CHAR_MASK) + 32))
        acc &= (1 << nbits) - 1
        dictionary[wc] = dict_size
        dict_size += 1
        w = c

    if w:
        emit_phrase(w)
    # end-of-stream marker: value 2 in num_bits bits
    acc = acc << num_bits | _reversed_bits(2, num_bits)
    nbits += num_bits
    while nbits >= _BITS_PER_CHAR:
        nbits -= _BITS_PER_CHAR
        out.append(chr((acc >> nbits & _CHAR_MASK) + 32))
    acc &= (1 << nbits) - 1
    # The JavaScript flush always emits one more character, zero-padded.
    out.append(chr((acc << (_BITS_PER_CHAR - nbits) & _CHAR_MASK) + 32))
    return "".join(out) + " "


