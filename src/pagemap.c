/* SPDX-License-Identifier: MIT */
/*
 * pagemap.c - the address -> descriptor table (see pagemap.h).
 */
#include <errno.h>

#include "os.h"
#include "pagemap.h"

uintptr_t *pagemap_root[PAGEMAP_ROOT_ENTRIES];

/* Serialises leaf creation.  Lock order: innermost (taken under zone locks). */
static kmm_lock_t pagemap_lock = KMM_LOCK_INIT;
static unsigned long pagemap_leaves; /* leaves mapped (pagemap_lock; read relaxed) */

unsigned long pagemap_bytes(void)
{
	return __atomic_load_n(&pagemap_leaves, __ATOMIC_RELAXED) * PAGEMAP_LEAF_ENTRIES *
	       sizeof(uintptr_t);
}

static uintptr_t *pagemap_leaf(uintptr_t a, bool create)
{
	size_t ri = a >> (KMM_SECTION_SHIFT + PAGEMAP_LEAF_SHIFT);
	uintptr_t *leaf = __atomic_load_n(&pagemap_root[ri], __ATOMIC_ACQUIRE);
	if (leaf || !create)
		return leaf;
	kmm_lock(&pagemap_lock);
	leaf = pagemap_root[ri];
	if (!leaf) {
		leaf = os_map_aligned(PAGEMAP_LEAF_ENTRIES * sizeof(uintptr_t), KMM_PAGE_SIZE);
		if (leaf) {
			__atomic_store_n(&pagemap_root[ri], leaf, __ATOMIC_RELEASE);
			__atomic_store_n(&pagemap_leaves, pagemap_leaves + 1, __ATOMIC_RELAXED);
		}
	}
	kmm_unlock(&pagemap_lock);
	return leaf;
}

int pagemap_set(void *addr, size_t size, void *desc, enum pagemap_kind kind)
{
	uintptr_t a = (uintptr_t)addr, end = a + size;
	KMM_ASSERT((a & (KMM_SECTION_SIZE - 1)) == 0 && (size & (KMM_SECTION_SIZE - 1)) == 0);
	if (end >> KMM_VA_BITS) {
		errno = ENOMEM;
		return -1;
	}
	/* Create every leaf first so that failure leaves the map unchanged. */
	if (kind != PAGEMAP_NONE)
		for (uintptr_t g = a; g < end; g += KMM_SECTION_SIZE)
			if (!pagemap_leaf(g, true))
				return -1;
	uintptr_t e = kind == PAGEMAP_NONE ? 0 : ((uintptr_t)desc | (uintptr_t)kind);
	for (uintptr_t g = a; g < end; g += KMM_SECTION_SIZE) {
		uintptr_t *leaf = pagemap_leaf(g, false);
		if (leaf)
			__atomic_store_n(&leaf[(g >> KMM_SECTION_SHIFT) & (PAGEMAP_LEAF_ENTRIES - 1)], e,
					 __ATOMIC_RELEASE);
	}
	return 0;
}

void pagemap_fork_prepare(void) { kmm_lock(&pagemap_lock); }
void pagemap_fork_parent(void) { kmm_unlock(&pagemap_lock); }
void pagemap_fork_child(void) { kmm_lock_init(&pagemap_lock); }
