/* SPDX-License-Identifier: MIT */
/*
 * test_slab.c - object caches (kmm/slab.h), single-threaded.
 *
 *   1. kmm_cache_create() argument errors give NULL with EINVAL; with
 *      KMM_SLAB_PANIC they abort with a "kmm" report instead.
 *   2. objects are aligned as asked (8 .. 4096, and a cache line with
 *      KMM_SLAB_HWCACHE_ALIGN) and the cache figures hang together.
 *   3. a randomized run over caches of several sizes: patterns checked at
 *      free, no overlaps, kmm_slab_validate() clean at every checkpoint.
 *   4. the constructor runs once per object when a slab is made, never per
 *      allocation; objects come back in their constructed state.
 *   5. kmm_cache_shrink(), KMM_GFP_ZERO, objects of KMM_CACHE_MAX_SIZE.
 *   6. destroying a cache with objects in use names the cache and the count
 *      and keeps the objects usable; an emptied cache's destruction gives
 *      every page back (pages in use return exactly to their old value).
 *   7. the detectors: foreign pointers, interior pointers and double frees
 *      abort with a "kmm" report.
 */
#include "common.h"

#define BATCH 10000

static int is_pow2(unsigned long x)
{
	return x && !(x & (x - 1));
}

static int is_aligned(const void *p, size_t align)
{
	return ((uintptr_t)p & (align - 1)) == 0;
}

/*
 * The figures of @c hang together, and at least @allocated objects of it
 * are in use.
 */
static void check_stats(struct kmm_cache *c, const char *name, size_t size, size_t align,
                        unsigned long allocated)
{
	struct kmm_cache_stats st;

	kmm_cache_stats(c, &st);
	CHECK(st.name != NULL && strcmp(st.name, name) == 0, "cache \"%s\" reports name \"%s\"", name,
	      st.name ? st.name : "(null)");
	CHECK(st.object_size == size, "%s: object_size %zu, asked for %zu", name, st.object_size, size);
	CHECK(kmm_cache_size(c) == size, "%s: kmm_cache_size() %zu, asked for %zu", name,
	      kmm_cache_size(c), size);
	CHECK(st.size >= size, "%s: slot size %zu below object size %zu", name, st.size, size);
	/* align: the alignment in effect (0 only allowed where none was asked for). */
	CHECK(st.align ? is_pow2(st.align) && st.align >= align : align == 0,
	      "%s: align %zu (asked %zu)", name, st.align, align);
	CHECK(st.align == 0 || st.size % st.align == 0, "%s: slot size %zu not a multiple of align %zu",
	      name, st.size, st.align);
	CHECK(st.objects_per_slab >= 1, "%s: %u objects per slab", name, st.objects_per_slab);
	CHECK(is_pow2(st.pages_per_slab), "%s: %u pages per slab is not a buddy block", name,
	      st.pages_per_slab);
	CHECK((size_t)st.objects_per_slab * st.size <= (size_t)st.pages_per_slab * KMM_PAGE_SIZE,
	      "%s: %u slots of %zu bytes do not fit %u pages", name, st.objects_per_slab, st.size,
	      st.pages_per_slab);
	CHECK(st.num_objs == st.num_slabs * st.objects_per_slab,
	      "%s: num_objs %lu != num_slabs %lu * objects_per_slab %u", name, st.num_objs,
	      st.num_slabs, st.objects_per_slab);
	CHECK(st.active_slabs <= st.num_slabs, "%s: %lu active slabs of %lu", name, st.active_slabs,
	      st.num_slabs);
	CHECK(st.active_objs <= st.num_objs, "%s: %lu active objects of %lu", name, st.active_objs,
	      st.num_objs);
	CHECK(st.active_objs >= allocated, "%s: %lu active objects but %lu allocated", name,
	      st.active_objs, allocated);
	CHECK(st.active_slabs * st.objects_per_slab >= allocated,
	      "%s: %lu allocated objects do not fit %lu active slabs", name, allocated, st.active_slabs);
}

