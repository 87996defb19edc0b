/* SPDX-License-Identifier: MIT */
/*
 * test_slab_threads.c - object caches under cross-thread traffic.
 *
 * NTHREADS threads allocate objects from four caches (24, 64 and 200 bytes,
 * and 96 bytes with a constructor), stamp each one (a live marker, a unique
 * id naming the thread and the cache, and a pattern derived from the id
 * over the rest of the object) and hand most of them to another thread
 * through that thread's ring (mutex + condition variable; nobody sleeps to
 * synchronize).  The receiver verifies the stamp and frees the object - a
 * remote free.  The rest are freed by their own thread, some at once, some
 * after a while.  In all at least 10,000,000 allocations and frees (divided
 * by KMM_TEST_SCALE).
 *
 * "No object is handed out twice" is checked two ways: a global set of live
 * pointers (sharded, mutex-protected, open addressing) where every
 * allocation must insert a new pointer and every free remove a present one,
 * and the object's own marker word, swapped atomically at allocation.  For
 * the ctor cache every allocation must find the object fully constructed.
 *
 * A short warm-up run first lets kmm make its own per-thread metadata; then
 * after the real run, with every cache destroyed and the local caches
 * drained, the pages in use must be back exactly where they were, and both
 * validators must pass.
 */
#include <pthread.h>

#include "common.h"

#define NTHREADS  4
#define RING_CAP  4096 /* objects in flight to one thread */
#define LOCAL_MAX 64   /* objects a thread holds on to */
#define BATCH_MAX 32   /* objects allocated before one hand-off */
#define DRAIN_MAX 64   /* objects taken off a ring at a time */

#define LIVE_MAGIC  0x4c4956454f424a31ull /* "LIVEOBJ1": the object is allocated */
#define FREED_MAGIC 0x46524545444f424aull /* "FREEDOBJ": we gave it back */
#define CTOR_MAGIC  0x43544f525354415full /* "CTORSTA_": constructed state */
#define ID_SEQ_MASK ((1ull << 48) - 1)

/* ---- the caches ---- */

static unsigned long ctor_calls;

static void construct(void *obj, size_t size)
{
	uint64_t *w = obj;
	for (size_t i = 0; i < size / 8; i++)
		w[i] = CTOR_MAGIC ^ i;
}

static void st_ctor(void *obj)
{
	construct(obj, 96);
	__atomic_fetch_add(&ctor_calls, 1, __ATOMIC_RELAXED);
}

struct tcache {
	const char *name;
	size_t size; /* a multiple of 8, at least 24 */
	void (*ctor)(void *);
	unsigned weight;
	struct kmm_cache *c;
};

static struct tcache caches[] = {
        {"st_obj_24", 24, NULL, 30, NULL},
        {"st_obj_64", 64, NULL, 30, NULL},
        {"st_obj_200", 200, NULL, 20, NULL},
        {"st_ctor_96", 96, st_ctor, 20, NULL},
};
#define NCACHES ARRAY_SIZE(caches)

/* Word @i (>= 2) of the object with id @id. */
static inline uint64_t obj_word(uint64_t id, size_t i)
{
	return mix64(id ^ (i * 0x9e3779b97f4a7c15ull));
}

/* ---- the set of live pointers ---- */

#define HS_SHARDS 256
#define HS_SLOTS  2048 /* per shard; a power of two */

struct hs_shard {
	pthread_mutex_t lock;
	unsigned long used;
	uintptr_t slot[HS_SLOTS]; /* 0: empty */
};

static struct hs_shard *live_set;

static inline uint64_t hs_hash(uintptr_t p)
{
	return mix64((uint64_t)p);
}

static inline size_t hs_home(uintptr_t p)
{
	return (size_t)(hs_hash(p) & (HS_SLOTS - 1));
}

static inline struct hs_shard *hs_shard_of(uintptr_t p)
{
	return &live_set[hs_hash(p) >> 56];
}

