/* SPDX-License-Identifier: MIT */
/*
 * test_midheap.c - malloc's mid-size heap (blocks of 8 KiB .. 64 KiB fitted
 * to 16 bytes, freed neighbours merged at once; src/midheap.c):
 *   1. fit: usable sizes are the request rounded to 16 bytes (plus at most
 *      one unsplittable remainder), 16-byte aligned, counted in the heap
 *      statistics; a block's neighbours are placed end to end;
 *   2. merging: three neighbours freed in any order leave one free chunk
 *      (the validator checks that no two free chunks touch), and an arena
 *      emptied whole is reused, not kept beside a new one;
 *   3. realloc in place: growing into a freed successor, shrinking, and
 *      leaving the heap's range (page runs, slabs) with the contents kept;
 *      calloc of reused memory reads zero;
 *   4. random churn of mid and small sizes, contents checked, validator
 *      after every phase; everything freed leaves no block, and kmm_trim()
 *      gives the arenas back; with every arena still holding a block,
 *      kmm_trim() decommits the free chunks' pages in place (RSS falls), and
 *      so do the heap's aging passes without a trim;
 *   5. threads: blocks freed by a thread that did not allocate them (every
 *      free locks the block's own heap), concurrent churn, validator after;
 *   6. out of memory: ENOMEM and NULL, then it works again;
 *   7. reports: a double free, a pointer into a block and one 8 bytes past
 *      a block's start abort naming kmm, free() and the address.
 */
#include <malloc.h>
#include <pthread.h>

#include "common.h"
#include <kmm/debug.h>
#include <kmm/kmalloc.h>

#define MID_LO 8193    /* the smallest request the mid heap serves */
#define MID_HI 65536   /* the largest */

static void *opaque(void *p)
{
	__asm__ volatile("" : "+r"(p));
	return p;
}

static void validate(const char *when)
{
	CHECK(kmm_mid_validate() == 0, "mid heap invariants broken %s", when);
}

static struct kmm_heap_stats heap_stats(void)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	return h;
}

static void test_fit(void)
{
	struct kmm_heap_stats before = heap_stats();
	static const size_t sizes[] = {MID_LO, 10000, 12345, 20000, 40000, 65000, MID_HI};
	void *p[ARRAY_SIZE(sizes)];
	unsigned long long want = 0;
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		p[i] = opaque(malloc(sizes[i]));
		CHECK(p[i] != NULL, "malloc(%zu)", sizes[i]);
		CHECK(((uintptr_t)p[i] & 15) == 0, "malloc(%zu) = %p: not 16-byte aligned", sizes[i], p[i]);
		size_t us = malloc_usable_size(p[i]);
		/* Rounded to 16; a remainder too small to stand alone (< 32 B) may stay with it. */
		CHECK(us >= sizes[i] && us < sizes[i] + 16 + 32, "malloc(%zu): usable size %zu", sizes[i], us);
		fill_pattern(p[i], us, i + 1);
		want += us + 16; /* a 16-byte header each */
	}
	/* The first two came from one free chunk: end to end. */
	CHECK((char *)p[1] == (char *)p[0] + malloc_usable_size(p[0]) + 16,
	      "blocks not end to end: %p then %p (usable %zu)", p[0], p[1], malloc_usable_size(p[0]));
	struct kmm_heap_stats h = heap_stats();
	CHECK(h.mid_blocks == before.mid_blocks + ARRAY_SIZE(sizes), "mid_blocks %lu, expected %lu",
	      h.mid_blocks, before.mid_blocks + (unsigned long)ARRAY_SIZE(sizes));
	CHECK(h.mid_bytes == before.mid_bytes + want, "mid_bytes %llu, expected %llu", h.mid_bytes,
	      before.mid_bytes + want);
	CHECK(h.mid_arena_bytes >= h.mid_bytes, "arenas %llu below the blocks in them %llu",
	      h.mid_arena_bytes, h.mid_bytes);
	/* The report names the heap and its block count. */
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	CHECK(f != NULL, "open_memstream");
	kmm_stats_print(f);
	fclose(f);
	char want_line[96];
	snprintf(want_line, sizeof(want_line), "bytes in %lu blocks", h.mid_blocks);
	const char *line = strstr(buf, "mid heap");
	CHECK(line != NULL && strstr(line, want_line) != NULL, "kmm_stats_print() has no \"mid heap ... %s\":\n%s",
	      want_line, buf);
	free(buf);
	/* Below the range: slabs (their class); above: page runs. */
	void *small = opaque(malloc(8192)), *big = opaque(malloc(MID_HI + 1));
	CHECK(heap_stats().mid_blocks == h.mid_blocks, "8192 or 65537 bytes came from the mid heap");
	free(small);
	free(big);
	validate("after the fit checks");
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		CHECK(check_pattern(p[i], malloc_usable_size(p[i]), i + 1) < 0, "block %zu overwritten", i);
		free(p[i]);
	}
	h = heap_stats();
	CHECK(h.mid_blocks == before.mid_blocks && h.mid_bytes == before.mid_bytes,
	      "after the frees: %lu blocks, %llu bytes (%lu, %llu before)", h.mid_blocks, h.mid_bytes,
	      before.mid_blocks, before.mid_bytes);
	validate("after the fit frees");
}

