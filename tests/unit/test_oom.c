/* SPDX-License-Identifier: MIT */
/*
 * test_oom.c - running out of memory (kmm/debug.h fault injection).
 *
 *   1. From a fresh start, with the OS layer failing from its first call
 *      (kmm_os_fail_after(0) is the process's first kmm call): everything
 *      that needs new memory returns NULL with errno ENOMEM - pages until
 *      the zone is dry, OS-mapped kmalloc sizes always, slab objects once
 *      their slabs are full - and nothing crashes; the validators pass.
 *   2. After kmm_os_fail_reset() everything works again.
 *   3. kmm_os_fail_after(n) for n = 0..50 around a mixed workload (kmalloc
 *      16 B .. 8 MiB, pages, cache objects, krealloc), each round starting
 *      from a trimmed zone so that the failures land at different points:
 *      every result is valid memory or NULL with ENOMEM, a failed krealloc
 *      leaves its block intact, the validators pass after every round.
 *   4. The same workload with faults off: every allocation succeeds.
 */
#include "common.h"

#define MiB (1024ul * 1024ul)
#define DENSE_MAX (64 * 1024ul) /* blocks up to this size are filled whole */

/* ---- stamps that stay cheap for big blocks ---- */

static void stamp(void *p, size_t size, uint64_t tag)
{
	unsigned char *b = p;
	uint64_t v;

	if (size <= DENSE_MAX) {
		fill_pattern(p, size, tag);
		return;
	}
	for (size_t off = 0; off + 16 <= size; off += KMM_PAGE_SIZE) {
		v = tag ^ off;
		memcpy(b + off, &v, 8);
	}
	v = ~tag;
	memcpy(b + size - 8, &v, 8);
}

static int stamp_ok(const void *p, size_t size, uint64_t tag)
{
	const unsigned char *b = p;
	uint64_t v;

	if (size <= DENSE_MAX)
		return check_pattern(p, size, tag) < 0;
	for (size_t off = 0; off + 16 <= size; off += KMM_PAGE_SIZE) {
		memcpy(&v, b + off, 8);
		if (v != (tag ^ off))
			return 0;
	}
	memcpy(&v, b + size - 8, 8);
	return v == ~tag;
}

static void validate(const char *when)
{
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed %s", when);
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed %s", when);
}

struct ptrvec {
	void **v;
	size_t n, cap;
};

static void ptrvec_push(struct ptrvec *pv, void *p)
{
	if (pv->n == pv->cap) {
		pv->cap = pv->cap ? 2 * pv->cap : 256;
		pv->v = realloc(pv->v, pv->cap * sizeof(*pv->v));
		CHECK(pv->v != NULL, "out of memory");
	}
	pv->v[pv->n++] = p;
}

/* ---- 1. a fresh start with the OS failing ---- */

static void print_nothing(void)
{
	FILE *f = fopen("/dev/null", "w");
	CHECK(f != NULL, "fopen(/dev/null): %s", strerror(errno));
	kmm_buddyinfo(f);
	kmm_slabinfo(f);
	fclose(f);
}

