/* XOR masking kernels for zzz._speedups (RFC 6455 §5.3).
 *
 * One entry point, zzz_mask(), copies or masks in place a buffer of any length and alignment,
 * starting at any key phase. Buffers of 64 bytes or more go to a kernel chosen once at import
 * (AVX2, else SSE2 on x86-64, AVX-512BW on request; 64-bit words elsewhere). All stores are
 * ordinary stores: the masked payload is read again right away, so it must stay in cache.
 */
#ifndef ZZZ_MASK_H
#define ZZZ_MASK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define ZZZ_X86_SIMD 1
#include <immintrin.h>
#endif

typedef void (*zzz_mask_fn)(unsigned char *dst, const unsigned char *src, size_t n, uint32_t key);

/* The key as a 32-bit word in memory order, rotated so that its first byte is key[phase]. */
static inline uint32_t zzz_key_word(const unsigned char *key, unsigned phase)
{
    unsigned char b[4];
    uint32_t k;
    b[0] = key[phase & 3];
    b[1] = key[(phase + 1) & 3];
    b[2] = key[(phase + 2) & 3];
    b[3] = key[(phase + 3) & 3];
    memcpy(&k, b, 4);
    return k;
}

/* Rotate a key word (memory order) forward by `shift` bytes. */
static inline uint32_t zzz_key_advance(uint32_t k, size_t shift)
{
    unsigned char b[4];
    memcpy(b, &k, 4);
    return zzz_key_word(b, (unsigned)(shift & 3));
}

/* Portable kernel: 8 bytes at a time through memcpy (compilers turn it into plain unaligned
 * loads and stores), then the tail byte by byte. dst == src is allowed, other overlap is not. */
static inline void zzz_mask_words(unsigned char *dst, const unsigned char *src, size_t n, uint32_t k32)
{
    uint64_t k64 = ((uint64_t)k32 << 32) | k32;
    unsigned char kb[4];
    size_t i = 0;
    uint64_t a, b, c, d;
    for (; i + 32 <= n; i += 32) {
        memcpy(&a, src + i, 8);
        memcpy(&b, src + i + 8, 8);
        memcpy(&c, src + i + 16, 8);
        memcpy(&d, src + i + 24, 8);
        a ^= k64;
        b ^= k64;
        c ^= k64;
        d ^= k64;
        memcpy(dst + i, &a, 8);
        memcpy(dst + i + 8, &b, 8);
        memcpy(dst + i + 16, &c, 8);
        memcpy(dst + i + 24, &d, 8);
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(&a, src + i, 8);
        a ^= k64;
        memcpy(dst + i, &a, 8);
    }
    memcpy(kb, &k32, 4);
    for (; i < n; i++)
        dst[i] = src[i] ^ kb[i & 3];
}

static void zzz_mask_words_fn(unsigned char *dst, const unsigned char *src, size_t n, uint32_t k32)
{
    zzz_mask_words(dst, src, n, k32);
}

#ifdef ZZZ_X86_SIMD
/* SSE2 is part of x86-64, so this kernel needs no feature check. */
static void zzz_mask_sse2(unsigned char *dst, const unsigned char *src, size_t n, uint32_t k32)
{
    __m128i k = _mm_set1_epi32((int)k32);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, k));
        _mm_storeu_si128((__m128i *)(dst + i + 16), _mm_xor_si128(b, k));
        _mm_storeu_si128((__m128i *)(dst + i + 32), _mm_xor_si128(c, k));
        _mm_storeu_si128((__m128i *)(dst + i + 48), _mm_xor_si128(d, k));
    }
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i)), k));
    zzz_mask_words(dst + i, src + i, n - i, k32);
}

__attribute__((target("avx2"))) static void
zzz_mask_avx2(unsigned char *dst, const unsigned char *src, size_t n, uint32_t k32)
{
    __m256i k = _mm256_set1_epi32((int)k32);
    size_t i = 0;
    if (n >= 512) {
        /* Align the stores: a store that splits two cache lines costs two. */
        size_t head = (size_t)(-(uintptr_t)dst) & 31;
        zzz_mask_words(dst, src, head, k32);
        k32 = zzz_key_advance(k32, head);
        k = _mm256_set1_epi32((int)k32);
        dst += head;
        src += head;
        n -= head;
    }
    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, k));
        _mm256_storeu_si256((__m256i *)(dst + i + 32), _mm256_xor_si256(b, k));
        _mm256_storeu_si256((__m256i *)(dst + i + 64), _mm256_xor_si256(c, k));
        _mm256_storeu_si256((__m256i *)(dst + i + 96), _mm256_xor_si256(d, k));
    }
    for (; i + 32 <= n; i += 32)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(src + i)), k));
    if (i + 16 <= n) {
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i)),
                                       _mm256_castsi256_si128(k)));
        i += 16;
    }
    zzz_mask_words(dst + i, src + i, n - i, k32);
}

