/* SPDX-License-Identifier: MIT */
/*
 * kmalloc.c - allocation by size over the slab caches, the buddy allocator
 * and the OS.
 *
 * Size classes.  8, 16, 32, 48, 64, then four classes per doubling:
 * 2^k * {5/4, 6/4, 7/4, 8/4} for 2^k = 64 .. 32768, ending at 64 KiB
 * (45 classes, "kmalloc-8" .. "kmalloc-64k").  A request of n bytes gets the
 * smallest class >= n.  Worst-case internal waste:
 *   n <= 64:    at most 15 bytes (17 -> 32 is the worst);
 *   n > 64:     class - n < 2^k / 4 <= n / 4, i.e. under 25% of the request
 *               (and under 20% of the slot).
 * Every class above 8 is a multiple of 16, so results are 16-byte aligned;
 * slabs are buddy blocks aligned to their size, so power-of-two classes are
 * naturally aligned.
 *
 * The classes above 32 KiB have slabs of 256 KiB (4 to 6 objects), so that
 * a thread's 33..64 KiB blocks come and go without the zone lock.
 *
 * Above 64 KiB, up to a max-order block (4 MiB): whole pages from the buddy
 * allocator, exactly as many as needed (the covering block's unused tail
 * pages go straight back), so the waste is under one page (< 12.5%).
 * Power-of-two sizes here are naturally aligned too (the block is).
 *
 * Above 4 MiB: a mapping of its own from the OS, 4 MiB aligned, registered
 * in the pagemap so that kfree() and ksize() find it in O(1).  Waste: under
 * one page.  Resizing such a block moves its pages with mremap instead of
 * copying them (only a shrink that mremap cannot do in place copies).
 *
 * Aligned allocation: an alignment up to the page size is served by the
 * smallest class that is a multiple of it (slabs start page aligned, so
 * every slot of such a class is aligned); larger alignments by page runs
 * from a block of at least that order, or by an aligned mapping.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kmalloc.h"
#include "midheap.h"
#include "os.h"
#include "slab.h"

struct kmm_cache kmalloc_caches[NR_KMALLOC_CLASSES];
uint8_t kmalloc_small_index[8192 / 16 + 1];
uint16_t kmalloc_slot_offset[KMALLOC_SLOT_TABLE_MAX / 16 + 1];
uint16_t kmalloc_slot_offset_big[(KMM_KMALLOC_MAX_CACHE_SIZE >> KMALLOC_SLOT_BIG_SHIFT) + 1];
static const uint32_t kmalloc_class_size[NR_KMALLOC_CLASSES] = {
	8,     16,    32,    48,    64,    80,    96,    112,   128,   160,   192,   224,
	256,   320,   384,   448,   512,   640,   768,   896,   1024,  1152,  1280,  1536,
	1792,  2048,  2304,  2560,  3072,  3584,  4096,  4608,  5120,  6144,  7168,  8192,
	10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536,
};
_Static_assert(KMM_KMALLOC_MAX_CACHE_SIZE == 65536, "the last class");
static char kmalloc_names[NR_KMALLOC_CLASSES][32];

/* A block mapped from the OS on its own. */
struct huge_block {
	void *addr;
	size_t size;   /* usable bytes (page multiple) */
	size_t len;    /* bytes mapped (>= size: a reused mapping may be longer) */
};
static struct kmm_cache huge_block_cache;
#define HUGE_CACHE_ID (NR_KMALLOC_CLASSES)

/* Counters of the blocks that bypass the slabs (relaxed atomics). */
static unsigned long long large_bytes, huge_bytes, huge_mapped;
static unsigned long large_blocks, huge_blocks;

/* Where class @idx's slot lies from a malloc_owner (a slab_thread). */
static uint16_t slot_offset(unsigned idx)
{
	return (uint16_t)offsetof(struct slab_thread, first[idx]);
}

/*
 * "kmalloc-<size>", or "kmalloc-<n>k" for whole KiB from 1 KiB (the
 * kernel's names).  By hand: snprintf would fault in libc's printf code,
 * 100-200 KiB of a program's RSS when nothing else in it formats.
 */
static void class_name(char *buf, size_t sz)
{
	static const char prefix[] = "kmalloc-";
	bool k = sz >= 1024 && sz % 1024 == 0;
	char digits[24];
	int n = 0;
	for (size_t v = k ? sz / 1024 : sz; v; v /= 10)
		digits[n++] = (char)('0' + v % 10);
	memcpy(buf, prefix, sizeof(prefix) - 1);
	buf += sizeof(prefix) - 1;
	while (n > 0)
		*buf++ = digits[--n];
	if (k)
		*buf++ = 'k';
	*buf = '\0';
}

