/*
 * loadclient.c - WebSocket load generator and byte-exact checker for bench/echo.
 *
 * One thread, non-blocking sockets, epoll.  Every client frame of the echo modes is prebuilt and
 * masked once (a small set of "variants" per scenario, each with its own mask key and payload), so
 * the hot loop only writes prebuilt bytes and memcmp()s what comes back: the client stays far
 * cheaper than any Python server it measures.  Every reply is checked: frame headers (FIN, RSV,
 * opcode, no mask, minimal length encoding) and payload content.  Corruption is counted and
 * reported, never fatal, unless framing is lost (then that connection stops and says so).
 *
 * Modes:
 *   rr     N connections, each keeping K messages in flight (K=1: request/response).  After
 *          each read the freed slots are refilled with one writev (--batch B: only once B are
 *          free), so the batches follow the server's own pace.
 *   mixed  like rr, but the variants cycle through sizes 0 B .. 1 MiB, text and binary, with
 *          multi-byte UTF-8 in the text ones; stops after --count messages.
 *   bcast  N connections to a broadcast path; connection 0 (the publisher) sends --burst text
 *          messages per round, back to back in one writev; the round ends when all N connections
 *          (the publisher included) received every message of it, in order; then the next round.
 *          Every message carries its index, and each receiver must see the indices one after the
 *          other from the first measured round on: a lost, repeated or reordered delivery is an
 *          error, as is a wrong byte.
 *
 * Wires (--wire), the application protocol inside the WebSocket messages:
 *   ws        plain messages (the echo and broadcast servers).
 *   phoenix   Phoenix Channels, JSON object form (vsn 1): each connection joins --topic
 *             (phx_join, waits for its ok phx_reply); bcast: the publisher pushes "pub" events
 *             {"seq": i, "body": ...}, every subscriber must receive them as "msg" broadcasts on
 *             the topic; rr: each request is a push of "echo" whose phx_reply (ok, same ref,
 *             response = the payload) is the reply.
 *   socketio  Engine.IO v4 / Socket.IO v5 over WebSocket (path /socket.io/?EIO=4&transport=
 *             websocket): waits for the open packet 0{...}, connects to the default namespace
 *             (40 -> 40{...}), answers pings (2 -> 3); bcast: the publisher emits 42["pub",P],
 *             every connection must receive 42["msg",P]; rr: 42<id>["echo",P] is answered by the
 *             ack 43<id>[P].
 * JSON is compared in a canonical form (whitespace dropped, string escapes decoded and re-escaped
 * one way), so servers may encode differently (\u00e9 or raw UTF-8, ", " or ","), but every value,
 * key and character must be the one sent, in the same order.
 *
 * Connections are opened at a bounded pace: at most --connect-window handshakes (TCP, HTTP
 * upgrade and the wire's own join/connect) are in progress at once, so the server's accept queue
 * never holds more than that, far below any listen backlog; --connect-rate caps new connections
 * per second as well.  The workload starts when every connection is ready.
 *
 * --raw: the peer is a plain TCP byte echo, not a WebSocket server.  No handshake is made and
 * the "reply" to a frame is the client's own masked frame, byte for byte; the client compares
 * the byte stream against what it sent and counts one reply per complete frame.
 *
 * --deflate: offer permessage-deflate.  If accepted, client frames are compressed (each message
 * on its own, without context takeover - always allowed) and compressed replies are inflated with
 * one persistent inflater per connection before checking.  (In bcast mode the publisher sends
 * uncompressed, which is always allowed; the receivers inflate what the server compressed.)
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
enum { WIRE_WS, WIRE_PHX, WIRE_SIO };

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
    int wire;
    int burst;        /* bcast: messages per round */
    int min_rounds;   /* bcast: measure at least this many rounds, whatever the duration */
    int connect_window; /* handshakes in progress at once */
    double connect_rate;  /* new connections per second (0: only the window bounds it) */
    const char *topic;
} opt = {"127.0.0.1", 0, "/", MODE_RR, 1, 1, 32, -1, 3.0, 0.5, 0, 0, 0, 10.0, 0,
         WIRE_WS, 1, 1, 64, 0.0, "bench:fanout"};

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
    if (opt.mode == MODE_BCAST || opt.wire != WIRE_WS) {
        /* Built per message (its index is part of the payload); see bcast_payload() and the
         * wire builders.  JSON wires wrap the payload in an envelope. */
        max_payload = opt.size + 256;
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

enum { ST_IDLE, ST_CONNECTING, ST_HEAD, ST_SETUP, ST_READY };

typedef struct conn {
    int fd, id, open, state;
    /* sending: messages sseq .. slimit-1 are queued; soff bytes of message sseq are written */
    uint64_t sseq, slimit;
    size_t soff;
    unsigned char *ctrl;      /* control frames, broadcast and wire messages, sent between data frames */
    size_t clen, coff, ccap;
    int want_out;
    /* opening handshake */
    char key[32];
    char *head;               /* the response head as it arrives */
    size_t headlen;
    /* receiving */
    uint64_t rseq;            /* replies completed */
    unsigned char hdr[14];
    int hlen, hneed;
    int in_frame, fop, ffin, frsv;
    uint64_t flen, fpos;
    int in_msg, mop, mrsv1, mbad_hdr;
    uint64_t moff, mbad;
    unsigned char cpay[128];
    unsigned char *acc;       /* whole-message buffer (deflate, broadcast, JSON wires) */
    size_t acclen, acccap;
    size_t roff;              /* raw mode: offset in the expected frame */
    uint64_t *ts;             /* send time per in-flight message */
    uint64_t tsmask;
    int64_t last_idx;         /* bcast: index of the last message received */
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
static int n_ready, n_started, n_pending; /* connection setup */
static double setup_seconds;

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

static void conn_lost(conn_t *c, const char *why) {
    if (!c->open) return;
    c->open = 0;
    lost_conns++;
    note_error("connection %d: %s", c->id, why);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
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
        /* Prebuilt variants exist only for the plain echo modes; the others queue in ctrl. */
        for (; nvars > 0 && seq < c->slimit && cnt < 64; seq++) {
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

/* Queue one frame (pong, close, broadcast or wire message); masked like any client frame. */
static void queue_ctrl(conn_t *c, int first_byte, const unsigned char *p, size_t len) {
    size_t flen;
    unsigned char *f = build_frame(first_byte, p, len, &flen);
    if (c->coff > 0 && c->coff == c->clen) c->coff = c->clen = 0;
    if (c->clen + flen > c->ccap) {
        if (c->coff > 0) { /* drop what is already written before growing */
            memmove(c->ctrl, c->ctrl + c->coff, c->clen - c->coff);
            c->clen -= c->coff;
            c->coff = 0;
        }
        size_t cap = c->ccap ? c->ccap : 1024;
        while (cap < c->clen + flen) cap *= 2;
        if (cap > (64u << 20)) die("send queue of connection %d over 64 MiB", c->id);
        c->ctrl = realloc(c->ctrl, cap);
        if (!c->ctrl) die("out of memory");
        c->ccap = cap;
    }
    memcpy(c->ctrl + c->clen, f, flen);
    c->clen += flen;
    free(f);
}

static void queue_text(conn_t *c, const char *text, size_t len) {
    queue_ctrl(c, 0x81, (const unsigned char *)text, len);
}

/* ------------------------------------------------------------------ JSON (canonical form) */

/* Canonical JSON: whitespace between tokens dropped, strings with their escapes decoded and
 * written back one way (only '"', '\' and control characters escaped, as \" \\ \u00xx), numbers
 * and literals as written, keys in the order given.  Two encoders that mean the same value in
 * the same key order give the same canonical text; any other difference (a byte of a string,
 * a number, a key, a lost or extra element) remains. */
typedef struct {
    const unsigned char *p, *end;
    char *o, *oend;
    int depth;
} jcur_t;

static int jws(jcur_t *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
    return j->p < j->end;
}
static int jput(jcur_t *j, char ch) {
    if (j->o >= j->oend) return 0;
    *j->o++ = ch;
    return 1;
}
static int jputs(jcur_t *j, const char *s) {
    while (*s)
        if (!jput(j, *s++)) return 0;
    return 1;
}
static int jhex4(const unsigned char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char ch = p[i];
        unsigned d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                   : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : 99;
        if (d > 15) return 0;
        *v = *v << 4 | d;
    }
    return 1;
}
static int jcodepoint(jcur_t *j, unsigned cp) {
    char tmp[8];
    if (cp == '"') return jputs(j, "\\\"");
    if (cp == '\\') return jputs(j, "\\\\");
    if (cp < 0x20) {
        snprintf(tmp, sizeof tmp, "\\u%04x", cp);
        return jputs(j, tmp);
    }
    if (cp < 0x80) return jput(j, (char)cp);
    if (cp < 0x800) return jput(j, (char)(0xC0 | cp >> 6)) && jput(j, (char)(0x80 | (cp & 63)));
    if (cp < 0x10000)
        return jput(j, (char)(0xE0 | cp >> 12)) && jput(j, (char)(0x80 | ((cp >> 6) & 63))) &&
               jput(j, (char)(0x80 | (cp & 63)));
    return jput(j, (char)(0xF0 | cp >> 18)) && jput(j, (char)(0x80 | ((cp >> 12) & 63))) &&
           jput(j, (char)(0x80 | ((cp >> 6) & 63))) && jput(j, (char)(0x80 | (cp & 63)));
}
static int jstr(jcur_t *j) {
    if (j->p >= j->end || *j->p != '"') return 0;
    j->p++;
    if (!jput(j, '"')) return 0;
    while (j->p < j->end) {
        /* A run of plain characters is copied as it is. */
        const unsigned char *run = j->p;
        while (run < j->end && *run >= 0x20 && *run != '"' && *run != '\\') run++;
        size_t rl = (size_t)(run - j->p);
        if (rl) {
            if ((size_t)(j->oend - j->o) < rl) return 0;
            memcpy(j->o, j->p, rl);
            j->o += rl;
            j->p = run;
            if (run >= j->end) return 0;
        }
        unsigned char ch = *j->p++;
        if (ch == '"') return jput(j, '"');
        if (ch < 0x20) return 0;
        if (ch != '\\') {
            if (!jput(j, (char)ch)) return 0;
            continue;
        }
        if (j->p >= j->end) return 0;
        unsigned char e = *j->p++;
        unsigned cp;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = 8; break;
        case 'f': cp = 12; break;
        case 'n': cp = 10; break;
        case 'r': cp = 13; break;
        case 't': cp = 9; break;
        case 'u':
            if (j->end - j->p < 4 || !jhex4(j->p, &cp)) return 0;
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair is one character */
                unsigned lo;
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || !jhex4(j->p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return 0;
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                return 0;
            }
            break;
        default: return 0;
        }
        if (!jcodepoint(j, cp)) return 0;
    }
    return 0;
}
static int jval(jcur_t *j) {
    if (!jws(j) || j->depth > 32) return 0;
    unsigned char ch = *j->p;
    if (ch == '"') return jstr(j);
    if (ch == '{' || ch == '[') {
        unsigned char close = ch == '{' ? '}' : ']';
        j->p++;
        j->depth++;
        if (!jput(j, (char)ch)) return 0;
        if (!jws(j)) return 0;
        if (*j->p == close) { j->p++; j->depth--; return jput(j, (char)close); }
        for (;;) {
            if (ch == '{') {
                if (!jws(j) || !jstr(j) || !jws(j) || *j->p != ':') return 0;
                j->p++;
                if (!jput(j, ':')) return 0;
            }
            if (!jval(j) || !jws(j)) return 0;
            if (*j->p == ',') { j->p++; if (!jput(j, ',')) return 0; continue; }
            if (*j->p == close) { j->p++; j->depth--; return jput(j, (char)close); }
            return 0;
        }
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        int digits = 0;
        while (j->p < j->end && (strchr("-+.eE", *j->p) || (*j->p >= '0' && *j->p <= '9'))) {
            digits += *j->p >= '0' && *j->p <= '9';
            if (!jput(j, (char)*j->p++)) return 0;
        }
        return digits > 0;
    }
    static const char *lits[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(lits[i]);
        if ((size_t)(j->end - j->p) >= l && memcmp(j->p, lits[i], l) == 0) {
            j->p += l;
            return jputs(j, lits[i]);
        }
    }
    return 0;
}

/* The canonical form of the JSON text in[0..n) (one value, nothing after it but whitespace);
 * its length, or -1 when it is not JSON or does not fit. */
static long json_canon(const unsigned char *in, size_t n, char *out, size_t cap) {
    jcur_t j = {in, in + n, out, out + cap, 0};
    if (!jval(&j)) return -1;
    if (jws(&j)) return -1;
    return (long)(j.o - out);
}

/* End of the canonical value starting at p (canonical text: no whitespace, escapes only \" \\ \u). */
static const char *canon_skip(const char *p, const char *end) {
    int depth = 0;
    while (p < end) {
        char ch = *p;
        if (ch == '"') {
            p++;
            for (;;) { /* the closing quote: the next one not escaped */
                const char *q = memchr(p, '"', (size_t)(end - p));
                if (q == NULL) return end;
                const char *b = q;
                while (b > p && b[-1] == '\\') b--;
                p = q + 1;
                if (((q - b) & 1) == 0) break;
            }
            if (!depth) return p;
            continue;
        }
        if (ch == '{' || ch == '[') { depth++; p++; continue; }
        if (ch == '}' || ch == ']') {
            if (!depth) return p;
            depth--;
            p++;
            if (!depth) return p;
            continue;
        }
        if (!depth && ch == ',') return p;
        p++;
    }
    return p;
}

/* The top-level keys and value spans of the canonical object obj[0..n), split in one pass (a
 * message's five fields are then looked up without scanning it five times). */
#define MAX_FIELDS 16
typedef struct {
    int n;
    const char *k[MAX_FIELDS], *v[MAX_FIELDS];
    size_t kl[MAX_FIELDS], vl[MAX_FIELDS];
} fields_t;

static int canon_split(const char *obj, size_t n, fields_t *f) {
    const char *p = obj, *end = obj + n;
    f->n = 0;
    if (n < 2 || *p != '{') return 0;
    p++;
    while (p < end && *p != '}') {
        if (f->n == MAX_FIELDS) return 0;
        const char *k = p;
        p = canon_skip(p, end);
        if (p >= end || *p != ':') return 0;
        f->k[f->n] = k;
        f->kl[f->n] = (size_t)(p - k);
        p++;
        const char *val = p;
        p = canon_skip(p, end);
        f->v[f->n] = val;
        f->vl[f->n] = (size_t)(p - val);
        f->n++;
        if (p < end && *p == ',') p++;
    }
    return 1;
}

static int field_get(const fields_t *f, const char *name, const char **v, size_t *vl) {
    size_t nl = strlen(name);
    for (int i = 0; i < f->n; i++) {
        if (f->kl[i] == nl && memcmp(f->k[i], name, nl) == 0) {
            *v = f->v[i];
            *vl = f->vl[i];
            return 1;
        }
    }
    return 0;
}

static int span_is(const char *v, size_t vl, const char *lit) {
    return vl == strlen(lit) && memcmp(v, lit, vl) == 0;
}

/* ------------------------------------------------------------------ wire messages */

/* The application payload of message `idx`: {"seq":idx,"body":"..."}, its body deterministic
 * text of about `opt.size - 28` bytes with multi-byte UTF-8 (JSON-safe: no quote, backslash or
 * control character, so the text sent is its own canonical form). */
static size_t app_payload(char *out, size_t cap, uint64_t idx) {
    static const char *words[] = {"zzz ", "fan ", "out ", "h\xc3\xa9llo ", "\xe2\x82\xac" "5 ",
                                  "\xe6\x97\xa5\xe6\x9c\xac ", "data ", "topic ", "\xf0\x9f\x98\x80 ", "ok "};
    size_t body = opt.size > 28 ? opt.size - 28 : 4;
    int n = snprintf(out, cap, "{\"seq\":%llu,\"body\":\"", (unsigned long long)idx);
    size_t o = (size_t)n;
    uint64_t save = rng_state;
    rng_state = 0xB0D1ull + idx * 0x9E3779B97F4A7C15ull;
    size_t stop = o + body;
    while (o < stop && o + 8 < cap) {
        const char *w = words[(rnd() >> 20) % 10];
        size_t wl = strlen(w);
        if (o + wl > stop) {
            while (o < stop) out[o++] = (char)('a' + (rnd() >> 40) % 26);
            break;
        }
        memcpy(out + o, w, wl);
        o += wl;
    }
    rng_state = save;
    out[o++] = '"';
    out[o++] = '}';
    out[o] = 0;
    return o;
}

static uint64_t wire_ref;        /* phoenix refs of the publisher's pushes */
#define JOIN_REF "0"

/* Queue the wire form of a published message (bcast) or a request (rr) with payload P. */
static void queue_app(conn_t *c, int request, uint64_t idx) {
    char payload[1200], msg[1400];
    app_payload(payload, sizeof payload, idx);
    int n;
    if (opt.wire == WIRE_PHX) {
        if (request)
            n = snprintf(msg, sizeof msg,
                         "{\"topic\":\"%s\",\"event\":\"echo\",\"payload\":%s,\"ref\":\"%llu\",\"join_ref\":\"" JOIN_REF "\"}",
                         opt.topic, payload, (unsigned long long)idx);
        else
            n = snprintf(msg, sizeof msg,
                         "{\"topic\":\"%s\",\"event\":\"pub\",\"payload\":%s,\"ref\":\"p%llu\",\"join_ref\":\"" JOIN_REF "\"}",
                         opt.topic, payload, (unsigned long long)wire_ref++);
    } else {
        if (request) n = snprintf(msg, sizeof msg, "42%llu[\"echo\",%s]", (unsigned long long)idx, payload);
        else n = snprintf(msg, sizeof msg, "42[\"pub\",%s]", payload);
    }
    queue_text(c, msg, (size_t)n);
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

/* rr over a JSON wire: each request is built for its sequence number (it carries it as its ref
 * or ack id), so there are no prebuilt variants; the freed slots are refilled after each read. */
static void app_topup(conn_t *c) {
    if (!c->open || !running || c->state != ST_READY) return;
    while (c->slimit < c->rseq + (uint64_t)opt.inflight) {
        c->ts[c->slimit & c->tsmask] = now_cached;
        queue_app(c, 1, c->slimit);
        c->slimit++;
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

/* Bytes that differ between two texts of possibly different lengths (the excess counts whole). */
static uint64_t text_diff(const char *a, size_t al, const char *b, size_t bl) {
    size_t n = al < bl ? al : bl;
    return count_diff((const unsigned char *)a, (const unsigned char *)b, n) + (al > bl ? al - bl : bl - al);
}

/* broadcast state */
static int64_t bc_round = -1;      /* round in progress */
static int bc_synced;              /* one round reached everybody: every connection is registered */
static int64_t bc_order_from = -1; /* from this index on, every receiver must get every message in order */
static int bc_got;                 /* receivers that have the current round's last message */
static uint64_t bc_start;
static uint64_t bc_rounds_measured;
static unsigned char *bc_payloads; /* ws wire: the current round's payloads, opt.size bytes each */
static char *bc_expect;            /* JSON wires: the canonical text expected for each message of the round */
static size_t *bc_expect_len;
#define BC_EXPECT_CAP 1400

static int64_t bc_last_index(void) { return bc_round * opt.burst + opt.burst - 1; }

static void bcast_payload(unsigned char *p, int64_t idx) {
    /* "round NNNNNNNNNN " (the message index) then deterministic text that depends on it */
    char pre[32];
    int n = snprintf(pre, sizeof pre, "round %010lld ", (long long)idx);
    uint64_t save = rng_state;
    rng_state = 0x1234567ull + (uint64_t)idx * 0x9E3779B97F4A7C15ull;
    if (opt.size <= (size_t)n) {
        memcpy(p, pre, opt.size);
    } else {
        memcpy(p, pre, (size_t)n);
        fill_text(p + n, opt.size - (size_t)n, 0);
    }
    rng_state = save;
}

/* What a receiver must get for message idx of a JSON wire, in canonical form. */
static size_t app_expected(char *out, size_t cap, int64_t idx) {
    char payload[1200];
    size_t pl = app_payload(payload, sizeof payload, (uint64_t)idx);
    if (opt.wire == WIRE_PHX) {
        memcpy(out, payload, pl + 1);
        return pl;
    }
    return (size_t)snprintf(out, cap, "[\"msg\",%s]", payload);
}

/* A delivery of broadcast message idx to c (content already checked). */
static void bc_delivery(conn_t *c, int64_t idx, size_t len) {
    all_msgs++;
    all_bytes_checked += len;
    last_progress = now_cached;
    if (bc_order_from >= 0 && idx >= bc_order_from && idx != c->last_idx + 1) {
        protocol_errors++;
        note_error("connection %d: broadcast message %lld after %lld (lost, repeated or out of order)", c->id,
                   (long long)idx, (long long)c->last_idx);
    }
    if (idx > c->last_idx) c->last_idx = idx;
    if (idx == bc_last_index()) bc_got++;
}

/* Up to 10 decimal digits at p (within n bytes); -1 when there are none. */
static int64_t parse_index(const char *p, size_t n) {
    int64_t v = 0;
    size_t i = 0;
    for (; i < n && i < 18 && p[i] >= '0' && p[i] <= '9'; i++) v = v * 10 + (p[i] - '0');
    return i ? v : -1;
}

static void bad_message(uint64_t badbytes) {
    corrupt_msgs++;
    corrupt_bytes += badbytes ? badbytes : 1;
}

static void mark_ready(conn_t *c);

/* The end of a Channels broadcast on a topic with history: the plain suffix with
 * ,"meta":{"offset":N,"epoch":"E"} before its closing brace (zzz's position meta). 1 when the n
 * bytes at t are exactly that, with N a decimal number and E a string with no escapes. */
static int meta_tail(const char *t, size_t n, const char *suffix, size_t sufl) {
    static const char off[] = ",\"meta\":{\"offset\":", ep[] = ",\"epoch\":\"";
    size_t head = sufl - 1, i;
    if (n < head + sizeof off - 1 + 1 + sizeof ep - 1 + 3 || memcmp(t, suffix, head) != 0 ||
        memcmp(t + head, off, sizeof off - 1) != 0 || memcmp(t + n - 3, "\"}}", 3) != 0)
        return 0;
    i = head + sizeof off - 1;
    size_t d = i;
    while (i < n && t[i] >= '0' && t[i] <= '9') i++;
    if (i == d || i > d + 18 || n - i < sizeof ep - 1 + 3 || memcmp(t + i, ep, sizeof ep - 1) != 0) return 0;
    for (i += sizeof ep - 1; i < n - 3; i++)
        if (t[i] == '"' || t[i] == '\\' || (unsigned char)t[i] < 0x20) return 0;
    return 1;
}

/* A broadcast whose text is exactly what a server that adds no whitespace sends: prefix, the
 * expected payload of message idx, suffix (the payload "{\"seq\":idx,..." gives idx); on the
 * phoenix wire the suffix may also carry a history position (meta_tail). It is then checked by
 * comparing bytes, not parsed: 1 when it is that (and was counted as a delivery), 0 for any
 * other text, which the caller parses and checks field by field as before. The parse of each
 * broadcast was most of the client's time on the Channels rows, and as the client shares the
 * server's core by default, it was measured as the server's. */
static int bc_exact(conn_t *c, const unsigned char *data, size_t len, const char *prefix, size_t prefl,
                    const char *suffix, size_t sufl) {
    if (len <= prefl + sufl + 7 || memcmp(data, prefix, prefl) != 0) return 0;
    const char *pay = (const char *)data + prefl;
    size_t rest = len - prefl;
    if (memcmp(pay, "{\"seq\":", 7) != 0) return 0;
    int64_t idx = parse_index(pay + 7, rest - 7);
    int64_t k = idx - bc_round * opt.burst;
    if (idx < 0 || idx > bc_last_index() || k < 0) return 0;
    /* The expected text of a JSON wire is the payload (phoenix) or ["msg",payload] (socket.io). */
    const char *exp = bc_expect + (size_t)k * BC_EXPECT_CAP;
    size_t el = bc_expect_len[k];
    if (opt.wire != WIRE_PHX) {
        exp += 7;
        el -= 8;
    }
    if (rest < el + sufl || memcmp(pay, exp, el) != 0) return 0;
    const char *tail = pay + el;
    size_t tl = rest - el;
    if (!(tl == sufl && memcmp(tail, suffix, sufl) == 0) &&
        !(opt.wire == WIRE_PHX && meta_tail(tail, tl, suffix, sufl)))
        return 0;
    bc_delivery(c, idx, len);
    return 1;
}

/* ---- phoenix ---- */

static void phx_message(conn_t *c, const unsigned char *data, size_t len) {
    static char canon[1 << 16];
    static char bc_prefix[300];
    static size_t bc_prefl;
    static const char bc_suffix[] = ",\"ref\":null,\"join_ref\":null}";
    char payload[1200]; /* rr: the payload of push number rseq, made once for both checks below */
    if (opt.mode == MODE_BCAST && c->state != ST_SETUP) {
        if (!bc_prefl)
            bc_prefl = (size_t)snprintf(bc_prefix, sizeof bc_prefix, "{\"topic\":\"%s\",\"event\":\"msg\",\"payload\":", opt.topic);
        if (bc_exact(c, data, len, bc_prefix, bc_prefl, bc_suffix, sizeof bc_suffix - 1)) return;
    } else if (c->state != ST_SETUP) {
        /* rr: the reply to push number rseq, when it is exactly the text expected, is checked by
         * comparing bytes (as bc_exact does for broadcasts); any other text is parsed below. */
        char expect[BC_EXPECT_CAP + 400];
        app_payload(payload, sizeof payload, c->rseq);
        int el = snprintf(expect, sizeof expect,
                          "{\"topic\":\"%s\",\"event\":\"phx_reply\",\"payload\":{\"status\":\"ok\",\"response\":%s},"
                          "\"ref\":\"%llu\",\"join_ref\":\"" JOIN_REF "\"}",
                          opt.topic, payload, (unsigned long long)c->rseq);
        if (el > 0 && (size_t)el == len && memcmp(data, expect, len) == 0) {
            reply_done(c, len);
            return;
        }
    }
    long cl = json_canon(data, len, canon, sizeof canon);
    if (cl < 0) {
        protocol_errors++;
        bad_message(len);
        note_error("connection %d: a message that is not JSON: %.60s", c->id, (const char *)data);
        return;
    }
    const char *ev, *topic, *pay, *ref;
    size_t evl, tl, pl, rl;
    fields_t f;
    if (!canon_split(canon, (size_t)cl, &f) || !field_get(&f, "\"event\"", &ev, &evl) ||
        !field_get(&f, "\"topic\"", &topic, &tl) || !field_get(&f, "\"payload\"", &pay, &pl)) {
        protocol_errors++;
        bad_message(len);
        note_error("connection %d: not a channel message: %.80s", c->id, canon);
        return;
    }
    if (!field_get(&f, "\"ref\"", &ref, &rl)) { ref = "null"; rl = 4; }
    static char want_topic[300];
    if (!want_topic[0]) snprintf(want_topic, sizeof want_topic, "\"%s\"", opt.topic);
    if (span_is(ev, evl, "\"presence_state\"") || span_is(ev, evl, "\"presence_diff\"")) return;
    if (!span_is(topic, tl, want_topic)) {
        protocol_errors++;
        bad_message(len);
        note_error("connection %d: message on topic %.*s", c->id, (int)tl, topic);
        return;
    }
    if (c->state == ST_SETUP) {
        if (span_is(ev, evl, "\"phx_reply\"") && span_is(ref, rl, "\"" JOIN_REF "\"")) {
            const char *st;
            size_t sl;
            fields_t pf;
            if (canon_split(pay, pl, &pf) && field_get(&pf, "\"status\"", &st, &sl) &&
                span_is(st, sl, "\"ok\"")) {
                mark_ready(c);
                return;
            }
            die("join of %s refused (connection %d): %.200s", opt.topic, c->id, canon);
        }
        protocol_errors++;
        note_error("connection %d: unexpected message before the join reply: %.80s", c->id, canon);
        return;
    }
    if (opt.mode == MODE_BCAST) {
        if (span_is(ev, evl, "\"phx_reply\"") && rl > 2 && ref[1] == 'p') return; /* a reply to a publish */
        const char *jr;
        size_t jrl;
        int jr_ok = !field_get(&f, "\"join_ref\"", &jr, &jrl) || span_is(jr, jrl, "null");
        if (!span_is(ev, evl, "\"msg\"") || !span_is(ref, rl, "null") || !jr_ok) {
            protocol_errors++;
            bad_message(len);
            note_error("connection %d: not a broadcast: %.100s", c->id, canon);
            return;
        }
        int64_t idx = pl > 7 && memcmp(pay, "{\"seq\":", 7) == 0 ? parse_index(pay + 7, pl - 7) : -1;
        if (idx < 0 || idx > bc_last_index()) {
            bad_message(len);
            note_error("connection %d: broadcast payload with no valid seq: %.80s", c->id, pay);
            all_msgs++;
            return;
        }
        char tmp[BC_EXPECT_CAP];
        const char *exp;
        size_t el;
        int64_t k = idx - bc_round * opt.burst;
        if (k >= 0) { exp = bc_expect + (size_t)k * BC_EXPECT_CAP; el = bc_expect_len[k]; }
        else { el = app_expected(tmp, sizeof tmp, idx); exp = tmp; }
        uint64_t d = text_diff(pay, pl, exp, el);
        if (d) bad_message(d);
        bc_delivery(c, idx, len);
        return;
    }
    /* rr: the reply to push number rseq */
    char want_ref[32], exp[BC_EXPECT_CAP + 40];
    snprintf(want_ref, sizeof want_ref, "\"%llu\"", (unsigned long long)c->rseq);
    if (!span_is(ev, evl, "\"phx_reply\"") || !span_is(ref, rl, want_ref)) {
        protocol_errors++;
        bad_message(len);
        note_error("connection %d: expected the reply to ref %s, got %.100s", c->id, want_ref, canon);
        return;
    }
    int el = snprintf(exp, sizeof exp, "{\"status\":\"ok\",\"response\":%s}", payload);
    uint64_t d = text_diff(pay, pl, exp, (size_t)el);
    if (d) bad_message(d);
    reply_done(c, len);
}

/* ---- socket.io ---- */

static void sio_message(conn_t *c, const unsigned char *data, size_t len) {
    static char canon[1 << 16];
    const char *t = (const char *)data;
    if (len == 1 && t[0] == '2') { queue_text(c, "3", 1); return; } /* engine.io ping */
    if (len >= 1 && t[0] == '6') return;                              /* noop */
    if (c->state == ST_SETUP) {
        if (len >= 2 && t[0] == '0' && t[1] == '{') { queue_text(c, "40", 2); return; }
        if (len >= 2 && t[0] == '4' && t[1] == '0') { mark_ready(c); return; }
        if (len >= 2 && t[0] == '4' && t[1] == '4') die("socket.io connect refused (connection %d): %.200s", c->id, t);
        protocol_errors++;
        note_error("connection %d: unexpected packet before connecting: %.60s", c->id, t);
        return;
    }
    if (len >= 1 && (t[0] == '1' || (len >= 2 && t[0] == '4' && t[1] == '1'))) {
        conn_lost(c, "socket.io server disconnected the client");
        return;
    }
    int want_ack = opt.mode != MODE_BCAST;
    char payload[1200]; /* acks: the payload of request rseq, made once for both checks below */
    if (!want_ack && bc_exact(c, data, len, "42[\"msg\",", 9, "]", 1)) return;
    if (want_ack) { /* the ack of request rseq in exactly the text expected: compared, not parsed */
        char expect[BC_EXPECT_CAP + 40];
        app_payload(payload, sizeof payload, c->rseq);
        int el = snprintf(expect, sizeof expect, "43%llu[%s]", (unsigned long long)c->rseq, payload);
        if (el > 0 && (size_t)el == len && memcmp(data, expect, len) == 0) {
            reply_done(c, len);
            return;
        }
    }
    if (len < 3 || t[0] != '4' || t[1] != (want_ack ? '3' : '2')) {
        protocol_errors++;
        bad_message(len);
        note_error("connection %d: unexpected packet %.60s", c->id, t);
        return;
    }
    size_t o = 2;
    int64_t ack = -1;
    if (o < len && t[o] >= '0' && t[o] <= '9') {
        ack = parse_index(t + o, len - o);
        while (o < len && t[o] >= '0' && t[o] <= '9') o++;
    }
    long cl = json_canon(data + o, len - o, canon, sizeof canon);
    if (cl < 0) {
        protocol_errors++;
        bad_message(len);
        note_error("connection %d: packet data is not JSON: %.60s", c->id, t);
        return;
    }
    if (!want_ack) {
        int64_t idx = cl > 14 && memcmp(canon, "[\"msg\",{\"seq\":", 14) == 0 ? parse_index(canon + 14, (size_t)cl - 14) : -1;
        if (ack >= 0 || idx < 0 || idx > bc_last_index()) {
            bad_message(len);
            note_error("connection %d: not a broadcast of ours: %.80s", c->id, canon);
            all_msgs++;
            return;
        }
        char tmp[BC_EXPECT_CAP];
        const char *exp;
        size_t el;
        int64_t k = idx - bc_round * opt.burst;
        if (k >= 0) { exp = bc_expect + (size_t)k * BC_EXPECT_CAP; el = bc_expect_len[k]; }
        else { el = app_expected(tmp, sizeof tmp, idx); exp = tmp; }
        uint64_t d = text_diff(canon, (size_t)cl, exp, el);
        if (d) bad_message(d);
        bc_delivery(c, idx, len);
        return;
    }
    if (ack != (int64_t)c->rseq) {
        protocol_errors++;
        bad_message(len);
        note_error("connection %d: ack %lld while waiting for %llu", c->id, (long long)ack, (unsigned long long)c->rseq);
        return;
    }
    char exp[BC_EXPECT_CAP];
    int el = snprintf(exp, sizeof exp, "[%s]", payload);
    uint64_t d = text_diff(canon, (size_t)cl, exp, (size_t)el);
    if (d) bad_message(d);
    reply_done(c, len);
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
    if (opt.wire != WIRE_WS) {
        if (bad || c->mop != 1) {
            header_errors += c->mop != 1;
            bad_message(len);
            note_error("connection %d: a %s frame where a text message was due", c->id, bad ? "malformed" : "binary");
        } else if (opt.wire == WIRE_PHX) {
            phx_message(c, data, len);
        } else {
            sio_message(c, data, len);
        }
        c->acclen = 0;
        return;
    }
    if (opt.mode == MODE_BCAST) {
        int64_t idx = len >= 16 && memcmp(data, "round ", 6) == 0 ? parse_index((const char *)data + 6, len - 6) : -1;
        if (idx < 0 || idx > bc_last_index()) {
            bad = 1;
            badbytes += len;
            all_msgs++;
        } else {
            unsigned char tmp[1024];
            int64_t k = idx - bc_round * opt.burst;
            unsigned char *exp = bc_payloads + (size_t)(k >= 0 ? k : 0) * opt.size;
            if (k < 0) { bcast_payload(tmp, idx); exp = tmp; }
            size_t n = len < opt.size ? len : opt.size;
            badbytes += count_diff(data, exp, n) + (len > opt.size ? len - opt.size : opt.size - len);
            if (c->mop != 1) bad = 1;
        }
        if (badbytes) bad = 1;
        if (bad) { corrupt_msgs++; corrupt_bytes += badbytes; }
        if (idx >= 0 && idx <= bc_last_index()) bc_delivery(c, idx, len);
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

static int use_acc(void) { return opt.mode == MODE_BCAST || deflate_on || opt.wire != WIRE_WS; }

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


/* ------------------------------------------------------------------ opening connections */

static int deflate_known;        /* the first finished handshake fixed what every other must agree on */
static struct sockaddr_in server_addr;

static void mark_ready(conn_t *c) {
    if (c->state == ST_READY) return;
    c->state = ST_READY;
    n_ready++;
    n_pending--;
    last_progress = now_cached;
}

/* Start the TCP connect of c (non-blocking); the rest follows from its events. */
static void conn_start(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket (connection %d): %s", c->id, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->open = 1;
    c->state = ST_CONNECTING;
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 && errno != EINPROGRESS)
        die("connect to %s:%d (connection %d): %s", opt.host, opt.port, c->id, strerror(errno));
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->want_out = 1;
}

static void wire_open(conn_t *c) {
    c->state = ST_SETUP;
    if (opt.wire == WIRE_WS) {
        mark_ready(c);
    } else if (opt.wire == WIRE_PHX) {
        char join[400];
        int n = snprintf(join, sizeof join,
                         "{\"topic\":\"%s\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"" JOIN_REF
                         "\",\"join_ref\":\"" JOIN_REF "\"}",
                         opt.topic);
        queue_text(c, join, (size_t)n);
        flush(c);
    }
    /* socket.io: the server speaks first (its open packet). */
}

/* The TCP connection is up (or failed): send the upgrade request. */
static void on_connected(conn_t *c) {
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) die("connect to %s:%d (connection %d): %s", opt.host, opt.port, c->id, strerror(err));
    c->want_out = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    if (opt.raw) {
        c->state = ST_SETUP;
        mark_ready(c);
        return;
    }
    unsigned char keyraw[16];
    for (int i = 0; i < 16; i++) keyraw[i] = (unsigned char)(rnd() >> 56);
    base64(keyraw, 16, c->key);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     opt.path, opt.host, opt.port, c->key,
                     opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    /* A fresh socket's send buffer always takes a request of this size at once. */
    if (write(c->fd, req, (size_t)n) != n) die("handshake write failed (connection %d): %s", c->id, strerror(errno));
    c->state = ST_HEAD;
    c->head = xmalloc(8192);
    c->headlen = 0;
}

/* Bytes of the response head: once complete, check it and hand the rest to the frame parser. */
static void on_head(conn_t *c) {
    ssize_t r = read(c->fd, c->head + c->headlen, 8191 - c->headlen);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (r <= 0) die("handshake read (connection %d): %s", c->id, r == 0 ? "EOF" : strerror(errno));
    c->headlen += (size_t)r;
    char *resp = c->head;
    resp[c->headlen] = 0;
    char *end = strstr(resp, "\r\n\r\n");
    if (!end) {
        if (c->headlen >= 8191) die("handshake response head too large (connection %d)", c->id);
        return;
    }
    size_t head = (size_t)(end + 4 - resp);
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(resp, "\r\n");
        if (eol) *eol = 0;
        die("handshake refused (connection %d): %s", c->id, resp);
    }
    /* Sec-WebSocket-Accept must match: a server that gets this wrong is not speaking RFC 6455. */
    char cat[128];
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", c->key);
    unsigned char dig[20];
    sha1((unsigned char *)cat, strlen(cat), dig);
    char accept[40];
    base64(dig, 20, accept);
    *end = 0;
    if (!strcasestr(resp, accept)) die("wrong Sec-WebSocket-Accept (connection %d)", c->id);

    char *ext = strcasestr(resp, "\r\nSec-WebSocket-Extensions:");
    int got_deflate = 0, wbits = 15;
    char line[256] = "";
    if (ext) {
        ext += strlen("\r\nSec-WebSocket-Extensions:");
        while (*ext == ' ') ext++;
        char *eol = strstr(ext, "\r\n");
        size_t l = eol ? (size_t)(eol - ext) : strlen(ext);
        snprintf(line, sizeof line, "%.*s", (int)l, ext);
        if (strstr(line, "permessage-deflate")) {
            got_deflate = 1;
            char *w = strstr(line, "client_max_window_bits=");
            if (w) wbits = atoi(w + strlen("client_max_window_bits="));
        }
    }
    if (got_deflate && !opt.deflate) die("server answered permessage-deflate that was not offered");
    if (!deflate_known) {
        deflate_known = 1;
        deflate_on = got_deflate;
        client_wbits = wbits;
        snprintf(ext_response, sizeof ext_response, "%s", line);
    } else if (got_deflate != deflate_on) {
        die("connections disagree on permessage-deflate");
    }
#ifndef NO_ZLIB
    if (deflate_on) {
        if (inflateInit2(&c->inf, -15) != Z_OK) die("inflateInit2 failed");
        c->inf_ready = 1;
    }
#endif
    size_t extra = c->headlen - head;
    unsigned char left[8192];
    memcpy(left, resp + head, extra);
    free(c->head);
    c->head = NULL;
    wire_open(c);
    if (extra) parse(c, left, extra);
}

/* Open more connections while fewer than the window are in progress (and the rate allows). */
static void start_connections(uint64_t t_setup0) {
    while (n_started < opt.conns && n_pending < opt.connect_window) {
        if (opt.connect_rate > 0 &&
            (double)n_started >= (double)(now_cached - t_setup0) / 1e9 * opt.connect_rate + 1)
            break;
        conn_start(&conns[n_started++]);
        n_pending++;
    }
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    fprintf(stderr,
            "usage: loadclient --port P [--host H] [--path /] [--mode rr|mixed|bcast] [--conns N]\n"
            "       [--inflight K] [--size BYTES] [--text|--binary] [--duration S] [--warmup S]\n"
            "       [--count N] [--raw] [--deflate] [--stall S] [--batch B]\n"
            "       [--wire ws|phoenix|socketio] [--topic T] [--burst B] [--min-rounds R]\n"
            "       [--connect-window K] [--connect-rate PER_S]\n");
    exit(1);
}

static void print_json(double seconds) {
    double rate = seconds > 0 ? (double)m_msgs / seconds : 0;
    int ok = corrupt_msgs == 0 && corrupt_bytes == 0 && header_errors == 0 && protocol_errors == 0 &&
             lost_conns == 0 && !first_error[0];
    static const char *wires[] = {"ws", "phoenix", "socketio"};
    printf("{\"ok\": %s, \"mode\": \"%s\", \"wire\": \"%s\", \"conns\": %d, \"inflight\": %d, \"size\": %zu, "
           "\"burst\": %d, \"raw\": %s, \"deflate_offered\": %s, \"deflate\": %s, \"extensions\": \"%s\", "
           "\"setup_s\": %.3f, "
           "\"seconds\": %.4f, \"messages\": %llu, \"msgs_per_s\": %.1f, \"mbytes_per_s\": %.3f, "
           "\"rtt_mean_us\": %.2f, \"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, "
           "\"checked_messages\": %llu, \"checked_bytes\": %llu, \"corrupt_messages\": %llu, "
           "\"corrupt_bytes\": %llu, \"header_errors\": %llu, \"protocol_errors\": %llu, "
           "\"compressed_replies\": %llu, \"lost_connections\": %llu, \"rounds\": %llu, "
           "\"client_cpu_pct\": %.1f, \"error\": \"",
           ok ? "true" : "false", opt.mode == MODE_RR ? "rr" : opt.mode == MODE_MIXED ? "mixed" : "bcast",
           wires[opt.wire], opt.conns, opt.inflight, opt.size, opt.burst, opt.raw ? "true" : "false",
           opt.deflate ? "true" : "false", deflate_on ? "true" : "false", ext_response, setup_seconds, seconds,
           (unsigned long long)m_msgs, rate, seconds > 0 ? (double)m_bytes / seconds / 1e6 : 0,
           hist_n ? hist_sum / (double)hist_n / 1e3 : 0, hpct(0.5) / 1e3, hpct(0.99) / 1e3,
           (unsigned long long)all_msgs, (unsigned long long)all_bytes_checked, (unsigned long long)corrupt_msgs,
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

/* Start the next broadcast round: the publisher queues the round's messages and writes them at once. */
static void bc_start_round(conn_t *s) {
    bc_round++;
    bc_got = 0;
    for (int k = 0; k < opt.burst; k++) {
        int64_t idx = bc_round * opt.burst + k;
        if (opt.wire == WIRE_WS) {
            unsigned char *p = bc_payloads + (size_t)k * opt.size;
            bcast_payload(p, idx);
            queue_ctrl(s, 0x81, p, opt.size);
        } else {
            bc_expect_len[k] = app_expected(bc_expect + (size_t)k * BC_EXPECT_CAP, BC_EXPECT_CAP, idx);
            queue_app(s, 0, (uint64_t)idx);
        }
    }
    bc_start = now_cached;
    flush(s);
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
        } else if (!strcmp(a, "--wire")) {
            const char *w = NEXT();
            opt.wire = !strcmp(w, "ws") ? WIRE_WS : !strcmp(w, "phoenix") ? WIRE_PHX : !strcmp(w, "socketio") ? WIRE_SIO : -1;
            if (opt.wire < 0) usage();
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
        else if (!strcmp(a, "--burst")) opt.burst = atoi(NEXT());
        else if (!strcmp(a, "--min-rounds")) opt.min_rounds = atoi(NEXT());
        else if (!strcmp(a, "--connect-window")) opt.connect_window = atoi(NEXT());
        else if (!strcmp(a, "--connect-rate")) opt.connect_rate = atof(NEXT());
        else if (!strcmp(a, "--topic")) opt.topic = NEXT();
        else usage();
    }
    if (opt.port <= 0 || opt.conns < 1 || opt.inflight < 1 || opt.burst < 1 || opt.burst > 10000 ||
        opt.connect_window < 1 || strlen(opt.topic) > 200)
        usage();
    if (opt.batch <= 0) opt.batch = 1;
    if (opt.batch > opt.inflight) opt.batch = opt.inflight;
#ifdef NO_ZLIB
    if (opt.deflate) die("built without zlib: --deflate is not available");
#endif
    if (opt.raw && (opt.deflate || opt.mode == MODE_BCAST || opt.wire != WIRE_WS)) die("--raw works with rr and mixed only");
    if (opt.mode == MODE_BCAST && (opt.size < 16 || opt.size > 900)) die("broadcast size must be 16..900");
    if (opt.wire != WIRE_WS) {
        if (opt.mode == MODE_MIXED || opt.deflate) die("the JSON wires run rr and bcast, without --deflate");
        if (opt.size > 900) die("JSON wire payload size must be at most 900");
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.conns + 16)
        die("%d connections need RLIMIT_NOFILE >= %d; the limit is %llu", opt.conns, opt.conns + 16,
            (unsigned long long)rl.rlim_cur);

    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1) die("bad host %s", opt.host);

    build_variants();
    epfd = epoll_create1(0);
    conns = calloc((size_t)opt.conns, sizeof(conn_t));
    if (!conns) die("out of memory");
    uint64_t ring = 1;
    while (ring < (uint64_t)opt.inflight) ring <<= 1;
    for (int i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        c->id = i;
        c->hneed = 2;
        c->last_idx = -1;
        c->ts = calloc(ring, sizeof(uint64_t));
        c->tsmask = ring - 1;
    }
    if (opt.mode == MODE_BCAST) {
        if (opt.wire == WIRE_WS) bc_payloads = xmalloc((size_t)opt.burst * opt.size);
        else {
            bc_expect = xmalloc((size_t)opt.burst * BC_EXPECT_CAP);
            bc_expect_len = xmalloc(sizeof(size_t) * (size_t)opt.burst);
        }
    }

    /* Setup: open every connection, at most connect_window in progress at a time. */
    struct epoll_event evs[1024];
    now_cached = now_ns();
    uint64_t t_setup0 = now_cached;
    last_progress = now_cached;
    while (n_ready < opt.conns) {
        start_connections(t_setup0);
        int n = epoll_wait(epfd, evs, 1024, 5);
        now_cached = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->state == ST_CONNECTING) on_connected(c);
            else if (c->state == ST_HEAD) on_head(c);
            else if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            /* Whatever the handshake or the messages queued (a join, "40", a pong) goes out now. */
            if (c->open && c->coff < c->clen) flush(c);
            if (!c->open) die("connection %d lost while opening: %s", c->id, first_error);
        }
        if (now_cached - last_progress > (uint64_t)(opt.stall * 1e9)) {
            int st[ST_READY + 1] = {0};
            for (int i = 0; i < n_started; i++) st[conns[i].state]++;
            die("opening connections stalled: %d of %d ready after %.1f s; in progress: %d connecting, "
                "%d waiting for the 101, %d waiting for the %s",
                n_ready, opt.conns, (double)(now_cached - t_setup0) / 1e9, st[ST_CONNECTING], st[ST_HEAD],
                st[ST_SETUP], opt.wire == WIRE_PHX ? "join reply" : "socket.io connect");
        }
    }
    setup_seconds = (double)(now_cached - t_setup0) / 1e9;
#ifndef NO_ZLIB
    if (deflate_on && opt.mode != MODE_BCAST) {
        /* zlib cannot make raw deflate with an 8-bit window; then send uncompressed (allowed). */
        if (client_wbits >= 9 && client_wbits <= 15) compress_variants();
    }
#endif

    now_cached = now_ns();
    uint64_t t0 = now_cached, t_meas = t0 + (uint64_t)(opt.warmup * 1e9);
    uint64_t t_end = t_meas + (uint64_t)(opt.duration * 1e9), t_meas_real = 0, t_stop = 0;
    last_progress = t0;
    running = 1;
    if (opt.mode != MODE_BCAST)
        for (int i = 0; i < opt.conns; i++) {
            if (opt.wire == WIRE_WS) topup(&conns[i]);
            else app_topup(&conns[i]);
        }

    int bc_sync_tries = 0;
    for (;;) {
        now_cached = now_ns();
        if (!measuring && running && now_cached >= t_meas && opt.mode != MODE_BCAST) {
            measuring = 1;
            t_meas_real = now_cached;
            cpu_at_measure_start = cpu_seconds();
            memset(hist, 0, sizeof hist);
            hist_n = 0;
            hist_sum = 0;
        }
        if (running && opt.mode != MODE_BCAST &&
            ((opt.count == 0 && measuring && now_cached >= t_end) ||
             (opt.count > 0 && all_msgs >= (uint64_t)opt.count))) {
            running = 0;
            t_stop = now_cached;
            cpu_at_stop = cpu_seconds();
        }
        if (opt.mode == MODE_BCAST && running) {
            conn_t *s = &conns[0];
            int start_next = bc_round < 0;
            if (bc_round >= 0 && bc_got == opt.conns) {
                if (!bc_synced) {
                    /* Everyone got a whole round: all are registered; from the next round on
                     * every receiver must get every message, in order. */
                    bc_synced = 1;
                    bc_order_from = (bc_round + 1) * opt.burst;
                } else if (measuring) {
                    bc_rounds_measured++;
                    m_msgs += (uint64_t)opt.conns * (uint64_t)opt.burst;
                    m_bytes += (uint64_t)opt.conns * (uint64_t)opt.burst * opt.size;
                    hadd(now_cached - bc_start);
                    if (now_cached >= t_end && bc_rounds_measured >= (uint64_t)opt.min_rounds) {
                        running = 0;
                        t_stop = now_cached;
                        cpu_at_stop = cpu_seconds();
                    }
                }
                start_next = running;
            } else if (bc_round >= 0 && !bc_synced && now_cached - last_progress > 500000000ull &&
                       now_cached - bc_start > 500000000ull) {
                /* Not everyone registered yet (nothing arrives any more): another sync round. */
                if (++bc_sync_tries > 30) die("only %d of %d connections received a broadcast", bc_got, opt.conns);
                start_next = 1;
            }
            if (start_next && s->open) {
                if (bc_synced && !measuring && now_cached >= t_meas) {
                    /* Measure whole rounds: from the start of this one to the end of the last. */
                    measuring = 1;
                    t_meas_real = now_cached;
                    t_end = t_meas_real + (uint64_t)(opt.duration * 1e9);
                    cpu_at_measure_start = cpu_seconds();
                    memset(hist, 0, sizeof hist);
                    hist_n = 0;
                    hist_sum = 0;
                }
                bc_start_round(s);
            }
        }
        if (!running) {
            int pending = 0;
            if (opt.mode != MODE_BCAST)
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
        /* (Before the first round reached everyone, the sync retries above bound the wait.) */
        if ((opt.mode != MODE_BCAST || bc_synced) && now_cached - last_progress > (uint64_t)(opt.stall * 1e9)) {
            if (opt.mode == MODE_BCAST)
                note_error("no progress for %.0f s: round %lld reached %d of %d connections", opt.stall,
                           (long long)bc_round, bc_got, opt.conns);
            else
                note_error("no progress for %.0f s (server stalled)", opt.stall);
            break;
        }
        int n = epoll_wait(epfd, evs, 1024, 5);
        now_cached = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            if (c->open && (evs[i].events & EPOLLOUT)) flush(c);
            if (opt.mode != MODE_BCAST) {
                if (opt.wire == WIRE_WS) topup(c);
                else app_topup(c);
            } else if (c->open && c->coff < c->clen) {
                flush(c);
            }
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
