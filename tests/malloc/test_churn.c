/* SPDX-License-Identifier: MIT */
/*
 * test_churn.c - thread churn loses nothing.
 *
 * NTHREADS short-lived threads (10,000 / KMM_TEST_SCALE) run BATCH at a
 * time; the main thread joins each batch before starting the next.  Each
 * thread allocates a mix of objects - small slab sizes, a few page runs, now
 * and then a huge block - frees most of them itself, and hands KEEP of them
 * to the main thread, which checks and frees them one batch later (remote
 * frees into slabs whose allocating thread has exited).  Every thread's
 * exit must give back its per-thread caches: the slabs it held, its pcp
 * page lists and its own bookkeeping.
 *
 * After every batch the main thread samples the RSS (/proc/self/statm); its
 * peak must stay within PEAK_BOUND of the baseline taken once the first
 * BASELINE_THREADS threads have run (by then every size class has its slabs
 * and the heap its working set).  Baseline and end are measured after
 * malloc_trim(0), so that free memory still waiting out its decay delay (a
 * matter of timing) does not count: there the RSS and zone_bytes must be
 * within RSS_BOUND of the baseline; at the end the heap must be back to
 * (near) nothing in use and both validators must pass.
 */
#include <malloc.h>
#include <pthread.h>

#include "common.h"

#define NTHREADS         10000
#define BATCH            8
#define BASELINE_THREADS 100
#define NOBJS            160 /* objects a thread allocates */
#define KEEP             4   /* of which it hands this many to the main thread */
#define RSS_BOUND        (16ull << 20) /* trimmed: what churn may lose */
#define PEAK_BOUND       (64ull << 20) /* untrimmed: free memory awaiting decay included */

struct kept {
	void *p;
	size_t size;
	uint64_t seed;
};

struct worker {
	pthread_t tid;
	uint64_t seed;
	struct kept kept[KEEP];
};

static size_t pick_size(struct rng *r)
{
	unsigned k = (unsigned)rng_below(r, 4096);
	if (k == 0)
		return rng_range(r, (4u << 20) + 1, 6u << 20); /* huge block */
	if (k < 64)
		return rng_log_size(r, 32u << 10, 512u << 10); /* page run */
	return rng_log_size(r, 8, 16u << 10);
}

static void *worker(void *arg)
{
	struct worker *w = arg;
	struct rng r;
	void *p[NOBJS];
	size_t size[NOBJS];
	uint64_t seeds[NOBJS];

	rng_seed(&r, w->seed);
	for (unsigned i = 0; i < NOBJS; i++) {
		size[i] = pick_size(&r);
		seeds[i] = rng_next(&r);
		p[i] = malloc(size[i]);
		CHECK(p[i] != NULL, "malloc(%zu): %s", size[i], strerror(errno));
		fill_pattern(p[i], size[i], seeds[i]);
		/* Free some early, in between: the slabs see both orders. */
		if (i >= 8 && rng_chance(&r, 1, 2)) {
			unsigned j = (unsigned)rng_below(&r, i);
			if (p[j]) {
				CHECK(check_pattern(p[j], size[j], seeds[j]) < 0, "object corrupted");
				free(p[j]);
				p[j] = NULL;
			}
		}
	}
	unsigned kept = 0;
	for (unsigned i = 0; i < NOBJS; i++) {
		if (!p[i])
			continue;
		if (kept < KEEP && size[i] <= (64u << 10)) {
			w->kept[kept++] = (struct kept){p[i], size[i], seeds[i]};
			continue;
		}
		long bad = check_pattern(p[i], size[i], seeds[i]);
		CHECK(bad < 0, "object %p (%zu bytes) corrupted at offset %ld", p[i], size[i], bad);
		free(p[i]);
	}
	for (; kept < KEEP; kept++)
		w->kept[kept].p = NULL;
	test_thread_done();
	return NULL;
}

static void free_kept(struct worker *w, unsigned n)
{
	for (unsigned t = 0; t < n; t++)
		for (unsigned k = 0; k < KEEP; k++) {
			struct kept *o = &w[t].kept[k];
			if (!o->p)
				continue;
			long bad = check_pattern(o->p, o->size, o->seed);
			CHECK(bad < 0, "kept object %p (%zu bytes) corrupted at offset %ld", o->p, o->size,
			      bad);
			free(o->p);
			o->p = NULL;
		}
}