void kmalloc_init(void);
void kmalloc_init(void)
{
	unsigned i;
	KMM_ASSERT(kmalloc_class_size[KMALLOC_INDEX_8K] == 8192);
	/* The lookup table: smallest class >= 16 * j (j = 0 maps like 16). */
	for (unsigned j = 0, c = 1; j <= 8192 / 16; j++) {
		while (kmalloc_class_size[c] < MAX(16u * j, 16u))
			c++;
		kmalloc_small_index[j] = (uint8_t)c;
	}
	/* Entries from 8 KiB + 2 KiB up: smaller sizes use the table below. */
	for (size_t j = (KMALLOC_SLOT_TABLE_MAX >> KMALLOC_SLOT_BIG_SHIFT) + 1;
	     j <= KMM_KMALLOC_MAX_CACHE_SIZE >> KMALLOC_SLOT_BIG_SHIFT; j++) {
		size_t size = j << KMALLOC_SLOT_BIG_SHIFT;
		/* Exact only if no class boundary falls inside a 2 KiB step. */
		KMM_ASSERT(kmalloc_class_size[kmalloc_index(size)] ==
			   kmalloc_class_size[kmalloc_index(size - (1ul << KMALLOC_SLOT_BIG_SHIFT) + 1)]);
		kmalloc_slot_offset_big[j] = slot_offset(kmalloc_index(size));
	}
	for (size_t j = 0; j <= KMALLOC_SLOT_TABLE_MAX / 16; j++)
		kmalloc_slot_offset[j] = slot_offset(kmalloc_index(MAX(16 * j, (size_t)16)));
	for (i = 0; i < NR_KMALLOC_CLASSES; i++) {
		size_t sz = kmalloc_class_size[i];
		class_name(kmalloc_names[i], sz);
		size_t align = sz >= 16 ? 16 : 8;
		if (slab_cache_setup(&kmalloc_caches[i], kmalloc_names[i], sz, align, 0, NULL, i) != 0)
			kmm_fatal("kmalloc_init", "cannot set up %s", kmalloc_names[i]);
		kmalloc_caches[i].is_kmalloc = true;
		/* malloc's classes (16 B up): free() finds their slabs by tag (slab.h). */
		if (i > 0 && !slab_cache_set_tagged(&kmalloc_caches[i]))
			kmm_fatal("kmalloc_init", "%s: layout kmalloc_cpu_pop() relies on", kmalloc_names[i]);
	}
	slab_cache_setup(&huge_block_cache, "kmalloc-huge-desc", sizeof(struct huge_block), 0, 0,
			 NULL, HUGE_CACHE_ID);
	huge_block_cache.is_kmalloc = true;
}

struct kmm_cache *kmalloc_cache(unsigned i)
{
	return i < NR_KMALLOC_CLASSES ? &kmalloc_caches[i] : NULL;
}

/* ---- huge blocks ---- */

static size_t huge_span(size_t bytes) { return ALIGN_UP(bytes, KMM_SECTION_SIZE); }

static noinline big_text void *kmalloc_huge(size_t size, size_t align, unsigned flags)
{
	if (!(flags & KMM_GFP_DIRECT_OS)) {
		errno = ENOMEM;
		return NULL;
	}
	size_t bytes = ALIGN_UP(size, KMM_PAGE_SIZE);
	struct huge_block *hb = slab_alloc(&huge_block_cache, flags & ~KMM_GFP_ZERO);
	if (!hb)
		return NULL;
	/* With KMM_GFP_ZERO only a fresh mapping will do: it reads as zero. */
	void *p = huge_map(bytes, MAX(align, KMM_SECTION_SIZE), flags & KMM_GFP_ZERO, &hb->len);
	if (!p)
		goto fail;
	hb->addr = p;
	hb->size = bytes;
	if (pagemap_set(p, huge_span(hb->len), hb, PAGEMAP_HUGE) != 0) {
		huge_unmap(p, hb->len);
		goto fail;
	}
	__atomic_fetch_add(&huge_bytes, bytes, __ATOMIC_RELAXED);
	__atomic_fetch_add(&huge_mapped, hb->len, __ATOMIC_RELAXED);
	__atomic_fetch_add(&huge_blocks, 1, __ATOMIC_RELAXED);
	return p;
fail:
	kmm_cache_free(&huge_block_cache, hb);
	errno = ENOMEM;
	return NULL;
}

