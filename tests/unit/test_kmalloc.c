/* SPDX-License-Identifier: MIT */
/*
 * test_kmalloc.c - allocation by size (kmm/kmalloc.h).
 *
 *   1. the special values: kmalloc(0) is KMM_ZERO_SIZE_PTR, absurd sizes
 *      give NULL with ENOMEM, unknown flags EINVAL, NULL and the zero-size
 *      pointer are accepted by kfree() and ksize().
 *   2. a sweep of sizes: every size up to 4096, a stride up to 1 MiB, the
 *      powers of two and their neighbours, random sizes and OS-mapped sizes
 *      above 4 MiB.  For each: ksize >= size, 16-byte alignment (8 for
 *      sizes <= 8), power-of-two sizes aligned to min(size, page), bounded
 *      waste, kmm_kmalloc_size_class() agreeing with ksize, and the whole
 *      usable size writable.
 *   3. many blocks live at once, each filled with its own pattern: no two
 *      overlap (not even in their usable sizes) and none is overwritten.
 *   4. kzalloc, KMM_GFP_ZERO and kcalloc zero memory that was just freed
 *      dirty; kcalloc overflow gives NULL with ENOMEM.
 *   5. krealloc keeps the contents across slab, page and OS-mapped sizes,
 *      acts as kmalloc on NULL, frees on size 0, leaves the block alone
 *      when it fails.
 *   6. the detectors: kfree of a stack address, of p+1 and a double kfree
 *      abort with a "kmm" report.
 */
#include <stdbool.h>
#include <sys/mman.h>

#include "common.h"

#define MiB (1024ul * 1024ul)
#define MAX_BUDDY_BYTES (KMM_PAGE_SIZE << (KMM_MAX_ORDER - 1))

static int is_pow2(size_t x)
{
	return x && !(x & (x - 1));
}

static int is_aligned(const void *p, size_t align)
{
	return ((uintptr_t)p & (align - 1)) == 0;
}

/* Every guarantee kmalloc.h makes about a block of @size at @p. */
static void check_block(const void *p, size_t size, const char *what)
{
	size_t ks, align = size <= 8 ? 8 : 16;

	CHECK(p != NULL, "%s: kmalloc(%zu) failed: %s", what, size, strerror(errno));
	CHECK(p != KMM_ZERO_SIZE_PTR, "%s: kmalloc(%zu) returned the zero-size pointer", what, size);
	ks = kmm_ksize(p);
	CHECK(ks >= size, "%s: ksize %zu < size %zu", what, ks, size);
	CHECK(is_aligned(p, align), "%s: size %zu at %p not aligned to %zu", what, size, p, align);
	if (is_pow2(size)) {
		size_t want = size < KMM_PAGE_SIZE ? size : KMM_PAGE_SIZE;
		CHECK(is_aligned(p, want), "%s: power-of-two size %zu at %p not aligned to %zu", what,
		      size, p, want);
	}
	if (size <= 64)
		CHECK(ks - size <= 15, "%s: size %zu gets ksize %zu (waste above 15)", what, size, ks);
	else if (size <= KMM_KMALLOC_MAX_CACHE_SIZE)
		CHECK(ks - size <= size / 4, "%s: size %zu gets ksize %zu (waste above size/4)", what,
		      size, ks);
	else
		CHECK(ks - size < KMM_PAGE_SIZE, "%s: size %zu gets ksize %zu (waste of a page or more)",
		      what, size, ks);
	if (size <= KMM_KMALLOC_MAX_CACHE_SIZE)
		CHECK(kmm_kmalloc_size_class(size) == ks,
		      "%s: size class of %zu is %zu but ksize is %zu", what, size,
		      kmm_kmalloc_size_class(size), ks);
	else
		CHECK(kmm_kmalloc_size_class(size) == 0, "%s: size class of %zu is %zu, expected 0", what,
		      size, kmm_kmalloc_size_class(size));
}

/* Write the whole usable size (small blocks) or a byte of every page (large). */
static void touch_usable(void *p)
{
	size_t ks = kmm_ksize(p);
	unsigned char *b = p;

	if (ks <= 64 * 1024) {
		memset(b, 0x3c, ks);
		return;
	}
	for (size_t off = 0; off < ks; off += KMM_PAGE_SIZE)
		b[off] = 0x3c;
	b[ks - 1] = 0x3c;
}

/* ---- 1. special values ---- */

