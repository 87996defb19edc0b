/* SPDX-License-Identifier: MIT */
/*
 * test_mempool.c - memory pools (kmm/mempool.h).
 *
 * The underlying allocator is one of ours that can be switched to fail, so
 * that every path of kmm_mempool_alloc() is reached on purpose:
 *
 *   1. argument errors give NULL with EINVAL; a reserve that cannot be
 *      filled gives NULL with ENOMEM and leaks nothing.
 *   2. with the underlying allocator working, the reserve is not touched;
 *      with it failing, min_nr allocations still succeed (the first try
 *      went without KMM_GFP_WAIT / KMM_GFP_DIRECT_OS), the next NOWAIT or
 *      ATOMIC one returns NULL, and frees refill the reserve.
 *   3. kmm_mempool_resize() grows and shrinks the reserve.
 *   4. a KMM_GFP_KERNEL allocation with the reserve empty and the allocator
 *      failing blocks in a second thread until the main thread frees an
 *      element, and then returns that very element.  The threads meet on a
 *      mutex and condition variable, never on sleeps.
 *   5. the slab and kmalloc pools, plain and over failing wrappers of the
 *      element functions kmm exports.
 */
#include <pthread.h>
#include <time.h>

#include "common.h"

/* ---- an underlying allocator that can be made to fail ---- */

struct source {
	pthread_mutex_t lock;
	pthread_cond_t changed;   /* broadcast whenever a field below changes */
	size_t size;
	int fail;                 /* 1: every allocation fails */
	long fail_after;          /* >= 0: fail once this many allocations succeeded */
	unsigned long calls, allocs, frees;
	unsigned long retry_calls; /* calls that may block or call the OS (the caller's flags) */
	unsigned first_flags;     /* flags of the first call since record was set */
	int record;
	int waiter_started;       /* the waiter thread is about to allocate */
	pthread_t waiter;
	unsigned long waiter_retries; /* such calls made by the waiter thread */
};

static void source_init(struct source *s, size_t size)
{
	memset(s, 0, sizeof(*s));
	CHECK(pthread_mutex_init(&s->lock, NULL) == 0, "pthread_mutex_init failed");
	CHECK(pthread_cond_init(&s->changed, NULL) == 0, "pthread_cond_init failed");
	s->size = size;
	s->fail_after = -1;
}

static void source_fini(struct source *s)
{
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->changed);
}

static void source_set_fail(struct source *s, int fail)
{
	pthread_mutex_lock(&s->lock);
	s->fail = fail;
	pthread_mutex_unlock(&s->lock);
}

static void *source_alloc(unsigned flags, void *data)
{
	struct source *s = data;
	int fail;
	void *p;

	pthread_mutex_lock(&s->lock);
	s->calls++;
	if (s->record) {
		s->first_flags = flags;
		s->record = 0;
	}
	if (flags & (KMM_GFP_WAIT | KMM_GFP_DIRECT_OS)) {
		s->retry_calls++;
		if (s->waiter_started && pthread_equal(pthread_self(), s->waiter))
			s->waiter_retries++;
	}
	fail = s->fail || (s->fail_after >= 0 && (long)s->allocs >= s->fail_after);
	pthread_cond_broadcast(&s->changed);
	pthread_mutex_unlock(&s->lock);
	if (fail)
		return NULL;

	p = kmm_kmalloc(s->size, KMM_GFP_KERNEL);
	CHECK(p != NULL, "the test's underlying allocator failed: %s", strerror(errno));
	memset(p, 0x77, s->size);
	pthread_mutex_lock(&s->lock);
	s->allocs++;
	pthread_mutex_unlock(&s->lock);
	return p;
}

static void source_free(void *elem, void *data)
{
	struct source *s = data;

	CHECK(elem != NULL, "the pool freed a NULL element");
	kmm_kfree(elem);
	pthread_mutex_lock(&s->lock);
	s->frees++;
	pthread_mutex_unlock(&s->lock);
}

