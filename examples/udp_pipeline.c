// SPDX-License-Identifier: GPL-2.0-only
/*
 * udp_pipeline: a DPDK-style packet pipeline whose RX buffers come from pyfrag.
 *
 *   generator --UDP--> RX thread --SPSC ring--> worker --UDP--> sink (main thread)
 *   (paced)            recvmmsg x32  (1024)     checksum,       recvmmsg, verify
 *                      into buffers             rewrite, encap,
 *                      from the allocator       sendmmsg, free
 *
 * Contract:
 * - Traffic stays on 127.0.0.1: four sockets on ephemeral loopback ports.
 * - Every run is bounded: the generator stops after --duration seconds or
 *   --count packets, whichever comes first; the stages then drain and stop;
 *   a watchdog (SIGALRM at duration + 10 s) ends a run that hangs (exit 1).
 * - RX buffers are BUF_SIZE (2048) bytes, like a NIC's RX buffers: a 64-byte
 *   descriptor, 64 bytes of headroom, 1920 bytes of data room. They come from
 *   --alloc pyfrag (one pf_cache_t owned by the RX thread, 16 buffers per
 *   32 KiB frag page) or --alloc malloc (glibc's aligned_alloc). The RX thread
 *   allocates, the worker frees: every buffer crosses threads (pf_free).
 * - Each datagram carries a header (magic, TTL, sequence number) and an
 *   Internet checksum over the whole datagram. The worker verifies it,
 *   decrements the TTL, changes the magic, updates the checksum incrementally
 *   (RFC 1624) and prepends an 8-byte encapsulation header into the headroom
 *   (no copy); the sink verifies what arrives.
 * - Output on stdout: one line per counter, "name value  meaning", then
 *   "result ok" or "result FAILED: why". The counters add up:
 *   sent == delivered + drops, and drops is the sum of the drop counters
 *   (backlog_drops, a system-wide counter, may also count other programs').
 *   Exit 0 when every check holds, 1 when one fails, 2 for usage errors.
 */
#include <pyfrag.h>

#include <errno.h>
#include <getopt.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- limits ------------------------------------------------------------------------ */

#define BURST 32u
#define RING_SIZE 1024u /* power of two */
#define BUF_SIZE 2048u
#define DESC_SIZE 64u
#define HEADROOM 64u
#define DATA_OFF (DESC_SIZE + HEADROOM)
#define DATA_ROOM (BUF_SIZE - DATA_OFF)
#define BUF_ALIGN 64u
#define RCVBUF_BYTES (1 << 20)
#define POLL_TIMEOUT_MS 10 /* longest wait before a stage looks at the stop flags again */
#define WATCHDOG_SLACK_S 10u
#define MAX_DURATION_S 60.0
#define MAX_RATE 10000000.0
#define MAX_COUNT 1000000000ull
#define TTL0 64u
#define MAGIC_GEN 0x50465247u   /* "PFRG" */
#define MAGIC_FWD 0x50465746u   /* "PFWF" */
#define MAGIC_ENCAP 0x454e4341u /* "ENCA" */

_Static_assert((RING_SIZE & (RING_SIZE - 1)) == 0, "RING_SIZE must be a power of two");
_Static_assert(PF_FRAG_PAGE_SIZE % BUF_SIZE == 0, "RX buffers should tile a frag page");

/* ---- data types -------------------------------------------------------------------- */

/* The descriptor at the start of every RX buffer (DPDK keeps its rte_mbuf there). */
struct pkt {
	uint16_t data_off; /* from the buffer start to the first byte of the datagram */
	uint16_t len;      /* datagram bytes */
};

/* The header every generated datagram starts with (16-bit aligned fields). */
struct app_hdr {
	uint32_t magic;
	uint8_t ttl;
	uint8_t flags;
	uint16_t csum; /* Internet checksum over the whole datagram */
	uint64_t seq;
};

struct encap_hdr {
	uint32_t magic;
	uint32_t seq; /* the worker's own sequence number */
};

_Static_assert(sizeof(struct pkt) <= DESC_SIZE, "descriptor too big");
_Static_assert(sizeof(struct encap_hdr) <= HEADROOM, "encapsulation needs headroom");

struct config {
	bool use_pyfrag;
	double rate;     /* packets per second */
	double duration; /* seconds */
	uint64_t count;  /* packets at most */
	uint32_t size;   /* UDP payload bytes the generator sends */
};

/* Where RX buffers come from. ctx is per RX thread (a pf_cache_t for pyfrag). */
struct allocator {
	const char *name;
	void *(*ctx_new)(void);
	void (*ctx_delete)(void *ctx);
	void *(*alloc)(void *ctx);
	void (*free_local)(void *ctx, void *buf); /* on the allocating thread */
	int (*free_remote)(void *buf);            /* on any thread */
};

/* Single producer, single consumer; head and tail only grow (mod 2^32). An
 * idle consumer sleeps on a futex (sleeping); the producer wakes it. */
