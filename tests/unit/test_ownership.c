// SPDX-License-Identifier: MIT
/*
 * test_ownership.c - how a thread keeps the slabs it holds (slab.c): its own
 * frees go on the slabs' local lists, slabs it ran dry stay on its full list
 * where other threads' frees are found again, empty slabs go back instead of
 * being hoarded, and a thread's exit hands everything over.
 *
 * Every phase ends with kmm_slab_validate(), which walks the calling thread's
 * active, partial and full slabs and checks the invariants of each (frozen,
 * owned by the thread, marked with the right place, local lists as long as
 * their counters say).
 */
#include <pthread.h>

#include "../common.h"

#define OBJ_SIZE 64

static struct kmm_cache *cache;
static unsigned per_slab;

static unsigned long slabs_now(void)
{
	struct kmm_cache_stats st;
	kmm_cache_stats(cache, &st);
	return st.num_slabs;
}

static void **alloc_n(size_t n, uint8_t fill)
{
	void **v = malloc(n * sizeof(*v));
	CHECK(v != NULL, "out of memory for the pointer array");
	for (size_t i = 0; i < n; i++) {
		v[i] = kmm_cache_alloc(cache, KMM_GFP_KERNEL);
		CHECK(v[i] != NULL, "kmm_cache_alloc #%zu failed", i);
		memset(v[i], fill, OBJ_SIZE);
	}
	return v;
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
	return x < y ? -1 : x > y;
}

/* 1. One thread frees everything it allocated: the slabs come back. */
static void test_local_frees(struct rng *r)
{
	size_t n = (size_t)per_slab * 40;
	void **v = alloc_n(n, 0x11);
	unsigned long full = slabs_now();
	CHECK(full >= 40, "%zu objects of %u per slab in only %lu slabs", n, per_slab, full);
	CHECK(kmm_slab_validate(cache) == 0, "validate with 40 slabs held");

	/* Free in random order, validating on the way. */
	for (size_t i = n; i > 1; i--) {
		size_t j = rng_below(r, i);
		void *t = v[i - 1];
		v[i - 1] = v[j];
		v[j] = t;
	}
	for (size_t i = 0; i < n; i++) {
		CHECK(*(uint8_t *)v[i] == 0x11, "object %p lost its contents", v[i]);
		kmm_cache_free(cache, v[i]);
		if (i % (n / 8) == 0)
			CHECK(kmm_slab_validate(cache) == 0, "validate after %zu frees", i + 1);
	}
	CHECK(kmm_slab_validate(cache) == 0, "validate after freeing everything");
	/*
	 * The thread keeps its active slab; everything else went back to the
	 * page allocator.  The node keeps no empty slab of a cache without a
	 * constructor (min_partial is for constructed objects): another thread
	 * would take it, cache-hot on this core.
	 */
	unsigned long bound = 1;
	CHECK(slabs_now() <= bound, "%lu slabs left after freeing %zu objects (bound %lu)",
	      slabs_now(), n, bound);
	free(v);
}

/* 2. Another thread frees what this one allocated: this one finds it again. */
struct remote_job {
	void **v;
	size_t n;
};

static void *remote_free(void *arg)
{
	struct remote_job *job = arg;
	for (size_t i = 0; i < job->n; i++) {
		CHECK(*(uint8_t *)job->v[i] == 0x22, "object %p lost its contents", job->v[i]);
		kmm_cache_free(cache, job->v[i]);
	}
	CHECK(kmm_slab_validate(cache) == 0, "validate in the freeing thread");
	test_thread_done();
	return NULL;
}

static void test_remote_frees(void)
{
	size_t n = (size_t)per_slab * 16;
	void **v = alloc_n(n, 0x22);
	unsigned long held = slabs_now();
	void **sorted = malloc(n * sizeof(*sorted));
	CHECK(sorted != NULL, "out of memory");
	memcpy(sorted, v, n * sizeof(*v));
	qsort(sorted, n, sizeof(*sorted), cmp_ptr);

	struct remote_job job = {v, n};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, remote_free, &job) == 0, "pthread_create");
	CHECK(pthread_join(t, NULL) == 0, "pthread_join");
	CHECK(kmm_slab_validate(cache) == 0, "validate after the remote frees");

	/* The same number again: every object comes from the slabs we hold. */
	void **w = alloc_n(n, 0x33);
	size_t reused = 0;
	for (size_t i = 0; i < n; i++)
		reused += bsearch(&w[i], sorted, n, sizeof(*sorted), cmp_ptr) != NULL;
	CHECK(reused == n, "only %zu of %zu objects freed by another thread were reused", reused, n);
	CHECK(slabs_now() <= held, "%lu slabs after reallocating, %lu before", slabs_now(), held);
	CHECK(kmm_slab_validate(cache) == 0, "validate after reallocating");
	for (size_t i = 0; i < n; i++)
		kmm_cache_free(cache, w[i]);
	free(w);
	free(sorted);
	free(v);
}

