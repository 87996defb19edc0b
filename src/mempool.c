/* SPDX-License-Identifier: MIT */
/*
 * mempool.c - memory pools with a guaranteed reserve (the kernel's
 * mm/mempool.c).
 *
 * The pool holds up to min_nr preallocated elements.  Allocation order:
 *   1. the underlying allocator, asked not to block or call the OS (so the
 *      reserve is used only when memory is really short);
 *   2. an element from the reserve;
 *   3. the underlying allocator with the caller's own flags;
 *   4. if the caller may wait (KMM_GFP_WAIT): sleep until an element is
 *      freed to the pool, then start over.  Otherwise NULL (ENOMEM).
 * Freeing refills the reserve first (waking one waiter), and only hands the
 * element back to the underlying allocator when the reserve is full.
 *
 * Ordering: pool->lock guards curr_nr and elements[]; a waiter re-checks the
 * reserve under the lock after waking, so no wake-up is lost (the free puts
 * the element in and signals under the same lock).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "internal.h"

struct kmm_mempool {
	struct list_head list;    /* all pools (pools_lock), for fork */
	pthread_mutex_t lock;
	pthread_cond_t wait;      /* signalled when an element enters the reserve */
	int min_nr;               /* reserve size */
	int curr_nr;              /* elements in elements[] now */
	void **elements;          /* [min_nr], kmalloc'd */
	kmm_mempool_alloc_t alloc;
	kmm_mempool_free_t free;
	void *pool_data;
};

/* Every pool, so that fork can take their locks (see init.c). */
static kmm_lock_t pools_lock = KMM_LOCK_INIT;
static struct list_head pools = {&pools, &pools};

void mempool_fork_prepare(void);
void mempool_fork_parent(void);
void mempool_fork_child(void);
rare void mempool_fork_prepare(void)
{
	kmm_lock(&pools_lock);
	struct list_head *pos;
	list_for_each(pos, &pools)
		pthread_mutex_lock(&list_entry(pos, struct kmm_mempool, list)->lock);
}
rare void mempool_fork_parent(void)
{
	struct list_head *pos;
	list_for_each(pos, &pools)
		pthread_mutex_unlock(&list_entry(pos, struct kmm_mempool, list)->lock);
	kmm_unlock(&pools_lock);
}
rare void mempool_fork_child(void)
{
	struct list_head *pos;
	list_for_each(pos, &pools)
	{
		struct kmm_mempool *p = list_entry(pos, struct kmm_mempool, list);
		pthread_mutex_init(&p->lock, NULL);
		pthread_cond_init(&p->wait, NULL);
	}
	kmm_lock_init(&pools_lock);
}

static void add_element(struct kmm_mempool *p, void *e) { p->elements[p->curr_nr++] = e; }
static void *remove_element(struct kmm_mempool *p) { return p->elements[--p->curr_nr]; }

KMM_EXPORT rare struct kmm_mempool *kmm_mempool_create(int min_nr, kmm_mempool_alloc_t alloc_fn,
						  kmm_mempool_free_t free_fn, void *data)
{
	if (min_nr < 0 || !alloc_fn || !free_fn || min_nr > (1 << 24)) {
		errno = EINVAL;
		return NULL;
	}
	struct kmm_mempool *p = kmm_kzalloc(sizeof(*p), KMM_GFP_KERNEL);
	if (!p)
		return NULL;
	p->elements = kmm_kmalloc(MAX(min_nr, 1) * sizeof(void *), KMM_GFP_KERNEL);
	if (!p->elements) {
		kmm_kfree(p);
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wait, NULL);
	p->min_nr = min_nr;
	p->alloc = alloc_fn;
	p->free = free_fn;
	p->pool_data = data;
	kmm_lock(&pools_lock);
	list_add(&p->list, &pools);
	kmm_unlock(&pools_lock);
	while (p->curr_nr < min_nr) {
		void *e = alloc_fn(KMM_GFP_KERNEL, data);
		if (!e) {
			kmm_mempool_destroy(p);
			errno = ENOMEM;
			return NULL;
		}
		add_element(p, e);
	}
	return p;
}