static unsigned long source_get(struct source *s, const unsigned long *field)
{
	unsigned long v;
	pthread_mutex_lock(&s->lock);
	v = *field;
	pthread_mutex_unlock(&s->lock);
	return v;
}

/* ---- 1. errors ---- */

static void test_errors(void)
{
	struct source s;
	struct kmm_mempool *p;
	struct kmm_cache *c;

	source_init(&s, 64);
	errno = 0;
	p = kmm_mempool_create(-1, source_alloc, source_free, &s);
	CHECK(p == NULL && errno == EINVAL, "min_nr -1: %p, errno %d", (void *)p, errno);
	errno = 0;
	p = kmm_mempool_create(2, NULL, source_free, &s);
	CHECK(p == NULL && errno == EINVAL, "NULL alloc_fn: %p, errno %d", (void *)p, errno);
	errno = 0;
	p = kmm_mempool_create(2, source_alloc, NULL, &s);
	CHECK(p == NULL && errno == EINVAL, "NULL free_fn: %p, errno %d", (void *)p, errno);
	errno = 0;
	p = kmm_mempool_create_kmalloc_pool(-1, 64);
	CHECK(p == NULL && errno == EINVAL, "kmalloc pool, min_nr -1: %p, errno %d", (void *)p, errno);
	c = kmm_cache_create("mempool_err_cache", 64, 0, 0, NULL);
	CHECK(c != NULL, "kmm_cache_create failed: %s", strerror(errno));
	errno = 0;
	p = kmm_mempool_create_slab_pool(-1, c);
	CHECK(p == NULL && errno == EINVAL, "slab pool, min_nr -1: %p, errno %d", (void *)p, errno);
	kmm_cache_destroy(c);
	CHECK(s.calls == 0, "rejected pools called the allocator %lu times", s.calls);

	/* A reserve that cannot be filled: ENOMEM, and what was taken is given back. */
	s.fail_after = 2;
	errno = 0;
	p = kmm_mempool_create(5, source_alloc, source_free, &s);
	CHECK(p == NULL && errno == ENOMEM, "unfillable reserve: %p, errno %d", (void *)p, errno);
	CHECK(s.allocs == 2 && s.frees == 2,
	      "unfillable reserve: %lu elements allocated, %lu freed", s.allocs, s.frees);

	/* min_nr 0 is a pool without a reserve. */
	s.fail_after = -1;
	p = kmm_mempool_create(0, source_alloc, source_free, &s);
	CHECK(p != NULL, "min_nr 0 failed: %s", strerror(errno));
	CHECK(kmm_mempool_reserved(p) == 0, "min_nr 0 holds %d", kmm_mempool_reserved(p));
	{
		void *e = kmm_mempool_alloc(p, KMM_GFP_KERNEL), *none;
		CHECK(e != NULL, "allocation from a pool without reserve failed");
		source_set_fail(&s, 1);
		none = kmm_mempool_alloc(p, KMM_GFP_NOWAIT);
		CHECK(none == NULL, "an empty pool with a failing allocator returned %p", none);
		kmm_mempool_free(e, p);
		CHECK(kmm_mempool_reserved(p) == 0, "a pool of min_nr 0 kept a freed element");
	}
	kmm_mempool_destroy(p);
	CHECK(s.allocs == s.frees, "%lu elements allocated, %lu freed", s.allocs, s.frees);
	source_fini(&s);
}

/* ---- 2. and 3. the reserve ---- */

#define MIN_NR 4