/* Destroy a cache that must be empty; nothing may be reported. */
static void destroy_quietly(struct kmm_cache *c, const char *name)
{
	struct stderr_capture cap;
	char *text;

	stderr_capture_begin(&cap);
	kmm_cache_destroy(c);
	text = stderr_capture_end(&cap);
	CHECK(text[0] == '\0', "destroying the emptied cache %s printed:\n%s", name, text);
	free(text);
}

/* ---- 1. creation errors ---- */

static void expect_einval(const char *name, size_t size, size_t align, unsigned long flags)
{
	struct kmm_cache *c;

	errno = 0;
	c = kmm_cache_create(name, size, align, flags, NULL);
	CHECK(c == NULL && errno == EINVAL,
	      "kmm_cache_create(%s, %zu, %zu, %#lx) = %p with errno %d, expected NULL/EINVAL",
	      name ? name : "NULL", size, align, flags, (void *)c, errno);
}

static void test_create_errors(void)
{
	struct kmm_cache *c;
	void *obj;

	expect_einval(NULL, 64, 0, 0);
	expect_einval("zero", 0, 0, 0);
	expect_einval("too_big", KMM_CACHE_MAX_SIZE + 1, 0, 0);
	expect_einval("huge", SIZE_MAX, 0, 0);
	expect_einval("align3", 64, 3, 0);
	expect_einval("align24", 64, 24, 0);
	expect_einval("align_2pages", 64, 2 * KMM_PAGE_SIZE, 0);
	expect_einval("flags", 64, 0, 0x1000);
	expect_einval("flags", 64, 0, KMM_SLAB_VALID_FLAGS + 1);

	/* The edges that are allowed. */
	c = kmm_cache_create("edge_flags", 64, KMM_PAGE_SIZE, KMM_SLAB_VALID_FLAGS & ~KMM_SLAB_PANIC,
	                     NULL);
	CHECK(c != NULL, "valid flags and page alignment rejected: %s", strerror(errno));
	obj = kmm_cache_alloc(c, KMM_GFP_KERNEL);
	CHECK(obj != NULL && is_aligned(obj, KMM_PAGE_SIZE), "edge_flags object %p", obj);
	memset(obj, 0x11, 64);
	kmm_cache_free(c, obj);

	/* Unknown allocation flags. */
	errno = 0;
	obj = kmm_cache_alloc(c, 0x8000);
	CHECK(obj == NULL && errno == EINVAL, "kmm_cache_alloc(c, 0x8000) = %p, errno %d", obj, errno);
	/* NULL is ignored. */
	kmm_cache_free(c, NULL);
	destroy_quietly(c, "edge_flags");
}

static void panic_null_name(void *arg)
{
	(void)arg;
	kmm_cache_create(NULL, 64, 0, KMM_SLAB_PANIC, NULL);
}

static void panic_size_zero(void *arg)
{
	(void)arg;
	kmm_cache_create("panic_zero", 0, 0, KMM_SLAB_PANIC, NULL);
}

static void panic_bad_align(void *arg)
{
	(void)arg;
	kmm_cache_create("panic_align", 64, 3, KMM_SLAB_PANIC, NULL);
}

static void panic_bad_flags(void *arg)
{
	(void)arg;
	kmm_cache_create("panic_flags", 64, 0, KMM_SLAB_PANIC | 0x1000, NULL);
}

static void test_panic(void)
{
	struct kmm_cache *c;

	expect_abort(panic_null_name, NULL, "kmm");
	expect_abort(panic_size_zero, NULL, "kmm");
	expect_abort(panic_bad_align, NULL, "kmm");
	expect_abort(panic_bad_flags, NULL, "kmm");
	/* With good arguments KMM_SLAB_PANIC is just a cache. */
	c = kmm_cache_create("panic_ok", 48, 0, KMM_SLAB_PANIC, NULL);
	CHECK(c != NULL, "KMM_SLAB_PANIC with good arguments failed");
	destroy_quietly(c, "panic_ok");
}

