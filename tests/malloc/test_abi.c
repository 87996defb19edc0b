/* SPDX-License-Identifier: MIT */
/*
 * test_abi.c - the C allocation ABI that libkmm exports in place of the C
 * library's (src/malloc.c), linked from libkmm.a so that this program's
 * malloc is kmm's.
 *
 *   1. malloc: malloc(0) unique and freeable, impossible sizes (SIZE_MAX,
 *      PTRDIFF_MAX + 1, PTRDIFF_MAX) -> NULL + ENOMEM, free(NULL), cfree.
 *   2. calloc: overflow -> NULL + ENOMEM; zeroed memory, also when a block
 *      is reused after it was dirtied, in every size category.
 *   3. realloc: realloc(NULL, n) is malloc; realloc(p, 0) frees p and
 *      returns NULL; contents survive every transition between the size
 *      categories (8 B, slab classes, page runs 64 KiB .. 4 MiB, huge
 *      blocks > 4 MiB), growing and shrinking, a huge block moved by mremap
 *      (8 -> 64 -> 16 MiB), a random walk of sizes; a failed realloc leaves
 *      the block intact.  reallocarray: overflow -> NULL + ENOMEM.
 *   4. Aligned allocation: posix_memalign (EINVAL for 0, 1, 2, 3, 4, 24, ...;
 *      errno never changed), aligned_alloc (any power of two 1 .. 16 MiB;
 *      EINVAL + NULL otherwise), memalign (non-powers of two round up),
 *      valloc (page aligned), pvalloc (whole pages; 0 -> one page).
 *   5. malloc_usable_size: >= the request for every size 0 .. 1 MiB (and
 *      within the waste bounds of kmalloc.c), every usable byte writable
 *      without touching a neighbour, NULL -> 0.
 *   6. Every result of every allocation function is 16-byte aligned (8 for
 *      requests of at most 8 bytes), for a sweep of sizes.
 *   7. malloc_trim, mallopt, mallinfo2, mallinfo, malloc_stats, malloc_info.
 *   8. The glibc-internal names (__libc_malloc, ...) behave like the public
 *      ones and share their heap.
 *   9. kmm_heap_stats(): in_use_bytes follows allocations; libc's own
 *      allocations (strdup, getline, asprintf, open_memstream) come from kmm.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stddef.h>
#include <sys/mman.h>

#include "common.h"

#define KiB 1024ul
#define MiB (1024ul * 1024ul)

/* Not declared by current glibc headers; libkmm exports them. */
extern void cfree(void *p);
extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);
extern int __posix_memalign(void **out, size_t align, size_t size);
extern int __libc_mallopt(int param, int value);
extern struct mallinfo __libc_mallinfo(void);

/*
 * Sizes the compiler cannot see, so that it neither warns about impossible
 * requests nor folds allocator calls away.
 */
static volatile size_t v_size_max = SIZE_MAX;
static volatile size_t v_ptrdiff_max = PTRDIFF_MAX;
static volatile size_t v_zero = 0;

/* Make @p escape, so that a malloc/free pair is never optimised out. */
static inline void use(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

/*
 * Make the pointer variable @p opaque: the allocation that produced it must
 * happen (clang removes allocations whose result is only compared and
 * freed), and what the compiler knows about the block (calloc's zeros,
 * aligned_alloc's alignment) is forgotten, so that the checks read memory.
 */
#define OPAQUE(p) __asm__ volatile("" : "+r"(p) : : "memory")

/*
 * @p, for a call that must fail and leave the block alone (realloc to an
 * impossible size): the compiler's use-after-free analysis cannot see that
 * the block survives, so it is given a copy it cannot relate to @p.
 */
static void *same(void *p)
{
	OPAQUE(p);
	return p;
}

/*
 * A compiler barrier between setting errno and the call that may change it:
 * LLVM assumes that malloc and friends leave errno alone, and would
 * otherwise forward the value stored before the call to the load after it.
 */
#define ERRNO_FENCE() __asm__ volatile("" : : : "memory")

/*
 * True when @p is a multiple of @a.  The pointer is laundered first: the
 * compiler knows what alignment aligned_alloc() and friends promise and
 * would otherwise fold the test to true.
 */
static int aligned_to(const void *p, size_t a)
{
	__asm__("" : "+r"(p));
	return ((uintptr_t)p & (a - 1)) == 0;
}

/* The documented minimum alignment for a request of @size bytes. */
static size_t min_align(size_t size) { return size <= 8 ? 8 : 16; }

static unsigned long long heap_in_use(void)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	return h.in_use_bytes;
}

/*
 * Stamp/verify a block of any size: fully for blocks up to DENSE_MAX, else
 * one word per 512 bytes that ends at least 8 bytes before the end, plus
 * the last word (fast enough for 64 MiB).
 */
#define DENSE_MAX (256 * KiB)

static void stamp(void *p, size_t size, uint64_t tag)
{
	unsigned char *b = p;
	if (size <= DENSE_MAX) {
		fill_pattern(p, size, tag);
		return;
	}
	for (size_t off = 0; off + 16 <= size; off += 512) {
		uint64_t v = mix64(tag ^ off);
		memcpy(b + off, &v, 8);
	}
	uint64_t v = ~tag;
	memcpy(b + size - 8, &v, 8);
}

/* Offset of the first mismatch within the first @size bytes, or -1. */
static long stamp_check(const void *p, size_t size, size_t stamped, uint64_t tag)
{
	const unsigned char *b = p;
	if (stamped <= DENSE_MAX) {
		if (size > stamped)
			size = stamped;
		return check_pattern(p, size, tag);
	}
	for (size_t off = 0; off + 8 <= size && off + 16 <= stamped; off += 512) {
		uint64_t v = mix64(tag ^ off), got;
		memcpy(&got, b + off, 8);
		if (got != v)
			return (long)off;
	}
	if (size >= stamped) {
		uint64_t v = ~tag, got;
		memcpy(&got, b + stamped - 8, 8);
		if (got != v)
			return (long)(stamped - 8);
	}
	return -1;
}

/* Check that the NULL result of @what came with errno ENOMEM. */
#define CHECK_NULL_ERRNO(expr, err, what)                                                        \
	do {                                                                                     \
		errno = 0;                                                                       \
		ERRNO_FENCE();                                                                   \
		void *r_ = (expr);                                                               \
		OPAQUE(r_);                                                                      \
		int e_ = errno;                                                                  \
		CHECK(r_ == NULL && e_ == (err), "%s: got %p, errno %d (%s), want NULL and %s",  \
		      what, r_, e_, strerror(e_), #err);                                         \
	} while (0)

/* ---- 1. malloc ---- */

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
	return x < y ? -1 : x > y;
}

