/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A DPDK-style primary and its secondaries over one shared pyfrag arena.
 *
 * The primary creates the arena, allocates one ring per secondary from the
 * arena itself (so every process sees it at the same place), and starts each
 * secondary as a new program (this one, run with --secondary NAME OFFSET).
 * Then it allocates "packets" (fragments of --size bytes, each stamped with
 * its sequence number and a checksum) and pushes their offsets onto the
 * rings. Each secondary attaches by name, pops offsets, checks the packet,
 * and frees it: a fragment allocated in one process, freed in another.
 *
 * At the end the primary prints what every process counted and the arena's
 * own statistics: every packet back, no page left in use.
 *
 *   shared_primary [--secondaries N] [--packets N] [--size BYTES]
 */
#include <pyfrag_shared.h>

#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define RING_SLOTS 1024u /* a power of two */

struct ring { /* single producer (the primary), single consumer (one secondary) */
	_Alignas(64) _Atomic uint64_t head; /* next slot the producer writes */
	_Alignas(64) _Atomic uint64_t tail; /* next slot the consumer reads */
	_Alignas(64) uint64_t slots[RING_SLOTS];
};

#define DONE UINT64_MAX /* the last message on a ring */

struct packet {
	uint64_t seq;
	uint32_t length;
	uint32_t checksum; /* of the bytes after the header */
};

static uint32_t checksum(const unsigned char *p, size_t n)
{
	uint32_t sum = 2166136261u;
	for (size_t i = 0; i < n; i++)
		sum = (sum ^ p[i]) * 16777619u;
	return sum;
}

struct consumer {
	struct ring *ring;
	pid_t pid;
	int status; /* waitpid status once it has exited */
	bool exited;
};

/* Has the consumer exited (so a full ring will never drain)? Reaps it if so. */
static bool consumer_gone(struct consumer *c)
{
	if (!c->exited && waitpid(c->pid, &c->status, WNOHANG) == c->pid)
		c->exited = true;
	return c->exited;
}

/* Push, waiting while the ring is full; false if its consumer is gone. */
static bool ring_push(struct consumer *c, uint64_t value)
{
	struct ring *r = c->ring;
	if (c->exited)
		return false;
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	for (unsigned spins = 0; head - atomic_load_explicit(&r->tail, memory_order_acquire) == RING_SLOTS;
	     spins++) {
		if (spins % 1024 == 1023 && consumer_gone(c))
			return false;
		sched_yield(); /* full: let the consumer run (there may be fewer cores than processes) */
	}
	r->slots[head % RING_SLOTS] = value;
	atomic_store_explicit(&r->head, head + 1, memory_order_release);
	return true;
}

static uint64_t ring_pop(struct ring *r)
{
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	while (atomic_load_explicit(&r->head, memory_order_acquire) == tail)
		sched_yield();
	uint64_t value = r->slots[tail % RING_SLOTS];
	atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
	return value;
}

static int die(const char *what)
{
	fprintf(stderr, "shared_primary: %s: %s\n", what, pf_last_error_message());
	return 1;
}

/* ---- a secondary: attach, consume, verify, free --------------------------------- */

static int secondary(const char *name, uint64_t ring_offset)
{
	pf_shared_t *arena = pf_shared_attach(name, NULL);
	if (!arena)
		return die("attach");
	struct ring *ring = pf_shared_address(arena, ring_offset);
	if (!ring)
		return die("ring offset");
	uint64_t received = 0, bad = 0;
	for (uint64_t off; (off = ring_pop(ring)) != DONE; received++) {
		struct packet *pkt = pf_shared_address(arena, off);
		if (!pkt || checksum((unsigned char *)(pkt + 1), pkt->length - sizeof(*pkt)) !=
				    pkt->checksum)
			bad++;
		if (pf_shared_free(arena, pkt) != 0) /* allocated by the primary */
			bad++;
	}
	printf("secondary %d: received %llu, bad %llu\n", (int)getpid(),
	       (unsigned long long)received, (unsigned long long)bad);
	pf_shared_detach(arena);
	return bad ? 1 : 0;
}

/* ---- the primary -------------------------------------------------------------------- */

static int usage(const char *bad)
{
	fprintf(stderr, "shared_primary: error: bad or missing value for %s\n"
			"usage: shared_primary [--secondaries 1..16] [--packets N] [--size 16..32768]\n",
		bad);
	return 2;
}