int main(void)
{
	uint64_t seed = test_init("test_churn", 0x636875726e636875ull);
	unsigned long nthreads = test_scaled(NTHREADS, 400);
	unsigned long nbatches = (nthreads + BATCH - 1) / BATCH;
	static struct worker w[2][BATCH]; /* this batch's and the previous one's */
	unsigned long long rss_base = 0, zone_base = 0, rss_peak = 0, zone_peak = 0;
	unsigned long long rss_first, rss_last = 0, zone_last = 0;
	unsigned long base_threads = 0;
	struct kmm_heap_stats h0, h;

	kmm_heap_stats(&h0);
	rss_first = rss_bytes();
	unsigned long started = 0;
	for (unsigned long b = 0; b < nbatches; b++) {
		struct worker *cur = w[b & 1], *prev = w[(b & 1) ^ 1];
		unsigned n = (unsigned)(nthreads - started < BATCH ? nthreads - started : BATCH);
		for (unsigned t = 0; t < n; t++) {
			cur[t].seed = mix64(seed ^ (started + t));
			int err = pthread_create(&cur[t].tid, NULL, worker, &cur[t]);
			CHECK(err == 0, "pthread_create (thread %lu): %s", started + t, strerror(err));
		}
		for (unsigned t = 0; t < n; t++)
			CHECK(pthread_join(cur[t].tid, NULL) == 0, "pthread_join");
		for (unsigned t = n; t < BATCH; t++)
			for (unsigned k = 0; k < KEEP; k++)
				cur[t].kept[k].p = NULL;
		started += n;
		/* The previous batch's objects: their threads are long gone. */
		if (b > 0)
			free_kept(prev, BATCH);

		kmm_heap_stats(&h);
		rss_last = rss_bytes();
		zone_last = h.zone_bytes;
		if (rss_last > rss_peak)
			rss_peak = rss_last;
		if (zone_last > zone_peak)
			zone_peak = zone_last;
		if (!base_threads && started >= BASELINE_THREADS) {
			/*
			 * The baseline after a trim: free memory still waiting out its
			 * decay delay is timing, not loss.  The same at the end.
			 */
			malloc_trim(0);
			kmm_heap_stats(&h);
			base_threads = started;
			rss_base = rss_bytes();
			zone_base = h.zone_bytes;
		}
	}
	free_kept(w[(nbatches - 1) & 1], BATCH);
	unsigned long long rss_untrimmed = rss_bytes();
	malloc_trim(0);
	kmm_heap_stats(&h);
	rss_last = rss_bytes();
	zone_last = h.zone_bytes;

	printf("  %lu threads in batches of %u, each %u objects (%u kept for the main thread)\n",
	       started, BATCH, NOBJS, KEEP);
	printf("  RSS: at the start %.1f MiB, after %lu threads (trimmed) %.1f MiB, peak %.1f MiB "
	       "(bound +%.0f MiB), after the last batch %.1f MiB, trimmed %.1f MiB (bound: +%.0f MiB)\n",
	       (double)rss_first / (1 << 20), base_threads, (double)rss_base / (1 << 20),
	       (double)rss_peak / (1 << 20), (double)PEAK_BOUND / (1 << 20),
	       (double)rss_untrimmed / (1 << 20), (double)rss_last / (1 << 20),
	       (double)RSS_BOUND / (1 << 20));
	printf("  zone_bytes: after %lu threads %.1f MiB, peak %.1f MiB, after the last batch %.1f MiB; "
	       "in_use_bytes at the end %llu (start %llu)\n",
	       base_threads, (double)zone_base / (1 << 20), (double)zone_peak / (1 << 20),
	       (double)zone_last / (1 << 20), h.in_use_bytes, h0.in_use_bytes);

	CHECK(started == nthreads, "started %lu threads of %lu", started, nthreads);
	CHECK(rss_peak <= rss_base + PEAK_BOUND,
	      "RSS peaked at %llu, %llu after %lu threads (bound +%llu without trimming)", rss_peak,
	      rss_base, base_threads, PEAK_BOUND);
	CHECK(rss_last <= rss_base + RSS_BOUND,
	      "RSS grew from %llu after %lu threads to %llu after %lu (bound +%llu)", rss_base,
	      base_threads, rss_last, started, RSS_BOUND);
	CHECK(zone_last <= zone_base + RSS_BOUND,
	      "zone_bytes grew from %llu after %lu threads to %llu after %lu (bound +%llu)",
	      zone_base, base_threads, zone_last, started, RSS_BOUND);
	CHECK(h.in_use_bytes <= h0.in_use_bytes + (1u << 20),
	      "in_use_bytes %llu at the start, %llu after every object was freed", h0.in_use_bytes,
	      h.in_use_bytes);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate");
	return test_finish();
}
