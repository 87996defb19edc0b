/* SPDX-License-Identifier: MIT */
/*
 * pagemap.h - O(1) address -> descriptor lookup (the kernel's sparsemem
 * section table, reached the way virt_to_page() reaches mem_map).
 *
 * The address space is cut into granules of KMM_SECTION_SIZE (4 MiB, one
 * max-order block).  Every granule kmm owns maps to one tagged entry:
 *   PAGEMAP_SECTION  a zone's mem_section (struct mem_section *)
 *   PAGEMAP_HUGE     a block mapped from the OS on its own (struct huge_block *)
 * Two levels: 8192 root slots of 16 GiB each, each a 4096-entry leaf of
 * 4 MiB granules, covering the 47-bit user address space.  Leaves are mapped
 * on demand and never freed, so a lookup needs no lock: entries are written
 * with release and read with acquire ordering.
 */
#ifndef KMM_PAGEMAP_H
#define KMM_PAGEMAP_H

#include <stdint.h>

#include "internal.h"

#define KMM_SECTION_SHIFT (KMM_PAGE_SHIFT + KMM_MAX_ORDER - 1) /* 22: 4 MiB */
#define KMM_SECTION_SIZE (1ul << KMM_SECTION_SHIFT)
#define KMM_SECTION_PAGES (1ul << (KMM_MAX_ORDER - 1))
#define KMM_VA_BITS 47

#define PAGEMAP_LEAF_SHIFT 12
#define PAGEMAP_LEAF_ENTRIES (1ul << PAGEMAP_LEAF_SHIFT)
#define PAGEMAP_ROOT_ENTRIES (1ul << (KMM_VA_BITS - KMM_SECTION_SHIFT - PAGEMAP_LEAF_SHIFT))

enum pagemap_kind { PAGEMAP_NONE = 0, PAGEMAP_SECTION = 1, PAGEMAP_HUGE = 2 };
#define PAGEMAP_KIND_MASK 3ul

extern KMM_HIDDEN uintptr_t *pagemap_root[PAGEMAP_ROOT_ENTRIES];

/* The tagged entry for @addr, or 0 if kmm owns nothing there.  No lock. */
static always_inline uintptr_t pagemap_lookup(const void *addr)
{
	uintptr_t a = (uintptr_t)addr;
	if (unlikely(a >> KMM_VA_BITS))
		return 0;
	uintptr_t *leaf = __atomic_load_n(&pagemap_root[a >> (KMM_SECTION_SHIFT + PAGEMAP_LEAF_SHIFT)],
					  __ATOMIC_ACQUIRE);
	if (unlikely(!leaf))
		return 0;
	return __atomic_load_n(&leaf[(a >> KMM_SECTION_SHIFT) & (PAGEMAP_LEAF_ENTRIES - 1)],
			       __ATOMIC_ACQUIRE);
}

static inline enum pagemap_kind pagemap_kind(uintptr_t e) { return (enum pagemap_kind)(e & PAGEMAP_KIND_MASK); }
static inline void *pagemap_ptr(uintptr_t e) { return (void *)(e & ~PAGEMAP_KIND_MASK); }

/*
 * Map every granule of [addr, addr+size) (granule aligned) to @desc with
 * @kind, or clear them with kind PAGEMAP_NONE.  Returns 0, or -1 with errno
 * ENOMEM if a leaf could not be mapped (nothing changed then).
 */
int pagemap_set(void *addr, size_t size, void *desc, enum pagemap_kind kind);

void pagemap_fork_prepare(void);
void pagemap_fork_parent(void);
void pagemap_fork_child(void);

/* Bytes of leaves mapped so far (metadata accounting). */
unsigned long pagemap_bytes(void);

#endif /* KMM_PAGEMAP_H */
