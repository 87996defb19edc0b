/* SPDX-License-Identifier: MIT */
/*
 * test_midheap_threads.c - the mid heap (src/midheap.c) under threads, over
 * kmm_core, so that the sanitizer builds run it: TSan cannot run malloc's
 * own tests (its runtime owns the program's malloc), and kmm_kmalloc()
 * keeps its slab classes, so this test calls the heap's internal
 * mid_alloc() and gives the blocks back through the public kmm_kfree(),
 * kmm_ksize() and kmm_krealloc(), which serve every kind of block.
 *
 * Four workers on two heaps' worth of threads (heaps are dealt round robin,
 * so some share one): each allocates blocks of 8 KiB .. 64 KiB, hands half
 * of them to the next worker, frees and resizes what it was handed (frees of
 * blocks of another heap, under that heap's lock), and churns its own;
 * meanwhile a fifth thread reads the heap statistics, trims (arenas
 * released, free pages decommitted) and validates.  KMM_DECAY_MS = 0 makes
 * every 256th free of a heap an aging pass.  Contents are checked
 * throughout; at the end no block is left and the validator passes.
 */
#include <pthread.h>

#include "common.h"
#include <kmm/debug.h>
#include <kmm/gfp.h>
#include <kmm/kmalloc.h>
#include <kmm/stats.h>

/* The heap's entry point (src/midheap.h; hidden from the shared library, not from kmm_core). */
void *mid_alloc(size_t size, unsigned gfp);

#define WORKERS 4
#define SLOTS 256
#define ROUNDS 40

struct block {
	unsigned char *p;
	size_t size;
	uint64_t seed;
};

struct mailbox {
	pthread_mutex_t lock;
	struct block b[SLOTS];
	int n;
};

static struct mailbox boxes[WORKERS];
static pthread_barrier_t round_barrier;
static int workers_done;

static void put_block(struct rng *r, struct block *b)
{
	b->size = rng_log_size(r, 8193, 65536);
	b->seed = rng_next(r);
	b->p = mid_alloc(b->size, KMM_GFP_KERNEL);
	CHECK(b->p != NULL, "mid_alloc(%zu)", b->size);
	CHECK(kmm_ksize(b->p) >= b->size, "ksize %zu below %zu", kmm_ksize(b->p), b->size);
	fill_pattern(b->p, b->size, b->seed);
}

static void drop_block(struct block *b)
{
	CHECK(check_pattern(b->p, b->size, b->seed) < 0, "block %p of %zu bytes overwritten", (void *)b->p,
	      b->size);
	kmm_kfree(b->p);
	b->p = NULL;
}

/* Resize in place or move (a move goes to a slab class or a page run: kmalloc's own). */
static void resize_block(struct rng *r, struct block *b)
{
	size_t size = rng_log_size(r, 8193, 65536);
	unsigned char *q = kmm_krealloc(b->p, size, KMM_GFP_KERNEL);
	CHECK(q != NULL, "kmm_krealloc(%zu)", size);
	CHECK(check_pattern(q, size < b->size ? size : b->size, b->seed) < 0, "krealloc lost the contents");
	b->p = q;
	b->size = size;
	fill_pattern(q, size, b->seed);
}

static void *worker(void *arg)
{
	int me = (int)(intptr_t)arg;
	struct rng r;
	struct block own[SLOTS];
	memset(own, 0, sizeof(own));
	rng_seed(&r, test_seed + (uint64_t)me);
	unsigned long rounds = test_scaled(ROUNDS, 8);
	for (unsigned long round = 0; round < rounds; round++) {
		/* Half of a batch to the next worker's mailbox. */
		struct mailbox *next = &boxes[(me + 1) % WORKERS];
		for (int i = 0; i < SLOTS; i++) {
			struct block b;
			put_block(&r, &b);
			pthread_mutex_lock(&next->lock);
			if (next->n < SLOTS && (i & 1)) {
				next->b[next->n++] = b;
				b.p = NULL;
			}
			pthread_mutex_unlock(&next->lock);
			if (b.p) {
				struct block *o = &own[rng_below(&r, SLOTS)];
				if (o->p)
					drop_block(o);
				*o = b;
			}
		}
		pthread_barrier_wait(&round_barrier);
		/* What the previous worker sent: resize some, free all. */
		struct mailbox *mine = &boxes[me];
		pthread_mutex_lock(&mine->lock);
		for (int i = 0; i < mine->n; i++) {
			if (rng_chance(&r, 1, 4))
				resize_block(&r, &mine->b[i]);
			drop_block(&mine->b[i]);
		}
		mine->n = 0;
		pthread_mutex_unlock(&mine->lock);
		/* Own churn with resizes in place. */
		for (int i = 0; i < SLOTS; i++) {
			struct block *o = &own[rng_below(&r, SLOTS)];
			if (o->p && rng_chance(&r, 1, 2))
				resize_block(&r, o);
			else if (o->p)
				drop_block(o);
			else
				put_block(&r, o);
		}
		pthread_barrier_wait(&round_barrier);
	}
	for (int i = 0; i < SLOTS; i++)
		if (own[i].p)
			drop_block(&own[i]);
	__atomic_fetch_add(&workers_done, 1, __ATOMIC_RELEASE);
	test_thread_done();
	return NULL;
}

/* Statistics, trims and validation while the workers run. */
static void *watcher(void *arg)
{
	(void)arg;
	unsigned long passes = 0;
	while (__atomic_load_n(&workers_done, __ATOMIC_ACQUIRE) < WORKERS) {
		struct kmm_heap_stats h;
		kmm_heap_stats(&h);
		CHECK(h.mid_arena_bytes >= h.mid_bytes, "arenas %llu below the blocks in them %llu",
		      h.mid_arena_bytes, h.mid_bytes);
		kmm_trim();
		CHECK(kmm_mid_validate() == 0, "mid heap invariants broken while the workers run");
		passes++;
	}
	printf("  %lu trims and validations beside the workers\n", passes);
	test_thread_done();
	return NULL;
}

int main(void)
{
	test_init("test_midheap_threads", 0x6d69647468726473ull);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 0) == 0, "kmm_tune_set(KMM_TUNE_DECAY_MS, 0)");
	pthread_t t[WORKERS], w;
	pthread_barrier_init(&round_barrier, NULL, WORKERS);
	for (int i = 0; i < WORKERS; i++)
		pthread_mutex_init(&boxes[i].lock, NULL);
	for (int i = 0; i < WORKERS; i++)
		CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0, "pthread_create");
	CHECK(pthread_create(&w, NULL, watcher, NULL) == 0, "pthread_create");
	for (int i = 0; i < WORKERS; i++)
		pthread_join(t[i], NULL);
	pthread_join(w, NULL);
	pthread_barrier_destroy(&round_barrier);
	CHECK(kmm_mid_validate() == 0, "mid heap invariants broken after the workers");
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	CHECK(h.mid_blocks == 0 && h.mid_bytes == 0, "%lu blocks, %llu bytes left", h.mid_blocks, h.mid_bytes);
	kmm_trim();
	kmm_heap_stats(&h);
	CHECK(h.mid_arena_bytes == 0, "kmm_trim() kept %llu bytes of empty arenas", h.mid_arena_bytes);
	return test_finish();
}