static void test_malloc(void)
{
	enum { N = 4096 };
	void **v = calloc(N, sizeof(*v));
	CHECK(v != NULL, "calloc of the pointer table failed");

	/* malloc(0): unique, non-NULL, minimal, writable for its usable size. */
	for (size_t i = 0; i < N; i++) {
		v[i] = malloc(v_zero);
		CHECK(v[i] != NULL, "malloc(0) #%zu returned NULL", i);
		size_t u = malloc_usable_size(v[i]);
		CHECK(u >= 1 && u <= 16, "malloc(0): usable size %zu", u);
		CHECK(aligned_to(v[i], 8), "malloc(0) = %p not 8-byte aligned", v[i]);
		memset(v[i], 0x5a, u);
	}
	qsort(v, N, sizeof(*v), cmp_ptr);
	for (size_t i = 1; i < N; i++)
		CHECK(v[i] != v[i - 1], "malloc(0) returned %p twice", v[i]);
	for (size_t i = 0; i < N; i++)
		free(v[i]);

	/* Impossible sizes. */
	CHECK_NULL_ERRNO(malloc(v_size_max), ENOMEM, "malloc(SIZE_MAX)");
	CHECK_NULL_ERRNO(malloc(v_size_max - 4095), ENOMEM, "malloc(SIZE_MAX - 4095)");
	CHECK_NULL_ERRNO(malloc(v_ptrdiff_max + 1), ENOMEM, "malloc(PTRDIFF_MAX + 1)");
	CHECK_NULL_ERRNO(malloc(v_ptrdiff_max), ENOMEM, "malloc(PTRDIFF_MAX)");

	/* free(NULL) and cfree(NULL) do nothing; cfree frees. */
	free(NULL);
	cfree(NULL);
	for (size_t s = 1; s <= 8 * MiB; s *= 4) {
		void *p = malloc(s);
		CHECK(p != NULL, "malloc(%zu) failed", s);
		memset(p, 1, s);
		use(p);
		cfree(p);
	}
	unsigned long long before = heap_in_use();
	void *p = malloc(2 * MiB);
	CHECK(p != NULL, "malloc(2 MiB) failed");
	use(p);
	CHECK(heap_in_use() >= before + 2 * MiB, "in_use_bytes did not grow by 2 MiB");
	cfree(p);
	CHECK(heap_in_use() <= before, "cfree did not free the 2 MiB block (in use %llu, was %llu)",
	      heap_in_use(), before);
	free(v);
}

/* ---- 2. calloc ---- */

static const size_t category_sizes[] = {
	1,      8,       9,        16,       24,       48,      64,       65,       100,
	256,    1000,    4096,     10000,    32768,    32769,   65536,    100000,   1 * MiB,
	3 * MiB, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1, 5 * MiB, 8 * MiB,
};

static void test_calloc(void)
{
	/* Overflow of n * size. */
	CHECK_NULL_ERRNO(calloc(v_size_max, 2), ENOMEM, "calloc(SIZE_MAX, 2)");
	CHECK_NULL_ERRNO(calloc(2, v_size_max), ENOMEM, "calloc(2, SIZE_MAX)");
	CHECK_NULL_ERRNO(calloc((size_t)1 << 32, ((size_t)1 << 32) + v_zero), ENOMEM,
			 "calloc(2^32, 2^32)");
	CHECK_NULL_ERRNO(calloc(v_size_max / 2 + 1, 2), ENOMEM, "calloc(SIZE_MAX/2 + 1, 2)");
	CHECK_NULL_ERRNO(calloc(v_size_max / 3 + 1, 3), ENOMEM, "calloc(SIZE_MAX/3 + 1, 3)");
	/* No overflow, but too big. */
	CHECK_NULL_ERRNO(calloc(v_ptrdiff_max / 2 + 1, 2), ENOMEM, "calloc(PTRDIFF_MAX/2 + 1, 2)");

	/* Zero-sized. */
	void *a = calloc(v_zero, 16), *b = calloc(16, v_zero), *c = calloc(v_zero, v_zero);
	OPAQUE(a);
	OPAQUE(b);
	OPAQUE(c);
	CHECK(a && b && c, "calloc with a zero argument returned NULL");
	CHECK(a != b && b != c && a != c, "calloc(0) results not unique");
	free(a);
	free(b);
	free(c);

	/* Zeroed memory, also when the block is a dirtied one reused. */
	for (size_t i = 0; i < ARRAY_SIZE(category_sizes); i++) {
		size_t s = category_sizes[i];
		for (int round = 0; round < 3; round++) {
			unsigned char *dirty[4];
			for (int k = 0; k < 4; k++) {
				dirty[k] = malloc(s);
				CHECK(dirty[k] != NULL, "malloc(%zu) failed", s);
				memset(dirty[k], 0xff, malloc_usable_size(dirty[k]));
			}
			for (int k = 0; k < 4; k++)
				free(dirty[k]);
			unsigned char *z = round == 2 ? calloc(1, s) : calloc(s, 1);
			OPAQUE(z);
			CHECK(z != NULL, "calloc(%zu) failed", s);
			CHECK(is_zero(z, s), "calloc(%zu) returned memory that is not zeroed", s);
			CHECK(aligned_to(z, min_align(s)), "calloc(%zu) = %p misaligned", s, (void *)z);
			memset(z, 0xee, s);
			free(z);
		}
	}
	/* n * size split both ways. */
	uint32_t *w = calloc(100000, sizeof(uint32_t));
	OPAQUE(w);
	CHECK(w != NULL && is_zero(w, 100000 * sizeof(uint32_t)), "calloc(100000, 4)");
	free(w);
}

/* ---- 3. realloc ---- */

static void test_realloc_pairs(uint64_t seed)
{
	size_t n = ARRAY_SIZE(category_sizes);
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < n; j++) {
			size_t from = category_sizes[i], to = category_sizes[j];
			uint64_t tag = seed ^ (i * 131 + j);
			void *p = malloc(from);
			CHECK(p != NULL, "malloc(%zu) failed", from);
			stamp(p, from, tag);
			void *q = realloc(p, to);
			CHECK(q != NULL, "realloc(%zu -> %zu) failed", from, to);
			CHECK(aligned_to(q, min_align(to)), "realloc(%zu -> %zu) = %p misaligned", from,
			      to, q);
			CHECK(malloc_usable_size(q) >= to, "realloc(%zu -> %zu): usable size %zu", from,
			      to, malloc_usable_size(q));
			long bad = stamp_check(q, from < to ? from : to, from, tag);
			CHECK(bad < 0, "realloc(%zu -> %zu) lost the contents at offset %ld", from, to,
			      bad);
			/* The whole new size is writable. */
			stamp(q, to, ~tag);
			CHECK(stamp_check(q, to, to, ~tag) < 0, "realloc(%zu -> %zu): block not writable",
			      from, to);
			free(q);
		}
	}
}

