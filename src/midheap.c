/* SPDX-License-Identifier: MIT */
/*
 * midheap.c - malloc's heap for mid sizes (8 KiB .. 64 KiB).
 *
 * Why not slabs: a slab class of n bytes rounds a request up by as much as
 * a quarter and keeps room for its own peak, and above a few KiB a slab
 * holds only a handful of blocks, so the free slots of half-empty slabs and
 * the rounding hold more memory than the blocks themselves lose to any
 * other scheme (alloc-test: 40 MiB of slabs for 34 MiB of class-rounded
 * blocks of 29.5 MiB requested).  A block this large costs its user a page
 * or more of writes, so a heap that fits it to 16 bytes and merges what is
 * freed is worth a lock and a few list operations per call (about 210
 * instructions a malloc+free pair more than the slab path's magazines).
 *
 * Layout.  An arena is a 256 KiB block of the buddy allocator (its head frame
 * PG_head | PG_mid, its tails compound, so free() finds it from any frame).
 * It holds a header, then chunks end to end, then a sentinel header that
 * is always "in use":
 *
 *   | arena | chunk | chunk | ... | chunk | sentinel |
 *
 * A chunk is a 16-byte header and its payload (16-byte aligned, a multiple
 * of 16 bytes): the size of the chunk and its MID_INUSE flag; prev_size,
 * the size of the chunk before it while that one is free and 0 while it is
 * in use (the boundary tag that lets a freed chunk find its predecessor);
 * and for a chunk in use a canary of its address and size that catches
 * invalid and double frees.  A chunk's change of state writes its
 * successor's prev_size and never reads it: the successor of a large free
 * chunk is a line nobody has touched for a while, and a store to it need
 * not wait for that line where a read-modify-write of a flag there would.
 *
 * Invariants (kmm_mid_validate(), heap_bad(), checks them): the chunks of
 * an arena tile it exactly; no two free chunks are adjacent (a free merges
 * at once); a chunk's prev_size is its predecessor's size if that is free,
 * else 0 (the first chunk's is 0); every free chunk is on exactly the list
 * its size maps to, and that list's bit is set.
 *
 * Free chunks are kept in segregated lists, 16 per power of two (two-level
 * bitmaps, as TLSF): a request looks at a few chunks of its own list for
 * one that fits (best fit where it is cheap), then takes the first chunk of
 * the smallest non-empty list whose every chunk fits, and splits off the
 * rest.  O(1) in the number of free chunks.
 *
 * Heaps.  Threads are dealt heaps round robin (4 per CPU, at most
 * MID_MAX_HEAPS), each with its own lock and arenas, so threads seldom
 * share a lock; a free takes the lock of the block's own heap, whichever
 * thread frees.  A heap keeps one empty arena for reuse and gives further
 * empty ones back to the buddy allocator at once (whose decay returns the
 * frames to the OS).  The free chunks of arenas in use go back to the OS by
 * aging (heap_age(): free across two passes, a quarter of KMM_DECAY_MS
 * apart) or at once by kmm_trim() (mid_trim()).
 */
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "midheap.h"
#include "os.h"
#include "page_alloc.h"

#define MID_ARENA_SIZE (KMM_PAGE_SIZE << MID_ARENA_ORDER)
#define MID_HDR 16u
#define MID_GRAIN 16u
#define MID_MIN_CHUNK 32u /* a header and a free chunk's two links */
#define MID_INUSE 1u
/*
 * Free chunks only (any change of a chunk writes its head anew, clearing
 * them): MID_AGED, free at the heap's last aging pass; MID_DECOMMITTED, its
 * whole pages decommitted since it became this chunk.
 */
#define MID_AGED 2u
#define MID_DECOMMITTED 4u
#define MID_FLAGS (MID_GRAIN - 1)
#define MID_SL_SHIFT 4
#define MID_SL (1u << MID_SL_SHIFT)
#define MID_FL 21 /* chunk sizes below 2^21 (arenas of up to 2^20) */
#define MID_FIT_SCAN 2 /* chunks of the request's own list looked at for a fit (cold lines each) */
#define MID_MAX_HEAPS 32
#if defined(__SANITIZE_THREAD__)
#define MID_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MID_TSAN 1
#endif
#endif
#ifndef MID_TSAN
#define MID_TSAN 0
#endif

