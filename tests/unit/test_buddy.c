/* SPDX-License-Identifier: MIT */
/*
 * test_buddy.c - the page allocator (kmm/page.h).
 *
 *   1. argument errors: bad orders and unknown flags give NULL with EINVAL;
 *      NULL frees are no-ops.
 *   2. KMM_GFP_ZERO returns zeroed memory, also for blocks just freed dirty.
 *   3. exhaustion: KMM_GFP_NOWAIT takes what the zone holds and never grows
 *      it; after everything is freed the free lists are exactly what they
 *      were (merging is complete), and only blocks that share a max-order
 *      region with a page kmm keeps for itself are below max order.
 *   4. the detectors: foreign pointers, double frees and wrong orders abort
 *      with a "kmm" report (run in forked children).
 *   5. a randomized run of >= 1,000,000 allocations and frees of orders
 *      0..10 with a bounded live set: every block aligned to its size,
 *      stamped with a pattern derived from its address at allocation and
 *      checked at free (an overlap overwrites a stamp), no two live blocks
 *      overlapping, kmm_buddy_validate() clean every 10,000 operations, and
 *      the pages in use back to their first value at the end.
 *   6. kmm_trim() gives memory back without touching what is allocated.
 */
#include "common.h"

#include <pthread.h>

#define MAX_LIVE   2000  /* live blocks in the randomized run */
#define BATCH      10000 /* operations between checkpoints */
#define MAX_BLOCK  (KMM_PAGE_SIZE << (KMM_MAX_ORDER - 1))
#define WORDS_PER_PAGE (KMM_PAGE_SIZE / sizeof(uint64_t))
#define LONG_DECAY_MS  (3600L * 1000L)

/* Orders weighted toward small blocks, as real callers use them. */
static const unsigned order_weight[KMM_MAX_ORDER] = {400, 220, 130, 80, 50, 30, 20, 12, 8, 5, 3};

static unsigned pick_order(struct rng *r)
{
	unsigned total = 0, x;
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++)
		total += order_weight[k];
	x = (unsigned)rng_below(r, total);
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++) {
		if (x < order_weight[k])
			return k;
		x -= order_weight[k];
	}
	return 0;
}

static int is_aligned(const void *p, size_t align)
{
	return ((uintptr_t)p & (align - 1)) == 0;
}

/* ---- blocks and their stamps ---- */

struct block {
	uintptr_t addr;
	unsigned order;
	uint64_t tag; /* derived from the address and an allocation number */
};

/*
 * Stamp a block: an order-0 block is filled completely; larger ones get the
 * first and last word of every page.  Blocks are whole pages, so any overlap
 * of two live blocks shares a page and overwrites one of the stamps.
 */
static void stamp_block(const struct block *b)
{
	size_t pages = (size_t)1 << b->order;

	if (b->order == 0) {
		fill_pattern((void *)b->addr, KMM_PAGE_SIZE, b->tag);
		return;
	}
	for (size_t i = 0; i < pages; i++) {
		uint64_t *pg = (uint64_t *)(b->addr + i * KMM_PAGE_SIZE);
		pg[0] = b->tag ^ i;
		pg[WORDS_PER_PAGE - 1] = ~b->tag ^ i;
	}
}

static void verify_block(const struct block *b, const char *when)
{
	size_t pages = (size_t)1 << b->order;

	if (b->order == 0) {
		long bad = check_pattern((void *)b->addr, KMM_PAGE_SIZE, b->tag);
		CHECK(bad < 0, "%s: order-0 block %p corrupted at offset %ld (overlap?)", when,
		      (void *)b->addr, bad);
		return;
	}
	for (size_t i = 0; i < pages; i++) {
		const uint64_t *pg = (const uint64_t *)(b->addr + i * KMM_PAGE_SIZE);
		CHECK(pg[0] == (b->tag ^ i) && pg[WORDS_PER_PAGE - 1] == (~b->tag ^ i),
		      "%s: order-%u block %p: page %zu lost its stamp (overlap or corruption)", when,
		      b->order, (void *)b->addr, i);
	}
}

static int cmp_block_addr(const void *a, const void *b)
{
	uintptr_t x = ((const struct block *)a)->addr, y = ((const struct block *)b)->addr;
	return x < y ? -1 : x > y;
}

/* No two live blocks overlap: sort by address and compare neighbours. */
static void check_no_overlap(const struct block *live, size_t n, struct block *scratch)
{
	memcpy(scratch, live, n * sizeof(*live));
	qsort(scratch, n, sizeof(*scratch), cmp_block_addr);
	for (size_t i = 1; i < n; i++) {
		uintptr_t end = scratch[i - 1].addr + (KMM_PAGE_SIZE << scratch[i - 1].order);
		CHECK(end <= scratch[i].addr, "live blocks overlap: %p (order %u) and %p (order %u)",
		      (void *)scratch[i - 1].addr, scratch[i - 1].order, (void *)scratch[i].addr,
		      scratch[i].order);
	}
}

/* ---- 1. argument errors ---- */

