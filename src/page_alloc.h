/* SPDX-License-Identifier: MIT */
/*
 * page_alloc.h - the page allocator's types and internal interface.
 *
 * Words (the kernel's):
 *   page frame   4 KiB of memory; numbered by its pfn, counted from the
 *                start of its zone.  Frames are not addresses: a section
 *                maps its frames at a virtual address (its linear map), so a
 *                later vmalloc can map the same frames elsewhere.
 *   struct page  the descriptor of one frame (the kernel's mem_map entry).
 *   section      KMM_SECTION_PAGES frames (4 MiB) a zone grows by; one
 *                max-order block.  Its descriptors live out of band, in a
 *                struct mem_section, so a user overflow cannot reach them.
 *   zone         a set of sections with free_area[order] lists.
 *   block        2^order frames, aligned to 2^order frames.
 *   pcp          a thread's cache of free blocks of order <= PCP_MAX_ORDER.
 */
#ifndef KMM_PAGE_ALLOC_H
#define KMM_PAGE_ALLOC_H

#include "internal.h"
#include "pagemap.h"

/* Page flags.  Exactly one of the state flags holds for a block head. */
enum {
	PG_buddy = 1u << 0, /* head of a free block on free_area[order] */
	PG_pcp = 1u << 1,   /* head of a free block on a thread's pcp list */
	PG_head = 1u << 2,  /* head of an allocated block of 2^order pages */
	PG_tail = 1u << 3,  /* tail of an allocated compound block: ->head */
	PG_slab = 1u << 4,  /* with PG_head: the block is a slab */
	PG_large = 1u << 5, /* with PG_head: a kmalloc block of ->nr_pages */
	PG_decay = 1u << 6, /* with PG_buddy: queued on the zone's decay list */
	PG_isolated = 1u << 7, /* taken off the lists to be decommitted/released */
	PG_mid = 1u << 8,   /* with PG_head: an arena of malloc's mid-size heap (midheap.c) */
};

struct kmm_cache;
struct slab_thread;

/*
 * One frame's descriptor: one cache line, so that a descriptor is one
 * multiply-free index away and two slabs' descriptors, written by different
 * threads, never share a line.  The union holds what the frame's state
 * needs; a page that is neither a block head nor a compound tail has flags 0
 * and its other fields mean nothing.
 */
struct __attribute__((aligned(64))) page {
	uint16_t flags;    /* PG_*; written under the zone lock or by the block's owner */
	uint8_t order;     /* block order (heads) */
	uint8_t spare;     /* free: the header is 8 bytes either way */
	union {
		uint32_t nr_pages; /* PG_large: pages in the kmalloc block */
		struct {
			/*
			 * PG_slab: slots linked so far (holder-only while frozen;
			 * objects once unfrozen): the rest have never been touched.
			 */
			uint16_t nr_init;
			/*
			 * Holder-only: a countdown of the holder's frees that
			 * calls slab_free_held() at 0.  Held PARTIAL: objects out
			 * with users as the holder last counted them (others' frees
			 * since are not taken off: an upper bound, so 0 means
			 * empty); FULL: 1; ACTIVE: UINT16_MAX, restarted at 0.
			 */
			uint16_t held_used;
		};
	};
	union {
		/* PG_buddy / PG_pcp / PG_isolated heads */
		struct {
			struct list_head lru;   /* free_area list; pcp uses lru.next only */
			struct list_head decay; /* zone->decay_list, oldest first (PG_decay) */
			uint64_t freed_ms;      /* when it joined the decay list */
		};
		/* PG_slab heads: the slab (SLUB keeps it in struct page too) */
		struct {
			struct kmm_cache *slab_cache;
			/* freelist | inuse | frozen, changed by CAS only (see slab.c) */
			uint64_t counters;
			struct list_head slab_list; /* node partial list, or cpu partial (next only) */
			/*
			 * The thread holding the slab frozen (0 when unfrozen) or'ed
			 * with where it keeps the slab (HELD_*, slab.h), and the
			 * objects that thread freed to it since: only the holder
			 * writes either; others read owner (relaxed) to learn that
			 * the slab is not theirs.  One word, so that the free fast
			 * path's one compare asks both "mine?" and "my active slab?".
			 */
			uintptr_t owner;
			void *local_free;
			/* Objects on local_free (holder-only), so a refill knows what it took. */
			unsigned nr_local;
		};
		/* PG_tail */
		struct page *head;
	};
};

/*
 * A section: 4 MiB of frames and their descriptors (64 KiB of mem_map
 * first, then the rest).  Allocated aligned to SECTION_DESC_ALIGN, a power
 * of two above its size, so page_section() is a mask.  Descriptors are
 * recycled, never unmapped, so a racing lookup never touches freed memory.
 */
