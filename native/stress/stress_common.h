/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What the two stress loops (stress.c, stress_shared.c) share: the clock,
 * sleeping, the random mix, the fragment pattern, the size parameters' check
 * and the SPSC ring.
 *
 * The pattern: an 8-byte tag (fewer bytes for smaller fragments) then a fill
 * byte taken from the tag, never 0 (the value of fresh memory). Two live
 * fragments that overlap, or one handed out twice, break one of the patterns.
 */
#ifndef PYFRAG_STRESS_COMMON_H
#define PYFRAG_STRESS_COMMON_H

#include "pyfrag.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* Set pf_stress_error_message() and errno; returns -1 (stress.c). */
int pf__stress_fail(int err, const char *message);

static inline uint64_t stress_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void stress_sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static inline uint64_t stress_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline unsigned char stress_fill_byte(uint64_t tag)
{
	return (unsigned char)((tag >> 56) | 1);
}

static inline size_t stress_tag_bytes(uint32_t size)
{
	return size < sizeof(uint64_t) ? size : sizeof(uint64_t);
}

static inline void stress_fill(unsigned char *p, uint32_t size, uint64_t tag)
{
	size_t head = stress_tag_bytes(size);
	memcpy(p, &tag, head);
	memset(p + head, stress_fill_byte(tag), size - head);
}

static inline bool stress_intact(const unsigned char *p, uint32_t size, uint64_t tag)
{
	size_t i = stress_tag_bytes(size);
	if (memcmp(p, &tag, i) != 0)
		return false;
	unsigned char byte = stress_fill_byte(tag);
	uint64_t word = byte * 0x0101010101010101ull, diff = 0;
	for (; i + sizeof(word) <= size; i += sizeof(word)) {
		uint64_t v;
		memcpy(&v, p + i, sizeof(v));
		diff |= v ^ word;
	}
	for (; i < size; i++)
		diff |= (uint64_t)(p[i] ^ byte);
	return diff == 0;
}

/*
 * The size parameters both loops take: a table of sizes (nsizes entries), or
 * without one a range [size_min, size_max]. NULL if usable, else why not.
 */
static inline const char *stress_check_sizes(const uint32_t *sizes, uint32_t nsizes,
					     uint32_t size_min, uint32_t size_max)
{
	if (!nsizes) {
		if (size_min < 1 || size_min > size_max || size_max > PF_FRAG_PAGE_SIZE)
			return "size_min and size_max must satisfy 1 <= size_min <= size_max <= 32768";
		return NULL;
	}
	if (!sizes)
		return "nsizes is not 0 but sizes is NULL";
	for (uint32_t i = 0; i < nsizes; i++)
		if (sizes[i] < 1 || sizes[i] > PF_FRAG_PAGE_SIZE)
			return "every entry of sizes must be between 1 and 32768";
	return NULL;
}

/*
 * ring_push and ring_pop for a single-producer single-consumer ring type:
 * a struct with atomic head (written by the producer) and tail (by the
 * consumer) of type index_t, a mask (slots - 1) and slots[] of item_t.
 * The index type is the ring's own: the difference head - tail must wrap
 * in that type.
 */
#define STRESS_SPSC_RING(ring_t, item_t, index_t)                                      \
	static bool ring_push(ring_t *r, const item_t *item)                           \
	{                                                                               \
		index_t head = atomic_load_explicit(&r->head, memory_order_relaxed);    \
		index_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);    \
		if ((index_t)(head - tail) > r->mask)                                   \
			return false;                                                   \
		r->slots[head & r->mask] = *item;                                       \
		atomic_store_explicit(&r->head, head + 1, memory_order_release);        \
		return true;                                                            \
	}                                                                               \
	static bool ring_pop(ring_t *r, item_t *item)                                  \
	{                                                                               \
		index_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);    \
		index_t head = atomic_load_explicit(&r->head, memory_order_acquire);    \
		if (tail == head)                                                       \
			return false;                                                   \
		*item = r->slots[tail & r->mask];                                       \
		atomic_store_explicit(&r->tail, tail + 1, memory_order_release);        \
		return true;                                                            \
	}

#endif /* PYFRAG_STRESS_COMMON_H */