static void test_fresh_start_failing(void)
{
	struct ptrvec big = {0}, small = {0}, objs = {0};
	struct kmm_zone_stats z;
	struct kmm_cache *c;
	struct kmm_mempool *pool;
	unsigned long bound;
	void *p;

	/* Max-order blocks: whatever the zone holds, then ENOMEM. */
	for (;;) {
		errno = 0;
		p = kmm_alloc_pages(KMM_GFP_KERNEL, KMM_MAX_ORDER - 1);
		if (!p) {
			CHECK(errno == ENOMEM, "max-order allocation failed with errno %d", errno);
			break;
		}
		CHECK(big.n < 100000, "max-order allocations never fail with the OS failing");
		ptrvec_push(&big, p);
	}
	/* Single pages: the rest of the zone, then ENOMEM. */
	kmm_zone_stats(&z);
	bound = z.free_pages + z.pcp_pages + 1;
	for (;;) {
		errno = 0;
		p = kmm_alloc_pages(KMM_GFP_KERNEL, 0);
		if (!p) {
			CHECK(errno == ENOMEM, "page allocation failed with errno %d", errno);
			break;
		}
		CHECK(small.n < bound, "more pages handed out than the zone held (%lu)", bound);
		ptrvec_push(&small, p);
	}
	printf("  fresh start: the zone held %zu max-order blocks and %zu more pages\n", big.n,
	       small.n);

	/* Sizes mapped from the OS, and any page-backed size, must fail. */
	errno = 0;
	p = kmm_kmalloc(8 * MiB, KMM_GFP_KERNEL);
	CHECK(p == NULL && errno == ENOMEM, "kmalloc(8 MiB) = %p, errno %d", p, errno);
	errno = 0;
	p = kmm_kzalloc(5 * MiB, KMM_GFP_KERNEL);
	CHECK(p == NULL && errno == ENOMEM, "kzalloc(5 MiB) = %p, errno %d", p, errno);
	errno = 0;
	p = kmm_kmalloc(MiB, KMM_GFP_KERNEL);
	CHECK(p == NULL && errno == ENOMEM, "kmalloc(1 MiB) = %p, errno %d", p, errno);
	errno = 0;
	p = kmm_krealloc(NULL, 8 * MiB, KMM_GFP_KERNEL);
	CHECK(p == NULL && errno == ENOMEM, "krealloc(NULL, 8 MiB) = %p, errno %d", p, errno);

	/* Small objects: what existing slabs hold, then ENOMEM. */
	for (;;) {
		errno = 0;
		p = kmm_kmalloc(64, KMM_GFP_KERNEL);
		if (!p) {
			CHECK(errno == ENOMEM, "kmalloc(64) failed with errno %d", errno);
			break;
		}
		CHECK(objs.n < 4000000, "kmalloc(64) never fails with the zone dry");
		memset(p, 0x64, 64);
		ptrvec_push(&objs, p);
	}

	/* A cache may be created or not; if it is, it cannot get a slab. */
	errno = 0;
	c = kmm_cache_create("oom_cache", 128, 0, 0, NULL);
	if (c) {
		errno = 0;
		p = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(p == NULL && errno == ENOMEM, "kmm_cache_alloc with no memory = %p, errno %d", p,
		      errno);
		kmm_cache_destroy(c);
	} else {
		CHECK(errno == ENOMEM, "kmm_cache_create failed with errno %d", errno);
	}
	errno = 0;
	pool = kmm_mempool_create_kmalloc_pool(4, 64);
	if (pool)
		kmm_mempool_destroy(pool);
	else
		CHECK(errno == ENOMEM, "kmm_mempool_create_kmalloc_pool failed with errno %d", errno);

	CHECK(kmm_os_failed_calls() > 0, "no OS call was made to fail");
	print_nothing();
	validate("with the OS failing");

	for (size_t i = 0; i < objs.n; i++)
		kmm_kfree(objs.v[i]);
	for (size_t i = 0; i < small.n; i++)
		kmm_free_pages(small.v[i], 0);
	for (size_t i = 0; i < big.n; i++)
		kmm_free_pages(big.v[i], KMM_MAX_ORDER - 1);
	free(objs.v);
	free(small.v);
	free(big.v);
	validate("after freeing what the failing OS left");
}

/* ---- 2. after the reset ---- */