static void test_reserve(void)
{
	struct source s;
	struct kmm_mempool *p;
	void *e[16], *res[MIN_NR], *again;
	unsigned long frees;

	source_init(&s, 64);
	p = kmm_mempool_create(MIN_NR, source_alloc, source_free, &s);
	CHECK(p != NULL, "kmm_mempool_create failed: %s", strerror(errno));
	CHECK(kmm_mempool_reserved(p) == MIN_NR, "reserve %d after create", kmm_mempool_reserved(p));
	CHECK(s.allocs == MIN_NR, "create took %lu elements for a reserve of %d", s.allocs, MIN_NR);

	/* The allocator works: the reserve is left alone. */
	for (size_t i = 0; i < ARRAY_SIZE(e); i++) {
		e[i] = kmm_mempool_alloc(p, KMM_GFP_KERNEL);
		CHECK(e[i] != NULL, "allocation %zu failed", i);
		fill_pattern(e[i], 64, i);
	}
	CHECK(kmm_mempool_reserved(p) == MIN_NR, "a working allocator drained the reserve to %d",
	      kmm_mempool_reserved(p));
	CHECK(s.allocs == MIN_NR + ARRAY_SIZE(e), "%lu elements taken from the allocator", s.allocs);
	for (size_t i = 0; i < ARRAY_SIZE(e); i++) {
		CHECK(check_pattern(e[i], 64, i) < 0, "element %zu corrupted", i);
		kmm_mempool_free(e[i], p);
	}
	CHECK(kmm_mempool_reserved(p) == MIN_NR, "reserve %d after frees into a full reserve",
	      kmm_mempool_reserved(p));
	CHECK(s.frees == ARRAY_SIZE(e), "a full reserve passed %lu of %zu frees on", s.frees,
	      ARRAY_SIZE(e));

	/* The allocator fails: min_nr allocations come from the reserve. */
	source_set_fail(&s, 1);
	frees = s.frees;
	s.record = 1;
	res[0] = kmm_mempool_alloc(p, KMM_GFP_KERNEL);
	CHECK(res[0] != NULL, "first allocation with the allocator failing returned NULL");
	CHECK(s.record == 0, "the pool did not try the allocator first");
	CHECK((s.first_flags & (KMM_GFP_WAIT | KMM_GFP_DIRECT_OS)) == 0,
	      "the first try passed flags %#x: it may block or call the OS", s.first_flags);
	for (int i = 1; i < MIN_NR; i++) {
		res[i] = kmm_mempool_alloc(p, KMM_GFP_NOWAIT);
		CHECK(res[i] != NULL, "reserve allocation %d of %d returned NULL", i + 1, MIN_NR);
	}
	for (int i = 0; i < MIN_NR; i++) {
		for (int j = 0; j < i; j++)
			CHECK(res[i] != res[j], "the reserve handed out %p twice", res[i]);
		memset(res[i], 0x5a, 64);
	}
	CHECK(kmm_mempool_reserved(p) == 0, "reserve %d after taking all of it",
	      kmm_mempool_reserved(p));
	errno = 0;
	again = kmm_mempool_alloc(p, KMM_GFP_NOWAIT);
	CHECK(again == NULL, "allocation %d with the reserve empty returned %p", MIN_NR + 1, again);
	again = kmm_mempool_alloc(p, KMM_GFP_ATOMIC);
	CHECK(again == NULL, "ATOMIC allocation with the reserve empty returned %p", again);

	/* Frees refill the reserve, and the reserve hands the element back. */
	kmm_mempool_free(res[2], p);
	CHECK(kmm_mempool_reserved(p) == 1, "reserve %d after one free", kmm_mempool_reserved(p));
	again = kmm_mempool_alloc(p, KMM_GFP_NOWAIT);
	CHECK(again == res[2], "the reserve returned %p, not the element just freed %p", again, res[2]);
	CHECK(kmm_mempool_reserved(p) == 0, "reserve %d", kmm_mempool_reserved(p));
	for (int i = 0; i < MIN_NR; i++)
		kmm_mempool_free(res[i], p);
	CHECK(kmm_mempool_reserved(p) == MIN_NR, "reserve %d after giving everything back",
	      kmm_mempool_reserved(p));
	CHECK(s.frees == frees, "frees into a short reserve went to the allocator");

	/* Resizing. */
	source_set_fail(&s, 0);
	CHECK(kmm_mempool_resize(p, 8) == 0, "resize to 8 failed: %s", strerror(errno));
	CHECK(kmm_mempool_reserved(p) == 8, "reserve %d after resize to 8", kmm_mempool_reserved(p));
	frees = s.frees;
	CHECK(kmm_mempool_resize(p, 2) == 0, "resize to 2 failed: %s", strerror(errno));
	CHECK(kmm_mempool_reserved(p) == 2, "reserve %d after resize to 2", kmm_mempool_reserved(p));
	CHECK(s.frees == frees + 6, "shrinking the reserve by 6 freed %lu elements", s.frees - frees);
	/*
	 * Growing with the allocator failing: the kernel's mempool_resize()
	 * returns 0 with the reserve short (frees top it up later); -1 with
	 * ENOMEM is accepted too.  Either way nothing is lost.
	 */
	source_set_fail(&s, 1);
	errno = 0;
	{
		int rc = kmm_mempool_resize(p, 6);
		CHECK(rc == 0 || (rc == -1 && errno == ENOMEM),
		      "growing the reserve with a failing allocator: %d, errno %d", rc, errno);
	}
	CHECK(kmm_mempool_reserved(p) >= 2 && kmm_mempool_reserved(p) <= 6,
	      "reserve %d after a resize that could not allocate", kmm_mempool_reserved(p));
	errno = 0;
	CHECK(kmm_mempool_resize(p, -1) == -1 && errno == EINVAL, "resize to -1: errno %d", errno);
	source_set_fail(&s, 0);
	CHECK(kmm_mempool_resize(p, MIN_NR) == 0, "resize back to %d failed", MIN_NR);
	CHECK(kmm_mempool_reserved(p) == MIN_NR, "reserve %d", kmm_mempool_reserved(p));

	kmm_mempool_destroy(p);
	CHECK(s.allocs == s.frees, "after destroy: %lu elements allocated, %lu freed", s.allocs,
	      s.frees);
	source_fini(&s);
}