struct mid_chunk {
	uint32_t prev_size; /* the previous chunk's size while it is free, else 0 */
	uint32_t canary;    /* in use: mid_canary(); 0 once freed */
	uint32_t head;      /* size | MID_INUSE */
	uint32_t list;      /* free: the list it is on, f * MID_SL + s (mapping()) */
	/* Free chunks only, in the payload: */
	struct mid_chunk *next, *prev;
};

struct mid_heap;
struct mid_arena {
	struct mid_heap *heap;
	struct list_head link; /* heap->arenas */
	uint32_t pad[6];
};
/* The first chunk's header follows the arena header; payloads are 16-byte aligned. */
_Static_assert(sizeof(struct mid_arena) % MID_GRAIN == 0, "arena header");
#define MID_FIRST_OFF ((uint32_t)sizeof(struct mid_arena))
#define MID_SPACE ((uint32_t)(MID_ARENA_SIZE - MID_FIRST_OFF - MID_HDR))
/* The largest request's chunk fits an arena, and every chunk size a mapping() list. */
_Static_assert(MID_MAX_SIZE + MID_HDR + MID_GRAIN <= MID_SPACE, "an arena holds the largest block");
_Static_assert(MID_ARENA_SIZE < (1ul << MID_FL), "chunk sizes map to MID_FL lists");

struct __attribute__((aligned(64))) mid_heap {
	kmm_flock_t lock;
	/*
	 * The thread the heap is biased to (its &mid_self), NULL once revoked
	 * or never granted; and that thread's "inside" flag.  See heap_lock().
	 */
	const char *bias;
	int bias_busy;
	uint32_t fl_map;           /* bit f: some sl_map[f] bit is set */
	uint16_t sl_map[MID_FL];   /* bit s: free[f][s] is not empty */
	struct mid_chunk *free[MID_FL][MID_SL];
	struct list_head arenas;
	/* Written under the lock, read by mid_totals() without it (relaxed). */
	unsigned long long in_use;
	unsigned long blocks;
	unsigned nr_arenas;
	unsigned nr_empty;         /* arenas that are one free chunk */
	unsigned frees;            /* the heap's frees: every 256th looks at the clock (heap_age()) */
	uint64_t aged_ms;          /* the last aging pass */
	/*
	 * Set (release) once the lock and lists are initialised, when the
	 * heap is first dealt: the heaps no thread uses stay untouched bss,
	 * not 3 KiB of every process's RSS each.
	 */
	bool ready;
};

static struct mid_heap mid_heaps[MID_MAX_HEAPS] KMM_SPARSE_BSS;
static unsigned mid_nr_heaps = 1;
static unsigned mid_next_heap;
static kmm_lock_t mid_ready_lock = KMM_LOCK_INIT; /* initialises heaps; fork takes it first */
static uint32_t mid_secret;
static __thread struct mid_heap *mid_tls __attribute__((tls_model("initial-exec")));
/* Its address names the thread in mid_heap.bias. */
static __thread char mid_self __attribute__((tls_model("initial-exec")));
/* os_membarrier() is registered: heaps may be biased. */
static bool mid_bias_ok;
static unsigned long mid_revokes; /* biases revoked (relaxed) */

static always_inline uint32_t chunk_size(const struct mid_chunk *c) { return c->head & ~MID_FLAGS; }
static always_inline struct mid_chunk *chunk_at(void *base, size_t off)
{
	return (struct mid_chunk *)((char *)base + off);
}
static always_inline struct mid_chunk *next_chunk(struct mid_chunk *c)
{
	return chunk_at(c, chunk_size(c));
}
static always_inline uint32_t mid_canary(const struct mid_chunk *c)
{
	uint32_t a = (uint32_t)((uintptr_t)c >> 4) * 0x9e3779b1u;
	return (a ^ chunk_size(c) ^ mid_secret) | 1u; /* never 0, the freed mark */
}
static always_inline void *chunk_payload(struct mid_chunk *c) { return (char *)c + MID_HDR; }
static always_inline struct mid_chunk *payload_chunk(const void *p)
{
	return (struct mid_chunk *)((char *)p - MID_HDR);
}
static always_inline void store_rel(unsigned long long *v, unsigned long long x)
{
	__atomic_store_n(v, x, __ATOMIC_RELAXED);
}

/* ---- the free lists ---- */