/* One chain through all the sizes, growing then shrinking, in one block. */
static void test_realloc_chain(uint64_t seed)
{
	size_t n = ARRAY_SIZE(category_sizes), cur = category_sizes[0];
	void *p = malloc(cur);
	uint64_t tag = seed;
	CHECK(p != NULL, "malloc failed");
	stamp(p, cur, tag);
	for (size_t step = 1; step < 2 * n - 1; step++) {
		size_t to = step < n ? category_sizes[step] : category_sizes[2 * n - 2 - step];
		void *q = realloc(p, to);
		CHECK(q != NULL, "realloc(%zu -> %zu) failed", cur, to);
		long bad = stamp_check(q, cur < to ? cur : to, cur, tag);
		CHECK(bad < 0, "chain: realloc(%zu -> %zu) lost the contents at offset %ld", cur, to,
		      bad);
		tag = mix64(tag);
		stamp(q, to, tag);
		p = q;
		cur = to;
	}
	free(p);
}

/* A huge block resized by mremap: 8 -> 64 -> 16 MiB and more, contents kept. */
static void test_realloc_huge(uint64_t seed)
{
	static const size_t steps[] = {64 * MiB, 16 * MiB, 16 * MiB + 4096, 12 * MiB + 100,
				       40 * MiB, 5 * MiB, 9 * MiB, 4 * MiB + 1};
	size_t cur = 8 * MiB;
	unsigned char *p = malloc(cur);
	CHECK(p != NULL, "malloc(8 MiB) failed");
	fill_pattern(p, cur, seed);
	size_t valid = cur; /* bytes that still hold fill_pattern(seed) */
	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		size_t to = steps[i];
		unsigned char *q = realloc(p, to);
		CHECK(q != NULL, "realloc(%zu -> %zu) failed", cur, to);
		CHECK(aligned_to(q, 16), "realloc of a huge block: %p misaligned", (void *)q);
		CHECK(malloc_usable_size(q) >= to, "huge realloc: usable %zu < %zu",
		      malloc_usable_size(q), to);
		if (to < valid)
			valid = to;
		long bad = check_pattern(q, valid, seed);
		CHECK(bad < 0, "huge realloc %zu -> %zu lost the contents at offset %ld", cur, to, bad);
		/* The grown part is writable (and kept by the next step if it grows). */
		if (to > cur)
			memset(q + cur, 0x77, to - cur);
		p = q;
		cur = to;
	}
	free(p);
}

/* Random sizes 1 B .. 16 MiB, one block resized 3000 times. */
static void test_realloc_random(uint64_t seed)
{
	struct rng r;
	rng_seed(&r, seed);
	unsigned long steps = test_scaled(3000, 100);
	size_t cur = 1;
	uint64_t tag = seed;
	void *p = malloc(cur);
	CHECK(p != NULL, "malloc(1) failed");
	stamp(p, cur, tag);
	for (unsigned long i = 0; i < steps; i++) {
		size_t to = rng_chance(&r, 1, 20) ? rng_log_size(&r, 4 * MiB, 16 * MiB)
						  : rng_log_size(&r, 1, 2 * MiB);
		if (to > 8192) /* not only the range ends rng_log_size clamps to */
			to -= (size_t)rng_below(&r, 8192);
		void *q = realloc(p, to);
		CHECK(q != NULL, "realloc(%zu -> %zu) failed", cur, to);
		long bad = stamp_check(q, cur < to ? cur : to, cur, tag);
		CHECK(bad < 0, "step %lu: realloc(%zu -> %zu) lost the contents at %ld", i, cur, to,
		      bad);
		tag = mix64(tag + i);
		stamp(q, to, tag);
		p = q;
		cur = to;
	}
	free(p);
}

static void test_realloc(uint64_t seed)
{
	/* realloc(NULL, n) is malloc(n). */
	for (size_t i = 0; i < ARRAY_SIZE(category_sizes); i++) {
		size_t s = category_sizes[i];
		void *p = realloc(NULL, s);
		CHECK(p != NULL, "realloc(NULL, %zu) returned NULL", s);
		CHECK(malloc_usable_size(p) >= s, "realloc(NULL, %zu): usable %zu", s,
		      malloc_usable_size(p));
		memset(p, 0x11, s);
		free(p);
	}
	void *z = realloc(NULL, v_zero);
	OPAQUE(z);
	CHECK(z != NULL, "realloc(NULL, 0) returned NULL (malloc(0) does not)");
	free(z);

	/* realloc(p, 0) frees p and returns NULL, in every category. */
	for (size_t i = 0; i < ARRAY_SIZE(category_sizes); i++) {
		size_t s = category_sizes[i];
		void *p = malloc(s);
		OPAQUE(p);
		CHECK(p != NULL, "malloc(%zu) failed", s);
		memset(p, 0x22, s);
		unsigned long long before = heap_in_use();
		void *q = realloc(p, v_zero);
		CHECK(q == NULL, "realloc(p, 0) returned %p, want NULL (p freed)", q);
		if (s > KMM_KMALLOC_MAX_CACHE_SIZE)
			CHECK(heap_in_use() + s <= before,
			      "realloc(p of %zu bytes, 0) did not free p (in use %llu, was %llu)", s,
			      heap_in_use(), before);
	}

	/* A failed realloc leaves the block as it was, and sets ENOMEM. */
	for (size_t i = 0; i < ARRAY_SIZE(category_sizes); i++) {
		size_t s = category_sizes[i];
		void *p = malloc(s);
		CHECK(p != NULL, "malloc(%zu) failed", s);
		stamp(p, s, seed + i);
		CHECK_NULL_ERRNO(realloc(same(p), v_size_max), ENOMEM, "realloc(p, SIZE_MAX)");
		CHECK_NULL_ERRNO(realloc(same(p), v_size_max - 4095), ENOMEM,
				 "realloc(p, SIZE_MAX - 4095)");
		CHECK_NULL_ERRNO(realloc(same(p), v_ptrdiff_max + 1), ENOMEM,
				 "realloc(p, PTRDIFF_MAX + 1)");
		CHECK(stamp_check(p, s, s, seed + i) < 0, "a failed realloc changed the %zu-byte block",
		      s);
		CHECK(malloc_usable_size(p) >= s, "a failed realloc shrank the block");
		free(p);
	}

	/* Shrinking keeps the prefix and the usable size covers the request. */
	test_realloc_pairs(seed);
	test_realloc_chain(seed);
	test_realloc_huge(seed);
	test_realloc_random(seed);

	/* reallocarray */
	int *a = reallocarray(NULL, 100, sizeof(int));
	OPAQUE(a);
	CHECK(a != NULL, "reallocarray(NULL, 100, 4) failed");
	for (int i = 0; i < 100; i++)
		a[i] = i * 7;
	int *b = reallocarray(a, 100000, sizeof(int));
	OPAQUE(b);
	CHECK(b != NULL, "reallocarray(a, 100000, 4) failed");
	for (int i = 0; i < 100; i++)
		CHECK(b[i] == i * 7, "reallocarray lost element %d", i);
	CHECK_NULL_ERRNO(reallocarray(same(b), v_size_max, 2), ENOMEM, "reallocarray(p, SIZE_MAX, 2)");
	CHECK_NULL_ERRNO(reallocarray(same(b), (size_t)1 << 33, ((size_t)1 << 31) + v_zero), ENOMEM,
			 "reallocarray(p, 2^33, 2^31)");
	CHECK_NULL_ERRNO(reallocarray(NULL, 3, v_size_max / 2), ENOMEM,
			 "reallocarray(NULL, 3, SIZE_MAX/2)");
	for (int i = 0; i < 100; i++)
		CHECK(b[i] == i * 7, "a failed reallocarray changed element %d", i);
	memset(b + 100, 0, (100000 - 100) * sizeof(int));
	/* n * size == 0 frees, like realloc(p, 0). */
	unsigned long long before = heap_in_use();
	CHECK(reallocarray(b, v_zero, sizeof(int)) == NULL, "reallocarray(p, 0, 4) did not return NULL");
	CHECK(heap_in_use() + 100000 * sizeof(int) <= before, "reallocarray(p, 0, 4) did not free p");
}