/* ---- 4. a blocked allocation woken by a free ---- */

struct waiter_arg {
	struct source *s;
	struct kmm_mempool *pool;
	void *got;
	int done; /* atomic */
};

static void *waiter_main(void *arg)
{
	struct waiter_arg *w = arg;
	void *e;

	pthread_mutex_lock(&w->s->lock);
	w->s->waiter_started = 1;
	pthread_cond_broadcast(&w->s->changed);
	pthread_mutex_unlock(&w->s->lock);

	e = kmm_mempool_alloc(w->pool, KMM_GFP_KERNEL);
	w->got = e;
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	test_thread_done();
	return NULL;
}

static void test_blocking(void)
{
	struct source s;
	struct waiter_arg w;
	struct kmm_mempool *p;
	struct timespec deadline;
	void *e1, *e2;
	pthread_t th;
	int rc = 0;

	source_init(&s, 128);
	p = kmm_mempool_create(2, source_alloc, source_free, &s);
	CHECK(p != NULL, "kmm_mempool_create failed: %s", strerror(errno));
	source_set_fail(&s, 1);
	e1 = kmm_mempool_alloc(p, KMM_GFP_NOWAIT);
	e2 = kmm_mempool_alloc(p, KMM_GFP_NOWAIT);
	CHECK(e1 && e2 && e1 != e2, "taking the reserve failed: %p %p", e1, e2);
	CHECK(kmm_mempool_reserved(p) == 0, "reserve %d", kmm_mempool_reserved(p));

	memset(&w, 0, sizeof(w));
	w.s = &s;
	w.pool = p;
	/* The waiter is known before it starts, so source_alloc can tell its calls apart. */
	pthread_mutex_lock(&s.lock);
	CHECK(pthread_create(&th, NULL, waiter_main, &w) == 0, "pthread_create failed");
	s.waiter = th;
	/*
	 * Wait until the waiter has set its flag and the pool, with the reserve
	 * empty, has retried the allocator with the waiter's own flags (the
	 * first try has neither KMM_GFP_WAIT nor KMM_GFP_DIRECT_OS; the retry
	 * has at least one of them): the waiter is then on its way to sleep (a
	 * correct pool loses no wake-up whichever side gets to its lock first).
	 * The deadline only turns a broken pool into a failure instead of a hang.
	 */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 60;
	while (rc == 0 && !(s.waiter_started && s.waiter_retries > 0))
		rc = pthread_cond_timedwait(&s.changed, &s.lock, &deadline);
	pthread_mutex_unlock(&s.lock);
	CHECK(rc == 0, "the waiting allocation never retried the allocator with the caller's flags");
	CHECK(!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE),
	      "a KMM_GFP_KERNEL allocation returned %p with the reserve empty and the allocator failing",
	      w.got);

	kmm_mempool_free(e1, p);
	CHECK(pthread_join(th, NULL) == 0, "pthread_join failed");
	CHECK(w.got == e1, "the woken allocation returned %p, not the freed element %p", w.got, e1);
	CHECK(kmm_mempool_reserved(p) == 0, "reserve %d after the hand-over", kmm_mempool_reserved(p));
	kmm_mempool_free(e1, p);
	kmm_mempool_free(e2, p);
	CHECK(kmm_mempool_reserved(p) == 2, "reserve %d after giving everything back",
	      kmm_mempool_reserved(p));
	kmm_mempool_destroy(p);
	CHECK(s.allocs == s.frees, "%lu elements allocated, %lu freed", s.allocs, s.frees);
	printf("  blocking: the waiter got the freed element; %lu allocator calls, %lu retries\n",
	       source_get(&s, &s.calls), source_get(&s, &s.retry_calls));
	source_fini(&s);
}