KMM_EXPORT void *kmm_mempool_alloc(struct kmm_mempool *p, unsigned flags)
{
	if (!p || (flags & ~KMM_GFP_VALID_MASK)) {
		errno = EINVAL;
		return NULL;
	}
	for (;;) {
		void *e = p->alloc(flags & ~(KMM_GFP_DIRECT_OS | KMM_GFP_WAIT), p->pool_data);
		if (e)
			return e;
		pthread_mutex_lock(&p->lock);
		if (p->curr_nr > 0) {
			e = remove_element(p);
			pthread_mutex_unlock(&p->lock);
			return e;
		}
		pthread_mutex_unlock(&p->lock);
		if (flags & KMM_GFP_DIRECT_OS) {
			e = p->alloc(flags & ~KMM_GFP_WAIT, p->pool_data);
			if (e)
				return e;
		}
		if (!(flags & KMM_GFP_WAIT)) {
			errno = ENOMEM;
			return NULL;
		}
		pthread_mutex_lock(&p->lock);
		while (p->curr_nr == 0)
			pthread_cond_wait(&p->wait, &p->lock);
		e = remove_element(p);
		pthread_mutex_unlock(&p->lock);
		return e;
	}
}

KMM_EXPORT void kmm_mempool_free(void *e, struct kmm_mempool *p)
{
	if (!e || !p)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->curr_nr < p->min_nr) {
		add_element(p, e);
		pthread_cond_signal(&p->wait);
		pthread_mutex_unlock(&p->lock);
		return;
	}
	pthread_mutex_unlock(&p->lock);
	p->free(e, p->pool_data);
}

KMM_EXPORT rare int kmm_mempool_resize(struct kmm_mempool *p, int new_min_nr)
{
	if (!p || new_min_nr < 0 || new_min_nr > (1 << 24)) {
		errno = EINVAL;
		return -1;
	}
	void **ne = kmm_kmalloc(MAX(new_min_nr, 1) * sizeof(void *), KMM_GFP_KERNEL);
	if (!ne)
		return -1;
	pthread_mutex_lock(&p->lock);
	while (p->curr_nr > new_min_nr) {
		void *e = remove_element(p);
		pthread_mutex_unlock(&p->lock);
		p->free(e, p->pool_data);
		pthread_mutex_lock(&p->lock);
	}
	for (int i = 0; i < p->curr_nr; i++)
		ne[i] = p->elements[i];
	void **old = p->elements;
	p->elements = ne;
	p->min_nr = new_min_nr;
	pthread_mutex_unlock(&p->lock);
	kmm_kfree(old);
	/* Fill up to the new size; failing to is not an error (as the kernel). */
	while (1) {
		pthread_mutex_lock(&p->lock);
		bool full = p->curr_nr >= p->min_nr;
		pthread_mutex_unlock(&p->lock);
		if (full)
			break;
		void *e = p->alloc(KMM_GFP_KERNEL, p->pool_data);
		if (!e)
			break;
		kmm_mempool_free(e, p);
	}
	return 0;
}

KMM_EXPORT int kmm_mempool_reserved(const struct kmm_mempool *cp)
{
	struct kmm_mempool *p = (struct kmm_mempool *)cp;
	pthread_mutex_lock(&p->lock);
	int n = p->curr_nr;
	pthread_mutex_unlock(&p->lock);
	return n;
}

KMM_EXPORT rare void kmm_mempool_destroy(struct kmm_mempool *p)
{
	if (!p)
		return;
	kmm_lock(&pools_lock);
	list_del(&p->list);
	kmm_unlock(&pools_lock);
	while (p->curr_nr > 0)
		p->free(remove_element(p), p->pool_data);
	pthread_cond_destroy(&p->wait);
	pthread_mutex_destroy(&p->lock);
	kmm_kfree(p->elements);
	kmm_kfree(p);
}

/* ---- element functions for the common pools ---- */

KMM_EXPORT void *kmm_mempool_alloc_slab(unsigned flags, void *cache)
{
	return kmm_cache_alloc(cache, flags);
}
KMM_EXPORT void kmm_mempool_free_slab(void *e, void *cache) { kmm_cache_free(cache, e); }
KMM_EXPORT void *kmm_mempool_kmalloc(unsigned flags, void *size)
{
	return kmm_kmalloc((size_t)(uintptr_t)size, flags);
}
KMM_EXPORT void kmm_mempool_kfree(void *e, void *size)
{
	(void)size;
	kmm_kfree(e);
}

KMM_EXPORT rare struct kmm_mempool *kmm_mempool_create_slab_pool(int min_nr, struct kmm_cache *c)
{
	if (!c) {
		errno = EINVAL;
		return NULL;
	}
	return kmm_mempool_create(min_nr, kmm_mempool_alloc_slab, kmm_mempool_free_slab, c);
}

KMM_EXPORT rare struct kmm_mempool *kmm_mempool_create_kmalloc_pool(int min_nr, size_t size)
{
	if (size == 0) {
		errno = EINVAL;
		return NULL;
	}
	return kmm_mempool_create(min_nr, kmm_mempool_kmalloc, kmm_mempool_kfree,
				  (void *)(uintptr_t)size);
}
