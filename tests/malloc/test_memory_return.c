/* SPDX-License-Identifier: MIT */
/*
 * test_memory_return.c - memory goes back to the OS, and kmm's account of
 * what it keeps resident is honest.
 *
 * Phase 1, malloc_trim: with the RSS recorded after a kmm_trim(), NWORKERS
 * threads allocate PHASE1_BYTES in all (a quarter of the bytes in objects of
 * 16 B .. 4 KiB, the rest 4 KiB .. 8 MiB) and touch every byte.  With all
 * of it live the RSS must have grown by at least 90% of it.  Then each
 * thread frees three quarters of its own objects and the last quarter of
 * its neighbour's (cross-thread frees), the threads exit, and after
 * malloc_trim(0) the RSS must be back within 10% + 16 MiB of the start.
 *
 * Phase 2, decay by itself: with KMM_TUNE_DECAY_MS set to 0 a free block is
 * decommitted when it is freed.  PHASE2_BYTES are allocated, touched and
 * freed again without any call to malloc_trim: the RSS must come back
 * within 10% + 16 MiB of where it was before the allocations.
 *
 * Phase 3, honest accounting: with ACCT_BYTES of touched objects live (and a
 * decay delay of an hour, so that nothing changes behind our back), the
 * process's RSS from /proc/self/smaps_rollup must agree with
 * kmm_heap_stats().resident_bytes within 5% of the RSS + 8 MiB (the program,
 * libc and the stacks are resident but not kmm's); again after freeing
 * every other object.
 */
#include <malloc.h>
#include <pthread.h>

#include "common.h"

#define MiB (1ull << 20)
#define NWORKERS     4
#define PHASE1_BYTES (1024 * MiB)
#define PHASE2_BYTES (256 * MiB)
#define ACCT_BYTES   (256 * MiB)

/* ---- the process's figures ---- */

/* "Rss:" of /proc/self/smaps_rollup, in bytes; 0 when the kernel has no such file. */
static unsigned long long smaps_rss(void)
{
	char line[256];
	unsigned long long kb = 0;
	int found = 0;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Rss: %llu kB", &kb) == 1) {
			found = 1;
			break;
		}
	fclose(f);
	CHECK(found, "no Rss: line in /proc/self/smaps_rollup");
	return kb * 1024;
}

static double mib(unsigned long long b) { return (double)b / (double)MiB; }

/* ---- a set of live, touched objects ---- */

struct objset {
	void **p;
	size_t *size;
	size_t n, cap;
	unsigned long long requested;
};

static void objset_add(struct objset *s, void *p, size_t size)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1024;
		s->p = realloc(s->p, s->cap * sizeof(*s->p));
		s->size = realloc(s->size, s->cap * sizeof(*s->size));
		CHECK(s->p && s->size, "out of memory for the object list");
	}
	s->p[s->n] = p;
	s->size[s->n] = size;
	s->n++;
	s->requested += size;
}

/*
 * Allocate until @bytes have been requested: a quarter of them in 16 B ..
 * 4 KiB objects, the rest in 4 KiB .. 8 MiB; every byte is written.
 */
static void objset_fill(struct objset *s, struct rng *r, unsigned long long bytes)
{
	unsigned long long small = 0, large = 0;
	while (small + large < bytes) {
		size_t size;
		if (small * 3 < large || large >= bytes - bytes / 4)
			size = rng_log_size(r, 16, 4096);
		else
			size = rng_log_size(r, 4096, 8 * MiB);
		if (size > bytes - small - large)
			size = bytes - small - large;
		if (size < 16)
			size = 16;
		void *p = malloc(size);
		CHECK(p != NULL, "malloc(%zu): %s", size, strerror(errno));
		memset(p, (int)(size & 0xff) | 1, size);
		objset_add(s, p, size);
		if (size <= 4096)
			small += size;
		else
			large += size;
	}
}