static void test_errors(void)
{
	static const unsigned bad_orders[] = {KMM_MAX_ORDER, KMM_MAX_ORDER + 1, 100, ~0u};
	static const unsigned bad_flags[] = {0x8000u, KMM_GFP_KERNEL | 0x8000u, 0x10u,
	                                     ~KMM_GFP_VALID_MASK, KMM_GFP_ZERO | 0x80000000u};
	void *p;

	for (size_t i = 0; i < ARRAY_SIZE(bad_orders); i++) {
		errno = 0;
		p = kmm_alloc_pages(0, bad_orders[i]);
		CHECK(p == NULL && errno == EINVAL, "kmm_alloc_pages(0, %u) = %p, errno %d", bad_orders[i],
		      p, errno);
		errno = 0;
		p = kmm_alloc_pages(KMM_GFP_KERNEL, bad_orders[i]);
		CHECK(p == NULL && errno == EINVAL, "kmm_alloc_pages(KERNEL, %u) = %p, errno %d",
		      bad_orders[i], p, errno);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad_flags); i++) {
		errno = 0;
		p = kmm_alloc_pages(bad_flags[i], 0);
		CHECK(p == NULL && errno == EINVAL, "kmm_alloc_pages(%#x, 0) = %p, errno %d", bad_flags[i],
		      p, errno);
	}

	/* NULL is ignored whatever the order. */
	kmm_free_pages(NULL, 0);
	kmm_free_pages(NULL, 3);
	kmm_free_pages(NULL, KMM_MAX_ORDER - 1);
	kmm_free_page(NULL);

	/* The largest order works and is aligned to its size. */
	p = kmm_alloc_pages(KMM_GFP_KERNEL, KMM_MAX_ORDER - 1);
	CHECK(p != NULL, "max-order allocation failed: %s", strerror(errno));
	CHECK(is_aligned(p, MAX_BLOCK), "max-order block %p not aligned to %lu", p, MAX_BLOCK);
	memset(p, 0x5a, MAX_BLOCK);
	kmm_free_pages(p, KMM_MAX_ORDER - 1);

	/* The single-page convenience forms. */
	p = kmm_get_free_page(KMM_GFP_KERNEL);
	CHECK(p != NULL && is_aligned(p, KMM_PAGE_SIZE), "kmm_get_free_page() = %p", p);
	memset(p, 1, KMM_PAGE_SIZE);
	kmm_free_page(p);
	CHECK(kmm_buddy_validate() == 0, "buddy invariants broken after the error cases");
}

/* ---- 2. KMM_GFP_ZERO ---- */

static void test_zero(void)
{
	static const unsigned orders[] = {0, 0, 1, 2, 3, 5, 8, KMM_MAX_ORDER - 1};
	unsigned long recycled = 0, checked = 0;

	for (size_t oi = 0; oi < ARRAY_SIZE(orders); oi++) {
		unsigned order = orders[oi];
		size_t n = order <= 3 ? 64 : 4, bytes = KMM_PAGE_SIZE << order;
		void *dirty[64], *clean[64];

		for (size_t i = 0; i < n; i++) {
			dirty[i] = kmm_alloc_pages(KMM_GFP_KERNEL, order);
			CHECK(dirty[i] != NULL, "order-%u allocation failed: %s", order, strerror(errno));
			memset(dirty[i], 0xa5, bytes);
		}
		for (size_t i = n; i-- > 0;)
			kmm_free_pages(dirty[i], order);
		for (size_t i = 0; i < n; i++) {
			unsigned flags = i % 2 ? KMM_GFP_KERNEL | KMM_GFP_ZERO : KMM_GFP_ZERO;
			clean[i] = kmm_alloc_pages(flags, order);
			if (!clean[i] && !(flags & KMM_GFP_DIRECT_OS)) {
				/* A NOWAIT request may fail; the KERNEL form may not. */
				clean[i] = kmm_alloc_pages(KMM_GFP_KERNEL | KMM_GFP_ZERO, order);
			}
			CHECK(clean[i] != NULL, "order-%u zeroed allocation failed: %s", order,
			      strerror(errno));
			CHECK(is_zero(clean[i], bytes), "order-%u block %p from KMM_GFP_ZERO is not zeroed",
			      order, clean[i]);
			checked++;
			for (size_t j = 0; j < n; j++)
				if (dirty[j] == clean[i]) {
					recycled++;
					break;
				}
		}
		for (size_t i = 0; i < n; i++)
			kmm_free_pages(clean[i], order);
	}
	printf("  KMM_GFP_ZERO: %lu blocks zeroed, %lu of them recycled dirty blocks\n", checked,
	       recycled);
	CHECK(recycled > 0, "no freed block was ever reused: the zeroing of recycled pages went untested");
	CHECK(kmm_buddy_validate() == 0, "buddy invariants broken after the zeroing test");
}

/* ---- 3. exhaustion and merge completeness ---- */

static void push_ptr(void ***v, size_t *n, size_t *cap, void *p)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 4096;
		*v = realloc(*v, *cap * sizeof(**v));
		CHECK(*v != NULL, "out of memory");
	}
	(*v)[(*n)++] = p;
}

