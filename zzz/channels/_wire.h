/* The channel wire format's hot path in C: a usual client frame's fields, and the JSON of a reply.
 *
 * ``zzz/channels/wire.py`` is the reference: these functions either produce exactly what its
 * ``decode_fields``, ``encode_ok_reply`` and ``dumps`` produce, or answer Py_None ("not the usual
 * case") and the Python function runs instead and decides (errors and their messages included).
 * So only what is plainly usual is handled here:
 *
 * - decoding: a frame that is an object with exactly the keys topic, event, payload, ref and
 *   join_ref (any order, no "meta"), or a 5-element array; topic and event strings, refs strings or
 *   null; nothing before the frame, only JSON whitespace after it. Inside the payload: objects,
 *   arrays, strings without escapes, integers of up to 18 digits, finite decimal numbers, true,
 *   false and null, nested at most ZW_MAX_NEST deep. Anything else (an escape, NaN, a duplicate
 *   envelope key, a number ref, broken JSON) goes to Python. The values are the ones json.loads
 *   makes: same types, same numbers (float() of the same digits), dict keys in the same order,
 *   the last of duplicate keys winning.
 * - encoding: None, bool, int (64-bit), finite float, str without surrogates, and lists, tuples
 *   and dicts with str keys of those, exact types only (a subclass may override what json calls),
 *   at most ZW_MAX_NEST deep; the text is json.dumps(separators=(",", ":"), ensure_ascii=False)'s
 *   (a float is its repr, a control character is escaped as \uXXXX or its short form). A cycle is
 *   cut by the depth limit and left to Python, which names it.
 *
 * No user code runs here (only exact built-in types are read), so nothing changes under the loops.
 */
#ifndef ZZZ_WIRE_H
#define ZZZ_WIRE_H

#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_ustr.h"

#define ZW_MAX_NEST 64
#define ZW_BAIL 0 /* not the usual case: no exception set, Python decides */
#define ZW_OK 1
#define ZW_ERR (-1) /* an exception is set (memory) */

/* -- decoding ------------------------------------------------------------------------------------ */

typedef struct {
    PyObject *text;
    int kind;
    const void *data;
    Py_ssize_t n;
    Py_ssize_t i;
} zw_src;

#define ZW_AT(s, j) PyUnicode_READ((s)->kind, (s)->data, (j))

static inline void zw_skip_ws(zw_src *s) {
    while (s->i < s->n) {
        Py_UCS4 c = ZW_AT(s, s->i);
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
        s->i++;
    }
}

/* At a '"': the end of a string without escapes or control characters (the index of its closing
 * quote), or -1 when it has one of those or does not end. */
static inline Py_ssize_t zw_plain_string_end(zw_src *s) {
    Py_ssize_t j = s->i + 1;
    if (s->kind == PyUnicode_1BYTE_KIND) {
        const unsigned char *p = (const unsigned char *)s->data;
        for (; j < s->n; j++) {
            unsigned char c = p[j];
            if (c == '"') return j;
            if (c == '\\' || c < 0x20) return -1;
        }
        return -1;
    }
    for (; j < s->n; j++) {
        Py_UCS4 c = ZW_AT(s, j);
        if (c == '"') return j;
        if (c == '\\' || c < 0x20) return -1;
    }
    return -1;
}

static int zw_string(zw_src *s, PyObject **out) {
    Py_ssize_t end = zw_plain_string_end(s);
    if (end < 0) return ZW_BAIL;
    *out = PyUnicode_Substring(s->text, s->i + 1, end);
    if (*out == NULL) return ZW_ERR;
    s->i = end + 1;
    return ZW_OK;
}

/* Names: the strings that come back frame after frame (object keys, topics, events, join refs).
 * Each short ASCII one is kept in a small table, one slot per hash of its characters, so a frame
 * that repeats it gets the same str again: no new object, and its hash (which the dict that holds
 * it or the lookup of a topic needs) is computed once, not per frame. A slot holds the last name
 * that hashed to it, so the table never grows (ZW_NAME_SLOTS strs of at most ZW_NAME_MAX
 * characters) and names that come and go only cost the str they would have cost anyway. The
 * values are the ones zw_string makes: equal strs; only their identity is shared. */
