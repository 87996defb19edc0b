/* SPDX-License-Identifier: MIT */
/*
 * kmalloc.c - allocation by size over the slab caches, the buddy allocator
 * and the OS.
 *
 * Size classes.  8, 16, 32, 48, 64, then four classes per doubling:
 * 2^k * {5/4, 6/4, 7/4, 8/4} for 2^k = 64 .. 16384, ending at 32 KiB
 * (41 classes, "kmalloc-8" .. "kmalloc-32k").  A request of n bytes gets the
 * smallest class >= n.  Worst-case internal waste:
 *   n <= 64:    at most 15 bytes (17 -> 32 is the worst);
 *   n > 64:     class - n < 2^k / 4 <= n / 4, i.e. under 25% of the request
 *               (and under 20% of the slot).
 * Every class above 8 is a multiple of 16, so results are 16-byte aligned;
 * slabs are buddy blocks aligned to their size, so power-of-two classes are
 * naturally aligned.
 *
 * Above 32 KiB, up to a max-order block (4 MiB): whole pages from the buddy
 * allocator, exactly as many as needed (the covering block's unused tail
 * pages go straight back), so the waste is under one page (< 12.5%).
 * Power-of-two sizes here are naturally aligned too (the block is).
 *
 * Above 4 MiB: a mapping of its own from the OS, 4 MiB aligned, registered
 * in the pagemap so that kfree() and ksize() find it in O(1).  Waste: under
 * one page.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "os.h"
#include "slab.h"

#define KMALLOC_SHIFT_SMALL 6 /* classes <= 64 are listed by hand */
#define NR_KMALLOC_CLASSES 41
#define KMALLOC_MAX_PAGES_SIZE (KMM_PAGE_SIZE << (KMM_MAX_ORDER - 1))

static struct kmm_cache kmalloc_caches[NR_KMALLOC_CLASSES];
static size_t kmalloc_class_size[NR_KMALLOC_CLASSES];
static char kmalloc_names[NR_KMALLOC_CLASSES][32];

/* Class index for 1 <= size <= 64, by (size - 1) / 8. */
static const uint8_t small_index[8] = {0, 1, 2, 2, 3, 3, 4, 4};

/* Class index of @size (1 .. KMM_KMALLOC_MAX_CACHE_SIZE). */
static always_inline unsigned kmalloc_index(size_t size)
{
	if (size <= 64)
		return small_index[(size - 1) >> 3];
	unsigned b = ilog2_ul(size - 1); /* size in (2^b, 2^(b+1)] */
	unsigned k = (unsigned)((size - 1) >> (b - 2)) - 3; /* quarter 1..4 */
	return 5 + (b - KMALLOC_SHIFT_SMALL) * 4 + (k - 1);
}

/* A block mapped from the OS on its own. */
struct huge_block {
	void *addr;
	size_t size;   /* usable bytes (page multiple) */
};
static struct kmm_cache huge_block_cache;
#define HUGE_CACHE_ID (NR_KMALLOC_CLASSES)

void kmalloc_init(void);
void kmalloc_init(void)
{
	static const size_t small[5] = {8, 16, 32, 48, 64};
	unsigned i = 0;
	for (; i < 5; i++)
		kmalloc_class_size[i] = small[i];
	for (size_t base = 64; i < NR_KMALLOC_CLASSES; base *= 2)
		for (unsigned q = 5; q <= 8 && i < NR_KMALLOC_CLASSES; q++)
			kmalloc_class_size[i++] = base * q / 4;
	for (i = 0; i < NR_KMALLOC_CLASSES; i++) {
		size_t sz = kmalloc_class_size[i];
		if (sz >= 1024 && sz % 1024 == 0)
			snprintf(kmalloc_names[i], sizeof(kmalloc_names[i]), "kmalloc-%zuk", sz / 1024);
		else
			snprintf(kmalloc_names[i], sizeof(kmalloc_names[i]), "kmalloc-%zu", sz);
		size_t align = sz >= 16 ? 16 : 8;
		if (slab_cache_setup(&kmalloc_caches[i], kmalloc_names[i], sz, align, 0, NULL, i) != 0)
			kmm_fatal("kmalloc_init", "cannot set up %s", kmalloc_names[i]);
		kmalloc_caches[i].is_kmalloc = true;
	}
	slab_cache_setup(&huge_block_cache, "kmalloc-huge-desc", sizeof(struct huge_block), 0, 0,
			 NULL, HUGE_CACHE_ID);
	huge_block_cache.is_kmalloc = true;
}