static void test_exhaust(void)
{
	struct kmm_zone_stats s0, s1, mid;
	unsigned long in_use0, in_use1, limit, nonmax_pages = 0;
	void **pages = NULL, *grown, *big[16];
	size_t n = 0, cap = 0, n_nowait;

	/* Make sure the zone holds memory: grow it, then give the blocks back. */
	for (size_t i = 0; i < ARRAY_SIZE(big); i++) {
		big[i] = kmm_alloc_pages(KMM_GFP_KERNEL, KMM_MAX_ORDER - 1);
		CHECK(big[i] != NULL, "max-order allocation failed: %s", strerror(errno));
	}
	for (size_t i = 0; i < ARRAY_SIZE(big); i++)
		kmm_free_pages(big[i], KMM_MAX_ORDER - 1);

	in_use0 = pages_in_use();
	kmm_zone_stats(&s0);
	CHECK(s0.pcp_pages == 0, "kmm_drain_local() left %lu pages on this thread's pcp lists",
	      s0.pcp_pages);
	CHECK(s0.free_pages >= ARRAY_SIZE(big) << (KMM_MAX_ORDER - 1),
	      "the zone holds %lu free pages after %zu max-order blocks were freed", s0.free_pages,
	      ARRAY_SIZE(big));
	/* A max-order block is a whole section: each went on the lists whole. */
	CHECK(s0.deferred_pages == 0, "%lu pages deferred after max-order allocations",
	      s0.deferred_pages);

	/* NOWAIT takes only what the zone holds: it must run dry without growing it. */
	limit = s0.free_pages + s0.deferred_pages + 1;
	for (;;) {
		void *p;
		errno = 0;
		p = kmm_alloc_pages(KMM_GFP_NOWAIT, 0);
		if (!p) {
			CHECK(errno == ENOMEM, "NOWAIT failure with errno %d, expected ENOMEM", errno);
			break;
		}
		CHECK(n < limit, "KMM_GFP_NOWAIT handed out more pages (%zu) than the zone had free (%lu)",
		      n, s0.free_pages);
		*(uint64_t *)p = (uint64_t)n;
		push_ptr(&pages, &n, &cap, p);
	}
	n_nowait = n;
	CHECK(n_nowait > 0, "KMM_GFP_NOWAIT got no page from a zone with %lu free pages", s0.free_pages);
	kmm_zone_stats(&mid);
	CHECK(mid.sections_added == s0.sections_added && mid.managed_pages == s0.managed_pages,
	      "KMM_GFP_NOWAIT grew the zone (sections added %lu -> %lu)", s0.sections_added,
	      mid.sections_added);

	/* ATOMIC may dip into the reserve, but never grows the zone either. */
	for (;;) {
		void *p = kmm_alloc_pages(KMM_GFP_ATOMIC, 0);
		if (!p)
			break;
		CHECK(n < limit, "NOWAIT+ATOMIC handed out more pages (%zu) than the zone had free (%lu)",
		      n, s0.free_pages);
		*(uint64_t *)p = (uint64_t)n;
		push_ptr(&pages, &n, &cap, p);
	}
	kmm_zone_stats(&mid);
	CHECK(mid.sections_added == s0.sections_added, "KMM_GFP_ATOMIC grew the zone");
	printf("  exhaustion: %zu pages with NOWAIT, %zu more with ATOMIC, zone of %lu pages\n",
	       n_nowait, n - n_nowait, s0.managed_pages);

	/*
	 * With the zone dry, a KERNEL request grows it by a section, which
	 * reaches the free lists a pageblock (64 pages) at a time as requests
	 * need: an order-4 block (above the pcp orders, so it comes from the
	 * zone itself) brings one pageblock, an order-7 block those up to the
	 * end of an aligned 128-page block, an order-9 block the rest.
	 */
	kmm_zone_stats(&mid);
	CHECK(mid.deferred_pages == 0, "%lu pages deferred in a dry zone", mid.deferred_pages);
	const unsigned long section_pages = 1ul << (KMM_MAX_ORDER - 1), dry_managed = mid.managed_pages;
	/*
	 * kmm_trim() gives back a growing section whose pages on the lists are
	 * all free: it puts the rest on the lists, the section merges into one
	 * block and goes back to the OS.
	 */
	void *probe = kmm_alloc_pages(KMM_GFP_KERNEL, 4);
	CHECK(probe != NULL, "KMM_GFP_KERNEL order 4 in a dry zone: %s", strerror(errno));
	kmm_zone_stats(&mid);
	CHECK(mid.sections_added == s0.sections_added + 1 && mid.deferred_pages == section_pages - 64,
	      "a dry zone's order-4 request: %lu sections added (expected %lu), %lu pages deferred",
	      mid.sections_added, s0.sections_added + 1, mid.deferred_pages);
	kmm_free_pages(probe, 4);
	kmm_trim();
	kmm_zone_stats(&mid);
	CHECK(mid.sections_released == s0.sections_released + 1 && mid.deferred_pages == 0 &&
	              mid.nr_sections == s0.nr_sections && mid.managed_pages == dry_managed,
	      "kmm_trim() with the growing section free: %lu sections released (expected %lu), %lu "
	      "deferred, %lu sections (expected %lu)",
	      mid.sections_released, s0.sections_released + 1, mid.deferred_pages, mid.nr_sections,
	      s0.nr_sections);
	const unsigned long added0 = mid.sections_added;
	const unsigned step_order[3] = {4, 7, KMM_MAX_ORDER - 2};
	const unsigned long step_populated[3] = {64, 256, section_pages};
	void *step[3];
	for (unsigned i = 0; i < 3; i++) {
		step[i] = kmm_alloc_pages(KMM_GFP_KERNEL, step_order[i]);
		CHECK(step[i] != NULL, "KMM_GFP_KERNEL order %u in a dry zone: %s", step_order[i],
		      strerror(errno));
		kmm_zone_stats(&mid);
		CHECK(mid.sections_added == added0 + 1,
		      "order %u: %lu sections added, expected the dry zone's one more (%lu)",
		      step_order[i], mid.sections_added, added0 + 1);
		CHECK(mid.managed_pages == dry_managed + step_populated[i] &&
		              mid.deferred_pages == section_pages - step_populated[i],
		      "order %u: %lu pages of the new section on the lists, %lu deferred; expected %lu",
		      step_order[i], mid.managed_pages - dry_managed, mid.deferred_pages,
		      step_populated[i]);
		CHECK(kmm_buddy_validate() == 0, "buddy invariants broken with %lu pages deferred",
		      mid.deferred_pages);
	}
	grown = kmm_alloc_pages(KMM_GFP_KERNEL, 0);
	CHECK(grown != NULL, "KMM_GFP_KERNEL order 0 after the zone grew: %s", strerror(errno));

	/* Every page distinct: each still carries its own number. */
	for (size_t i = 0; i < n; i++)
		CHECK(*(uint64_t *)pages[i] == (uint64_t)i, "page %p handed out twice", pages[i]);
	CHECK(kmm_buddy_validate() == 0, "buddy invariants broken with the zone exhausted");

	kmm_free_pages(grown, 0);
	for (unsigned i = 0; i < 3; i++)
		kmm_free_pages(step[i], step_order[i]);
	for (size_t i = 0; i < n; i++)
		kmm_free_pages(pages[i], 0);
	free(pages);

	in_use1 = pages_in_use();
	kmm_zone_stats(&s1);
	CHECK(kmm_buddy_validate() == 0, "buddy invariants broken after freeing the exhausted zone");
	CHECK(in_use1 == in_use0, "pages in use: %lu before exhausting the zone, %lu after freeing all",
	      in_use0, in_use1);
	CHECK(s1.sections_released == s0.sections_released + 1,
	      "sections were released while the decay time was an hour (besides kmm_trim()'s one)");
	/*
	 * Buddy merging is canonical: the same pages in use give the same free
	 * blocks.  So the lists below max order are as before, and the memory
	 * the zone grew by is in max-order blocks - but for the newest
	 * section's pages on the lists so far (the rest is deferred), which,
	 * all free, are the blocks of their count's binary digits.
	 */
	unsigned long populated =
		s1.deferred_pages ? (1ul << (KMM_MAX_ORDER - 1)) - s1.deferred_pages : 0;
	for (unsigned k = 0; k + 1 < KMM_MAX_ORDER; k++)
		CHECK(s1.nr_free[k] == s0.nr_free[k] + ((populated >> k) & 1),
		      "order %u: %lu free blocks before exhausting the zone, %lu after freeing all, "
		      "%lu pages of the growing section on the lists (incomplete merging?)",
		      k, s0.nr_free[k], s1.nr_free[k], populated);
	CHECK((s1.managed_pages - s0.managed_pages) ==
	              ((s1.nr_free[KMM_MAX_ORDER - 1] - s0.nr_free[KMM_MAX_ORDER - 1])
	               << (KMM_MAX_ORDER - 1)) + populated,
	      "the zone grew by %lu pages but max-order free blocks by %lu (and %lu growing)",
	      s1.managed_pages - s0.managed_pages,
	      s1.nr_free[KMM_MAX_ORDER - 1] - s0.nr_free[KMM_MAX_ORDER - 1], populated);
	/*
	 * Allocating everything and freeing everything leaves only max-order
	 * blocks free, except in max-order regions that hold a page kmm keeps
	 * for itself: at most one such region per page in use.
	 */
	for (unsigned k = 0; k + 1 < KMM_MAX_ORDER; k++)
		nonmax_pages += s1.nr_free[k] << k;
	CHECK(s1.managed_pages - (s1.nr_free[KMM_MAX_ORDER - 1] << (KMM_MAX_ORDER - 1)) - populated <=
	              in_use1 << (KMM_MAX_ORDER - 1),
	      "%lu free pages lie outside max-order blocks, more than %lu pages in use explain",
	      nonmax_pages, in_use1);
	CHECK(s1.free_pages == nonmax_pages + (s1.nr_free[KMM_MAX_ORDER - 1] << (KMM_MAX_ORDER - 1)),
	      "free_pages %lu differs from the sum over nr_free[] %lu", s1.free_pages,
	      nonmax_pages + (s1.nr_free[KMM_MAX_ORDER - 1] << (KMM_MAX_ORDER - 1)));
	printf("  after exhaustion: %lu pages in use by kmm, %lu free pages below max order\n", in_use1,
	       nonmax_pages);
}