#define ZW_NAME_SLOTS 512
#define ZW_NAME_MAX 40
static PyObject *zw_names[ZW_NAME_SLOTS];

static int zw_name(zw_src *s, PyObject **out) {
    Py_ssize_t end = zw_plain_string_end(s), len, k;
    const unsigned char *p;
    PyObject *name;
    uint64_t h, high = 0;
    if (end < 0) return ZW_BAIL;
    len = end - s->i - 1;
    h = 0xcbf29ce484222325ULL ^ (uint64_t)len;
    if (s->kind != PyUnicode_1BYTE_KIND || len > ZW_NAME_MAX) return zw_string(s, out);
    p = (const unsigned char *)s->data + s->i + 1;
    for (k = 0; k + 8 <= len; k += 8) { /* a word at a time, then the last few characters */
        uint64_t w;
        memcpy(&w, p + k, 8);
        high |= w;
        h = (h ^ w) * 0x100000001b3ULL;
    }
    for (; k < len; k++) {
        high |= p[k];
        h = (h ^ p[k]) * 0x100000001b3ULL;
    }
    if (high & 0x8080808080808080ULL) return zw_string(s, out); /* Latin-1: not cached */
    h = (h ^ (h >> 29) ^ (h >> 47)) & (ZW_NAME_SLOTS - 1);
    name = zw_names[h];
    if (name == NULL || PyUnicode_GET_LENGTH(name) != len || memcmp(PyUnicode_DATA(name), p, (size_t)len) != 0) {
        name = PyUnicode_New(len, 127);
        if (name == NULL) return ZW_ERR;
        memcpy(PyUnicode_DATA(name), p, (size_t)len);
        if (PyObject_Hash(name) == -1) { /* cannot fail for a str; kept for form */
            Py_DECREF(name);
            return ZW_ERR;
        }
        Py_XSETREF(zw_names[h], name);
    }
    *out = Py_NewRef(name);
    s->i = end + 1;
    return ZW_OK;
}

static int zw_number(zw_src *s, PyObject **out) {
    Py_ssize_t start = s->i, j = s->i, digits = 0;
    int is_float = 0;
    long long v = 0;
    char buf[64];
    if (j < s->n && ZW_AT(s, j) == '-') j++;
    if (j >= s->n) return ZW_BAIL;
    if (ZW_AT(s, j) == '0') {
        j++;
        if (j < s->n && ZW_AT(s, j) >= '0' && ZW_AT(s, j) <= '9') return ZW_BAIL; /* 01: broken */
        digits = 1;
    } else {
        for (; j < s->n; j++) {
            Py_UCS4 c = ZW_AT(s, j);
            if (c < '0' || c > '9') break;
            v = v * 10 + (long long)(c - '0');
            if (++digits > 18) return ZW_BAIL; /* big integers: Python */
        }
        if (digits == 0) return ZW_BAIL; /* '-' alone, -Infinity */
    }
    if (j < s->n && ZW_AT(s, j) == '.') {
        Py_ssize_t k = ++j;
        while (j < s->n && ZW_AT(s, j) >= '0' && ZW_AT(s, j) <= '9') j++;
        if (j == k) return ZW_BAIL;
        is_float = 1;
    }
    if (j < s->n && (ZW_AT(s, j) == 'e' || ZW_AT(s, j) == 'E')) {
        Py_ssize_t k;
        j++;
        if (j < s->n && (ZW_AT(s, j) == '+' || ZW_AT(s, j) == '-')) j++;
        k = j;
        while (j < s->n && ZW_AT(s, j) >= '0' && ZW_AT(s, j) <= '9') j++;
        if (j == k) return ZW_BAIL;
        is_float = 1;
    }
    if (is_float) {
        double d;
        Py_ssize_t m;
        if (j - start >= (Py_ssize_t)sizeof(buf)) return ZW_BAIL;
        for (m = start; m < j; m++) buf[m - start] = (char)ZW_AT(s, m);
        buf[j - start] = '\0';
        d = PyOS_string_to_double(buf, NULL, NULL);
        if (d == -1.0 && PyErr_Occurred()) return ZW_ERR;
        *out = PyFloat_FromDouble(d);
    } else {
        *out = PyLong_FromLongLong(ZW_AT(s, start) == '-' ? -v : v);
    }
    if (*out == NULL) return ZW_ERR;
    s->i = j;
    return ZW_OK;
}