static noinline void *kmalloc_huge(size_t size, unsigned flags)
{
	if (!(flags & KMM_GFP_DIRECT_OS)) {
		errno = ENOMEM;
		return NULL;
	}
	size_t bytes = ALIGN_UP(size, KMM_PAGE_SIZE);
	struct huge_block *hb = slab_alloc(&huge_block_cache, flags & ~KMM_GFP_ZERO);
	if (!hb)
		return NULL;
	void *p = os_map_aligned(bytes, KMM_SECTION_SIZE);
	if (!p)
		goto fail;
	hb->addr = p;
	hb->size = bytes;
	if (pagemap_set(p, ALIGN_UP(bytes, KMM_SECTION_SIZE), hb, PAGEMAP_HUGE) != 0) {
		os_unmap(p, bytes);
		goto fail;
	}
	return p; /* fresh mappings read as zero: KMM_GFP_ZERO needs nothing */
fail:
	kmm_cache_free(&huge_block_cache, hb);
	errno = ENOMEM;
	return NULL;
}

static void kfree_huge(struct huge_block *hb)
{
	pagemap_set(hb->addr, ALIGN_UP(hb->size, KMM_SECTION_SIZE), NULL, PAGEMAP_NONE);
	os_unmap(hb->addr, hb->size);
	kmm_cache_free(&huge_block_cache, hb);
}

static always_inline void *kmalloc_flags_ok(size_t size, unsigned flags)
{
	if (likely(size <= KMM_KMALLOC_MAX_CACHE_SIZE)) {
		if (unlikely(size == 0))
			return KMM_ZERO_SIZE_PTR;
		return slab_alloc(&kmalloc_caches[kmalloc_index(size)], flags);
	}
	if (size <= KMALLOC_MAX_PAGES_SIZE) {
		struct page *page =
			alloc_pages_exact(flags, (size + KMM_PAGE_SIZE - 1) >> KMM_PAGE_SHIFT);
		return page ? page_to_virt(page) : NULL;
	}
	if (size > PTRDIFF_MAX) {
		errno = ENOMEM;
		return NULL;
	}
	return kmalloc_huge(size, flags);
}

KMM_EXPORT void *kmm_kmalloc(size_t size, unsigned flags)
{
	if (unlikely(flags & ~KMM_GFP_VALID_MASK)) {
		errno = EINVAL;
		return NULL;
	}
	kmm_ensure_init();
	return kmalloc_flags_ok(size, flags);
}

KMM_EXPORT void *kmm_kzalloc(size_t size, unsigned flags)
{
	return kmm_kmalloc(size, flags | KMM_GFP_ZERO);
}