__attribute__((target("avx512f,avx512bw"))) static void
zzz_mask_avx512(unsigned char *dst, const unsigned char *src, size_t n, uint32_t k32)
{
    __m512i k = _mm512_set1_epi32((int)k32);
    size_t i = 0;
    if (n >= 1024) {
        size_t head = (size_t)(-(uintptr_t)dst) & 63;
        if (head) {
            __mmask64 m = ((__mmask64)1 << head) - 1;
            _mm512_mask_storeu_epi8(dst, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src), k));
            k32 = zzz_key_advance(k32, head);
            k = _mm512_set1_epi32((int)k32);
            dst += head;
            src += head;
            n -= head;
        }
    }
    for (; i + 256 <= n; i += 256) {
        __m512i a = _mm512_loadu_si512((const void *)(src + i));
        __m512i b = _mm512_loadu_si512((const void *)(src + i + 64));
        __m512i c = _mm512_loadu_si512((const void *)(src + i + 128));
        __m512i d = _mm512_loadu_si512((const void *)(src + i + 192));
        _mm512_storeu_si512((void *)(dst + i), _mm512_xor_si512(a, k));
        _mm512_storeu_si512((void *)(dst + i + 64), _mm512_xor_si512(b, k));
        _mm512_storeu_si512((void *)(dst + i + 128), _mm512_xor_si512(c, k));
        _mm512_storeu_si512((void *)(dst + i + 192), _mm512_xor_si512(d, k));
    }
    for (; i + 64 <= n; i += 64)
        _mm512_storeu_si512((void *)(dst + i),
                            _mm512_xor_si512(_mm512_loadu_si512((const void *)(src + i)), k));
    if (i < n) {
        /* Masked load and store touch only the tail bytes, so in place is safe. */
        __mmask64 m = (n - i == 64) ? ~(__mmask64)0 : (((__mmask64)1 << (n - i)) - 1);
        _mm512_mask_storeu_epi8(dst + i, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + i), k));
    }
}
#endif /* ZZZ_X86_SIMD */

static zzz_mask_fn zzz_mask_kernel = zzz_mask_words_fn;
static const char *zzz_mask_kernel_name = "word";

/* Select a kernel by name ("best", "avx512", "avx2", "sse2", "word"); return the name chosen,
 * or NULL if the CPU cannot run the one asked for. */
static const char *zzz_mask_select(const char *name)
{
    int best = strcmp(name, "best") == 0;
#ifdef ZZZ_X86_SIMD
    __builtin_cpu_init();
    /* "best" stops at AVX2: AVX-512 measured no faster here (Zen 4, 1 KiB to 16 MiB) and can lower
     * the clock on some Intel parts, so it is only used when asked for by name. */
    if (strcmp(name, "avx512") == 0 && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512f")) {
        zzz_mask_kernel = zzz_mask_avx512;
        return zzz_mask_kernel_name = "avx512";
    }
    if ((best || strcmp(name, "avx2") == 0) && __builtin_cpu_supports("avx2")) {
        zzz_mask_kernel = zzz_mask_avx2;
        return zzz_mask_kernel_name = "avx2";
    }
    if (best || strcmp(name, "sse2") == 0) {
        zzz_mask_kernel = zzz_mask_sse2;
        return zzz_mask_kernel_name = "sse2";
    }
#endif
    if (best || strcmp(name, "word") == 0) {
        zzz_mask_kernel = zzz_mask_words_fn;
        return zzz_mask_kernel_name = "word";
    }
    return NULL;
}

/* dst[i] = src[i] ^ key[(phase + i) % 4] for i < n; dst == src masks in place. */
static inline void zzz_mask(unsigned char *dst, const unsigned char *src, size_t n,
                            const unsigned char *key, size_t phase)
{
    uint32_t k = zzz_key_word(key, (unsigned)(phase & 3));
    if (n < 64)
        zzz_mask_words(dst, src, n, k);
    else
        zzz_mask_kernel(dst, src, n, k);
}

#endif /* ZZZ_MASK_H */
