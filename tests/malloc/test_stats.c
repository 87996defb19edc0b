/* SPDX-License-Identifier: MIT */
/*
 * test_stats.c - with KMM_STATS=1 (set by ctest) every malloc and free is
 * counted, the fast paths included: kmm's fast paths serve a thread only
 * while statistics are off, so a counter that missed them would drift.
 *
 * Blocks of every size class up to 64 KiB are allocated, by this thread and
 * by another, and freed by the thread that did not allocate them as well as
 * by their own; the report's "malloc bytes in use" must rise by at least
 * their slot bytes and come back to where it was.
 */
#include <pthread.h>

#include "common.h"
#include <kmm/stats.h>

#define NBLOCKS 2000
#define SLACK (256u << 10) /* the report's own buffer and stdio's, allocated while it counts */

static unsigned long long malloc_in_use(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	CHECK(f != NULL, "open_memstream: %s", strerror(errno));
	kmm_stats_print(f);
	fclose(f);
	const char *key = "malloc bytes in use";
	const char *line = strstr(buf, key);
	CHECK(line != NULL, "the report has no \"%s\" (is KMM_STATS=1 set?):\n%s", key, buf);
	unsigned long long v = 0;
	CHECK(sscanf(line + strlen(key), "%llu", &v) == 1, "cannot read \"%s\"", key);
	free(buf);
	return v;
}

static void *blocks[NBLOCKS];
static size_t sizes[NBLOCKS];

static void alloc_range(size_t from, size_t to)
{
	for (size_t i = from; i < to; i++) {
		blocks[i] = malloc(sizes[i]);
		CHECK(blocks[i] != NULL, "malloc(%zu) failed", sizes[i]);
		memset(blocks[i], (int)i, sizes[i] < 64 ? sizes[i] : 64);
	}
}

static void free_range(size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		free(blocks[i]);
}

static void *thread_alloc(void *arg)
{
	(void)arg;
	alloc_range(NBLOCKS / 2, NBLOCKS);
	return NULL;
}

static void *thread_free(void *arg)
{
	(void)arg;
	free_range(0, NBLOCKS / 4);          /* blocks main allocated: remote frees */
	free_range(NBLOCKS / 2, NBLOCKS * 3 / 4); /* its own */
	return NULL;
}

int main(void)
{
	uint64_t seed = test_init("test_stats", 0x7374617473303031ull);
	struct rng r;
	rng_seed(&r, seed);
	unsigned long long want = 0;
	for (size_t i = 0; i < NBLOCKS; i++) {
		sizes[i] = 1 + rng_next(&r) % (i % 4 == 0 ? 65536 : 512);
		want += sizes[i];
	}

	unsigned long long base = malloc_in_use();
	pthread_t th;
	alloc_range(0, NBLOCKS / 2);
	CHECK(pthread_create(&th, NULL, thread_alloc, NULL) == 0, "pthread_create failed");
	CHECK(pthread_join(th, NULL) == 0, "pthread_join failed");
	unsigned long long full = malloc_in_use();
	CHECK(full >= base + want, "in use %llu after %llu bytes of mallocs from %llu", full, want, base);

	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	CHECK(h.peak_in_use_bytes >= base + want, "peak %llu below %llu", h.peak_in_use_bytes,
	      base + want);

	CHECK(pthread_create(&th, NULL, thread_free, NULL) == 0, "pthread_create failed");
	CHECK(pthread_join(th, NULL) == 0, "pthread_join failed");
	free_range(NBLOCKS / 4, NBLOCKS / 2);   /* its own */
	free_range(NBLOCKS * 3 / 4, NBLOCKS);   /* the other thread's */
	unsigned long long after = malloc_in_use();
	CHECK(after <= base + SLACK && after + SLACK >= base,
	      "in use %llu after freeing everything, %llu before", after, base);
	printf("test_stats: %llu bytes counted in, %llu -> %llu -> %llu\n", want, base, full, after);
	return test_finish();
}