/* ---- 4. aligned allocation ---- */

static void touch(void *p, size_t size)
{
	unsigned char *b = p;
	if (!size)
		return;
	if (size <= 4 * MiB) {
		memset(b, 0x3c, size);
	} else {
		for (size_t off = 0; off < size; off += 4096)
			b[off] = 0x3c;
		b[size - 1] = 0x3c;
	}
}

/*
 * Blocks kept at once per (alignment, size): consecutive results are then
 * different slots, not one slot freed and handed out again.
 */
#define KEEP 3
static int keep_count(size_t size) { return size <= 1 * MiB ? KEEP : 1; }

/* @p from an aligned allocation of @size bytes at @align: aligned, usable. */
static void check_result(void *p, size_t align, size_t size, const char *what)
{
	CHECK(p != NULL, "%s(%zu, %zu) returned NULL (errno %d)", what, align, size, errno);
	CHECK(aligned_to(p, align), "%s(%zu, %zu) = %p not aligned to %zu", what, align, size, p,
	      align);
	CHECK(aligned_to(p, min_align(size)), "%s(%zu, %zu) = %p below the minimum alignment", what,
	      align, size, p);
	CHECK(malloc_usable_size(p) >= size, "%s(%zu, %zu): usable size %zu", what, align, size,
	      malloc_usable_size(p));
	touch(p, size);
}

static void test_posix_memalign(void)
{
	static const size_t bad[] = {0, 1, 2, 3, 4, 5, 6, 7, 12, 24, 48, 100, 4097, 3 * 4096,
				     (size_t)1 << 63 | 8, SIZE_MAX};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		void *p = (void *)0x1234;
		errno = 4242;
		ERRNO_FENCE();
		int rc = posix_memalign(&p, bad[i] + v_zero, 64);
		ERRNO_FENCE();
		int e = errno;
		CHECK(rc == EINVAL, "posix_memalign(alignment %zu) returned %d, want EINVAL", bad[i], rc);
		CHECK(e == 4242, "posix_memalign(alignment %zu) changed errno to %d", bad[i], e);
		CHECK(p == (void *)0x1234, "posix_memalign(alignment %zu) failed but wrote *out", bad[i]);
	}
	for (size_t a = sizeof(void *); a <= ((size_t)1 << 22); a *= 2) {
		const size_t sizes[] = {0, 1, 8, a - 1, a, a + 1, 3 * a + 5, 100000};
		for (size_t k = 0; k < ARRAY_SIZE(sizes); k++) {
			size_t s = sizes[k];
			void *keep[KEEP];
			for (int n = 0; n < keep_count(s); n++) {
				void *p = NULL;
				errno = 4242;
				ERRNO_FENCE();
				int rc = posix_memalign(&p, a, s);
				ERRNO_FENCE();
				int e = errno;
				CHECK(rc == 0 && p != NULL, "posix_memalign(%zu, %zu) returned %d", a, s, rc);
				CHECK(e == 4242, "posix_memalign(%zu, %zu) changed errno to %d", a, s, e);
				check_result(p, a, s, "posix_memalign");
				keep[n] = p;
			}
			for (int n = 0; n < keep_count(s); n++)
				free(keep[n]);
		}
	}
	/* Out of memory: ENOMEM returned, errno left alone. */
	void *p = (void *)0x1234;
	errno = 4242;
	ERRNO_FENCE();
	int rc = posix_memalign(&p, 64, v_size_max);
	ERRNO_FENCE();
	int e = errno;
	CHECK(rc == ENOMEM, "posix_memalign(64, SIZE_MAX) returned %d, want ENOMEM", rc);
	CHECK(e == 4242, "posix_memalign(64, SIZE_MAX) changed errno to %d", e);
	errno = 4242;
	ERRNO_FENCE();
	rc = posix_memalign(&p, 1 << 20, v_ptrdiff_max + 1);
	ERRNO_FENCE();
	e = errno;
	CHECK(rc == ENOMEM && e == 4242, "posix_memalign(1 MiB, PTRDIFF_MAX + 1): rc %d errno %d", rc,
	      e);
}

static void test_aligned_alloc(void)
{
	for (size_t a = 1; a <= ((size_t)1 << 24); a *= 2) {
		const size_t sizes[] = {1, a, a + 1, 3 * a, 100};
		for (size_t k = 0; k < ARRAY_SIZE(sizes); k++) {
			size_t s = sizes[k];
			if (s > 64 * MiB)
				continue;
			void *keep[KEEP];
			for (int n = 0; n < keep_count(s); n++) {
				keep[n] = aligned_alloc(a + v_zero, s);
				check_result(keep[n], a, s, "aligned_alloc");
			}
			for (int n = 0; n < keep_count(s); n++)
				free(keep[n]);
		}
	}
	void *z = aligned_alloc(64, v_zero);
	CHECK(z != NULL && aligned_to(z, 64), "aligned_alloc(64, 0) = %p", z);
	free(z);
	static const size_t bad[] = {0, 3, 5, 24, 48, 100, 4095, SIZE_MAX};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		CHECK_NULL_ERRNO(aligned_alloc(bad[i] + v_zero, 64), EINVAL, "aligned_alloc(bad alignment)");
	CHECK_NULL_ERRNO(aligned_alloc(4096, v_size_max), ENOMEM, "aligned_alloc(4096, SIZE_MAX)");
}