/* Add @p; 0 if it was already there. */
static int hs_insert(uintptr_t p)
{
	struct hs_shard *sh = hs_shard_of(p);
	size_t i = hs_home(p);
	int ok = 1;

	pthread_mutex_lock(&sh->lock);
	CHECK(sh->used < HS_SLOTS - 1, "live-pointer set shard full");
	for (;; i = (i + 1) & (HS_SLOTS - 1)) {
		if (sh->slot[i] == p) {
			ok = 0;
			break;
		}
		if (sh->slot[i] == 0) {
			sh->slot[i] = p;
			sh->used++;
			break;
		}
	}
	pthread_mutex_unlock(&sh->lock);
	return ok;
}

/* Remove @p (linear probing, backward-shift deletion); 0 if it was absent. */
static int hs_remove(uintptr_t p)
{
	struct hs_shard *sh = hs_shard_of(p);
	size_t i = hs_home(p), j;

	pthread_mutex_lock(&sh->lock);
	for (;; i = (i + 1) & (HS_SLOTS - 1)) {
		if (sh->slot[i] == 0) {
			pthread_mutex_unlock(&sh->lock);
			return 0;
		}
		if (sh->slot[i] == p)
			break;
	}
	/* Pull back every later entry of the run that may not stay behind the hole. */
	for (j = i;;) {
		size_t k;
		j = (j + 1) & (HS_SLOTS - 1);
		if (sh->slot[j] == 0)
			break;
		k = hs_home(sh->slot[j]);
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue; /* its home lies after the hole: it stays */
		sh->slot[i] = sh->slot[j];
		i = j;
	}
	sh->slot[i] = 0;
	sh->used--;
	pthread_mutex_unlock(&sh->lock);
	return 1;
}

static unsigned long hs_count(void)
{
	unsigned long n = 0;
	for (size_t s = 0; s < HS_SHARDS; s++)
		n += live_set[s].used;
	return n;
}

/* ---- rings: objects in flight to a thread ---- */

struct item {
	void *obj;
	unsigned cache;
};

struct ring {
	pthread_mutex_t lock;
	pthread_cond_t nonempty;
	size_t head, count;
	struct item buf[RING_CAP];
};

struct worker {
	pthread_t thread;
	unsigned id;
	struct rng rng;
	unsigned long quota;                   /* allocations to make */
	unsigned long allocs, frees, remote_frees;
	uint64_t seq;
	struct item local[LOCAL_MAX];
	size_t nlocal;
	struct ring ring;                      /* objects sent to this thread */
};

static struct worker workers[NTHREADS];
static unsigned finished; /* workers done allocating (atomic) */

/* Push as many of @items as fit; returns how many. */
static size_t ring_push(struct ring *r, const struct item *items, size_t n)
{
	size_t pushed = 0;

	pthread_mutex_lock(&r->lock);
	while (pushed < n && r->count < RING_CAP) {
		r->buf[(r->head + r->count) % RING_CAP] = items[pushed++];
		r->count++;
	}
	if (pushed)
		pthread_cond_signal(&r->nonempty);
	pthread_mutex_unlock(&r->lock);
	return pushed;
}

/* Take up to @max items; the caller holds r->lock. */
static size_t ring_pop_locked(struct ring *r, struct item *out, size_t max)
{
	size_t n = 0;
	while (n < max && r->count > 0) {
		out[n++] = r->buf[r->head];
		r->head = (r->head + 1) % RING_CAP;
		r->count--;
	}
	return n;
}

/* ---- objects ---- */

static struct item obj_alloc(struct worker *w)
{
	unsigned long x = rng_below(&w->rng, 100);
	unsigned ci = 0;
	struct tcache *tc;
	uint64_t *o, id, old;
	size_t nw;