/* Free the objects whose index is @rem modulo @mod (after checking a byte). */
static void objset_free(struct objset *s, size_t mod, size_t rem)
{
	for (size_t i = rem; i < s->n; i += mod) {
		if (!s->p[i])
			continue;
		unsigned char want = (unsigned char)((s->size[i] & 0xff) | 1);
		CHECK(((unsigned char *)s->p[i])[0] == want &&
		              ((unsigned char *)s->p[i])[s->size[i] - 1] == want,
		      "object %zu (%zu bytes) was overwritten", i, s->size[i]);
		free(s->p[i]);
		s->p[i] = NULL;
	}
}

static void objset_release(struct objset *s)
{
	objset_free(s, 1, 0);
	free(s->p);
	free(s->size);
	memset(s, 0, sizeof(*s));
}

/* ---- phase 1 ---- */

static struct objset sets[NWORKERS];
static pthread_barrier_t all_live;  /* workers + main: everything allocated */
static pthread_barrier_t go_free;   /* workers + main: the main thread has measured */
static pthread_barrier_t own_freed; /* workers: every thread freed its own share */
static uint64_t seed;
static unsigned long long phase1_bytes;

static void *phase1_worker(void *arg)
{
	unsigned idx = (unsigned)(uintptr_t)arg;
	struct rng r;

	rng_seed(&r, seed ^ (0x31u + idx));
	objset_fill(&sets[idx], &r, phase1_bytes / NWORKERS);
	pthread_barrier_wait(&all_live);
	pthread_barrier_wait(&go_free);
	for (size_t rem = 1; rem < 4; rem++)
		objset_free(&sets[idx], 4, rem);
	pthread_barrier_wait(&own_freed);
	objset_free(&sets[(idx + 1) % NWORKERS], 4, 0); /* the neighbour's last quarter */
	test_thread_done();
	return NULL;
}

static void phase1(void)
{
	pthread_t t[NWORKERS];

	phase1_bytes = PHASE1_BYTES / test_scale();
	CHECK(pthread_barrier_init(&all_live, NULL, NWORKERS + 1) == 0, "barrier");
	CHECK(pthread_barrier_init(&go_free, NULL, NWORKERS + 1) == 0, "barrier");
	CHECK(pthread_barrier_init(&own_freed, NULL, NWORKERS) == 0, "barrier");

	kmm_trim();
	unsigned long long rss_start = rss_bytes();
	for (unsigned i = 0; i < NWORKERS; i++)
		CHECK(pthread_create(&t[i], NULL, phase1_worker, (void *)(uintptr_t)i) == 0,
		      "pthread_create");
	pthread_barrier_wait(&all_live);
	unsigned long long rss_live = rss_bytes(), requested = 0;
	size_t nobj = 0;
	for (unsigned i = 0; i < NWORKERS; i++) {
		requested += sets[i].requested;
		nobj += sets[i].n;
	}
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	pthread_barrier_wait(&go_free);
	for (unsigned i = 0; i < NWORKERS; i++)
		CHECK(pthread_join(t[i], NULL) == 0, "pthread_join");
	for (unsigned i = 0; i < NWORKERS; i++)
		objset_release(&sets[i]);
	unsigned long long rss_freed = rss_bytes();
	malloc_trim(0);
	unsigned long long rss_end = rss_bytes();
	unsigned long long bound = rss_start + rss_start / 10 + 16 * MiB;

	printf("  phase 1: %zu objects, %.1f MiB requested by %u threads (%.1f MiB in use, "
	       "zone %.1f MiB, huge %.1f MiB)\n",
	       nobj, mib(requested), NWORKERS, mib(h.in_use_bytes), mib(h.zone_bytes),
	       mib(h.huge_bytes));
	printf("  phase 1: RSS start %.1f MiB, all live %.1f MiB (+%.1f), all freed %.1f MiB, "
	       "after malloc_trim %.1f MiB (bound %.1f MiB)\n",
	       mib(rss_start), mib(rss_live), mib(rss_live - rss_start), mib(rss_freed),
	       mib(rss_end), mib(bound));
	CHECK(requested >= phase1_bytes, "requested %llu", requested);
	CHECK(rss_live >= rss_start + requested / 10 * 9,
	      "RSS grew only from %llu to %llu with %llu bytes live and touched", rss_start,
	      rss_live, requested);
	CHECK(rss_end <= bound, "RSS %llu after malloc_trim, started at %llu (bound %llu)", rss_end,
	      rss_start, bound);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate");
	pthread_barrier_destroy(&all_live);
	pthread_barrier_destroy(&go_free);
	pthread_barrier_destroy(&own_freed);
}