static inline int zw_word(zw_src *s, const char *word, Py_ssize_t len) {
    Py_ssize_t k;
    if (s->i + len > s->n) return 0;
    for (k = 0; k < len; k++)
        if (ZW_AT(s, s->i + k) != (Py_UCS4)(unsigned char)word[k]) return 0;
    s->i += len;
    return 1;
}

static int zw_value(zw_src *s, PyObject **out, int depth);

static int zw_object(zw_src *s, PyObject **out, int depth) {
    PyObject *dict = PyDict_New();
    int r;
    if (dict == NULL) return ZW_ERR;
    s->i++; /* '{' */
    zw_skip_ws(s);
    if (s->i < s->n && ZW_AT(s, s->i) == '}') {
        s->i++;
        *out = dict;
        return ZW_OK;
    }
    for (;;) {
        PyObject *key, *value;
        r = ZW_BAIL;
        if (s->i >= s->n || ZW_AT(s, s->i) != '"') goto fail;
        if ((r = zw_name(s, &key)) != ZW_OK) goto fail;
        zw_skip_ws(s);
        if (s->i >= s->n || ZW_AT(s, s->i) != ':') {
            Py_DECREF(key);
            r = ZW_BAIL;
            goto fail;
        }
        s->i++;
        zw_skip_ws(s);
        if ((r = zw_value(s, &value, depth + 1)) != ZW_OK) {
            Py_DECREF(key);
            goto fail;
        }
        r = PyDict_SetItem(dict, key, value) < 0 ? ZW_ERR : ZW_OK;
        Py_DECREF(key);
        Py_DECREF(value);
        if (r != ZW_OK) goto fail;
        zw_skip_ws(s);
        r = ZW_BAIL;
        if (s->i >= s->n) goto fail;
        if (ZW_AT(s, s->i) == '}') {
            s->i++;
            *out = dict;
            return ZW_OK;
        }
        if (ZW_AT(s, s->i) != ',') goto fail;
        s->i++;
        zw_skip_ws(s);
    }
fail:
    Py_DECREF(dict);
    return r;
}

static int zw_array(zw_src *s, PyObject **out, int depth) {
    PyObject *list = PyList_New(0);
    int r;
    if (list == NULL) return ZW_ERR;
    s->i++; /* '[' */
    zw_skip_ws(s);
    if (s->i < s->n && ZW_AT(s, s->i) == ']') {
        s->i++;
        *out = list;
        return ZW_OK;
    }
    for (;;) {
        PyObject *value;
        r = zw_value(s, &value, depth + 1);
        if (r != ZW_OK) goto fail;
        r = PyList_Append(list, value) < 0 ? ZW_ERR : ZW_OK;
        Py_DECREF(value);
        if (r != ZW_OK) goto fail;
        zw_skip_ws(s);
        r = ZW_BAIL;
        if (s->i >= s->n) goto fail;
        if (ZW_AT(s, s->i) == ']') {
            s->i++;
            *out = list;
            return ZW_OK;
        }
        if (ZW_AT(s, s->i) != ',') goto fail;
        s->i++;
        zw_skip_ws(s);
    }
fail:
    Py_DECREF(list);
    return r;
}

/* One JSON value at s->i (no whitespace before it). */
static int zw_value(zw_src *s, PyObject **out, int depth) {
    Py_UCS4 c;
    if (depth > ZW_MAX_NEST || s->i >= s->n) return ZW_BAIL;
    c = ZW_AT(s, s->i);
    switch (c) {
    case '"':
        return zw_string(s, out);
    case '{':
        return zw_object(s, out, depth);
    case '[':
        return zw_array(s, out, depth);
    case 't':
        if (!zw_word(s, "true", 4)) return ZW_BAIL;
        *out = Py_NewRef(Py_True);
        return ZW_OK;
    case 'f':
        if (!zw_word(s, "false", 5)) return ZW_BAIL;
        *out = Py_NewRef(Py_False);
        return ZW_OK;
    case 'n':
        if (!zw_word(s, "null", 4)) return ZW_BAIL;
        *out = Py_NewRef(Py_None);
        return ZW_OK;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return zw_number(s, out);
        return ZW_BAIL;
    }
}

