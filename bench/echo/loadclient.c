/*
 * loadclient.c - WebSocket echo load generator and byte-exact checker for bench/echo.
 *
 * One thread, non-blocking sockets, epoll.  Every client frame is prebuilt and masked once
 * (a small set of "variants" per scenario, each with its own mask key and payload), so the hot
 * loop only writes prebuilt bytes and memcmp()s what comes back: the client stays far cheaper
 * than any Python server it measures.  Every echoed byte is checked: frame headers (FIN, RSV,
 * opcode, no mask, minimal length encoding) and payload content.  Corruption is counted and
 * reported, never fatal, unless framing is lost (then that connection stops and says so).
 *
 * Modes:
 *   rr     N connections, each keeping K messages in flight (K=1: request/response).  After
 *          each read the freed slots are refilled with one writev (--batch B: only once B are
 *          free), so the batches follow the server's own pace.
 *   mixed  like rr, but the variants cycle through sizes 0 B .. 1 MiB, text and binary, with
 *          multi-byte UTF-8 in the text ones; stops after --count messages.
 *   bcast  N connections to a broadcast path; connection 0 sends one text message per round,
 *          the round ends when all N connections (sender included) received it.
 *
 * --raw: the peer is a plain TCP byte echo, not a WebSocket server.  No handshake is made and
 * the "reply" to a frame is the client's own masked frame, byte for byte; the client compares
 * the byte stream against what it sent and counts one reply per complete frame.
 *
 * --deflate: offer permessage-deflate.  If accepted, client frames are compressed (each message
 * on its own, without context takeover - always allowed) and compressed replies are inflated with
 * one persistent inflater per connection before checking.
 *
 * Output: one JSON object on stdout.  Exit status 0 when every reply was correct, 2 when any
 * corruption or protocol error was seen, 1 when the run could not be made at all.
 *
 * Build: cc -O2 -o loadclient loadclient.c -lz     (or -DNO_ZLIB without compression support)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#ifndef NO_ZLIB
#include <zlib.h>
#endif

/* ------------------------------------------------------------------ options */

enum { MODE_RR, MODE_MIXED, MODE_BCAST };

static struct {
    const char *host;
    int port;
    const char *path;
    int mode;
    int conns;
    int inflight;
    size_t size;
    int binary;       /* -1: choose by size (text up to 1 KiB) */
    double duration;
    double warmup;
    long count;       /* mixed: stop after this many messages */
    int raw;
    int deflate;
    double stall;     /* seconds without progress before giving up */
    int batch;        /* refill only when this many slots are free (default 1: after every read) */
} opt = {"127.0.0.1", 0, "/", MODE_RR, 1, 1, 32, -1, 3.0, 0.5, 0, 0, 0, 10.0, 0};

/* ------------------------------------------------------------------ utilities */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Still one JSON object, so the runner can always parse what happened. */
    printf("{\"ok\": false, \"fatal\": true, \"error\": \"");
    for (char *p = msg; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar(*p == '\n' ? ' ' : *p);
    }
    printf("\"}\n");
    fflush(stdout);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    /* xorshift64*: deterministic payloads make every run check the same bytes. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* ------------------------------------------------------------------ SHA-1 and base64 (handshake) */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *data, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *m = xmalloc(total);
    memset(m, 0, total);
    memcpy(m, data, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t n, char *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = 0;
}

/* ------------------------------------------------------------------ payloads and frames */

typedef struct {
    int opcode;           /* 1 text, 2 binary */
    size_t size;          /* payload size */
    unsigned char *plain; /* what the echo must carry */
    unsigned char *frame; /* the complete masked client frame */
    size_t flen;
} variant_t;

static variant_t *vars;
static int nvars;
static size_t max_payload;

/* Text that looks like text (so deflate has something realistic to do): words drawn at random
 * from a small vocabulary; with utf8 set, some words carry 2-, 3- and 4-byte characters. */
static void fill_text(unsigned char *p, size_t n, int utf8) {
    static const char *ascii_words[] = {"the ", "quick ", "brown ", "fox ", "jumps ", "over ",
                                        "lazy ", "dog ", "{\"id\": ", "42, ", "\"name\": ",
                                        "\"zzz\", ", "value ", "message ", "socket ", "frame "};
    static const char *utf8_words[] = {"h\xc3\xa9llo ", "\xe2\x82\xac" "uro ",
                                       "\xf0\x9d\x84\x9e" "clef ", "na\xc3\xafve ",
                                       "\xe6\x97\xa5\xe6\x9c\xac ", "plain "};
    size_t i = 0;
    while (i < n) {
        uint64_t r = rnd();
        const char *w = (utf8 && (r & 3) == 0) ? utf8_words[(r >> 8) % 6] : ascii_words[(r >> 8) % 16];
        size_t wl = strlen(w);
        if (wl > n - i) {
            /* Pad with ASCII so a multi-byte character is never cut. */
            while (i < n) p[i++] = (unsigned char)('a' + (rnd() >> 40) % 26);
            break;
        }
        memcpy(p + i, w, wl);
        i += wl;
    }
}

