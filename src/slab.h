/* SPDX-License-Identifier: MIT */
/*
 * slab.h - the slab layer's internal interface (used by kmalloc and init).
 */
#ifndef KMM_SLAB_INTERNAL_H
#define KMM_SLAB_INTERNAL_H

#include "internal.h"
#include "page_alloc.h"

/*
 * A thread's view of one cache (the kernel's struct kmem_cache_cpu).  Only
 * the owning thread touches it, except kmm_cache_destroy() under the
 * caller's promise that nobody uses the cache.
 */
struct kmem_cache_cpu {
	void *freelist;        /* private free objects of the active slab */
	struct page *slab;     /* active slab (frozen by this thread), or NULL */
	struct page *partial;  /* frozen slabs with free objects, via slab_list.next */
	unsigned nr_partial;   /* slabs on ->partial */
};

struct kmm_cache {
	/* Read-mostly; set at creation. */
	unsigned id;            /* index of this cache's kmem_cache_cpu in every thread */
	unsigned size;          /* slot stride: object, free pointer, padding */
	unsigned object_size;   /* bytes asked for */
	unsigned offset;        /* free pointer offset inside a slot */
	unsigned align;
	unsigned order;         /* slab = 2^order pages */
	unsigned objects;       /* slots per slab */
	unsigned cpu_partial_slabs; /* most slabs a thread keeps on ->partial */
	unsigned long min_partial;  /* empty slabs kept on the node partial list */
	uint64_t reciprocal;    /* ceil(2^44 / size): offset -> index without a divide */
	unsigned long flags;
	void (*ctor)(void *);
	const char *name;
	bool name_allocated;    /* name is a kmalloc'd copy */
	bool canary;            /* free objects carry a canary in their second word */
	bool is_kmalloc;

	/* The node: list_lock guards partial and nr_partial. */
	kmm_lock_t list_lock;
	struct list_head partial;   /* unfrozen slabs with free objects */
	unsigned long nr_partial;

	/* Counters, updated atomically (relaxed) on slab creation and discard. */
	unsigned long nr_slabs;
	unsigned long total_objects;

	struct list_head list;      /* slab_caches (slab_mutex) */
};

#define SLAB_MAX_CACHES 4096

/* Allocate/free through a cache; used by kmalloc with the checks done. */
void *slab_alloc(struct kmm_cache *s, unsigned flags);
void slab_free_checked(struct kmm_cache *s, struct page *slab, void *obj, const char *fn);
/* Abort with a report naming @fn unless @obj is the start of a slot of @slab. */
void slab_check_object(const struct kmm_cache *s, struct page *slab, const void *obj,
		       const char *fn);
/* The slab head holding @obj, or NULL (invalid pointer); @fn names the caller in reports. */
struct page *slab_of_object(const void *obj, struct page *page, const char *fn);

/* Set up a statically allocated cache (kmalloc caches, the cache of caches). */
int slab_cache_setup(struct kmm_cache *s, const char *name, size_t size, size_t align,
		     unsigned long flags, void (*ctor)(void *), unsigned id);

void slab_init(void);
/* Flush the calling thread's slabs of every cache. */
void slab_flush_local(void);
/* Give every cache's empty slabs back; returns slabs freed. */
unsigned long slab_shrink_all(void);
void slab_thread_exit(void);
/* Bytes of slots in use over all caches (SLUB's active_objs * size). */
unsigned long long slab_bytes_in_use(void);
/* For fork: take every slab lock (prepare), release them (parent), reset (child). */
void slab_fork_prepare(void);
void slab_fork_parent(void);
void slab_fork_child(void);
void slab_fork_child_reclaim(void);

#endif /* KMM_SLAB_INTERNAL_H */
