/* SPDX-License-Identifier: MIT */
/*
 * test_mt_stress.c - malloc, realloc and free from many threads at once,
 * with objects passed between threads, and threads that keep ending and
 * being replaced.
 *
 * NTHREADS threads (more than the cores of the machines CI runs on) share
 * NSLOTS slots, each guarded by its own mutex.  A thread picks a random slot:
 *   empty  -> it reserves the slot, allocates an object (malloc, calloc or
 *             posix_memalign; sizes log-uniform 8 B .. 1 MiB, a few 2..16
 *             MiB), fills every byte with a pattern derived from the object's
 *             size and a unique serial number, and publishes it there;
 *   full   -> it takes the object out, checks malloc_usable_size() and every
 *             byte of the pattern, then either frees it or reallocs it to a
 *             new size, checks the kept prefix, rewrites it under a new
 *             serial and puts it back;
 *   busy   -> (another thread is working on it) it moves on.
 * Most objects are therefore freed (or resized) by a thread other than the
 * one that allocated them, often after that thread has exited.  Threads run
 * in NGENERATIONS generations: all of a generation's threads are joined and
 * new ones started, so per-thread caches keep being created and torn down.
 *
 * At the end the main thread verifies and frees what is left; the counts of
 * allocations and frees must balance, kmm_heap_stats().in_use_bytes must be
 * back within SLACK of where it started, and both validators must pass.
 */
#include <malloc.h>
#include <pthread.h>

#include "common.h"
#ifdef KMM_TEST_VIA_KMALLOC
#include "via_kmalloc.h"
#endif

#define NTHREADS     10
#define NGENERATIONS 20
#define NSLOTS       2048
#define SLACK        (4ull << 20) /* in_use_bytes may end this far above its start */

enum { SLOT_EMPTY, SLOT_FULL, SLOT_BUSY };

struct slot {
	pthread_mutex_t lock;
	int state;
	void *p;
	size_t size;
	uint64_t serial;
};

static struct slot slots[NSLOTS];
static unsigned long ops_per_thread;

/* Totals, updated with relaxed atomics by the workers. */
static uint64_t next_serial = 1;
static unsigned long n_malloc, n_calloc, n_memalign, n_realloc, n_free, n_busy;
static unsigned long n_huge;
static unsigned long long bytes_checked;

static inline uint64_t obj_seed(uint64_t serial, size_t size)
{
	return mix64(serial) ^ ((uint64_t)size * 0x9e3779b97f4a7c15ull);
}

static size_t pick_size(struct rng *r)
{
	if (rng_chance(r, 1, 256))
		return rng_log_size(r, 2u << 20, 16u << 20);
	return rng_log_size(r, 8, 1u << 20);
}

static inline void count(unsigned long *c) { __atomic_fetch_add(c, 1, __ATOMIC_RELAXED); }

/* Check an object taken out of a slot: its usable size and every byte. */
static void verify(const struct slot *s, unsigned long *local_bytes)
{
	size_t usable = malloc_usable_size(s->p);
	CHECK(usable >= s->size, "object %p (serial %" PRIu64 ", %zu bytes): usable size %zu",
	      s->p, s->serial, s->size, usable);
	long bad = check_pattern(s->p, s->size, obj_seed(s->serial, s->size));
	CHECK(bad < 0, "object %p (serial %" PRIu64 ", %zu bytes) corrupted at offset %ld", s->p,
	      s->serial, s->size, bad);
	*local_bytes += s->size;
}