struct ring {
	_Alignas(64) _Atomic uint32_t head; /* written by the producer (RX) */
	_Alignas(64) _Atomic uint32_t tail; /* written by the consumer (worker) */
	_Alignas(64) _Atomic uint32_t sleeping; /* the consumer waits, or is about to */
	_Atomic int done;                       /* the producer has stopped */
	void *slot[RING_SIZE];
};

struct gen_stats {
	uint64_t sent, send_errors;
	double seconds;
};

struct rx_stats {
	uint64_t rx, calls, ring_drops, allocs, frees, alloc_failures, recv_errors;
	uint64_t alloc_ns, busy_ns, cpu_ns;
};

struct worker_stats {
	uint64_t handled, bad, forwarded, tx_errors, frees, free_failures, wakeups;
	uint64_t free_ns, busy_ns, cpu_ns;
};

struct sink_stats {
	uint64_t rx, bad;
};

struct gen_state {
	unsigned char data[BURST][DATA_ROOM];
	struct iovec iov[BURST];
	struct mmsghdr msgs[BURST];
};

struct rx_state {
	void *ctx;
	void *spare[BURST]; /* buffers ready for the next recvmmsg, like RX descriptors */
	uint32_t nspare;
	struct iovec iov[BURST];
	struct mmsghdr msgs[BURST];
};

struct worker_state {
	void *bufs[BURST];
	struct iovec iov[BURST];
	struct mmsghdr msgs[BURST];
	uint32_t seq;
};

struct pipeline {
	struct config cfg;
	const struct allocator *alloc;
	int rx_fd, gen_fd, sink_fd, tx_fd;
	uint64_t timer_overhead_ns;
	_Atomic int gen_done, worker_done;
	struct ring ring;
	struct gen_stats gen;
	struct rx_stats rx;
	struct worker_stats work;
	struct sink_stats sink;
	struct gen_state gen_state;  /* each state is touched by its own thread only */
	struct rx_state rx_state;
	struct worker_state worker_state;
};

/* ---- allocators --------------------------------------------------------------------- */

static void *pyfrag_ctx_new(void)
{
	return pf_cache_create();
}

static void pyfrag_ctx_delete(void *ctx)
{
	pf_cache_destroy(ctx);
}

static void *pyfrag_alloc(void *ctx)
{
	return pf_cache_alloc_align(ctx, BUF_SIZE, BUF_ALIGN);
}

static void pyfrag_free_local(void *ctx, void *buf)
{
	pf_cache_free(ctx, buf, BUF_SIZE);
}

static int pyfrag_free_remote(void *buf)
{
	return pf_free(buf);
}

static void *malloc_ctx_new(void)
{
	static char token;
	return &token;
}

static void malloc_ctx_delete(void *ctx)
{
	(void)ctx;
}

static void *malloc_alloc(void *ctx)
{
	(void)ctx;
	return aligned_alloc(BUF_ALIGN, BUF_SIZE);
}

static void malloc_free_local(void *ctx, void *buf)
{
	(void)ctx;
	free(buf);
}

static int malloc_free_remote(void *buf)
{
	free(buf);
	return 0;
}

static const struct allocator pyfrag_allocator = {
	"pyfrag", pyfrag_ctx_new, pyfrag_ctx_delete, pyfrag_alloc, pyfrag_free_local,
	pyfrag_free_remote,
};

static const struct allocator malloc_allocator = {
	"malloc", malloc_ctx_new, malloc_ctx_delete, malloc_alloc, malloc_free_local,
	malloc_free_remote,
};

/* ---- time ---------------------------------------------------------------------------- */

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

