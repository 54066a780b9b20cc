/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The adaptive route: which small requests page_frag serves, learned from
 * what page_frag pins (PYFRAG_ROUTE=adaptive).
 *
 * How long a fragment lives does not matter; whether its page drains does.
 * A producer -> ring -> consumer program frees every fragment after its page
 * was abandoned, yet its pages drain in order within a few refills; a
 * program whose small blocks die at random leaves pages held by one
 * straggler for good. So:
 * - When a thread's malloc front lets a used-up frag page go with fragments
 *   still out (page_frag stamps it with the refill clock), the thread
 *   watches it (a ring of PF_PIN_WATCH; more are not watched: a sample).
 * - PYFRAG_PIN_AGE refills later it looks again: a page still pinned, under
 *   a reference taken so it cannot go away meanwhile, is walked header by
 *   header, and each live block adds to its call site's score (the site slot
 *   is in the block's header). A score past PF_SCORE_COMPACT moves the site
 *   to the compact route.
 * - Scores halve every PF_DECAY_REFILLS refills; a compact site whose score
 *   falls below PF_SCORE_FRAG goes back to page_frag to be judged again.
 * - A cap: while the bytes of pinned frag pages pass PYFRAG_PIN_MAX, or a
 *   quarter of the compact route's pages when that is more (the cap grows
 *   with what is live), every small request takes the compact route, until
 *   pinning falls under three quarters of the cap.
 * The fast path pays one multiply (the slot), one load and a branch.
 */
#include "malloc/malloc.h"

#define PF_SCORE_COMPACT 8
#define PF_SCORE_FRAG 2
#define PF_SCORE_MAX 255
#define PF_DECAY_REFILLS 16384u

_Atomic uint8_t pf__site_compact[PF_SITES];
_Atomic bool pf__pin_over;

static _Atomic uint8_t site_score[PF_SITES];
static _Atomic uint32_t decayed_at; /* the clock at the last decay */

/* ---- scores ------------------------------------------------------------------------ */

static void blame(uint32_t slot)
{
	unsigned score = atomic_load_explicit(&site_score[slot], memory_order_relaxed);
	if (score < PF_SCORE_MAX)
		atomic_store_explicit(&site_score[slot], (uint8_t)(score + 1), memory_order_relaxed);
	if (score + 1 >= PF_SCORE_COMPACT &&
	    !atomic_exchange_explicit(&pf__site_compact[slot], 1, memory_order_relaxed)) {
		pf__count(PF_CTR_SITES_TO_COMPACT, 1);
	}
}

/* Every PF_DECAY_REFILLS refills, one thread halves every score. */
static void maybe_decay(uint32_t now)
{
	uint32_t last = atomic_load_explicit(&decayed_at, memory_order_relaxed);
	if (now - last < PF_DECAY_REFILLS ||
	    !atomic_compare_exchange_strong_explicit(&decayed_at, &last, now, memory_order_relaxed,
						     memory_order_relaxed))
		return;
	for (uint32_t slot = 0; slot < PF_SITES; slot++) {
		unsigned score = atomic_load_explicit(&site_score[slot], memory_order_relaxed) / 2;
		atomic_store_explicit(&site_score[slot], (uint8_t)score, memory_order_relaxed);
		if (score < PF_SCORE_FRAG && atomic_load_explicit(&pf__site_compact[slot], memory_order_relaxed) &&
		    atomic_exchange_explicit(&pf__site_compact[slot], 0, memory_order_relaxed)) {
			pf__count(PF_CTR_SITES_TO_FRAG, 1);
		}
	}
}

/* ---- pinned pages ---------------------------------------------------------------------- */

/*
 * Walk a pinned page's blocks (reference held) and blame the sites of the
 * live ones. Only the bytes handed out are read, and each header is checked
 * before it is believed: a page of the C API's caches, or alignment padding,
 * has no headers, and a wrong guess only misroutes a site for a while.
 */
