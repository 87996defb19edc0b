/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c - fork() while other threads are inside malloc.
 *
 * NBUSY threads keep calling malloc, calloc, realloc and free on mixed sizes
 * (slab classes, page runs, now and then a huge block), each on a private
 * set of objects and on a small shared exchange of objects swapped between
 * threads atomically, with bursts of one size class (slabs made and freed,
 * so the per-thread page lists churn too; half of the threads run with short
 * page lists, KMM_TUNE_PCP_HIGH 8, to churn them more).  Meanwhile the main
 * thread forks NFORKS times.  fork() may land while any of them holds any
 * kmm lock or is half-way through a fast path; kmm's atfork handlers must
 * leave the child a consistent heap.
 *
 * Each child (alarm(CHILD_ALARM): a deadlock kills it and fails the test):
 *   - takes the objects still on the shared exchange (allocated by threads
 *     that do not exist in the child), checks and frees them;
 *   - runs a mixed workload of its own: many small objects (new slabs), page
 *     runs, huge blocks, realloc across all three;
 *   - starts and joins threads that do the same, twice over;
 *   - every GRANDCHILD_EVERY-th child forks again, and its child does all of
 *     the above too;
 *   - runs kmm_buddy_validate() and kmm_slab_validate(NULL), and _exit(0)s.
 * The second half of the forks run with KMM_TUNE_DECAY_MS 0, so that the busy
 * threads are forever returning memory to the OS (isolated blocks, system
 * calls with the zone lock dropped) when the fork lands.  The parent checks
 * every child's exit status, then stops its threads, frees everything and
 * validates its own heap.
 */
#include <pthread.h>

#include "common.h"

#define NBUSY            4
#define NFORKS           50
#define GRANDCHILD_EVERY 5
#define CHILD_ALARM      30
#define NEXCHANGE        64
#define NLOCAL           256
#define BURST            32
#define SMALL_PCP_HIGH   8

/* Every object starts with its size and a seed; the rest is the pattern. */
struct hdr {
	size_t size;
	uint64_t seed;
};

static void *obj_new(struct rng *r, size_t size)
{
	void *p;
	if (size < sizeof(struct hdr))
		size = sizeof(struct hdr);
	p = rng_chance(r, 1, 8) ? calloc(1, size) : malloc(size);
	CHECK(p != NULL, "allocating %zu bytes: %s", size, strerror(errno));
	struct hdr h = {size, rng_next(r)};
	memcpy(p, &h, sizeof(h));
	fill_pattern((char *)p + sizeof(h), size - sizeof(h), h.seed);
	return p;
}

static void obj_check(const void *p)
{
	struct hdr h;
	memcpy(&h, p, sizeof(h));
	long bad = check_pattern((const char *)p + sizeof(h), h.size - sizeof(h), h.seed);
	CHECK(bad < 0, "object %p of %zu bytes corrupted at offset %ld", p, h.size,
	      bad + (long)sizeof(h));
}

/* Resize keeping the header's object intact; rewrite it for the new size. */
static void *obj_resize(struct rng *r, void *p, size_t nsize)
{
	struct hdr h;
	if (nsize < sizeof(struct hdr))
		nsize = sizeof(struct hdr);
	memcpy(&h, p, sizeof(h));
	void *q = realloc(p, nsize);
	CHECK(q != NULL, "realloc(%p, %zu): %s", p, nsize, strerror(errno));
	size_t keep = (h.size < nsize ? h.size : nsize) - sizeof(h);
	long bad = check_pattern((char *)q + sizeof(h), keep, h.seed);
	CHECK(bad < 0, "realloc %zu -> %zu lost the contents at offset %ld", h.size, nsize, bad);
	h.size = nsize;
	h.seed = rng_next(r);
	memcpy(q, &h, sizeof(h));
	fill_pattern((char *)q + sizeof(h), nsize - sizeof(h), h.seed);
	return q;
}

static void obj_free(void *p)
{
	obj_check(p);
	free(p);
}