static void test_special(void)
{
	static const size_t absurd[] = {SIZE_MAX, SIZE_MAX - 4095, (size_t)PTRDIFF_MAX + 1ull,
	                                (size_t)PTRDIFF_MAX};
	void *p;

	p = kmm_kmalloc(0, KMM_GFP_KERNEL);
	CHECK(p == KMM_ZERO_SIZE_PTR, "kmalloc(0) = %p, expected KMM_ZERO_SIZE_PTR", p);
	CHECK(KMM_ZERO_OR_NULL_PTR(p), "KMM_ZERO_OR_NULL_PTR(kmalloc(0)) is false");
	CHECK(kmm_ksize(p) == 0, "ksize(KMM_ZERO_SIZE_PTR) = %zu", kmm_ksize(p));
	CHECK(kmm_ksize(NULL) == 0, "ksize(NULL) = %zu", kmm_ksize(NULL));
	kmm_kfree(p);
	kmm_kfree(NULL);
	kmm_kfree(KMM_ZERO_SIZE_PTR);
	p = kmm_kzalloc(0, KMM_GFP_KERNEL);
	CHECK(p == KMM_ZERO_SIZE_PTR, "kzalloc(0) = %p, expected KMM_ZERO_SIZE_PTR", p);
	kmm_kfree(p);

	for (size_t i = 0; i < ARRAY_SIZE(absurd); i++) {
		errno = 0;
		p = kmm_kmalloc(absurd[i], KMM_GFP_KERNEL);
		CHECK(p == NULL && errno == ENOMEM, "kmalloc(%#zx) = %p, errno %d; expected NULL/ENOMEM",
		      absurd[i], p, errno);
		errno = 0;
		p = kmm_kzalloc(absurd[i], KMM_GFP_KERNEL);
		CHECK(p == NULL && errno == ENOMEM, "kzalloc(%#zx) = %p, errno %d; expected NULL/ENOMEM",
		      absurd[i], p, errno);
	}

	errno = 0;
	p = kmm_kmalloc(64, 0x8000);
	CHECK(p == NULL && errno == EINVAL, "kmalloc(64, 0x8000) = %p, errno %d; expected EINVAL", p,
	      errno);
	errno = 0;
	p = kmm_kmalloc(100000, KMM_GFP_KERNEL | 0x100);
	CHECK(p == NULL && errno == EINVAL, "kmalloc(100000, KERNEL|0x100) = %p, errno %d", p, errno);
}

/* ---- 2. the size sweep ---- */

static unsigned long swept;

static void sweep_one(size_t size)
{
	void *p = kmm_kmalloc(size, KMM_GFP_KERNEL);
	char what[48];

	snprintf(what, sizeof(what), "sweep %zu", size);
	check_block(p, size, what);
	touch_usable(p);
	kmm_kfree(p);
	swept++;
}

static void test_sweep(struct rng *r)
{
	static const size_t os_sizes[] = {MAX_BUDDY_BYTES + 1, 5 * MiB, 8 * MiB, 8 * MiB + 3,
	                                  16 * MiB + 123, 33 * MiB};
	size_t stride = (61 * test_scale()) | 1;

	for (size_t s = 1; s <= 4096; s++)
		sweep_one(s);
	for (size_t s = 4096 + stride; s <= MiB; s += stride)
		sweep_one(s);
	for (unsigned k = 0; k <= 24; k++) {
		size_t s = (size_t)1 << k;
		sweep_one(s);
		sweep_one(s + 1);
		if (s > 1)
			sweep_one(s - 1);
	}
	sweep_one(KMM_KMALLOC_MAX_CACHE_SIZE);
	sweep_one(KMM_KMALLOC_MAX_CACHE_SIZE + 1);
	sweep_one(MAX_BUDDY_BYTES);
	for (size_t i = 0; i < ARRAY_SIZE(os_sizes); i++)
		sweep_one(os_sizes[i]);
	for (unsigned long i = 0, n = test_scaled(3000, 500); i < n; i++)
		sweep_one(rng_log_size(r, 1, 2 * MiB));
	printf("  sweep: %lu sizes\n", swept);
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after the sweep");
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after the sweep");
}

/* ---- 3. many blocks at once ---- */

struct kblock {
	uintptr_t addr;
	size_t size;
	uint64_t tag;
};