static void blame_live(struct pf_page *page, uint32_t fill)
{
	const char *base = pf__page_address(page);
	uint32_t size = PF_PAGE_SIZE << page->order;
	if (fill > size)
		fill = size;
	for (uint32_t pos = 0; pos + PF_HDR <= fill;) {
		const struct pf_mhdr *h = (const struct pf_mhdr *)(base + pos);
		bool header = (h->magic == PF_MAGIC_LIVE || h->magic == PF_MAGIC_FREED) &&
			      h->lead == PF_HDR && h->size > PF_HDR && (h->size & 15) == 0 &&
			      h->size <= fill - pos;
		if (!header) {
			pos += 16;
			continue;
		}
		if (h->magic == PF_MAGIC_LIVE)
			blame(h->canary & (PF_SITES - 1));
		pos += h->size;
	}
}

void pf__route_watch(struct pf_thread *t, struct pf_page *page, uint32_t fill)
{
	if (t->pin_watch_count == PF_PIN_WATCH || !pf__frag_get(page))
		return;
	uint32_t stamp = pf__frag_abandoned_at(page);
	pf__frag_put(page);
	if (!(stamp & PF_FRAG_STAMP_BIT))
		return; /* it drained as it was let go */
	struct pf_pin_watch *w = &t->pin_watch[(t->pin_watch_first + t->pin_watch_count) % PF_PIN_WATCH];
	*w = (struct pf_pin_watch){ .page = page, .stamp = stamp, .fill = fill };
	t->pin_watch_count++;
}

/* Is the watched page still pinned (and the same abandonment)? If so, blame its live blocks. */
static void look_again(const struct pf_pin_watch *w)
{
	if (!pf__frag_get(w->page))
		return; /* released: it drained */
	const uint8_t not_frag = PF_PF_RUN | PF_PF_CHUNKS | PF_PF_EXACT | PF_PF_SLAB;
	if (pf__frag_abandoned_at(w->page) == w->stamp && !(w->page->flags & not_frag) &&
	    !atomic_load(&w->page->held)) {
		pf__count(PF_CTR_PINNED_SEEN, 1);
		blame_live(w->page, w->fill);
	}
	pf__frag_put(w->page);
}

void pf__route_check_cap(void)
{
	int64_t pinned = atomic_load_explicit(&pf__frag_pinned_bytes, memory_order_relaxed);
	struct pf_slab_counts slab;
	pf__slab_counts_get(&slab);
	int64_t cap = (int64_t)PF_OPT(pin_max);
	if ((int64_t)(slab.page_bytes / 4) > cap)
		cap = (int64_t)(slab.page_bytes / 4);
	bool over = atomic_load_explicit(&pf__pin_over, memory_order_relaxed);
	if (!over && pinned > cap) {
		atomic_store_explicit(&pf__pin_over, true, memory_order_relaxed);
		pf__count(PF_CTR_PIN_CAP_ENGAGED, 1);
	} else if (over && pinned < cap / 4 * 3) {
		atomic_store_explicit(&pf__pin_over, false, memory_order_relaxed);
	}
}

/*
 * A thread gives its memory back (it exits, or pf_thread_flush): every page
 * it watches is looked at now, whatever its age. One still pinned is held by
 * blocks that outlive the thread that made them, handed to another thread:
 * their sites are the ones to move before more threads pin pages the same way.
 */
void pf__route_thread_gone(void *thread)
{
	struct pf_thread *t = thread;
	for (; t->pin_watch_count; t->pin_watch_count--) {
		look_again(&t->pin_watch[t->pin_watch_first]);
		t->pin_watch_first = (t->pin_watch_first + 1) % PF_PIN_WATCH;
	}
}

void pf__route_tick(struct pf_thread *t)
{
	uint32_t now = atomic_load_explicit(&pf__frag_clock, memory_order_relaxed);
	long long age = PF_OPT(pin_age);
	while (t->pin_watch_count) {
		const struct pf_pin_watch *w = &t->pin_watch[t->pin_watch_first];
		if (((now - w->stamp) & ~PF_FRAG_STAMP_BIT) < (uint32_t)(age < 0 ? 0 : age))
			break;
		look_again(w);
		t->pin_watch_first = (t->pin_watch_first + 1) % PF_PIN_WATCH;
		t->pin_watch_count--;
	}
	maybe_decay(now);
	pf__route_check_cap();
}