/* The list of chunks of @size: f = floor(log2), s = the next four bits (0 below 256 B). */
static always_inline void mapping(uint32_t size, unsigned *f, unsigned *s)
{
	unsigned fl = ilog2_ul(size);
	*f = fl;
	*s = fl < 8 ? 0 : (size >> (fl - MID_SL_SHIFT)) & (MID_SL - 1);
}

static always_inline void free_list_add(struct mid_heap *h, struct mid_chunk *c)
{
	unsigned f, s;
	mapping(chunk_size(c), &f, &s);
	c->list = f * MID_SL + s;
	struct mid_chunk *first = h->free[f][s];
	c->next = first;
	c->prev = NULL;
	if (first)
		first->prev = c;
	h->free[f][s] = c;
	h->sl_map[f] |= (uint16_t)(1u << s);
	h->fl_map |= 1u << f;
}

static always_inline void free_list_del(struct mid_heap *h, struct mid_chunk *c)
{
	unsigned f = c->list / MID_SL, s = c->list % MID_SL;
	if (c->next)
		c->next->prev = c->prev;
	if (c->prev) {
		c->prev->next = c->next;
		return;
	}
	h->free[f][s] = c->next;
	if (!c->next) {
		h->sl_map[f] &= (uint16_t)~(1u << s);
		if (!h->sl_map[f])
			h->fl_map &= ~(1u << f);
	}
}

/* A free chunk of at least @need bytes, off its list; NULL if none. */
static always_inline struct mid_chunk *find_fit(struct mid_heap *h, uint32_t need)
{
	unsigned f, s;
	mapping(need, &f, &s);
	/* Its own list holds chunks both below and above @need: try a few. */
	struct mid_chunk *c = h->free[f][s];
	for (int i = 0; c && i < MID_FIT_SCAN; i++, c = c->next) {
		if (chunk_size(c) >= need) {
			free_list_del(h, c);
			return c;
		}
	}
	/* Every chunk of a later list fits. */
	unsigned sl = s + 1 < MID_SL ? h->sl_map[f] & (~0u << (s + 1)) : 0;
	if (!sl) {
		uint32_t fl = f + 1 < MID_FL ? h->fl_map & (~0u << (f + 1)) : 0;
		if (!fl)
			return NULL;
		f = (unsigned)__builtin_ctz(fl);
		sl = h->sl_map[f];
	}
	c = h->free[f][__builtin_ctz(sl)];
	free_list_del(h, c);
	return c;
}

/* ---- arenas ---- */

static struct mid_arena *chunk_arena(struct mid_chunk *c)
{
	return (struct mid_arena *)((uintptr_t)c & ~(uintptr_t)(MID_ARENA_SIZE - 1));
}

static struct mid_chunk *arena_first(struct mid_arena *a) { return chunk_at(a, MID_FIRST_OFF); }

static big_text bool arena_new(struct mid_heap *h, unsigned gfp)
{
	struct page *head = alloc_pages(gfp & KMM_GFP_VALID_MASK & ~KMM_GFP_ZERO, MID_ARENA_ORDER);
	if (!head)
		return false;
	prep_compound(head, MID_ARENA_ORDER);
	set_page_flags(head, PG_head | PG_mid);
	struct mid_arena *a = page_to_virt(head);
	a->heap = h;
	list_add(&a->link, &h->arenas);
	struct mid_chunk *c = arena_first(a), *end = chunk_at(c, MID_SPACE);
	c->head = MID_SPACE;
	c->prev_size = 0;
	c->canary = 0;
	end->prev_size = MID_SPACE;
	end->head = MID_INUSE; /* the sentinel: size 0, never merged */
	end->canary = 0;
	free_list_add(h, c);
	__atomic_store_n(&h->nr_arenas, h->nr_arenas + 1, __ATOMIC_RELAXED);
	h->nr_empty++;
	return true;
}

static big_text void arena_release(struct mid_heap *h, struct mid_arena *a)
{
	struct page *head = virt_to_page(a);
	list_del(&a->link);
	__atomic_store_n(&h->nr_arenas, h->nr_arenas - 1, __ATOMIC_RELAXED);
	clear_compound(head, MID_ARENA_ORDER);
	set_page_flags(head, PG_head);
	free_pages(head, MID_ARENA_ORDER);
}