/* ---- phase 2 ---- */

static void phase2(void)
{
	struct objset s = {0};
	struct rng r;
	unsigned long long bytes = PHASE2_BYTES / test_scale();

	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 0) == 0, "kmm_tune_set(DECAY_MS, 0)");
	rng_seed(&r, seed ^ 0x32);
	/* The object list itself is allocated before the start is recorded. */
	s.cap = 1u << 16;
	s.p = malloc(s.cap * sizeof(*s.p));
	s.size = malloc(s.cap * sizeof(*s.size));
	CHECK(s.p && s.size, "out of memory");
	unsigned long long rss_start = rss_bytes();
	objset_fill(&s, &r, bytes);
	unsigned long long rss_live = rss_bytes();
	objset_free(&s, 1, 0);
	unsigned long long rss_end = rss_bytes();
	unsigned long long bound = rss_start + rss_start / 10 + 16 * MiB;
	printf("  phase 2 (KMM_DECAY_MS 0, no trim): %zu objects, %.1f MiB; RSS start %.1f MiB, "
	       "live %.1f MiB, freed %.1f MiB (bound %.1f MiB)\n",
	       s.n, mib(s.requested), mib(rss_start), mib(rss_live), mib(rss_end), mib(bound));
	CHECK(rss_live >= rss_start + s.requested / 10 * 9, "RSS grew only from %llu to %llu",
	      rss_start, rss_live);
	CHECK(rss_end <= bound, "RSS %llu after freeing everything, %llu before (bound %llu)",
	      rss_end, rss_start, bound);
	objset_release(&s);
}

/* ---- phase 3 ---- */

static void compare(const char *when, unsigned long long *out_smaps, unsigned long long *out_kmm)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	unsigned long long rss = smaps_rss();
	unsigned long long kmm = h.resident_bytes;
	unsigned long long diff = rss > kmm ? rss - kmm : kmm - rss;
	unsigned long long tol = rss / 20 + 8 * MiB;
	printf("  phase 3, %s: smaps_rollup Rss %.1f MiB, kmm resident_bytes %.1f MiB "
	       "(difference %.1f MiB, tolerance %.1f MiB; in use %.1f MiB, metadata %.1f MiB)\n",
	       when, mib(rss), mib(kmm), mib(diff), mib(tol), mib(h.in_use_bytes),
	       mib(h.metadata_bytes));
	CHECK(diff <= tol, "%s: smaps Rss %llu but kmm resident_bytes %llu", when, rss, kmm);
	*out_smaps = rss;
	*out_kmm = kmm;
}

static void phase3(void)
{
	struct objset s = {0};
	struct rng r;
	unsigned long long a, b;

	if (!smaps_rss()) {
		printf("  phase 3 skipped: no /proc/self/smaps_rollup\n");
		return;
	}
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 3600 * 1000) == 0, "kmm_tune_set(DECAY_MS)");
	rng_seed(&r, seed ^ 0x33);
	objset_fill(&s, &r, ACCT_BYTES / test_scale());
	compare("all live", &a, &b);
	objset_free(&s, 2, 1);
	compare("half freed", &a, &b);
	objset_release(&s);
	kmm_trim();
	compare("all freed, trimmed", &a, &b);
}

int main(void)
{
	seed = test_init("test_memory_return", 0x72657475726e6d65ull);
	phase1();
	phase2();
	phase3();
	return test_finish();
}