/* 3. A thread exits holding full slabs: another frees the objects and gets the memory back. */
static void *alloc_and_exit(void *arg)
{
	struct remote_job *job = arg;
	job->v = alloc_n(job->n, 0x44);
	CHECK(kmm_slab_validate(cache) == 0, "validate in the allocating thread");
	test_thread_done();
	return NULL;
}

static void test_exit_handover(void)
{
	struct remote_job job = {NULL, (size_t)per_slab * 16};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, alloc_and_exit, &job) == 0, "pthread_create");
	CHECK(pthread_join(t, NULL) == 0, "pthread_join");
	CHECK(kmm_slab_validate(cache) == 0, "validate after the allocating thread exited");
	for (size_t i = 0; i < job.n; i++) {
		CHECK(*(uint8_t *)job.v[i] == 0x44, "object %p lost its contents", job.v[i]);
		kmm_cache_free(cache, job.v[i]);
	}
	CHECK(kmm_slab_validate(cache) == 0, "validate after freeing the exited thread's objects");
	CHECK(kmm_cache_shrink(cache) == 0, "kmm_cache_shrink: the cache still has slabs (%lu)",
	      slabs_now());
	free(job.v);
}

/* 4. A slab's slots are linked (and constructed) a page's worth at a time. */
static unsigned long ctor_calls;
static void count_ctor(void *p)
{
	memset(p, 0x5c, 200);
	__atomic_fetch_add(&ctor_calls, 1, __ATOMIC_RELAXED);
}