static size_t next_pow2(size_t x)
{
	size_t p = 1;
	while (p < x)
		p *= 2;
	return p;
}

static void test_memalign(void)
{
	static const size_t aligns[] = {0,   1,    2,    3,     5,      7,      8,        9,
					16,  17,   24,   33,    48,     64,     100,      255,
					256, 1000, 4095, 4096,  5000,   65537,  100000,   1 << 20,
					(1 << 20) + 1, 3 << 20, 4 << 20, 5 << 20};
	for (size_t i = 0; i < ARRAY_SIZE(aligns); i++) {
		size_t a = aligns[i], want = next_pow2(a ? a : 1);
		const size_t sizes[] = {0, 1, 100, 5000, 70000};
		for (size_t k = 0; k < ARRAY_SIZE(sizes); k++) {
			size_t s = sizes[k];
			void *keep[KEEP];
			for (int n = 0; n < keep_count(s); n++) {
				keep[n] = memalign(a + v_zero, s);
				check_result(keep[n], want, s, "memalign (alignment rounded up)");
			}
			for (int n = 0; n < keep_count(s); n++)
				free(keep[n]);
		}
	}
	CHECK_NULL_ERRNO(memalign(64, v_size_max), ENOMEM, "memalign(64, SIZE_MAX)");
}

static void test_valloc_pvalloc(void)
{
	static const size_t sizes[] = {0, 1, 8, 100, 4095, 4096, 4097, 65536, 100000, 5 * MiB};
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		size_t s = sizes[i], pages = s ? (s + 4095) / 4096 * 4096 : 4096;
		void *keep[KEEP];
		for (int n = 0; n < keep_count(s); n++) {
			keep[n] = valloc(s + v_zero);
			check_result(keep[n], 4096, s, "valloc");
		}
		for (int n = 0; n < keep_count(s); n++)
			free(keep[n]);
		/* pvalloc: whole pages are the caller's. */
		for (int n = 0; n < keep_count(s); n++) {
			keep[n] = pvalloc(s + v_zero);
			check_result(keep[n], 4096, pages, "pvalloc");
		}
		for (int n = 0; n < keep_count(s); n++)
			free(keep[n]);
	}
	CHECK_NULL_ERRNO(valloc(v_size_max), ENOMEM, "valloc(SIZE_MAX)");
	CHECK_NULL_ERRNO(pvalloc(v_size_max), ENOMEM, "pvalloc(SIZE_MAX)");
	CHECK_NULL_ERRNO(pvalloc(v_size_max - 100), ENOMEM, "pvalloc(SIZE_MAX - 100)");
	CHECK_NULL_ERRNO(pvalloc(v_ptrdiff_max), ENOMEM, "pvalloc(PTRDIFF_MAX)");
}

/* ---- 5. malloc_usable_size ---- */

static void test_usable_size(uint64_t seed)
{
	CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) != 0");
	size_t step = 1;
	unsigned long n = 0;
	for (size_t s = 0; s <= 1 * MiB; s += step, n++) {
		if (s >= 8192)
			step = s / 61 + 1; /* odd steps: never only class boundaries */
		unsigned char *p[3];
		size_t u[3];
		for (int k = 0; k < 3; k++) {
			p[k] = malloc(s);
			CHECK(p[k] != NULL, "malloc(%zu) failed", s);
			u[k] = malloc_usable_size(p[k]);
			CHECK(u[k] >= s, "malloc_usable_size(malloc(%zu)) = %zu", s, u[k]);
			/* kmalloc.c's waste bounds. */
			size_t req = s ? s : 1;
			if (req <= 64)
				CHECK(u[k] - req <= 15, "malloc(%zu): usable %zu wastes > 15 bytes", s, u[k]);
			else if (req <= KMM_KMALLOC_MAX_CACHE_SIZE)
				CHECK((u[k] - req) * 4 <= req, "malloc(%zu): usable %zu wastes > 25%%", s,
				      u[k]);
			else
				CHECK(u[k] - req < 4096, "malloc(%zu): usable %zu wastes a page", s, u[k]);
			fill_pattern(p[k], u[k], seed + s * 3 + (size_t)k);
		}
		/* Every usable byte is the caller's: no block overlaps another. */
		for (int k = 0; k < 3; k++) {
			CHECK(check_pattern(p[k], u[k], seed + s * 3 + (size_t)k) < 0,
			      "malloc(%zu): writing all %zu usable bytes of a neighbour changed this block",
			      s, u[k]);
			free(p[k]);
		}
	}
	CHECK(n > 8000, "the sweep covered only %lu sizes", n);
}

/* ---- 6. alignment of every allocation function ---- */

enum alloc_fn {
	FN_MALLOC, FN_CALLOC_1N, FN_CALLOC_N1, FN_REALLOC_NULL, FN_REALLOC_GROW, FN_REALLOC_SHRINK,
	FN_REALLOCARRAY, FN_MEMALIGN_1, FN_MEMALIGN_16, FN_ALIGNED_ALLOC_1, FN_ALIGNED_ALLOC_16,
	FN_POSIX_MEMALIGN, FN_VALLOC, FN_PVALLOC, FN_LIBC_MALLOC, FN_LIBC_CALLOC, FN_LIBC_REALLOC,
	FN_LIBC_MEMALIGN, FN_POSIX_MEMALIGN_INT, FN_LIBC_VALLOC, FN_LIBC_PVALLOC, FN_NR
};
static const char *const fn_names[FN_NR] = {
	"malloc", "calloc(1, n)", "calloc(n, 1)", "realloc(NULL, n)", "realloc(small, n)",
	"realloc(big, n)", "reallocarray(NULL, n, 1)", "memalign(1, n)", "memalign(16, n)",
	"aligned_alloc(1, n)", "aligned_alloc(16, n)", "posix_memalign(8, n)", "valloc",
	"pvalloc", "__libc_malloc", "__libc_calloc", "__libc_realloc", "__libc_memalign(8, n)",
	"__posix_memalign(16, n)", "__libc_valloc", "__libc_pvalloc",
};