/* ---- the heap lock, biased to the heap's first thread ----
 *
 * A heap is locked for every malloc and free of its sizes; one lock
 * instruction to take the futex word and one to give it back cost alloc-test
 * at 1 thread 17% of its time (0.131 -> 0.109 s with the lock compiled out,
 * on this project's 2-core Xeon): each waits for the stores before it - the program's own
 * writes to its blocks, the list links' stores to cold lines - to leave the
 * store buffer.  Most heaps are used by one thread only (a heap per thread
 * up to 4 per CPU), so a heap is biased to the first thread dealt it: that
 * thread enters with plain stores (bias_busy = 1, then it checks that the
 * bias is still its own) and leaves with a plain store, no lock instruction.
 * Any other thread takes the futex lock and, finding the heap biased,
 * revokes the bias for good: it clears h->bias and runs os_membarrier(),
 * a barrier in every running thread, after which either the biased thread's
 * bias_busy = 1 is visible (it waits for the 0 that ends its pass) or that
 * thread's next check sees the bias gone and takes the futex lock too.
 * The barrier is one system call per heap that another thread ever touches
 * (a remote free, kmm_trim(), the validator, a fork).
 *
 * Invariant: a thread may touch a heap's lists and counters only while it
 * holds the futex lock and h->bias is NULL, or while h->bias is its own and
 * its bias_busy is 1.
 */
static always_inline bool heap_lock_biased(struct mid_heap *h)
{
	if (__atomic_load_n(&h->bias, __ATOMIC_RELAXED) != &mid_self)
		return false;
	__atomic_store_n(&h->bias_busy, 1, __ATOMIC_RELAXED);
	/* No fence: a revoker's os_membarrier() orders this store before our load. */
	__asm__ __volatile__("" ::: "memory");
	if (likely(__atomic_load_n(&h->bias, __ATOMIC_RELAXED) == &mid_self))
		return true;
	__atomic_store_n(&h->bias_busy, 0, __ATOMIC_RELEASE);
	return false;
}

/* Revoke @h's bias: futex lock held. */
static noinline big_text void heap_unbias(struct mid_heap *h)
{
	__atomic_store_n(&h->bias, NULL, __ATOMIC_RELAXED);
	__atomic_fetch_add(&mid_revokes, 1, __ATOMIC_RELAXED);
	os_membarrier();
	while (__atomic_load_n(&h->bias_busy, __ATOMIC_ACQUIRE))
		sched_yield();
}

/* Lock @h; true if by its bias (then heap_unlock() with true). */
static always_inline bool heap_lock(struct mid_heap *h)
{
	if (heap_lock_biased(h))
		return true;
	kmm_flock(&h->lock);
	if (unlikely(__atomic_load_n(&h->bias, __ATOMIC_RELAXED) != NULL))
		heap_unbias(h);
	return false;
}

static always_inline void heap_unlock(struct mid_heap *h, bool biased)
{
	if (biased)
		__atomic_store_n(&h->bias_busy, 0, __ATOMIC_RELEASE);
	else
		kmm_funlock(&h->lock);
}

/* ---- allocation ---- */

static bool heap_ready(struct mid_heap *h) { return __atomic_load_n(&h->ready, __ATOMIC_ACQUIRE); }

static noinline big_text struct mid_heap *heap_deal(void)
{
	unsigned i = __atomic_fetch_add(&mid_next_heap, 1, __ATOMIC_RELAXED) % mid_nr_heaps;
	struct mid_heap *h = &mid_heaps[i];
	if (!heap_ready(h)) {
		kmm_lock(&mid_ready_lock);
		if (!h->ready) {
			kmm_flock_init(&h->lock);
			list_init(&h->arenas);
			/* Before it is published: nobody can be inside it yet. */
			h->bias = mid_bias_ok ? &mid_self : NULL;
			__atomic_store_n(&h->ready, true, __ATOMIC_RELEASE);
		}
		kmm_unlock(&mid_ready_lock);
	}
	mid_tls = h;
	return h;
}

static always_inline struct mid_heap *heap_of_thread(void)
{
	struct mid_heap *h = mid_tls;
	return likely(h != NULL) ? h : heap_deal();
}