/* Allocate an object of a random size, in one of three ways, and fill it. */
static void make_object(struct rng *r, struct slot *out)
{
	size_t size = pick_size(r);
	void *p;
	unsigned how = (unsigned)rng_below(r, 8);

	if (how == 0) {
		p = calloc(1, size);
		CHECK(p != NULL, "calloc(1, %zu): %s", size, strerror(errno));
		/* A sampled check that it is zeroed: head, tail and one word inside. */
		CHECK(is_zero(p, size < 64 ? size : 64), "calloc(%zu) head not zero", size);
		CHECK(is_zero((char *)p + size - (size < 64 ? size : 64), size < 64 ? size : 64),
		      "calloc(%zu) tail not zero", size);
		count(&n_calloc);
	} else if (how == 1) {
		size_t align = (size_t)1 << rng_range(r, 3, 12); /* 8 .. 4096 */
		int err = posix_memalign(&p, align, size);
		CHECK(err == 0, "posix_memalign(%zu, %zu): %s", align, size, strerror(err));
		CHECK(((uintptr_t)p & (align - 1)) == 0, "posix_memalign(%zu, %zu) gave %p", align,
		      size, p);
		count(&n_memalign);
	} else {
		p = malloc(size);
		CHECK(p != NULL, "malloc(%zu): %s", size, strerror(errno));
		count(&n_malloc);
	}
	if (size > (2u << 20))
		count(&n_huge);
	out->p = p;
	out->size = size;
	out->serial = __atomic_fetch_add(&next_serial, 1, __ATOMIC_RELAXED);
	fill_pattern(p, size, obj_seed(out->serial, size));
}

struct worker {
	pthread_t tid;
	uint64_t seed;
};

static void *worker(void *arg)
{
	struct worker *w = arg;
	struct rng r;
	unsigned long local_bytes = 0;

	rng_seed(&r, w->seed);
	for (unsigned long op = 0; op < ops_per_thread; op++) {
		struct slot *s = &slots[rng_below(&r, NSLOTS)];
		struct slot obj;

		pthread_mutex_lock(&s->lock);
		int state = s->state;
		if (state == SLOT_BUSY) {
			pthread_mutex_unlock(&s->lock);
			count(&n_busy);
			continue;
		}
		obj.p = s->p;
		obj.size = s->size;
		obj.serial = s->serial;
		s->state = SLOT_BUSY;
		pthread_mutex_unlock(&s->lock);

		if (state == SLOT_EMPTY) {
			make_object(&r, &obj);
		} else {
			verify(&obj, &local_bytes);
			if (rng_chance(&r, 1, 4)) {
				size_t nsize = pick_size(&r);
				void *q = realloc(obj.p, nsize);
				CHECK(q != NULL, "realloc(%p, %zu): %s", obj.p, nsize, strerror(errno));
				size_t keep = obj.size < nsize ? obj.size : nsize;
				long bad = check_pattern(q, keep, obj_seed(obj.serial, obj.size));
				CHECK(bad < 0,
				      "realloc %zu -> %zu (serial %" PRIu64 ") lost the contents at offset %ld",
				      obj.size, nsize, obj.serial, bad);
				obj.p = q;
				obj.size = nsize;
				obj.serial = __atomic_fetch_add(&next_serial, 1, __ATOMIC_RELAXED);
				fill_pattern(q, nsize, obj_seed(obj.serial, nsize));
				count(&n_realloc);
			} else {
				free(obj.p);
				count(&n_free);
				obj.p = NULL;
			}
		}

		pthread_mutex_lock(&s->lock);
		s->p = obj.p;
		s->size = obj.p ? obj.size : 0;
		s->serial = obj.p ? obj.serial : 0;
		s->state = obj.p ? SLOT_FULL : SLOT_EMPTY;
		pthread_mutex_unlock(&s->lock);
	}
	__atomic_fetch_add(&bytes_checked, local_bytes, __ATOMIC_RELAXED);
	test_thread_done();
	return NULL;
}