/* ---- 5. slab and kmalloc pools ---- */

/* A failing wrapper around one of kmm's element-function pairs. */
struct wrap {
	kmm_mempool_alloc_t alloc;
	kmm_mempool_free_t free;
	void *data;
	int fail;
	unsigned long allocs, frees;
};

static void *wrap_alloc(unsigned flags, void *data)
{
	struct wrap *w = data;
	void *e;
	if (w->fail)
		return NULL;
	e = w->alloc(flags, w->data);
	if (e)
		w->allocs++;
	return e;
}

static void wrap_free(void *elem, void *data)
{
	struct wrap *w = data;
	w->frees++;
	w->free(elem, w->data);
}

/* Pool over @w: min_nr from the reserve when failing, then NULL; all given back. */
static void exercise_failing(struct wrap *w, size_t size, const char *what)
{
	struct kmm_mempool *p = kmm_mempool_create(3, wrap_alloc, wrap_free, w);
	void *e[3], *none;

	CHECK(p != NULL, "%s: kmm_mempool_create failed: %s", what, strerror(errno));
	w->fail = 1;
	for (int i = 0; i < 3; i++) {
		e[i] = kmm_mempool_alloc(p, KMM_GFP_NOWAIT);
		CHECK(e[i] != NULL, "%s: reserve allocation %d failed", what, i);
		fill_pattern(e[i], size, (uint64_t)i);
	}
	none = kmm_mempool_alloc(p, KMM_GFP_NOWAIT);
	CHECK(none == NULL, "%s: allocation past the reserve returned %p", what, none);
	for (int i = 0; i < 3; i++) {
		CHECK(check_pattern(e[i], size, (uint64_t)i) < 0, "%s: element %d corrupted", what, i);
		kmm_mempool_free(e[i], p);
		CHECK(kmm_mempool_reserved(p) == i + 1, "%s: reserve %d after %d frees", what,
		      kmm_mempool_reserved(p), i + 1);
	}
	w->fail = 0;
	kmm_mempool_destroy(p);
	CHECK(w->allocs == w->frees, "%s: %lu elements allocated, %lu freed", what, w->allocs,
	      w->frees);
}