static void *alloc_with(enum alloc_fn fn, size_t s)
{
	void *p = NULL;
	switch (fn) {
	case FN_MALLOC: return malloc(s);
	case FN_CALLOC_1N: return calloc(1, s);
	case FN_CALLOC_N1: return calloc(s, 1);
	case FN_REALLOC_NULL: return realloc(NULL, s);
	case FN_REALLOC_GROW:
		p = malloc(1);
		CHECK(p != NULL, "malloc(1) failed");
		return s ? realloc(p, s) : p;
	case FN_REALLOC_SHRINK:
		p = malloc(s + 100000);
		CHECK(p != NULL, "malloc failed");
		return s ? realloc(p, s) : p;
	case FN_REALLOCARRAY: return reallocarray(NULL, s, 1);
	case FN_MEMALIGN_1: return memalign(1, s);
	case FN_MEMALIGN_16: return memalign(16, s);
	case FN_ALIGNED_ALLOC_1: return aligned_alloc(1, s);
	case FN_ALIGNED_ALLOC_16: return aligned_alloc(16, s);
	case FN_POSIX_MEMALIGN: return posix_memalign(&p, 8, s) == 0 ? p : NULL;
	case FN_VALLOC: return valloc(s);
	case FN_PVALLOC: return pvalloc(s);
	case FN_LIBC_MALLOC: return __libc_malloc(s);
	case FN_LIBC_CALLOC: return __libc_calloc(s, 1);
	case FN_LIBC_REALLOC: return __libc_realloc(NULL, s);
	case FN_LIBC_MEMALIGN: return __libc_memalign(8, s);
	case FN_POSIX_MEMALIGN_INT: return __posix_memalign(&p, 16, s) == 0 ? p : NULL;
	case FN_LIBC_VALLOC: return __libc_valloc(s);
	case FN_LIBC_PVALLOC: return __libc_pvalloc(s);
	case FN_NR: break;
	}
	return NULL;
}

#define SWEEP_KEEP 7
static void test_alignment_sweep(void)
{
	for (int f = 0; f < FN_NR; f++) {
		size_t step = 1;
		for (size_t s = 0; s <= 9 * MiB; s += step) {
			if (s >= 512)
				step = s / 5 + 3;
			void *keep[SWEEP_KEEP];
			/* A few at a time, so that results come from different slots. */
			for (int k = 0; k < SWEEP_KEEP; k++) {
				void *p = alloc_with((enum alloc_fn)f, s);
				CHECK(p != NULL, "%s(%zu) returned NULL", fn_names[f], s);
				CHECK(aligned_to(p, min_align(s)), "%s(%zu) = %p is not %zu-byte aligned",
				      fn_names[f], s, p, min_align(s));
				CHECK(malloc_usable_size(p) >= s, "%s(%zu): usable size %zu", fn_names[f], s,
				      malloc_usable_size(p));
				if (s)
					((unsigned char *)p)[s - 1] = 1;
				keep[k] = p;
				if (s > 64 * KiB)
					break;
			}
			for (int k = 0; k < SWEEP_KEEP; k++) {
				free(keep[k]);
				if (s > 64 * KiB)
					break;
			}
		}
	}
}

/* ---- 7. the glibc extensions ---- */

static void print_malloc_stats(void *arg)
{
	void *p = malloc(100000);
	(void)arg;
	use(p);
	malloc_stats();
	free(p);
}

static void test_trim_mallopt(void)
{
	void *v[256];
	for (int i = 0; i < 256; i++) {
		v[i] = malloc((size_t)(i + 1) * 1000);
		CHECK(v[i] != NULL, "malloc failed");
		memset(v[i], 1, (size_t)(i + 1) * 1000);
	}
	for (int i = 0; i < 256; i++)
		free(v[i]);
	int rc = malloc_trim(0);
	CHECK(rc == 0 || rc == 1, "malloc_trim(0) returned %d", rc);
	rc = malloc_trim(0);
	CHECK(rc == 0 || rc == 1, "malloc_trim(0) again returned %d", rc);
	rc = malloc_trim(1 * MiB);
	CHECK(rc == 0 || rc == 1, "malloc_trim(1 MiB) returned %d", rc);
	/* Still working after a trim. */
	void *p = malloc(5000);
	OPAQUE(p);
	CHECK(p != NULL, "malloc after malloc_trim failed");
	memset(p, 2, 5000);
	free(p);

	static const int known[] = {M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_ARENA_MAX, M_TOP_PAD,
				    M_MMAP_MAX, M_CHECK_ACTION, M_PERTURB, M_ARENA_TEST};
	for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
		CHECK(mallopt(known[i], 1 << 20) == 1, "mallopt(%d, 1 MiB) != 1", known[i]);
		CHECK(mallopt(known[i], 0) == 1, "mallopt(%d, 0) != 1", known[i]);
		CHECK(__libc_mallopt(known[i], 4) == 1, "__libc_mallopt(%d, 4) != 1", known[i]);
	}
	CHECK(mallopt(12345, 1) == 0, "mallopt(12345, 1) != 0");
	CHECK(mallopt(-1000, 1) == 0, "mallopt(-1000, 1) != 0");
	CHECK(__libc_mallopt(12345, 1) == 0, "__libc_mallopt(12345, 1) != 0");
	p = malloc(200000);
	OPAQUE(p);
	CHECK(p != NULL, "malloc after mallopt failed");
	free(p);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static struct mallinfo old_mallinfo(int internal) { return internal ? __libc_mallinfo() : mallinfo(); }
#pragma GCC diagnostic pop

static int clamp_int(size_t x) { return x > (size_t)INT32_MAX ? INT32_MAX : (int)x; }

static void check_mallinfo_consistent(const struct mallinfo2 *m, const char *when)
{
	CHECK(m->arena >= m->uordblks, "%s: arena %zu < uordblks %zu", when, m->arena, m->uordblks);
	CHECK(m->fordblks == m->arena - m->uordblks, "%s: fordblks %zu != arena %zu - uordblks %zu",
	      when, m->fordblks, m->arena, m->uordblks);
	CHECK((m->hblks == 0) == (m->hblkhd == 0), "%s: hblks %zu, hblkhd %zu", when, m->hblks,
	      m->hblkhd);
	CHECK(m->hblkhd >= m->hblks * 4 * MiB, "%s: %zu huge blocks in %zu bytes", when, m->hblks,
	      m->hblkhd);
}