static void sleep_until_ns(uint64_t when)
{
	struct timespec ts = { (time_t)(when / 1000000000ull), (long)(when % 1000000000ull) };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* What one pair of now_ns() calls costs: subtracted from every timed burst. */
static uint64_t measure_timer_overhead(void)
{
	uint64_t best = UINT64_MAX;
	for (int i = 0; i < 256; i++) {
		uint64_t t0 = now_ns();
		uint64_t t1 = now_ns();
		if (t1 - t0 < best)
			best = t1 - t0;
	}
	return best;
}

static uint64_t elapsed_since(uint64_t t0, uint64_t overhead)
{
	uint64_t dt = now_ns() - t0;
	return dt > overhead ? dt - overhead : 0;
}

/* ---- checksum (RFC 1071, incremental update RFC 1624) --------------------------------- */

static uint16_t fold(uint64_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* One's complement of the one's complement sum: 0 over a datagram whose checksum is right. */
static uint16_t inet_csum(const unsigned char *p, size_t n)
{
	uint64_t sum = 0;
	for (; n >= 2; p += 2, n -= 2) {
		uint16_t word;
		memcpy(&word, p, 2);
		sum += word;
	}
	if (n) {
		unsigned char last[2] = { *p, 0 }; /* an odd byte is padded with zero */
		uint16_t word;
		memcpy(&word, last, 2);
		sum += word;
	}
	return (uint16_t)~fold(sum);
}

static uint16_t csum_replace(uint16_t csum, uint16_t old_word, uint16_t new_word)
{
	return (uint16_t)~fold((uint64_t)(uint16_t)~csum + (uint16_t)~old_word + new_word);
}

/* Write len bytes (even) of value at offset off (even) of the header, keeping hdr->csum right. */
static void hdr_rewrite(struct app_hdr *hdr, size_t off, const void *value, size_t len)
{
	unsigned char *bytes = (unsigned char *)hdr;
	for (size_t i = 0; i < len; i += 2) {
		uint16_t old_word, new_word;
		memcpy(&old_word, bytes + off + i, 2);
		memcpy(bytes + off + i, (const unsigned char *)value + i, 2);
		memcpy(&new_word, bytes + off + i, 2);
		hdr->csum = csum_replace(hdr->csum, old_word, new_word);
	}
}

/* ---- ring ---------------------------------------------------------------------------- */

static uint32_t ring_enqueue_burst(struct ring *r, void *const *objs, uint32_t n)
{
	uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint32_t room = RING_SIZE - (head - tail);
	if (n > room)
		n = room;
	for (uint32_t i = 0; i < n; i++)
		r->slot[(head + i) & (RING_SIZE - 1)] = objs[i];
	/* seq_cst, not just release: ring_wake's load of `sleeping` must not pass it */
	atomic_store_explicit(&r->head, head + n, memory_order_seq_cst);
	return n;
}

static uint32_t ring_dequeue_burst(struct ring *r, void **objs, uint32_t max)
{
	uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	uint32_t n = head - tail < max ? head - tail : max;
	for (uint32_t i = 0; i < n; i++)
		objs[i] = r->slot[(tail + i) & (RING_SIZE - 1)];
	atomic_store_explicit(&r->tail, tail + n, memory_order_release);
	return n;
}

static long futex(_Atomic uint32_t *word, int op, uint32_t value, const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op, value, timeout, NULL, 0);
}

/*
 * Consumer: sleep until the producer rings (or POLL_TIMEOUT_MS), unless work is
 * there. Dekker's handshake, all seq_cst: the consumer stores `sleeping` then
 * loads `head`; the producer stores `head` then loads `sleeping`; at least one
 * of them sees the other's store, so a wake-up is never lost.
 */
static void ring_wait(struct ring *r)
{
	static const struct timespec timeout = { 0, POLL_TIMEOUT_MS * 1000000L };
	atomic_store(&r->sleeping, 1);
	if (atomic_load(&r->head) == atomic_load_explicit(&r->tail, memory_order_relaxed)
	    && !atomic_load(&r->done))
		futex(&r->sleeping, FUTEX_WAIT_PRIVATE, 1, &timeout);
	atomic_store(&r->sleeping, 0);
}

/* Producer, after an enqueue or after setting done: a system call only if the consumer sleeps. */
static void ring_wake(struct ring *r)
{
	if (atomic_load(&r->sleeping) && atomic_exchange(&r->sleeping, 0))
		futex(&r->sleeping, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/* ---- generator thread ------------------------------------------------------------------ */

static void gen_fill(unsigned char *data, uint32_t size, uint64_t seq)
{
	struct app_hdr hdr = { MAGIC_GEN, TTL0, 0, 0, seq };
	memcpy(data, &hdr, sizeof(hdr));
	for (uint32_t i = sizeof(hdr); i < size; i++)
		data[i] = (unsigned char)(seq + i);
	hdr.csum = inet_csum(data, size);
	memcpy(data + offsetof(struct app_hdr, csum), &hdr.csum, sizeof(hdr.csum));
}

/* Send n datagrams numbered from seq; returns how many the kernel accepted. */
static uint64_t gen_send(struct pipeline *p, struct gen_state *g, uint32_t n, uint64_t seq)
{
	for (uint32_t i = 0; i < n; i++) {
		gen_fill(g->data[i], p->cfg.size, seq + i);
		g->iov[i] = (struct iovec){ g->data[i], p->cfg.size };
		g->msgs[i].msg_hdr = (struct msghdr){ .msg_iov = &g->iov[i], .msg_iovlen = 1 };
	}
	uint32_t done = 0;
	while (done < n) {
		int k = sendmmsg(p->gen_fd, g->msgs + done, n - done, 0);
		if (k <= 0) {
			p->gen.send_errors++;
			break;
		}
		done += (uint32_t)k;
	}
	return done;
}

/* Bursts of `burst` packets, one every burst/rate seconds: the average rate is exact
 * unless the generator falls behind; it stops at the end time or count regardless. */
static void *gen_main(void *arg)
{
	struct pipeline *p = arg;
	uint32_t burst = (uint32_t)(p->cfg.rate / 2000.0);
	burst = burst < 1 ? 1 : burst > BURST ? BURST : burst;
	uint64_t start = now_ns(), end = start + (uint64_t)(p->cfg.duration * 1e9);
	uint64_t seq = 0;
	for (uint64_t k = 0; seq < p->cfg.count; k++) {
		uint64_t due = start + (uint64_t)((double)k * burst * 1e9 / p->cfg.rate);
		if (due >= end || now_ns() >= end)
			break;
		sleep_until_ns(due);
		uint64_t left = p->cfg.count - seq;
		uint32_t n = left < burst ? (uint32_t)left : burst;
		p->gen.sent += gen_send(p, &p->gen_state, n, seq);
		seq += n;
	}
	p->gen.seconds = (double)(now_ns() - start) * 1e-9;
	atomic_store_explicit(&p->gen_done, 1, memory_order_release);
	return NULL;
}

/* ---- RX thread ----------------------------------------------------------------------- */

static void rx_refill(struct pipeline *p, struct rx_state *s)
{
	uint64_t t0 = now_ns();
	uint32_t before = s->nspare;
	while (s->nspare < BURST) {
		void *buf = p->alloc->alloc(s->ctx);
		if (!buf) {
			p->rx.alloc_failures++;
			break;
		}
		s->spare[s->nspare++] = buf;
	}
	p->rx.allocs += s->nspare - before;
	p->rx.alloc_ns += elapsed_since(t0, p->timer_overhead_ns);
}

static int rx_receive(struct pipeline *p, struct rx_state *s)
{
	for (uint32_t i = 0; i < s->nspare; i++) {
		s->iov[i] = (struct iovec){ (unsigned char *)s->spare[i] + DATA_OFF, DATA_ROOM };
		s->msgs[i].msg_hdr = (struct msghdr){ .msg_iov = &s->iov[i], .msg_iovlen = 1 };
	}
	return recvmmsg(p->rx_fd, s->msgs, s->nspare, MSG_DONTWAIT, NULL);
}

/* Block until the RX socket has data or POLL_TIMEOUT_MS passed; true if it has data. */
static bool rx_wait(struct pipeline *p)
{
	struct pollfd fd = { p->rx_fd, POLLIN, 0 };
	return poll(&fd, 1, POLL_TIMEOUT_MS) > 0;
}

/* Hand the first n spare buffers (just filled) to the worker; drop what the ring cannot take. */
static void rx_hand_off(struct pipeline *p, struct rx_state *s, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct pkt *pkt = s->spare[i];
		pkt->data_off = DATA_OFF;
		pkt->len = (uint16_t)s->msgs[i].msg_len;
	}
	uint32_t queued = ring_enqueue_burst(&p->ring, s->spare, n);
	ring_wake(&p->ring);
	for (uint32_t i = queued; i < n; i++)
		p->alloc->free_local(s->ctx, s->spare[i]);
	p->rx.ring_drops += n - queued;
	p->rx.frees += n - queued;
	p->rx.rx += n;
	s->nspare -= n;
	memmove(s->spare, s->spare + n, s->nspare * sizeof(s->spare[0]));
}

/*
 * One round: refill, receive what is there, hand it off; else wait for data.
 * Busy time counts rounds that received packets. False once the generator
 * has stopped and the socket then stayed empty for a whole poll timeout.
 */
static bool rx_round(struct pipeline *p, struct rx_state *s)
{
	bool gen_done = atomic_load_explicit(&p->gen_done, memory_order_acquire);
	uint64_t t0 = now_ns();
	rx_refill(p, s);
	int n = s->nspare ? rx_receive(p, s) : 0;
	if (n > 0) {
		rx_hand_off(p, s, (uint32_t)n);
		p->rx.busy_ns += elapsed_since(t0, p->timer_overhead_ns);
		p->rx.calls++;
		return true;
	}
	if (n < 0 && errno != EAGAIN && errno != EINTR)
		p->rx.recv_errors++;
	if (s->nspare == 0) { /* out of buffers: the kernel queues, or drops, meanwhile */
		sleep_until_ns(now_ns() + POLL_TIMEOUT_MS * 1000000ull);
		return !gen_done;
	}
	return rx_wait(p) || !gen_done;
}

static void *rx_main(void *arg)
{
	struct pipeline *p = arg;
	struct rx_state *s = &p->rx_state;
	s->ctx = p->alloc->ctx_new(); /* a pf_cache_t belongs to the thread that made it */
	if (s->ctx) {
		while (rx_round(p, s))
			;
		for (uint32_t i = 0; i < s->nspare; i++)
			p->alloc->free_local(s->ctx, s->spare[i]);
		p->rx.frees += s->nspare;
		p->alloc->ctx_delete(s->ctx);
	} else {
		p->rx.alloc_failures++;
	}
	p->rx.cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	atomic_store(&p->ring.done, 1);
	ring_wake(&p->ring);
	return NULL;
}

/* ---- worker thread -------------------------------------------------------------------- */

/* Verify, rewrite, encapsulate in place. False for a datagram that fails the checks. */
static bool process(struct pkt *pkt, uint32_t seq)
{
	unsigned char *data = (unsigned char *)pkt + pkt->data_off;
	struct app_hdr hdr;
	if (pkt->len < sizeof(hdr) || inet_csum(data, pkt->len) != 0)
		return false;
	memcpy(&hdr, data, sizeof(hdr));
	if (hdr.magic != MAGIC_GEN || hdr.ttl == 0)
		return false;
	const uint32_t magic = MAGIC_FWD;
	const unsigned char ttl_flags[2] = { (unsigned char)(hdr.ttl - 1), hdr.flags };
	hdr_rewrite(&hdr, offsetof(struct app_hdr, magic), &magic, sizeof(magic));
	hdr_rewrite(&hdr, offsetof(struct app_hdr, ttl), ttl_flags, sizeof(ttl_flags));
	memcpy(data, &hdr, sizeof(hdr));
	struct encap_hdr encap = { MAGIC_ENCAP, seq };
	pkt->data_off -= sizeof(encap);
	pkt->len += sizeof(encap);
	memcpy((unsigned char *)pkt + pkt->data_off, &encap, sizeof(encap));
	return true;
}

static void worker_send(struct pipeline *p, struct worker_state *w, uint32_t n)
{
	uint32_t done = 0;
	while (done < n) {
		int k = sendmmsg(p->tx_fd, w->msgs + done, n - done, 0);
		if (k <= 0) {
			p->work.tx_errors += n - done;
			return;
		}
		done += (uint32_t)k;
	}
	p->work.forwarded += n;
}

static void worker_free(struct pipeline *p, struct worker_state *w, uint32_t n)
{
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++)
		if (p->alloc->free_remote(w->bufs[i]) != 0)
			p->work.free_failures++;
	p->work.free_ns += elapsed_since(t0, p->timer_overhead_ns);
	p->work.frees += n;
}

static void worker_burst(struct pipeline *p, struct worker_state *w, uint32_t n)
{
	uint64_t t0 = now_ns();
	uint32_t good = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct pkt *pkt = w->bufs[i];
		if (!process(pkt, w->seq++)) {
			p->work.bad++;
			continue;
		}
		w->iov[good] = (struct iovec){ (unsigned char *)pkt + pkt->data_off, pkt->len };
		w->msgs[good].msg_hdr = (struct msghdr){ .msg_iov = &w->iov[good], .msg_iovlen = 1 };
		good++;
	}
	worker_send(p, w, good);
	worker_free(p, w, n); /* sendmmsg copied the bytes: the buffers can go */
	p->work.handled += n;
	p->work.busy_ns += elapsed_since(t0, p->timer_overhead_ns);
}