KMM_EXPORT void *kmm_kcalloc(size_t n, size_t size, unsigned flags)
{
	size_t bytes;
	if (__builtin_mul_overflow(n, size, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	return kmm_kmalloc(bytes, flags | KMM_GFP_ZERO);
}

/*
 * What kind of block @p is, checked: aborts with a message naming @fn for a
 * pointer kmalloc did not return.  Exactly one of *slab, *large, *huge is set.
 */
static void classify(const void *p, const char *fn, struct page **slab, struct page **large,
		     struct huge_block **huge)
{
	*slab = *large = NULL;
	*huge = NULL;
	uintptr_t e = pagemap_lookup(p);
	if (pagemap_kind(e) == PAGEMAP_HUGE) {
		struct huge_block *hb = pagemap_ptr(e);
		KMM_CHECK(hb->addr == p, fn, "invalid pointer %p", p);
		*huge = hb;
		return;
	}
	KMM_CHECK(pagemap_kind(e) == PAGEMAP_SECTION, fn, "invalid pointer %p", p);
	struct page *page = virt_to_page(p);
	if (page->flags == (PG_head | PG_large)) {
		KMM_CHECK(((uintptr_t)p & (KMM_PAGE_SIZE - 1)) == 0, fn, "invalid pointer %p", p);
		*large = page;
		return;
	}
	struct page *head = compound_head(page);
	KMM_CHECK(head->flags & PG_slab, fn, "invalid pointer %p%s", p,
		  (page->flags & (PG_buddy | PG_pcp)) ? " (double free?)" : "");
	*slab = head;
}

static always_inline void kfree_named(const void *cp, const char *fn)
{
	void *p = (void *)cp;
	struct page *slab, *large;
	struct huge_block *hb;
	if (unlikely(KMM_ZERO_OR_NULL_PTR(p)))
		return;
	classify(p, fn, &slab, &large, &hb);
	if (likely(slab != NULL))
		slab_free_checked(slab->slab_cache, slab, p, fn);
	else if (large)
		free_pages_exact(large, large->nr_pages);
	else
		kfree_huge(hb);
}

KMM_EXPORT void kmm_kfree(const void *p) { kfree_named(p, "kmm_kfree"); }

static size_t ksize_named(const void *p, const char *fn)
{
	struct page *slab, *large;
	struct huge_block *hb;
	if (KMM_ZERO_OR_NULL_PTR(p))
		return 0;
	classify(p, fn, &slab, &large, &hb);
	if (slab)
		return slab->slab_cache->object_size;
	if (large)
		return (size_t)large->nr_pages << KMM_PAGE_SHIFT;
	return hb->size;
}

KMM_EXPORT size_t kmm_ksize(const void *p) { return ksize_named(p, "kmm_ksize"); }

KMM_EXPORT size_t kmm_kmalloc_size_class(size_t size)
{
	kmm_ensure_init();
	if (size == 0 || size > KMM_KMALLOC_MAX_CACHE_SIZE)
		return 0;
	return kmalloc_class_size[kmalloc_index(size)];
}

KMM_EXPORT void *kmm_krealloc(void *p, size_t size, unsigned flags)
{
	static const char fn[] = "kmm_krealloc";
	if (unlikely(flags & ~KMM_GFP_VALID_MASK)) {
		errno = EINVAL;
		return NULL;
	}
	if (KMM_ZERO_OR_NULL_PTR(p))
		return kmm_kmalloc(size, flags);
	if (size == 0) {
		kfree_named(p, fn);
		return KMM_ZERO_SIZE_PTR;
	}
	size_t old = ksize_named(p, fn);
	if (size <= old) {
		/* Shrinking: keep the block unless it would waste more than half. */
		if (size > old / 2 || old <= 64)
			return p;
	} else {
		struct page *slab, *large;
		struct huge_block *hb;
		classify(p, fn, &slab, &large, &hb);
		if (large && size <= KMALLOC_MAX_PAGES_SIZE &&
		    grow_pages_exact(large, (size + KMM_PAGE_SIZE - 1) >> KMM_PAGE_SHIFT)) {
			if (flags & KMM_GFP_ZERO)
				memset((char *)p + old, 0, size - old);
			return p;
		}
		if (hb) {
			size_t bytes = ALIGN_UP(size, KMM_PAGE_SIZE);
			/* In place only: a moved mapping could lose its 4 MiB alignment. */
			if (ALIGN_UP(bytes, KMM_SECTION_SIZE) == ALIGN_UP(hb->size, KMM_SECTION_SIZE) &&
			    os_remap_inplace(hb->addr, hb->size, bytes) == 0) {
				hb->size = bytes; /* the new pages are fresh: zero already */
				return p;
			}
		}
	}
	void *q = kmm_kmalloc(size, flags & ~KMM_GFP_ZERO);
	if (!q)
		return NULL;
	memcpy(q, p, MIN(old, size));
	if ((flags & KMM_GFP_ZERO) && size > old)
		memset((char *)q + old, 0, size - old);
	kfree_named(p, fn);
	return q;
}