/* ---- 2. alignment ---- */

/* Allocate a few slabs' worth from @c, check alignment and patterns, free. */
static void exercise_alignment(struct kmm_cache *c, const char *name, size_t size, size_t align,
                               size_t want_align)
{
	struct kmm_cache_stats st;
	void *objs[200];
	size_t n;

	kmm_cache_stats(c, &st);
	n = 3 * (size_t)st.objects_per_slab + 1;
	if (n > ARRAY_SIZE(objs))
		n = ARRAY_SIZE(objs);
	for (size_t i = 0; i < n; i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "%s: allocation failed: %s", name, strerror(errno));
		CHECK(is_aligned(objs[i], want_align), "%s: object %p not aligned to %zu", name, objs[i],
		      want_align);
		CHECK(st.align == 0 || is_aligned(objs[i], st.align),
		      "%s: object %p not aligned to its cache's %zu", name, objs[i], st.align);
		fill_pattern(objs[i], size, mix64((uintptr_t)objs[i]));
	}
	check_stats(c, name, size, align, n);
	for (size_t i = 0; i < n; i++) {
		long bad = check_pattern(objs[i], size, mix64((uintptr_t)objs[i]));
		CHECK(bad < 0, "%s: object %p overwritten at offset %ld", name, objs[i], bad);
		kmm_cache_free(c, objs[i]);
	}
	CHECK(kmm_slab_validate(c) == 0, "%s: kmm_slab_validate() failed", name);
}

static void test_alignment(void)
{
	static const size_t aligns[] = {0, 8, 16, 64, 256, 4096};
	static const size_t sizes[] = {1, 8, 24, 40, 100, 1000, 5000};
	static const size_t hw_sizes[] = {33, 40, 64, 65, 100, 1000, 4000};
	char name[64];

	for (size_t a = 0; a < ARRAY_SIZE(aligns); a++) {
		for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
			struct kmm_cache *c;
			char expect[64];
			size_t want = aligns[a] ? aligns[a] : sizeof(void *);

			snprintf(name, sizeof(name), "align_%zu_%zu", aligns[a], sizes[s]);
			memcpy(expect, name, sizeof(expect));
			c = kmm_cache_create(name, sizes[s], aligns[a], 0, NULL);
			CHECK(c != NULL, "creating %s failed: %s", name, strerror(errno));
			/* The name is copied: scribbling on ours changes nothing. */
			memset(name, 'x', sizeof(name) - 1);
			exercise_alignment(c, expect, sizes[s], aligns[a], want);
			destroy_quietly(c, expect);
		}
	}
	for (size_t s = 0; s < ARRAY_SIZE(hw_sizes); s++) {
		struct kmm_cache *c;
		snprintf(name, sizeof(name), "hwalign_%zu", hw_sizes[s]);
		c = kmm_cache_create(name, hw_sizes[s], 0, KMM_SLAB_HWCACHE_ALIGN, NULL);
		CHECK(c != NULL, "creating %s failed: %s", name, strerror(errno));
		exercise_alignment(c, name, hw_sizes[s], 0, 64);
		destroy_quietly(c, name);
	}
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after the alignment tests");
}

/* ---- 3. the randomized run ---- */

struct rcache {
	const char *name;
	size_t size;
	unsigned long flags;
	unsigned weight;
	struct kmm_cache *c;
	unsigned long live;
};

struct robj {
	uintptr_t addr;
	size_t cache;
	uint64_t tag;
};

static int cmp_robj(const void *a, const void *b)
{
	uintptr_t x = ((const struct robj *)a)->addr, y = ((const struct robj *)b)->addr;
	return x < y ? -1 : x > y;
}

