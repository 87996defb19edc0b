/* SPDX-License-Identifier: MIT */
/*
 * test_badfree.c - the malloc ABI's detectors (src/malloc.c, slab.c): every
 * misuse aborts with a report naming kmm, the function and the pointer; a
 * correct program never sees one.
 *
 *   1. Invalid pointers, each in a child that must die by SIGABRT:
 *      free() of a stack address, of p+1 and p+16 for a 64-byte block, of
 *      p+4096 for a page run and for a huge block, of a page mapped with
 *      mmap() directly; realloc() and malloc_usable_size() of a stack
 *      address.
 *   2. Double frees: the same pointer twice in a row (8 B .. 8 MiB); an
 *      object freed again while it sits deeper in a free list
 *      (a, b, free a, free b, free a) for every slab size; the same
 *      across threads (allocated by one thread, freed twice by another); and
 *      a pointer into a block freed by another thread while the block's
 *      thread holds its slab.
 *   3. No false alarm: 10^6 random malloc/free/realloc operations whose
 *      blocks are overwritten with random data and with pointer-like
 *      values (their own address, neighbours' addresses, free-list-shaped
 *      chains); every block's contents are verified before it is freed.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

#include "common.h"

#define MiB (1024ul * 1024ul)

/* Make a pointer opaque, so that the compiler neither warns nor folds. */
static void *launder(void *p)
{
	__asm__ volatile("" : "+r"(p) : : "memory");
	return p;
}

/*
 * free(@p) twice: the second time through a volatile copy, so that the
 * compiler's use-after-free analysis does not see the (intended) misuse.
 */
static void free_twice(void *p)
{
	void *volatile again = p;
	free(p);
	free(again);
}

/* ---- 1. invalid pointers ---- */

/*
 * A child names the bad pointer on stderr ("passing 0x...") before it hands
 * it to kmm, so that the parent can check that the report names it too.
 */
static void *announce(void *p)
{
	fprintf(stderr, "passing %p\n", p);
	fflush(stderr);
	return launder(p);
}

static void free_stack(void *arg)
{
	char buf[64];
	(void)arg;
	memset(buf, 0, sizeof(buf));
	free(announce(buf + 16));
}

static void realloc_stack(void *arg)
{
	char buf[64];
	(void)arg;
	memset(buf, 0, sizeof(buf));
	void *p = realloc(announce(buf), 100);
	fprintf(stderr, "realloc of a stack address returned %p\n", p);
}

static void usable_size_stack(void *arg)
{
	long word = 0;
	(void)arg;
	size_t n = malloc_usable_size(announce(&word));
	fprintf(stderr, "malloc_usable_size of a stack address returned %zu\n", n);
}

struct interior {
	size_t size;   /* block size */
	size_t offset; /* bytes into the block that free() gets */
};

static void free_interior(void *arg)
{
	const struct interior *in = arg;
	char *p = malloc(in->size);
	if (!p)
		_exit(3);
	memset(p, 0, in->size);
	free(announce(p + in->offset));
}

static void free_foreign(void *arg)
{
	(void)arg;
	char *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		_exit(3);
	/* Some kmm memory exists, so the lookup is not of an empty map. */
	void *q = malloc(100);
	free(q);
	free(announce(p));
}

static void free_foreign_aligned(void *arg)
{
	/* A foreign mapping at a 4 MiB boundary, where kmm's sections start. */
	(void)arg;
	size_t span = 16 * MiB;
	char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		_exit(3);
	char *p = (char *)(((uintptr_t)raw + 4 * MiB - 1) & ~(uintptr_t)(4 * MiB - 1));
	void *q = malloc(100);
	free(q);
	free(announce(p));
}

/* Pointers beyond the 47-bit user address space: the pagemap's bound check. */
static void free_high(void *arg)
{
	void *q = malloc(100);
	free(q);
	free(announce((void *)(uintptr_t)arg));
}

/*
 * Expect @fn to abort with "kmm: @func(): invalid pointer 0x..." naming the
 * pointer it announced.
 */
static void expect_invalid(void (*fn)(void *), void *arg, const char *func)
{
	char want[128], ptr[64];
	snprintf(want, sizeof(want), "kmm: %s(): invalid pointer 0x", func);
	const char *out = expect_abort(fn, arg, want);
	const char *passing = strstr(out, "passing ");
	CHECK(passing != NULL && sscanf(passing, "passing %63s", ptr) == 1,
	      "the child did not announce its pointer:\n%s", out);
	snprintf(want, sizeof(want), "kmm: %s(): invalid pointer %s", func, ptr);
	CHECK(strstr(out, want) != NULL, "the report does not name the pointer %s:\n%s", ptr, out);
}