static void test_merging(void)
{
	static const int orders[][3] = {{0, 1, 2}, {2, 1, 0}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}};
	for (size_t o = 0; o < ARRAY_SIZE(orders); o++) {
		void *p[3];
		for (int i = 0; i < 3; i++)
			p[i] = opaque(malloc(30000));
		CHECK((char *)p[1] == (char *)p[0] + malloc_usable_size(p[0]) + 16 &&
			      (char *)p[2] == (char *)p[1] + malloc_usable_size(p[1]) + 16,
		      "three blocks not end to end: %p %p %p", p[0], p[1], p[2]);
		for (int i = 0; i < 3; i++) {
			free(p[orders[o][i]]);
			validate("between merges"); /* no two free chunks side by side */
		}
		/* The three merged back with the free rest: the arena's start again. */
		void *again = opaque(malloc(30000));
		CHECK(again == p[0], "order %zu: after merging, malloc(30000) = %p, not %p", o, again, p[0]);
		free(again);
	}
	/* An arena emptied whole is reused: churn many arenas' worth, free all, repeat. */
	enum { N = 200 };
	static void *v[N];
	unsigned long long arenas = 0;
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < N; i++)
			v[i] = malloc(60000); /* 12 MiB: a dozen arenas */
		for (int i = 0; i < N; i++)
			free(v[i]);
		validate("after a round of whole arenas");
		unsigned long long now = heap_stats().mid_arena_bytes;
		if (round == 0)
			arenas = now;
		CHECK(now <= arenas, "round %d: arenas grew from %llu to %llu bytes", round, arenas, now);
		/* One empty arena is kept per heap, the rest go back at once. */
		CHECK(now <= (2u << 20), "round %d: %llu bytes of arenas kept with no block in them", round,
		      now);
	}
}

static void test_realloc(void)
{
	char *p = opaque(malloc(10000)), *q = opaque(malloc(10000));
	CHECK((char *)q == p + malloc_usable_size(p) + 16, "neighbours %p %p", (void *)p, (void *)q);
	uintptr_t at = (uintptr_t)p; /* compared after each realloc */
	fill_pattern(p, 10000, 7);
	free(q);
	char *r = opaque(realloc(p, 20000));
	CHECK((uintptr_t)r == at, "realloc 10000 -> 20000 into a free successor moved the block (%#lx -> %p)",
	      (unsigned long)at, (void *)r);
	CHECK(check_pattern(r, 10000, 7) < 0, "contents kept growing in place");
	CHECK(malloc_usable_size(r) >= 20000, "usable %zu after growing", malloc_usable_size(r));
	r = opaque(realloc(r, 9000));
	CHECK((uintptr_t)r == at && malloc_usable_size(r) < 9000 + 48, "shrink in place: %p, usable %zu",
	      (void *)r, malloc_usable_size(r));
	CHECK(check_pattern(r, 9000, 7) < 0, "contents kept shrinking in place");
	validate("after resizing in place");
	/* Blocked by a live successor: moved, contents kept. */
	char *blocker = opaque(malloc(20000));
	fill_pattern(r, 9000, 8);
	char *n = opaque(realloc(r, 9000 + 5000));
	CHECK(check_pattern(n, 9000, 8) < 0, "contents kept when moved");
	/* Out of the range: to a page run and back to a slab. */
	char *big = opaque(realloc(n, 100000));
	CHECK(big != NULL && check_pattern(big, 9000, 8) < 0, "contents kept into a page run");
	char *mid = opaque(realloc(big, 30000));
	CHECK(mid != NULL && check_pattern(mid, 9000, 8) < 0, "contents kept back into the heap");
	char *small = opaque(realloc(mid, 100));
	CHECK(small != NULL && check_pattern(small, 100, 8) < 0, "contents kept into a slab");
	free(small);
	free(blocker);
	/* calloc over reused memory: zero (live neighbours keep the freed chunk as it was). */
	char *guard1 = opaque(malloc(20000)), *dirty = opaque(malloc(30000));
	char *guard2 = opaque(malloc(20000));
	uintptr_t dirty_at = (uintptr_t)dirty;
	memset(dirty, 0xa5, 30000);
	free(dirty);
	char *z = opaque(calloc(1, 30000));
	CHECK((uintptr_t)z == dirty_at, "calloc did not reuse the freed block (%p, %#lx)", (void *)z,
	      (unsigned long)dirty_at);
	CHECK(is_zero(z, malloc_usable_size(z)), "calloc'ed reused block not zero");
	free(z);
	free(guard1);
	free(guard2);
	validate("after the realloc checks");
}

