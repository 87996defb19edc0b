/* SPDX-License-Identifier: MIT */
/*
 * kmm/page.h - the page allocator (buddy system).
 *
 * Memory is handed out in blocks of 2^order pages of KMM_PAGE_SIZE bytes,
 * order 0 .. KMM_MAX_ORDER-1.  A block of order k is aligned to 2^k pages.
 */
#ifndef KMM_PAGE_H
#define KMM_PAGE_H

#include <stddef.h>
#include <stdio.h>

#define KMM_PAGE_SHIFT 12
#define KMM_PAGE_SIZE  (1ul << KMM_PAGE_SHIFT)
/* Orders 0 .. KMM_MAX_ORDER-1, as the kernel's MAX_ORDER of 11 (4 MiB blocks). */
#define KMM_MAX_ORDER 11

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Allocate 2^order contiguous, naturally aligned pages.  Returns NULL with
 * errno EINVAL for order >= KMM_MAX_ORDER or unknown flags, ENOMEM when no
 * memory can be had under the given flags.
 */
void *kmm_alloc_pages(unsigned flags, unsigned order);

/*
 * Free a block from kmm_alloc_pages().  order must be the order it was
 * allocated with.  NULL is ignored.  A pointer kmm did not hand out, a wrong
 * order or a double free is reported on stderr and aborts.
 */
void kmm_free_pages(void *addr, unsigned order);

/* Convenience forms that take and return a single page. */
static inline void *kmm_get_free_page(unsigned flags) { return kmm_alloc_pages(flags, 0); }
static inline void kmm_free_page(void *addr) { kmm_free_pages(addr, 0); }

/* Zone counters, in pages, for the zone that serves kmm_alloc_pages(). */
struct kmm_zone_stats {
	unsigned long managed_pages;        /* pages of the zone's sections on its lists or in use */
	unsigned long free_pages;           /* pages on free_area lists */
	unsigned long pcp_pages;            /* pages on per-thread pcp lists */
	unsigned long resident_pages;       /* pages not decommitted (an upper bound of RSS) */
	unsigned long nr_free[KMM_MAX_ORDER]; /* free blocks per order */
	unsigned long nr_sections;          /* sections mapped */
	unsigned long sections_added;       /* sections ever added */
	unsigned long sections_released;    /* sections ever given back to the OS */
	unsigned long peak_busy_pages;      /* the most pages ever allocated or on pcp lists */
	/*
	 * Pages of the newest section not handed to the free lists yet (they
	 * go a few pageblocks at a time, as needed): free, but in no block.
	 */
	unsigned long deferred_pages;
};
void kmm_zone_stats(struct kmm_zone_stats *out);

/*
 * Give memory back to the OS now: drains the calling thread's page caches,
 * decommits every free block of at least the decommit order and the whole
 * free pages inside malloc's mid-heap arenas, and releases wholly free
 * sections.  Returns the number of pages given back.
 */
unsigned long kmm_trim(void);

/* Return the calling thread's cached pages and slabs to the shared lists. */
void kmm_drain_local(void);

/*
 * Check every invariant of the page allocator (free lists, nr_free, block
 * alignment, merge completeness, page flags).  Meant for tests and debug
 * builds; the caller must ensure no other thread is using kmm.  Returns 0
 * when everything holds; otherwise prints what is wrong to stderr and
 * returns -1.
 */
int kmm_buddy_validate(void);

/* Print the zones in exactly the /proc/buddyinfo format, one line per zone. */
void kmm_buddyinfo(FILE *out);

/*
 * Print the zone in the /proc/pagetypeinfo format, kmm's two kinds of
 * pageblock (Small: slabs and pcp blocks; Large: page runs; Kindless: wholly
 * free) as the kernel's migratetypes: free blocks per kind and order, and
 * pageblocks per kind.  A third table, kmm's own, counts the free pages per
 * kind and order that are still resident.
 */
void kmm_pagetypeinfo(FILE *out);

#ifdef __cplusplus
}
#endif
#endif /* KMM_PAGE_H */
