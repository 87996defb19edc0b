/* SPDX-License-Identifier: MIT */
/*
 * malloc.c - the C allocation ABI on kmm: malloc and its whole family, the
 * glibc extensions and the glibc-internal entry points, so that a program
 * linked with -lkmm (or run with LD_PRELOAD=libkmm.so) never mixes two
 * allocators.
 *
 * Semantics follow glibc where C and POSIX leave a choice:
 *   malloc(0)         a unique minimal block (16 usable bytes), not NULL.
 *   realloc(p, 0)     frees p and returns NULL (glibc's behaviour).
 *   realloc(NULL, n)  malloc(n).
 *   calloc overflow   NULL, errno ENOMEM.
 *   aligned_alloc     any power-of-two alignment; any size (C17 DR 460).
 *   posix_memalign    EINVAL unless the alignment is a power of two and a
 *                     multiple of sizeof(void *); errno is left alone.
 *   memalign          a non-power-of-two alignment is rounded up (glibc).
 *   pvalloc           size rounded up to whole pages (0 -> one page).
 * Alignment: every block is at least 16 bytes and 16-byte aligned.
 *
 * A pointer kmm never returned - a stack address, a pointer into a block, a
 * foreign pointer - passed to free(), realloc() or malloc_usable_size()
 * aborts with "kmm: free(): invalid pointer 0x...".  Double frees are caught
 * at once when the object heads a freelist, and by the free-object canary
 * (see slab.c), which every malloc block carries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kmalloc.h"
#include "midheap.h"
#include "page_alloc.h"
#include "slab.h"
#include "stats.h"

#define MALLOC_FLAGS (KMM_GFP_KERNEL | KMALLOC_GFP_MID)
_Static_assert(MID_MIN_SIZE <= KMALLOC_SLOT_TABLE_MAX, "malloc()'s slot table covers the slab sizes");
/*
 * malloc never uses kmalloc-8: every block is at least 16 bytes, so every
 * result is 16-byte aligned (as glibc's) and every free slot of a class it
 * uses carries the double-free canary.
 */
#define MALLOC_MIN_SIZE 16

/* Every malloc-family allocation off the fast path: @align 0 for the default. */
static void *do_alloc(size_t size, size_t align, unsigned gfp)
{
	kmm_ensure_init();
	void *p = kmalloc_core(MAX(size, MALLOC_MIN_SIZE), align, MALLOC_FLAGS | gfp);
	if (unlikely(stats_enabled) && p)
		stats_alloc(p);
	return p;
}

static always_inline void *do_malloc(size_t size) { return do_alloc(size, 0, 0); }
static void *do_aligned(size_t align, size_t size) { return do_alloc(size, align, 0); }

static always_inline void do_free(void *p, const char *fn)
{
	if (unlikely(!p))
		return;
	if (unlikely(stats_enabled))
		stats_free(p, fn);
	kfree_checked(p, fn);
}

static void *do_calloc(size_t n, size_t size)
{
	size_t bytes;
	if (unlikely(__builtin_mul_overflow(n, size, &bytes))) {
		errno = ENOMEM;
		return NULL;
	}
	return do_alloc(bytes, 0, KMM_GFP_ZERO);
}

static void *do_realloc(void *p, size_t size, const char *fn)
{
	if (!p)
		return do_malloc(size);
	if (size == 0) {
		do_free(p, fn);
		return NULL;
	}
	if (unlikely(stats_enabled))
		stats_free(p, fn);
	void *q = krealloc_checked(p, MAX(size, MALLOC_MIN_SIZE), MALLOC_FLAGS, fn);
	if (unlikely(stats_enabled))
		stats_alloc(q ? q : p);
	return q;
}

/*
 * The fast paths, no lock, no atomic, every check kept.  malloc: the slot
 * of the size's class, read from a table of slot offsets in the thread's
 * slab_thread (kmalloc caches live in its inline first chunk), and a pop.
 * free: see below.  Both read the thread through malloc_owner, which is
 * slab_thread_none's (no object, no slab) until the thread's first
 * allocation and whenever statistics are on, so that one load stands for
 * "set up?" and "statistics off?".  Anything else goes to the general paths
 * above.
 */