static int cmp_kblock(const void *a, const void *b)
{
	uintptr_t x = ((const struct kblock *)a)->addr, y = ((const struct kblock *)b)->addr;
	return x < y ? -1 : x > y;
}

static size_t pick_size(struct rng *r)
{
	unsigned long x = rng_below(r, 1000);
	if (x < 700)
		return rng_log_size(r, 1, 512);
	if (x < 900)
		return rng_log_size(r, 513, KMM_KMALLOC_MAX_CACHE_SIZE);
	if (x < 995)
		return rng_log_size(r, KMM_KMALLOC_MAX_CACHE_SIZE + 1, MiB);
	return (size_t)rng_range(r, MAX_BUDDY_BYTES + 1, 9 * MiB);
}

static void kblock_new(struct rng *r, struct kblock *b, size_t *live_bytes, unsigned long gen)
{
	size_t size = pick_size(r);
	void *p;

	if (*live_bytes + size > 192 * MiB)
		size = (size_t)rng_range(r, 1, 256);
	p = kmm_kmalloc(size, KMM_GFP_KERNEL);
	check_block(p, size, "live set");
	b->addr = (uintptr_t)p;
	b->size = size;
	b->tag = mix64(b->addr ^ mix64(gen));
	fill_pattern(p, size, b->tag);
	*live_bytes += size;
}

static void kblock_verify(const struct kblock *b, const char *when)
{
	long bad = check_pattern((void *)b->addr, b->size, b->tag);
	CHECK(bad < 0, "%s: block %p of %zu bytes overwritten at offset %ld", when, (void *)b->addr,
	      b->size, bad);
}

static void test_live_set(struct rng *r)
{
	enum { N = 3000 };
	struct kblock *blocks = calloc(N, sizeof(*blocks)), *sorted = calloc(N, sizeof(*sorted));
	unsigned long rounds = test_scaled(6, 2), gen = 0;
	size_t live_bytes = 0;

	CHECK(blocks && sorted, "out of memory");
	for (unsigned long round = 0; round < rounds; round++) {
		for (size_t i = 0; i < N; i++)
			kblock_new(r, &blocks[i], &live_bytes, ++gen);
		/* Replace a random half, so freed blocks are reused while others live. */
		for (size_t k = 0; k < N / 2; k++) {
			size_t i = (size_t)rng_below(r, N);
			kblock_verify(&blocks[i], "replace");
			kmm_kfree((void *)blocks[i].addr);
			live_bytes -= blocks[i].size;
			kblock_new(r, &blocks[i], &live_bytes, ++gen);
		}
		for (size_t i = 0; i < N; i++)
			kblock_verify(&blocks[i], "all live");
		memcpy(sorted, blocks, N * sizeof(*blocks));
		qsort(sorted, N, sizeof(*sorted), cmp_kblock);
		for (size_t i = 1; i < N; i++)
			CHECK(sorted[i - 1].addr + kmm_ksize((void *)sorted[i - 1].addr) <= sorted[i].addr,
			      "blocks overlap: %p (size %zu, ksize %zu) and %p (size %zu)",
			      (void *)sorted[i - 1].addr, sorted[i - 1].size,
			      kmm_ksize((void *)sorted[i - 1].addr), (void *)sorted[i].addr, sorted[i].size);
		CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed with the set live");
		CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed with the set live");
		/* Free in random order. */
		for (size_t i = N; i > 1; i--) {
			size_t j = (size_t)rng_below(r, i);
			struct kblock t = blocks[i - 1];
			blocks[i - 1] = blocks[j];
			blocks[j] = t;
		}
		for (size_t i = 0; i < N; i++) {
			kblock_verify(&blocks[i], "free");
			kmm_kfree((void *)blocks[i].addr);
			live_bytes -= blocks[i].size;
		}
	}
	CHECK(live_bytes == 0, "bookkeeping: %zu bytes left", live_bytes);
	printf("  live set: %lu rounds of %d blocks\n", rounds, (int)N);
	free(blocks);
	free(sorted);
}

/* ---- 4. zeroing ---- */