static void fill_binary(unsigned char *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t r = rnd();
        memcpy(p + i, &r, 8);
    }
    for (; i < n; i++) p[i] = (unsigned char)(rnd() >> 56);
}

static size_t put_header(unsigned char *h, int first_byte, size_t len, int masked) {
    size_t o = 0;
    h[o++] = (unsigned char)first_byte;
    int mbit = masked ? 0x80 : 0;
    if (len < 126) {
        h[o++] = (unsigned char)(mbit | len);
    } else if (len < 65536) {
        h[o++] = (unsigned char)(mbit | 126);
        h[o++] = (unsigned char)(len >> 8);
        h[o++] = (unsigned char)len;
    } else {
        h[o++] = (unsigned char)(mbit | 127);
        for (int i = 7; i >= 0; i--) h[o++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    return o;
}

/* A complete masked frame around `payload`; the mask key varies per frame, as the RFC wants. */
static unsigned char *build_frame(int first_byte, const unsigned char *payload, size_t len, size_t *flen) {
    unsigned char *f = xmalloc(len + 14);
    size_t o = put_header(f, first_byte, len, 1);
    uint32_t key = (uint32_t)(rnd() >> 32) | 0x01010101u; /* never a zero byte: masking really happens */
    unsigned char k[4];
    memcpy(k, &key, 4);
    memcpy(f + o, k, 4);
    o += 4;
    for (size_t i = 0; i < len; i++) f[o + i] = payload[i] ^ k[i & 3];
    *flen = o + len;
    return f;
}

static void make_variant(variant_t *v, int opcode, size_t size, int utf8) {
    v->opcode = opcode;
    v->size = size;
    v->plain = xmalloc(size);
    if (opcode == 1) fill_text(v->plain, size, utf8);
    else fill_binary(v->plain, size);
    v->frame = build_frame(0x80 | opcode, v->plain, size, &v->flen);
    if (size > max_payload) max_payload = size;
}

static const size_t mixed_sizes[] = {0,     1,     2,     31,    32,     125,    126,    127,
                                     128,   1000,  1024,  4095,  4096,   16383,  16384,  65535,
                                     65536, 65537, 100000, 262144, 524287, 1048576, 7,    3000};

static void build_variants(void) {
    if (opt.mode == MODE_MIXED) {
        nvars = (int)(sizeof mixed_sizes / sizeof mixed_sizes[0]);
        vars = xmalloc(sizeof(variant_t) * nvars);
        for (int i = 0; i < nvars; i++) make_variant(&vars[i], (i & 1) ? 2 : 1, mixed_sizes[i], 1);
        return;
    }
    if (opt.mode == MODE_BCAST) {
        /* Built per round (the round number is part of the payload); see bcast_payload(). */
        max_payload = opt.size;
        return;
    }
    int opcode = opt.binary == 1 ? 2 : opt.binary == 0 ? 1 : (opt.size <= 1024 ? 1 : 2);
    nvars = 16;
    vars = xmalloc(sizeof(variant_t) * nvars);
    for (int i = 0; i < nvars; i++) make_variant(&vars[i], opcode, opt.size, 0);
}

/* ------------------------------------------------------------------ permessage-deflate */

static int deflate_on;          /* negotiated */
static int client_wbits = 15;
static char ext_response[256];  /* what the server answered, for the report */

#ifndef NO_ZLIB
/* Replace each variant's frame by a compressed one (RSV1 set).  Each message is compressed by a
 * fresh compressor, so no context takeover is assumed on our side: valid whatever was agreed. */
static void compress_variants(void) {
    for (int i = 0; i < nvars; i++) {
        variant_t *v = &vars[i];
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -client_wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            die("deflateInit2 failed");
        size_t cap = deflateBound(&zs, v->size) + 16;
        unsigned char *out = xmalloc(cap);
        zs.next_in = v->plain;
        zs.avail_in = (uInt)v->size;
        zs.next_out = out;
        zs.avail_out = (uInt)cap;
        if (deflate(&zs, Z_SYNC_FLUSH) != Z_OK) die("deflate failed");
        size_t clen = cap - zs.avail_out;
        deflateEnd(&zs);
        if (clen >= 4 && memcmp(out + clen - 4, "\x00\x00\xff\xff", 4) == 0) clen -= 4;
        free(v->frame);
        v->frame = build_frame(0x80 | 0x40 | v->opcode, out, clen, &v->flen);
        free(out);
    }
}
#endif

/* ------------------------------------------------------------------ connections */

typedef struct conn {
    int fd, id, open;
    /* sending: messages sseq .. slimit-1 are queued; soff bytes of message sseq are written */
    uint64_t sseq, slimit;
    size_t soff;
    unsigned char ctrl[1024]; /* control frames and broadcast messages, sent between data frames */
    size_t clen, coff;
    int want_out;
    /* receiving */
    uint64_t rseq;            /* replies completed */
    unsigned char hdr[14];
    int hlen, hneed;
    int in_frame, fop, ffin, frsv;
    uint64_t flen, fpos;
    int in_msg, mop, mrsv1, mbad_hdr;
    uint64_t moff, mbad;
    unsigned char cpay[128];
    unsigned char *acc;       /* whole-message buffer (deflate, broadcast) */
    size_t acclen, acccap;
    size_t roff;              /* raw mode: offset in the expected frame */
    uint64_t *ts;             /* send time per in-flight message */
    uint64_t tsmask;
    int64_t last_round;
#ifndef NO_ZLIB
    z_stream inf;
    int inf_ready;
#endif
} conn_t;

static conn_t *conns;
static int epfd;

/* stats */
static int measuring, running;
static uint64_t m_msgs, m_bytes, all_msgs, all_bytes_checked;
static uint64_t corrupt_msgs, corrupt_bytes, header_errors, protocol_errors, compressed_replies;
static uint64_t lost_conns;
static char first_error[300];
static uint64_t last_progress;
static uint64_t now_cached;
static double cpu_at_measure_start, cpu_at_stop;

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static void note_error(const char *fmt, ...) {
    if (first_error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_error, sizeof first_error, fmt, ap);
    va_end(ap);
}

/* latency histogram: 16 linear sub-buckets per power of two (about 6 % resolution) */
#define HBUCKETS 1024
static uint64_t hist[HBUCKETS];
static uint64_t hist_n;
static double hist_sum;

static int hidx(uint64_t v) {
    if (v < 16) return (int)v;
    int e = 63 - __builtin_clzll(v);
    return (e - 3) * 16 + (int)((v >> (e - 4)) & 15);
}
static uint64_t hval(int i) {
    if (i < 16) return (uint64_t)i;
    int e = i / 16 + 3;
    return ((uint64_t)16 + (uint64_t)(i % 16)) << (e - 4);
}
static void hadd(uint64_t v) {
    int i = hidx(v);
    if (i >= HBUCKETS) i = HBUCKETS - 1;
    hist[i]++;
    hist_n++;
    hist_sum += (double)v;
}
static double hpct(double p) {
    if (!hist_n) return 0;
    uint64_t want = (uint64_t)(p * (double)hist_n), seen = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += hist[i];
        if (seen > want) return (double)hval(i);
    }
    return 0;
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void conn_lost(conn_t *c, const char *why) {
    if (!c->open) return;
    c->open = 0;
    lost_conns++;
    note_error("connection %d: %s", c->id, why);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

/* Blocking connect and opening handshake; leftover bytes after the response head are returned. */
static size_t handshake(conn_t *c, unsigned char *left, size_t leftcap) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) die("bad host %s", opt.host);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect to %s:%d (connection %d): %s", opt.host, opt.port, c->id, strerror(errno));
    c->fd = fd;
    if (opt.raw) return 0;

    unsigned char keyraw[16];
    for (int i = 0; i < 16; i++) keyraw[i] = (unsigned char)(rnd() >> 56);
    char key[32];
    base64(keyraw, 16, key);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     opt.path, opt.host, opt.port, key,
                     opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    if (write(fd, req, (size_t)n) != n) die("handshake write failed: %s", strerror(errno));

    char resp[8192];
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        if (got == sizeof resp - 1) die("handshake response head too large");
        ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
        if (r <= 0) die("handshake read (connection %d): %s", c->id, r == 0 ? "EOF" : strerror(errno));
        got += (size_t)r;
        resp[got] = 0;
        end = strstr(resp, "\r\n\r\n");
    }
    size_t head = (size_t)(end + 4 - resp);
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(resp, "\r\n");
        if (eol) *eol = 0;
        die("handshake refused (connection %d): %s", c->id, resp);
    }
    /* Sec-WebSocket-Accept must match: a server that gets this wrong is not speaking RFC 6455. */
    char cat[128];
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char dig[20];
    sha1((unsigned char *)cat, strlen(cat), dig);
    char accept[40];
    base64(dig, 20, accept);
    if (!strcasestr(resp, accept)) die("wrong Sec-WebSocket-Accept (connection %d)", c->id);

    char *ext = strcasestr(resp, "\r\nSec-WebSocket-Extensions:");
    int got_deflate = 0;
    if (ext) {
        ext += strlen("\r\nSec-WebSocket-Extensions:");
        while (*ext == ' ') ext++;
        char *eol = strstr(ext, "\r\n");
        size_t l = eol ? (size_t)(eol - ext) : strlen(ext);
        if (c->id == 0) snprintf(ext_response, sizeof ext_response, "%.*s", (int)l, ext);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)l, ext);
        if (strstr(line, "permessage-deflate")) {
            got_deflate = 1;
            char *w = strstr(line, "client_max_window_bits=");
            if (w) {
                int b = atoi(w + strlen("client_max_window_bits="));
                if (c->id == 0) client_wbits = b;
            }
        }
    }
    if (got_deflate && !opt.deflate) die("server answered permessage-deflate that was not offered");
    if (c->id == 0) deflate_on = got_deflate;
    else if (got_deflate != deflate_on) die("connections disagree on permessage-deflate");

    size_t extra = got - head;
    if (extra > leftcap) extra = leftcap;
    memcpy(left, resp + head, extra);
    return extra;
}

