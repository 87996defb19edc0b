// SPDX-License-Identifier: MIT
/*
 * demo.c - drive every layer of kmm through its public API and show the heap.
 *
 * 1. pages of several orders from the buddy allocator
 * 2. two object caches (one with a constructor), filled from several threads
 * 3. kmalloc at slab, page-range and huge sizes, and krealloc
 * 4. a mempool on top of a cache
 * then /proc/buddyinfo and /proc/slabinfo as the kernel prints them, the zone
 * figures, and the same after everything is freed and kmm_trim() has run.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kmm.h>

#define NR_THREADS	3
#define OBJS_PER_THREAD 500
#define NODE_MAGIC	0x6b6d6d6e6f646531ull /* "kmmnode1" */
/* The largest buddy block: kmalloc sizes above it are mapped from the OS. */
#define MAX_BLOCK_BYTES (KMM_PAGE_SIZE << (KMM_MAX_ORDER - 1))
#define NR_POOL_ELEMS	8

/* An object with a constructed state: the ctor sets it once per slot. */
struct node {
	unsigned long long magic;
	struct node *next;
	char payload[48];
};

struct worker {
	pthread_t tid;
	struct node *nodes[OBJS_PER_THREAD];
	void *bufs[OBJS_PER_THREAD];
};

static struct kmm_cache *node_cache, *buf_cache;

static void die(const char *what)
{
	fprintf(stderr, "kmm-demo: %s failed: %s\n", what, strerror(errno));
	exit(1);
}

static void *check(void *p, const char *what)
{
	if (!p)
		die(what);
	return p;
}

static void node_ctor(void *obj)
{
	struct node *n = obj;

	n->magic = NODE_MAGIC;
	n->next = NULL;
}

/* Each worker fills its own slabs without locks; main frees them later (remote frees). */
static void *worker_fn(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < OBJS_PER_THREAD; i++) {
		w->nodes[i] = kmm_cache_alloc(node_cache, KMM_GFP_KERNEL);
		w->bufs[i] = kmm_cache_alloc(buf_cache, KMM_GFP_KERNEL);
		if (!w->nodes[i] || !w->bufs[i])
			return NULL; /* main reports it */
		if (w->nodes[i]->magic != NODE_MAGIC || w->nodes[i]->next) {
			fprintf(stderr, "kmm-demo: object not in its constructed state\n");
			exit(1);
		}
		memset(w->nodes[i]->payload, 'n', sizeof(w->nodes[i]->payload));
		memset(w->bufs[i], 'b', kmm_cache_size(buf_cache));
	}
	return w;
}

static void print_zone(const char *when)
{
	struct kmm_zone_stats st;

	kmm_zone_stats(&st);
	printf("zone figures %s:\n", when);
	printf("  managed  %8lu pages (%6.1f MiB) in %lu sections\n", st.managed_pages,
	       st.managed_pages * (double)KMM_PAGE_SIZE / (1 << 20), st.nr_sections);
	printf("  free     %8lu pages (%6.1f MiB), %lu more on pcp lists\n", st.free_pages,
	       st.free_pages * (double)KMM_PAGE_SIZE / (1 << 20), st.pcp_pages);
	printf("  resident %8lu pages (%6.1f MiB)\n", st.resident_pages,
	       st.resident_pages * (double)KMM_PAGE_SIZE / (1 << 20));
	printf("  sections added %lu, released %lu\n\n", st.sections_added, st.sections_released);
}