static void test_zeroing(void)
{
	static const size_t sizes[] = {1,     16,    64,     100,     1000,    4096,
	                               5000,  32768, 40000,  200000,  4 * MiB, 5 * MiB};
	void *p;

	for (size_t si = 0; si < ARRAY_SIZE(sizes); si++) {
		size_t size = sizes[si], n = size > MiB ? 2 : 16;
		void *blocks[16];

		for (int how = 0; how < 3; how++) {
			for (size_t i = 0; i < n; i++) {
				blocks[i] = kmm_kmalloc(size, KMM_GFP_KERNEL);
				check_block(blocks[i], size, "dirty");
				memset(blocks[i], 0xcc, kmm_ksize(blocks[i]));
			}
			for (size_t i = n; i-- > 0;)
				kmm_kfree(blocks[i]);
			for (size_t i = 0; i < n; i++) {
				const char *name = how == 0 ? "kzalloc" : how == 1 ? "KMM_GFP_ZERO" : "kcalloc";
				if (how == 0)
					blocks[i] = kmm_kzalloc(size, KMM_GFP_KERNEL);
				else if (how == 1)
					blocks[i] = kmm_kmalloc(size, KMM_GFP_KERNEL | KMM_GFP_ZERO);
				else
					blocks[i] = kmm_kcalloc(1, size, KMM_GFP_KERNEL);
				check_block(blocks[i], size, name);
				CHECK(is_zero(blocks[i], size), "%s(%zu) returned %p not zeroed", name, size,
				      blocks[i]);
			}
			for (size_t i = 0; i < n; i++)
				kmm_kfree(blocks[i]);
		}
	}

	/* kcalloc multiplies, and refuses products that overflow. */
	p = kmm_kcalloc(100, 24, KMM_GFP_KERNEL);
	check_block(p, 2400, "kcalloc(100, 24)");
	CHECK(is_zero(p, 2400), "kcalloc(100, 24) not zeroed");
	kmm_kfree(p);
	errno = 0;
	p = kmm_kcalloc(SIZE_MAX / 2 + 1, 2, KMM_GFP_KERNEL);
	CHECK(p == NULL && errno == ENOMEM, "kcalloc(SIZE_MAX/2+1, 2) = %p, errno %d", p, errno);
	errno = 0;
	p = kmm_kcalloc(2, SIZE_MAX, KMM_GFP_KERNEL);
	CHECK(p == NULL && errno == ENOMEM, "kcalloc(2, SIZE_MAX) = %p, errno %d", p, errno);
	errno = 0;
	p = kmm_kcalloc((size_t)1 << 32, ((size_t)1 << 32) + 1, KMM_GFP_KERNEL);
	CHECK(p == NULL && errno == ENOMEM, "kcalloc(2^32, 2^32+1) = %p, errno %d", p, errno);
}

/* ---- 5. krealloc ---- */

/* Resize @p from @old to @size: contents kept up to the smaller size. */
static void *realloc_step(void *p, size_t old, uint64_t old_tag, size_t size, uint64_t new_tag)
{
	size_t keep = old < size ? old : size;
	void *q = kmm_krealloc(p, size, KMM_GFP_KERNEL);
	char what[64];
	long bad;

	snprintf(what, sizeof(what), "krealloc %zu -> %zu", old, size);
	/*
	 * A resize may stay in place when the block is big enough, as the
	 * kernel's does, so only the basic guarantees hold, not the size-class
	 * ones (waste, power-of-two alignment) of a fresh kmalloc.
	 */
	CHECK(q != NULL && q != KMM_ZERO_SIZE_PTR, "%s failed: %s", what, strerror(errno));
	CHECK(kmm_ksize(q) >= size, "%s: ksize %zu", what, kmm_ksize(q));
	CHECK(is_aligned(q, size <= 8 ? 8 : 16), "%s: %p misaligned", what, q);
	bad = check_pattern(q, keep, old_tag);
	CHECK(bad < 0, "%s lost the contents at offset %ld", what, bad);
	fill_pattern(q, size, new_tag);
	return q;
}