	while (x >= caches[ci].weight)
		x -= caches[ci++].weight;
	tc = &caches[ci];
	nw = tc->size / 8;
	o = kmm_cache_alloc(tc->c, KMM_GFP_KERNEL);
	CHECK(o != NULL, "thread %u: %s allocation failed: %s", w->id, tc->name, strerror(errno));
	CHECK(((uintptr_t)o & 7) == 0, "thread %u: %s object %p misaligned", w->id, tc->name, (void *)o);
	if (tc->ctor) {
		for (size_t i = 1; i < nw; i++)
			CHECK(o[i] == (CTOR_MAGIC ^ i),
			      "thread %u: %s object %p not constructed (word %zu = %#" PRIx64 ")", w->id,
			      tc->name, (void *)o, i, o[i]);
		old = __atomic_exchange_n(&o[0], LIVE_MAGIC, __ATOMIC_ACQ_REL);
		CHECK(old == CTOR_MAGIC, "thread %u: %s object %p: marker %#" PRIx64 " (%s)", w->id,
		      tc->name, (void *)o, old,
		      old == LIVE_MAGIC ? "handed out twice" : "not constructed");
	} else {
		old = __atomic_exchange_n(&o[0], LIVE_MAGIC, __ATOMIC_ACQ_REL);
		CHECK(old != LIVE_MAGIC, "thread %u: %s object %p handed out while live (marker)", w->id,
		      tc->name, (void *)o);
	}
	CHECK(hs_insert((uintptr_t)o), "thread %u: %s object %p handed out while live (set)", w->id,
	      tc->name, (void *)o);

	id = ((uint64_t)w->id << 56) | ((uint64_t)ci << 48) | (++w->seq & ID_SEQ_MASK);
	o[1] = id;
	for (size_t i = 2; i < nw; i++)
		o[i] = obj_word(id, i);
	w->allocs++;
	return (struct item){o, ci};
}

/* Verify the stamp of @it and free it; @w is the freeing thread. */
static void obj_free(struct worker *w, struct item it)
{
	struct tcache *tc = &caches[it.cache];
	uint64_t *o = it.obj, id;
	size_t nw = tc->size / 8;

	CHECK(__atomic_load_n(&o[0], __ATOMIC_ACQUIRE) == LIVE_MAGIC,
	      "thread %u: %s object %p lost its live marker", w->id, tc->name, (void *)o);
	id = o[1];
	CHECK((id >> 56) < NTHREADS && ((id >> 48) & 0xff) == it.cache,
	      "thread %u: %s object %p carries a foreign id %#" PRIx64, w->id, tc->name, (void *)o, id);
	for (size_t i = 2; i < nw; i++)
		CHECK(o[i] == obj_word(id, i),
		      "thread %u: %s object %p (from thread %u) corrupted at word %zu", w->id, tc->name,
		      (void *)o, (unsigned)(id >> 56), i);
	/* Out of the set before the free: a new owner may insert it right after. */
	CHECK(hs_remove((uintptr_t)o), "thread %u: freeing %p, which is not live", w->id, (void *)o);
	if (tc->ctor) {
		for (size_t i = 1; i < nw; i++)
			o[i] = CTOR_MAGIC ^ i;
		__atomic_store_n(&o[0], CTOR_MAGIC, __ATOMIC_RELEASE);
	} else {
		__atomic_store_n(&o[0], FREED_MAGIC, __ATOMIC_RELEASE);
	}
	kmm_cache_free(tc->c, o);
	w->frees++;
	if ((id >> 56) != w->id)
		w->remote_frees++;
}

static void drain_ring(struct worker *w)
{
	struct item got[DRAIN_MAX];
	size_t n;

	pthread_mutex_lock(&w->ring.lock);
	n = ring_pop_locked(&w->ring, got, DRAIN_MAX);
	pthread_mutex_unlock(&w->ring.lock);
	for (size_t i = 0; i < n; i++)
		obj_free(w, got[i]);
}

