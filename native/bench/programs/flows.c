// SPDX-License-Identifier: GPL-2.0-only
/*
 * flows: a DPDK-style packet program, a program of `pyfrag bench --workload
 * programs`: packet buffers that live for one burst beside a flow table whose
 * entries live long and die at random.
 *
 * PACKETS packets in bursts of 32: each burst allocates 32 buffers of IMIX
 * sizes (64, 576, 1500 bytes; 7:4:1), writes a header, looks its flow up in a
 * chained hash table (a new flow allocates a 96..223-byte entry and a name
 * string), and frees the buffers at the end of the burst. Every 64 bursts the
 * flows idle longest are expired (freed). The table also counts its packets,
 * so the per-flow counts must add up to the packets seen.
 * Prints "flows packets <n> flows_made <m> flows_live <l> bad <0 when the
 * counts agree>". Usage: flows [PACKETS]; exit 1 out of memory.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BURST 32
#define BUCKETS 65536
#define FLOW_SPACE 200000

struct flow {
	struct flow *next;
	uint32_t key;
	uint64_t packets;
	uint64_t last_seen;
	char *name;
	unsigned char state[];
};

static struct flow *table[BUCKETS];
static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void *must(void *p)
{
	if (!p) {
		perror("flows: malloc");
		exit(1);
	}
	return p;
}

static struct flow *lookup(uint32_t key, uint64_t now, long *made)
{
	struct flow **slot = &table[key % BUCKETS];

	for (struct flow *f = *slot; f; f = f->next)
		if (f->key == key)
			return f;
	size_t state = 96 + (size_t)(key % 128);
	struct flow *f = must(malloc(sizeof(*f) + state));

	memset(f->state, 0, state);
	f->key = key;
	f->packets = 0;
	f->last_seen = now;
	f->name = must(malloc(24 + key % 40));
	snprintf(f->name, 24 + key % 40, "flow-%u", key);
	f->next = *slot;
	*slot = f;
	(*made)++;
	return f;
}

/* Frees the flows not seen for `idle` bursts; returns the packets they had counted. */
static uint64_t expire(uint64_t now, uint64_t idle, long *live)
{
	uint64_t counted = 0;

	for (size_t b = 0; b < BUCKETS; b++) {
		struct flow **slot = &table[b];

		while (*slot) {
			struct flow *f = *slot;

			if (now - f->last_seen > idle) {
				*slot = f->next;
				counted += f->packets;
				free(f->name);
				free(f);
			} else {
				slot = &f->next;
				(*live)++;
			}
		}
	}
	return counted;
}

int main(int argc, char **argv)
{
	long packets = argc > 1 ? atol(argv[1]) : 10000000;
	static const size_t imix[12] = {64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1500};

	if (packets < BURST) {
		fprintf(stderr, "usage: flows [PACKETS] (PACKETS >= %d)\n", BURST);
		return 2;
	}
	long made = 0, live = 0, seen = 0;
	uint64_t expired_packets = 0;
	unsigned char *burst[BURST];

	for (uint64_t now = 0; seen + BURST <= packets; now++) {
		for (int i = 0; i < BURST; i++) {
			size_t size = imix[next_random() % 12];

			burst[i] = must(malloc(size));
			/* hot flows: most packets go to a few thousand keys, some to any */
			uint32_t key = (uint32_t)(next_random() % 8 ? next_random() % 4096
								    : next_random() % FLOW_SPACE);

			memcpy(burst[i], &key, sizeof(key));
			memset(burst[i] + sizeof(key), 0x5a, size - sizeof(key));
		}
		for (int i = 0; i < BURST; i++) {
			uint32_t key;

			memcpy(&key, burst[i], sizeof(key));
			struct flow *f = lookup(key, now, &made);

			f->packets++;
			f->last_seen = now;
			free(burst[i]);
		}
		seen += BURST;
		if (now % 64 == 63) {
			live = 0;
			expired_packets += expire(now, 2000, &live);
		}
	}
	live = 0;
	uint64_t remaining = expire(UINT64_MAX, 0, &live);
	long bad = (long)(expired_packets + remaining) != seen;

	printf("flows packets %ld flows_made %ld flows_live %ld bad %ld\n", seen, made, live, bad);
	return 0;
}