static void want_write(conn_t *c, int on) {
    if (c->want_out == on || !c->open) return;
    c->want_out = on;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static inline variant_t *var_of(uint64_t seq) { return &vars[seq % (uint64_t)nvars]; }

/* Write as much of the queue as the socket takes: the rest of a partly written frame, then
 * pending control bytes, then whole frames; all in one writev. */
static void flush(conn_t *c) {
    while (c->open) {
        struct iovec iov[64];
        int cnt = 0;
        uint64_t seq = c->sseq;
        int has_rest = 0, has_ctrl = 0;
        if (c->soff > 0) {
            variant_t *v = var_of(seq);
            iov[cnt].iov_base = v->frame + c->soff;
            iov[cnt++].iov_len = v->flen - c->soff;
            seq++;
            has_rest = 1;
        }
        if (c->coff < c->clen) {
            iov[cnt].iov_base = c->ctrl + c->coff;
            iov[cnt++].iov_len = c->clen - c->coff;
            has_ctrl = 1;
        }
        for (; seq < c->slimit && cnt < 64; seq++) {
            variant_t *v = var_of(seq);
            iov[cnt].iov_base = v->frame;
            iov[cnt++].iov_len = v->flen;
        }
        if (!cnt) break;
        ssize_t n = writev(c->fd, iov, cnt);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) { want_write(c, 1); return; }
            if (errno == EINTR) continue;
            conn_lost(c, strerror(errno));
            return;
        }
        size_t left = (size_t)n;
        if (has_rest) {
            variant_t *v = var_of(c->sseq);
            size_t r = v->flen - c->soff;
            if (left < r) { c->soff += left; continue; }
            left -= r;
            c->soff = 0;
            c->sseq++;
        }
        if (has_ctrl) {
            size_t r = c->clen - c->coff;
            if (left < r) { c->coff += left; continue; }
            left -= r;
            c->coff = c->clen = 0;
        }
        while (left > 0) {
            variant_t *v = var_of(c->sseq);
            if (left < v->flen) { c->soff = left; left = 0; break; }
            left -= v->flen;
            c->sseq++;
        }
    }
    want_write(c, 0);
}