/* Mostly slab sizes, some page runs, rarely a huge block (> 4 MiB). */
static size_t mixed_size(struct rng *r)
{
	unsigned k = (unsigned)rng_below(r, 2000);
	if (k < 1)
		return rng_range(r, (4u << 20) + 1, 8u << 20);
	if (k < 100)
		return rng_log_size(r, 32u << 10, 1u << 20);
	return rng_log_size(r, 16, 32u << 10);
}

/* Objects passed between the parent's threads (and taken over by children). */
static void *exchange[NEXCHANGE];

/* ---- the parent's busy threads ---- */

/*
 * The main thread forks only while every busy thread is running (each has
 * done FORK_AFTER operations since it was let go), and holds them at the
 * gate while it waits for the child, so that the children, not the busy
 * threads, get the CPU.
 */
#define FORK_AFTER 256
#define GATE_EVERY 32

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_open = PTHREAD_COND_INITIALIZER;   /* paused became 0, or stop */
static pthread_cond_t gate_progress = PTHREAD_COND_INITIALIZER; /* a progress[] grew */
static int paused = 1, stop;
static unsigned nready; /* busy threads whose page lists are set up */
static unsigned long progress[NBUSY]; /* operations since the gate last opened */
static unsigned long busy_ops[NBUSY];

struct busy {
	pthread_t tid;
	unsigned idx;
	uint64_t seed;
};

static void *busy_thread(void *arg)
{
	struct busy *b = arg;
	struct rng r;
	void *local[NLOCAL] = {0};
	unsigned long ops = 0;

	rng_seed(&r, b->seed);
	/*
	 * A first page from the page allocator sets up this thread's page lists,
	 * with the KMM_TUNE_PCP_HIGH in force now (see main()).
	 */
	void *page = kmm_alloc_pages(KMM_GFP_KERNEL, 0);
	CHECK(page != NULL, "kmm_alloc_pages: %s", strerror(errno));
	kmm_free_pages(page, 0);
	pthread_mutex_lock(&gate_lock);
	nready++;
	pthread_cond_signal(&gate_progress);
	pthread_mutex_unlock(&gate_lock);
	for (;;) {
		if (ops % GATE_EVERY == 0) {
			pthread_mutex_lock(&gate_lock);
			while (paused && !stop)
				pthread_cond_wait(&gate_open, &gate_lock);
			int done = stop;
			progress[b->idx] += GATE_EVERY;
			pthread_cond_signal(&gate_progress);
			pthread_mutex_unlock(&gate_lock);
			if (done)
				break;
		}
		unsigned i = (unsigned)rng_below(&r, NLOCAL);
		unsigned what = (unsigned)rng_below(&r, 8);
		if (rng_chance(&r, 1, 8)) {
			/*
			 * A burst in one size class: its slabs are made and freed
			 * again, so the per-thread page lists (pcp) churn too.
			 */
			void *burst[BURST];
			size_t size = rng_log_size(&r, 1024, 32u << 10);
			for (unsigned k = 0; k < BURST; k++)
				burst[k] = obj_new(&r, size);
			for (unsigned k = 0; k < BURST; k++)
				obj_free(burst[k]);
		} else if (what == 0) {
			/* Swap one of ours with the exchange: the other side frees it. */
			unsigned e = (unsigned)rng_below(&r, NEXCHANGE);
			void *mine = local[i] ? local[i] : obj_new(&r, mixed_size(&r));
			local[i] = __atomic_exchange_n(&exchange[e], mine, __ATOMIC_ACQ_REL);
		} else if (!local[i]) {
			local[i] = obj_new(&r, mixed_size(&r));
		} else if (what <= 2) {
			local[i] = obj_resize(&r, local[i], mixed_size(&r));
		} else {
			obj_free(local[i]);
			local[i] = NULL;
		}
		ops++;
	}
	for (unsigned i = 0; i < NLOCAL; i++)
		if (local[i])
			obj_free(local[i]);
	busy_ops[b->idx] = ops;
	test_thread_done();
	return NULL;
}