static void test_mallinfo(uint64_t seed)
{
	struct rng r;
	enum { N = 2000 };
	void **v = malloc(N * sizeof(*v));
	CHECK(v != NULL, "malloc failed");
	rng_seed(&r, seed);

	/*
	 * Objects held by this thread's slabs count as in use (as SLUB's
	 * active_objs), so flush them first: then every byte allocated below
	 * shows up in uordblks.
	 */
	kmm_drain_local();
	struct mallinfo2 a = mallinfo2();
	check_mallinfo_consistent(&a, "before");
	size_t total = 0, large = 0;
	for (int i = 0; i < N; i++) {
		size_t s = rng_chance(&r, 1, 10) ? rng_log_size(&r, 32 * KiB + 1, 2 * MiB)
						 : rng_log_size(&r, 1, 32 * KiB);
		v[i] = malloc(s);
		OPAQUE(v[i]);
		CHECK(v[i] != NULL, "malloc(%zu) failed", s);
		memset(v[i], 0x44, s);
		total += s;
		if (s > KMM_KMALLOC_MAX_CACHE_SIZE)
			large += s;
	}
	struct mallinfo2 b = mallinfo2();
	check_mallinfo_consistent(&b, "after allocating");
	CHECK(b.uordblks >= a.uordblks + total,
	      "uordblks grew by %zu after allocating %zu bytes (from %zu to %zu)",
	      b.uordblks - a.uordblks, total, a.uordblks, b.uordblks);
	CHECK(b.arena >= b.uordblks && b.arena >= total, "arena %zu, %zu bytes allocated", b.arena,
	      total);

	/* The old interface: the same figures, clamped to int. */
	for (int internal = 0; internal <= 1; internal++) {
		struct mallinfo2 m2 = mallinfo2();
		struct mallinfo m = old_mallinfo(internal);
		CHECK(m.arena == clamp_int(m2.arena) && m.uordblks == clamp_int(m2.uordblks) &&
		      m.fordblks == clamp_int(m2.fordblks) && m.hblks == clamp_int(m2.hblks) &&
		      m.hblkhd == clamp_int(m2.hblkhd) && m.ordblks == clamp_int(m2.ordblks),
		      "%s disagrees with mallinfo2: arena %d/%zu uordblks %d/%zu",
		      internal ? "__libc_mallinfo" : "mallinfo", m.arena, m2.arena, m.uordblks,
		      m2.uordblks);
		CHECK(m.uordblks > 0 && m.arena > 0, "mallinfo: arena %d uordblks %d", m.arena,
		      m.uordblks);
	}

	for (int i = 0; i < N; i++)
		free(v[i]);
	struct mallinfo2 c = mallinfo2();
	check_mallinfo_consistent(&c, "after freeing");
	CHECK(c.uordblks + large <= b.uordblks,
	      "uordblks fell by %zu after freeing %zu bytes of page runs",
	      b.uordblks - c.uordblks, large);

	/* A huge block: hblks and hblkhd. */
	struct mallinfo2 h0 = mallinfo2();
	void *big = malloc(16 * MiB);
	CHECK(big != NULL, "malloc(16 MiB) failed");
	use(big);
	struct mallinfo2 h1 = mallinfo2();
	check_mallinfo_consistent(&h1, "with a huge block");
	CHECK(h1.hblkhd >= h0.hblkhd + 16 * MiB, "hblkhd %zu -> %zu after a 16 MiB malloc",
	      h0.hblkhd, h1.hblkhd);
	CHECK(h1.hblks == h0.hblks + 1, "hblks %zu -> %zu after a 16 MiB malloc", h0.hblks,
	      h1.hblks);
	struct mallinfo m = old_mallinfo(0);
	CHECK(m.hblkhd == clamp_int(h1.hblkhd) && m.hblks == clamp_int(h1.hblks),
	      "mallinfo: hblkhd %d hblks %d", m.hblkhd, m.hblks);
	free(big);
	struct mallinfo2 h2 = mallinfo2();
	CHECK(h2.hblkhd == h0.hblkhd && h2.hblks == h0.hblks,
	      "after freeing the 16 MiB block: hblkhd %zu (was %zu), hblks %zu (was %zu)", h2.hblkhd,
	      h0.hblkhd, h2.hblks, h0.hblks);
	free(v);
}

static void test_malloc_stats_info(void)
{
	int st = 0;
	char how[96];
	char *out = run_in_child(print_malloc_stats, NULL, &st);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "malloc_stats() child %s; stderr:\n%s",
	      describe_status(st, how, sizeof(how)), out);
	CHECK(strstr(out, "Arena 0:") != NULL, "malloc_stats() output lacks \"Arena 0:\":\n%s", out);
	CHECK(strstr(out, "in use bytes") != NULL, "malloc_stats() output lacks \"in use bytes\":\n%s",
	      out);
	CHECK(strstr(out, "system bytes") != NULL, "malloc_stats() output lacks \"system bytes\":\n%s",
	      out);
	free(out);

	void *keep = malloc(20000), *huge = malloc(6 * MiB);
	CHECK(keep && huge, "malloc failed");
	use(keep);
	use(huge);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	CHECK(f != NULL, "open_memstream: %s", strerror(errno));
	CHECK(malloc_info(0, f) == 0, "malloc_info(0, f) failed: %s", strerror(errno));
	CHECK(fclose(f) == 0, "fclose: %s", strerror(errno));
	CHECK(buf != NULL && len > 0, "malloc_info wrote nothing");
	CHECK(strncmp(buf, "<malloc version=", 16) == 0, "malloc_info output starts with:\n%.80s", buf);
	size_t end = len;
	while (end > 0 && (buf[end - 1] == '\n' || buf[end - 1] == ' '))
		end--;
	CHECK(end >= 9 && memcmp(buf + end - 9, "</malloc>", 9) == 0,
	      "malloc_info output does not end with </malloc>:\n%s", buf);
	CHECK(strstr(buf, "<heap nr=\"0\">") && strstr(buf, "</heap>"), "malloc_info: no heap:\n%s",
	      buf);
	/* Every element opened is closed: count '<' and '>' pairs. */
	size_t lt = 0, gt = 0;
	for (size_t i = 0; i < len; i++) {
		lt += buf[i] == '<';
		gt += buf[i] == '>';
	}
	CHECK(lt == gt && lt > 4, "malloc_info: %zu '<' but %zu '>'", lt, gt);
	free(buf);

	f = tmpfile();
	CHECK(f != NULL, "tmpfile: %s", strerror(errno));
	errno = 0;
	ERRNO_FENCE();
	int rc = malloc_info(1, f);
	ERRNO_FENCE();
	int e = errno;
	CHECK(rc == -1 && e == EINVAL, "malloc_info(1, f) = %d errno %d, want -1 and EINVAL", rc, e);
	CHECK(ftell(f) == 0, "malloc_info(1, f) wrote %ld bytes", ftell(f));
	fclose(f);
	free(keep);
	free(huge);
}

/* ---- 8. the glibc-internal names ---- */