struct slot {
	void *p;
	size_t size;
	uint64_t seed;
};

static size_t churn_size(struct rng *r)
{
	/* Mostly the heap's range; some slab and page-run sizes between them. */
	if (rng_chance(r, 1, 8))
		return rng_log_size(r, 16, 8192);
	if (rng_chance(r, 1, 16))
		return rng_range(r, MID_HI + 1, 3 * MID_HI);
	return rng_log_size(r, MID_LO, MID_HI);
}

static void churn(struct rng *r, struct slot *slots, size_t n, unsigned long steps)
{
	for (unsigned long i = 0; i < steps; i++) {
		struct slot *s = &slots[rng_below(r, n)];
		if (s->p) {
			CHECK(check_pattern(s->p, s->size, s->seed) < 0, "block %p of %zu bytes overwritten", s->p,
			      s->size);
			if (rng_chance(r, 1, 4)) {
				size_t size = churn_size(r);
				void *q = realloc(s->p, size);
				CHECK(q != NULL, "realloc(%zu)", size);
				CHECK(check_pattern(q, (size < s->size ? size : s->size), s->seed) < 0, "realloc lost the contents");
				s->p = q;
				s->size = size;
				fill_pattern(q, size, s->seed);
				continue;
			}
			free(s->p);
			s->p = NULL;
		} else {
			s->size = churn_size(r);
			s->seed = rng_next(r);
			s->p = malloc(s->size);
			CHECK(s->p != NULL, "malloc(%zu)", s->size);
			fill_pattern(s->p, s->size, s->seed);
		}
	}
}

static void free_slots(struct slot *slots, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (slots[i].p)
			CHECK(check_pattern(slots[i].p, slots[i].size, slots[i].seed) < 0, "block overwritten");
		free(slots[i].p);
		slots[i].p = NULL;
	}
}

static void test_churn(struct rng *r)
{
	enum { N = 1500 };
	static struct slot slots[N];
	struct kmm_heap_stats before = heap_stats();
	unsigned long steps = test_scaled(40000, 4000);
	for (int phase = 0; phase < 5; phase++) {
		churn(r, slots, N, steps);
		validate("after a churn phase");
	}
	free_slots(slots, N);
	validate("after the churn's frees");
	struct kmm_heap_stats h = heap_stats();
	CHECK(h.mid_blocks == before.mid_blocks && h.mid_bytes == before.mid_bytes,
	      "churn left %lu blocks, %llu bytes", h.mid_blocks - before.mid_blocks,
	      h.mid_bytes - before.mid_bytes);
	kmm_trim();
	h = heap_stats();
	CHECK(h.mid_arena_bytes == 0, "kmm_trim() kept %llu bytes of empty arenas", h.mid_arena_bytes);
	validate("after kmm_trim()");
}

/*
 * @n blocks of 60000 bytes, each followed by a live 9000-byte one (pin[i],
 * patterned), all 60000-byte ones freed again: 34 MiB of free chunks that
 * no arena can give back whole.
 */
static void holes_between_pins(void **big, void **pin, int n)
{
	for (int i = 0; i < n; i++) {
		big[i] = malloc(60000);
		pin[i] = malloc(9000);
		CHECK(big[i] && pin[i], "malloc");
		memset(big[i], 0x5a, 60000);
		fill_pattern(pin[i], 9000, (uint64_t)i);
	}
	for (int i = 0; i < n; i++)
		free(big[i]);
}