/* Let the busy threads go and return once each is well under way. */
static void busy_resume(void)
{
	pthread_mutex_lock(&gate_lock);
	for (unsigned i = 0; i < NBUSY; i++)
		progress[i] = 0;
	paused = 0;
	pthread_cond_broadcast(&gate_open);
	for (unsigned i = 0; i < NBUSY; i++)
		while (progress[i] < FORK_AFTER)
			pthread_cond_wait(&gate_progress, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
}

static void busy_pause(int and_stop)
{
	pthread_mutex_lock(&gate_lock);
	paused = 1;
	stop = and_stop;
	pthread_cond_broadcast(&gate_open);
	pthread_mutex_unlock(&gate_lock);
}

/* ---- what a child does ---- */

#define CHILD_OBJS 1000

/* A mixed workload on a private array: allocate, resize, free, check. */
static void workload(uint64_t seed, unsigned rounds)
{
	struct rng r;
	void **objs = calloc(CHILD_OBJS, sizeof(void *));
	CHECK(objs != NULL, "calloc");
	rng_seed(&r, seed);
	for (unsigned round = 0; round < rounds; round++) {
		/* Many small objects at once: the classes need new slabs. */
		for (unsigned i = 0; i < CHILD_OBJS; i++)
			objs[i] = obj_new(&r, rng_log_size(&r, 8, 4096));
		/* A few page runs and a huge block. */
		for (unsigned i = 0; i < 8; i++) {
			unsigned j = (unsigned)rng_below(&r, CHILD_OBJS);
			obj_free(objs[j]);
			objs[j] = obj_new(&r, rng_log_size(&r, 40u << 10, 2u << 20));
		}
		unsigned j = (unsigned)rng_below(&r, CHILD_OBJS);
		obj_free(objs[j]);
		objs[j] = obj_new(&r, rng_range(&r, (4u << 20) + 1, 6u << 20));
		/* Resize across the kinds. */
		for (unsigned i = 0; i < 32; i++) {
			j = (unsigned)rng_below(&r, CHILD_OBJS);
			objs[j] = obj_resize(&r, objs[j], mixed_size(&r));
		}
		for (unsigned i = 0; i < CHILD_OBJS; i++)
			obj_free(objs[i]);
	}
	free(objs);
}

static void *child_thread(void *arg)
{
	workload((uint64_t)(uintptr_t)arg, 1);
	return NULL;
}

static void child_threads(uint64_t seed)
{
	pthread_t t[3];
	for (unsigned wave = 0; wave < 2; wave++) {
		for (unsigned i = 0; i < ARRAY_SIZE(t); i++) {
			int err = pthread_create(&t[i], NULL, child_thread,
			                         (void *)(uintptr_t)mix64(seed + wave * 8 + i));
			CHECK(err == 0, "pthread_create in the child: %s", strerror(err));
		}
		for (unsigned i = 0; i < ARRAY_SIZE(t); i++)
			CHECK(pthread_join(t[i], NULL) == 0, "pthread_join in the child");
	}
}

static void wait_child(pid_t pid, const char *who, unsigned n)
{
	int st;
	char how[96];
	while (waitpid(pid, &st, 0) < 0)
		CHECK(errno == EINTR, "waitpid: %s", strerror(errno));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s %u %s", who, n,
	      describe_status(st, how, sizeof(how)));
}

/* The child's (or grandchild's) whole run; the caller _exit(0)s after it. */
static void child_main(uint64_t seed, unsigned n, int depth)
{
	alarm(CHILD_ALARM);
	/* Objects the parent's threads left on the exchange. */
	for (unsigned e = 0; e < NEXCHANGE; e++) {
		void *p = exchange[e];
		exchange[e] = NULL;
		if (p)
			obj_free(p);
	}
	workload(seed, 1);
	child_threads(seed);
	if (depth == 0 && n % GRANDCHILD_EVERY == 0) {
		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0, "fork in the child: %s", strerror(errno));
		if (pid == 0) {
			child_main(mix64(seed + 1), n, 1);
			_exit(0);
		}
		workload(mix64(seed + 2), 1);
		wait_child(pid, "grandchild of child", n);
	}
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate in the child (depth %d)", depth);
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate in the child (depth %d)", depth);
}