static pid_t start_secondary(const char *self, const char *name, uint64_t ring_offset)
{
	char offset_text[32];
	snprintf(offset_text, sizeof(offset_text), "%llu", (unsigned long long)ring_offset);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execl(self, self, "--secondary", name, offset_text, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static struct packet *make_packet(pf_shared_t *arena, uint64_t seq, uint32_t size)
{
	struct packet *pkt = pf_shared_alloc_align(arena, size, _Alignof(struct packet));
	if (!pkt)
		return NULL;
	pkt->seq = seq;
	pkt->length = size;
	unsigned char *body = (unsigned char *)(pkt + 1);
	for (size_t i = 0; i < size - sizeof(*pkt); i++)
		body[i] = (unsigned char)(seq + i);
	pkt->checksum = checksum(body, size - sizeof(*pkt));
	return pkt;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--secondary") == 0)
		return secondary(argv[2], strtoull(argv[3], NULL, 10));
	unsigned long long secondaries = 2, packets = 200000, size = 1500;
	for (int i = 1; i < argc; i += 2) {
		unsigned long long *value = strcmp(argv[i], "--secondaries") == 0 ? &secondaries
					    : strcmp(argv[i], "--packets") == 0   ? &packets
					    : strcmp(argv[i], "--size") == 0      ? &size
										  : NULL;
		char *end = NULL;
		errno = 0;
		if (value && i + 1 < argc)
			*value = strtoull(argv[i + 1], &end, 10);
		if (!value || i + 1 >= argc || errno || !end || *end || argv[i + 1][0] == '-')
			return usage(argv[i]);
	}
	if (secondaries < 1 || secondaries > 16 || size < sizeof(struct packet) || size > 32768)
		return usage(secondaries < 1 || secondaries > 16 ? "--secondaries" : "--size");

	char name[64];
	snprintf(name, sizeof(name), "example-%d", (int)getpid());
	pf_shared_t *arena = pf_shared_create(name, 16u << 20, 0600, PF_SHARED_BACKING_AUTO, NULL);
	if (!arena)
		return die("create");
	pf_shared_stats_t s;
	pf_shared_stats(arena, &s, sizeof(s));
	static const char *backings[] = { "auto", "hugetlb", "thp", "4k" };
	printf("arena %s: %s, %llu MiB at %#llx\n", pf_shared_path(arena), backings[s.backing & 3],
	       (unsigned long long)(s.data_bytes >> 20), (unsigned long long)s.base);

	struct consumer consumers[16];
	memset(consumers, 0, sizeof(consumers));
	for (unsigned i = 0; i < secondaries; i++) {
		struct ring *ring = pf_shared_alloc_align(arena, sizeof(struct ring), 64);
		if (!ring)
			return die("ring");
		memset(ring, 0, sizeof(struct ring));
		consumers[i].ring = ring;
		consumers[i].pid = start_secondary(argv[0], name, pf_shared_offset(arena, ring));
	}
	uint64_t sent = 0, failed = 0;
	for (uint64_t seq = 0; seq < packets; seq++) {
		struct packet *pkt = make_packet(arena, seq, (uint32_t)size);
		if (pkt && ring_push(&consumers[seq % secondaries], pf_shared_offset(arena, pkt))) {
			sent++;
			continue;
		}
		if (pkt)
			pf_shared_free(arena, pkt); /* its secondary is gone */
		failed++;
	}
	int ok = failed == 0;
	for (unsigned i = 0; i < secondaries; i++) {
		struct consumer *c = &consumers[i];
		if (ring_push(c, DONE) && !c->exited)
			waitpid(c->pid, &c->status, 0);
		ok &= WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0;
		pf_shared_free(arena, c->ring);
	}
	pf_shared_thread_flush(arena); /* our cache's page goes back too */
	pf_shared_stats(arena, &s, sizeof(s));
	printf("sent %llu, not sent %llu\n", (unsigned long long)sent, (unsigned long long)failed);
	printf("arena: allocs %llu, frees %llu, refills %llu, recycles %llu, attaches %llu, "
	       "pages_in_use %llu\n",
	       (unsigned long long)s.allocs, (unsigned long long)s.frees,
	       (unsigned long long)s.refills, (unsigned long long)s.recycles,
	       (unsigned long long)s.attaches, (unsigned long long)s.pages_in_use);
	ok &= s.pages_in_use == 0 && s.allocs == s.frees;
	pf_shared_detach(arena);
	pf_shared_unlink(name, NULL);
	printf("%s\n", ok ? "ok" : "FAILED");
	return ok ? 0 : 1;
}
