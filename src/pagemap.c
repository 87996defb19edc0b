/* SPDX-License-Identifier: MIT */
/*
 * pagemap.c - the address -> descriptor table (see pagemap.h).
 */
#include <errno.h>

#include "os.h"
#include "pagemap.h"

#define PAGEMAP_BYTES (PAGEMAP_ENTRIES * sizeof(uintptr_t))
#define PAGEMAP_PAGES (PAGEMAP_BYTES / KMM_PAGE_SIZE)
#define ENTRIES_PER_PAGE (KMM_PAGE_SIZE / sizeof(uintptr_t))

/* Read by every free(): a cache line of their own, never written after the first section. */
size_t pagemap_entries __attribute__((aligned(64)));
uintptr_t *pagemap_table;

/* Serialises the table's creation and its pages' opening.  Innermost lock (taken under zone locks). */
static kmm_lock_t pagemap_lock = KMM_LOCK_INIT;
/* Bit k: page k of the table is writable (pagemap_lock). */
static uint64_t pagemap_open[PAGEMAP_PAGES / 64] KMM_SPARSE_BSS;
static unsigned long pagemap_open_pages __attribute__((aligned(64))); /* pagemap_lock; read relaxed */

unsigned long pagemap_bytes(void)
{
	return __atomic_load_n(&pagemap_open_pages, __ATOMIC_RELAXED) * KMM_PAGE_SIZE;
}

/*
 * Make the table's entries [first, last] writable, mapping the table on
 * first use.  pagemap_lock held.  0, or -1 with errno ENOMEM (entries
 * already open stay open: they read as zero, so nothing changed).
 */
static int pagemap_open_range(size_t first, size_t last)
{
	if (!pagemap_table) {
		uintptr_t *t = os_reserve_readonly(PAGEMAP_BYTES);
		if (!t)
			return -1;
		__atomic_store_n(&pagemap_table, t, __ATOMIC_RELAXED);
		/* Publish the bound last: a lookup that passes it sees the table. */
		__atomic_store_n(&pagemap_entries, PAGEMAP_ENTRIES, __ATOMIC_RELEASE);
	}
	for (size_t pg = first / ENTRIES_PER_PAGE; pg <= last / ENTRIES_PER_PAGE; pg++) {
		if (pagemap_open[pg / 64] & (1ull << (pg % 64)))
			continue;
		if (os_make_writable(pagemap_table + pg * ENTRIES_PER_PAGE, KMM_PAGE_SIZE) != 0)
			return -1;
		pagemap_open[pg / 64] |= 1ull << (pg % 64);
		__atomic_store_n(&pagemap_open_pages, pagemap_open_pages + 1, __ATOMIC_RELAXED);
	}
	return 0;
}

int pagemap_set(void *addr, size_t size, void *desc, enum pagemap_kind kind)
{
	uintptr_t a = (uintptr_t)addr, end = a + size;
	KMM_ASSERT((a & (KMM_SECTION_SIZE - 1)) == 0 && (size & (KMM_SECTION_SIZE - 1)) == 0 && size);
	if (end >> KMM_VA_BITS || end < a) {
		errno = ENOMEM;
		return -1;
	}
	size_t first = a >> KMM_SECTION_SHIFT, last = (end >> KMM_SECTION_SHIFT) - 1;
	uintptr_t e = kind == PAGEMAP_NONE ? 0 : ((uintptr_t)desc | (uintptr_t)kind);
	kmm_lock(&pagemap_lock);
	/* Open every page first so that failure leaves the map unchanged. */
	int ret = kind == PAGEMAP_NONE && !pagemap_table ? 0 : pagemap_open_range(first, last);
	if (ret == 0 && pagemap_table)
		for (size_t i = first; i <= last; i++)
			__atomic_store_n(&pagemap_table[i], e, __ATOMIC_RELEASE);
	kmm_unlock(&pagemap_lock);
	return ret;
}

rare void pagemap_fork_prepare(void) { kmm_lock(&pagemap_lock); }
rare void pagemap_fork_parent(void) { kmm_unlock(&pagemap_lock); }
rare void pagemap_fork_child(void) { kmm_lock_init(&pagemap_lock); }