/* ---- 4. detectors ---- */

static void free_stack_page(void *arg)
{
	char buf[3 * KMM_PAGE_SIZE];
	void *p = (void *)(((uintptr_t)buf + KMM_PAGE_SIZE - 1) & ~(KMM_PAGE_SIZE - 1));
	(void)arg;
	memset(buf, 0, sizeof(buf));
	kmm_free_pages(p, 0);
}

static void free_heap_page(void *arg)
{
	char *m = malloc(3 * KMM_PAGE_SIZE);
	void *p = (void *)(((uintptr_t)m + KMM_PAGE_SIZE - 1) & ~(KMM_PAGE_SIZE - 1));
	(void)arg;
	kmm_free_pages(p, 0);
}

static void double_free(void *arg)
{
	unsigned order = (unsigned)(uintptr_t)arg;
	void *p = kmm_alloc_pages(KMM_GFP_KERNEL, order);
	if (!p)
		_exit(3);
	kmm_free_pages(p, order);
	kmm_free_pages(p, order);
}

static void free_wrong_order_up(void *arg)
{
	void *p = kmm_alloc_pages(KMM_GFP_KERNEL, 2);
	(void)arg;
	if (!p)
		_exit(3);
	kmm_free_pages(p, 3);
}

static void free_wrong_order_down(void *arg)
{
	void *p = kmm_alloc_pages(KMM_GFP_KERNEL, 2);
	(void)arg;
	if (!p)
		_exit(3);
	kmm_free_pages(p, 1);
}