static void *worker_main(void *arg)
{
	struct pipeline *p = arg;
	struct worker_state *w = &p->worker_state;
	for (;;) {
		bool rx_done = atomic_load_explicit(&p->ring.done, memory_order_acquire);
		uint32_t n = ring_dequeue_burst(&p->ring, w->bufs, BURST);
		if (n)
			worker_burst(p, w, n);
		else if (rx_done)
			break;
		else
			ring_wait(&p->ring);
	}
	if (p->alloc == &pyfrag_allocator)
		pf_thread_flush(); /* freed pages sit on this thread's page lists: give them back */
	p->work.cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	atomic_store_explicit(&p->worker_done, 1, memory_order_release);
	return NULL;
}

/* ---- sink (main thread) ----------------------------------------------------------------- */

static bool sink_check(const unsigned char *data, uint32_t len, uint32_t size)
{
	struct encap_hdr encap;
	struct app_hdr hdr;
	if (len != size + sizeof(encap))
		return false;
	memcpy(&encap, data, sizeof(encap));
	memcpy(&hdr, data + sizeof(encap), sizeof(hdr));
	return encap.magic == MAGIC_ENCAP && hdr.magic == MAGIC_FWD && hdr.ttl == TTL0 - 1
	       && inet_csum(data + sizeof(encap), size) == 0;
}