int main(void)
{
	static const unsigned orders[] = { 0, 1, 2, 3, 5, 8 };
	static const size_t sizes[] = { 8, 24, 64, 200, 1000, 4096, 100 << 10, 8 << 20 };
	void *pages[sizeof(orders) / sizeof(orders[0])];
	void *bufs[sizeof(sizes) / sizeof(sizes[0])];
	void *pool_elems[NR_POOL_ELEMS];
	static struct worker workers[NR_THREADS];
	struct kmm_mempool *pool;
	struct kmm_cache *req_cache;
	char *r;

	printf("kmm %s demo: page size %lu, orders 0..%d\n\n", KMM_VERSION_STRING, KMM_PAGE_SIZE,
	       KMM_MAX_ORDER - 1);

	/* 1. The page allocator: blocks of 2^order pages, naturally aligned. */
	printf("== pages ==\n");
	for (size_t i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
		size_t bytes = KMM_PAGE_SIZE << orders[i];

		pages[i] = check(kmm_alloc_pages(KMM_GFP_KERNEL, orders[i]), "kmm_alloc_pages");
		memset(pages[i], 0xa5, bytes);
		printf("  order %u: %4zu KiB at %p\n", orders[i], bytes >> 10, pages[i]);
	}

	/* 2. Object caches, filled by several threads at once. */
	printf("\n== object caches, %d threads ==\n", NR_THREADS);
	node_cache = check(kmm_cache_create("demo_node", sizeof(struct node), 0, 0, node_ctor),
			   "kmm_cache_create(demo_node)");
	buf_cache = check(kmm_cache_create("demo_buf", 200, 0, KMM_SLAB_HWCACHE_ALIGN, NULL),
			  "kmm_cache_create(demo_buf)");
	for (int t = 0; t < NR_THREADS; t++) {
		errno = pthread_create(&workers[t].tid, NULL, worker_fn, &workers[t]);
		if (errno)
			die("pthread_create");
	}
	for (int t = 0; t < NR_THREADS; t++) {
		void *ret;

		errno = pthread_join(workers[t].tid, &ret);
		if (errno)
			die("pthread_join");
		if (!ret) {
			errno = ENOMEM;
			die("kmm_cache_alloc in a worker thread");
		}
	}
	printf("  %d x %d objects from demo_node (%zu B, with ctor) and demo_buf (%zu B)\n",
	       NR_THREADS, OBJS_PER_THREAD, kmm_cache_size(node_cache), kmm_cache_size(buf_cache));

	/* 3. kmalloc: slab size classes, whole pages from the buddy, huge from the OS. */
	printf("\n== kmalloc ==\n");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t cls = kmm_kmalloc_size_class(sizes[i]);

		bufs[i] = check(kmm_kmalloc(sizes[i], KMM_GFP_KERNEL), "kmm_kmalloc");
		memset(bufs[i], 0x5a, sizes[i]);
		if (kmm_ksize(bufs[i]) < sizes[i]) {
			fprintf(stderr, "kmm-demo: ksize below the size asked for\n");
			return 1;
		}
		if (cls)
			printf("  kmalloc(%8zu): ksize %8zu, slab size class %zu\n", sizes[i],
			       kmm_ksize(bufs[i]), cls);
		else
			printf("  kmalloc(%8zu): ksize %8zu, %s\n", sizes[i], kmm_ksize(bufs[i]),
			       sizes[i] <= MAX_BLOCK_BYTES ? "buddy pages" : "OS mapping");
	}
	r = check(kmm_kmalloc(100, KMM_GFP_KERNEL), "kmm_kmalloc");
	strcpy(r, "kept across krealloc");
	r = check(kmm_krealloc(r, 5000, KMM_GFP_KERNEL), "kmm_krealloc(5000)");
	r = check(kmm_krealloc(r, 300 << 10, KMM_GFP_KERNEL), "kmm_krealloc(300 KiB)");
	if (strcmp(r, "kept across krealloc") != 0) {
		fprintf(stderr, "kmm-demo: krealloc lost the contents\n");
		return 1;
	}
	printf("  krealloc 100 -> 5000 -> 300 KiB: contents kept, ksize %zu\n", kmm_ksize(r));

	/* 4. A mempool: a reserve of elements that allocation can always fall back on. */
	printf("\n== mempool ==\n");
	req_cache =
		check(kmm_cache_create("demo_req", 96, 0, 0, NULL), "kmm_cache_create(demo_req)");
	pool = check(kmm_mempool_create_slab_pool(16, req_cache), "kmm_mempool_create_slab_pool");
	for (int i = 0; i < NR_POOL_ELEMS; i++)
		pool_elems[i] = check(kmm_mempool_alloc(pool, KMM_GFP_KERNEL), "kmm_mempool_alloc");
	printf("  %d elements in use, %d in reserve\n", NR_POOL_ELEMS, kmm_mempool_reserved(pool));

	/* The heap, in the kernel's own formats. */
	printf("\n== /proc/buddyinfo ==\n");
	kmm_buddyinfo(stdout);
	printf("\n== /proc/slabinfo ==\n");
	kmm_slabinfo(stdout);
	printf("\n");
	print_zone("with everything allocated");
	fflush(stdout);

	/* Free everything: the cache objects from this thread, i.e. remote frees. */
	for (int i = 0; i < NR_POOL_ELEMS; i++)
		kmm_mempool_free(pool_elems[i], pool);
	kmm_mempool_destroy(pool);
	kmm_cache_destroy(req_cache);
	kmm_kfree(r);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		kmm_kfree(bufs[i]);
	for (int t = 0; t < NR_THREADS; t++) {
		for (int i = 0; i < OBJS_PER_THREAD; i++) {
			kmm_cache_free(node_cache, workers[t].nodes[i]);
			kmm_cache_free(buf_cache, workers[t].bufs[i]);
		}
	}
	kmm_cache_destroy(node_cache);
	kmm_cache_destroy(buf_cache);
	for (size_t i = 0; i < sizeof(orders) / sizeof(orders[0]); i++)
		kmm_free_pages(pages[i], orders[i]);

	printf("== after freeing everything: kmm_trim() gave back %lu pages ==\n", kmm_trim());
	printf("\n== /proc/buddyinfo ==\n");
	kmm_buddyinfo(stdout);
	printf("\n");
	print_zone("after kmm_trim()");
	return 0;
}