static void free_tail_page(void *arg)
{
	char *p = kmm_alloc_pages(KMM_GFP_KERNEL, 2);
	(void)arg;
	if (!p)
		_exit(3);
	kmm_free_pages(p + KMM_PAGE_SIZE, 0);
}

static void free_misaligned(void *arg)
{
	char *p = kmm_alloc_pages(KMM_GFP_KERNEL, 0);
	(void)arg;
	if (!p)
		_exit(3);
	kmm_free_pages(p + 64, 0);
}

static void test_detectors(void)
{
	const char *err;

	err = expect_abort(free_stack_page, NULL, "kmm");
	CHECK(strstr(err, "invalid") != NULL, "freeing a stack page: report lacks \"invalid\":\n%s", err);
	expect_abort(free_heap_page, NULL, "kmm");
	expect_abort(double_free, (void *)(uintptr_t)0, "kmm");
	expect_abort(double_free, (void *)(uintptr_t)3, "kmm");
	expect_abort(double_free, (void *)(uintptr_t)(KMM_MAX_ORDER - 1), "kmm");
	expect_abort(free_wrong_order_up, NULL, "kmm");
	expect_abort(free_wrong_order_down, NULL, "kmm");
	expect_abort(free_tail_page, NULL, "kmm");
	expect_abort(free_misaligned, NULL, "kmm");
	/* The children's aborts left this process untouched. */
	CHECK(kmm_buddy_validate() == 0, "buddy invariants broken after the detector tests");
}

/* ---- 5. the randomized run ---- */

static void checkpoint(const struct block *live, size_t n, struct block *scratch, unsigned long op)
{
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after %lu operations", op);
	check_no_overlap(live, n, scratch);
	for (size_t i = 0; i < n; i++)
		verify_block(&live[i], "checkpoint");
}