/* @n objects of @c, a count_ctor cache, each checked constructed. */
static void **alloc_constructed(struct kmm_cache *c, size_t n)
{
	void **v = malloc(n * sizeof(*v));
	CHECK(v != NULL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		v[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(v[i] != NULL && *(unsigned char *)v[i] == 0x5c, "object %zu not constructed", i);
	}
	return v;
}

static void test_lazy_init(void)
{
	struct kmm_cache *c = kmm_cache_create("lazy", 200, 0, 0, count_ctor);
	CHECK(c != NULL, "kmm_cache_create(lazy)");
	struct kmm_cache_stats st;
	kmm_cache_stats(c, &st);
	CHECK(st.pages_per_slab >= 2, "a 200-byte cache has %u-page slabs", st.pages_per_slab);
	void *first = kmm_cache_alloc(c, KMM_GFP_KERNEL);
	CHECK(first != NULL, "kmm_cache_alloc");
	unsigned long after_one = ctor_calls;
	CHECK(after_one >= 1 && after_one < st.objects_per_slab,
	      "one allocation constructed %lu of the slab's %u objects", after_one,
	      st.objects_per_slab);
	/* Every object handed out is constructed, exactly once, as the slab fills. */
	size_t n = st.objects_per_slab * 3;
	void **v = alloc_constructed(c, n);
	CHECK(ctor_calls >= n + 1 && ctor_calls < n + 1 + st.objects_per_slab,
	      "%lu constructor calls for %zu objects", ctor_calls, n + 1);
	CHECK(kmm_slab_validate(c) == 0, "validate the lazily linked cache");
	for (size_t i = 0; i < n; i++)
		kmm_cache_free(c, v[i]);
	kmm_cache_free(c, first);
	/* Every object freed, the slabs are empty (linked or not): all of them go. */
	CHECK(kmm_cache_shrink(c) == 0, "slabs left after freeing everything and shrinking");
	kmm_cache_destroy(c);
	free(v);
}

/*
 * 6. Other threads free to a few of the thread's full slabs, spread among
 * the others (one in eight): its refills look further after each look that
 * finds objects, so it takes them rather than make new slabs.  Taking the
 * objects of 16 such slabs again makes 5 new slabs; a fixed look at 4 full
 * slabs made 9.
 */
#define SPARSE_SLABS 128
#define SPARSE_EVERY 8
static struct kmm_cache *sparse;
struct sparse_job {
	void **v;
	size_t per_slab;
};

static void *sparse_free(void *arg)
{
	struct sparse_job *job = arg;
	for (size_t k = SPARSE_EVERY - 1; k < SPARSE_SLABS; k += SPARSE_EVERY)
		for (size_t i = 0; i < job->per_slab; i++)
			kmm_cache_free(sparse, job->v[k * job->per_slab + i]);
	test_thread_done();
	return NULL;
}

static void test_sparse_remote_frees(void)
{
	sparse = kmm_cache_create("sparse", 256, 0, 0, NULL);
	CHECK(sparse != NULL, "kmm_cache_create(sparse)");
	struct kmm_cache_stats st;
	kmm_cache_stats(sparse, &st);
	size_t per = st.objects_per_slab, n = SPARSE_SLABS * per;
	void **v = malloc(n * sizeof(*v));
	CHECK(v != NULL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		v[i] = kmm_cache_alloc(sparse, KMM_GFP_KERNEL);
		CHECK(v[i] != NULL, "kmm_cache_alloc(sparse) #%zu", i);
	}
	/* Slabs fill in order: objects [k * per, (k + 1) * per) share slab k. */
	for (size_t k = 0; k < SPARSE_SLABS; k++)
		for (size_t i = 1; i < per; i++) {
			uintptr_t a = (uintptr_t)v[k * per], b = (uintptr_t)v[k * per + i];
			CHECK((a ^ b) < (uintptr_t)st.pages_per_slab * 4096u,
			      "objects %zu and %zu are not in one slab", k * per, k * per + i);
		}
	kmm_cache_stats(sparse, &st);
	unsigned long before = st.num_slabs;
	struct sparse_job job = {v, per};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, sparse_free, &job) == 0, "pthread_create");
	CHECK(pthread_join(t, NULL) == 0, "pthread_join");
	size_t freed = (SPARSE_SLABS / SPARSE_EVERY) * per;
	for (size_t k = SPARSE_EVERY - 1; k < SPARSE_SLABS; k += SPARSE_EVERY)
		for (size_t i = 0; i < per; i++) {
			v[k * per + i] = kmm_cache_alloc(sparse, KMM_GFP_KERNEL);
			CHECK(v[k * per + i] != NULL, "kmm_cache_alloc(sparse) again");
		}
	kmm_cache_stats(sparse, &st);
	CHECK(st.num_slabs <= before + 6, "%lu new slabs for %zu objects others freed in %d of %lu "
	      "full slabs", st.num_slabs - before, freed, SPARSE_SLABS / SPARSE_EVERY, before);
	CHECK(kmm_slab_validate(sparse) == 0, "validate the sparse cache");
	printf("  sparse remote frees: %zu objects taken again, %lu new slabs\n", freed,
	       st.num_slabs - before);
	for (size_t i = 0; i < n; i++)
		kmm_cache_free(sparse, v[i]);
	free(v);
	kmm_cache_destroy(sparse);
}

/* A thread that allocates one object of @cache, keeps it in @obj and exits. */
struct one_alloc {
	struct kmm_cache *cache;
	void *obj;
};

static void *alloc_one_and_keep(void *arg)
{
	struct one_alloc *a = arg;
	a->obj = kmm_cache_alloc(a->cache, KMM_GFP_KERNEL);
	CHECK(a->obj != NULL, "kmm_cache_alloc in the thread");
	test_thread_done();
	return NULL;
}

/*
 * A refill takes one slab off the node partial list, not a batch of them:
 * another thread's refill finds the next one there instead of making a new
 * slab.  A batch left larson's generations holding free objects that their
 * other threads made new slabs beside (4 threads: 11.5 -> 9.4 MiB).
 */
#define NODE_SLABS 12
static struct kmm_cache *node_cache;
static void **node_objs;
static size_t node_per;

/* Fill NODE_SLABS slabs, free the first object of each, and exit: they go to the node. */
static void *fill_free_one_and_exit(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < NODE_SLABS * node_per; i++) {
		node_objs[i] = kmm_cache_alloc(node_cache, KMM_GFP_KERNEL);
		CHECK(node_objs[i] != NULL, "kmm_cache_alloc(node-share) #%zu", i);
	}
	for (size_t k = 0; k < NODE_SLABS; k++) {
		kmm_cache_free(node_cache, node_objs[k * node_per]);
		node_objs[k * node_per] = NULL;
	}
	test_thread_done();
	return NULL;
}