/* Mark @c (taken off its list) in use with @need bytes, the rest split off. */
static big_text void chunk_use(struct mid_heap *h, struct mid_chunk *c, uint32_t need)
{
	uint32_t size = chunk_size(c);
	if (size == MID_SPACE)
		h->nr_empty--;
	if (size - need >= MID_MIN_CHUNK) {
		struct mid_chunk *rest = chunk_at(c, need);
		rest->head = size - need;
		rest->prev_size = 0;
		rest->canary = 0;
		next_chunk(rest)->prev_size = size - need;
		free_list_add(h, rest);
		size = need;
	} else {
		next_chunk(c)->prev_size = 0;
	}
	c->head = size | MID_INUSE;
	c->canary = mid_canary(c);
	store_rel(&h->in_use, h->in_use + size);
	__atomic_store_n(&h->blocks, h->blocks + 1, __ATOMIC_RELAXED);
}

static always_inline uint32_t chunk_need(size_t size)
{
	return (uint32_t)ALIGN_UP(size + MID_HDR, MID_GRAIN);
}

big_text void *mid_alloc(size_t size, unsigned gfp)
{
	KMM_ASSERT(size <= MID_MAX_SIZE);
	uint32_t need = chunk_need(size);
	struct mid_heap *h = heap_of_thread();
	bool biased = heap_lock(h);
	struct mid_chunk *c = find_fit(h, need);
	if (!c) {
		if (!arena_new(h, gfp)) {
			heap_unlock(h, biased);
			errno = ENOMEM;
			return NULL;
		}
		c = find_fit(h, need);
	}
	chunk_use(h, c, need);
	heap_unlock(h, biased);
	void *p = chunk_payload(c);
	if (gfp & KMM_GFP_ZERO)
		memset(p, 0, chunk_size(c) - MID_HDR);
	return p;
}

/* ---- giving memory back ---- */

/* Decommit @c's whole pages past its header and links; the bytes it gave back. */
static size_t chunk_decommit(struct mid_chunk *c)
{
	uintptr_t lo = ALIGN_UP((uintptr_t)c + MID_MIN_CHUNK, (uintptr_t)KMM_PAGE_SIZE);
	uintptr_t hi = ((uintptr_t)c + chunk_size(c)) & ~(uintptr_t)(KMM_PAGE_SIZE - 1);
	c->head |= MID_DECOMMITTED;
	if (hi <= lo)
		return 0;
	os_decommit((void *)lo, hi - lo);
	return hi - lo;
}

/*
 * Memory back to the OS without a trim: every KMM_DECAY_MS / 4 (looked at
 * once every 256 frees, so that the clock stays off the fast path) a pass
 * over the heap decommits the free chunks that were free at the pass before
 * too, and marks the others.  So a chunk left free for one to two periods
 * is decommitted, and one the program reuses at once is not (a merge or a
 * split makes a new, unmarked chunk).  kmm_trim() (@now) decommits every
 * free chunk at once.  The free lists are walked, not the arenas: a pass
 * costs the free chunks that can hold a page.  Heap @h is locked; returns
 * the bytes decommitted.
 */
static big_text size_t heap_decommit(struct mid_heap *h, bool now)
{
	size_t bytes = 0;
	for (unsigned f = KMM_PAGE_SHIFT; f < MID_FL; f++) {
		if (!(h->fl_map & (1u << f)))
			continue;
		for (unsigned sl = 0; sl < MID_SL; sl++) {
			for (struct mid_chunk *c = h->free[f][sl]; c; c = c->next) {
				if (c->head & MID_DECOMMITTED)
					continue;
				if (now || (c->head & MID_AGED))
					bytes += chunk_decommit(c);
				else
					c->head |= MID_AGED;
			}
		}
	}
	return bytes;
}

static noinline big_text void heap_age(struct mid_heap *h)
{
	uint64_t now = kmm_now_ms();
	if (now - h->aged_ms < (uint64_t)kmm_tunable(KMM_TUNE_DECAY_MS) / 4)
		return;
	h->aged_ms = now;
	heap_decommit(h, false);
}

/* ---- pointers back ---- */

/*
 * The chunk of @p, checked: inside its arena, a chunk start, in use, its
 * canary intact.  Reads only the arena's own memory (its frames are mapped
 * while the arena exists, which a live block guarantees).
 */