/* A ref: a string without escapes, or null (as None). A join ref repeats (a name); a ref does not. */
static int zw_ref(zw_src *s, PyObject **out, int slot) {
    if (s->i < s->n && ZW_AT(s, s->i) == '"') return slot == 4 ? zw_name(s, out) : zw_string(s, out);
    if (zw_word(s, "null", 4)) {
        *out = Py_NewRef(Py_None);
        return ZW_OK;
    }
    return ZW_BAIL;
}

static int zw_topic_or_event(zw_src *s, PyObject **out) {
    if (s->i < s->n && ZW_AT(s, s->i) == '"') return zw_name(s, out);
    return ZW_BAIL;
}

/* Which envelope key the plain string at s->i is (0-4: topic, event, payload, ref, join_ref), -1
 * for any other; s->i moves past it. */
static int zw_envelope_key(zw_src *s) {
    static const char *names[5] = {"topic", "event", "payload", "ref", "join_ref"};
    static const Py_ssize_t lengths[5] = {5, 5, 7, 3, 8};
    Py_ssize_t end = zw_plain_string_end(s), len;
    int k;
    if (end < 0) return -1;
    len = end - s->i - 1;
    for (k = 0; k < 5; k++) {
        Py_ssize_t m;
        if (lengths[k] != len) continue;
        if (s->kind == PyUnicode_1BYTE_KIND) {
            if (memcmp((const char *)s->data + s->i + 1, names[k], (size_t)len) != 0) continue;
        } else {
            for (m = 0; m < len; m++)
                if (ZW_AT(s, s->i + 1 + m) != (Py_UCS4)(unsigned char)names[k][m]) break;
            if (m != len) continue;
        }
        s->i = end + 1;
        return k;
    }
    return -1;
}

/* The fields of a usual client frame as wire.decode_fields returns them, or Py_None. */
static PyObject *zw_decode_fields(PyObject *text) {
    zw_src s;
    PyObject *f[5] = {NULL, NULL, NULL, NULL, NULL}; /* topic, event, payload, ref, join_ref */
    PyObject *result = NULL;
    int array_form, r = ZW_BAIL, k;
    if (!PyUnicode_CheckExact(text)) Py_RETURN_NONE;
    s.text = text;
    s.kind = PyUnicode_KIND(text);
    s.data = PyUnicode_DATA(text);
    s.n = PyUnicode_GET_LENGTH(text);
    s.i = 0;
    if (s.n < 2) Py_RETURN_NONE;
    array_form = ZW_AT(&s, 0) == '[';
    if (array_form) {
        /* [join_ref, ref, topic, event, payload] */
        static const int order[5] = {4, 3, 0, 1, 2};
        s.i = 1;
        for (k = 0; k < 5; k++) {
            int slot = order[k];
            zw_skip_ws(&s);
            if (slot >= 3) r = zw_ref(&s, &f[slot], slot);
            else if (slot == 2) r = zw_value(&s, &f[slot], 2);
            else r = zw_topic_or_event(&s, &f[slot]);
            if (r != ZW_OK) goto done;
            zw_skip_ws(&s);
            r = ZW_BAIL;
            if (s.i >= s.n || ZW_AT(&s, s.i) != (k == 4 ? ']' : ',')) goto done;
            s.i++;
        }
    } else if (ZW_AT(&s, 0) == '{') {
        s.i = 1;
        for (k = 0; k < 5; k++) {
            int slot;
            zw_skip_ws(&s);
            r = ZW_BAIL;
            if (s.i >= s.n || ZW_AT(&s, s.i) != '"') goto done;
            slot = zw_envelope_key(&s);
            if (slot < 0 || f[slot] != NULL) goto done; /* meta, another key, a duplicate */
            zw_skip_ws(&s);
            if (s.i >= s.n || ZW_AT(&s, s.i) != ':') goto done;
            s.i++;
            zw_skip_ws(&s);
            if (slot >= 3) r = zw_ref(&s, &f[slot], slot);
            else if (slot == 2) r = zw_value(&s, &f[slot], 2);
            else r = zw_topic_or_event(&s, &f[slot]);
            if (r != ZW_OK) goto done;
            zw_skip_ws(&s);
            r = ZW_BAIL;
            if (s.i >= s.n || ZW_AT(&s, s.i) != (k == 4 ? '}' : ',')) goto done;
            s.i++;
        }
    } else {
        Py_RETURN_NONE;
    }
    zw_skip_ws(&s);
    r = ZW_BAIL;
    if (s.i != s.n) goto done;
    if (f[2] == Py_None) {
        Py_DECREF(f[2]);
        f[2] = PyDict_New();
        if (f[2] == NULL) {
            r = ZW_ERR;
            goto done;
        }
    }
    result = PyTuple_New(7);
    if (result == NULL) {
        r = ZW_ERR;
        goto done;
    }
    for (k = 0; k < 5; k++) {
        PyTuple_SET_ITEM(result, k, f[k]);
        f[k] = NULL;
    }
    PyTuple_SET_ITEM(result, 5, Py_NewRef(array_form ? Py_True : Py_False));
    PyTuple_SET_ITEM(result, 6, Py_NewRef(Py_None));
    return result;
done:
    for (k = 0; k < 5; k++) Py_XDECREF(f[k]);
    if (r == ZW_ERR) return NULL;
    Py_RETURN_NONE;
}