static void test_random(struct rng *r)
{
	unsigned long nops = test_scaled(1000000, 100000), in_use0, in_use1, gen = 0;
	unsigned long allocs[KMM_MAX_ORDER] = {0}, frees = 0, zeroed = 0;
	struct block *live = calloc(MAX_LIVE, sizeof(*live));
	struct block *scratch = calloc(MAX_LIVE, sizeof(*scratch));
	struct kmm_zone_stats s0, s1;
	size_t nlive = 0, target = MAX_LIVE / 2, peak = 0;

	CHECK(live && scratch, "out of memory");
	/* One round of every order first, so kmm's own per-thread state exists. */
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++) {
		void *p = kmm_alloc_pages(KMM_GFP_KERNEL, k);
		CHECK(p != NULL, "order-%u allocation failed: %s", k, strerror(errno));
		kmm_free_pages(p, k);
	}
	in_use0 = pages_in_use();
	kmm_zone_stats(&s0);

	for (unsigned long op = 0; op < nops; op++) {
		int do_alloc;

		if (op % 50000 == 0)
			target = (size_t)rng_range(r, 0, MAX_LIVE);
		if (nlive == 0)
			do_alloc = 1;
		else if (nlive == MAX_LIVE)
			do_alloc = 0;
		else
			do_alloc = rng_chance(r, nlive < target ? 3 : 1, 4);

		if (do_alloc) {
			unsigned order = pick_order(r), flags = KMM_GFP_KERNEL;
			int zero = rng_chance(r, 1, 20);
			struct block b;
			void *p;

			if (zero)
				flags |= KMM_GFP_ZERO;
			if (order == 0 && rng_chance(r, 1, 4))
				p = kmm_get_free_page(flags);
			else
				p = kmm_alloc_pages(flags, order);
			CHECK(p != NULL, "op %lu: order-%u allocation failed: %s", op, order,
			      strerror(errno));
			CHECK(is_aligned(p, KMM_PAGE_SIZE << order),
			      "op %lu: order-%u block %p not aligned to %lu bytes", op, order, p,
			      KMM_PAGE_SIZE << order);
			if (zero) {
				size_t pages = (size_t)1 << order;
				if (order <= 2) {
					CHECK(is_zero(p, KMM_PAGE_SIZE << order),
					      "op %lu: KMM_GFP_ZERO block %p not zeroed", op, p);
				} else {
					for (size_t i = 0; i < pages; i++) {
						const uint64_t *pg =
						        (const uint64_t *)((char *)p + i * KMM_PAGE_SIZE);
						CHECK(pg[0] == 0 && pg[WORDS_PER_PAGE - 1] == 0,
						      "op %lu: KMM_GFP_ZERO block %p page %zu not zeroed", op,
						      p, i);
					}
				}
				zeroed++;
			}
			b.addr = (uintptr_t)p;
			b.order = order;
			b.tag = mix64(b.addr ^ mix64(++gen));
			stamp_block(&b);
			live[nlive++] = b;
			allocs[order]++;
			if (nlive > peak)
				peak = nlive;
		} else {
			size_t i = (size_t)rng_below(r, nlive);
			verify_block(&live[i], "free");
			if (live[i].order == 0 && rng_chance(r, 1, 4))
				kmm_free_page((void *)live[i].addr);
			else
				kmm_free_pages((void *)live[i].addr, live[i].order);
			live[i] = live[--nlive];
			frees++;
		}
		if ((op + 1) % BATCH == 0)
			checkpoint(live, nlive, scratch, op + 1);
		if (rng_chance(r, 1, 5000))
			kmm_drain_local();
	}

	while (nlive > 0) {
		verify_block(&live[nlive - 1], "final free");
		kmm_free_pages((void *)live[nlive - 1].addr, live[nlive - 1].order);
		nlive--;
		frees++;
	}
	in_use1 = pages_in_use();
	kmm_zone_stats(&s1);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after freeing everything");
	CHECK(s1.pcp_pages == 0, "kmm_drain_local() left %lu pages on pcp lists", s1.pcp_pages);
	CHECK(in_use1 == in_use0, "pages in use: %lu before the run, %lu after freeing everything",
	      in_use0, in_use1);
	if (s1.sections_added == s0.sections_added && s1.sections_released == s0.sections_released) {
		/* Same zone, same pages in use: merging must give the same free lists. */
		for (unsigned k = 0; k < KMM_MAX_ORDER; k++)
			CHECK(s1.nr_free[k] == s0.nr_free[k],
			      "order %u: %lu free blocks before the run, %lu after (incomplete merging?)",
			      k, s0.nr_free[k], s1.nr_free[k]);
	}

	printf("  random run: %lu operations, peak %zu live blocks, %lu zeroed, allocations per order:",
	       nops, peak, zeroed);
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++)
		printf(" %lu", allocs[k]);
	printf("\n  zone: %lu sections added, %lu released during the run\n",
	       s1.sections_added - s0.sections_added, s1.sections_released - s0.sections_released);
	free(live);
	free(scratch);
}

/* ---- 6. trim ---- */

static void test_trim(struct rng *r)
{
	struct block held[32];
	struct kmm_zone_stats before, after;
	unsigned long in_use_before, in_use_after, given;

	for (size_t i = 0; i < ARRAY_SIZE(held); i++) {
		held[i].order = (unsigned)rng_below(r, KMM_MAX_ORDER);
		held[i].addr = (uintptr_t)kmm_alloc_pages(KMM_GFP_KERNEL, held[i].order);
		CHECK(held[i].addr != 0, "order-%u allocation failed: %s", held[i].order, strerror(errno));
		held[i].tag = mix64(held[i].addr ^ 0x7472696dull);
		stamp_block(&held[i]);
	}
	in_use_before = pages_in_use();
	kmm_zone_stats(&before);
	given = kmm_trim();
	in_use_after = pages_in_use();
	kmm_zone_stats(&after);
	printf("  kmm_trim(): %lu pages given back; resident %lu -> %lu, sections %lu -> %lu\n", given,
	       before.resident_pages, after.resident_pages, before.nr_sections, after.nr_sections);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after kmm_trim()");
	CHECK(in_use_after == in_use_before, "kmm_trim() changed the pages in use: %lu -> %lu",
	      in_use_before, in_use_after);
	CHECK(after.resident_pages <= before.resident_pages, "kmm_trim() raised resident pages");
	for (size_t i = 0; i < ARRAY_SIZE(held); i++)
		verify_block(&held[i], "after kmm_trim()");

	/* Everything still works on the trimmed zone. */
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++) {
		struct block b;
		void *p = kmm_alloc_pages(KMM_GFP_KERNEL, k);
		CHECK(p != NULL, "order-%u allocation after trim failed: %s", k, strerror(errno));
		b.addr = (uintptr_t)p;
		b.order = k;
		b.tag = mix64(b.addr);
		stamp_block(&b);
		verify_block(&b, "after trim");
		kmm_free_pages(p, k);
	}
	for (size_t i = 0; i < ARRAY_SIZE(held); i++)
		kmm_free_pages((void *)held[i].addr, held[i].order);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after the trim test");
}

