/* SPDX-License-Identifier: MIT */
/*
 * test_free_only.c - a thread that only frees what another thread allocated
 * does not make memory grow without bound.
 *
 * The producer only allocates (64 B .. 4 KiB, log-uniform), fills each
 * object with a pattern keyed by a serial number, and hands it through a
 * bounded queue (mutex + two condition variables) to the consumer, which
 * checks it and frees it: every free is a remote free into a slab that the
 * producer keeps allocating from, and the consumer never allocates.  In a
 * SLUB-style allocator that is the case where freed slabs can pile up on
 * the freeing thread's own lists (or the allocating thread can keep taking
 * new slabs instead of reusing the freed ones); kmm must bound both.
 *
 * The run lasts until TOTAL bytes (2 GiB / KMM_TEST_SCALE) have been
 * allocated in all - hundreds of times the QUEUE_CAP objects in flight.
 * Every SAMPLE_EVERY objects the producer samples kmm_heap_stats().zone_bytes
 * and the process's RSS (/proc/self/statm); both must stay below LIMIT, and
 * after the run the heap must be back to (near) nothing in use.
 */
#include <pthread.h>

#include "common.h"

#define QUEUE_CAP    4096
#define BATCH        64
#define SAMPLE_EVERY 16384
#define TOTAL        (2ull << 30)
#define LIMIT        (64ull << 20)

struct item {
	void *p;
	size_t size;
	uint64_t serial;
};

/* The bounded queue: a ring of QUEUE_CAP items. */
static struct item ring[QUEUE_CAP];
static size_t head, tail; /* head - tail items are queued */
static int producer_done;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_not_full = PTHREAD_COND_INITIALIZER;
static pthread_cond_t q_not_empty = PTHREAD_COND_INITIALIZER;

static unsigned long long total_bytes;
static uint64_t seed;

/* Figures the producer samples. */
static unsigned long long peak_zone, peak_rss, first_zone, first_rss;
static unsigned long nsamples;

static inline uint64_t item_seed(uint64_t serial) { return mix64(serial ^ 0x667265656f6e6c79ull); }

static void sample(void)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	unsigned long long rss = rss_bytes();
	if (nsamples++ == 0) {
		first_zone = h.zone_bytes;
		first_rss = rss;
	}
	if (h.zone_bytes > peak_zone)
		peak_zone = h.zone_bytes;
	if (rss > peak_rss)
		peak_rss = rss;
	CHECK(h.zone_bytes < LIMIT, "zone_bytes %llu after %llu bytes allocated (limit %llu)",
	      h.zone_bytes, total_bytes, LIMIT);
	CHECK(rss < LIMIT, "RSS %llu after %llu bytes allocated (limit %llu)", rss, total_bytes,
	      LIMIT);
}

static void *producer(void *arg)
{
	unsigned long long target = *(unsigned long long *)arg;
	struct rng r;
	struct item batch[BATCH];
	uint64_t serial = 0;

	rng_seed(&r, seed);
	sample();
	while (total_bytes < target) {
		for (unsigned i = 0; i < BATCH; i++) {
			size_t size = rng_log_size(&r, 64, 4096);
			void *p = malloc(size);
			CHECK(p != NULL, "malloc(%zu): %s", size, strerror(errno));
			fill_pattern(p, size, item_seed(serial));
			batch[i] = (struct item){p, size, serial++};
			total_bytes += size;
			if (serial % SAMPLE_EVERY == 0)
				sample();
		}
		pthread_mutex_lock(&q_lock);
		while (QUEUE_CAP - (head - tail) < BATCH)
			pthread_cond_wait(&q_not_full, &q_lock);
		for (unsigned i = 0; i < BATCH; i++)
			ring[head++ % QUEUE_CAP] = batch[i];
		pthread_cond_signal(&q_not_empty);
		pthread_mutex_unlock(&q_lock);
	}
	pthread_mutex_lock(&q_lock);
	producer_done = 1;
	pthread_cond_signal(&q_not_empty);
	pthread_mutex_unlock(&q_lock);
	sample();
	test_thread_done();
	return NULL;
}

static unsigned long long freed_objects;

static void *consumer(void *arg)
{
	struct item batch[BATCH];
	uint64_t expect = 0;

	(void)arg;
	for (;;) {
		unsigned n = 0;
		pthread_mutex_lock(&q_lock);
		while (head == tail && !producer_done)
			pthread_cond_wait(&q_not_empty, &q_lock);
		while (n < BATCH && head != tail)
			batch[n++] = ring[tail++ % QUEUE_CAP];
		int done = producer_done && head == tail;
		pthread_cond_signal(&q_not_full);
		pthread_mutex_unlock(&q_lock);

		for (unsigned i = 0; i < n; i++) {
			struct item *it = &batch[i];
			CHECK(it->serial == expect, "object %" PRIu64 " arrived, expected %" PRIu64,
			      it->serial, expect);
			expect++;
			long bad = check_pattern(it->p, it->size, item_seed(it->serial));
			CHECK(bad < 0, "object %" PRIu64 " (%p, %zu bytes) corrupted at offset %ld",
			      it->serial, it->p, it->size, bad);
			free(it->p);
		}
		freed_objects += n;
		if (done)
			break;
	}
	test_thread_done();
	return NULL;
}

int main(void)
{
	seed = test_init("test_free_only", 0x667265656f6e6c79ull);
	unsigned long long target = TOTAL / test_scale();
	struct kmm_heap_stats h0, h1;
	pthread_t a, b;

	kmm_heap_stats(&h0);
	CHECK(pthread_create(&b, NULL, consumer, NULL) == 0, "pthread_create");
	CHECK(pthread_create(&a, NULL, producer, &target) == 0, "pthread_create");
	CHECK(pthread_join(a, NULL) == 0, "pthread_join");
	CHECK(pthread_join(b, NULL) == 0, "pthread_join");
	kmm_heap_stats(&h1);

	CHECK(total_bytes >= target, "allocated only %llu bytes", total_bytes);
	CHECK(h1.in_use_bytes <= h0.in_use_bytes + (1u << 20),
	      "in_use_bytes %llu at the start, %llu after every object was freed", h0.in_use_bytes,
	      h1.in_use_bytes);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate");

	printf("  %llu objects (%.2f GiB, 64 B .. 4 KiB) allocated by one thread, freed by another; "
	       "%u in flight at most\n",
	       freed_objects, (double)total_bytes / (1 << 30), QUEUE_CAP);
	printf("  %lu samples: zone_bytes first %.1f MiB, peak %.1f MiB; RSS first %.1f MiB, "
	       "peak %.1f MiB (limit %.0f MiB each)\n",
	       nsamples, (double)first_zone / (1 << 20), (double)peak_zone / (1 << 20),
	       (double)first_rss / (1 << 20), (double)peak_rss / (1 << 20),
	       (double)LIMIT / (1 << 20));
	printf("  in_use_bytes at the end %llu (start %llu); zone_bytes at the end %.1f MiB\n",
	       h1.in_use_bytes, h0.in_use_bytes, (double)h1.zone_bytes / (1 << 20));
	return test_finish();
}