static always_inline struct mid_chunk *checked_chunk(struct page *head, const void *p, const char *fn)
{
	uintptr_t base = (uintptr_t)page_to_virt(head), off = (uintptr_t)p - base;
	KMM_CHECK((off & (MID_GRAIN - 1)) == 0 && off >= MID_FIRST_OFF + MID_HDR &&
			  off < MID_ARENA_SIZE - MID_HDR,
		  fn, "invalid pointer %p", p);
	struct mid_chunk *c = payload_chunk(p);
	uint32_t size = chunk_size(c);
	if (unlikely(!(c->head & MID_INUSE) || c->canary != mid_canary(c) || size < MID_MIN_CHUNK ||
		     off - MID_HDR + size > MID_FIRST_OFF + MID_SPACE))
		kmm_fatal(fn, "invalid pointer %p%s", p,
			  c->canary == 0 && !(c->head & MID_INUSE) ? " (double free?)" : "");
	return c;
}

static always_inline struct mid_heap *lock_arena_heap(struct page *head, bool *biased)
{
	struct mid_arena *a = page_to_virt(head);
	struct mid_heap *h = a->heap; /* fixed while the arena holds a live block */
	*biased = heap_lock(h);
	return h;
}

/* Free @c (in use, of heap @h, locked): merge with free neighbours, keep or release. */
static always_inline void chunk_free(struct mid_heap *h, struct mid_chunk *c)
{
	uint32_t size = chunk_size(c);
	struct mid_arena *a = chunk_arena(c);
	store_rel(&h->in_use, h->in_use - size);
	__atomic_store_n(&h->blocks, h->blocks - 1, __ATOMIC_RELAXED);
	c->canary = 0; /* with MID_INUSE clear: a later free of it is a double free */
	c->head &= ~MID_INUSE;
	struct mid_chunk *next = next_chunk(c);
	if (!(next->head & MID_INUSE)) {
		free_list_del(h, next);
		size += chunk_size(next);
	}
	if (c->prev_size) {
		struct mid_chunk *prev = chunk_at(c, -(ptrdiff_t)c->prev_size);
		free_list_del(h, prev);
		size += chunk_size(prev);
		c = prev;
	}
	c->head = size;
	c->prev_size = 0; /* a free chunk's predecessor is in use */
	next_chunk(c)->prev_size = size;
	if (size == MID_SPACE) {
		/* The arena is empty: keep one such per heap, give the rest back. */
		if (h->nr_empty >= 1) {
			arena_release(h, a);
			return;
		}
		h->nr_empty++;
	}
	free_list_add(h, c);
}

big_text void mid_free(struct page *head, void *p, const char *fn)
{
	bool biased;
	struct mid_heap *h = lock_arena_heap(head, &biased);
	chunk_free(h, checked_chunk(head, p, fn));
	if (unlikely(++h->frees % 256 == 0))
		heap_age(h);
	heap_unlock(h, biased);
}

big_text size_t mid_usable_size(struct page *head, const void *p, const char *fn)
{
	bool biased;
	struct mid_heap *h = lock_arena_heap(head, &biased);
	size_t n = chunk_size(checked_chunk(head, p, fn)) - MID_HDR;
	heap_unlock(h, biased);
	return n;
}

big_text bool mid_resize(struct page *head, void *p, size_t size, const char *fn)
{
	uint32_t need = chunk_need(size);
	bool biased;
	struct mid_heap *h = lock_arena_heap(head, &biased);
	struct mid_chunk *c = checked_chunk(head, p, fn), *next = next_chunk(c);
	uint32_t have = chunk_size(c), avail = have;
	if (need > have) {
		/* Grow into a free successor, if it is large enough. */
		if ((next->head & MID_INUSE) || have + chunk_size(next) < need) {
			heap_unlock(h, biased);
			return false;
		}
		free_list_del(h, next);
		avail += chunk_size(next);
		next_chunk(next)->prev_size = 0;
	}
	/* Now @c may take @avail bytes; what is past @need goes back when it can stand alone. */
	uint32_t keep = avail - need >= MID_MIN_CHUNK ? need : avail;
	store_rel(&h->in_use, h->in_use + keep - have);
	c->head = keep | MID_INUSE;
	c->canary = mid_canary(c);
	if (keep < avail) {
		struct mid_chunk *rest = chunk_at(c, keep);
		rest->head = (avail - keep) | MID_INUSE;
		rest->prev_size = 0;
		rest->canary = mid_canary(rest);
		store_rel(&h->in_use, h->in_use + avail - keep);
		__atomic_store_n(&h->blocks, h->blocks + 1, __ATOMIC_RELAXED);
		chunk_free(h, rest); /* merges it with a free successor */
	}
	heap_unlock(h, biased);
	return true;
}