/*
 * The zone keeps its first 16 section slots (64 MiB) in itself and moves
 * them to a mapped table when a section needs one more.  Past that point,
 * and after sections went back to the OS and their slots were reused, every
 * block keeps its contents and the validator finds every section.
 */
#define TABLE_BLOCKS 20
static void test_section_table(void)
{
	struct block b[TABLE_BLOCKS];
	struct kmm_zone_stats st;

	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < TABLE_BLOCKS; i++) {
			b[i].order = KMM_MAX_ORDER - 1;
			b[i].addr = (uintptr_t)kmm_alloc_pages(KMM_GFP_KERNEL, b[i].order);
			CHECK(b[i].addr != 0, "round %d: max-order block %zu: %s", round, i, strerror(errno));
			b[i].tag = mix64(b[i].addr ^ (uint64_t)round);
			stamp_block(&b[i]);
		}
		kmm_zone_stats(&st);
		CHECK(st.nr_sections >= TABLE_BLOCKS, "round %d: %lu sections hold %d max-order blocks",
		      round, st.nr_sections, TABLE_BLOCKS);
		CHECK(kmm_buddy_validate() == 0, "round %d: kmm_buddy_validate() with %lu sections", round,
		      st.nr_sections);
		for (size_t i = 0; i < TABLE_BLOCKS; i++)
			verify_block(&b[i], round ? "slots reused" : "section table moved");
		for (size_t i = 0; i < TABLE_BLOCKS; i++)
			kmm_free_pages((void *)b[i].addr, b[i].order);
		unsigned long released = st.sections_released;
		kmm_trim();
		kmm_zone_stats(&st);
		CHECK(st.sections_released >= released + TABLE_BLOCKS / 2,
		      "round %d: kmm_trim() released %lu of %d free sections", round,
		      st.sections_released - released, TABLE_BLOCKS);
		CHECK(kmm_buddy_validate() == 0, "round %d: kmm_buddy_validate() after the release", round);
	}
}

/*
 * Small blocks (order <= 3) and large ones come from different pageblocks
 * (256 KiB, migratetypes), so small blocks never settle in a freed large
 * block's tail.  A free block of a whole pageblock or more serves either
 * kind: after both kinds are freed, each can have the memory of the other.
 */
/*
 * A new thread's pcp list fills gradually: its first refill takes one block,
 * the next ones twice as many each, up to the batch.  A full batch at the
 * first allocation set 16 order-0 pages aside for a thread that may want
 * one (64 pages over the four orders).
 */
#define PCP_RAMP_ALLOCS 64
static unsigned long pcp_seen[PCP_RAMP_ALLOCS];
static void *pcp_ramp_thread(void *arg)
{
	void *p[PCP_RAMP_ALLOCS];
	(void)arg;
	for (unsigned i = 0; i < PCP_RAMP_ALLOCS; i++) {
		p[i] = kmm_alloc_pages(KMM_GFP_KERNEL, 0);
		CHECK(p[i] != NULL, "kmm_alloc_pages(0) in the thread");
		struct kmm_zone_stats st;
		kmm_zone_stats(&st);
		pcp_seen[i] = st.pcp_pages;
	}
	for (unsigned i = 0; i < PCP_RAMP_ALLOCS; i++)
		kmm_free_pages(p[i], 0);
	kmm_drain_local();
	test_thread_done();
	return NULL;
}

