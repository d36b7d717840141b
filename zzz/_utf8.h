/* Incremental UTF-8 validation for zzz._speedups.
 *
 * A 9-state DFA over the well-formed byte sequences of Unicode Table 3-7 (so overlongs,
 * surrogates and code points above U+10FFFF are rejected at the first byte that proves them),
 * stepped with the "shift DFA" trick: each byte's row packs the next state of every state in one
 * 64-bit word, so a step is one load and one shift. Runs of ASCII in the accepting state are
 * skipped 32 bytes at a time (AVX2, chosen at import; AVX-512 on request) or 8 at a time.
 * Rejecting at the same byte as CPython's decoder is what makes this the twin of _purepy.
 */
#ifndef ZZZ_UTF8_H
#define ZZZ_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define ZZZ_UTF8_SIMD 1
#include <immintrin.h>
#endif

/* States are bit offsets into a row; the error state is 0 so that it maps to itself. */
enum {
    ZZZ_UTF8_REJECT = 0,
    ZZZ_UTF8_ACCEPT = 6,
    ZZZ_UTF8_NEED1 = 12,  /* one continuation byte to go */
    ZZZ_UTF8_NEED2 = 18,
    ZZZ_UTF8_NEED3 = 24,
    ZZZ_UTF8_AFTER_E0 = 30, /* A0..BF: no overlong 3-byte forms */
    ZZZ_UTF8_AFTER_ED = 36, /* 80..9F: no surrogates */
    ZZZ_UTF8_AFTER_F0 = 42, /* 90..BF: no overlong 4-byte forms */
    ZZZ_UTF8_AFTER_F4 = 48  /* 80..8F: nothing above U+10FFFF */
};

static uint64_t zzz_utf8_rows[256];

static void zzz_utf8_init_rows(void)
{
    for (int b = 0; b < 256; b++) {
        int cont = b >= 0x80 && b <= 0xBF;
        uint64_t first;
        if (b < 0x80)
            first = ZZZ_UTF8_ACCEPT;
        else if (b >= 0xC2 && b <= 0xDF)
            first = ZZZ_UTF8_NEED1;
        else if (b == 0xE0)
            first = ZZZ_UTF8_AFTER_E0;
        else if (b == 0xED)
            first = ZZZ_UTF8_AFTER_ED;
        else if (b >= 0xE1 && b <= 0xEF)
            first = ZZZ_UTF8_NEED2;
        else if (b == 0xF0)
            first = ZZZ_UTF8_AFTER_F0;
        else if (b >= 0xF1 && b <= 0xF3)
            first = ZZZ_UTF8_NEED3;
        else if (b == 0xF4)
            first = ZZZ_UTF8_AFTER_F4;
        else
            first = ZZZ_UTF8_REJECT;
        uint64_t row = first << ZZZ_UTF8_ACCEPT;
        row |= (uint64_t)(cont ? ZZZ_UTF8_ACCEPT : ZZZ_UTF8_REJECT) << ZZZ_UTF8_NEED1;
        row |= (uint64_t)(cont ? ZZZ_UTF8_NEED1 : ZZZ_UTF8_REJECT) << ZZZ_UTF8_NEED2;
        row |= (uint64_t)(cont ? ZZZ_UTF8_NEED2 : ZZZ_UTF8_REJECT) << ZZZ_UTF8_NEED3;
        row |= (uint64_t)(b >= 0xA0 && b <= 0xBF ? ZZZ_UTF8_NEED1 : ZZZ_UTF8_REJECT) << ZZZ_UTF8_AFTER_E0;
        row |= (uint64_t)(b >= 0x80 && b <= 0x9F ? ZZZ_UTF8_NEED1 : ZZZ_UTF8_REJECT) << ZZZ_UTF8_AFTER_ED;
        row |= (uint64_t)(b >= 0x90 && b <= 0xBF ? ZZZ_UTF8_NEED2 : ZZZ_UTF8_REJECT) << ZZZ_UTF8_AFTER_F0;
        row |= (uint64_t)(b >= 0x80 && b <= 0x8F ? ZZZ_UTF8_NEED2 : ZZZ_UTF8_REJECT) << ZZZ_UTF8_AFTER_F4;
        zzz_utf8_rows[b] = row;
    }
}

/* Length of the leading run of ASCII bytes, 8 bytes at a time. */
static inline size_t zzz_ascii_prefix_words(const unsigned char *p, size_t n)
{
    size_t i = 0;
    uint64_t a, b;
    for (; i + 16 <= n; i += 16) {
        memcpy(&a, p + i, 8);
        memcpy(&b, p + i + 8, 8);
        if ((a | b) & 0x8080808080808080ULL)
            break;
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(&a, p + i, 8);
        if (a & 0x8080808080808080ULL)
            break;
    }
    while (i < n && p[i] < 0x80)
        i++;
    return i;
}

static size_t zzz_ascii_prefix_words_fn(const unsigned char *p, size_t n)
{
    return zzz_ascii_prefix_words(p, n);
}