static void test_node_one_slab(void)
{
	node_cache = kmm_cache_create("node-share", 256, 0, 0, NULL);
	CHECK(node_cache != NULL, "kmm_cache_create(node-share)");
	struct kmm_cache_stats st;
	kmm_cache_stats(node_cache, &st);
	node_per = st.objects_per_slab;
	uintptr_t slab_bytes = (uintptr_t)st.pages_per_slab * 4096u;
	node_objs = calloc(NODE_SLABS * node_per, sizeof(*node_objs));
	CHECK(node_objs != NULL, "out of memory");
	pthread_t t;
	CHECK(pthread_create(&t, NULL, fill_free_one_and_exit, NULL) == 0, "pthread_create");
	CHECK(pthread_join(t, NULL) == 0, "pthread_join");
	kmm_cache_stats(node_cache, &st);
	CHECK(st.num_slabs == NODE_SLABS, "%lu slabs after the first thread, not %d", st.num_slabs,
	      NODE_SLABS);
	/* This thread's refill takes one of them; the second thread's another. */
	void *mine = kmm_cache_alloc(node_cache, KMM_GFP_KERNEL);
	CHECK(mine != NULL, "kmm_cache_alloc(node-share)");
	struct one_alloc other = {node_cache, NULL};
	CHECK(pthread_create(&t, NULL, alloc_one_and_keep, &other) == 0, "pthread_create");
	CHECK(pthread_join(t, NULL) == 0, "pthread_join");
	uintptr_t a = (uintptr_t)mine & ~(slab_bytes - 1), b = (uintptr_t)other.obj & ~(slab_bytes - 1);
	kmm_cache_stats(node_cache, &st);
	CHECK(st.num_slabs == NODE_SLABS, "%lu slabs: a refill made a new one while %d waited on the "
	      "node", st.num_slabs, NODE_SLABS - 1);
	CHECK(a != b, "both threads' objects in the slab at %#lx", (unsigned long)a);
	CHECK(kmm_slab_validate(node_cache) == 0, "validate the node-share cache");
	kmm_cache_free(node_cache, mine);
	kmm_cache_free(node_cache, other.obj);
	for (size_t i = 0; i < NODE_SLABS * node_per; i++)
		if (node_objs[i])
			kmm_cache_free(node_cache, node_objs[i]);
	free(node_objs);
	kmm_cache_destroy(node_cache);
}

/*
 * 5. A thread that exits with an empty slab it only began to use gives it
 * back without linking (here: constructing) the slots it never used; they
 * were written at exit before, which put all of each slab a thread held in
 * the process's RSS (32 threads with a block in 8 classes: 5.5 MiB, now 3.3).
 */
static struct kmm_cache *exit_cache;
static void *alloc_one_and_exit(void *arg)
{
	(void)arg;
	void *p = kmm_cache_alloc(exit_cache, KMM_GFP_KERNEL);
	CHECK(p != NULL && *(unsigned char *)p == 0x5c, "kmm_cache_alloc in the thread");
	kmm_cache_free(exit_cache, p);
	test_thread_done();
	return NULL;
}

