/* SPDX-License-Identifier: MIT */
/*
 * pagemap.h - O(1) address -> descriptor lookup (the kernel's sparsemem
 * section table, reached the way virt_to_page() reaches mem_map).
 *
 * The address space is cut into granules of KMM_SECTION_SIZE (4 MiB, one
 * max-order block).  Every granule kmm owns maps to one tagged entry:
 *   PAGEMAP_SECTION  a zone's mem_section (struct mem_section *)
 *   PAGEMAP_HUGE     a block mapped from the OS on its own (struct huge_block *)
 * One flat array of 2^25 entries covers the 47-bit user address space, so a
 * lookup is a shift and one load, with no level to walk (free() does one on
 * every call).  Its 256 MiB are reserved read-only (zero pages, no commit
 * charge) and made writable a page at a time as sections arrive: a page of
 * entries covers 2 GiB of address space.  Entries are written with release
 * and read with acquire ordering, so a lookup needs no lock.
 *
 * Until the table exists pagemap_entries is 0 and every lookup misses: the
 * bound check that keeps a foreign pointer's high bits out of the table is
 * also what makes a free() before kmm's first allocation safe.
 */
#ifndef KMM_PAGEMAP_H
#define KMM_PAGEMAP_H

#include <stdint.h>

#include "internal.h"

#define KMM_SECTION_SHIFT (KMM_PAGE_SHIFT + KMM_MAX_ORDER - 1) /* 22: 4 MiB */
#define KMM_SECTION_SIZE (1ul << KMM_SECTION_SHIFT)
#define KMM_SECTION_PAGES (1ul << (KMM_MAX_ORDER - 1))
#define KMM_VA_BITS 47
#define PAGEMAP_ENTRIES (1ul << (KMM_VA_BITS - KMM_SECTION_SHIFT))

/*
 * Kinds are tags in an entry's low bits.  A section is 3, so that a test of
 * (e + 1) & 3 tells it from NONE (0) and HUGE (1) and its descriptor
 * addresses fold the tag into their displacements.
 */
enum pagemap_kind { PAGEMAP_NONE = 0, PAGEMAP_HUGE = 1, PAGEMAP_SECTION = 3 };
#define PAGEMAP_KIND_MASK 3ul

struct mem_section;
extern KMM_HIDDEN uintptr_t *pagemap_table;
extern KMM_HIDDEN size_t pagemap_entries; /* 0 until pagemap_table is mapped */

/* The tagged entry for @addr, or 0 if kmm owns nothing there.  No lock. */
static always_inline uintptr_t pagemap_lookup(const void *addr)
{
	size_t i = (uintptr_t)addr >> KMM_SECTION_SHIFT;
	if (unlikely(i >= __atomic_load_n(&pagemap_entries, __ATOMIC_ACQUIRE)))
		return 0;
	return __atomic_load_n(&pagemap_table[i], __ATOMIC_ACQUIRE);
}

static inline enum pagemap_kind pagemap_kind(uintptr_t e) { return (enum pagemap_kind)(e & PAGEMAP_KIND_MASK); }
static inline void *pagemap_ptr(uintptr_t e) { return (void *)(e & ~PAGEMAP_KIND_MASK); }
/* For the fast paths: is @e a section, and its mem_section (tag subtracted, not masked). */
static always_inline bool pagemap_is_section(uintptr_t e) { return ((e + 1) & PAGEMAP_KIND_MASK) == 0; }
static always_inline struct mem_section *pagemap_section(uintptr_t e)
{
	return (struct mem_section *)(e - PAGEMAP_SECTION);
}

/*
 * Map every granule of [addr, addr+size) (granule aligned) to @desc with
 * @kind, or clear them with kind PAGEMAP_NONE.  Returns 0, or -1 with errno
 * ENOMEM if a leaf could not be mapped (nothing changed then).
 */
int pagemap_set(void *addr, size_t size, void *desc, enum pagemap_kind kind);

void pagemap_fork_prepare(void);
void pagemap_fork_parent(void);
void pagemap_fork_child(void);

/* Bytes of the table made writable so far (metadata accounting). */
unsigned long pagemap_bytes(void);

#endif /* KMM_PAGEMAP_H */
