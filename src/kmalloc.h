/* SPDX-License-Identifier: MIT */
/*
 * kmalloc.h - the kmalloc layer's internal interface, used by the malloc
 * ABI (malloc.c) and the statistics.  Every function that takes a pointer
 * checks it and aborts with a report naming @fn if kmm did not hand it out.
 */
#ifndef KMM_KMALLOC_INTERNAL_H
#define KMM_KMALLOC_INTERNAL_H

#include "internal.h"
#include "slab.h"

/*
 * The size classes (kmalloc.c lists them): 8, then 16-byte steps to 128,
 * then four per doubling as the kernel's and jemalloc's, plus 1152, 2304 and
 * 4608 - a power of two and a header, the commonest shape of a buffer
 * (SQLite's 4 KiB pages come as 4104 and 4368 bytes: 25% lost in 5120).
 */
#define NR_KMALLOC_CLASSES 48
#define KMALLOC_INDEX_8K 35 /* the class of 8 KiB; above it, four per doubling */
#define KMALLOC_MAX_PAGES_SIZE (KMM_PAGE_SIZE << (KMM_MAX_ORDER - 1))

/* The size-class caches; cache ids equal class indexes. */
extern KMM_HIDDEN struct kmm_cache kmalloc_caches[NR_KMALLOC_CLASSES];

/* Class index of sizes 1..8 KiB by (size + 15) / 16 (filled by kmalloc_init). */
extern KMM_HIDDEN uint8_t kmalloc_small_index[8192 / 16 + 1];

/* Class index of @size (1 .. KMM_KMALLOC_MAX_CACHE_SIZE). */
static always_inline unsigned kmalloc_index(size_t size)
{
	if (size <= 8192) {
		if (unlikely(size <= 8))
			return 0; /* kmalloc-8: (size + 15) / 16 cannot tell 8 from 16 */
		return kmalloc_small_index[(size + 15) >> 4];
	}
	unsigned b = ilog2_ul(size - 1);                    /* size in (2^b, 2^(b+1)], b >= 13 */
	unsigned k = (unsigned)((size - 1) >> (b - 2)) - 3; /* quarter 1..4 */
	return KMALLOC_INDEX_8K + (b - 13) * 4 + k;
}

/*
 * Where in a slab_thread the slot of the class for sizes up to 16 * j
 * bytes, and at least 16 (malloc's smallest class), lies: one load takes
 * malloc's fast path from a size to its slot.
 */
#define KMALLOC_SLOT_TABLE_MAX 8192
extern KMM_HIDDEN uint16_t kmalloc_slot_offset[KMALLOC_SLOT_TABLE_MAX / 16 + 1];
/*
 * The same above 8 KiB, up to KMM_KMALLOC_MAX_CACHE_SIZE, by 2 KiB steps
 * (every class boundary there is a multiple of 2 KiB): one more compare on
 * malloc's path for the sizes that need it, none for the others.
 */
#define KMALLOC_SLOT_BIG_SHIFT 11
extern KMM_HIDDEN uint16_t kmalloc_slot_offset_big[(KMM_KMALLOC_MAX_CACHE_SIZE >> KMALLOC_SLOT_BIG_SHIFT) + 1];

/* @owner: malloc_owner (a slab_thread's address). */
static always_inline struct kmem_cache_cpu *kmalloc_slot_of(char *owner, size_t size)
{
	return (struct kmem_cache_cpu *)(owner + kmalloc_slot_offset[(size + 15) >> 4]);
}
/* For 8 KiB < @size <= KMM_KMALLOC_MAX_CACHE_SIZE. */
static always_inline struct kmem_cache_cpu *kmalloc_slot_of_big(char *owner, size_t size)
{
	size_t j = (size + (1ul << KMALLOC_SLOT_BIG_SHIFT) - 1) >> KMALLOC_SLOT_BIG_SHIFT;
	return (struct kmem_cache_cpu *)(owner + kmalloc_slot_offset_big[j]);
}
/* Either, for 0 <= @size <= KMM_KMALLOC_MAX_CACHE_SIZE (malloc() inlines the choice itself). */
static always_inline struct kmem_cache_cpu *kmalloc_slot_for(char *owner, size_t size)
{
	return size <= KMALLOC_SLOT_TABLE_MAX ? kmalloc_slot_of(owner, size)
					      : kmalloc_slot_of_big(owner, size);
}

/*
 * The pop for a kmalloc class of 16 bytes or more: such caches have their
 * free pointer at offset 0 and a canary (checked in kmalloc_init), so the
 * cache itself need not be read.
 */
static always_inline void *kmalloc_cpu_pop(struct kmem_cache_cpu *c)
{
	void **obj = c->freelist;
	if (likely(obj != NULL)) {
		c->freelist = obj[0];
		c->room++;
		obj[1] = NULL; /* the canary word */
	}
	return obj;
}

/* Allocate @size (> 0) bytes aligned to @align (a power of two; 0 or <= 16: default). */
/*
 * Internal gfp bit (outside KMM_GFP_VALID_MASK): a malloc-family request,
 * which kmalloc_core() serves from the mid heap where its size falls there
 * (midheap.h); it is cleared before a call reaches the slab or page layer.
 */
#define KMALLOC_GFP_MID 0x100u
_Static_assert((KMALLOC_GFP_MID & KMM_GFP_VALID_MASK) == 0, "an internal gfp bit");
void *kmalloc_core(size_t size, size_t align, unsigned flags);
/* Free a non-NULL pointer. */
void kfree_checked(void *p, const char *fn);
/* Usable size of a non-NULL pointer. */
size_t ksize_checked(const void *p, const char *fn);
/*
 * Resize a non-NULL pointer to @size (> 0) bytes, in place when possible
 * (slab slack, free pages after a run, mremap of a huge block).  NULL with
 * errno ENOMEM leaves @p intact.
 */
void *krealloc_checked(void *p, size_t size, unsigned flags, const char *fn);

struct kmalloc_totals {
	unsigned long long slab_bytes;   /* slots in kmalloc slabs, in use (SLUB-style count) */
	unsigned long long mid_bytes;    /* malloc's mid-size blocks, headers included */
	unsigned long mid_blocks;
	unsigned long long mid_arena_bytes; /* the mid heap's arenas */
	unsigned long long large_bytes;  /* page runs handed out */
	unsigned long large_blocks;
	unsigned long long huge_bytes;   /* blocks mapped on their own */
	unsigned long long huge_mapped;  /* their mappings, and freed ones kept for reuse */
	unsigned long huge_blocks;
};
void kmalloc_totals(struct kmalloc_totals *t);
/* Class i's cache (for per-class statistics); NULL past the last. */
struct kmm_cache *kmalloc_cache(unsigned i);

#endif /* KMM_KMALLOC_INTERNAL_H */
