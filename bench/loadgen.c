/* NTP load generator process for bench.server and bench.nts (bench/loadgen.py compiles and runs
 * it).
 *
 * Why C: a Python generator costs more CPU per request than chronyd spends answering it, so on
 * a small machine it measured itself.  This one only sends pre-built requests (plain NTP, or NTS
 * requests made and authenticated by tsyncd's own NTS client in Python) and matches answers; it
 * does no crypto.
 *
 * usage: loadgen SRC_IP PORT WINDOW SECONDS START_AT PACKETS_FILE LEN SAMPLE_FILE LATENCY_FILE
 *   PACKETS_FILE holds N requests of LEN bytes; request i has transmit timestamp
 *   (magic << 32) | i, so an answer's origin names its request.  WINDOW requests stay in
 *   flight; an answer counts when its origin is outstanding, it is LEN bytes long (an NTS NAK is
 *   shorter), in server mode with a non-zero stratum.  50 ms without any answer: everything
 *   outstanding is lost and the window is sent again; an answer to such a request that
 *   still comes is "late" (the server or the machine stalled) and no longer lost.  The first
 *   good answer is written to SAMPLE_FILE for the caller to check (NTS: authenticate); the
 *   round trip of every 8th good answer (ns, from queueing the request to reading the answer)
 *   goes to LATENCY_FILE as native uint64s.  Datagrams go out and come in by batches
 *   (sendmmsg/recvmmsg), so the generator spends few syscalls per request.  START_AT is a
 *   CLOCK_REALTIME second, so that all processes start together.  Prints "sent ok lost bad late".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static double clock_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

#define BATCH 64 /* datagrams per recvmmsg/sendmmsg: syscalls, not packets, cost the most */

static unsigned char *pkts, *pending;
static uint64_t *sent_at; /* when request i was queued (CLOCK_MONOTONIC ns) */
#define LATENCY_EVERY 8
#define LATENCY_MAX (1u << 20)
static size_t count, len, next_i, inflight;
static unsigned long long sent;
static int sock;
static struct mmsghdr out[BATCH];
static struct iovec out_iov[BATCH];
static unsigned int queued;

static void flush(void) {
    unsigned int done = 0;
    while (done < queued) {
        int k = sendmmsg(sock, out + done, queued - done, 0);
        if (k <= 0) break; /* a full buffer: what was not sent shows up as loss */
        done += (unsigned int)k;
    }
    queued = 0;
}

static void send_next(void) {
    for (size_t tries = 0; tries < count; tries++) {
        size_t i = next_i;
        next_i = next_i + 1 < count ? next_i + 1 : 0;
        if (!pending[i]) {
            pending[i] = 1;
            sent_at[i] = now_ns();
            inflight++;
            sent++;
            out_iov[queued].iov_base = pkts + i * len;
            out_iov[queued].iov_len = len;
            if (++queued == BATCH) flush();
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: loadgen SRC PORT WINDOW SECONDS START_AT PACKETS LEN SAMPLE LATENCY\n");
        return 2;
    }
    int window = atoi(argv[3]);
    double seconds = atof(argv[4]), start_at = atof(argv[5]);
    len = strtoul(argv[7], NULL, 10);
    FILE *f = fopen(argv[6], "rb");
    if (f == NULL || len < 48) return 2;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    count = (size_t)size / len;
    pkts = malloc((size_t)size);
    pending = calloc(count, 1);
    sent_at = calloc(count, sizeof *sent_at);
    uint64_t *latencies = malloc(LATENCY_MAX * sizeof *latencies);
    size_t n_latencies = 0;
    if (count == 0 || pkts == NULL || pending == NULL || sent_at == NULL || latencies == NULL || fread(pkts, 1, (size_t)size, f) != (size_t)size)
        return 2;
    fclose(f);
    uint64_t magic = be64(pkts + 40) >> 32;

    sock = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    if (bind(sock, (struct sockaddr *)&a, sizeof a) != 0) return 3;
    next_i = (size_t)(ntohl(a.sin_addr.s_addr) & 0xff) * 997u % count; /* processes differ */
    a.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(sock, (struct sockaddr *)&a, sizeof a) != 0) return 3;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 50000};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int rcvbuf = 1 << 20;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

    unsigned long long ok = 0, lost = 0, bad = 0, late = 0;
    static unsigned char bufs[BATCH][2048];
    static struct mmsghdr in[BATCH];
    static struct iovec in_iov[BATCH];
    for (int k = 0; k < BATCH; k++) {
        in_iov[k].iov_base = bufs[k];
        in_iov[k].iov_len = sizeof bufs[k];
        in[k].msg_hdr.msg_iov = &in_iov[k];
        in[k].msg_hdr.msg_iovlen = 1;
        out[k].msg_hdr.msg_iov = &out_iov[k];
        out[k].msg_hdr.msg_iovlen = 1;
    }
    int sampled = 0, draining = 0;
    while (clock_s(CLOCK_REALTIME) < start_at) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    double end = clock_s(CLOCK_MONOTONIC) + seconds;
    for (int i = 0; i < window; i++) send_next();
    flush();
    for (;;) {
        int got = recvmmsg(sock, in, BATCH, MSG_WAITFORONE, NULL);
        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) continue;
            if (draining) break;
            lost += inflight; /* 50 ms of silence: the window is gone (unless it comes late) */
            for (size_t i = 0; i < count; i++)
                if (pending[i] == 1) pending[i] = 2;
            inflight = 0;
            if (clock_s(CLOCK_MONOTONIC) >= end) break;
            for (int i = 0; i < window; i++) send_next();
            flush();
            continue;
        }
        if (!draining && clock_s(CLOCK_MONOTONIC) >= end)
            draining = 1; /* answers on their way still count if they come within 50 ms */
        for (int k = 0; k < got; k++) {
            const unsigned char *buf = bufs[k];
            size_t n = in[k].msg_len;
            if (n < 48) {
                bad++;
                continue;
            }
            uint64_t origin = be64(buf + 24);
            size_t i = (size_t)(origin & 0xffffffffu);
            if (origin >> 32 != magic || i >= count || !pending[i]) {
                bad++; /* a duplicate or a stranger: frees no request of ours */
                continue;
            }
            if (pending[i] == 2) { /* answered after its window timed out: late, not lost */
                pending[i] = 0;
                lost--;
                late++;
                continue;
            }
            pending[i] = 0;
            inflight--;
            if (n != len || (buf[0] & 7) != 4 || buf[1] == 0) {
                bad++;
            } else {
                ok++;
                if (ok % LATENCY_EVERY == 0 && n_latencies < LATENCY_MAX)
                    latencies[n_latencies++] = now_ns() - sent_at[i];
                if (!sampled) {
                    FILE *s = fopen(argv[8], "wb");
                    if (s != NULL) {
                        fwrite(buf, 1, n, s);
                        fclose(s);
                    }
                    sampled = 1;
                }
            }
            if (!draining) send_next();
        }
        flush();
        if (draining && inflight == 0) break;
    }
    lost += inflight;
    FILE *lf = fopen(argv[9], "wb");
    if (lf != NULL) {
        fwrite(latencies, sizeof *latencies, n_latencies, lf);
        fclose(lf);
    }
    printf("%llu %llu %llu %llu %llu\n", sent, ok, lost, bad, late);
    return 0;
}