/* -- encoding ------------------------------------------------------------------------------------ */

typedef struct {
    char *p;
    Py_ssize_t n, cap;
    int ascii;
    char small[512];
} zw_buf;

static inline void zw_buf_init(zw_buf *b) {
    b->p = b->small;
    b->n = 0;
    b->cap = (Py_ssize_t)sizeof(b->small);
    b->ascii = 1;
}

static inline void zw_buf_free(zw_buf *b) {
    if (b->p != b->small) PyMem_Free(b->p);
}

static int zw_grow(zw_buf *b, Py_ssize_t more) {
    Py_ssize_t cap = b->cap;
    char *p;
    while (cap - b->n < more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return ZW_ERR;
        }
        cap *= 2;
    }
    if (b->p == b->small) {
        p = (char *)PyMem_Malloc((size_t)cap);
        if (p != NULL) memcpy(p, b->small, (size_t)b->n);
    } else {
        p = (char *)PyMem_Realloc(b->p, (size_t)cap);
    }
    if (p == NULL) {
        PyErr_NoMemory();
        return ZW_ERR;
    }
    b->p = p;
    b->cap = cap;
    return ZW_OK;
}

static inline int zw_put(zw_buf *b, const char *src, Py_ssize_t len) {
    if (b->cap - b->n < len && zw_grow(b, len) != ZW_OK) return ZW_ERR;
    memcpy(b->p + b->n, src, (size_t)len);
    b->n += len;
    return ZW_OK;
}

#define ZW_PUTS(b, lit) zw_put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static const char zw_hex[] = "0123456789abcdef";

/* One character below 0x80 into a string's JSON, escaped as json does with ensure_ascii=False. */
static inline char *zw_ascii_char(char *o, unsigned char c) {
    if (c >= 0x20 && c != '"' && c != '\\') {
        *o++ = (char)c;
        return o;
    }
    *o++ = '\\';
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\b': *o++ = 'b'; break;
    case '\f': *o++ = 'f'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    default:
        *o++ = 'u';
        *o++ = '0';
        *o++ = '0';
        *o++ = zw_hex[c >> 4];
        *o++ = zw_hex[c & 0xf];
    }
    return o;
}