static void test_random(struct rng *r)
{
	struct rcache caches[] = {
	        {"rnd_8", 8, 0, 20, NULL, 0},         {"rnd_24", 24, 0, 30, NULL, 0},
	        {"rnd_100", 100, KMM_SLAB_HWCACHE_ALIGN, 20, NULL, 0},
	        {"rnd_512", 512, 0, 15, NULL, 0},     {"rnd_3000", 3000, 0, 10, NULL, 0},
	        {"rnd_40000", 40000, 0, 2, NULL, 0},
	};
	enum { NC = sizeof(caches) / sizeof(caches[0]), MAX_LIVE = 3000 };
	unsigned long nops = test_scaled(400000, 40000), total_weight = 0, gen = 0;
	struct robj *live = calloc(MAX_LIVE, sizeof(*live)), *sorted = calloc(MAX_LIVE, sizeof(*live));
	size_t nlive = 0, target = MAX_LIVE / 2;

	CHECK(live && sorted, "out of memory");
	for (size_t i = 0; i < NC; i++) {
		caches[i].c = kmm_cache_create(caches[i].name, caches[i].size, 0, caches[i].flags, NULL);
		CHECK(caches[i].c != NULL, "creating %s failed: %s", caches[i].name, strerror(errno));
		total_weight += caches[i].weight;
	}

	for (unsigned long op = 0; op < nops; op++) {
		int do_alloc;

		if (op % 20000 == 0)
			target = (size_t)rng_range(r, 0, MAX_LIVE);
		if (nlive == 0)
			do_alloc = 1;
		else if (nlive == MAX_LIVE)
			do_alloc = 0;
		else
			do_alloc = rng_chance(r, nlive < target ? 3 : 1, 4);

		if (do_alloc) {
			unsigned long x = rng_below(r, total_weight);
			size_t ci = 0;
			struct robj o;
			void *p;

			while (x >= caches[ci].weight)
				x -= caches[ci++].weight;
			p = kmm_cache_alloc(caches[ci].c, KMM_GFP_KERNEL);
			CHECK(p != NULL, "op %lu: %s allocation failed: %s", op, caches[ci].name,
			      strerror(errno));
			CHECK(is_aligned(p, caches[ci].flags & KMM_SLAB_HWCACHE_ALIGN ? 64 : 8),
			      "op %lu: %s object %p misaligned", op, caches[ci].name, p);
			o.addr = (uintptr_t)p;
			o.cache = ci;
			o.tag = mix64(o.addr ^ mix64(++gen));
			fill_pattern(p, caches[ci].size, o.tag);
			live[nlive++] = o;
			caches[ci].live++;
		} else {
			size_t i = (size_t)rng_below(r, nlive);
			struct robj o = live[i];
			long bad = check_pattern((void *)o.addr, caches[o.cache].size, o.tag);
			CHECK(bad < 0, "op %lu: %s object %p corrupted at offset %ld", op,
			      caches[o.cache].name, (void *)o.addr, bad);
			kmm_cache_free(caches[o.cache].c, (void *)o.addr);
			caches[o.cache].live--;
			live[i] = live[--nlive];
		}

		if ((op + 1) % BATCH == 0) {
			CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed at op %lu",
			      op + 1);
			for (size_t i = 0; i < NC; i++) {
				CHECK(kmm_slab_validate(caches[i].c) == 0,
				      "kmm_slab_validate(%s) failed at op %lu", caches[i].name, op + 1);
				check_stats(caches[i].c, caches[i].name, caches[i].size, 0, caches[i].live);
			}
			memcpy(sorted, live, nlive * sizeof(*live));
			qsort(sorted, nlive, sizeof(*sorted), cmp_robj);
			for (size_t i = 1; i < nlive; i++)
				CHECK(sorted[i - 1].addr + caches[sorted[i - 1].cache].size <= sorted[i].addr,
				      "objects overlap: %p (%s) and %p (%s)", (void *)sorted[i - 1].addr,
				      caches[sorted[i - 1].cache].name, (void *)sorted[i].addr,
				      caches[sorted[i].cache].name);
			for (size_t i = 0; i < nlive; i++)
				CHECK(check_pattern((void *)live[i].addr, caches[live[i].cache].size,
				                    live[i].tag) < 0,
				      "checkpoint: %s object %p corrupted", caches[live[i].cache].name,
				      (void *)live[i].addr);
			CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed at op %lu", op + 1);
		}
		if (rng_chance(r, 1, 20000))
			kmm_drain_local();
	}
	while (nlive > 0) {
		struct robj o = live[--nlive];
		CHECK(check_pattern((void *)o.addr, caches[o.cache].size, o.tag) < 0,
		      "final free: %s object %p corrupted", caches[o.cache].name, (void *)o.addr);
		kmm_cache_free(caches[o.cache].c, (void *)o.addr);
		caches[o.cache].live--;
	}
	for (size_t i = 0; i < NC; i++) {
		check_stats(caches[i].c, caches[i].name, caches[i].size, 0, 0);
		CHECK(kmm_cache_shrink(caches[i].c) == 0, "%s: kmm_cache_shrink() != 0 with nothing in use",
		      caches[i].name);
		destroy_quietly(caches[i].c, caches[i].name);
	}
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after the random run");
	printf("  random run: %lu operations over %d caches\n", nops, (int)NC);
	free(live);
	free(sorted);
}

