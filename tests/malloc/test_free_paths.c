/* SPDX-License-Identifier: MIT */
/*
 * test_free_paths.c - free()'s fast path on random objects: frees to the
 * thread's active slab, to its partial and full slabs (including tails of
 * slabs of several pages, found through head_delta), and the countdown
 * (held_used) that hands a full slab back to the partial list and an
 * emptied one back to the node, the magazine (objects freed last come back
 * first) and its GC (a magazine the thread stopped using goes back to its
 * slabs, so they can empty).
 *
 * For classes from 48 B to 40 KB (slabs of 1 to 64 pages; the ones above
 * 8 KiB, which malloc serves from its mid heap, through kmm_kmalloc(), their
 * frees still through free()), a thread
 * allocates many blocks, frees a random half and checks the slab
 * invariants, allocates again into the holes, and frees everything in a
 * random order, then works with another class for a while (the magazine
 * GC's turn).  Then the class's slabs must be nearly all gone: a thread
 * keeps no emptied slab but its active one (the node keeps none either:
 * malloc's classes have no constructor), so a countdown that never
 * reached 0 (slabs left on the partial list, up to 8 MiB) or reached it
 * early (a slab given back with objects in use, which the validator and
 * the contents checks catch) fails.
 */
#include <pthread.h>

#include "common.h"
#include <kmm/kmalloc.h>
#include <kmm/slab.h>

#define NBLOCKS 6000

/* num_slabs of slabinfo's row for @name (0 if absent); its pagesperslab in *@pages. */
static unsigned long num_slabs(const char *name, unsigned long *pages)
{
	char *buf = NULL, line[512];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	CHECK(f != NULL, "open_memstream: %s", strerror(errno));
	kmm_slabinfo(f);
	fclose(f);
	unsigned long slabs = 0;
	FILE *in = fmemopen(buf, len, "r");
	CHECK(in != NULL, "fmemopen: %s", strerror(errno));
	while (fgets(line, sizeof(line), in)) {
		char row[64];
		unsigned long active_slabs, n, a, b, c, d, pps;
		const char *data = strstr(line, ": slabdata ");
		if (sscanf(line, "%63s %lu %lu %lu %lu %lu", row, &a, &b, &c, &d, &pps) == 6 &&
		    strcmp(row, name) == 0 && data &&
		    sscanf(data, ": slabdata %lu %lu", &active_slabs, &n) == 2) {
			slabs = n;
			*pages = pps;
		}
	}
	fclose(in);
	free(buf);
	return slabs;
}

static void *blocks[NBLOCKS];

static void shuffle(struct rng *r, size_t *order, size_t n)
{
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = rng_below(r, i + 1), tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
}

static void fill(size_t i, size_t size) { memset(blocks[i], (int)(i * 7 + 1), size); }

static void check(size_t i, size_t size)
{
	const unsigned char *b = blocks[i];
	unsigned char want = (unsigned char)(i * 7 + 1);
	CHECK(b[0] == want && b[size / 2] == want && b[size - 1] == want,
	      "block %zu of %zu bytes was overwritten", i, size);
}

/* Allocate and free rounds of blocks of a class other than @size's, in batches that refill. */
static void churn_other_class(size_t size)
{
	static void *batch[4000];
	size_t other = size == 64 ? 96 : 64;
	for (int round = 0; round < 64; round++) {
		for (size_t i = 0; i < ARRAY_SIZE(batch); i++) {
			batch[i] = malloc(other);
			CHECK(batch[i] != NULL, "malloc(%zu) failed", other);
		}
		for (size_t i = 0; i < ARRAY_SIZE(batch); i++)
			free(batch[i]);
	}
}

/*
 * free() keeps what it takes back on top of the thread's magazine for the
 * class, whichever slab the object is from: the next allocations of the
 * class get the blocks freed last, last first, while they are in the cache.
 */
static void check_magazine(size_t size)
{
	enum { N = 3000 };
	static void *v[N];
	for (size_t i = 0; i < N; i++) {
		v[i] = malloc(size);
		CHECK(v[i] != NULL, "malloc(%zu) failed", size);
	}
	/* Blocks of three different slabs, none of them the active one. */
	static const size_t pick[] = {7, 1500, 300};
	uintptr_t freed[ARRAY_SIZE(pick)];
	for (size_t k = 0; k < ARRAY_SIZE(pick); k++) {
		freed[k] = (uintptr_t)v[pick[k]];
		free(v[pick[k]]);
	}
	for (size_t k = ARRAY_SIZE(pick); k-- > 0;) {
		v[pick[k]] = malloc(size);
		CHECK((uintptr_t)v[pick[k]] == freed[k],
		      "malloc(%zu) after frees of blocks %#lx, %#lx, %#lx returned %p, not %#lx (the "
		      "magazine is last in, first out)", size, (unsigned long)freed[0],
		      (unsigned long)freed[1], (unsigned long)freed[2], v[pick[k]], (unsigned long)freed[k]);
	}
	CHECK(kmm_slab_validate(NULL) == 0, "slab invariants broken after the magazine check");
	for (size_t i = 0; i < N; i++)
		free(v[i]);
}

/* malloc's blocks above 8 KiB come from the mid heap: the slab classes there through kmalloc. */
static void *alloc_block(size_t size)
{
	return size > 8192 ? kmm_kmalloc(size, KMM_GFP_KERNEL) : malloc(size);
}