/* Queue one control frame (pong, close) or broadcast message; masked like any client frame. */
static void queue_ctrl(conn_t *c, int first_byte, const unsigned char *p, size_t len) {
    size_t flen;
    unsigned char *f = build_frame(first_byte, p, len, &flen);
    if (c->clen + flen > sizeof c->ctrl) {
        free(f);
        note_error("control queue full on connection %d", c->id);
        return;
    }
    memcpy(c->ctrl + c->clen, f, flen);
    c->clen += flen;
    free(f);
}

static void topup(conn_t *c) {
    if (!c->open || !running) return;
    uint64_t lim = c->rseq + (uint64_t)opt.inflight;
    if (opt.count > 0 && lim > (uint64_t)opt.count) lim = (uint64_t)opt.count;
    if (lim > c->slimit && (lim - c->slimit >= (uint64_t)opt.batch || lim == (uint64_t)opt.count)) {
        for (uint64_t s = c->slimit; s < lim; s++) c->ts[s & c->tsmask] = now_cached;
        c->slimit = lim;
    }
    flush(c);
}

static void reply_done(conn_t *c, size_t bytes) {
    uint64_t seq = c->rseq++;
    all_msgs++;
    all_bytes_checked += bytes;
    last_progress = now_cached;
    if (measuring) {
        m_msgs++;
        m_bytes += bytes;
        hadd(now_cached - c->ts[seq & c->tsmask]);
    }
}

/* ---- checking ---- */