#define SECTION_DESC_ALIGN (128ul * 1024)
#define PAGEBLOCK_ORDER 6 /* 256 KiB: the unit a kind is kept by (see MT_SMALL) */
struct zone;
struct mem_section {
	struct page mem_map[KMM_SECTION_PAGES];
	/*
	 * The scalars and small arrays come before the per-frame bytes, so
	 * that they and the first pageblocks' head_delta and slab_tag entries
	 * share the page after mem_map: a section whose first pageblocks alone
	 * are populated (a small program's) has two descriptor pages resident,
	 * not three.
	 */
	uintptr_t vaddr;           /* virtual address of frame 0 (linear map) */
	struct zone *zone;         /* owner; NULL while on the recycle list */
	unsigned long start_pfn;   /* zone pfn of frame 0 */
	struct mem_section *next_free; /* recycle list link */
	/* Per pageblock: the kind whose lists its free blocks below PAGEBLOCK_ORDER join. */
	uint8_t pageblock_mt[KMM_SECTION_PAGES >> PAGEBLOCK_ORDER];
	/* 1 bit per frame: may be resident (allocated since last decommit). */
	uint64_t resident[KMM_SECTION_PAGES / 64];
	/*
	 * Per frame: how many frames back the head of its compound slab is
	 * (slabs of up to 255 pages), 0 for heads and every other frame.
	 * free() finds a slab's head with a subtraction, no branch on PG_tail
	 * (on random objects that branch was mispredicted 38% of the time),
	 * and from this dense array rather than the tail's own descriptor line.
	 */
	uint8_t head_delta[KMM_SECTION_PAGES];
	/*
	 * Per frame, written by the slab layer (slab.h, slab_tag_of()): for
	 * every frame of a kmalloc slab that a thread holds, that thread's tag
	 * and the slab's class; 0 for every other frame.  free() learns "a slab
	 * of mine, of this class" from this dense array (16 frames a cache
	 * line) without reading the slab's descriptor.
	 */
	uint32_t slab_tag[KMM_SECTION_PAGES];
};
_Static_assert(sizeof(struct page) == 64, "struct page is not one cache line");
_Static_assert(sizeof(struct mem_section) <= SECTION_DESC_ALIGN, "mem_section too big");

/*
 * Two kinds of pageblocks, as the kernel's migratetypes: small blocks
 * (order <= PCP_MAX_ORDER: slabs, pcp lists) and large ones (page runs, big
 * slabs).  Each kind is served from pageblocks of its own, so that a slab of
 * a few pages does not settle in the tail of a freed run and keep it from
 * merging back, which makes the zone grow (mstress).  A free block of a
 * whole pageblock or more has no kind (MT_FREE): either kind takes it, and
 * the pageblocks it takes become of that kind.  So free memory moves between
 * the kinds in 256 KiB pieces; with whole sections as the unit, 9-10 MiB sat
 * free in one kind's sections at mstress's peak while the other grew the
 * zone.  A request takes a block of the other kind only when the zone
 * cannot grow.
 */
enum { MT_SMALL, MT_LARGE, MT_FREE, MT_TYPES };

struct free_area {
	struct list_head free_list[MT_TYPES];
	unsigned long nr_free; /* blocks on the lists, of both kinds */
};

#define ZONE_MAX_SECTIONS 16384 /* 64 GiB per zone */
#define ZONE_FIRST_SECTIONS 16  /* section[] slots in the zone itself: 64 MiB */
#define PCP_MAX_ORDER 3         /* the kernel's PAGE_ALLOC_COSTLY_ORDER */
#define DECAY_MIN_ORDER 4       /* free blocks of >= 64 KiB are decommitted after a delay */
#define DIRTY_MIN_PAGES 1024ul  /* the resident cap's least slack: 4 MiB (zone_resident_excess()) */
#define HUGE_CACHE_SLOTS 16
#define HUGE_CHUNK (2ul << 20) /* huge mappings are whole chunks (see huge_map()) */
#define HUGE_CACHE_MIN (64ul << 20)
#define HUGE_CACHE_MAX (256ul << 20)
#define HUGE_CACHE_LIVE 3

/*
 * A zone.  Every field below lock is guarded by it; fields read without it
 * say so.
 */