static void test_krealloc(struct rng *r)
{
	static const size_t chain[] = {10,       100,     3000,    32768,  40000, MiB,
	                               5 * MiB,  9 * MiB, 3 * MiB, 50000,  2000,  24,
	                               1,        300,     6 * MiB, 7 * MiB, 16,   MAX_BUDDY_BYTES};
	unsigned long in_use_before, in_use_after, steps = test_scaled(4000, 500);
	size_t old;
	uint64_t tag;
	void *p, *q;

	/* krealloc(NULL, n) is kmalloc(n). */
	p = kmm_krealloc(NULL, chain[0], KMM_GFP_KERNEL);
	check_block(p, chain[0], "krealloc(NULL, 10)");
	old = chain[0];
	tag = mix64(1);
	fill_pattern(p, old, tag);
	for (size_t i = 1; i < ARRAY_SIZE(chain); i++) {
		p = realloc_step(p, old, tag, chain[i], mix64(i + 1));
		old = chain[i];
		tag = mix64(i + 1);
	}
	/* krealloc(p, 0) frees p and returns the zero-size pointer. */
	q = kmm_krealloc(p, 0, KMM_GFP_KERNEL);
	CHECK(q == KMM_ZERO_SIZE_PTR, "krealloc(p, 0) = %p, expected KMM_ZERO_SIZE_PTR", q);
	/* ... and the zero-size pointer can be grown again, like kmalloc. */
	p = kmm_krealloc(q, 50, KMM_GFP_KERNEL);
	check_block(p, 50, "krealloc(KMM_ZERO_SIZE_PTR, 50)");
	kmm_kfree(p);

	/* The free done by krealloc(p, 0) is real: a 1 MiB block's pages come back. */
	p = kmm_kmalloc(MiB, KMM_GFP_KERNEL);
	check_block(p, MiB, "kmalloc(1 MiB)");
	memset(p, 1, MiB);
	in_use_before = pages_in_use();
	q = kmm_krealloc(p, 0, KMM_GFP_KERNEL);
	in_use_after = pages_in_use();
	CHECK(q == KMM_ZERO_SIZE_PTR, "krealloc(p, 0) = %p", q);
	CHECK(in_use_before >= in_use_after + MiB / KMM_PAGE_SIZE,
	      "krealloc(1 MiB block, 0) gave back %ld pages, expected %lu",
	      (long)in_use_before - (long)in_use_after, MiB / KMM_PAGE_SIZE);

	/* On failure p is left untouched. */
	p = kmm_kmalloc(100, KMM_GFP_KERNEL);
	check_block(p, 100, "kmalloc(100)");
	fill_pattern(p, 100, 0xabcdef);
	errno = 0;
	q = kmm_krealloc(p, SIZE_MAX, KMM_GFP_KERNEL);
	CHECK(q == NULL && errno == ENOMEM, "krealloc(p, SIZE_MAX) = %p, errno %d", q, errno);
	errno = 0;
	q = kmm_krealloc(p, (size_t)PTRDIFF_MAX + 1ull, KMM_GFP_KERNEL);
	CHECK(q == NULL && errno == ENOMEM, "krealloc(p, PTRDIFF_MAX+1) = %p, errno %d", q, errno);
	CHECK(check_pattern(p, 100, 0xabcdef) < 0, "a failed krealloc changed the block");
	CHECK(kmm_ksize(p) >= 100, "a failed krealloc shrank the block");
	kmm_kfree(p);

	/* A random chain of resizes. */
	old = 1;
	tag = mix64(0x5eed);
	p = kmm_kmalloc(old, KMM_GFP_KERNEL);
	check_block(p, old, "chain start");
	fill_pattern(p, old, tag);
	for (unsigned long i = 0; i < steps; i++) {
		size_t size = rng_chance(r, 1, 200) ? (size_t)rng_range(r, MAX_BUDDY_BYTES - 3, 6 * MiB)
		                                    : rng_log_size(r, 1, 2 * MiB);
		uint64_t nt = mix64(tag + i);
		p = realloc_step(p, old, tag, size, nt);
		old = size;
		tag = nt;
	}
	kmm_kfree(p);
	printf("  krealloc: %zu fixed steps, %lu random steps\n", ARRAY_SIZE(chain), steps);
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after krealloc");
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after krealloc");
}

/* ---- 6. detectors ---- */

static void kfree_stack(void *arg)
{
	uint64_t buf[8];
	(void)arg;
	memset(buf, 0, sizeof(buf));
	kmm_kfree(buf);
}

static void kfree_plus_one(void *arg)
{
	size_t size = (size_t)(uintptr_t)arg;
	char *p = kmm_kmalloc(size, KMM_GFP_KERNEL);
	if (!p)
		_exit(3);
	kmm_kfree(p + 1);
}

static void kfree_twice(void *arg)
{
	size_t size = (size_t)(uintptr_t)arg;
	void *p = kmm_kmalloc(size, KMM_GFP_KERNEL);
	if (!p)
		_exit(3);
	kmm_kfree(p);
	kmm_kfree(p);
}