/* ---- 4. constructors ---- */

#define CTOR_SIZE  128
#define CTOR_WORDS (CTOR_SIZE / 8)
#define CTOR_MAGIC 0x63746f7273746174ull /* "ctorstat" */

static unsigned long ctor_calls;

/* The constructed state: what the ctor sets and users restore before a free. */
static void construct(void *obj)
{
	uint64_t *w = obj;
	for (size_t i = 0; i < CTOR_WORDS; i++)
		w[i] = CTOR_MAGIC ^ i;
}

static void ctor_fn(void *obj)
{
	construct(obj);
	ctor_calls++;
}

static int is_constructed(const void *obj)
{
	const uint64_t *w = obj;
	for (size_t i = 0; i < CTOR_WORDS; i++)
		if (w[i] != (CTOR_MAGIC ^ i))
			return 0;
	return 1;
}

/* Allocate @n objects: each must be constructed; then use (scribble on) them. */
static void ctor_round(struct kmm_cache *c, void **objs, size_t n, const char *round)
{
	for (size_t i = 0; i < n; i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "%s: allocation failed: %s", round, strerror(errno));
		CHECK(is_constructed(objs[i]), "%s: object %p not in its constructed state", round,
		      objs[i]);
		fill_pattern(objs[i], CTOR_SIZE, (uint64_t)i);
	}
}

/* Users give objects back in their constructed state. */
static void ctor_free_all(struct kmm_cache *c, void **objs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		CHECK(check_pattern(objs[i], CTOR_SIZE, (uint64_t)i) < 0, "object %p corrupted", objs[i]);
		construct(objs[i]);
		kmm_cache_free(c, objs[i]);
	}
}