struct zone {
	/*
	 * Held by zone_decay() for its whole run, including the window where
	 * blocks are isolated with the zone lock dropped, so that fork never
	 * copies a half-done decay into a child with nobody to finish it.
	 * Taken before the zone lock; slow paths only try it, the background
	 * thread waits for it.
	 */
	kmm_lock_t decay_lock;
	kmm_lock_t lock;
	const char *name;
	int node;
	struct free_area free_area[KMM_MAX_ORDER];
	unsigned free_mask[MT_TYPES];  /* bit k: free_area[k].free_list[type] non-empty */
	struct list_head decay_list;   /* free blocks >= DECAY_MIN_ORDER with resident frames */
	unsigned long decay_pages;     /* resident frames of the blocks on decay_list */
	unsigned long isolated_pages;  /* frames of blocks a decay pass set aside (PG_isolated) */
	pthread_cond_t decay_wait;     /* the decay thread waits here (with lock) */
	bool decay_thread_waits;       /* it does: signal when decay_list becomes non-empty */
	unsigned long managed_pages;   /* frames given to the lists (all but the growing section's rest) */
	unsigned long free_pages;      /* frames on free_area lists */
	unsigned long pcp_pages;       /* frames on threads' pcp lists */
	unsigned long resident_pages;  /* frames with their resident bit set */
	unsigned long peak_busy_pages; /* the most frames ever allocated or on pcp lists */
	unsigned long min_free_pages;  /* watermark: only KMM_GFP_HIGH goes below */
	uint64_t last_decay_ms;
	unsigned long sections_added, sections_released;
	unsigned long peak_managed_pages; /* the most managed_pages ever were */
	unsigned nr_sections;          /* sections mapped */
	unsigned section_hwm;          /* slots ever used in section[] */
	unsigned free_slot_top;        /* stack of free section[] slots */
	unsigned *free_slots;          /* [zone_slot_cap()] */
	struct mem_section **section;  /* [zone_slot_cap()], index = pfn / KMM_SECTION_PAGES */
	/*
	 * The first ZONE_FIRST_SECTIONS slots, in the zone itself: a heap of up
	 * to 64 MiB needs no table of its own, whose first page every process
	 * had resident.  The section that needs one more slot moves them to a
	 * mapped table of ZONE_MAX_SECTIONS (zone_table_grow()).  Only the
	 * zone lock's holder reads or writes the slots.
	 */
	struct mem_section *section_first[ZONE_FIRST_SECTIONS];
	unsigned free_slots_first[ZONE_FIRST_SECTIONS];
	/*
	 * The newest section reaches the free lists a few pageblocks at a time,
	 * as the kernel's deferred struct page init hands memory to the buddy
	 * allocator: frames [grow_next, KMM_SECTION_PAGES) of @growing are in
	 * no list and no block, not counted in managed_pages, and their
	 * descriptors unwritten.  Handed over whole, a section's first split
	 * wrote block heads at 2 MiB, 1 MiB, 512 and 256 KiB: four pages of
	 * mem_map resident in a program that uses a few frames.  NULL when
	 * every section is wholly on the lists.
	 */
	struct mem_section *growing;
	unsigned grow_next;
	/*
	 * Freed mappings beyond the largest block, kept for reuse (oldest
	 * first) until KMM_DECAY_MS after their free, within huge_cache_cap().
	 */
	struct huge_cached {
		void *addr;
		size_t len;
		uint64_t freed_ms;
	} huge_cache[HUGE_CACHE_SLOTS];
	unsigned nr_huge_cached;
	size_t huge_cached_bytes;
	size_t huge_live_bytes;  /* mapped by huge_map() and not given back (atomic) */
};

/*
 * page->flags of a frame may be read by a thread that does not own it (the
 * merge check of free_one_block() looks at a buddy that may be allocated and
 * being rewritten by its owner).  Only the zone lock holder ever sets
 * PG_buddy, so such a read gives a correct answer; these relaxed accessors
 * make the race explicit (the kernel's READ_ONCE/WRITE_ONCE).
 */
static always_inline unsigned page_flags(const struct page *p)
{
	return __atomic_load_n(&p->flags, __ATOMIC_RELAXED);
}
static always_inline void set_page_flags(struct page *p, unsigned flags)
{
	__atomic_store_n(&p->flags, (uint16_t)flags, __ATOMIC_RELAXED);
}

/* The zone behind kmm_alloc_pages() and every layer above. */
extern KMM_HIDDEN struct zone zone_normal;

static always_inline struct mem_section *page_section(const struct page *page)
{
	return (struct mem_section *)((uintptr_t)page & ~(SECTION_DESC_ALIGN - 1));
}
static always_inline size_t page_index(const struct page *page)
{
	return (size_t)(page - page_section(page)->mem_map);
}
static always_inline unsigned long page_to_pfn(const struct page *page)
{
	return page_section(page)->start_pfn + page_index(page);
}
static always_inline void *page_to_virt(const struct page *page)
{
	return (void *)(page_section(page)->vaddr + (page_index(page) << KMM_PAGE_SHIFT));
}
/* The descriptor of the frame mapped at @addr, or NULL if no zone owns it. */
static always_inline struct page *virt_to_page(const void *addr)
{
	uintptr_t e = pagemap_lookup(addr);
	if (unlikely(!pagemap_is_section(e)))
		return NULL;
	struct mem_section *ms = pagemap_section(e);
	return &ms->mem_map[((uintptr_t)addr >> KMM_PAGE_SHIFT) & (KMM_SECTION_PAGES - 1)];
}