static void sink_run(struct pipeline *p)
{
	static unsigned char data[BURST][BUF_SIZE];
	struct iovec iov[BURST];
	struct mmsghdr msgs[BURST];
	for (;;) {
		bool worker_done = atomic_load_explicit(&p->worker_done, memory_order_acquire);
		for (uint32_t i = 0; i < BURST; i++) {
			iov[i] = (struct iovec){ data[i], BUF_SIZE };
			msgs[i].msg_hdr = (struct msghdr){ .msg_iov = &iov[i], .msg_iovlen = 1 };
		}
		int n = recvmmsg(p->sink_fd, msgs, BURST, MSG_WAITFORONE, NULL);
		if (n <= 0 && worker_done)
			return;
		for (int i = 0; i < n; i++)
			p->sink.bad += !sink_check(data[i], msgs[i].msg_len, p->cfg.size);
		p->sink.rx += n > 0 ? (uint64_t)n : 0;
	}
}

/* ---- sockets ------------------------------------------------------------------------ */

static int udp_socket(void)
{
	return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

/* A socket bound to 127.0.0.1 on an ephemeral port; a blocking receive waits POLL_TIMEOUT_MS. */
static int bound_socket(struct sockaddr_in *addr)
{
	int fd = udp_socket();
	socklen_t len = sizeof(*addr);
	int rcvbuf = RCVBUF_BYTES;
	struct timeval timeout = { 0, POLL_TIMEOUT_MS * 1000 };
	*addr = (struct sockaddr_in){ .sin_family = AF_INET,
				      .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0
	    || getsockname(fd, (struct sockaddr *)addr, &len) < 0
	    || setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0
	    || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int connected_socket(const struct sockaddr_in *to)
{
	int fd = udp_socket();
	if (fd >= 0 && connect(fd, (const struct sockaddr *)to, sizeof(*to)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int open_sockets(struct pipeline *p)
{
	struct sockaddr_in rx_addr, sink_addr;
	p->rx_fd = bound_socket(&rx_addr);
	p->sink_fd = bound_socket(&sink_addr);
	if (p->rx_fd < 0 || p->sink_fd < 0)
		return -1;
	p->gen_fd = connected_socket(&rx_addr);
	p->tx_fd = connected_socket(&sink_addr);
	return p->gen_fd < 0 || p->tx_fd < 0 ? -1 : 0;
}

static void close_sockets(struct pipeline *p)
{
	close(p->rx_fd);
	close(p->gen_fd);
	close(p->sink_fd);
	close(p->tx_fd);
}

/* ---- kernel counters ---------------------------------------------------------------- */

/* Datagrams the kernel dropped at this socket (receive buffer full): the "drops"
 * column of /proc/net/udp for the socket's inode. -1 if it cannot be read. */
static long long socket_drops(int fd)
{
	struct stat st;
	FILE *f = fopen("/proc/net/udp", "r");
	long long drops = -1;
	char line[512];
	if (!f || fstat(fd, &st) < 0) {
		if (f)
			fclose(f);
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long inode;
		long long value;
		if (sscanf(line, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %lu %*s %*s %lld", &inode,
			   &value) == 2 && inode == (unsigned long)st.st_ino)
			drops = value;
	}
	fclose(f);
	return drops;
}

/* Packets the kernel dropped before any socket (per-CPU backlog full), all CPUs:
 * the second column of /proc/net/softnet_stat. -1 if it cannot be read. */
static long long backlog_drops(void)
{
	FILE *f = fopen("/proc/net/softnet_stat", "r");
	long long total = 0;
	unsigned int dropped;
	if (!f)
		return -1;
	while (fscanf(f, "%*x %x%*[^\n]", &dropped) == 1)
		total += dropped;
	fclose(f);
	return total;
}

/* ---- command line -------------------------------------------------------------------- */

static const char usage_text[] =
	"usage: udp_pipeline [--alloc pyfrag|malloc] [--rate PPS] [--duration S]\n"
	"                    [--count N] [--size BYTES]\n"
	"  --alloc     where RX buffers come from (default pyfrag)\n"
	"  --rate      packets per second the generator sends (default 50000, at most 1e7)\n"
	"  --duration  seconds the generator runs (default 2, at most 60)\n"
	"  --count     packets the generator sends at most (default: rate x duration)\n"
	"  --size      UDP payload bytes, 16..1920 (default 64)\n";

static int usage_error(const char *what, const char *value)
{
	fprintf(stderr, "udp_pipeline: error: %s%s%s\n%s", what, value ? ": " : "",
		value ? value : "", usage_text);
	return 2;
}

static bool parse_double(const char *text, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || *end || !(v >= lo && v <= hi))
		return false;
	*out = v;
	return true;
}

static int parse_option(struct config *cfg, int opt, const char *arg)
{
	double v;
	switch (opt) {
	case 'a':
		if (strcmp(arg, "pyfrag") && strcmp(arg, "malloc"))
			return usage_error("--alloc takes pyfrag or malloc", arg);
		cfg->use_pyfrag = !strcmp(arg, "pyfrag");
		return 0;
	case 'r':
		return parse_double(arg, 1, MAX_RATE, &cfg->rate) ? 0 : usage_error("bad --rate", arg);
	case 'd':
		return parse_double(arg, 0.01, MAX_DURATION_S, &cfg->duration)
			       ? 0 : usage_error("bad --duration", arg);
	case 'c':
		if (!parse_double(arg, 1, (double)MAX_COUNT, &v) || v != (double)(uint64_t)v)
			return usage_error("bad --count", arg);
		cfg->count = (uint64_t)v;
		return 0;
	case 's':
		if (!parse_double(arg, sizeof(struct app_hdr), DATA_ROOM, &v) || v != (double)(uint32_t)v)
			return usage_error("bad --size", arg);
		cfg->size = (uint32_t)v;
		return 0;
	}
	return usage_error("unknown option", NULL);
}

/* 0 to run, 2 after a usage error, -1 after --help. */
static int parse_args(int argc, char **argv, struct config *cfg)
{
	static const struct option longopts[] = {
		{ "alloc", required_argument, NULL, 'a' },  { "rate", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' }, { "count", required_argument, NULL, 'c' },
		{ "size", required_argument, NULL, 's' },   { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	*cfg = (struct config){ true, 50000, 2, 0, 64 };
	opterr = 0;
	int opt;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(usage_text, stdout);
			return -1;
		}
		if (opt == '?')
			return usage_error("unknown option or missing value", argv[optind - 1]);
		if (parse_option(cfg, opt, optarg))
			return 2;
	}
	if (optind < argc)
		return usage_error("unexpected argument", argv[optind]);
	if (!cfg->count)
		cfg->count = (uint64_t)(cfg->rate * cfg->duration + 0.5);
	return 0;
}

/* ---- report ---------------------------------------------------------------------------- */

struct report {
	long long rx_missed, sink_missed, backlog; /* kernel counters, -1 unknown */
	long long drops;
	pf_stats_t lib_before, lib_after;
	const char *failure;
};

static void print_count(const char *name, long long value, const char *doc)
{
	if (value < 0)
		printf("%-16s %12s  %s\n", name, "unknown", doc);
	else
		printf("%-16s %12lld  %s\n", name, value, doc);
}

static void print_ns(const char *name, uint64_t ns, uint64_t packets, const char *doc)
{
	printf("%-16s %12.1f  %s\n", name, packets ? (double)ns / (double)packets : 0.0, doc);
}

static void print_counts(const struct pipeline *p, const struct report *r)
{
	print_count("sent", (long long)p->gen.sent, "datagrams the generator sent");
	print_count("delivered", (long long)p->sink.rx, "datagrams the sink received");
	print_count("drops", r->drops, "sum of the drop counters below");
	print_count("rx_missed", r->rx_missed, "dropped by the kernel: RX socket buffer full");
	print_count("ring_drops", (long long)p->rx.ring_drops, "dropped by RX: ring full");
	print_count("bad", (long long)p->work.bad, "dropped by the worker: failed checks");
	print_count("tx_errors", (long long)p->work.tx_errors, "dropped by the worker: sendmmsg failed");
	print_count("sink_missed", r->sink_missed, "dropped by the kernel: sink socket buffer full");
	print_count("backlog_drops", r->backlog, "dropped by the kernel before any socket (all CPUs)");
	print_count("rx", (long long)p->rx.rx, "datagrams the RX thread received");
	print_count("forwarded", (long long)p->work.forwarded, "datagrams the worker sent on");
	print_count("sink_bad", (long long)p->sink.bad, "delivered datagrams failing the sink's checks");
	print_count("buffers_alloc", (long long)p->rx.allocs, "RX buffers allocated");
	print_count("buffers_freed", (long long)(p->rx.frees + p->work.frees), "RX buffers freed");
	print_count("alloc_failures", (long long)p->rx.alloc_failures, "RX buffer allocations failed");
}

static void print_costs(const struct pipeline *p)
{
	printf("%-16s %12.1f  %s\n", "avg_rx_burst",
	       p->rx.calls ? (double)p->rx.rx / (double)p->rx.calls : 0.0,
	       "datagrams per recvmmsg call that returned some");
	print_ns("alloc_ns", p->rx.alloc_ns, p->rx.allocs, "ns per RX buffer allocation (RX thread)");
	print_ns("free_ns", p->work.free_ns, p->work.frees, "ns per RX buffer free (worker thread)");
	print_ns("rx_ns", p->rx.busy_ns, p->rx.rx, "RX ns per packet: refill, recvmmsg, enqueue");
	print_ns("worker_ns", p->work.busy_ns, p->work.handled,
		 "worker ns per packet: checksum, rewrite, sendmmsg, free");
	printf("%-16s %12.1f  %s\n", "ns_per_pkt",
	       (p->rx.rx ? (double)p->rx.busy_ns / (double)p->rx.rx : 0.0)
		       + (p->work.handled ? (double)p->work.busy_ns / (double)p->work.handled : 0.0),
	       "rx_ns + worker_ns: one packet through the pipeline, waits excluded");
	print_ns("cpu_ns_per_pkt", p->rx.cpu_ns + p->work.cpu_ns, p->rx.rx,
		 "RX + worker thread CPU time per packet, wake-ups included");
}

static void print_library(const struct report *r)
{
#define DELTA(field) (long long)(r->lib_after.field - r->lib_before.field)
	print_count("pf_allocs", DELTA(allocs), "pyfrag: fragments handed out");
	print_count("pf_frees", DELTA(frees), "pyfrag: fragments freed");
	print_count("pf_refills", DELTA(refills), "pyfrag: frag pages taken");
	print_count("pf_recycles", DELTA(recycles), "pyfrag: frag pages reused in place");
	print_count("pf_abandons", DELTA(abandons), "pyfrag: frag pages left to their fragments");
#undef DELTA
	print_count("pf_peak_committed", (long long)r->lib_after.peak_committed_bytes,
		    "pyfrag: most bytes committed in chunks");
	print_count("pf_chunks_hugetlb", (long long)r->lib_after.chunks_hugetlb,
		    "pyfrag: committed chunks on hugetlb pages now");
}

/* The first accounting rule that does not hold, or NULL. */
static const char *check(const struct pipeline *p, const struct report *r)
{
	uint64_t lost_rx = p->gen.sent - p->rx.rx, lost_sink = p->work.forwarded - p->sink.rx;
	if (p->rx.rx != p->work.handled + p->rx.ring_drops)
		return "rx != handled + ring_drops";
	if (p->work.handled != p->work.forwarded + p->work.tx_errors + p->work.bad)
		return "handled != forwarded + tx_errors + bad";
	if (p->rx.rx > p->gen.sent || p->sink.rx > p->work.forwarded)
		return "a stage received more than was sent to it";
	/* backlog_drops counts every CPU's backlog, other programs' packets too: an upper bound */
	long long unexplained = (long long)(lost_rx + lost_sink) - r->rx_missed - r->sink_missed;
	if (r->rx_missed >= 0 && r->sink_missed >= 0 && r->backlog >= 0
	    && (unexplained < 0 || unexplained > r->backlog))
		return "datagrams lost in the kernel without a kernel drop counter saying so";
	if (p->rx.allocs != p->rx.frees + p->work.frees || p->work.free_failures)
		return "RX buffers leaked or a free failed";
	if (r->lib_after.allocs - r->lib_before.allocs != r->lib_after.frees - r->lib_before.frees)
		return "the library counts fragments still out";
	if (p->work.bad || p->sink.bad)
		return "datagrams failed the checksum or header checks";
	if (p->gen.send_errors || p->rx.recv_errors)
		return "send or receive errors";
	return NULL;
}

static void collect(const struct pipeline *p, struct report *r)
{
	r->rx_missed = socket_drops(p->rx_fd);
	r->sink_missed = socket_drops(p->sink_fd);
	long long backlog_after = backlog_drops();
	r->backlog = r->backlog >= 0 && backlog_after >= 0 ? backlog_after - r->backlog : -1;
	/* what the kernel does not count is counted where it was lost */
	long long kernel = (long long)(p->gen.sent - p->rx.rx)
			   + (long long)(p->work.forwarded - p->sink.rx);
	r->drops = kernel + (long long)(p->rx.ring_drops + p->work.bad + p->work.tx_errors);
	pf_stats_get(&r->lib_after, sizeof(r->lib_after));
	r->failure = check(p, r);
}

static void print_report(const struct pipeline *p, const struct report *r)
{
	printf("udp_pipeline: alloc=%s rate=%.0f/s duration=%.2fs size=%u burst=%u ring=%u "
	       "buffer=%u (headroom %u)\n", p->alloc->name, p->cfg.rate, p->gen.seconds, p->cfg.size,
	       BURST, RING_SIZE, BUF_SIZE, HEADROOM);
	print_counts(p, r);
	print_costs(p);
	if (p->alloc == &pyfrag_allocator)
		print_library(r);
	if (r->failure)
		printf("result FAILED: %s\n", r->failure);
	else
		printf("result ok\n");
}

/* ---- main ------------------------------------------------------------------------------- */

static void watchdog(int sig)
{
	static const char msg[] = "udp_pipeline: watchdog: the run did not finish in time\n";
	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

static int run(struct pipeline *p, struct report *r)
{
	pthread_t gen, rx, worker;
	signal(SIGALRM, watchdog);
	alarm((unsigned)p->cfg.duration + WATCHDOG_SLACK_S);
	r->backlog = backlog_drops();
	pf_stats_get(&r->lib_before, sizeof(r->lib_before));
	if (pthread_create(&worker, NULL, worker_main, p) || pthread_create(&rx, NULL, rx_main, p)
	    || pthread_create(&gen, NULL, gen_main, p)) {
		fprintf(stderr, "udp_pipeline: error: cannot start threads\n");
		_exit(1); /* the threads that did start cannot be stopped cleanly */
	}
	sink_run(p);
	pthread_join(gen, NULL);
	pthread_join(rx, NULL);
	pthread_join(worker, NULL);
	collect(p, r);
	alarm(0);
	return 0;
}

int main(int argc, char **argv)
{
	static struct pipeline p;
	struct report r;
	int rc = parse_args(argc, argv, &p.cfg);
	if (rc)
		return rc < 0 ? 0 : rc;
	p.alloc = p.cfg.use_pyfrag ? &pyfrag_allocator : &malloc_allocator;
	p.timer_overhead_ns = measure_timer_overhead();
	if (open_sockets(&p) < 0) {
		fprintf(stderr, "udp_pipeline: error: loopback sockets: %s\n", strerror(errno));
		return 1;
	}
	memset(&r, 0, sizeof(r));
	run(&p, &r);
	close_sockets(&p);
	print_report(&p, &r);
	return r.failure ? 1 : 0;
}