static void kfree_huge(struct huge_block *hb)
{
	__atomic_fetch_sub(&huge_bytes, hb->size, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&huge_mapped, hb->len, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&huge_blocks, 1, __ATOMIC_RELAXED);
	pagemap_set(hb->addr, huge_span(hb->len), NULL, PAGEMAP_NONE);
	huge_unmap(hb->addr, hb->len);
	kmm_cache_free(&huge_block_cache, hb);
}

/* Resize a huge block without copying: within its mapping, in place, else moved by mremap. */
static bool krealloc_huge(struct huge_block *hb, size_t size)
{
	if (size > PTRDIFF_MAX)
		return false; /* (the rounding below would wrap); the copy path says ENOMEM */
	size_t bytes = ALIGN_UP(size, KMM_PAGE_SIZE), len = ALIGN_UP(bytes, HUGE_CHUNK);
	if (bytes <= hb->len && bytes >= hb->len / 2) {
		/* The mapping has room (or does not waste half of itself): no call. */
		__atomic_fetch_add(&huge_bytes, bytes - hb->size, __ATOMIC_RELAXED);
		hb->size = bytes;
		return true;
	}
	if (len < hb->len) {
		/* Shrink: the tail's pages join the pool, its sections leave the pagemap first. */
		if (huge_span(len) < huge_span(hb->len))
			pagemap_set((char *)hb->addr + huge_span(len), huge_span(hb->len) - huge_span(len),
				    NULL, PAGEMAP_NONE);
		huge_unmap((char *)hb->addr + len, hb->len - len);
	} else if (huge_grow_inplace(hb->addr, hb->len, len) == 0) {
		if (pagemap_set(hb->addr, huge_span(len), hb, PAGEMAP_HUGE) != 0) {
			/* No pagemap for the new sections: give the growth back. */
			huge_unmap((char *)hb->addr + hb->len, len - hb->len);
			return false;
		}
	} else {
		/*
		 * Unpublish the old span before the move: once mremap has vacated
		 * it, another thread may map a section there and publish it, and a
		 * late clear would wipe that entry out.
		 */
		pagemap_set(hb->addr, huge_span(hb->len), NULL, PAGEMAP_NONE);
		void *p = huge_move(hb->addr, hb->len, len);
		if (!p) {
			pagemap_set(hb->addr, huge_span(hb->len), hb, PAGEMAP_HUGE); /* leaves exist */
			return false;
		}
		if (pagemap_set(p, huge_span(len), hb, PAGEMAP_HUGE) != 0) /* huge_move() opened it */
			kmm_fatal("krealloc", "cannot map the moved block %p", p);
		hb->addr = p;
	}
	__atomic_fetch_add(&huge_bytes, bytes - hb->size, __ATOMIC_RELAXED);
	__atomic_fetch_add(&huge_mapped, len - hb->len, __ATOMIC_RELAXED);
	hb->size = bytes;
	hb->len = len;
	return true;
}

/* ---- allocation ---- */

/* Smallest class index >= @idx whose size is a multiple of @align (<= page). */
static unsigned aligned_class(unsigned idx, size_t align)
{
	while (idx < NR_KMALLOC_CLASSES && (kmalloc_class_size[idx] & (align - 1)))
		idx++;
	return idx;
}

static noinline big_text void *kmalloc_pages(size_t size, size_t align, unsigned flags)
{
	if (size > KMALLOC_MAX_PAGES_SIZE || align > KMALLOC_MAX_PAGES_SIZE) {
		if (size > PTRDIFF_MAX || align > ((size_t)1 << 40)) {
			errno = ENOMEM;
			return NULL;
		}
		return kmalloc_huge(size, align, flags);
	}
	unsigned long nr = (size + KMM_PAGE_SIZE - 1) >> KMM_PAGE_SHIFT;
	unsigned min_order = align > KMM_PAGE_SIZE ? ilog2_ul(align) - KMM_PAGE_SHIFT : 0;
	struct page *page = alloc_pages_exact(flags, nr, min_order);
	if (!page)
		return NULL;
	__atomic_fetch_add(&large_bytes, nr << KMM_PAGE_SHIFT, __ATOMIC_RELAXED);
	__atomic_fetch_add(&large_blocks, 1, __ATOMIC_RELAXED);
	return page_to_virt(page);
}