/* Every malloc the fast path did not serve. */
static noinline void *malloc_slow(size_t size)
{
	char *owner = malloc_owner;
	if (likely(owner != MALLOC_OWNER_NONE) && size <= MID_MIN_SIZE) {
		struct slab_thread *t = malloc_owner_thread(owner);
		/* The slot's private freelist is empty (malloc() tried it). */
		struct kmem_cache_cpu *c = kmalloc_slot_for(owner, size);
		struct kmm_cache *s = &kmalloc_caches[c - t->first];
		void *obj = slab_take_local(s, c);
		return obj ? obj : slab_alloc_refill(s, c, KMM_GFP_KERNEL);
	}
	void *p = do_malloc(size);
	if (!stats_enabled)
		slab_fast_enable();
	return p;
}

KMM_EXPORT void *malloc(size_t size)
{
	char *owner = malloc_owner;
	/* Up to MID_MIN_SIZE: the class's slot; above it the mid heap, then page runs. */
	if (likely(size <= MID_MIN_SIZE)) {
		void *obj = kmalloc_cpu_pop(kmalloc_slot_of(owner, size));
		if (likely(obj != NULL))
			return obj;
	} else if (size <= MID_MAX_SIZE && likely(owner != MALLOC_OWNER_NONE)) {
		/* Straight to the heap once the thread is set up (and statistics off). */
		return mid_alloc(size, MALLOC_FLAGS);
	}
	return malloc_slow(size);
}

static noinline void free_slow(void *p) { do_free(p, "free"); }

/* A slot offset times this is the offset of the same class's cache in kmalloc_caches. */
#define KMALLOC_CACHE_PER_SLOT (sizeof(struct kmm_cache) / sizeof(struct kmem_cache_cpu))
_Static_assert(sizeof(struct kmm_cache) % sizeof(struct kmem_cache_cpu) == 0, "cache stride");

/* The kmalloc class whose slot lies @off bytes into a slab_thread (a slab tag's class part). */
static always_inline struct kmm_cache *kmalloc_cache_at(uint32_t off)
{
	return (struct kmm_cache *)((char *)kmalloc_caches + off * KMALLOC_CACHE_PER_SLOT);
}

/* The head of the slab that frame @idx of @ms belongs to (slabs of up to 255 pages). */
static always_inline struct page *frame_slab(struct mem_section *ms, size_t idx)
{
	return &ms->mem_map[idx - ms->head_delta[idx]];
}

/*
 * Every free the fast path did not take, in frame @idx of @ms: another
 * thread's slab (a remote free, one CAS; a thread that never allocated
 * frees here too, as the shared freelist needs no slab_thread), the
 * thread's own slab of a cache that is not a kmalloc class, a tail of a
 * slab of more than 255 pages, anything not a slab; and every free while
 * statistics are on.
 *
 * A frame whose tag is set but not the thread's own is of a kmalloc slab
 * another thread holds, and the tag names its class: the remote free needs
 * neither the frame's descriptor flags nor the slab's cache pointer
 * (xmalloc's consumers, every one of whose frees comes here, took 94
 * instructions a free with them, 78 without).  A tag can be going stale -
 * its holder unfreezing the slab - but never wrong while the object lives:
 * tags are written by a slab's holder and cleared before it lets the slab
 * go, so a set tag is of the live slab that holds the frame, whose class
 * does not change, and slab_free_slow() finds an unfrozen slab from its word.
 */
static noinline void free_invalid(void *p, struct kmm_cache *s);

static noinline void free_other(void *p, uintptr_t e, size_t idx, char *owner)
{
	struct mem_section *ms = pagemap_section(e);
	unsigned flags;
	if (unlikely(stats_enabled))
		return free_slow(p);
	uint32_t tag = __atomic_load_n(&ms->slab_tag[idx], __ATOMIC_RELAXED);
	if (likely(tag != 0)) {
		struct kmm_cache *s = kmalloc_cache_at(tag & SLAB_TAG_CLASS_MASK);
		if (unlikely(!slot_start(s, p)))
			return free_invalid(p, s);
		return slab_free_slow(s, frame_slab(ms, idx), p, "free");
	}
	struct page *slab = compound_head_flags(frame_slab(ms, idx), &flags);
	if (flags == (PG_head | PG_mid))
		return mid_free(slab, p, "free");
	if (unlikely(!(flags & PG_slab)))
		return free_slow(p);
	struct kmm_cache *s = slab->slab_cache;
	check_object(s, slab, p, "free");
	if (!slab_local_push(s, malloc_owner_thread(owner), slab, p, "free"))
		slab_free_slow(s, slab, p, "free");
}