static uint64_t count_diff(const unsigned char *a, const unsigned char *b, size_t n) {
    if (memcmp(a, b, n) == 0) return 0;
    uint64_t d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

/* broadcast state */
static int64_t bc_round = -1;      /* round in progress */
static int64_t bc_first_measured = -1;
static int bc_got;                 /* receivers that have the current round */
static uint64_t bc_start;
static uint64_t bc_rounds_measured;
static unsigned char *bc_payload;  /* expected payload of the current round */

static void bcast_payload(unsigned char *p, int64_t round) {
    /* "round NNNNNNNNNN " then deterministic text that depends on the round */
    char pre[32];
    int n = snprintf(pre, sizeof pre, "round %010lld ", (long long)round);
    uint64_t save = rng_state;
    rng_state = 0x1234567ull + (uint64_t)round * 0x9E3779B97F4A7C15ull;
    if (opt.size <= (size_t)n) {
        memcpy(p, pre, opt.size);
    } else {
        memcpy(p, pre, (size_t)n);
        fill_text(p + n, opt.size - (size_t)n, 0);
    }
    rng_state = save;
}

static void finish_message_acc(conn_t *c) {
    unsigned char *data = c->acc;
    size_t len = c->acclen;
    int bad = c->mbad_hdr;
    uint64_t badbytes = 0;
#ifndef NO_ZLIB
    static unsigned char *scratch;
    static size_t scratch_cap;
    if (c->mrsv1) {
        compressed_replies++;
        if (scratch_cap < max_payload + 1) {
            free(scratch);
            scratch_cap = max_payload + 1;
            scratch = xmalloc(scratch_cap);
        }
        if (c->acclen + 4 > c->acccap) {
            c->acccap = c->acclen + 4;
            c->acc = realloc(c->acc, c->acccap);
        }
        memcpy(c->acc + c->acclen, "\x00\x00\xff\xff", 4);
        c->inf.next_in = c->acc;
        c->inf.avail_in = (uInt)(c->acclen + 4);
        c->inf.next_out = scratch;
        c->inf.avail_out = (uInt)scratch_cap;
        int zr = Z_OK;
        while (c->inf.avail_in > 0 && c->inf.avail_out > 0) {
            zr = inflate(&c->inf, Z_SYNC_FLUSH);
            if (zr == Z_STREAM_END) { inflateReset(&c->inf); continue; }
            if (zr != Z_OK) break;
        }
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            bad = 1;
            protocol_errors++;
            note_error("connection %d: compressed reply does not inflate (zlib %d)", c->id, zr);
        }
        data = scratch;
        len = scratch_cap - c->inf.avail_out;
    }
#endif
    if (opt.mode == MODE_BCAST) {
        long long r = -1;
        if (len >= 16 && memcmp(data, "round ", 6) == 0) r = atoll((const char *)data + 6);
        if (r < 0 || r > bc_round) {
            bad = 1;
            badbytes += len;
        } else {
            unsigned char *exp = bc_payload;
            unsigned char tmp[1024];
            if (r != bc_round) { bcast_payload(tmp, r); exp = tmp; }
            size_t n = len < opt.size ? len : opt.size;
            badbytes += count_diff(data, exp, n) + (len > opt.size ? len - opt.size : opt.size - len);
            if (c->mop != 1) bad = 1;
        }
        if (badbytes) bad = 1;
        if (bad) { corrupt_msgs++; corrupt_bytes += badbytes; }
        all_msgs++;
        all_bytes_checked += len;
        last_progress = now_cached;
        if (r >= 0 && bc_first_measured >= 0 && r >= bc_first_measured && r != c->last_round + 1) {
            protocol_errors++;
            note_error("connection %d: broadcast round %lld after %lld", c->id, r, (long long)c->last_round);
        }
        if (r > c->last_round) c->last_round = r;
        if (r == bc_round) bc_got++;
    } else {
        variant_t *v = var_of(c->rseq);
        size_t n = len < v->size ? len : v->size;
        badbytes = count_diff(data, v->plain, n) + (len > v->size ? len - v->size : v->size - len);
        if (c->mop != v->opcode) bad = 1;
        if (badbytes) bad = 1;
        if (bad) { corrupt_msgs++; corrupt_bytes += badbytes; }
        reply_done(c, len);
    }
    c->acclen = 0;
}

static void finish_message_stream(conn_t *c) {
    variant_t *v = var_of(c->rseq);
    uint64_t badbytes = c->mbad + (c->moff > v->size ? c->moff - v->size : v->size - c->moff);
    if (badbytes || c->mbad_hdr || c->mop != v->opcode) {
        corrupt_msgs++;
        corrupt_bytes += badbytes;
    }
    reply_done(c, c->moff);
}

static int use_acc(void) { return opt.mode == MODE_BCAST || deflate_on; }

static void payload_chunk(conn_t *c, const unsigned char *p, size_t n) {
    if (use_acc()) {
        if (c->acclen + n + 4 > c->acccap) {
            size_t cap = c->acccap ? c->acccap : 4096;
            while (cap < c->acclen + n + 4) cap *= 2;
            c->acc = realloc(c->acc, cap);
            if (!c->acc) die("out of memory");
            c->acccap = cap;
        }
        memcpy(c->acc + c->acclen, p, n);
        c->acclen += n;
        return;
    }
    variant_t *v = var_of(c->rseq);
    if (c->moff < v->size) {
        size_t ok = v->size - c->moff < n ? v->size - c->moff : n;
        c->mbad += count_diff(p, v->plain + c->moff, ok);
    }
    c->moff += n;
}