static void test_slab_and_kmalloc_pools(void)
{
	struct kmm_cache *c = kmm_cache_create("mempool_slab_cache", 256, 0, 0, NULL);
	struct kmm_cache_stats st;
	struct kmm_mempool *p;
	struct wrap w;
	void *e[20];

	CHECK(c != NULL, "kmm_cache_create failed: %s", strerror(errno));
	p = kmm_mempool_create_slab_pool(4, c);
	CHECK(p != NULL, "kmm_mempool_create_slab_pool failed: %s", strerror(errno));
	CHECK(kmm_mempool_reserved(p) == 4, "slab pool reserve %d", kmm_mempool_reserved(p));
	kmm_cache_stats(c, &st);
	CHECK(st.active_objs >= 4, "the slab pool's reserve is not in its cache (%lu active)",
	      st.active_objs);
	for (size_t i = 0; i < ARRAY_SIZE(e); i++) {
		e[i] = kmm_mempool_alloc(p, KMM_GFP_KERNEL);
		CHECK(e[i] != NULL, "slab pool allocation failed");
		fill_pattern(e[i], 256, i);
	}
	kmm_cache_stats(c, &st);
	CHECK(st.active_objs >= 4 + ARRAY_SIZE(e), "%lu active objects with %zu allocated",
	      st.active_objs, 4 + ARRAY_SIZE(e));
	for (size_t i = 0; i < ARRAY_SIZE(e); i++) {
		CHECK(check_pattern(e[i], 256, i) < 0, "slab pool element %zu corrupted", i);
		kmm_mempool_free(e[i], p);
	}
	kmm_mempool_destroy(p);
	CHECK(kmm_cache_shrink(c) == 0, "objects of the destroyed slab pool are still in its cache");

	memset(&w, 0, sizeof(w));
	w.alloc = kmm_mempool_alloc_slab;
	w.free = kmm_mempool_free_slab;
	w.data = c;
	exercise_failing(&w, 256, "failing slab pool");
	CHECK(kmm_cache_shrink(c) == 0, "objects of the failing slab pool are still in its cache");
	CHECK(kmm_slab_validate(c) == 0, "kmm_slab_validate(mempool_slab_cache) failed");
	kmm_cache_destroy(c);

	p = kmm_mempool_create_kmalloc_pool(3, 200);
	CHECK(p != NULL, "kmm_mempool_create_kmalloc_pool failed: %s", strerror(errno));
	CHECK(kmm_mempool_reserved(p) == 3, "kmalloc pool reserve %d", kmm_mempool_reserved(p));
	for (size_t i = 0; i < ARRAY_SIZE(e); i++) {
		e[i] = kmm_mempool_alloc(p, KMM_GFP_KERNEL);
		CHECK(e[i] != NULL, "kmalloc pool allocation failed");
		CHECK(kmm_ksize(e[i]) >= 200, "kmalloc pool element of ksize %zu", kmm_ksize(e[i]));
		fill_pattern(e[i], 200, i);
	}
	for (size_t i = 0; i < ARRAY_SIZE(e); i++) {
		CHECK(check_pattern(e[i], 200, i) < 0, "kmalloc pool element %zu corrupted", i);
		kmm_mempool_free(e[i], p);
	}
	kmm_mempool_destroy(p);

	memset(&w, 0, sizeof(w));
	w.alloc = kmm_mempool_kmalloc;
	w.free = kmm_mempool_kfree;
	w.data = (void *)(uintptr_t)200;
	exercise_failing(&w, 200, "failing kmalloc pool");

	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed after the pool tests");
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed after the pool tests");
}

int main(void)
{
	test_init("test_mempool", 0x6d656d706f6f6c31ull);
	test_errors();
	test_reserve();
	test_blocking();
	test_slab_and_kmalloc_pools();
	return test_finish();
}