static void test_ctor(void)
{
	long min_partial = kmm_tune_get(KMM_TUNE_MIN_PARTIAL);
	struct kmm_cache_stats st;
	struct kmm_cache *c;
	unsigned long calls1, slabs1;
	void **objs;
	size_t n;

	/* Keep every empty slab, so the second round needs no new slab. */
	CHECK(kmm_tune_set(KMM_TUNE_MIN_PARTIAL, 64) == 0, "kmm_tune_set(MIN_PARTIAL, 64) failed");
	c = kmm_cache_create("ctor_cache", CTOR_SIZE, 0, 0, ctor_fn);
	CHECK(c != NULL, "creating ctor_cache failed: %s", strerror(errno));
	kmm_cache_stats(c, &st);
	n = (size_t)st.objects_per_slab * 20;
	objs = calloc(n, sizeof(*objs));
	CHECK(objs != NULL, "out of memory");

	ctor_round(c, objs, n, "first round");
	kmm_cache_stats(c, &st);
	calls1 = ctor_calls;
	slabs1 = st.num_slabs;
	CHECK(calls1 >= n, "ctor ran %lu times for %zu objects", calls1, n);
	CHECK(calls1 == st.num_objs, "ctor ran %lu times, but the slabs made hold %lu objects", calls1,
	      st.num_objs);
	check_stats(c, "ctor_cache", CTOR_SIZE, 0, n);
	ctor_free_all(c, objs, n);
	CHECK(ctor_calls == calls1, "ctor ran on free (%lu -> %lu calls)", calls1, ctor_calls);

	ctor_round(c, objs, n, "second round");
	kmm_cache_stats(c, &st);
	CHECK(ctor_calls == calls1,
	      "ctor ran %lu more times when the same objects were allocated again",
	      ctor_calls - calls1);
	CHECK(st.num_slabs == slabs1, "second round changed the slab count %lu -> %lu", slabs1,
	      st.num_slabs);
	ctor_free_all(c, objs, n);

	/* Emptied and shrunk, the cache makes new slabs, which are constructed again. */
	CHECK(kmm_cache_shrink(c) == 0, "kmm_cache_shrink() != 0 with every object free");
	kmm_cache_stats(c, &st);
	CHECK(st.num_slabs == 0 && st.num_objs == 0, "a shrunk empty cache keeps %lu slabs",
	      st.num_slabs);
	calls1 = ctor_calls;
	ctor_round(c, objs, n, "after shrink");
	kmm_cache_stats(c, &st);
	CHECK(ctor_calls - calls1 == st.num_objs,
	      "new slabs of %lu objects, but the ctor ran %lu times", st.num_objs, ctor_calls - calls1);
	ctor_free_all(c, objs, n);
	CHECK(kmm_slab_validate(c) == 0, "kmm_slab_validate(ctor_cache) failed");
	destroy_quietly(c, "ctor_cache");
	CHECK(kmm_tune_set(KMM_TUNE_MIN_PARTIAL, min_partial) == 0, "restoring MIN_PARTIAL failed");
	printf("  ctor: %zu objects per round, %lu constructor calls in all\n", n, ctor_calls);
	free(objs);
}

/* ---- 5. shrink, zeroing, the largest objects ---- */

