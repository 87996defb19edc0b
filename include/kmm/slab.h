/* SPDX-License-Identifier: MIT */
/*
 * kmm/slab.h - object caches (SLUB-style slab allocator).
 *
 * A cache hands out objects of one size.  Objects live in slabs: buddy
 * blocks carved into equal slots.  Each thread allocates from its own active
 * slab without locks; a free from another thread is a single lock-free
 * compare-and-swap.
 */
#ifndef KMM_SLAB_H
#define KMM_SLAB_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kmm_cache;

/* Cache flags (the kernel's SLAB_* flags). */
#define KMM_SLAB_HWCACHE_ALIGN 0x0001ul /* align objects to a cache line */
#define KMM_SLAB_PANIC         0x0002ul /* abort with a message instead of returning NULL */
#define KMM_SLAB_POISON        0x0004ul /* accepted; enforced by the hardening issue */
#define KMM_SLAB_RED_ZONE      0x0008ul /* accepted; enforced by the hardening issue */
#define KMM_SLAB_VALID_FLAGS   0x000ful

/* Largest object a cache created by kmm_cache_create() may hold. */
#define KMM_CACHE_MAX_SIZE (1ul << 20)

/*
 * Create a cache of objects of @size bytes aligned to @align (0: the natural
 * word alignment; otherwise a power of two up to KMM_PAGE_SIZE).  @ctor, if
 * given, runs once per object when a new slab is made, not on every
 * allocation: objects must be returned in their constructed state.  @name is
 * copied.  Returns NULL with errno EINVAL for a NULL name, size 0 or above
 * KMM_CACHE_MAX_SIZE, a bad align or unknown flags; ENOMEM when out of
 * memory.  With KMM_SLAB_PANIC, failures abort with a message instead.
 */
struct kmm_cache *kmm_cache_create(const char *name, size_t size, size_t align,
                                   unsigned long flags, void (*ctor)(void *));

/* Allocate one object; NULL with errno ENOMEM (or EINVAL for bad flags). */
void *kmm_cache_alloc(struct kmm_cache *c, unsigned flags);

/* Free an object of @c.  NULL is ignored; a foreign pointer aborts. */
void kmm_cache_free(struct kmm_cache *c, void *obj);

/*
 * Flush the calling thread's slabs of @c and return every empty slab to the
 * page allocator.  Returns 0 when the cache holds no slab afterwards, 1 when
 * slabs remain (objects in use, or slabs cached by other threads).
 */
int kmm_cache_shrink(struct kmm_cache *c);

/*
 * Destroy @c.  No thread may use the cache concurrently or afterwards.  If
 * objects are still allocated, the cache name and the count are reported on
 * stderr and the slabs holding them are kept (leaked), never freed under
 * their users.
 */
void kmm_cache_destroy(struct kmm_cache *c);

/* Figures of one cache (those slabinfo prints). */
struct kmm_cache_stats {
	const char *name;
	size_t object_size;        /* size asked for */
	size_t size;               /* slot size: object plus metadata, aligned */
	size_t align;
	unsigned objects_per_slab;
	unsigned pages_per_slab;
	unsigned long active_objs; /* objects not on a shared free list (see slabinfo) */
	unsigned long num_objs;    /* slots in all slabs */
	unsigned long num_slabs;
	unsigned long active_slabs; /* slabs with at least one object not free */
};
void kmm_cache_stats(const struct kmm_cache *c, struct kmm_cache_stats *out);

/* Object size of the cache, as the kernel's kmem_cache_size(). */
size_t kmm_cache_size(const struct kmm_cache *c);

/* Print every cache in exactly the "slabinfo - version: 2.1" format. */
void kmm_slabinfo(FILE *out);

/* Check every slab of @c (or of all caches when NULL); 0 if sound, -1 otherwise. */
int kmm_slab_validate(struct kmm_cache *c);

#ifdef __cplusplus
}
#endif
#endif /* KMM_SLAB_H */