static void frame_start(conn_t *c) {
    unsigned char *h = c->hdr;
    int op = h[0] & 15, fin = h[0] >> 7, rsv = (h[0] >> 4) & 7, masked = h[1] >> 7;
    uint64_t len = h[1] & 127;
    int minimal = 1;
    if (len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        minimal = len >= 126;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
        minimal = len >= 65536;
    }
    c->fop = op;
    c->ffin = fin;
    c->frsv = rsv;
    c->flen = len;
    c->fpos = 0;
    c->in_frame = 1;
    int hdr_bad = masked || !minimal;
    if (op >= 8) {
        if (op > 10 || !fin || len > 125 || rsv) {
            protocol_errors++;
            note_error("connection %d: malformed control frame (opcode %d, length %llu)", c->id, op,
                       (unsigned long long)len);
            conn_lost(c, "stream desynchronised");
        }
        return;
    }
    /* A length far beyond anything sent means the framing is lost (corrupted header bytes). */
    if (len > max_payload * 2 + 65536 || op > 2) {
        protocol_errors++;
        header_errors++;
        corrupt_msgs++;
        note_error("connection %d: impossible frame (opcode %d, length %llu): framing lost", c->id, op,
                   (unsigned long long)len);
        conn_lost(c, "framing lost after corrupted bytes");
        return;
    }
    if (op == 0) {
        if (!c->in_msg) { hdr_bad = 1; protocol_errors++; note_error("connection %d: continuation without start", c->id); }
        if (rsv) hdr_bad = 1;
    } else {
        if (c->in_msg) {
            hdr_bad = 1;
            protocol_errors++;
            note_error("connection %d: new message inside a fragmented one", c->id);
        }
        c->in_msg = 1;
        c->mop = op;
        c->mrsv1 = (rsv & 4) != 0;
        c->moff = 0;
        c->mbad = 0;
        c->mbad_hdr = 0;
        c->acclen = 0;
        if ((rsv & 4) && !deflate_on) hdr_bad = 1;
        if (rsv & 3) hdr_bad = 1;
    }
    if (hdr_bad) { c->mbad_hdr = 1; header_errors++; }
}

static void frame_end(conn_t *c) {
    c->in_frame = 0;
    c->hlen = 0;
    c->hneed = 2;
    if (c->fop >= 8) {
        if (c->fop == 9) {
            queue_ctrl(c, 0x8A, c->cpay, (size_t)c->flen);
        } else if (c->fop == 8) {
            int code = c->flen >= 2 ? c->cpay[0] << 8 | c->cpay[1] : 1005;
            char why[200];
            snprintf(why, sizeof why, "server sent close code %d '%.*s'", code,
                     c->flen > 2 ? (int)c->flen - 2 : 0, (char *)c->cpay + 2);
            conn_lost(c, why);
        }
        return;
    }
    if (c->ffin) {
        c->in_msg = 0;
        if (use_acc()) finish_message_acc(c);
        else finish_message_stream(c);
    }
}

static void parse(conn_t *c, const unsigned char *p, size_t n) {
    if (opt.raw) {
        /* The echo of our own masked frames: compare against the byte stream we sent. */
        while (n > 0) {
            variant_t *v = var_of(c->rseq);
            size_t take = v->flen - c->roff < n ? v->flen - c->roff : n;
            uint64_t d = count_diff(p, v->frame + c->roff, take);
            if (d) { corrupt_bytes += d; c->mbad = 1; }
            c->roff += take;
            p += take;
            n -= take;
            if (c->roff == v->flen) {
                c->roff = 0;
                if (c->mbad) { corrupt_msgs++; c->mbad = 0; }
                reply_done(c, v->flen);
            }
        }
        return;
    }
    while (n > 0 && c->open) {
        if (!c->in_frame) {
            while (c->hlen < c->hneed && n > 0) { c->hdr[c->hlen++] = *p++; n--; }
            if (c->hlen < c->hneed) return;
            if (c->hneed == 2) {
                int l = c->hdr[1] & 127;
                c->hneed = 2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0);
                if (c->hlen < c->hneed) continue;
            }
            frame_start(c);
            if (!c->open) return;
            if (c->flen == 0) { frame_end(c); continue; }
        }
        size_t take = c->flen - c->fpos < n ? (size_t)(c->flen - c->fpos) : n;
        if (c->fop >= 8) memcpy(c->cpay + c->fpos, p, take);
        else payload_chunk(c, p, take);
        c->fpos += take;
        p += take;
        n -= take;
        if (c->fpos == c->flen) frame_end(c);
    }
}

static unsigned char rbuf[1 << 20];

static void on_readable(conn_t *c) {
    for (int i = 0; i < 16 && c->open; i++) {
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r > 0) {
            parse(c, rbuf, (size_t)r);
            if ((size_t)r < sizeof rbuf) break;
            continue;
        }
        if (r == 0) { conn_lost(c, "server closed the TCP connection"); return; }
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        conn_lost(c, strerror(errno));
        return;
    }
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    fprintf(stderr,
            "usage: loadclient --port P [--host H] [--path /] [--mode rr|mixed|bcast] [--conns N]\n"
            "       [--inflight K] [--size BYTES] [--text|--binary] [--duration S] [--warmup S]\n"
            "       [--count N] [--raw] [--deflate] [--stall S] [--batch B]\n");
    exit(1);
}