static int zw_str(zw_buf *b, PyObject *v) {
    Py_ssize_t len = PyUnicode_GET_LENGTH(v), k;
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    char *o;
    /* At most 6 bytes per character (an escape) and the two quotes. */
    if (len > (PY_SSIZE_T_MAX - 2) / 6) return ZW_BAIL;
    if (b->cap - b->n < 6 * len + 2 && zw_grow(b, 6 * len + 2) != ZW_OK) return ZW_ERR;
    o = b->p + b->n;
    *o++ = '"';
    if (PyUnicode_IS_ASCII(v)) {
        const unsigned char *p = (const unsigned char *)data;
        for (k = 0; k < len; k++) o = zw_ascii_char(o, p[k]);
    } else {
        for (k = 0; k < len; k++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, k);
            if (c < 0x80) {
                o = zw_ascii_char(o, (unsigned char)c);
            } else if (c < 0x800) {
                *o++ = (char)(0xC0 | (c >> 6));
                *o++ = (char)(0x80 | (c & 0x3F));
            } else if (c < 0x10000) {
                if (c >= 0xD800 && c <= 0xDFFF) return ZW_BAIL; /* a lone surrogate: Python escapes it */
                *o++ = (char)(0xE0 | (c >> 12));
                *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
                *o++ = (char)(0x80 | (c & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (c >> 18));
                *o++ = (char)(0x80 | ((c >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
                *o++ = (char)(0x80 | (c & 0x3F));
            }
        }
        b->ascii = 0;
    }
    *o++ = '"';
    b->n = o - b->p;
    return ZW_OK;
}

static int zw_enc(zw_buf *b, PyObject *v, int depth);

static int zw_enc(zw_buf *b, PyObject *v, int depth) {
    int r;
    if (depth > ZW_MAX_NEST) return ZW_BAIL;
    if (v == Py_None) return ZW_PUTS(b, "null");
    if (v == Py_True) return ZW_PUTS(b, "true");
    if (v == Py_False) return ZW_PUTS(b, "false");
    if (PyUnicode_CheckExact(v)) return zw_str(b, v);
    if (PyLong_CheckExact(v)) {
        int overflow;
        char digits[24], *d = digits + sizeof(digits);
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        unsigned long long u;
        if (overflow) return ZW_BAIL;
        if (x == -1 && PyErr_Occurred()) return ZW_ERR;
        u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
        do {
            *--d = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (x < 0) *--d = '-';
        return zw_put(b, d, digits + sizeof(digits) - d);
    }
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        char *text;
        if (!isfinite(d)) return ZW_BAIL; /* NaN, Infinity: Python's spelling */
        text = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL) return ZW_ERR;
        r = zw_put(b, text, (Py_ssize_t)strlen(text));
        PyMem_Free(text);
        return r;
    }
    if (PyDict_CheckExact(v)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        int first = 1;
        if (ZW_PUTS(b, "{") != ZW_OK) return ZW_ERR;
        while (PyDict_Next(v, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key)) return ZW_BAIL; /* json converts or refuses: Python */
            if (!first && ZW_PUTS(b, ",") != ZW_OK) return ZW_ERR;
            first = 0;
            if ((r = zw_str(b, key)) != ZW_OK) return r;
            if (ZW_PUTS(b, ":") != ZW_OK) return ZW_ERR;
            if ((r = zw_enc(b, value, depth + 1)) != ZW_OK) return r;
        }
        return ZW_PUTS(b, "}");
    }
    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        Py_ssize_t k, len = PySequence_Fast_GET_SIZE(v);
        PyObject **items = PySequence_Fast_ITEMS(v);
        if (ZW_PUTS(b, "[") != ZW_OK) return ZW_ERR;
        for (k = 0; k < len; k++) {
            if (k && ZW_PUTS(b, ",") != ZW_OK) return ZW_ERR;
            if ((r = zw_enc(b, items[k], depth + 1)) != ZW_OK) return r;
        }
        return ZW_PUTS(b, "]");
    }
    return ZW_BAIL;
}

/* The buffer as a str (its UTF-8 kept with it when it is not ASCII, for the frame encoder). */
static PyObject *zw_buf_str(zw_buf *b) {
    PyObject *s;
    if (b->ascii) {
        s = PyUnicode_New(b->n, 127);
        if (s != NULL) memcpy(PyUnicode_DATA(s), b->p, (size_t)b->n);
        return s;
    }
    s = PyUnicode_DecodeUTF8(b->p, b->n, "strict");
    if (s != NULL) zzz_ustr_keep_utf8(s, (const unsigned char *)b->p, b->n);
    return s;
}