#ifdef ZZZ_UTF8_SIMD
__attribute__((target("avx2"))) static size_t zzz_ascii_prefix_avx2(const unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(p + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(p + i + 96));
        __m256i o = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
        if (_mm256_movemask_epi8(o))
            break;
    }
    for (; i + 32 <= n; i += 32) {
        unsigned m = (unsigned)_mm256_movemask_epi8(_mm256_loadu_si256((const __m256i *)(p + i)));
        if (m)
            return i + (size_t)__builtin_ctz(m);
    }
    return i + zzz_ascii_prefix_words(p + i, n - i);
}

__attribute__((target("avx512f,avx512bw"))) static size_t
zzz_ascii_prefix_avx512(const unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        __m512i a = _mm512_loadu_si512((const void *)(p + i));
        __m512i b = _mm512_loadu_si512((const void *)(p + i + 64));
        __m512i c = _mm512_loadu_si512((const void *)(p + i + 128));
        __m512i d = _mm512_loadu_si512((const void *)(p + i + 192));
        __m512i o = _mm512_or_si512(_mm512_or_si512(a, b), _mm512_or_si512(c, d));
        if (_mm512_movepi8_mask(o))
            break;
    }
    for (; i + 64 <= n; i += 64) {
        uint64_t m = _mm512_movepi8_mask(_mm512_loadu_si512((const void *)(p + i)));
        if (m)
            return i + (size_t)__builtin_ctzll(m);
    }
    if (i < n) {
        __mmask64 live = ((__mmask64)1 << (n - i)) - 1;
        uint64_t m = _mm512_movepi8_mask(_mm512_maskz_loadu_epi8(live, p + i));
        return m ? i + (size_t)__builtin_ctzll(m) : n;
    }
    return i;
}
#endif

typedef size_t (*zzz_ascii_fn)(const unsigned char *p, size_t n);
static zzz_ascii_fn zzz_ascii_prefix = zzz_ascii_prefix_words_fn;
static const char *zzz_ascii_kernel_name = "word";

/* Same names as zzz_mask_select(); "sse2" uses the word kernel here. */
static const char *zzz_utf8_select(const char *name)
{
    int best = strcmp(name, "best") == 0;
#ifdef ZZZ_UTF8_SIMD
    __builtin_cpu_init();
    /* "best" stops at AVX2: AVX-512 measured no faster here (Zen 4, 1 KiB to 16 MiB) and can lower
     * the clock on some Intel parts, so it is only used when asked for by name. */
    if (strcmp(name, "avx512") == 0 && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512f")) {
        zzz_ascii_prefix = zzz_ascii_prefix_avx512;
        return zzz_ascii_kernel_name = "avx512";
    }
    if ((best || strcmp(name, "avx2") == 0) && __builtin_cpu_supports("avx2")) {
        zzz_ascii_prefix = zzz_ascii_prefix_avx2;
        return zzz_ascii_kernel_name = "avx2";
    }
    if (strcmp(name, "sse2") == 0) {
        zzz_ascii_prefix = zzz_ascii_prefix_words_fn;
        return zzz_ascii_kernel_name = "word";
    }
#endif
    if (best || strcmp(name, "word") == 0) {
        zzz_ascii_prefix = zzz_ascii_prefix_words_fn;
        return zzz_ascii_kernel_name = "word";
    }
    return NULL;
}

/* Whether p[0..n) is all ASCII; small inputs are checked inline, without the indirect call. */
static inline int zzz_is_ascii(const unsigned char *p, size_t n)
{
    if (n < 64) {
        uint64_t acc = 0, w;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, p + i, 8);
            acc |= w;
        }
        for (; i < n; i++)
            acc |= p[i];
        return !(acc & 0x8080808080808080ULL);
    }
    return zzz_ascii_prefix(p, n) == n;
}

/* Advance *state over p[0..n). Return the index of the first byte at which the input stops being
 * a prefix of valid UTF-8 (and leave *state at REJECT), or -1. The state is ACCEPT afterwards
 * iff no sequence is left open. */
static inline ptrdiff_t zzz_utf8_feed(uint32_t *state, const unsigned char *p, size_t n)
{
    uint64_t s = *state;
    size_t i = 0;
    if (s == ZZZ_UTF8_REJECT)
        return 0;
    while (i < n) {
        if (s == ZZZ_UTF8_ACCEPT) {
            if (n - i >= 8) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (!(w & 0x8080808080808080ULL))
                    i += 8 + zzz_ascii_prefix(p + i + 8, n - i - 8);
            }
            while (i < n && p[i] < 0x80)
                i++;
            if (i >= n)
                break;
        }
        size_t start = i;
        uint64_t s0 = s;
        size_t end = n - i > 64 ? i + 64 : n;
        for (; i < end; i++)
            s = zzz_utf8_rows[p[i]] >> (s & 63);
        s &= 63;
        if (s == ZZZ_UTF8_REJECT) {
            /* Replay the block one byte at a time to find where it went wrong. */
            s = s0;
            for (i = start;; i++) {
                s = (zzz_utf8_rows[p[i]] >> (s & 63)) & 63;
                if (s == ZZZ_UTF8_REJECT) {
                    *state = ZZZ_UTF8_REJECT;
                    return (ptrdiff_t)i;
                }
            }
        }
    }
    *state = (uint32_t)s;
    return -1;
}

#endif /* ZZZ_UTF8_H */