static void keep_local(struct worker *w, struct item it)
{
	if (w->nlocal == LOCAL_MAX) {
		size_t i = (size_t)rng_below(&w->rng, LOCAL_MAX);
		obj_free(w, w->local[i]);
		w->local[i] = w->local[--w->nlocal];
	}
	w->local[w->nlocal++] = it;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct item out[BATCH_MAX], got[DRAIN_MAX];

	while (w->allocs < w->quota) {
		size_t batch = (size_t)rng_range(&w->rng, 1, BATCH_MAX), nout = 0, pushed;
		unsigned target = (w->id + 1 + (unsigned)rng_below(&w->rng, NTHREADS - 1)) % NTHREADS;

		if (batch > w->quota - w->allocs)
			batch = (size_t)(w->quota - w->allocs);
		for (size_t b = 0; b < batch; b++) {
			struct item it = obj_alloc(w);
			unsigned long fate = rng_below(&w->rng, 100);
			if (fate < 65)
				out[nout++] = it; /* to another thread */
			else if (fate < 85)
				keep_local(w, it); /* freed here, later */
			else
				obj_free(w, it); /* freed here, at once */
		}
		/* To the chosen thread; what does not fit, to the others; the rest freed here. */
		pushed = ring_push(&workers[target].ring, out, nout);
		for (unsigned t = 0; t < NTHREADS && pushed < nout; t++)
			if (t != w->id && t != target)
				pushed += ring_push(&workers[t].ring, out + pushed, nout - pushed);
		for (size_t i = pushed; i < nout; i++)
			obj_free(w, out[i]); /* every ring was full */
		drain_ring(w);
		if (w->nlocal > 0 && rng_chance(&w->rng, 1, 8)) {
			size_t i = (size_t)rng_below(&w->rng, w->nlocal);
			obj_free(w, w->local[i]);
			w->local[i] = w->local[--w->nlocal];
		}
	}
	while (w->nlocal > 0)
		obj_free(w, w->local[--w->nlocal]);

	/* Done allocating: tell everyone, then empty our ring until all are done. */
	__atomic_fetch_add(&finished, 1, __ATOMIC_RELEASE);
	for (unsigned t = 0; t < NTHREADS; t++) {
		pthread_mutex_lock(&workers[t].ring.lock);
		pthread_cond_broadcast(&workers[t].ring.nonempty);
		pthread_mutex_unlock(&workers[t].ring.lock);
	}
	for (;;) {
		size_t n;
		pthread_mutex_lock(&w->ring.lock);
		while (w->ring.count == 0 && __atomic_load_n(&finished, __ATOMIC_ACQUIRE) < NTHREADS)
			pthread_cond_wait(&w->ring.nonempty, &w->ring.lock);
		n = ring_pop_locked(&w->ring, got, DRAIN_MAX);
		pthread_mutex_unlock(&w->ring.lock);
		if (n == 0)
			break; /* everyone is done and nothing is left for us */
		for (size_t i = 0; i < n; i++)
			obj_free(w, got[i]);
	}
	/* Half the threads drain their caches; the others leave it to thread exit. */
	if (w->id % 2 == 0)
		kmm_drain_local();
	test_thread_done();
	return NULL;
}

/* ---- one run: create the caches, run the threads, destroy the caches ---- */