/* wire.dumps(value), or Py_None. */
static PyObject *zw_dumps(PyObject *value) {
    zw_buf b;
    int r;
    PyObject *s;
    zw_buf_init(&b);
    r = zw_enc(&b, value, 1);
    if (r != ZW_OK) {
        zw_buf_free(&b);
        if (r == ZW_ERR) return NULL;
        Py_RETURN_NONE;
    }
    s = zw_buf_str(&b);
    zw_buf_free(&b);
    return s;
}

/* An ASCII str's characters, or 0 when it is not an exact ASCII str. */
static inline int zw_put_ascii_str(zw_buf *b, PyObject *v, int *r) {
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v)) return 0;
    *r = zw_put(b, (const char *)PyUnicode_DATA(v), PyUnicode_GET_LENGTH(v));
    return 1;
}

/* wire.encode_ok_reply(array_form, topic_json, join_ref_json, ref, response), or Py_None. */
static PyObject *zw_ok_reply(int array_form, PyObject *topic_json, PyObject *join_ref_json, PyObject *ref,
                             PyObject *response) {
    zw_buf b;
    int r = ZW_BAIL;
    Py_ssize_t k, len;
    const unsigned char *rp;
    PyObject *s;
    /* A ref of ASCII letters and digits is quoted as it is (wire.quote's shortcut). */
    if (!PyUnicode_CheckExact(ref) || !PyUnicode_IS_ASCII(ref)) Py_RETURN_NONE;
    len = PyUnicode_GET_LENGTH(ref);
    rp = (const unsigned char *)PyUnicode_DATA(ref);
    if (len == 0) Py_RETURN_NONE;
    for (k = 0; k < len; k++) {
        unsigned char c = rp[k];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) Py_RETURN_NONE;
    }
    zw_buf_init(&b);
#define ZW_TRY(x)                    \
    do {                             \
        if ((r = (x)) != ZW_OK) goto done; \
    } while (0)
#define ZW_ASCII(v)                                   \
    do {                                              \
        if (!zw_put_ascii_str(&b, (v), &r)) {         \
            r = ZW_BAIL;                              \
            goto done;                                \
        }                                             \
        if (r != ZW_OK) goto done;                    \
    } while (0)
    if (array_form) {
        ZW_TRY(ZW_PUTS(&b, "["));
        ZW_ASCII(join_ref_json);
        ZW_TRY(ZW_PUTS(&b, ",\""));
        ZW_TRY(zw_put(&b, (const char *)rp, len));
        ZW_TRY(ZW_PUTS(&b, "\","));
        ZW_ASCII(topic_json);
        ZW_TRY(ZW_PUTS(&b, ",\"phx_reply\",{\"status\":\"ok\",\"response\":"));
        ZW_TRY(zw_enc(&b, response, 3));
        ZW_TRY(ZW_PUTS(&b, "}]"));
    } else {
        ZW_TRY(ZW_PUTS(&b, "{\"topic\":"));
        ZW_ASCII(topic_json);
        ZW_TRY(ZW_PUTS(&b, ",\"event\":\"phx_reply\",\"payload\":{\"status\":\"ok\",\"response\":"));
        ZW_TRY(zw_enc(&b, response, 3));
        ZW_TRY(ZW_PUTS(&b, "},\"ref\":\""));
        ZW_TRY(zw_put(&b, (const char *)rp, len));
        ZW_TRY(ZW_PUTS(&b, "\",\"join_ref\":"));
        ZW_ASCII(join_ref_json);
        ZW_TRY(ZW_PUTS(&b, "}"));
    }
#undef ZW_TRY
#undef ZW_ASCII
    s = zw_buf_str(&b);
    zw_buf_free(&b);
    return s;
done:
    zw_buf_free(&b);
    if (r == ZW_ERR) return NULL;
    Py_RETURN_NONE;
}

#endif /* ZZZ_WIRE_H */