static void test_works_again(void)
{
	static const size_t sizes[] = {16, 100, 5000, 40000, MiB, 8 * MiB};
	unsigned long failed = kmm_os_failed_calls();
	void *pages[8], *blocks[ARRAY_SIZE(sizes)], *objs[100];
	struct kmm_mempool *pool;
	struct kmm_cache *c;
	void *e;

	kmm_os_fail_reset();
	for (size_t i = 0; i < ARRAY_SIZE(pages); i++) {
		pages[i] = kmm_alloc_pages(KMM_GFP_KERNEL, KMM_MAX_ORDER - 1);
		CHECK(pages[i] != NULL, "max-order allocation after reset failed: %s", strerror(errno));
		stamp(pages[i], KMM_PAGE_SIZE << (KMM_MAX_ORDER - 1), i);
	}
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		blocks[i] = kmm_kmalloc(sizes[i], KMM_GFP_KERNEL);
		CHECK(blocks[i] != NULL, "kmalloc(%zu) after reset failed: %s", sizes[i], strerror(errno));
		stamp(blocks[i], sizes[i], i + 100);
	}
	c = kmm_cache_create("oom_after_reset", 96, 0, 0, NULL);
	CHECK(c != NULL, "kmm_cache_create after reset failed: %s", strerror(errno));
	for (size_t i = 0; i < ARRAY_SIZE(objs); i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "cache allocation after reset failed");
		stamp(objs[i], 96, i + 1000);
	}
	pool = kmm_mempool_create_kmalloc_pool(4, 64);
	CHECK(pool != NULL, "kmalloc pool after reset failed: %s", strerror(errno));
	e = kmm_mempool_alloc(pool, KMM_GFP_KERNEL);
	CHECK(e != NULL, "pool allocation failed");
	kmm_mempool_free(e, pool);
	kmm_mempool_destroy(pool);

	validate("after the reset, everything allocated");
	for (size_t i = 0; i < ARRAY_SIZE(pages); i++) {
		CHECK(stamp_ok(pages[i], KMM_PAGE_SIZE << (KMM_MAX_ORDER - 1), i), "block %zu corrupted", i);
		kmm_free_pages(pages[i], KMM_MAX_ORDER - 1);
	}
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		CHECK(stamp_ok(blocks[i], sizes[i], i + 100), "kmalloc(%zu) block corrupted", sizes[i]);
		kmm_kfree(blocks[i]);
	}
	for (size_t i = 0; i < ARRAY_SIZE(objs); i++) {
		CHECK(stamp_ok(objs[i], 96, i + 1000), "object %zu corrupted", i);
		kmm_cache_free(c, objs[i]);
	}
	kmm_cache_destroy(c);
	validate("after the reset, everything freed");
	CHECK(kmm_os_failed_calls() == failed, "OS calls failed after kmm_os_fail_reset() (%lu -> %lu)",
	      failed, kmm_os_failed_calls());
}

/* ---- 3. and 4. faults at different points of a workload ---- */

enum kind { K_KMALLOC, K_PAGES, K_OBJ };

struct item {
	enum kind kind;
	void *p;
	size_t size;    /* bytes stamped */
	unsigned order; /* K_PAGES */
	uint64_t tag;
};

struct workload {
	struct rng *r;
	struct kmm_cache *cache;
	int must_succeed; /* faults are off */
	unsigned long ok, nulls, gen;
	struct item live[64];
	size_t nlive;
};

#define OBJ_SIZE 200

static void item_free(struct workload *w, size_t i)
{
	struct item *it = &w->live[i];

	CHECK(stamp_ok(it->p, it->size, it->tag), "block %p (%zu bytes) corrupted", it->p, it->size);
	if (it->kind == K_KMALLOC)
		kmm_kfree(it->p);
	else if (it->kind == K_PAGES)
		kmm_free_pages(it->p, it->order);
	else
		kmm_cache_free(w->cache, it->p);
	w->live[i] = w->live[--w->nlive];
}

/* Account for one result: valid memory, or NULL with ENOMEM. */
static int result(struct workload *w, void *p, int err, const char *what, size_t size)
{
	if (p) {
		w->ok++;
		return 1;
	}
	CHECK(!w->must_succeed, "%s(%zu) failed with faults off: %s", what, size, strerror(err));
	CHECK(err == ENOMEM, "%s(%zu) returned NULL with errno %d, expected ENOMEM", what, size, err);
	w->nulls++;
	return 0;
}