static void test_detectors(void)
{
	static const size_t sizes[] = {64, 100000, 5 * MiB};

	expect_abort(kfree_stack, NULL, "kmm");
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
		expect_abort(kfree_plus_one, (void *)(uintptr_t)sizes[i], "kmm");
	expect_abort(kfree_twice, (void *)(uintptr_t)64, "kmm");
	expect_abort(kfree_twice, (void *)(uintptr_t)100000, "kmm");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after the detector tests");
}

/*
 * Huge blocks (> 4 MiB) are mappings of their own; freed ones are kept for
 * reuse until KMM_DECAY_MS after their free, unless the tunable is 0, and
 * kmm_trim() unmaps them.  A zeroed request never gets a used mapping.
 */
static unsigned long long resident_now(void)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	return h.resident_bytes;
}

static void test_huge_cache(void)
{
	const size_t big = (size_t)8 << 20, page = 4096;
	long decay = kmm_tune_get(KMM_TUNE_DECAY_MS);

	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 60000) == 0, "kmm_tune_set(DECAY_MS)");
	kmm_trim();
	unsigned long long r0 = resident_now();
	char *p = kmm_kmalloc(big, KMM_GFP_KERNEL);
	CHECK(p != NULL, "kmm_kmalloc(8 MiB) failed");
	memset(p, 0xab, big);
	kmm_kfree(p);
	CHECK(resident_now() >= r0 + big, "a kept mapping is not counted as resident (%llu, %llu)",
	      resident_now(), r0);

	/* A slightly smaller request reuses it, and keeps the whole mapping. */
	char *q = kmm_kmalloc(big - 100 * page, KMM_GFP_KERNEL);
	CHECK(q == p, "the freed mapping %p was not reused (got %p)", (void *)p, (void *)q);
	CHECK(kmm_ksize(q) >= big - 100 * page, "ksize %zu", kmm_ksize(q));

	/* Growing within the mapping: the new part reads as zero with KMM_GFP_ZERO. */
	memset(q, 0xcd, kmm_ksize(q));
	size_t had = kmm_ksize(q);
	char *g = kmm_krealloc(q, big, KMM_GFP_KERNEL | KMM_GFP_ZERO);
	CHECK(g == q, "growing within the mapping moved the block");
	for (size_t i = had; i < big; i += 511)
		CHECK(g[i] == 0, "byte %zu of the grown block is %#x, not 0", i, (unsigned char)g[i]);
	CHECK(g[had - 1] == (char)0xcd, "the old part changed");
	kmm_kfree(g);

	/* A zeroed request gets a fresh mapping even though a used one is kept. */
	char *z = kmm_kzalloc(big, KMM_GFP_KERNEL);
	CHECK(z != NULL && z != p, "kmm_kzalloc(8 MiB) got the used mapping");
	for (size_t i = 0; i < big; i += page)
		CHECK(z[i] == 0 && z[i + page - 1] == 0, "kzalloc'd byte %zu is not 0", i);
	kmm_kfree(z);

	/* kmm_trim() gives the kept mappings back. */
	CHECK(resident_now() >= r0 + 2 * big, "two kept mappings: resident %llu, start %llu",
	      resident_now(), r0);
	kmm_trim();
	/* (Slack: a slab of huge-block descriptors may have been made meanwhile.) */
	const unsigned long long slack = 64 * 1024;
	CHECK(resident_now() <= r0 + slack, "resident %llu after kmm_trim, %llu at the start",
	      resident_now(), r0);

	/* A kept mapping too short for a request is grown (mremap), not kept beside it. */
	p = kmm_kmalloc(6 << 20, KMM_GFP_KERNEL);
	CHECK(p != NULL, "kmm_kmalloc(6 MiB) failed");
	memset(p, 0x66, 6 << 20);
	kmm_kfree(p);
	q = kmm_kmalloc(10 << 20, KMM_GFP_KERNEL);
	CHECK(q != NULL, "kmm_kmalloc(10 MiB) failed");
	memset(q, 0x77, 10 << 20);
	CHECK(q[0] == 0x77 && q[(10 << 20) - 1] == 0x77, "the grown block does not hold its bytes");
	CHECK(resident_now() <= r0 + (10 << 20) + slack,
	      "resident %llu: the 6 MiB mapping was kept beside the 10 MiB block (start %llu)",
	      resident_now(), r0);
	kmm_kfree(q);
	kmm_trim();

	/* With KMM_DECAY_MS 0 nothing is kept. */
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 0) == 0, "kmm_tune_set(DECAY_MS, 0)");
	p = kmm_kmalloc(big, KMM_GFP_KERNEL);
	CHECK(p != NULL, "kmm_kmalloc(8 MiB) failed");
	memset(p, 1, big);
	kmm_kfree(p);
	CHECK(resident_now() <= r0 + slack, "resident %llu after a free with decay 0, %llu at the start",
	      resident_now(), r0);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, decay) == 0, "restoring KMM_DECAY_MS");
}