static void test_invalid_pointers(void)
{
	expect_invalid(free_stack, NULL, "free");
	expect_invalid(realloc_stack, NULL, "realloc");
	expect_invalid(usable_size_stack, NULL, "malloc_usable_size");

	static const struct interior cases[] = {
		{64, 1},          {64, 16},           {64, 8},         {16, 8},
		{100, 48},        {1000, 512},        {4096, 2048},    {32768, 16384},
		{100000, 4096},   {100000, 1},        {100000, 8192},  {1 * MiB, 4096},
		{8 * MiB, 4096},  {8 * MiB, 1},       {8 * MiB, 4 * MiB}, {6 * MiB, 5 * MiB},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		expect_invalid(free_interior, (void *)&cases[i], "free");
	expect_invalid(free_foreign, NULL, "free");
	expect_invalid(free_foreign_aligned, NULL, "free");
	static const uintptr_t high[] = {(uintptr_t)1 << 47, ((uintptr_t)1 << 47) + (4 << 20),
					 (uintptr_t)0xffff800000001000ull, ~(uintptr_t)15};
	for (size_t i = 0; i < ARRAY_SIZE(high); i++)
		expect_invalid(free_high, (void *)high[i], "free");
}

/* ---- 2. double frees ---- */

static void double_free_now(void *arg)
{
	size_t size = *(const size_t *)arg;
	char *p = malloc(size);
	if (!p)
		_exit(3);
	memset(p, 0x5a, size);
	free_twice(p);
}

/* a, b; free(a); free(b); free(a): a is second on the free list, not its head. */
static void double_free_deep(void *arg)
{
	size_t size = *(const size_t *)arg;
	char *a = malloc(size), *b = malloc(size);
	b = launder(b); /* b must exist: no compiler may drop its malloc/free */
	if (!a || !b)
		_exit(3);
	memset(a, 1, size);
	memset(b, 2, size);
	void *volatile again = a;
	free(a);
	free(b);
	free(again);
}

/* The same, with a longer list in between and the pointer freed last-but-many. */
static void double_free_deeper(void *arg)
{
	size_t size = *(const size_t *)arg;
	char *v[10];
	for (int i = 0; i < 10; i++) {
		v[i] = launder(malloc(size));
		if (!v[i])
			_exit(3);
		memset(v[i], i, size);
	}
	void *volatile again = v[3];
	for (int i = 0; i < 10; i++)
		free(v[i]);
	free(again);
}

struct xthread {
	size_t size;
	void *a, *b;
};

static void *xthread_alloc(void *arg)
{
	struct xthread *x = arg;
	x->a = malloc(x->size);
	x->b = malloc(x->size);
	if (x->a)
		memset(x->a, 3, x->size);
	if (x->b)
		memset(x->b, 4, x->size);
	return NULL;
}

static void *xthread_free(void *arg)
{
	struct xthread *x = arg;
	void *volatile again = x->a;
	free(x->a);
	free(x->b);
	free(again);
	return NULL;
}

/* Thread 1 allocates (and stays alive, holding its slab); thread 2 frees twice. */
static void double_free_cross_thread(void *arg)
{
	struct xthread x = {*(const size_t *)arg, NULL, NULL};
	pthread_t t1, t2;
	if (pthread_create(&t1, NULL, xthread_alloc, &x) || pthread_join(t1, NULL))
		_exit(3);
	if (!x.a || !x.b)
		_exit(3);
	if (pthread_create(&t2, NULL, xthread_free, &x) || pthread_join(t2, NULL))
		_exit(3);
}

/*
 * A double free of a block whose slab went back to the page allocator in
 * between: its frames are on a pcp list, flagged on the block's first frame
 * only, or merged into a free buddy block.  The report still says "double
 * free" (a second free of a block in the 7th page of an 8-page slab said
 * only "invalid pointer").
 */
static int returned_back; /* which block, counted back from the last one allocated */
static void double_free_returned_slab(void *arg)
{
	size_t size = *(const size_t *)arg;
	enum { N = 256 };
	static char *v[N];
	for (int i = 0; i < N; i++)
		if (!(v[i] = launder(malloc(size))))
			_exit(3);
	for (int i = 0; i < N; i++)
		free(v[i]);
	void *volatile again = v[N - 1 - returned_back];
	free(again);
}

/* As above, but the allocating thread is still running while the other frees. */
struct xlive {
	size_t size;
	void *a, *b;
	int stage; /* 1: allocated, 2: freed */
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static void xlive_wait(struct xlive *x, int stage)
{
	pthread_mutex_lock(&x->lock);
	while (x->stage < stage)
		pthread_cond_wait(&x->cond, &x->lock);
	pthread_mutex_unlock(&x->lock);
}

static void xlive_set(struct xlive *x, int stage)
{
	pthread_mutex_lock(&x->lock);
	x->stage = stage;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
}

static void *xlive_alloc(void *arg)
{
	struct xlive *x = arg;
	x->a = malloc(x->size);
	x->b = malloc(x->size);
	xlive_set(x, 1);
	xlive_wait(x, 2);
	return NULL;
}

static void *xlive_free(void *arg)
{
	struct xlive *x = arg;
	xlive_wait(x, 1);
	void *volatile again = x->a;
	free(x->a);
	free(x->b);
	free(again);
	xlive_set(x, 2);
	return NULL;
}

/* One thread allocates blocks of *@arg bytes and holds their slab while @freer frees. */
static void live_pair(const void *arg, void *(*freer)(void *))
{
	static struct xlive x = {0, NULL, NULL, 0, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
	pthread_t t1, t2;
	x.size = *(const size_t *)arg;
	if (pthread_create(&t1, NULL, xlive_alloc, &x) || pthread_create(&t2, NULL, freer, &x))
		_exit(3);
	pthread_join(t2, NULL);
	pthread_join(t1, NULL);
}

static void double_free_live_thread(void *arg) { live_pair(arg, xlive_free); }

/*
 * An interior pointer freed by another thread while the block's thread
 * holds its slab: free()'s remote path takes the class from the frame's
 * tag and must still check the slot.
 */
static void *xlive_free_interior(void *arg)
{
	struct xlive *x = arg;
	xlive_wait(x, 1);
	free(announce((char *)x->a + 16));
	xlive_set(x, 2);
	return NULL;
}

static void free_interior_live_thread(void *arg) { live_pair(arg, xlive_free_interior); }

static void expect_double_free_report(void (*fn)(void *), size_t size, int need_double_free)
{
	const char *out = expect_abort(fn, &size, "kmm: ");
	if (need_double_free)
		CHECK(strstr(out, "double free") != NULL,
		      "size %zu: the report does not say \"double free\":\n%s", size, out);
	else
		CHECK(strstr(out, "double free") != NULL || strstr(out, "invalid pointer") != NULL,
		      "size %zu: the report says neither \"double free\" nor \"invalid pointer\":\n%s",
		      size, out);
	CHECK(strstr(out, "free(): ") != NULL, "size %zu: the report does not name free():\n%s", size,
	      out);
}

static void test_double_free(void)
{
	static const size_t now_sizes[] = {8, 16, 24, 64, 100, 1000, 4096, 32768, 100000, 1 * MiB,
					   4 * MiB, 8 * MiB};
	for (size_t i = 0; i < ARRAY_SIZE(now_sizes); i++)
		expect_double_free_report(double_free_now, now_sizes[i], 0);

	/*
	 * Objects of 16 bytes and more carry a canary while free, so a double
	 * free is caught wherever the object sits on a free list; malloc makes
	 * every block at least 16 bytes (src/malloc.c), so sizes 1 and 8 too.
	 */
	static const size_t slab_sizes[] = {1, 8, 16, 24, 32, 48, 64, 80, 128, 200, 512, 1000,
					    2048, 4000, 8192, 20000, 32768};
	for (size_t i = 0; i < ARRAY_SIZE(slab_sizes); i++) {
		expect_double_free_report(double_free_deep, slab_sizes[i], 1);
		expect_double_free_report(double_free_deeper, slab_sizes[i], 1);
	}
	/* Page runs: the pages are free, so the pointer is no block any more. */
	static const size_t run_sizes[] = {40000, 100000, 1 * MiB, 8 * MiB};
	for (size_t i = 0; i < ARRAY_SIZE(run_sizes); i++) {
		expect_double_free_report(double_free_deep, run_sizes[i], 0);
		expect_double_free_report(double_free_deeper, run_sizes[i], 0);
	}

	/* The blocks of the last slabs emptied (on a pcp list), and of earlier ones (merged). */
	static const size_t returned_sizes[] = {200, 2048, 4000};
	static const int backs[] = {23, 40, 120};
	for (size_t i = 0; i < ARRAY_SIZE(returned_sizes); i++)
		for (size_t k = 0; k < ARRAY_SIZE(backs); k++) {
			returned_back = backs[k];
			expect_double_free_report(double_free_returned_slab, returned_sizes[i], 1);
		}

	static const size_t thread_sizes[] = {16, 64, 1000, 32768};
	for (size_t i = 0; i < ARRAY_SIZE(thread_sizes); i++) {
		expect_double_free_report(double_free_cross_thread, thread_sizes[i], 1);
		expect_double_free_report(double_free_live_thread, thread_sizes[i], 1);
	}
	/* Into a block another thread allocated and whose slab it still holds. */
	static const size_t interior_sizes[] = {32, 64, 100, 1000, 4000};
	for (size_t i = 0; i < ARRAY_SIZE(interior_sizes); i++)
		expect_invalid(free_interior_live_thread, (void *)&interior_sizes[i], "free");
}

/* ---- 3. no false alarms ---- */

struct slot {
	unsigned char *p;
	size_t size;
	uint64_t tag;
};

/*
 * Word @i of a block at @base of @size bytes with @tag: random data, or
 * pointer-like values - the block's own address, its address plus an
 * offset, an address one slot further (what a free pointer would hold),
 * small integers.  A pure function of its arguments, so it can be checked.
 */
static uint64_t word_value(uintptr_t a, size_t size, uint64_t tag, size_t i)
{
	uint64_t h = (tag ^ (i * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
	h ^= h >> 31;
	switch ((tag + i) & 7) { /* a cycle per block: cheap to predict */
	case 0: return a;                                   /* its own address */
	case 1: return a + size;                            /* the next slot */
	case 2: return a - size;                            /* the previous slot */
	case 3: return a + ((h >> 8) & 0xfff0);             /* an address nearby */
	case 4: return a ^ (h >> 40);                       /* almost its own address */
	case 5: return (h >> 3) & 0xff;                     /* a small integer */
	default: return h;                                  /* random */
	}
}

/*
 * Blocks up to DENSE bytes (every slab size: where the free lists and the
 * double-free canaries live) get a word_value() in every word.  Bigger
 * blocks, whose state kmm keeps outside them, get those values in their
 * first and last 4 KiB and in one word per KiB between (which keeps 10^6
 * operations fast); check_words() reads back the same words.
 */
#define DENSE (32 * 1024ul)
/* The index of the sampled word after word @i of @n in a block of @size bytes. */
static size_t next_sampled(size_t size, size_t n, size_t i)
{
	if (size <= DENSE || i < 511 || i + 513 >= n)
		return i + 1;
	i = (i + 128) & ~(size_t)127;
	return i + 512 >= n ? n - 512 : i;
}

static void fill_words(unsigned char *p, size_t size, uint64_t tag)
{
	size_t n = size / 8;
	for (size_t i = 0; i < n; i = next_sampled(size, n, i)) {
		uint64_t v = word_value((uintptr_t)p, size, tag, i);
		memcpy(p + i * 8, &v, 8);
	}
	for (size_t i = n * 8; i < size; i++)
		p[i] = (unsigned char)(tag >> (i % 8 * 8));
}

/*
 * Offset of the first byte of the first @size that differs from what
 * fill_words() wrote at @filled_at for a block of @filled_size, or -1.
 */
static long check_words(const unsigned char *p, size_t size, size_t filled_size, uint64_t tag,
			uintptr_t filled_at)
{
	size_t n = size / 8, filled_n = filled_size / 8;
	for (size_t i = 0; i < n; i = next_sampled(filled_size, filled_n, i)) {
		uint64_t v = word_value(filled_at, filled_size, tag, i), got;
		memcpy(&got, p + i * 8, 8);
		if (got != v)
			return (long)(i * 8);
	}
	for (size_t i = n * 8; i < size; i++)
		if (p[i] != (unsigned char)(tag >> (i % 8 * 8)))
			return (long)i;
	return -1;
}

static size_t pick_size(struct rng *r)
{
	uint64_t k = rng_below(r, 1000);
	if (k < 600)
		return (size_t)rng_range(r, 0, 128);
	if (k < 970)
		return rng_log_size(r, 129, 32768);
	if (k < 999)
		return rng_log_size(r, 32769, 1 * MiB);
	return rng_log_size(r, 4 * MiB + 1, 6 * MiB);
}

static void test_no_false_alarm(uint64_t seed)
{
	enum { SLOTS = 4096 };
	struct slot *slots = calloc(SLOTS, sizeof(*slots));
	struct rng r;
	unsigned long ops = test_scaled(1000000, 20000), frees = 0, reallocs = 0;
	CHECK(slots != NULL, "calloc failed");
	rng_seed(&r, seed);

	for (unsigned long op = 0; op < ops; op++) {
		struct slot *s = &slots[rng_below(&r, SLOTS)];
		uint64_t action = rng_below(&r, 10);
		if (s->p) {
			long bad = check_words(s->p, s->size, s->size, s->tag, (uintptr_t)s->p);
			CHECK(bad < 0, "op %lu: block %p of %zu bytes changed at offset %ld", op,
			      (void *)s->p, s->size, bad);
		}
		if (s->p && action < 3) {
			/* realloc: the contents move with the block. */
			size_t to = pick_size(&r);
			uintptr_t old = (uintptr_t)s->p;
			unsigned char *q = realloc(s->p, to ? to : 1);
			to = to ? to : 1;
			CHECK(q != NULL, "op %lu: realloc(%zu -> %zu) failed", op, s->size, to);
			size_t keep = s->size < to ? s->size : to;
			/* The kept prefix still holds the words written at the old address. */
			long bad = check_words(q, keep & ~(size_t)7, s->size, s->tag, old);
			CHECK(bad < 0, "op %lu: realloc(%zu -> %zu) lost the contents at %ld", op,
			      s->size, to, bad);
			s->p = q;
			s->size = to;
			s->tag = rng_next(&r);
			fill_words(q, to, s->tag);
			reallocs++;
		} else if (s->p) {
			free(s->p);
			s->p = NULL;
			frees++;
		} else {
			s->size = pick_size(&r);
			s->p = malloc(s->size);
			CHECK(s->p != NULL, "op %lu: malloc(%zu) failed", op, s->size);
			s->tag = rng_next(&r);
			fill_words(s->p, s->size, s->tag);
		}
	}
	for (size_t i = 0; i < SLOTS; i++) {
		if (!slots[i].p)
			continue;
		CHECK(check_words(slots[i].p, slots[i].size, slots[i].size, slots[i].tag,
				  (uintptr_t)slots[i].p) < 0,
		      "block %zu changed", i);
		free(slots[i].p);
	}
	free(slots);
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate failed after the random workload");
	printf("test_badfree: %lu random operations (%lu frees, %lu reallocs), no false alarm\n", ops,
	       frees, reallocs);
}

/* Freeing in an order that keeps many objects on long free lists. */
static void test_no_false_alarm_lists(void)
{
	static const size_t sizes[] = {16, 32, 64, 128, 1024};
	enum { N = 20000 };
	void **v = malloc(N * sizeof(*v));
	CHECK(v != NULL, "malloc failed");
	for (size_t k = 0; k < ARRAY_SIZE(sizes); k++) {
		size_t size = sizes[k];
		for (int round = 0; round < 3; round++) {
			for (int i = 0; i < N; i++) {
				v[i] = launder(malloc(size));
				CHECK(v[i] != NULL, "malloc(%zu) failed", size);
				/* Look like a freed object: a next pointer, then the neighbour's address. */
				uintptr_t *w = v[i];
				w[0] = (uintptr_t)(i ? v[i - 1] : NULL);
				w[1] = (uintptr_t)v[i] ^ (uintptr_t)(i ? v[i - 1] : NULL);
			}
			/* Evens forwards, odds backwards: interleaved free lists. */
			for (int i = 0; i < N; i += 2)
				free(v[i]);
			for (int i = N - 1; i > 0; i -= 2)
				free(v[i]);
		}
	}
	free(v);
}

int main(void)
{
	uint64_t seed = test_init("test_badfree", 0x6261646672656531ull);

	test_invalid_pointers();
	test_double_free();
	test_no_false_alarm(seed);
	test_no_false_alarm_lists();
	return test_finish();
}