int main(void)
{
	uint64_t seed = test_init("test_mt_stress", 0x6d74737472657373ull);
	struct kmm_heap_stats h0, h1, h2;
	struct worker w[NTHREADS];
	unsigned long peak_live = 0;
	unsigned long long peak_in_use = 0;

	ops_per_thread = test_scaled(600, 60);
	for (unsigned i = 0; i < NSLOTS; i++) {
		CHECK(pthread_mutex_init(&slots[i].lock, NULL) == 0, "mutex init");
		slots[i].state = SLOT_EMPTY;
	}
	kmm_heap_stats(&h0);

	for (unsigned g = 0; g < NGENERATIONS; g++) {
		for (unsigned t = 0; t < NTHREADS; t++) {
			w[t].seed = mix64(seed ^ ((uint64_t)g << 32) ^ t);
			int err = pthread_create(&w[t].tid, NULL, worker, &w[t]);
			CHECK(err == 0, "pthread_create: %s", strerror(err));
		}
		for (unsigned t = 0; t < NTHREADS; t++)
			CHECK(pthread_join(w[t].tid, NULL) == 0, "pthread_join");
		unsigned long live = 0;
		for (unsigned i = 0; i < NSLOTS; i++) {
			CHECK(slots[i].state != SLOT_BUSY, "slot %u left busy", i);
			live += slots[i].state == SLOT_FULL;
		}
		if (live > peak_live)
			peak_live = live;
		struct kmm_heap_stats hg;
		kmm_heap_stats(&hg);
		if (hg.in_use_bytes > peak_in_use)
			peak_in_use = hg.in_use_bytes;
	}
	kmm_heap_stats(&h1);

	/* Verify and free what is left. */
	unsigned long left = 0, local_bytes = 0;
	for (unsigned i = 0; i < NSLOTS; i++) {
		if (slots[i].state != SLOT_FULL)
			continue;
		verify(&slots[i], &local_bytes);
		free(slots[i].p);
		slots[i].state = SLOT_EMPTY;
		left++;
		n_free++;
	}
	bytes_checked += local_bytes;

	unsigned long allocs = n_malloc + n_calloc + n_memalign;
	CHECK(allocs == n_free, "%lu allocations but %lu frees (%lu left at the end)", allocs,
	      n_free, left);
	CHECK(next_serial - 1 == allocs + n_realloc, "serials %" PRIu64 " != %lu allocs + %lu reallocs",
	      next_serial - 1, allocs, n_realloc);

	kmm_heap_stats(&h2);
	CHECK(h2.in_use_bytes <= h0.in_use_bytes + SLACK,
	      "in_use_bytes %llu at the start, %llu at the end (more than %llu over)",
	      h0.in_use_bytes, h2.in_use_bytes, SLACK);
	CHECK(h2.huge_blocks == h0.huge_blocks, "huge blocks %lu -> %lu", h0.huge_blocks,
	      h2.huge_blocks);
	CHECK(h2.large_blocks == h0.large_blocks, "page runs %lu -> %lu", h0.large_blocks,
	      h2.large_blocks);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate");

	printf("  %u generations x %u threads x %lu ops: %lu malloc, %lu calloc, %lu posix_memalign "
	       "(%lu of these > 2 MiB), %lu realloc, %lu free, %lu busy-slot skips\n",
	       NGENERATIONS, NTHREADS, ops_per_thread, n_malloc, n_calloc, n_memalign, n_huge,
	       n_realloc, n_free, n_busy);
	printf("  %.1f MiB verified byte by byte; peak %lu of %u slots live, %lu left at the end\n",
	       (double)bytes_checked / (1 << 20), peak_live, NSLOTS, left);
	printf("  in_use_bytes: start %llu, before the final frees %llu, end %llu (bound: start + %llu)\n",
	       h0.in_use_bytes, h1.in_use_bytes, h2.in_use_bytes, SLACK);
	printf("  between generations in_use_bytes peaked at %.1f MiB; zone_bytes: end %.1f MiB, "
	       "peak %.1f MiB; peak RSS %.1f MiB\n",
	       (double)peak_in_use / (1 << 20), (double)h2.zone_bytes / (1 << 20),
	       (double)h2.peak_zone_bytes / (1 << 20), (double)h2.peak_rss_kb / 1024);
	return test_finish();
}