static void test_libc_names(void)
{
	/* Allocated by one name, freed by another: one heap. */
	unsigned long long before = heap_in_use();
	char *a = __libc_malloc(1 * MiB);
	CHECK(a != NULL, "__libc_malloc(1 MiB) failed");
	CHECK(malloc_usable_size(a) >= 1 * MiB, "__libc_malloc: usable %zu", malloc_usable_size(a));
	CHECK(heap_in_use() >= before + 1 * MiB, "__libc_malloc did not allocate from kmm");
	memset(a, 1, 1 * MiB);
	char *b = __libc_realloc(a, 2 * MiB);
	CHECK(b != NULL && b[0] == 1 && b[MiB - 1] == 1, "__libc_realloc lost the contents");
	free(b);
	CHECK(heap_in_use() <= before, "free() of a __libc_realloc block did not free it");

	a = malloc(300);
	CHECK(a != NULL, "malloc failed");
	__libc_free(a);
	__libc_free(NULL);
	CHECK_NULL_ERRNO(__libc_malloc(v_size_max), ENOMEM, "__libc_malloc(SIZE_MAX)");

	CHECK_NULL_ERRNO(__libc_calloc(v_size_max, 2), ENOMEM, "__libc_calloc(SIZE_MAX, 2)");
	unsigned char *c = malloc(5000);
	CHECK(c != NULL, "malloc failed");
	memset(c, 0xff, 5000);
	free(c);
	c = __libc_calloc(5000, 1);
	OPAQUE(c);
	CHECK(c != NULL && is_zero(c, 5000), "__libc_calloc(5000, 1) not zeroed");
	free(c);

	void *r = __libc_realloc(NULL, 100);
	CHECK(r != NULL, "__libc_realloc(NULL, 100) returned NULL");
	CHECK(__libc_realloc(r, v_zero) == NULL, "__libc_realloc(p, 0) did not return NULL");

	void *m = __libc_memalign(24, 100);
	CHECK(m != NULL && aligned_to(m, 32), "__libc_memalign(24, 100) = %p", m);
	free(m);
	m = __libc_memalign(8192, 100);
	CHECK(m != NULL && aligned_to(m, 8192), "__libc_memalign(8192, 100) = %p", m);
	__libc_free(m);
	m = __libc_valloc(100);
	CHECK(m != NULL && aligned_to(m, 4096), "__libc_valloc(100) = %p", m);
	free(m);
	m = __libc_pvalloc(0);
	CHECK(m != NULL && aligned_to(m, 4096) && malloc_usable_size(m) >= 4096,
	      "__libc_pvalloc(0) = %p", m);
	free(m);

	void *pm = (void *)0x1234;
	errno = 4242;
	ERRNO_FENCE();
	int rc = __posix_memalign(&pm, 24, 10);
	ERRNO_FENCE();
	CHECK(rc == EINVAL && errno == 4242 && pm == (void *)0x1234,
	      "__posix_memalign(24) did not fail with EINVAL alone");
	CHECK(__posix_memalign(&pm, 4, 10) == EINVAL, "__posix_memalign(4) did not fail");
	CHECK(__posix_memalign(&pm, 1024, 10) == 0 && aligned_to(pm, 1024),
	      "__posix_memalign(1024, 10) failed");
	__libc_free(pm);
}

/* ---- 9. kmm_heap_stats, and libc's own allocations ---- */

static void test_heap_stats(void)
{
	struct kmm_heap_stats h0, h1, h2, h3, h4;
	kmm_heap_stats(&h0);
	void *run = malloc(1 * MiB);
	CHECK(run != NULL, "malloc(1 MiB) failed");
	use(run);
	kmm_heap_stats(&h1);
	CHECK(h1.in_use_bytes >= h0.in_use_bytes + 1 * MiB, "in_use_bytes %llu -> %llu after 1 MiB",
	      h0.in_use_bytes, h1.in_use_bytes);
	CHECK(h1.large_bytes >= h0.large_bytes + 1 * MiB && h1.large_blocks == h0.large_blocks + 1,
	      "large_bytes %llu -> %llu, large_blocks %lu -> %lu", h0.large_bytes, h1.large_bytes,
	      h0.large_blocks, h1.large_blocks);
	void *huge = malloc(10 * MiB);
	CHECK(huge != NULL, "malloc(10 MiB) failed");
	use(huge);
	kmm_heap_stats(&h2);
	CHECK(h2.in_use_bytes >= h1.in_use_bytes + 10 * MiB, "in_use_bytes %llu -> %llu after 10 MiB",
	      h1.in_use_bytes, h2.in_use_bytes);
	CHECK(h2.huge_bytes >= h1.huge_bytes + 10 * MiB && h2.huge_blocks == h1.huge_blocks + 1,
	      "huge_bytes %llu -> %llu", h1.huge_bytes, h2.huge_bytes);
	CHECK(h2.zone_bytes >= h2.in_use_bytes - h2.huge_bytes, "zone %llu < in use %llu",
	      h2.zone_bytes, h2.in_use_bytes - h2.huge_bytes);
	free(huge);
	kmm_heap_stats(&h3);
	CHECK(h3.in_use_bytes + 10 * MiB <= h2.in_use_bytes,
	      "in_use_bytes %llu after freeing 10 MiB (was %llu)", h3.in_use_bytes, h2.in_use_bytes);
	CHECK(h3.huge_bytes == h1.huge_bytes && h3.huge_blocks == h1.huge_blocks,
	      "huge_bytes %llu after freeing the huge block (was %llu)", h3.huge_bytes, h1.huge_bytes);
	free(run);
	kmm_heap_stats(&h4);
	CHECK(h4.in_use_bytes + 1 * MiB <= h3.in_use_bytes, "in_use_bytes %llu after freeing 1 MiB "
	      "(was %llu)", h4.in_use_bytes, h3.in_use_bytes);
	CHECK(h4.large_blocks == h0.large_blocks && h4.large_bytes == h0.large_bytes,
	      "large_bytes %llu after freeing the page run (was %llu)", h4.large_bytes, h0.large_bytes);

	/* The C library's own allocations are kmm's (malloc_usable_size checks the pointer). */
	char *s = strdup("kmm serves the C library too");
	CHECK(s != NULL && malloc_usable_size(s) >= 30, "strdup");
	free(s);
	char *line = NULL;
	size_t cap = 0;
	FILE *f = tmpfile();
	CHECK(f != NULL, "tmpfile: %s", strerror(errno));
	for (int i = 0; i < 5000; i++)
		fputc('a' + i % 26, f);
	fputc('\n', f);
	rewind(f);
	CHECK(getline(&line, &cap, f) == 5001, "getline");
	CHECK(malloc_usable_size(line) >= 5002, "getline's buffer: usable %zu",
	      malloc_usable_size(line));
	free(line);
	fclose(f);
	char *fmt = NULL;
	CHECK(asprintf(&fmt, "%0*d", 100000, 7) == 100000, "asprintf");
	CHECK(malloc_usable_size(fmt) >= 100001, "asprintf's buffer");
	free(fmt);
}

int main(void)
{
	uint64_t seed = test_init("test_abi", 0x6b6d6d2d61626931ull);

	test_malloc();
	test_calloc();
	test_realloc(seed);
	test_posix_memalign();
	test_aligned_alloc();
	test_memalign();
	test_valloc_pvalloc();
	test_usable_size(seed);
	test_alignment_sweep();
	test_trim_mallopt();
	test_mallinfo(seed);
	test_malloc_stats_info();
	test_libc_names();
	test_heap_stats();
	return test_finish();
}