/*
 * kmm_trim() (malloc_trim) decommits the free chunks' whole pages inside
 * arenas that still hold blocks: freed 60000-byte blocks between live
 * 9000-byte ones leave no arena empty.
 */
static void test_trim_in_place(void)
{
	enum { N = 600 };
	static void *big[N], *pin[N];
	holes_between_pins(big, pin, N);
	unsigned long long arenas = heap_stats().mid_arena_bytes;
	unsigned long long before = rss_bytes();
	unsigned long pages = kmm_trim();
	unsigned long long after = rss_bytes();
	/* 600 free chunks of 60016 bytes: at least 13 whole pages each (31 MiB). */
	CHECK(before > after && before - after >= (24ull << 20),
	      "kmm_trim(): RSS %llu -> %llu KiB, not 24 MiB less (%lu pages given back)", before >> 10,
	      after >> 10, pages);
	CHECK(pages >= (24ul << 20) / 4096, "kmm_trim() reported %lu pages", pages);
	CHECK(heap_stats().mid_arena_bytes == arenas, "the arenas (%llu bytes) changed to %llu: none was empty",
	      arenas, heap_stats().mid_arena_bytes);
	validate("after decommitting in place");
	for (int i = 0; i < N; i++) {
		CHECK(check_pattern(pin[i], 9000, (uint64_t)i) < 0, "a live block lost its contents in the trim");
		big[i] = malloc(60000); /* the decommitted chunks again: usable */
		CHECK(big[i] != NULL, "malloc after the trim");
		memset(big[i], 0x33, 60000);
	}
	validate("after reusing decommitted chunks");
	for (int i = 0; i < N; i++) {
		free(big[i]);
		free(pin[i]);
	}
	printf("  kmm_trim(): RSS %llu -> %llu KiB with every arena still in use\n", before >> 10, after >> 10);
}

/*
 * Without a trim: the heap's aging pass (every KMM_DECAY_MS / 4, looked at
 * every 256 frees) decommits the free chunks that stayed free across two
 * passes.  KMM_DECAY_MS = 0 makes every 256th free a pass.
 */
static void test_aging(void)
{
	enum { N = 600 };
	static void *big[N], *pin[N];
	long decay_ms = kmm_tune_get(KMM_TUNE_DECAY_MS);
	holes_between_pins(big, pin, N);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 0) == 0, "kmm_tune_set(KMM_TUNE_DECAY_MS, 0)");
	unsigned long long before = rss_bytes();
	/* 1024 more frees: four passes, so every free chunk was seen free twice. */
	for (int i = 0; i < 1024; i++)
		free(opaque(malloc(20000)));
	unsigned long long after = rss_bytes();
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, decay_ms) == 0, "restoring KMM_DECAY_MS");
	CHECK(before > after && before - after >= (24ull << 20),
	      "aging: RSS %llu -> %llu KiB, not 24 MiB less", before >> 10, after >> 10);
	validate("after the aging passes");
	for (int i = 0; i < N; i++) {
		CHECK(check_pattern(pin[i], 9000, (uint64_t)i) < 0, "a live block lost its contents in aging");
		free(pin[i]);
	}
	printf("  aging without a trim: RSS %llu -> %llu KiB\n", before >> 10, after >> 10);
}

/* ---- threads ---- */

enum { XN = 400, WORKERS = 4 };
struct handoff {
	pthread_barrier_t barrier;
	void *blocks[WORKERS][XN];
	size_t sizes[WORKERS][XN];
	uint64_t seed;
};
static struct handoff ho;

static void *worker(void *arg)
{
	int me = (int)(intptr_t)arg;
	struct rng r;
	rng_seed(&r, ho.seed + (uint64_t)me);
	for (int round = 0; round < 6; round++) {
		/* Allocate a batch for the next worker... */
		for (int i = 0; i < XN; i++) {
			size_t size = rng_log_size(&r, MID_LO, MID_HI);
			ho.blocks[me][i] = malloc(size);
			CHECK(ho.blocks[me][i] != NULL, "malloc(%zu)", size);
			ho.sizes[me][i] = size;
			fill_pattern(ho.blocks[me][i], size, (uint64_t)me * 1000 + (uint64_t)i);
		}
		pthread_barrier_wait(&ho.barrier);
		/* ...and free the previous worker's: every free is remote. */
		int from = (me + WORKERS - 1) % WORKERS;
		for (int i = 0; i < XN; i++) {
			void *p = ho.blocks[from][i];
			CHECK(check_pattern(p, ho.sizes[from][i], (uint64_t)from * 1000 + (uint64_t)i) < 0,
			      "a block handed over was overwritten");
			free(p);
		}
		/* Own churn while the others free. */
		struct slot own[64];
		memset(own, 0, sizeof(own));
		churn(&r, own, 64, 500);
		free_slots(own, 64);
		pthread_barrier_wait(&ho.barrier);
	}
	test_thread_done();
	return NULL;
}