/*
 * Reports for free()'s fast path.  They are not declared noreturn (though
 * they do not return) so that free() reaches them with a tail call and
 * needs no stack frame of its own.
 */
static noinline void free_invalid(void *p, struct kmm_cache *s) { check_object(s, NULL, p, "free"); }
static rare void free_double(void *p) { kmm_fatal("free", "double free %p", p); }

/*
 * The thread's magazine for @s is full (or it never allocated from the
 * class): the object goes on its slab's owner-local list, the holder's local
 * free (slab_local_push() less the owner compare: the tag said the slab is
 * @t's), with the push free() uses for the magazine (a kmalloc class's
 * layout is known: local_push()'s reads of the cache would cost sh6bench 3%
 * of its instructions).
 */
static noinline void free_held(void *p, uintptr_t e, size_t idx, struct slab_thread *t,
			       const struct kmm_cache *s)
{
	struct page *slab = frame_slab(pagemap_section(e), idx);
	if (unlikely(!fast_free_ok(&slab->local_free, p)))
		return free_double(p);
	fast_free_push(&slab->local_free, p);
	local_pushed(s, t, slab);
}

/*
 * free() reads no slab descriptor on its fast path: the frame's slab tag
 * (a dense array, 16 frames a cache line) says "a slab this thread holds,
 * of class k", and the object goes on top of the thread's magazine for k,
 * where the next malloc of the class finds it.  No data-dependent branch
 * on the way, so random frees (larson) predict as well as LIFO ones.
 */
KMM_EXPORT void free(void *p)
{
	uintptr_t e = pagemap_lookup(p);
	char *owner = malloc_owner;
	if (unlikely(!pagemap_is_section(e)))
		return free_slow(p);
	size_t idx = ((uintptr_t)p >> KMM_PAGE_SHIFT) & (KMM_SECTION_PAGES - 1);
	struct slab_thread *t = malloc_owner_thread(owner);
	/* Mine: the class's slot offset (slab_tag_of()); another's or none: above the mask. */
	uint32_t off = __atomic_load_n(&pagemap_section(e)->slab_tag[idx], __ATOMIC_RELAXED) ^ t->tag;
	if (unlikely(off > SLAB_TAG_CLASS_MASK))
		return free_other(p, e, idx, owner);
	struct kmem_cache_cpu *c = (struct kmem_cache_cpu *)((char *)t->first + off);
	struct kmm_cache *s = kmalloc_cache_at(off);
	if (unlikely(!slot_start(s, p)))
		return free_invalid(p, s);
	/* Past the room, to the slab; room is written only by a push (no store-forward stall there). */
	int room = c->room;
	if (unlikely(room <= 0))
		return free_held(p, e, idx, t, s);
	if (unlikely(!fast_free_ok(&c->freelist, p)))
		return free_double(p);
	fast_free_push(&c->freelist, p);
	c->room = room - 1;
}

KMM_EXPORT void cfree(void *p) { do_free(p, "cfree"); }
KMM_EXPORT void *calloc(size_t n, size_t size) { return do_calloc(n, size); }
KMM_EXPORT void *realloc(void *p, size_t size) { return do_realloc(p, size, "realloc"); }

KMM_EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
	size_t bytes;
	if (__builtin_mul_overflow(n, size, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	return do_realloc(p, bytes, "reallocarray");
}

KMM_EXPORT void *aligned_alloc(size_t align, size_t size)
{
	if (!IS_POW2(align)) {
		errno = EINVAL;
		return NULL;
	}
	return do_aligned(align, size);
}

KMM_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	if (!IS_POW2(align) || align % sizeof(void *))
		return EINVAL;
	int saved = errno;
	void *p = do_aligned(align, size);
	if (!p) {
		errno = saved;
		return ENOMEM;
	}
	*out = p;
	return 0;
}

KMM_EXPORT void *memalign(size_t align, size_t size)
{
	if (align > ((size_t)1 << 62)) {
		errno = EINVAL;
		return NULL;
	}
	if (!IS_POW2(align))
		align = align ? (size_t)1 << (ilog2_ul(align) + 1) : 1;
	return do_aligned(align, size);
}

KMM_EXPORT void *valloc(size_t size) { return do_aligned(KMM_PAGE_SIZE, size); }