static void test_shrink_zero_big(void)
{
	struct kmm_cache_stats st;
	struct kmm_cache *c;
	void *objs[1000];

	c = kmm_cache_create("shrink_cache", 256, 0, 0, NULL);
	CHECK(c != NULL, "creating shrink_cache failed: %s", strerror(errno));
	for (size_t i = 0; i < ARRAY_SIZE(objs); i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "shrink_cache allocation failed: %s", strerror(errno));
		memset(objs[i], 0xee, 256);
	}
	CHECK(kmm_cache_shrink(c) == 1, "kmm_cache_shrink() with 1000 objects in use did not return 1");
	check_stats(c, "shrink_cache", 256, 0, ARRAY_SIZE(objs));
	for (size_t i = 0; i < ARRAY_SIZE(objs); i++)
		kmm_cache_free(c, objs[i]);
	CHECK(kmm_cache_shrink(c) == 0, "kmm_cache_shrink() after freeing everything did not return 0");
	kmm_cache_stats(c, &st);
	CHECK(st.num_slabs == 0 && st.num_objs == 0 && st.active_objs == 0 && st.active_slabs == 0,
	      "a shrunk empty cache reports %lu slabs, %lu objects, %lu active", st.num_slabs,
	      st.num_objs, st.active_objs);

	/* KMM_GFP_ZERO zeroes the object even when it was just freed dirty. */
	for (size_t i = 0; i < 100; i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "allocation failed");
		memset(objs[i], 0xdd, 256);
	}
	for (size_t i = 0; i < 100; i++)
		kmm_cache_free(c, objs[i]);
	for (size_t i = 0; i < 100; i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL | KMM_GFP_ZERO);
		CHECK(objs[i] != NULL, "zeroed allocation failed");
		CHECK(is_zero(objs[i], 256), "KMM_GFP_ZERO object %p not zeroed", objs[i]);
	}
	for (size_t i = 0; i < 100; i++)
		kmm_cache_free(c, objs[i]);
	destroy_quietly(c, "shrink_cache");

	/* Objects of the largest size a cache may hold. */
	c = kmm_cache_create("max_size_cache", KMM_CACHE_MAX_SIZE, 0, 0, NULL);
	CHECK(c != NULL, "a cache of KMM_CACHE_MAX_SIZE objects failed: %s", strerror(errno));
	for (size_t i = 0; i < 3; i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "max-size allocation failed: %s", strerror(errno));
		fill_pattern(objs[i], KMM_CACHE_MAX_SIZE, i + 1);
	}
	check_stats(c, "max_size_cache", KMM_CACHE_MAX_SIZE, 0, 3);
	for (size_t i = 0; i < 3; i++) {
		CHECK(check_pattern(objs[i], KMM_CACHE_MAX_SIZE, i + 1) < 0, "max-size object %zu corrupted",
		      i);
		kmm_cache_free(c, objs[i]);
	}
	CHECK(kmm_slab_validate(c) == 0, "kmm_slab_validate(max_size_cache) failed");
	destroy_quietly(c, "max_size_cache");
}

/* ---- 6. destroy: leak reports and exact page accounting ---- */

#define LEAK_NAME  "leaky_cache_t"
#define LEAK_COUNT 37
#define LEAK_SIZE  72

static void leak_child(void *arg)
{
	struct kmm_cache *c = kmm_cache_create(LEAK_NAME, LEAK_SIZE, 0, 0, NULL);
	void *objs[LEAK_COUNT];

	(void)arg;
	CHECK(c != NULL, "creating %s failed", LEAK_NAME);
	for (size_t i = 0; i < LEAK_COUNT; i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "allocation failed");
		fill_pattern(objs[i], LEAK_SIZE, i);
	}
	kmm_cache_destroy(c);
	/* The slabs were kept: the objects are still there and writable. */
	for (size_t i = 0; i < LEAK_COUNT; i++) {
		CHECK(check_pattern(objs[i], LEAK_SIZE, i) < 0, "leaked object %zu changed by destroy", i);
		fill_pattern(objs[i], LEAK_SIZE, ~i);
	}
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after destroying a leaky cache");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after destroying a leaky cache");
}

static void test_destroy_leak(void)
{
	char how[96];
	int st = 0;
	char *err = run_in_child(leak_child, NULL, &st);

	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "destroying a cache with objects in use: the child %s (it must not abort); stderr:\n%s",
	      describe_status(st, how, sizeof(how)), err);
	CHECK(strstr(err, LEAK_NAME) != NULL, "the leak report does not name the cache:\n%s", err);
	CHECK(contains_number(err, LEAK_COUNT), "the leak report does not give the count %d:\n%s",
	      LEAK_COUNT, err);
	CHECK(strstr(err, "kmm") != NULL, "the leak report does not say \"kmm\":\n%s", err);
	free(err);
}

struct shape {
	const char *name;
	size_t size, align;
	unsigned long flags;
	void (*ctor)(void *);
	size_t n;
};

static void ctor_plain(void *obj)
{
	memset(obj, 0x42, 48);
}