static void test_exit_leaves_slots(void)
{
	long min_partial = kmm_tune_get(KMM_TUNE_MIN_PARTIAL);
	CHECK(kmm_tune_set(KMM_TUNE_MIN_PARTIAL, 0) == 0, "kmm_tune_set(MIN_PARTIAL, 0)");
	exit_cache = kmm_cache_create("exit-lazy", 200, 0, 0, count_ctor);
	CHECK(exit_cache != NULL, "kmm_cache_create(exit-lazy)");
	struct kmm_cache_stats st;
	kmm_cache_stats(exit_cache, &st);
	unsigned long before = ctor_calls;
	pthread_t t;
	CHECK(pthread_create(&t, NULL, alloc_one_and_exit, NULL) == 0, "pthread_create");
	CHECK(pthread_join(t, NULL) == 0, "pthread_join");
	unsigned long made = ctor_calls - before;
	CHECK(made >= 1 && made < st.objects_per_slab,
	      "the exiting thread constructed %lu of its slab's %u objects", made, st.objects_per_slab);
	kmm_cache_stats(exit_cache, &st);
	CHECK(st.num_slabs == 0, "%lu slabs left after the thread exited", st.num_slabs);
	CHECK(kmm_slab_validate(exit_cache) == 0, "validate the exit-lazy cache");
	printf("  exit: %lu of %u objects constructed, slab given back\n", made, st.objects_per_slab);

	/*
	 * A slab with an object still in use goes to the node unlinked past
	 * what its holder used; whoever takes it next links (constructs) the
	 * rest as it needs them, each object once.
	 */
	before = ctor_calls;
	struct one_alloc kept = {exit_cache, NULL};
	CHECK(pthread_create(&t, NULL, alloc_one_and_keep, &kept) == 0, "pthread_create");
	CHECK(pthread_join(t, NULL) == 0, "pthread_join");
	made = ctor_calls - before;
	kmm_cache_stats(exit_cache, &st);
	CHECK(made >= 1 && made < st.objects_per_slab,
	      "the exiting thread that kept an object constructed %lu of %u", made, st.objects_per_slab);
	CHECK(kmm_slab_validate(exit_cache) == 0, "validate the node's partly linked slab");
	size_t n = st.objects_per_slab * 2;
	void **v = alloc_constructed(exit_cache, n);
	for (size_t i = 0; i < n; i++)
		CHECK(v[i] != kept.obj, "object %zu is the one still in use", i);
	CHECK(ctor_calls - before <= n + 1 + st.objects_per_slab,
	      "%lu constructor calls for %zu objects", ctor_calls - before, n + 1);
	CHECK(kmm_slab_validate(exit_cache) == 0, "validate after taking the partly linked slab");
	for (size_t i = 0; i < n; i++)
		kmm_cache_free(exit_cache, v[i]);
	kmm_cache_free(exit_cache, kept.obj);
	free(v);
	kmm_cache_destroy(exit_cache);
	CHECK(kmm_tune_set(KMM_TUNE_MIN_PARTIAL, min_partial) == 0, "restoring MIN_PARTIAL");
}

/*
 * Big slabs too: once every object of a 40 KiB cache (128 KiB slabs) is
 * freed, going partial first, only the active slab is left (the node keeps
 * none: no constructor).
 */
static void test_big_empty_not_kept(void)
{
	struct kmm_cache *big = kmm_cache_create("ownership-big", 40960, 0, 0, NULL);
	CHECK(big != NULL, "kmm_cache_create(40 KiB) failed");
	struct kmm_cache_stats st;
	kmm_cache_stats(big, &st);
	CHECK(st.pages_per_slab * 4096ul > 8192, "40 KiB objects in slabs of %u pages", st.pages_per_slab);
	enum { MAXN = 64 };
	void *v[MAXN];
	size_t n = 4 * (size_t)st.objects_per_slab < MAXN ? 4 * (size_t)st.objects_per_slab : MAXN;
	for (size_t i = 0; i < n; i++) {
		v[i] = kmm_cache_alloc(big, KMM_GFP_KERNEL);
		CHECK(v[i] != NULL, "kmm_cache_alloc(40 KiB) failed");
		memset(v[i], 0x5c, 64);
	}
	/* Every other object first, so that each slab goes partial before it empties. */
	for (size_t i = 0; i < n; i += 2)
		kmm_cache_free(big, v[i]);
	for (size_t i = 1; i < n; i += 2)
		kmm_cache_free(big, v[i]);
	kmm_cache_stats(big, &st);
	CHECK(st.num_slabs <= 1, "%lu slabs of 128 KiB left after freeing all %zu objects (bound 1)",
	      st.num_slabs, n);
	CHECK(kmm_slab_validate(big) == 0, "validate the 40 KiB cache");
	printf("  big slabs: %zu objects of 40 KiB freed, %lu slab left (the active one)\n", n, st.num_slabs);
	kmm_cache_destroy(big);
}

int main(void)
{
	struct rng r;
	rng_seed(&r, test_init("test_ownership", 0x6f776e6572736870ull));
	cache = kmm_cache_create("ownership", OBJ_SIZE, 0, 0, NULL);
	CHECK(cache != NULL, "kmm_cache_create failed");
	struct kmm_cache_stats st;
	kmm_cache_stats(cache, &st);
	per_slab = st.objects_per_slab;
	CHECK(per_slab >= 2, "%u objects per slab", per_slab);

	test_local_frees(&r);
	test_remote_frees();
	test_exit_handover();
	test_lazy_init();
	test_exit_leaves_slots();
	test_sparse_remote_frees();
	test_node_one_slab();
	test_big_empty_not_kept();

	kmm_cache_destroy(cache);
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed at the end");
	return test_finish();
}
