/* SPDX-License-Identifier: MIT */
/*
 * test_midheap_bias.c - the mid heap's biased lock (src/midheap.c,
 * heap_lock()) against its revocation, over kmm_core.
 *
 * A heap is biased to the first thread dealt it: that thread enters and
 * leaves with plain stores, and another thread that needs the heap revokes
 * the bias with a process-wide barrier.  Each round here starts an owner
 * thread on a fresh heap, which churns blocks of 8 KiB .. 64 KiB (every one
 * filled with a pattern and checked before it is freed), and a revoker that,
 * after a random spin, frees one of the owner's blocks - most often while
 * the owner is inside the heap.  A broken hand-over lets both threads into
 * the heap at once: the lists, the counters or a block's contents then
 * break, and the checks or kmm_mid_validate() see it.  Each round must
 * revoke exactly one bias (none where biasing is off: without
 * membarrier(2), or under ThreadSanitizer, whose build runs the rounds on
 * the futex lock alone).
 *
 * Heaps are biased only when first dealt, so a process has few fresh ones;
 * the test runs its rounds again in child processes (exec'd, not forked: a
 * fork revokes every bias) with other seeds.
 */
#include <pthread.h>
#include <spawn.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include <kmm/debug.h>
#include <kmm/gfp.h>
#include <kmm/kmalloc.h>

/* The heap's internals (src/midheap.h; hidden from the shared library, not from kmm_core). */
void *mid_alloc(size_t size, unsigned gfp);
bool mid_bias_enabled(void);
unsigned long mid_bias_revokes(void);

extern char **environ;

#define SLOTS 64
#define CHILDREN 5

struct block {
	unsigned char *p;
	size_t size;
	uint64_t seed;
};

struct round {
	uint64_t seed;
	struct block victim;  /* the owner's block the revoker frees */
	int published;        /* the victim is ready (release) */
	int revoked;          /* the revoker has freed it (release) */
	unsigned long spin;   /* the revoker's wait before its free */
};

static void put_block(struct rng *r, struct block *b)
{
	b->size = rng_log_size(r, 8193, 65536);
	b->seed = rng_next(r);
	b->p = mid_alloc(b->size, KMM_GFP_KERNEL);
	CHECK(b->p != NULL, "mid_alloc(%zu)", b->size);
	fill_pattern(b->p, b->size, b->seed);
}

static void drop_block(struct block *b)
{
	CHECK(check_pattern(b->p, b->size, b->seed) < 0, "block %p of %zu bytes overwritten",
	      (void *)b->p, b->size);
	kmm_kfree(b->p);
	b->p = NULL;
}

/* One churn step: replace a random slot's block, or free it. */
static void churn(struct rng *r, struct block *own)
{
	struct block *o = &own[rng_below(r, SLOTS)];
	if (o->p)
		drop_block(o);
	if (rng_chance(r, 3, 4))
		put_block(r, o);
}

static void *owner(void *arg)
{
	struct round *rd = arg;
	struct rng r;
	struct block own[SLOTS];
	memset(own, 0, sizeof(own));
	rng_seed(&r, rd->seed);
	/* The first mid_alloc() deals this thread a fresh heap, biased to it. */
	put_block(&r, &rd->victim);
	__atomic_store_n(&rd->published, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&rd->revoked, __ATOMIC_ACQUIRE))
		churn(&r, own);
	/* Now on the futex lock: the heap must have come through whole. */
	for (int i = 0; i < 2000; i++)
		churn(&r, own);
	for (int i = 0; i < SLOTS; i++)
		if (own[i].p)
			drop_block(&own[i]);
	test_thread_done();
	return NULL;
}

static void *revoker(void *arg)
{
	struct round *rd = arg;
	while (!__atomic_load_n(&rd->published, __ATOMIC_ACQUIRE))
		sched_yield();
	for (volatile unsigned long i = 0; i < rd->spin; i++)
		;
	drop_block(&rd->victim); /* a free of another thread's heap: revokes its bias */
	__atomic_store_n(&rd->revoked, 1, __ATOMIC_RELEASE);
	test_thread_done();
	return NULL;
}

static void run_rounds(void)
{
	struct rng r;
	rng_seed(&r, test_seed);
	/* Heaps: 4 per CPU, at most 32; the main thread has none (it never calls mid_alloc()). */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	long heaps = cpus < 1 ? 4 : cpus * 4 > 32 ? 32 : cpus * 4;
	int rounds = heaps < 8 ? (int)heaps : 8;
	bool biased = mid_bias_enabled();
	for (int i = 0; i < rounds; i++) {
		struct round rd = {.seed = rng_next(&r), .spin = (unsigned long)rng_below(&r, 200000)};
		unsigned long before = mid_bias_revokes();
		pthread_t o, v;
		CHECK(pthread_create(&o, NULL, owner, &rd) == 0, "pthread_create");
		CHECK(pthread_create(&v, NULL, revoker, &rd) == 0, "pthread_create");
		pthread_join(o, NULL);
		pthread_join(v, NULL);
		unsigned long revoked = mid_bias_revokes() - before;
		CHECK(revoked == (biased ? 1u : 0u), "round %d: %lu biases revoked (biasing %s)", i,
		      revoked, biased ? "on" : "off");
		CHECK(kmm_mid_validate() == 0, "round %d: kmm_mid_validate()", i);
	}
	printf("  %d rounds, biasing %s\n", rounds, biased ? "on" : "off");
}

int main(int argc, char **argv)
{
	bool child = argc > 1 && strcmp(argv[1], "--child") == 0;
	test_init(child ? "test_midheap_bias (child)" : "test_midheap_bias", 0x6d69646269617331ull);
	run_rounds();
	if (child)
		return test_finish();
	for (int c = 0; c < CHILDREN; c++) {
		char seed[32];
		snprintf(seed, sizeof(seed), "0x%016llx", (unsigned long long)mix64(test_seed + (uint64_t)c + 1));
		setenv("KMM_TEST_SEED", seed, 1);
		/* /proc/self/exe: argv[0] need not be a path (a shell's PATH search). */
		char *args[] = {argv[0], "--child", NULL};
		pid_t pid;
		int st;
		int rc = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ);
		CHECK(rc == 0, "posix_spawn /proc/self/exe: %s", strerror(rc));
		CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
		char how[96];
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d (seed %s) %s", c, seed,
		      describe_status(st, how, sizeof(how)));
	}
	return test_finish();
}