/* ---- statistics, trimming, checks ---- */

void mid_totals(struct mid_totals *t)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < MID_MAX_HEAPS; i++) {
		struct mid_heap *h = &mid_heaps[i];
		if (!heap_ready(h))
			continue;
		t->in_use_bytes += __atomic_load_n(&h->in_use, __ATOMIC_RELAXED);
		t->blocks += __atomic_load_n(&h->blocks, __ATOMIC_RELAXED);
		t->arenas += __atomic_load_n(&h->nr_arenas, __ATOMIC_RELAXED);
	}
	t->arena_bytes = (unsigned long long)t->arenas * MID_ARENA_SIZE;
}

/*
 * Empty arenas go back to the zone (which decommits them); in the others
 * the free chunks' whole pages are decommitted in place, as glibc's
 * malloc_trim() does in its arenas: they read as zero when a later chunk
 * takes them.  The zone still counts those frames resident (its count stays
 * an upper bound).  Returns the bytes decommitted in place.
 */
rare size_t mid_trim(void)
{
	size_t decommitted = 0;
	for (unsigned i = 0; i < mid_nr_heaps; i++) {
		struct mid_heap *h = &mid_heaps[i];
		if (!heap_ready(h))
			continue;
		bool biased = heap_lock(h);
		struct list_head *pos, *tmp;
		list_for_each_safe(pos, tmp, &h->arenas) {
			struct mid_arena *a = list_entry(pos, struct mid_arena, link);
			struct mid_chunk *c = arena_first(a);
			if (chunk_size(c) != MID_SPACE || (c->head & MID_INUSE))
				continue;
			free_list_del(h, c);
			h->nr_empty--;
			arena_release(h, a);
		}
		decommitted += heap_decommit(h, true);
		heap_unlock(h, biased);
	}
	return decommitted;
}

#define VCHECK(cond, ...)                                                                         \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			kmm_warn("kmm_mid_validate: " __VA_ARGS__);                             \
			bad = true;                                                               \
			goto out;                                                                 \
		}                                                                                 \
	} while (0)

/* Every invariant of the header comment, for heap @h (locked). */
static bool heap_bad(struct mid_heap *h)
{
	bool bad = false;
	unsigned long free_seen = 0, listed = 0, empty = 0, blocks = 0, arenas = 0;
	unsigned long long in_use = 0;
	struct list_head *pos;
	list_for_each(pos, &h->arenas) {
		struct mid_arena *a = list_entry(pos, struct mid_arena, link);
		struct page *head = virt_to_page(a);
		VCHECK(head && page_flags(head) == (PG_head | PG_mid), "arena %p: its frame is not a mid arena",
		       (void *)a);
		VCHECK(a->heap == h, "arena %p: heap %p, listed on %p", (void *)a, (void *)a->heap, (void *)h);
		struct mid_chunk *c = arena_first(a), *end = chunk_at(c, MID_SPACE);
		bool prev_inuse = true;
		uint32_t prev_size = 0, used = 0;
		arenas++;
		while (c != end) {
			uint32_t size = chunk_size(c);
			VCHECK(size >= MID_MIN_CHUNK && (char *)c + size <= (char *)end,
			       "chunk %p: size %u out of its arena", (void *)c, size);
			VCHECK(c->prev_size == (prev_inuse ? 0 : prev_size), "chunk %p: prev_size %u, not %u",
			       (void *)c, c->prev_size, prev_inuse ? 0 : prev_size);
			VCHECK((c->head & MID_FLAGS & ~(MID_INUSE | MID_AGED | MID_DECOMMITTED)) == 0,
			       "chunk %p: unknown flags %#x", (void *)c, c->head & MID_FLAGS);
			if (c->head & MID_INUSE) {
				VCHECK(!(c->head & (MID_AGED | MID_DECOMMITTED)), "chunk %p: in use, marked free",
				       (void *)c);
				VCHECK(c->canary == mid_canary(c), "chunk %p: canary overwritten", (void *)c);
				used += size;
				blocks++;
			} else {
				VCHECK(prev_inuse, "chunk %p: two free chunks side by side", (void *)c);
				free_seen++;
				if (size == MID_SPACE)
					empty++;
			}
			prev_inuse = c->head & MID_INUSE;
			prev_size = size;
			c = next_chunk(c);
		}
		VCHECK(end->head == MID_INUSE, "arena %p: sentinel overwritten", (void *)a);
		VCHECK(end->prev_size == (prev_inuse ? 0 : prev_size), "arena %p: sentinel prev_size",
		       (void *)a);
		in_use += used;
	}
	for (unsigned f = 0; f < MID_FL; f++) {
		VCHECK(!!(h->fl_map & (1u << f)) == !!h->sl_map[f], "heap %p: first-level bit %u", (void *)h, f);
		for (unsigned s = 0; s < MID_SL; s++) {
			VCHECK(!!(h->sl_map[f] & (1u << s)) == !!h->free[f][s], "heap %p: list bit %u/%u",
			       (void *)h, f, s);
			struct mid_chunk *prev = NULL;
			for (struct mid_chunk *c = h->free[f][s]; c; prev = c, c = c->next) {
				unsigned cf, cs;
				mapping(chunk_size(c), &cf, &cs);
				VCHECK(!(c->head & MID_INUSE) && cf == f && cs == s && c->list == f * MID_SL + s &&
					       c->prev == prev,
				       "heap %p: chunk %p on the wrong list", (void *)h, (void *)c);
				VCHECK(++listed <= free_seen, "heap %p: list %u/%u holds chunks of no arena",
				       (void *)h, f, s);
			}
		}
	}
	VCHECK(listed == free_seen, "heap %p: %lu free chunks, %lu listed", (void *)h, free_seen, listed);
	VCHECK(empty == h->nr_empty && arenas == h->nr_arenas, "heap %p: arena counts", (void *)h);
	VCHECK(in_use == h->in_use && blocks == h->blocks, "heap %p: in-use counts", (void *)h);
out:
	return bad;
}