/* Create, fill, empty and destroy a cache of @s. */
static void cache_cycle(const struct shape *s)
{
	struct kmm_cache *c = kmm_cache_create(s->name, s->size, s->align, s->flags, s->ctor);
	void **objs = calloc(s->n, sizeof(*objs));

	CHECK(c != NULL && objs != NULL, "creating %s failed: %s", s->name, strerror(errno));
	for (size_t i = 0; i < s->n; i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "%s: allocation failed: %s", s->name, strerror(errno));
		if (!s->ctor)
			fill_pattern(objs[i], s->size, i);
	}
	for (size_t i = 0; i < s->n; i++) {
		if (!s->ctor)
			CHECK(check_pattern(objs[i], s->size, i) < 0, "%s: object %zu corrupted", s->name, i);
		kmm_cache_free(c, objs[i]);
	}
	destroy_quietly(c, s->name);
	free(objs);
}

static void test_accounting(void)
{
	static const struct shape shapes[] = {
	        {"acct_small", 64, 0, 0, NULL, 2000},
	        {"acct_hw", 100, 0, KMM_SLAB_HWCACHE_ALIGN, NULL, 500},
	        {"acct_multipage", 40000, 0, 0, NULL, 50},
	        {"acct_ctor", 48, 0, 0, ctor_plain, 700},
	};
	unsigned long in_use0, in_use1;

	/* Warm-up: kmm's own metadata caches get their slabs now. */
	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++)
		cache_cycle(&shapes[i]);
	in_use0 = pages_in_use();
	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++) {
		cache_cycle(&shapes[i]);
		in_use1 = pages_in_use();
		CHECK(in_use1 == in_use0,
		      "after creating, using and destroying %s, %lu pages are in use (%lu before)",
		      shapes[i].name, in_use1, in_use0);
	}
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after the accounting test");
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after the accounting test");
}

/* ---- 7. detectors ---- */

static struct kmm_cache *det_cache, *det_other;

static void free_interior(void *arg)
{
	char *p = kmm_cache_alloc(det_cache, KMM_GFP_KERNEL);
	(void)arg;
	kmm_cache_free(det_cache, p + 8);
}

static void free_stack(void *arg)
{
	uint64_t buf[16];
	(void)arg;
	memset(buf, 0, sizeof(buf));
	kmm_cache_free(det_cache, buf);
}

static void free_twice(void *arg)
{
	void *p = kmm_cache_alloc(det_cache, KMM_GFP_KERNEL);
	(void)arg;
	kmm_cache_free(det_cache, p);
	kmm_cache_free(det_cache, p);
}

static void free_to_wrong_cache(void *arg)
{
	void *p = kmm_cache_alloc(det_other, KMM_GFP_KERNEL);
	(void)arg;
	kmm_cache_free(det_cache, p);
}

static void free_page_to_cache(void *arg)
{
	void *p = kmm_alloc_pages(KMM_GFP_KERNEL, 0);
	(void)arg;
	kmm_cache_free(det_cache, p);
}

static void test_detectors(void)
{
	const char *err;

	det_cache = kmm_cache_create("det_cache", 64, 0, 0, NULL);
	det_other = kmm_cache_create("det_other", 192, 0, 0, NULL);
	CHECK(det_cache && det_other, "creating the detector caches failed");

	expect_abort(free_interior, NULL, "kmm");
	expect_abort(free_stack, NULL, "kmm");
	err = expect_abort(free_twice, NULL, "kmm");
	CHECK(strstr(err, "double free") != NULL, "a double free is not called one:\n%s", err);
	expect_abort(free_to_wrong_cache, NULL, "kmm");
	expect_abort(free_page_to_cache, NULL, "kmm");

	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after the detector tests");
	destroy_quietly(det_cache, "det_cache");
	destroy_quietly(det_other, "det_other");
}

int main(void)
{
	struct rng r;

	rng_seed(&r, test_init("test_slab", 0x736c616230303031ull));
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed at start");
	test_create_errors();
	test_panic();
	test_alignment();
	test_random(&r);
	test_ctor();
	test_shrink_zero_big();
	test_destroy_leak();
	test_accounting();
	test_detectors();
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed at the end");
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed at the end");
	return test_finish();
}