static void test_threads(struct rng *r)
{
	struct kmm_heap_stats before = heap_stats();
	pthread_t t[WORKERS];
	ho.seed = rng_next(r);
	pthread_barrier_init(&ho.barrier, NULL, WORKERS);
	for (int i = 0; i < WORKERS; i++)
		CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0, "pthread_create");
	for (int i = 0; i < WORKERS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&ho.barrier);
	validate("after the threads");
	struct kmm_heap_stats h = heap_stats();
	CHECK(h.mid_blocks == before.mid_blocks && h.mid_bytes == before.mid_bytes,
	      "threads left %lu blocks, %llu bytes", h.mid_blocks - before.mid_blocks,
	      h.mid_bytes - before.mid_bytes);
}

/* ---- out of memory ---- */

static void test_oom(void)
{
	enum { N = 4096 };
	static void *v[N];
	size_t n = 0;
	int err = 0;
	kmm_trim();
	kmm_os_fail_after(0);
	/* 60000-byte blocks until the zone's free frames are spent (at most 240 MiB). */
	while (n < N) {
		errno = 0;
		void *p = malloc(60000);
		if (!p) {
			err = errno;
			break;
		}
		memset(p, 1, 64);
		v[n++] = p;
	}
	kmm_os_fail_reset();
	CHECK(n < N, "the OS failing, %zu blocks of 60000 bytes still came", n);
	CHECK(err == ENOMEM, "malloc failed with errno %d, not ENOMEM", err);
	validate("after running out");
	void *p = malloc(60000);
	CHECK(p != NULL, "malloc after the OS recovered");
	free(p);
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	validate("after the out-of-memory check");
	printf("  out of memory after %zu blocks of 60000 bytes, then working again\n", n);
}

/* ---- reports ---- */

static void double_free(void *arg)
{
	(void)arg;
	void *p = opaque(malloc(20000));
	void *keep = opaque(malloc(20000)); /* a live neighbour: p's chunk stays apart */
	void *volatile again = p; /* out of the compiler's use-after-free analysis */
	free(p);
	free(again);
	free(keep);
}

static void double_free_merged(void *arg)
{
	(void)arg;
	void *a = opaque(malloc(20000)), *b = opaque(malloc(20000));
	void *volatile again = b;
	free(a);
	free(b); /* merged into a's chunk */
	free(again);
}

static void into_block(void *arg)
{
	char *p = opaque(malloc(20000));
	free(p + *(const size_t *)arg);
}

static void expect_report(void (*fn)(void *), void *arg, const char *what, const char *says)
{
	const char *out = expect_abort(fn, arg, "kmm: ");
	CHECK(strstr(out, "free(): ") != NULL, "%s: the report does not name free():\n%s", what, out);
	CHECK(strstr(out, says) != NULL, "%s: the report does not say \"%s\":\n%s", what, says, out);
	CHECK(strstr(out, "0x") != NULL, "%s: the report gives no address:\n%s", what, out);
}

static void test_reports(void)
{
	static const size_t offsets[] = {16, 8, 4096, 19984};
	expect_report(double_free, NULL, "double free", "double free");
	expect_report(double_free_merged, NULL, "double free of a merged chunk", "double free");
	for (size_t i = 0; i < ARRAY_SIZE(offsets); i++)
		expect_report(into_block, (void *)&offsets[i], "pointer into a block", "invalid pointer");
}

int main(void)
{
	struct rng r;
	rng_seed(&r, test_init("test_midheap", 0x6d69646865617031ull));
	test_fit();
	test_merging();
	test_realloc();
	test_churn(&r);
	test_trim_in_place();
	test_aging();
	test_threads(&r);
	test_oom();
	test_reports();
	return test_finish();
}