static void run(uint64_t seed, unsigned long total_ops, const char *what)
{
	unsigned long allocs = 0, frees = 0, remote = 0, per_thread;
	unsigned long ctor_before = __atomic_load_n(&ctor_calls, __ATOMIC_RELAXED);

	for (size_t i = 0; i < NCACHES; i++) {
		caches[i].c = kmm_cache_create(caches[i].name, caches[i].size, 0, 0, caches[i].ctor);
		CHECK(caches[i].c != NULL, "creating %s failed: %s", caches[i].name, strerror(errno));
	}
	/* Each allocation is two operations: the allocation and its free. */
	per_thread = (total_ops / 2 + NTHREADS - 1) / NTHREADS;
	finished = 0;
	for (unsigned t = 0; t < NTHREADS; t++) {
		struct worker *w = &workers[t];
		memset(w, 0, sizeof(*w));
		w->id = t;
		w->quota = per_thread;
		rng_seed(&w->rng, seed ^ mix64(t + 1) ^ total_ops);
		CHECK(pthread_mutex_init(&w->ring.lock, NULL) == 0, "pthread_mutex_init failed");
		CHECK(pthread_cond_init(&w->ring.nonempty, NULL) == 0, "pthread_cond_init failed");
	}
	for (unsigned t = 0; t < NTHREADS; t++)
		CHECK(pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]) == 0,
		      "pthread_create failed");
	for (unsigned t = 0; t < NTHREADS; t++) {
		struct worker *w = &workers[t];
		CHECK(pthread_join(w->thread, NULL) == 0, "pthread_join failed");
		CHECK(w->ring.count == 0, "thread %u exited with %zu objects in its ring", t, w->ring.count);
		allocs += w->allocs;
		frees += w->frees;
		remote += w->remote_frees;
		pthread_mutex_destroy(&w->ring.lock);
		pthread_cond_destroy(&w->ring.nonempty);
	}

	CHECK(allocs == frees, "%lu allocations but %lu frees", allocs, frees);
	CHECK(allocs + frees >= total_ops, "only %lu operations of %lu", allocs + frees, total_ops);
	CHECK(hs_count() == 0, "%lu objects still in the live set", hs_count());
	/*
	 * How many frees are remote depends on scheduling (a full ring means a
	 * local free), so only ask that the remote path was well exercised.
	 */
	CHECK(remote >= frees / 50, "only %lu of %lu frees were remote", remote, frees);
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after the threads ended");
	for (size_t i = 0; i < NCACHES; i++) {
		struct kmm_cache_stats st;
		kmm_cache_stats(caches[i].c, &st);
		CHECK(st.num_objs == st.num_slabs * st.objects_per_slab,
		      "%s: num_objs %lu != %lu slabs * %u", caches[i].name, st.num_objs, st.num_slabs,
		      st.objects_per_slab);
		CHECK(kmm_slab_validate(caches[i].c) == 0, "kmm_slab_validate(%s) failed", caches[i].name);
	}
	/* Every object is free: destroying must report nothing. */
	for (size_t i = 0; i < NCACHES; i++) {
		struct stderr_capture cap;
		char *text;
		stderr_capture_begin(&cap);
		kmm_cache_destroy(caches[i].c);
		text = stderr_capture_end(&cap);
		CHECK(text[0] == '\0', "destroying the emptied %s printed:\n%s", caches[i].name, text);
		free(text);
		caches[i].c = NULL;
	}
	kmm_drain_local();
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after destroying the caches");
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after destroying the caches");
	printf("  %s: %d threads, %lu allocations, %lu frees (%lu remote), %lu ctor calls\n", what,
	       NTHREADS, allocs, frees, remote,
	       __atomic_load_n(&ctor_calls, __ATOMIC_RELAXED) - ctor_before);
}

int main(void)
{
	uint64_t seed = test_init("test_slab_threads", 0x7468726561647331ull);
	unsigned long total_ops = test_scaled(10000000, 200000), in_use0, in_use1;

	live_set = calloc(HS_SHARDS, sizeof(*live_set));
	CHECK(live_set != NULL, "out of memory");
	for (size_t s = 0; s < HS_SHARDS; s++)
		CHECK(pthread_mutex_init(&live_set[s].lock, NULL) == 0, "pthread_mutex_init failed");

	/* Warm-up: the same threads and caches, briefly, so kmm's metadata exists. */
	run(seed, 40000, "warm-up");
	in_use0 = pages_in_use();

	run(seed, total_ops, "run");
	in_use1 = pages_in_use();
	CHECK(in_use1 == in_use0, "pages in use: %lu before the run, %lu after destroying every cache",
	      in_use0, in_use1);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed at the end");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed at the end");

	for (size_t s = 0; s < HS_SHARDS; s++)
		pthread_mutex_destroy(&live_set[s].lock);
	free(live_set);
	return test_finish();
}