KMM_EXPORT void *pvalloc(size_t size)
{
	size_t rounded;
	if (__builtin_add_overflow(size, KMM_PAGE_SIZE - 1, &rounded)) {
		errno = ENOMEM;
		return NULL;
	}
	rounded &= ~(KMM_PAGE_SIZE - 1);
	return do_aligned(KMM_PAGE_SIZE, rounded ? rounded : KMM_PAGE_SIZE);
}

KMM_EXPORT size_t malloc_usable_size(void *p)
{
	if (!p)
		return 0;
	return ksize_checked(p, "malloc_usable_size");
}

/* glibc-internal names that other parts of libc and some programs call. */
KMM_EXPORT void *__libc_malloc(size_t size) { return do_malloc(size); }
KMM_EXPORT void __libc_free(void *p) { do_free(p, "free"); }
KMM_EXPORT void *__libc_calloc(size_t n, size_t size) { return do_calloc(n, size); }
KMM_EXPORT void *__libc_realloc(void *p, size_t size) { return do_realloc(p, size, "realloc"); }
KMM_EXPORT void *__libc_memalign(size_t align, size_t size) { return memalign(align, size); }
KMM_EXPORT void *__libc_valloc(size_t size) { return valloc(size); }
KMM_EXPORT void *__libc_pvalloc(size_t size) { return pvalloc(size); }
KMM_EXPORT int __posix_memalign(void **out, size_t align, size_t size)
{
	return posix_memalign(out, align, size);
}

/* ---- for operator new/delete (new.cc) ---- */

void *kmm_new_alloc(size_t size, size_t align);
void kmm_new_free(void *p);
__attribute__((noreturn)) void kmm_new_failed(size_t size);

void *kmm_new_alloc(size_t size, size_t align)
{
	if (align > 16 && !IS_POW2(align))
		return NULL;
	return do_aligned(align, size);
}

void kmm_new_free(void *p) { do_free(p, "operator delete"); }

void kmm_new_failed(size_t size)
{
	kmm_fatal("operator new", "out of memory allocating %zu bytes (no std::bad_alloc to throw)",
		  size);
}

/* ---- tuning and trimming ---- */

KMM_EXPORT int malloc_trim(size_t pad)
{
	(void)pad;
	return kmm_trim() > 0;
}

/*
 * mallopt: the glibc parameters programs set are accepted (returning 1) so
 * that they keep working; kmm's own policy does not need them:
 *   M_TRIM_THRESHOLD, M_TOP_PAD  -> KMM_DECAY_MS governs giving memory back;
 *   M_MMAP_THRESHOLD, M_MMAP_MAX -> blocks above 4 MiB are always mapped;
 *   M_ARENA_MAX, M_ARENA_TEST    -> kmm has per-thread caches, not arenas;
 *   M_PERTURB, M_CHECK_ACTION    -> accepted, no effect.
 * An unknown parameter returns 0, as glibc does.
 */
KMM_EXPORT int mallopt(int param, int value)
{
	(void)value;
	switch (param) {
	case M_TRIM_THRESHOLD:
	case M_TOP_PAD:
	case M_MMAP_THRESHOLD:
	case M_MMAP_MAX:
	case M_CHECK_ACTION:
	case M_PERTURB:
	case M_ARENA_TEST:
	case M_ARENA_MAX:
		return 1;
	default:
		return 0;
	}
}
KMM_EXPORT int __libc_mallopt(int param, int value) { return mallopt(param, value); }

/* ---- statistics in glibc's shapes ---- */

KMM_EXPORT rare struct mallinfo2 mallinfo2(void)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	struct mallinfo2 mi;
	memset(&mi, 0, sizeof(mi));
	mi.arena = h.zone_bytes;         /* bytes in the zone's sections */
	mi.ordblks = h.free_blocks;      /* free buddy blocks */
	mi.smblks = 0;
	mi.hblks = h.huge_blocks;        /* blocks mapped on their own */
	mi.hblkhd = h.huge_bytes;
	mi.usmblks = 0;
	mi.fsmblks = 0;
	mi.uordblks = h.in_use_bytes - h.huge_bytes; /* in use, in the zone */
	mi.fordblks = h.zone_bytes - mi.uordblks;    /* zone bytes not in use */
	mi.keepcost = 0;
	return mi;
}