int main(void)
{
	uint64_t seed = test_init("test_fork", 0x666f726b666f726bull);
	struct busy b[NBUSY];
	struct kmm_heap_stats h0;
	unsigned nforks = (unsigned)test_scaled(NFORKS, 10);
	struct rng r;

	rng_seed(&r, seed);
	kmm_heap_stats(&h0);
	/*
	 * Half of the busy threads get short page lists (KMM_TUNE_PCP_HIGH
	 * SMALL_PCP_HIGH), so that they refill and drain them all the time and a
	 * fork often lands in the middle of it; the others keep the default.
	 */
	long pcp_high = kmm_tune_get(KMM_TUNE_PCP_HIGH);
	for (unsigned i = 0; i < NBUSY; i++) {
		CHECK(kmm_tune_set(KMM_TUNE_PCP_HIGH, i < NBUSY / 2 ? SMALL_PCP_HIGH : pcp_high) == 0,
		      "kmm_tune_set(PCP_HIGH)");
		b[i].idx = i;
		b[i].seed = mix64(seed ^ (0x100u + i));
		int err = pthread_create(&b[i].tid, NULL, busy_thread, &b[i]);
		CHECK(err == 0, "pthread_create: %s", strerror(err));
		pthread_mutex_lock(&gate_lock);
		while (nready <= i)
			pthread_cond_wait(&gate_progress, &gate_lock);
		pthread_mutex_unlock(&gate_lock);
	}
	CHECK(kmm_tune_get(KMM_TUNE_PCP_HIGH) == pcp_high, "PCP_HIGH restored");

	unsigned grandchildren = 0;
	for (unsigned n = 0; n < nforks; n++) {
		/*
		 * The second half forks while the busy threads give memory back
		 * at every free (decay runs with the zone lock dropped).
		 */
		if (n == nforks / 2)
			CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 0) == 0, "kmm_tune_set(DECAY_MS, 0)");
		/* Some work of the main thread's own, then fork in the thick of it. */
		void *tmp[64];
		for (unsigned i = 0; i < ARRAY_SIZE(tmp); i++)
			tmp[i] = obj_new(&r, mixed_size(&r));
		busy_resume();
		for (unsigned i = 0; i < ARRAY_SIZE(tmp); i++)
			obj_free(tmp[i]);

		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0, "fork: %s", strerror(errno));
		if (pid == 0) {
			child_main(rng_next(&r), n, 0);
			_exit(0);
		}
		busy_pause(0);
		if (n % GRANDCHILD_EVERY == 0)
			grandchildren++;
		wait_child(pid, "child", n);
	}

	busy_pause(1);
	unsigned long ops = 0;
	for (unsigned i = 0; i < NBUSY; i++) {
		CHECK(pthread_join(b[i].tid, NULL) == 0, "pthread_join");
		ops += busy_ops[i];
	}
	unsigned long left = 0;
	for (unsigned e = 0; e < NEXCHANGE; e++)
		if (exchange[e]) {
			obj_free(exchange[e]);
			exchange[e] = NULL;
			left++;
		}
	struct kmm_heap_stats h1;
	kmm_heap_stats(&h1);
	CHECK(h1.in_use_bytes <= h0.in_use_bytes + (4u << 20),
	      "in_use_bytes %llu at the start, %llu after everything was freed", h0.in_use_bytes,
	      h1.in_use_bytes);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate in the parent");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate in the parent");
	printf("  %u forks (%u of the children forked a grandchild), all exited 0; "
	       "%u busy threads ran %lu operations meanwhile; %lu objects left on the exchange\n",
	       nforks, grandchildren, NBUSY, ops, left);
	printf("  parent in_use_bytes: start %llu, end %llu\n", h0.in_use_bytes, h1.in_use_bytes);
	return test_finish();
}