void *kmalloc_core(size_t size, size_t align, unsigned flags)
{
	bool mid = flags & KMALLOC_GFP_MID;
	flags &= KMM_GFP_VALID_MASK; /* the lower layers see only the public bits */
	if (likely(align <= 16)) {
		if (mid && size > MID_MIN_SIZE && size <= MID_MAX_SIZE)
			return mid_alloc(size, flags);
		if (likely(size <= KMM_KMALLOC_MAX_CACHE_SIZE))
			return slab_alloc(&kmalloc_caches[kmalloc_index(size)], flags);
		return kmalloc_pages(size, 0, flags);
	}
	if (size <= KMM_KMALLOC_MAX_CACHE_SIZE && align <= KMM_PAGE_SIZE) {
		unsigned idx = aligned_class(kmalloc_index(MAX(size, align)), align);
		if (idx < NR_KMALLOC_CLASSES)
			return slab_alloc(&kmalloc_caches[idx], flags);
	}
	return kmalloc_pages(size, align, flags);
}

KMM_EXPORT void *kmm_kmalloc(size_t size, unsigned flags)
{
	if (unlikely(flags & ~KMM_GFP_VALID_MASK)) {
		errno = EINVAL;
		return NULL;
	}
	kmm_ensure_init();
	if (unlikely(size == 0))
		return KMM_ZERO_SIZE_PTR;
	return kmalloc_core(size, 0, flags);
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

/* ---- pointers back ---- */

enum block_kind { BLOCK_SLAB, BLOCK_LARGE, BLOCK_HUGE, BLOCK_MID };
struct block {
	enum block_kind kind;
	struct page *page;     /* slab head, or run head */
	struct huge_block *hb;
};

/*
 * What kind of block @p is, checked: aborts with a message naming @fn for a
 * pointer kmalloc did not return, including one into the middle of a block
 * (every caller - free, ksize, realloc - gets the same checks here).
 */
static always_inline struct block classify(const void *p, const char *fn)
{
	struct block b = {BLOCK_SLAB, NULL, NULL};
	uintptr_t e = pagemap_lookup(p);
	if (unlikely(pagemap_kind(e) != PAGEMAP_SECTION)) {
		KMM_CHECK(pagemap_kind(e) == PAGEMAP_HUGE, fn, "invalid pointer %p", p);
		b.hb = pagemap_ptr(e);
		KMM_CHECK(b.hb->addr == p, fn, "invalid pointer %p", p);
		b.kind = BLOCK_HUGE;
		return b;
	}
	struct page *page = virt_to_page(p);
	unsigned flags = page_flags(page);
	if (unlikely(flags == (PG_head | PG_large))) {
		KMM_CHECK(((uintptr_t)p & (KMM_PAGE_SIZE - 1)) == 0, fn, "invalid pointer %p", p);
		b.kind = BLOCK_LARGE;
		b.page = page;
		return b;
	}
	b.page = compound_head_flags(page, &flags);
	if (unlikely(flags & PG_mid)) {
		b.kind = BLOCK_MID;
		return b; /* the mid heap checks the pointer itself */
	}
	KMM_CHECK(flags & PG_slab, fn, "invalid pointer %p%s", p,
		  page_is_free(page) ? " (double free?)" : "");
	slab_check_object(b.page->slab_cache, b.page, p, fn);
	return b;
}

static void free_large(struct page *page)
{
	__atomic_fetch_sub(&large_bytes, (unsigned long long)page->nr_pages << KMM_PAGE_SHIFT,
			   __ATOMIC_RELAXED);
	__atomic_fetch_sub(&large_blocks, 1, __ATOMIC_RELAXED);
	free_pages_exact(page, page->nr_pages);
}

void kfree_checked(void *p, const char *fn)
{
	struct block b = classify(p, fn);
	if (likely(b.kind == BLOCK_SLAB))
		slab_free_object(b.page->slab_cache, b.page, p, fn);
	else if (b.kind == BLOCK_MID)
		mid_free(b.page, p, fn);
	else if (b.kind == BLOCK_LARGE)
		free_large(b.page);
	else
		kfree_huge(b.hb);
}

KMM_EXPORT void kmm_kfree(const void *p)
{
	if (unlikely(KMM_ZERO_OR_NULL_PTR(p)))
		return;
	kfree_checked((void *)p, "kmm_kfree");
}

static size_t block_size(const struct block *b, const void *p, const char *fn)
{
	if (b->kind == BLOCK_MID)
		return mid_usable_size(b->page, p, fn);
	if (b->kind == BLOCK_SLAB)
		return b->page->slab_cache->object_size;
	if (b->kind == BLOCK_LARGE)
		return (size_t)b->page->nr_pages << KMM_PAGE_SHIFT;
	return b->hb->size;
}

size_t ksize_checked(const void *p, const char *fn)
{
	struct block b = classify(p, fn);
	return block_size(&b, p, fn);
}

KMM_EXPORT size_t kmm_ksize(const void *p)
{
	if (KMM_ZERO_OR_NULL_PTR(p))
		return 0;
	return ksize_checked(p, "kmm_ksize");
}

KMM_EXPORT rare size_t kmm_kmalloc_size_class(size_t size)
{
	kmm_ensure_init();
	if (size == 0 || size > KMM_KMALLOC_MAX_CACHE_SIZE)
		return 0;
	return kmalloc_class_size[kmalloc_index(size)];
}

void *krealloc_checked(void *p, size_t size, unsigned flags, const char *fn)
{
	struct block b = classify(p, fn);
	size_t old = block_size(&b, p, fn);
	unsigned long nr = (size + KMM_PAGE_SIZE - 1) >> KMM_PAGE_SHIFT;
	switch (b.kind) {
	case BLOCK_SLAB:
		/* Keep the slot unless a smaller class would save more than half of it. */
		if (size <= old && (size > old / 2 || old <= 64))
			return p;
		break;
	case BLOCK_MID:
		/* In place unless the size leaves the heap's range (or shrinks to under half of it). */
		if (size <= MID_MAX_SIZE && (size > MID_MIN_SIZE || size > old / 2) &&
		    mid_resize(b.page, p, size, fn))
			return p;
		break;
	case BLOCK_LARGE:
		if (size > KMM_KMALLOC_MAX_CACHE_SIZE && size <= KMALLOC_MAX_PAGES_SIZE) {
			if (nr < b.page->nr_pages) {
				__atomic_fetch_sub(&large_bytes, (b.page->nr_pages - nr) << KMM_PAGE_SHIFT,
						   __ATOMIC_RELAXED);
				shrink_pages_exact(b.page, nr);
				return p;
			}
			unsigned long had = b.page->nr_pages;
			if (nr == had || grow_pages_exact(b.page, nr, flags & KMM_GFP_VALID_MASK)) {
				__atomic_fetch_add(&large_bytes, (nr - had) << KMM_PAGE_SHIFT,
						   __ATOMIC_RELAXED);
				if ((flags & KMM_GFP_ZERO) && size > old)
					memset((char *)p + old, 0, size - old);
				return p;
			}
		}
		break;
	case BLOCK_HUGE:
		if (size > KMALLOC_MAX_PAGES_SIZE && krealloc_huge(b.hb, size)) {
			/* A reused or shrunk mapping may hold old bytes past @old. */
			if ((flags & KMM_GFP_ZERO) && size > old)
				memset((char *)b.hb->addr + old, 0, size - old);
			return b.hb->addr;
		}
		break;
	}
	void *q = kmalloc_core(size, 0, flags & ~KMM_GFP_ZERO);
	if (!q)
		return NULL;
	memcpy(q, p, MIN(old, size));
	if ((flags & KMM_GFP_ZERO) && size > old)
		memset((char *)q + old, 0, size - old);
	kfree_checked(p, fn);
	return q;
}

KMM_EXPORT void *kmm_krealloc(void *p, size_t size, unsigned flags)
{
	if (unlikely(flags & ~KMM_GFP_VALID_MASK)) {
		errno = EINVAL;
		return NULL;
	}
	if (KMM_ZERO_OR_NULL_PTR(p))
		return kmm_kmalloc(size, flags);
	if (size == 0) {
		kfree_checked(p, "kmm_krealloc");
		return KMM_ZERO_SIZE_PTR;
	}
	return krealloc_checked(p, size, flags, "kmm_krealloc");
}

rare void kmalloc_totals(struct kmalloc_totals *t)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < NR_KMALLOC_CLASSES; i++) {
		struct kmm_cache_stats st;
		kmm_cache_stats(&kmalloc_caches[i], &st);
		t->slab_bytes += (unsigned long long)st.active_objs * st.size;
	}
	struct mid_totals m;
	mid_totals(&m);
	t->mid_bytes = m.in_use_bytes;
	t->mid_blocks = m.blocks;
	t->mid_arena_bytes = m.arena_bytes;
	t->large_bytes = __atomic_load_n(&large_bytes, __ATOMIC_RELAXED);
	t->large_blocks = __atomic_load_n(&large_blocks, __ATOMIC_RELAXED);
	t->huge_bytes = __atomic_load_n(&huge_bytes, __ATOMIC_RELAXED);
	t->huge_mapped = __atomic_load_n(&huge_mapped, __ATOMIC_RELAXED) + huge_cached_bytes();
	t->huge_blocks = __atomic_load_n(&huge_blocks, __ATOMIC_RELAXED);
}