/* glibc marks mallinfo deprecated (int fields overflow); programs still call it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
KMM_EXPORT rare struct mallinfo mallinfo(void)
{
	struct mallinfo2 m2 = mallinfo2();
	struct mallinfo mi;
#define CLAMP_INT(x) ((int)((x) > (size_t)INT32_MAX ? INT32_MAX : (x)))
	mi.arena = CLAMP_INT(m2.arena);
	mi.ordblks = CLAMP_INT(m2.ordblks);
	mi.smblks = CLAMP_INT(m2.smblks);
	mi.hblks = CLAMP_INT(m2.hblks);
	mi.hblkhd = CLAMP_INT(m2.hblkhd);
	mi.usmblks = CLAMP_INT(m2.usmblks);
	mi.fsmblks = CLAMP_INT(m2.fsmblks);
	mi.uordblks = CLAMP_INT(m2.uordblks);
	mi.fordblks = CLAMP_INT(m2.fordblks);
	mi.keepcost = CLAMP_INT(m2.keepcost);
#undef CLAMP_INT
	return mi;
}
KMM_EXPORT struct mallinfo __libc_mallinfo(void) { return mallinfo(); }
#pragma GCC diagnostic pop

KMM_EXPORT rare void malloc_stats(void)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	char buf[512];
	int n = snprintf(buf, sizeof(buf),
			 "Arena 0:\n"
			 "system bytes     = %10llu\n"
			 "in use bytes     = %10llu\n"
			 "Total (incl. mmap):\n"
			 "system bytes     = %10llu\n"
			 "in use bytes     = %10llu\n"
			 "max mmap regions = %10lu\n"
			 "max mmap bytes   = %10llu\n"
			 "resident bytes   = %10llu\n",
			 h.zone_bytes, h.in_use_bytes - h.huge_bytes, h.zone_bytes + h.huge_bytes,
			 h.in_use_bytes, h.huge_blocks, h.huge_bytes, h.resident_bytes);
	stats_write_stderr(buf, (size_t)n);
}

KMM_EXPORT rare int malloc_info(int options, FILE *fp)
{
	if (options != 0 || !fp) {
		errno = EINVAL;
		return -1;
	}
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	fprintf(fp, "<malloc version=\"kmm-%s\">\n", KMM_VERSION_STRING);
	fprintf(fp, "<heap nr=\"0\">\n<sizes>\n");
	for (unsigned i = 0; kmalloc_cache(i); i++) {
		struct kmm_cache_stats st;
		kmm_cache_stats(kmalloc_cache(i), &st);
		if (st.num_objs)
			fprintf(fp, "  <size from=\"%zu\" to=\"%zu\" total=\"%lu\" count=\"%lu\"/>\n",
				i ? kmm_kmalloc_size_class(st.size) : 1, st.size, st.num_objs - st.active_objs,
				st.active_objs);
	}
	fprintf(fp, "</sizes>\n");
	fprintf(fp, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
	fprintf(fp, "<total type=\"rest\" count=\"%lu\" size=\"%llu\"/>\n", h.free_blocks,
		h.zone_bytes - (h.in_use_bytes - h.huge_bytes));
	fprintf(fp, "<system type=\"current\" size=\"%llu\"/>\n", h.zone_bytes);
	fprintf(fp, "<system type=\"max\" size=\"%llu\"/>\n", h.peak_zone_bytes);
	fprintf(fp, "<aspace type=\"total\" size=\"%llu\"/>\n", h.zone_bytes);
	fprintf(fp, "<aspace type=\"mprotect\" size=\"%llu\"/>\n", h.zone_bytes);
	fprintf(fp, "</heap>\n");
	fprintf(fp, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
	fprintf(fp, "<total type=\"rest\" count=\"%lu\" size=\"%llu\"/>\n", h.free_blocks,
		h.zone_bytes - (h.in_use_bytes - h.huge_bytes));
	fprintf(fp, "<total type=\"mmap\" count=\"%lu\" size=\"%llu\"/>\n", h.huge_blocks,
		h.huge_bytes);
	fprintf(fp, "<system type=\"current\" size=\"%llu\"/>\n", h.zone_bytes + h.huge_bytes);
	fprintf(fp, "<system type=\"max\" size=\"%llu\"/>\n", h.peak_zone_bytes + h.huge_bytes);
	fprintf(fp, "<aspace type=\"total\" size=\"%llu\"/>\n", h.zone_bytes + h.huge_bytes);
	fprintf(fp, "<aspace type=\"mprotect\" size=\"%llu\"/>\n", h.zone_bytes + h.huge_bytes);
	fprintf(fp, "</malloc>\n");
	return 0;
}