static void test_pcp_ramp(void)
{
	kmm_drain_local();
	pthread_t t;
	CHECK(pthread_create(&t, NULL, pcp_ramp_thread, NULL) == 0, "pthread_create");
	CHECK(pthread_join(t, NULL) == 0, "pthread_join");
	/*
	 * The full batch is a quarter of KMM_PCP_HIGH (16 pages).  The thread's
	 * start-up (its slab state) may have taken the first refill or two, so
	 * the lists hold 1, 0, 7 pages after the first three allocations
	 * (before, 15, 14, 13); later, whole batches.
	 */
	unsigned long batch = (unsigned long)kmm_tune_get(KMM_TUNE_PCP_HIGH) / 4, most = 0;
	CHECK(batch >= 8, "KMM_PCP_HIGH %ld: batch %lu", kmm_tune_get(KMM_TUNE_PCP_HIGH), batch);
	CHECK(pcp_seen[0] <= 3, "after its first allocation the new thread's pcp list held %lu pages",
	      pcp_seen[0]);
	for (unsigned i = 1; i < 3; i++)
		CHECK(pcp_seen[i] < batch - 1, "after %u allocations the new thread's pcp list held %lu "
		      "pages: a full batch", i + 1, pcp_seen[i]);
	for (unsigned i = 0; i < PCP_RAMP_ALLOCS; i++)
		most = pcp_seen[i] > most ? pcp_seen[i] : most;
	CHECK(most >= batch - 1, "the pcp lists held at most %lu pages over %d allocations: never "
	      "a full batch of %lu", most, PCP_RAMP_ALLOCS, batch);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() after the pcp ramp");
}

#define PAGEBLOCK_BYTES (256ul << 10)
static void test_migratetypes(void)
{
	void *small[64], *large[8];
	for (unsigned i = 0; i < 64; i++) {
		small[i] = kmm_alloc_pages(KMM_GFP_KERNEL, i % 4);
		CHECK(small[i] != NULL, "kmm_alloc_pages(order %u)", i % 4);
	}
	for (unsigned i = 0; i < 8; i++) {
		large[i] = kmm_alloc_pages(KMM_GFP_KERNEL, 4 + i % 4);
		CHECK(large[i] != NULL, "kmm_alloc_pages(order %u)", 4 + i % 4);
	}
	for (unsigned i = 0; i < 64; i++)
		for (unsigned j = 0; j < 8; j++) {
			uintptr_t s = (uintptr_t)small[i] / PAGEBLOCK_BYTES;
			uintptr_t lo = (uintptr_t)large[j] / PAGEBLOCK_BYTES;
			uintptr_t hi = ((uintptr_t)large[j] + (4096ul << (4 + j % 4)) - 1) / PAGEBLOCK_BYTES;
			CHECK(s < lo || s > hi, "an order-%u block %p and an order-%u block %p share a pageblock",
			      i % 4, small[i], 4 + j % 4, large[j]);
		}
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() with both kinds in use");
	for (unsigned i = 0; i < 64; i++)
		kmm_free_pages(small[i], i % 4);
	for (unsigned i = 0; i < 8; i++)
		kmm_free_pages(large[i], 4 + i % 4);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() after freeing both kinds");

	/*
	 * Pageblocks that held large blocks serve small ones once they are
	 * free, though their section is not (one large block stays): small
	 * requests, after their own kind's free blocks, take them before the
	 * zone grows.  With whole sections as the unit they never would.
	 */
	enum { NBIG = 16, MAX_LITTLE = 2048 };
	void *big[NBIG], *little[MAX_LITTLE];
	unsigned nlittle = 0;
	int landed = 0;
	for (unsigned i = 0; i < NBIG; i++) {
		big[i] = kmm_alloc_pages(KMM_GFP_KERNEL, 6);
		CHECK(big[i] != NULL, "kmm_alloc_pages(order 6)");
	}
	for (unsigned i = 1; i < NBIG; i++)
		kmm_free_pages(big[i], 6);
	while (!landed && nlittle < MAX_LITTLE) {
		void *p = kmm_alloc_pages(KMM_GFP_KERNEL, 2);
		CHECK(p != NULL, "kmm_alloc_pages(order 2)");
		little[nlittle++] = p;
		for (unsigned i = 1; i < NBIG; i++)
			if ((uintptr_t)p - (uintptr_t)big[i] < (4096ul << 6))
				landed = 1;
	}
	CHECK(landed, "%u small blocks (%u MiB) and none in the 3.75 MiB a large kind freed", nlittle,
	      nlittle / 64);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() with small blocks in freed large pageblocks");
	for (unsigned i = 0; i < nlittle; i++)
		kmm_free_pages(little[i], 2);
	kmm_free_pages(big[0], 6);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() after the pageblock reuse test");
}

int main(void)
{
	struct rng r;
	long decay;

	rng_seed(&r, test_init("test_buddy", 0x6275646479303031ull));

	/*
	 * The exhaustion test compares free lists before and after; a section
	 * handed back to the OS by decay in between would change them.  Keep
	 * the decay timer long until then (set before anything is freed).
	 */
	decay = kmm_tune_get(KMM_TUNE_DECAY_MS);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, LONG_DECAY_MS) == 0, "kmm_tune_set(DECAY_MS) failed");
	CHECK(kmm_tune_get(KMM_TUNE_DECAY_MS) == LONG_DECAY_MS, "kmm_tune_get(DECAY_MS) disagrees");

	test_section_table(); /* first: the zone still has its slots in itself */
	test_errors();
	test_zero();
	test_exhaust();
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, decay) == 0, "restoring DECAY_MS to %ld failed", decay);

	test_detectors();
	test_migratetypes();
	test_pcp_ramp();
	test_random(&r);
	test_trim(&r);
	return test_finish();
}