static void run_class(struct rng *r, size_t size)
{
	static size_t order[NBLOCKS];
	/* At most 48 MiB of blocks. */
	size_t n = (48u << 20) / size < NBLOCKS ? (48u << 20) / size : NBLOCKS;
	size_t cls = kmm_kmalloc_size_class(size);
	char name[32];
	if (cls >= 1024 && cls % 1024 == 0)
		snprintf(name, sizeof(name), "kmalloc-%zuk", cls / 1024);
	else
		snprintf(name, sizeof(name), "kmalloc-%zu", cls);
	unsigned long pages = 1;
	unsigned long before = num_slabs(name, &pages);

	for (size_t i = 0; i < n; i++) {
		blocks[i] = alloc_block(size);
		CHECK(blocks[i] != NULL, "malloc(%zu) failed", size);
		fill(i, size);
	}
	unsigned long full = num_slabs(name, &pages);
	CHECK(full > before + 8, "%s: %lu slabs for %zu blocks (%lu before)", name, full, n,
	      before);

	/* A random half: frees to partial, full and active slabs, tails included. */
	shuffle(r, order, n);
	for (size_t k = 0; k < n / 2; k++) {
		check(order[k], size);
		free(blocks[order[k]]);
		blocks[order[k]] = NULL;
	}
	CHECK(kmm_slab_validate(NULL) == 0, "%s: slab invariants broken after half the frees", name);
	for (size_t k = 0; k < n / 2; k++) {
		blocks[order[k]] = alloc_block(size);
		CHECK(blocks[order[k]] != NULL, "malloc(%zu) failed", size);
		fill(order[k], size);
	}
	CHECK(kmm_slab_validate(NULL) == 0, "%s: slab invariants broken after refilling", name);

	shuffle(r, order, n);
	for (size_t k = 0; k < n; k++) {
		check(order[k], size);
		free(blocks[order[k]]);
	}
	CHECK(kmm_slab_validate(NULL) == 0, "%s: slab invariants broken after all frees", name);
	/*
	 * The last frees sit in the thread's magazine for the class, each one
	 * keeping its slab from emptying.  The magazine GC gives a magazine
	 * that stopped moving back to its slabs as the thread goes on with
	 * other classes: churn one, a few hundred refills.
	 */
	churn_other_class(size);
	CHECK(kmm_slab_validate(NULL) == 0, "%s: slab invariants broken after the magazine GC", name);
	unsigned long after = num_slabs(name, &pages);
	/* Kept: the active slab. */
	unsigned long kept = 1;
	CHECK(after <= before + kept, "%s: %lu slabs left after freeing everything (%lu at peak, %lu before)",
	      name, after, full, before);
	printf("test_free_paths: %-12s %lu slabs before, %lu at peak, %lu after\n", name, before, full,
	       after);
}

/*
 * How many of N blocks of @size, all freed, the thread's magazine took: it
 * takes frees while it has room and hands them back last first, so the
 * next allocations return a run of them in reverse order of freeing.
 */
static size_t magazine_depth(size_t size)
{
	enum { N = 2000 };
	static void *v[N], *w[N];
	for (size_t i = 0; i < N; i++) {
		v[i] = malloc(size);
		CHECK(v[i] != NULL, "malloc(%zu) failed", size);
	}
	for (size_t i = 0; i < N; i++)
		free(v[i]);
	for (size_t i = 0; i < N; i++)
		w[i] = malloc(size);
	size_t top = N;
	for (size_t i = 0; i < N && top == N; i++)
		if (v[i] == w[0])
			top = i;
	size_t depth = 0;
	while (depth <= top && depth < N && w[depth] == v[top - depth])
		depth++;
	for (size_t i = 0; i < N; i++)
		free(w[i]);
	return depth;
}

static pthread_barrier_t workers_hold;
static void *worker(void *arg)
{
	(void)arg;
	void *volatile p = malloc(64); /* a slab thread now (volatile: the pair is not elided) */
	free(p);
	pthread_barrier_wait(&workers_hold);
	pthread_barrier_wait(&workers_hold);
	return NULL;
}

/*
 * A magazine holds up to 1024 small blocks while the process has at most
 * two slab threads, and up to 256 (KMM_MAG_BYTES's bound) with more: each
 * thread's magazines pin slabs.
 */
static void check_magazine_bound(void)
{
	size_t few = magazine_depth(96);
	/* Blocks left on the freelist from the last refill (a slab's worth at most) were not pushed. */
	CHECK(few > 256 + 42 && few <= 1024, "one thread: the magazine took %zu of 2000 96-byte blocks",
	      few);
	pthread_t t[2];
	pthread_barrier_init(&workers_hold, NULL, 3);
	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&t[i], NULL, worker, NULL) == 0, "pthread_create");
	pthread_barrier_wait(&workers_hold);
	size_t many = magazine_depth(96);
	CHECK(many <= 256, "three threads: the magazine took %zu of 2000 96-byte blocks", many);
	pthread_barrier_wait(&workers_hold);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&workers_hold);
	printf("test_free_paths: magazine depth %zu with one thread, %zu with three\n", few, many);
}

int main(void)
{
	uint64_t seed = test_init("test_free_paths", 0x6672656570617431ull);
	struct rng r;
	rng_seed(&r, seed);
	static const size_t sizes[] = {48, 200, 500, 1000, 3000, 12000, 40000};
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
		run_class(&r, sizes[i]);
	check_magazine(200);
	check_magazine(48);
	check_magazine_bound();
	return test_finish();
}