/* For a page inside a compound block: its head; otherwise the page itself. */
static always_inline struct page *compound_head(struct page *page)
{
	return (page_flags(page) & PG_tail) ? page->head : page;
}

/* The head of @page's block and the head's flags, reading each flags word once. */
static always_inline struct page *compound_head_flags(struct page *page, unsigned *flags)
{
	unsigned f = page_flags(page);
	if (f & PG_tail) {
		page = page->head;
		f = page_flags(page);
	}
	*flags = f;
	return page;
}

/*
 * Allocate a block of 2^order pages; the head comes back with PG_head and
 * ->order set.  NULL with errno set (EINVAL, ENOMEM).  KMM_GFP_ZERO honoured.
 */
struct page *alloc_pages(unsigned flags, unsigned order);
/* Free a block from alloc_pages(); the caller has checked the head. */
void free_pages(struct page *page, unsigned order);

/*
 * Allocate exactly @nr pages (<= KMM_SECTION_PAGES) as one contiguous run:
 * a block of the covering order (at least @min_order, which sets the run's
 * alignment) whose unused tail goes back to the zone.  The head has
 * PG_head | PG_large and ->nr_pages = nr.
 */
struct page *alloc_pages_exact(unsigned flags, unsigned long nr, unsigned min_order);
void free_pages_exact(struct page *page, unsigned long nr);
/* Give the tail of a run back so that it keeps @new_nr (< nr_pages) pages. */
void shrink_pages_exact(struct page *page, unsigned long new_nr);
/*
 * Grow a run from alloc_pages_exact() in place to @new_nr pages if the
 * frames behind it are free; true on success.
 */
bool grow_pages_exact(struct page *page, unsigned long new_nr, unsigned flags);
/*
 * Whether @page's frame is free (in a buddy block, on a pcp list, or
 * isolated for release): for an invalid free's report only.  No lock: the
 * answer may be stale, but the descriptors it reads always exist.
 */
bool page_is_free(struct page *page);

/* Mark/unmark the tails of a block as belonging to @head (compound pages). */
/*
 * A mapping of @bytes (beyond the largest block) aligned to @align (a power
 * of two, at least a section), HUGE_CHUNK-rounded; its length goes to
 * *@len.  Made of pooled freed pages where it can be (a fitting piece, or
 * pieces moved in); with @zero a fresh mapping, which reads as zero.  NULL
 * with errno ENOMEM.
 */
void *huge_map(size_t bytes, size_t align, bool zero, size_t *len);
/* Give back a mapping, or a chunk-aligned tail of one: pooled for reuse, or unmapped. */
void huge_unmap(void *addr, size_t len);
/*
 * Grow a mapping from huge_map() in place to @new_len (chunk multiples),
 * its new part filled from the pool.  0, or -1 (unchanged) if the address
 * space after it is taken.
 */
int huge_grow_inplace(void *addr, size_t old_len, size_t new_len);
/*
 * Move a mapping from huge_map() to a fresh section-aligned place of
 * @new_len bytes (no copy), its new part filled from the pool, the pagemap
 * pages for it opened (publishing it cannot fail).  The new address, or
 * NULL with errno ENOMEM (the mapping is then where it was).
 */
void *huge_move(void *addr, size_t old_len, size_t new_len);
/* Bytes of freed mappings kept mapped for reuse. */
size_t huge_cached_bytes(void);

void prep_compound(struct page *head, unsigned order);
void clear_compound(struct page *head, unsigned order);

/* Drain the calling thread's pcp lists into the zone. */
void pcp_drain_local(void);
/* Called once by the thread layer when a thread exits. */
void pcp_thread_exit(void);

/* Decommit old free blocks; with @force, all of them, now.  Returns pages given back. */
unsigned long zone_decay(struct zone *z, bool force);

/* Figures for kmm_heap_stats(). */
unsigned long zone_peak_pages(void);
unsigned long long zone_metadata_bytes(void);

/* fork: zone, pcp registry and descriptor locks; the child drains dead threads' pcp lists. */
void page_fork_prepare(void);
void page_fork_parent(void);
void page_fork_child(void);
void page_fork_child_reclaim(void);

void page_alloc_init(void);

#endif /* KMM_PAGE_ALLOC_H */