static void print_json(double seconds) {
    double rate = seconds > 0 ? (double)m_msgs / seconds : 0;
    int ok = corrupt_msgs == 0 && corrupt_bytes == 0 && header_errors == 0 && protocol_errors == 0 &&
             lost_conns == 0 && !first_error[0];
    printf("{\"ok\": %s, \"mode\": \"%s\", \"conns\": %d, \"inflight\": %d, \"size\": %zu, "
           "\"raw\": %s, \"deflate_offered\": %s, \"deflate\": %s, \"extensions\": \"%s\", "
           "\"seconds\": %.4f, \"messages\": %llu, \"msgs_per_s\": %.1f, \"mbytes_per_s\": %.3f, "
           "\"rtt_mean_us\": %.2f, \"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, "
           "\"checked_messages\": %llu, \"checked_bytes\": %llu, \"corrupt_messages\": %llu, "
           "\"corrupt_bytes\": %llu, \"header_errors\": %llu, \"protocol_errors\": %llu, "
           "\"compressed_replies\": %llu, \"lost_connections\": %llu, \"rounds\": %llu, "
           "\"client_cpu_pct\": %.1f, \"error\": \"",
           ok ? "true" : "false", opt.mode == MODE_RR ? "rr" : opt.mode == MODE_MIXED ? "mixed" : "bcast",
           opt.conns, opt.inflight, opt.size, opt.raw ? "true" : "false", opt.deflate ? "true" : "false",
           deflate_on ? "true" : "false", ext_response, seconds, (unsigned long long)m_msgs, rate,
           seconds > 0 ? (double)m_bytes / seconds / 1e6 : 0, hist_n ? hist_sum / (double)hist_n / 1e3 : 0,
           hpct(0.5) / 1e3, hpct(0.99) / 1e3, (unsigned long long)all_msgs,
           (unsigned long long)all_bytes_checked, (unsigned long long)corrupt_msgs,
           (unsigned long long)corrupt_bytes, (unsigned long long)header_errors,
           (unsigned long long)protocol_errors, (unsigned long long)compressed_replies,
           (unsigned long long)lost_conns, (unsigned long long)bc_rounds_measured,
           seconds > 0 ? 100.0 * (cpu_at_stop - cpu_at_measure_start) / seconds : 0.0);
    for (char *p = first_error; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar((unsigned char)*p < 32 ? ' ' : *p);
    }
    printf("\"}\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--host")) opt.host = NEXT();
        else if (!strcmp(a, "--port")) opt.port = atoi(NEXT());
        else if (!strcmp(a, "--path")) opt.path = NEXT();
        else if (!strcmp(a, "--mode")) {
            const char *m = NEXT();
            opt.mode = !strcmp(m, "rr") ? MODE_RR : !strcmp(m, "mixed") ? MODE_MIXED : !strcmp(m, "bcast") ? MODE_BCAST : -1;
            if (opt.mode < 0) usage();
        } else if (!strcmp(a, "--conns")) opt.conns = atoi(NEXT());
        else if (!strcmp(a, "--inflight")) opt.inflight = atoi(NEXT());
        else if (!strcmp(a, "--size")) opt.size = (size_t)atoll(NEXT());
        else if (!strcmp(a, "--text")) opt.binary = 0;
        else if (!strcmp(a, "--binary")) opt.binary = 1;
        else if (!strcmp(a, "--duration")) opt.duration = atof(NEXT());
        else if (!strcmp(a, "--warmup")) opt.warmup = atof(NEXT());
        else if (!strcmp(a, "--count")) opt.count = atol(NEXT());
        else if (!strcmp(a, "--raw")) opt.raw = 1;
        else if (!strcmp(a, "--deflate")) opt.deflate = 1;
        else if (!strcmp(a, "--stall")) opt.stall = atof(NEXT());
        else if (!strcmp(a, "--batch")) opt.batch = atoi(NEXT());
        else usage();
    }
    if (opt.port <= 0 || opt.conns < 1 || opt.inflight < 1) usage();
    if (opt.batch <= 0) opt.batch = 1;
    if (opt.batch > opt.inflight) opt.batch = opt.inflight;
#ifdef NO_ZLIB
    if (opt.deflate) die("built without zlib: --deflate is not available");