/* Each 4 KiB page of [p, p + n) holds its index (salted), for move checks. */
static void stamp_pages(char *p, size_t n, unsigned salt)
{
	for (size_t off = 0; off < n; off += 4096)
		*(unsigned *)(p + off) = (unsigned)(off >> 12) ^ salt;
}

static void check_pages(const char *p, size_t n, unsigned salt, const char *what)
{
	for (size_t off = 0; off < n; off += 4096)
		CHECK(*(const unsigned *)(p + off) == ((unsigned)(off >> 12) ^ salt),
		      "%s: page %zu lost its bytes", what, off >> 12);
}

/*
 * Freed huge mappings are a pool of resident pages: a request no single
 * piece holds is made of several, moved in by mremap (their old bytes show
 * that the pages were moved, not faulted in anew); such a block, whose
 * pages come from several mappings, still grows, moves and shrinks by
 * realloc without losing a byte, and kmm_trim() empties the pool.
 */
static void test_huge_pool(void)
{
	const size_t slack = 64 * 1024;
	long decay = kmm_tune_get(KMM_TUNE_DECAY_MS);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 60000) == 0, "kmm_tune_set(DECAY_MS)");
	kmm_trim();
	unsigned long long r0 = resident_now();

	char *a = kmm_kmalloc(6 * MiB, KMM_GFP_KERNEL), *b = kmm_kmalloc(8 * MiB, KMM_GFP_KERNEL);
	CHECK(a && b, "kmm_kmalloc(6 MiB, 8 MiB) failed");
	memset(a, 0x11, 6 * MiB);
	memset(b, 0x22, 8 * MiB);
	kmm_kfree(a);
	kmm_kfree(b);
	CHECK(resident_now() >= r0 + 14 * MiB, "the freed 6 + 8 MiB are not kept (%llu, %llu)",
	      resident_now(), r0);

	/* 13 MiB: neither piece holds it, both are moved in, the larger first. */
	char *c = kmm_kmalloc(13 * MiB, KMM_GFP_KERNEL);
	CHECK(c != NULL, "kmm_kmalloc(13 MiB) failed");
	CHECK(c[0] == 0x22 && c[8 * MiB - 1] == 0x22 && c[8 * MiB] == 0x11 &&
		      c[13 * MiB - 1] == 0x11,
	      "the 13 MiB block is not made of the freed pages (%#x %#x %#x %#x)",
	      (unsigned char)c[0], (unsigned char)c[8 * MiB - 1], (unsigned char)c[8 * MiB],
	      (unsigned char)c[13 * MiB - 1]);
	CHECK(resident_now() <= r0 + 14 * MiB + slack,
	      "resident %llu: pieces were kept beside the block made of them (start %llu)",
	      resident_now(), r0);
	stamp_pages(c, 13 * MiB, 0xc0);

	/* Grown in place, or moved chunk by chunk if something is mapped after it. */
	void *guard = mmap(c + 14 * MiB, 4096, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	bool guarded = guard == (void *)(c + 14 * MiB);
	char *d = kmm_krealloc(c, 30 * MiB, KMM_GFP_KERNEL | KMM_GFP_ZERO);
	CHECK(d != NULL, "krealloc(13 -> 30 MiB) failed");
	CHECK(!guarded || d != c, "growth in place over a mapping that is in the way");
	check_pages(d, 13 * MiB, 0xc0, "13 -> 30 MiB");
	for (size_t i = 13 * MiB; i < 30 * MiB; i += 4093)
		CHECK(d[i] == 0, "byte %zu of the grown part is %#x, not 0", i, (unsigned char)d[i]);
	printf("  huge pool: 6 + 8 MiB freed made a 13 MiB block; grown to 30 MiB %s\n",
	       d != c ? "by a chunk-wise move" : "in place");
	if (guard != MAP_FAILED)
		munmap(guard, 4096);
	stamp_pages(d, 30 * MiB, 0xd0);

	/* Shrunk: the tail's pages join the pool; grown again from it. */
	char *e = kmm_krealloc(d, 5 * MiB, KMM_GFP_KERNEL);
	CHECK(e == d, "shrinking moved the block");
	check_pages(e, 5 * MiB, 0xd0, "30 -> 5 MiB");
	char *f = kmm_krealloc(e, 24 * MiB, KMM_GFP_KERNEL);
	CHECK(f != NULL, "krealloc(5 -> 24 MiB) failed");
	check_pages(f, 5 * MiB, 0xd0, "5 -> 24 MiB");
	memset(f + 5 * MiB, 0x5a, 19 * MiB);
	CHECK(kmm_slab_validate(NULL) == 0 && kmm_buddy_validate() == 0, "validators after the moves");
	kmm_kfree(f);

	kmm_trim();
	CHECK(resident_now() <= r0 + slack, "resident %llu after kmm_trim, %llu at the start",
	      resident_now(), r0);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, decay) == 0, "restoring KMM_DECAY_MS");
}

