/* SPDX-License-Identifier: MIT */
/*
 * kmm/mempool.h - memory pools: a guaranteed reserve of elements.
 *
 * A pool keeps min_nr elements in reserve.  kmm_mempool_alloc() first asks
 * the underlying allocator (without letting it block or call the OS); when
 * that fails it takes an element from the reserve; when the reserve is empty
 * it retries with the caller's flags, and a caller that may wait
 * (KMM_GFP_WAIT, part of KMM_GFP_KERNEL) sleeps until an element is freed
 * back to the pool.  KMM_GFP_NOWAIT/ATOMIC callers get NULL instead.
 */
#ifndef KMM_MEMPOOL_H
#define KMM_MEMPOOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kmm_mempool;
struct kmm_cache;

typedef void *(*kmm_mempool_alloc_t)(unsigned flags, void *data);
typedef void (*kmm_mempool_free_t)(void *elem, void *data);

/* NULL with errno EINVAL for min_nr < 0 or NULL functions; ENOMEM if the reserve can't be filled. */
struct kmm_mempool *kmm_mempool_create(int min_nr, kmm_mempool_alloc_t alloc_fn,
                                       kmm_mempool_free_t free_fn, void *data);
struct kmm_mempool *kmm_mempool_create_slab_pool(int min_nr, struct kmm_cache *c);
struct kmm_mempool *kmm_mempool_create_kmalloc_pool(int min_nr, size_t size);
void *kmm_mempool_alloc(struct kmm_mempool *p, unsigned flags);
void kmm_mempool_free(void *elem, struct kmm_mempool *p);
/* Grow or shrink the reserve to new_min_nr; 0 or -1 with errno. */
int kmm_mempool_resize(struct kmm_mempool *p, int new_min_nr);
/* Elements in reserve now. */
int kmm_mempool_reserved(const struct kmm_mempool *p);
/* Frees the reserve; every element must have been freed back first. */
void kmm_mempool_destroy(struct kmm_mempool *p);

/* The element functions behind the helpers, usable with kmm_mempool_create(). */
void *kmm_mempool_alloc_slab(unsigned flags, void *cache);
void kmm_mempool_free_slab(void *elem, void *cache);
void *kmm_mempool_kmalloc(unsigned flags, void *size);
void kmm_mempool_kfree(void *elem, void *size);

#ifdef __cplusplus
}
#endif
#endif /* KMM_MEMPOOL_H */
