/* LZString compressToUTF16 in C: the same algorithm and output as lzstring_utf16.compress_to_utf16.
 *
 * Why: the state of a 40-car race is 15-20 KB of JSON, compressed on every publication; the
 * Python compressor spends about a quarter of a microsecond on each input character, which is
 * most of the update cycle. This module is optional: when it cannot be built, the Python one is
 * used (lzstring_utf16.py documents the algorithm; tests compare the two on many inputs).
 *
 * Phrases are (code of the phrase w, next code unit c) pairs in an open-addressing hash table;
 * single code units have a direct table. Codes are written least-significant bit first into
 * 15-bit output characters, each offset by 32, as JavaScript's lz-string does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    uint16_t *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
    uint32_t value;   /* bits of the character being filled */
    int position;     /* bits in it so far */
} BitWriter;

static int writer_push(BitWriter *out, uint32_t unit)
{
    if (out->length == out->capacity) {
        Py_ssize_t capacity = out->capacity * 2 + 64;
        uint16_t *grown = realloc(out->data, (size_t)capacity * sizeof(uint16_t));
        if (grown == NULL)
            return -1;
        out->data = grown;
        out->capacity = capacity;
    }
    out->data[out->length++] = (uint16_t)unit;
    return 0;
}

/* Write the low `width` bits of `value`, least significant first. */
static int write_bits(BitWriter *out, uint32_t value, int width)
{
    for (int i = 0; i < width; i++) {
        out->value = (out->value << 1) | (value & 1);
        value >>= 1;
        if (out->position == 14) {
            if (writer_push(out, out->value + 32) < 0)
                return -1;
            out->position = 0;
            out->value = 0;
        } else {
            out->position++;
        }
    }
    return 0;
}

typedef struct {
    uint64_t *keys;   /* (code << 16 | unit) + 1; 0 = empty */
    uint32_t *codes;
    size_t mask;
} PhraseTable;

static size_t slot_of(uint64_t key, size_t mask)
{
    key ^= key >> 29;
    key *= 0xbf58476d1ce4e5b9ULL;
    key ^= key >> 32;
    return (size_t)key & mask;
}

/* Compress `count` code units (bytes, or 16-bit units when `wide`); a new str, or NULL with an error. */
static PyObject *compress_units(const void *units, int wide, Py_ssize_t count)
{
    if (count == 0)
        return PyUnicode_FromStringAndSize("", 0);
    size_t slots = 64;
    while (slots < (size_t)count * 2 + 8)
        slots <<= 1;
    PhraseTable table = {calloc(slots, sizeof(uint64_t)), malloc(slots * sizeof(uint32_t)), slots - 1};
    uint32_t *singles = calloc(wide ? 0x10000 : 0x100, sizeof(uint32_t)); /* code + 1; 0 = unseen */
    BitWriter out = {NULL, 0, 0, 0, 0};
    PyObject *result = NULL;
    if (table.keys == NULL || table.codes == NULL || singles == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *narrow_units = units;
    const uint16_t *wide_units = units;
#define UNIT(i) (wide ? (uint32_t)wide_units[i] : (uint32_t)narrow_units[i])

    uint32_t next_code = 4, enlarge_in = 2;
    int num_bits = 2;
    uint32_t w_unit = UNIT(0);
    uint32_t w = 3;
    int fresh = 1; /* w is a single unit not written out yet */
    singles[w_unit] = 3 + 1;

#define ENLARGE()                              \
    do {                                       \
        if (--enlarge_in == 0) {               \
            enlarge_in = 1u << num_bits;       \
            num_bits++;                        \
        }                                      \
    } while (0)
#define WRITE(value, width)                    \
    do {                                       \
        if (write_bits(&out, (value), (width)) < 0) { \
            PyErr_NoMemory();                  \
            goto done;                         \
        }                                      \
    } while (0)
#define WRITE_PHRASE()                         \
    do {                                       \
        if (fresh) {                           \
            if (w_unit < 256) {                \
                WRITE(0, num_bits);            \
                WRITE(w_unit, 8);              \
            } else {                           \
                WRITE(1, num_bits);            \
                WRITE(w_unit, 16);             \
            }                                  \
            ENLARGE();                         \
        } else {                               \
            WRITE(w, num_bits);                \
        }                                      \
        ENLARGE();                             \
    } while (0)

    for (Py_ssize_t i = 1; i < count; i++) {
        uint32_t c = UNIT(i);
        uint64_t key = (((uint64_t)w << 16) | c) + 1;
        size_t slot = slot_of(key, table.mask);
        while (table.keys[slot] != 0 && table.keys[slot] != key)
            slot = (slot + 1) & table.mask;
        if (table.keys[slot] == key) { /* the phrase keeps growing */
            w = table.codes[slot];
            fresh = 0;
            continue;
        }
        WRITE_PHRASE();
        if (singles[c] == 0) {
            singles[c] = next_code + 1;
            w = next_code++;
            fresh = 1;
            w_unit = c;
        } else {
            w = singles[c] - 1;
            fresh = 0;
        }
        table.keys[slot] = key;
        table.codes[slot] = next_code++;
    }
    WRITE_PHRASE();
    WRITE(2, num_bits); /* end of stream */
    /* The last character, zero-padded: JavaScript always emits one more. */
    for (;;) {
        out.value <<= 1;
        if (out.position == 14) {
            if (writer_push(&out, out.value + 32) < 0) {
                PyErr_NoMemory();
                goto done;
            }
            break;
        }
        out.position++;
    }
    if (writer_push(&out, ' ') < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyUnicode_FromKindAndData(PyUnicode_2BYTE_KIND, out.data, out.length);
#undef UNIT
#undef ENLARGE
#undef WRITE
#undef WRITE_PHRASE
done:
    free(table.keys);
    free(table.codes);
    free(singles);
    free(out.data);
    return result;
}

static PyObject *compress_to_utf16(PyObject *module, PyObject *text)
{
    (void)module;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "compress_to_utf16() takes a str");
        return NULL;
    }
    if (PyUnicode_IS_ASCII(text))
        return compress_units(PyUnicode_1BYTE_DATA(text), 0, PyUnicode_GET_LENGTH(text));
    /* As JavaScript sees it: UTF-16 code units, surrogates kept as they are. */
    PyObject *encoded = PyUnicode_AsEncodedString(text, "utf-16-le", "surrogatepass");
    if (encoded == NULL)
        return NULL;
    PyObject *result = compress_units(PyBytes_AS_STRING(encoded), 1, PyBytes_GET_SIZE(encoded) / 2);
    Py_DECREF(encoded);
    return result;
}

static PyMethodDef methods[] = {
    {"compress_to_utf16", compress_to_utf16, METH_O,
     "LZString.compressToUTF16 of a str (output identical to JavaScript's lz-string)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_lzstring",
    "LZString compressToUTF16 in C (see lzstring_utf16 for the Python one and the algorithm).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__lzstring(void)
{
    return PyModule_Create(&module_def);
}