#endif
    if (opt.raw && (opt.deflate || opt.mode == MODE_BCAST)) die("--raw works with rr and mixed only");
    if (opt.mode == MODE_BCAST && (opt.size < 16 || opt.size > 900)) die("broadcast size must be 16..900");

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    build_variants();
    epfd = epoll_create1(0);
    conns = calloc((size_t)opt.conns, sizeof(conn_t));
    uint64_t ring = 1;
    while (ring < (uint64_t)opt.inflight) ring <<= 1;
    static unsigned char left[1 << 16];
    size_t *leftlen = calloc((size_t)opt.conns, sizeof(size_t));
    unsigned char **leftbuf = calloc((size_t)opt.conns, sizeof(unsigned char *));
    for (int i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        c->id = i;
        c->open = 1;
        c->hneed = 2;
        c->last_round = -1;
        c->ts = calloc(ring, sizeof(uint64_t));
        c->tsmask = ring - 1;
        leftlen[i] = handshake(c, left, sizeof left);
        if (leftlen[i]) {
            leftbuf[i] = xmalloc(leftlen[i]);
            memcpy(leftbuf[i], left, leftlen[i]);
        }
#ifndef NO_ZLIB
        if (deflate_on) {
            if (inflateInit2(&c->inf, -15) != Z_OK) die("inflateInit2 failed");
            c->inf_ready = 1;
        }
#endif
        set_nonblock(c->fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    }
#ifndef NO_ZLIB
    if (deflate_on && opt.mode != MODE_BCAST) {
        /* zlib cannot make raw deflate with an 8-bit window; then send uncompressed (allowed). */
        if (client_wbits >= 9 && client_wbits <= 15) compress_variants();
    }
#endif
    now_cached = now_ns();
    for (int i = 0; i < opt.conns; i++)
        if (leftlen[i]) parse(&conns[i], leftbuf[i], leftlen[i]);

    uint64_t t0 = now_cached, t_meas = t0 + (uint64_t)(opt.warmup * 1e9);
    uint64_t t_end = t_meas + (uint64_t)(opt.duration * 1e9), t_meas_real = 0, t_stop = 0;
    last_progress = t0;
    running = 1;
    if (opt.mode == MODE_BCAST) bc_payload = xmalloc(opt.size);
    else
        for (int i = 0; i < opt.conns; i++) topup(&conns[i]);

    uint64_t bc_sync_deadline = 0;
    int bc_sync_tries = 0;
    struct epoll_event evs[1024];
    for (;;) {
        now_cached = now_ns();
        if (!measuring && running && now_cached >= t_meas && (opt.mode != MODE_BCAST || bc_first_measured >= 0)) {
            measuring = 1;
            t_meas_real = now_cached;
            cpu_at_measure_start = cpu_seconds();
            memset(hist, 0, sizeof hist);
            hist_n = 0;
            hist_sum = 0;
        }
        if (running && ((opt.count == 0 && measuring && now_cached >= t_end) ||
                        (opt.count > 0 && all_msgs >= (uint64_t)opt.count))) {
            running = 0;
            t_stop = now_cached;
            cpu_at_stop = cpu_seconds();
        }
        if (opt.mode == MODE_BCAST && running) {
            conn_t *s = &conns[0];
            int start_next = bc_round < 0;
            if (bc_round >= 0 && bc_got == opt.conns) {
                if (bc_first_measured < 0) bc_first_measured = bc_round + 1; /* everyone is registered */
                else if (measuring && bc_round >= bc_first_measured) {
                    bc_rounds_measured++;
                    m_msgs += (uint64_t)opt.conns;
                    m_bytes += (uint64_t)opt.conns * opt.size;
                    hadd(now_cached - bc_start);
                }
                start_next = 1;
            } else if (bc_round >= 0 && bc_first_measured < 0 && now_cached > bc_sync_deadline) {
                /* Not everyone registered yet: try another sync round. */
                if (++bc_sync_tries > 30) die("only %d of %d connections received a broadcast", bc_got, opt.conns);
                start_next = 1;
            }
            if (start_next && s->open) {
                bc_round++;
                bc_got = 0;
                bcast_payload(bc_payload, bc_round);
                queue_ctrl(s, 0x81, bc_payload, opt.size);
                bc_start = now_cached;
                bc_sync_deadline = now_cached + 500000000ull;
                flush(s);
            }
        }
        if (!running) {
            int pending = 0;
            if (opt.mode == MODE_BCAST) pending = bc_got < opt.conns;
            else
                for (int i = 0; i < opt.conns; i++)
                    if (conns[i].open && conns[i].rseq < conns[i].slimit) { pending = 1; break; }
            if (!pending || now_cached - t_stop > 5000000000ull) {
                if (pending) note_error("replies still missing 5 s after the end of the run");
                break;
            }
        }
        int live = 0;
        for (int i = 0; i < opt.conns && !live; i++) live = conns[i].open;
        if (!live) break;
        if (now_cached - last_progress > (uint64_t)(opt.stall * 1e9)) {
            note_error("no progress for %.0f s (server stalled)", opt.stall);
            break;
        }
        int n = epoll_wait(epfd, evs, 1024, 5);
        now_cached = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            if (c->open && (evs[i].events & EPOLLOUT)) flush(c);
            if (opt.mode != MODE_BCAST) topup(c);
            else if (c->open && c->coff < c->clen) flush(c);
        }
    }
    if (!t_stop) cpu_at_stop = cpu_seconds();
    double seconds = measuring ? (double)((t_stop ? t_stop : now_cached) - t_meas_real) / 1e9 : 0;
    if (opt.count > 0) seconds = (double)((t_stop ? t_stop : now_cached) - t0) / 1e9;
    if (opt.count > 0) { m_msgs = all_msgs; m_bytes = all_bytes_checked; }
    print_json(seconds);
    /* A polite goodbye; the servers' close replies are not waited for. */
    for (int i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        if (!c->open) continue;
        if (!opt.raw) {
            set_nonblock(c->fd);
            unsigned char code[2] = {0x03, 0xE8};
            size_t flen;
            unsigned char *f = build_frame(0x88, code, 2, &flen);
            if (write(c->fd, f, flen) < 0) { /* ignored: we are leaving anyway */ }
            free(f);
        }
        close(c->fd);
    }
    int ok = corrupt_msgs == 0 && corrupt_bytes == 0 && header_errors == 0 && protocol_errors == 0 &&
             lost_conns == 0 && !first_error[0];
    return ok ? 0 : 2;
}