static void workload_step(struct workload *w)
{
	unsigned long x = rng_below(w->r, 100);
	struct item it = {0};
	void *p;

	if (w->nlive == ARRAY_SIZE(w->live) || (w->nlive > 0 && rng_chance(w->r, 2, 5))) {
		item_free(w, (size_t)rng_below(w->r, w->nlive));
		return;
	}
	it.tag = mix64(++w->gen);
	if (x < 60) {
		it.kind = K_KMALLOC;
		it.size = rng_log_size(w->r, 16, 8 * MiB);
		errno = 0;
		p = rng_chance(w->r, 1, 4) ? kmm_kzalloc(it.size, KMM_GFP_KERNEL)
		                           : kmm_kmalloc(it.size, KMM_GFP_KERNEL);
		if (!result(w, p, errno, "kmalloc", it.size))
			return;
	} else if (x < 75) {
		it.kind = K_PAGES;
		it.order = (unsigned)rng_below(w->r, KMM_MAX_ORDER);
		it.size = KMM_PAGE_SIZE << it.order;
		errno = 0;
		p = kmm_alloc_pages(KMM_GFP_KERNEL, it.order);
		if (!result(w, p, errno, "kmm_alloc_pages", it.size))
			return;
	} else if (x < 90) {
		it.kind = K_OBJ;
		it.size = OBJ_SIZE;
		errno = 0;
		p = kmm_cache_alloc(w->cache, KMM_GFP_KERNEL);
		if (!result(w, p, errno, "kmm_cache_alloc", it.size))
			return;
	} else {
		/* krealloc a densely stamped kmalloc block: contents kept, or untouched on failure. */
		size_t i, size = rng_log_size(w->r, 16, 8 * MiB);
		for (i = 0; i < w->nlive; i++)
			if (w->live[i].kind == K_KMALLOC && w->live[i].size <= DENSE_MAX)
				break;
		if (i == w->nlive)
			return;
		errno = 0;
		p = kmm_krealloc(w->live[i].p, size, KMM_GFP_KERNEL);
		if (!result(w, p, errno, "krealloc", size)) {
			CHECK(stamp_ok(w->live[i].p, w->live[i].size, w->live[i].tag),
			      "a failed krealloc changed its block");
			return;
		}
		CHECK(check_pattern(p, w->live[i].size < size ? w->live[i].size : size, w->live[i].tag) < 0,
		      "krealloc %zu -> %zu lost the contents", w->live[i].size, size);
		w->live[i].p = p;
		w->live[i].size = size;
		w->live[i].tag = it.tag;
		stamp(p, size, it.tag);
		return;
	}
	it.p = p;
	stamp(p, it.size, it.tag);
	w->live[w->nlive++] = it;
}

static void workload_run(struct workload *w, unsigned long steps)
{
	for (unsigned long s = 0; s < steps; s++)
		workload_step(w);
	while (w->nlive > 0)
		item_free(w, w->nlive - 1);
}

static void test_fault_rounds(struct rng *r)
{
	struct workload w;
	unsigned long steps = test_scaled(300, 100), failed0 = kmm_os_failed_calls();
	unsigned long rounds_with_nulls = 0;
	char when[64];

	memset(&w, 0, sizeof(w));
	w.r = r;
	w.cache = kmm_cache_create("oom_round_cache", OBJ_SIZE, 0, 0, NULL);
	CHECK(w.cache != NULL, "kmm_cache_create failed: %s", strerror(errno));

	for (long n = 0; n <= 50; n++) {
		unsigned long nulls = w.nulls;
		kmm_trim();
		kmm_os_fail_after(n);
		workload_run(&w, steps);
		kmm_os_fail_reset();
		snprintf(when, sizeof(when), "after the round with kmm_os_fail_after(%ld)", n);
		validate(when);
		if (w.nulls > nulls)
			rounds_with_nulls++;
	}
	printf("  fault rounds: %lu results valid, %lu NULL/ENOMEM in %lu of 51 rounds, %lu OS calls failed\n",
	       w.ok, w.nulls, rounds_with_nulls, kmm_os_failed_calls() - failed0);
	CHECK(w.nulls > 0, "no allocation failed in 51 rounds of injected faults");
	CHECK(kmm_os_failed_calls() > failed0, "no OS call was made to fail in the rounds");

	/* Faults off: every allocation succeeds. */
	kmm_trim();
	w.must_succeed = 1;
	workload_run(&w, steps * 4);
	validate("after the final round with faults off");
	kmm_cache_destroy(w.cache);
	validate("at the end");
}

int main(void)
{
	struct rng r;

	/* The first kmm call of the process: nothing has been mapped yet. */
	kmm_os_fail_after(0);
	rng_seed(&r, test_init("test_oom", 0x6f6f6d7465737431ull));
	test_fresh_start_failing();
	test_works_again();
	test_fault_rounds(&r);
	return test_finish();
}
