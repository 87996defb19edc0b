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
	uintptr_t slab_mask;    /* slab bytes - 1: an object's offset in its slab is addr & mask */
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

	/* Slabs of the cache, updated atomically (relaxed) on creation and discard. */
	unsigned long nr_slabs;

	struct list_head list;      /* slab_caches (slab_mutex) */
};

#define SLAB_MAX_CACHES 4096

/* ---- what the fast paths inline (defined in slab.c) ---- */

static always_inline void *get_freepointer(const struct kmm_cache *s, void *obj)
{
	return *(void **)((char *)obj + s->offset);
}
static always_inline void set_freepointer(const struct kmm_cache *s, void *obj, void *next)
{
	*(void **)((char *)obj + s->offset) = next;
}

/*
 * Double-free detection.  A free object of a cache without constructor
 * (whose free pointer is at offset 0) and of at least 16 bytes carries, in
 * its second word, a canary: a per-process secret xor the object's address.
 * Allocation clears it; a free that finds it set is a double free (an
 * object freed while it sits on a free list), caught at the cost of one load
 * and one store.  A false alarm needs user data equal to a secret 64-bit
 * value, and a use-after-free write that clobbers the canary only hides the
 * next double free, it never causes a false one.  Objects at the head of a
 * freelist are also caught in every cache (obj == freelist head).
 */

extern KMM_HIDDEN uintptr_t free_magic;

static always_inline uintptr_t *canary_word(void *obj) { return (uintptr_t *)obj + 1; }
static always_inline uintptr_t canary_of(const void *obj) { return free_magic ^ (uintptr_t)obj; }

static always_inline void canary_on_free(const struct kmm_cache *s, void *obj, const char *fn)
{
	if (s->canary) {
		KMM_CHECK(*canary_word(obj) != canary_of(obj), fn, "double free %p", obj);
		*canary_word(obj) = canary_of(obj);
	}
}

#define SLOTS_PER_CHUNK 128
#define SLAB_CHUNKS (SLAB_MAX_CACHES / SLOTS_PER_CHUNK)

/*
 * A thread's slab state: kmem_cache_cpu slots indexed by cache id, in chunks
 * of 128 made on first use (chunk 0, which holds the static caches, is
 * inline).  Chunk pointers are published with release stores because
 * kmm_cache_destroy() reads them from other threads.
 */
struct slab_thread {
	struct kmem_cache_cpu *chunk[SLAB_CHUNKS];
	struct list_head registry; /* slab_threads (slab_threads_lock) */
	struct kmem_cache_cpu first[SLOTS_PER_CHUNK];
};
#define SLAB_THREAD_ORDER 1
_Static_assert(sizeof(struct slab_thread) <= (KMM_PAGE_SIZE << SLAB_THREAD_ORDER), "slab_thread");
_Static_assert(sizeof(struct kmem_cache_cpu) * SLOTS_PER_CHUNK <= KMM_PAGE_SIZE, "chunk");

/* The calling thread's slab state (NULL until its first slab allocation). */
extern KMM_HIDDEN __thread struct slab_thread *slab_tls
	__attribute__((tls_model("initial-exec")));

static always_inline struct kmem_cache_cpu *cpu_slot(struct slab_thread *t, unsigned id)
{
	struct kmem_cache_cpu *chunk =
		__atomic_load_n(&t->chunk[id / SLOTS_PER_CHUNK], __ATOMIC_ACQUIRE);
	return chunk ? &chunk[id % SLOTS_PER_CHUNK] : NULL;
}

/*
 * Abort unless @obj is the start of a slot of @slab.  Slabs are buddy blocks,
 * aligned to their size, so the offset is a mask; the index comes from a
 * multiplication by the reciprocal (exact for offsets below 2^23).
 */
static always_inline void check_object(const struct kmm_cache *s, struct page *slab,
				       const void *obj, const char *fn)
{
	(void)slab;
	size_t off = (uintptr_t)obj & s->slab_mask;
	size_t idx = (size_t)(((uint64_t)off * s->reciprocal) >> 44);
	KMM_CHECK(idx * s->size == off && idx < s->objects, fn,
		  "invalid pointer %p (not the start of an object of cache %s)", obj, s->name);
}

/*
 * The allocation fast path on a known slot: pop the thread's private
 * freelist.  NULL when it is empty (the caller takes the slow path).
 */
static always_inline void *slab_cpu_pop(const struct kmm_cache *s, struct kmem_cache_cpu *c)
{
	void *obj = c->freelist;
	if (likely(obj != NULL)) {
		c->freelist = get_freepointer(s, obj);
		if (s->canary)
			*canary_word(obj) = 0;
	}
	return obj;
}

/*
 * The free fast path: an object of the thread's own active slab goes on its
 * private freelist.  Returns false (nothing done) for any other slab.  The
 * caller has checked that @obj starts a slot of @slab.
 */
static always_inline bool slab_cpu_push(const struct kmm_cache *s, struct kmem_cache_cpu *c,
					struct page *slab, void *obj, const char *fn)
{
	if (unlikely(c->slab != slab))
		return false;
	KMM_CHECK(obj != c->freelist, fn, "double free %p", obj);
	canary_on_free(s, obj, fn);
	set_freepointer(s, obj, c->freelist);
	c->freelist = obj;
	return true;
}

/* Allocate/free through a cache; used by kmalloc with the checks done. */
void *slab_alloc(struct kmm_cache *s, unsigned flags);
/* Free an object whose pointer the caller has checked (slab_check_object). */
void slab_free_object(struct kmm_cache *s, struct page *slab, void *obj, const char *fn);
/* Abort with a report naming @fn unless @obj is the start of a slot of @slab. */
void slab_check_object(const struct kmm_cache *s, struct page *slab, const void *obj,
		       const char *fn);

/* Every free that is not to the thread's active slab (the kernel's __slab_free). */
void slab_free_slow(struct kmm_cache *s, struct page *slab, void *obj, const char *fn);

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