/*
 * Zone growth takes the pool's pages first: after a huge block is freed,
 * the sections the zone grows by are made of its (resident) pages rather
 * than of fresh memory, so the process does not hold both; and since they
 * hold old bytes, a KMM_GFP_ZERO block from them still reads as zero.
 */
static void test_zone_grows_from_pool(void)
{
	enum { NB = 2, MAXB = 64 };
	const size_t SEC = KMM_PAGE_SIZE << (KMM_MAX_ORDER - 1); /* a max-order block: one section */
	long decay = kmm_tune_get(KMM_TUNE_DECAY_MS);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 60000) == 0, "kmm_tune_set(DECAY_MS)");
	kmm_trim();
	char *h = kmm_kmalloc(NB * SEC, KMM_GFP_KERNEL);
	CHECK(h != NULL, "kmm_kmalloc(8 MiB) failed");
	memset(h, 0xa5, NB * SEC);
	kmm_kfree(h);
	struct kmm_zone_stats z0, z1;
	kmm_zone_stats(&z0);
	unsigned long long rss0 = rss_bytes(), res0 = resident_now();
	/* Max-order blocks until the zone has grown by NB sections (kmm_trim left it none free). */
	void *blk[MAXB];
	unsigned n = 0;
	do {
		blk[n] = kmm_alloc_pages(KMM_GFP_KERNEL | KMM_GFP_ZERO, KMM_MAX_ORDER - 1);
		CHECK(blk[n] != NULL, "kmm_alloc_pages(max order) failed");
		CHECK(is_zero(blk[n], SEC), "a KMM_GFP_ZERO block made of pooled pages is not zero");
		memset(blk[n], 0x3c, SEC);
		kmm_zone_stats(&z1);
	} while (++n < MAXB && z1.sections_added < z0.sections_added + NB);
	unsigned long long rss1 = rss_bytes(), res1 = resident_now();
	CHECK(z1.sections_added == z0.sections_added + NB, "the zone grew by %lu sections, not %u",
	      z1.sections_added - z0.sections_added, NB);
	CHECK(rss1 < rss0 + (n - NB) * SEC + SEC / 2,
	      "RSS %llu -> %llu: %u new sections were not made of the pool's pages", rss0, rss1, NB);
	CHECK(res1 < res0 + (n - NB) * SEC + SEC / 2,
	      "kmm resident %llu -> %llu: the pool kept its pages beside the sections", res0, res1);
	printf("  zone growth from the pool: %u sections, RSS %.1f -> %.1f MiB\n", NB,
	       rss0 / 1048576.0, rss1 / 1048576.0);
	while (n > 0)
		kmm_free_pages(blk[--n], KMM_MAX_ORDER - 1);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() after growth from the pool");
	kmm_trim();
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, decay) == 0, "restoring KMM_DECAY_MS");
}

int main(void)
{
	struct rng r;

	rng_seed(&r, test_init("test_kmalloc", 0x6b6d616c6c6f6331ull));
	test_special();
	test_sweep(&r);
	test_live_set(&r);
	test_zeroing();
	test_krealloc(&r);
	test_huge_cache();
	test_huge_pool();
	test_zone_grows_from_pool();
	test_detectors();
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed at the end");
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed at the end");
	return test_finish();
}
