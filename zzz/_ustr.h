/* The UTF-8 bytes a received text message arrived as, kept with the str it decoded to.
 *
 * A CPython str that is not ASCII can carry its own UTF-8 form: PyUnicode_AsUTF8AndSize computes
 * it once and stores it in the object (the ``utf8`` and ``utf8_length`` fields of
 * PyCompactUnicodeObject; unicode_dealloc frees it with PyObject_Free). zzz decodes a text message
 * from bytes it has just validated, so it can store them there at the price of one memcpy: an app
 * that sends the str on (an echo, a relay, a chat room that forwards what it got) then costs no
 * encoding, where encoding non-ASCII text is the most expensive step of a round trip (about 12
 * instructions per byte for text with 4-byte characters, against 0.2 for the copy).
 *
 * Those fields are CPython's, not its limited API: the layout is the same from 3.11 to 3.13 and
 * is used only there, on a build with the GIL; elsewhere both functions do nothing (no cache, no
 * lookup) and zzz encodes as before. Nothing else depends on them: the str is the same str.
 */
#ifndef ZZZ_USTR_H
#define ZZZ_USTR_H

#include <Python.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED) && \
    !defined(Py_LIMITED_API) && !defined(PYPY_VERSION)
#define ZZZ_USTR_CACHE 1
#else
#define ZZZ_USTR_CACHE 0
#endif

/* Give the fresh, compact, non-ASCII str ``s`` the UTF-8 form ``src[0:n]`` (which it decoded
 * from). Does nothing when ``s`` is ASCII (its data is its UTF-8 already), has a form already, or
 * memory is short: the cache is an optimisation only. */
static inline void zzz_ustr_keep_utf8(PyObject *s, const unsigned char *src, Py_ssize_t n) {
#if ZZZ_USTR_CACHE
    PyCompactUnicodeObject *c = (PyCompactUnicodeObject *)s;
    char *copy;
    if (!PyUnicode_IS_COMPACT(s) || PyUnicode_IS_ASCII(s) || c->utf8 != NULL) return;
    copy = (char *)PyObject_Malloc((size_t)n + 1);
    if (copy == NULL) return;
    memcpy(copy, src, (size_t)n);
    copy[n] = '\0';
    c->utf8 = copy;
    c->utf8_length = n;
#else
    (void)s;
    (void)src;
    (void)n;
#endif
}

/* The UTF-8 form ``s`` carries (NULL if none; never computes one), its length in ``*n``. */
static inline const char *zzz_ustr_cached_utf8(PyObject *s, Py_ssize_t *n) {
#if ZZZ_USTR_CACHE
    PyCompactUnicodeObject *c = (PyCompactUnicodeObject *)s;
    if (!PyUnicode_IS_COMPACT(s) || PyUnicode_IS_ASCII(s) || c->utf8 == NULL) return NULL;
    *n = c->utf8_length;
    return c->utf8;
#else
    (void)s;
    (void)n;
    return NULL;
#endif
}

#endif