KMM_EXPORT rare int kmm_mid_validate(void)
{
	kmm_ensure_init();
	bool bad = false;
	for (unsigned i = 0; i < MID_MAX_HEAPS && !bad; i++) {
		if (!heap_ready(&mid_heaps[i]))
			continue;
		bool biased = heap_lock(&mid_heaps[i]);
		bad = heap_bad(&mid_heaps[i]);
		heap_unlock(&mid_heaps[i], biased);
	}
	if (bad) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

bool mid_bias_enabled(void) { return mid_bias_ok; }
unsigned long mid_bias_revokes(void) { return __atomic_load_n(&mid_revokes, __ATOMIC_RELAXED); }

void mid_init(void)
{
	long cpus = os_nr_cpus();
	mid_nr_heaps = (unsigned)MIN(MAX(cpus, 1L) * 4, (long)MID_MAX_HEAPS);
	/*
	 * ThreadSanitizer cannot see os_membarrier()'s ordering, and would
	 * report the biased thread's and a revoker's accesses as races: under
	 * it every heap uses its futex lock.
	 */
#if !MID_TSAN
	mid_bias_ok = os_membarrier_register();
#endif
	mid_secret = (uint32_t)((uintptr_t)&mid_secret >> 4) ^ (uint32_t)kmm_now_ms() * 0x85ebca6bu;
}

/* fork: the ready lock first (no heap becomes ready meanwhile), then every ready heap's. */
rare void mid_fork_prepare(void)
{
	kmm_lock(&mid_ready_lock);
	for (unsigned i = 0; i < MID_MAX_HEAPS; i++)
		if (mid_heaps[i].ready) {
			kmm_flock(&mid_heaps[i].lock);
			/* The biased thread might be inside, or not be in the child at all. */
			if (mid_heaps[i].bias)
				heap_unbias(&mid_heaps[i]);
		}
}

rare void mid_fork_parent(void)
{
	for (unsigned i = 0; i < MID_MAX_HEAPS; i++)
		if (mid_heaps[i].ready)
			kmm_funlock(&mid_heaps[i].lock);
	kmm_unlock(&mid_ready_lock);
}

rare void mid_fork_child(void)
{
	for (unsigned i = 0; i < MID_MAX_HEAPS; i++)
		if (mid_heaps[i].ready)
			kmm_flock_init(&mid_heaps[i].lock); /* biases: revoked in mid_fork_prepare() */
	kmm_lock_init(&mid_ready_lock);
}
