/* SPDX-License-Identifier: MIT */
/*
 * slab.h - the slab layer's internal interface (used by kmalloc and init).
 */
#ifndef KMM_SLAB_INTERNAL_H
#define KMM_SLAB_INTERNAL_H

#include "internal.h"
#include "page_alloc.h"

/*
 * A thread's view of one cache (the kernel's struct kmem_cache_cpu).  Only
 * the owning thread touches it, except kmm_cache_destroy() under the
 * caller's promise that nobody uses the cache.
 */
struct kmem_cache_cpu {
	/*
	 * The thread's private free objects: the active slab's, and (for
	 * tagged (malloc class) caches) the magazine - objects free() took back from any
	 * slab the thread holds, last in first out, so that malloc hands out
	 * the object freed last, still in the cache (tcmalloc's thread cache,
	 * the kernel's sheaves, Bonwick's magazines).  Every object here counts
	 * as in use in its slab, so no slab empties or changes hands because
	 * of them.
	 */
	void *freelist;
	/*
	 * Magazine room: free()'s pushes count it down, pops count it up, and
	 * a new freelist resets it to the cache's mag_cap() (mag_limit, or
	 * mag_solo while the process's threads are few) less its length.  At 0
	 * free() puts objects on their slabs' own lists instead, so the list
	 * holds at most mag_cap() objects as of the last refill, and a thread
	 * that never allocated from the class (0 from the start) keeps none.
	 */
	int room;
	uint32_t gc_mark;      /* low bits of freelist at mag_gc()'s last look */
	struct page *slab;     /* active slab (frozen by this thread), or NULL */
	/*
	 * Frozen slabs with free objects (HELD_PARTIAL), via slab_list, first
	 * in first out: a slab waits behind the others and gathers more frees
	 * before it is used again.  One that the thread's own frees empty
	 * leaves the list and goes back (cpu_partial_emptied()).
	 */
	struct list_head partial;
	/*
	 * Frozen slabs that ran out of objects (HELD_FULL), via slab_list,
	 * oldest first.  Other threads' frees to them land on their shared
	 * freelists, where refills look for them; the thread's own frees move
	 * them back to ->partial.
	 */
	struct list_head full;
	unsigned nr_partial;   /* slabs on ->partial */
	uint16_t full_scan;    /* full slabs the next refill looks at (scan_full()) */
} __attribute__((aligned(64))); /* one line: malloc and free touch freelist and room together */

/* Where the holder of a frozen slab keeps it: the low bits of page.owner. */
enum { HELD_ACTIVE = 0, HELD_PARTIAL = 1, HELD_FULL = 2 };
#define HELD_MASK 3ul
#define OWNER_BITS HELD_MASK /* slab_threads are page blocks: their addresses leave these bits free */

struct kmm_cache {
	/* Read-mostly; set at creation.  First what free() reads, in one line. */
	uint64_t div_magic;     /* 2^64 / size rounded up: the slot check's divisibility test */
	uint64_t check_limit;   /* offsets whose product with div_magic is below it start slots */
	uintptr_t slab_mask;    /* slab bytes - 1: an object's offset in its slab is addr & mask */
	unsigned id;            /* index of this cache's kmem_cache_cpu in every thread */
	unsigned size;          /* slot stride: object, free pointer, padding */
	unsigned object_size;   /* bytes asked for */
	unsigned offset;        /* free pointer offset inside a slot */
	unsigned align;
	unsigned order;         /* slab = 2^order pages */
	unsigned objects;       /* slots per slab */
	unsigned init_batch;    /* slots a holder links (touches) at a time */
	unsigned cpu_partial_slabs; /* most slabs a thread keeps on ->partial */
	unsigned cpu_partial_batch; /* ->partial below this: a thread adopts what its remote frees make partial */
	unsigned mag_limit;     /* tagged: the magazine's room (kmem_cache_cpu.room) */
	unsigned mag_solo;      /* tagged: the room while the threads are few (mag_cap()) */
	unsigned long min_partial;  /* empty slabs kept on the node partial list */
	unsigned long flags;
	void (*ctor)(void *);
	const char *name;
	bool name_allocated;    /* name is a kmalloc'd copy */
	bool canary;            /* free objects carry a canary in their second word */
	bool is_kmalloc;
	/*
	 * A malloc size class (slab_cache_set_tagged(), before any slab
	 * exists; canary, free pointer at 0, a slot in every thread's first
	 * chunk): its slabs carry slab tags, and free() takes its objects into
	 * magazines of mag_cap().
	 */
	bool tagged;

	/*
	 * The node: list_lock guards partial and nr_partial.  Its own cache
	 * lines, so that taking the lock or counting slabs never takes the
	 * read-mostly fields above (every free reads them) from other cores.
	 */
	kmm_lock_t list_lock __attribute__((aligned(64)));
	struct list_head partial;   /* unfrozen slabs with free objects */
	unsigned long nr_partial;

	/* Slabs of the cache, updated atomically (relaxed) on creation and discard. */
	unsigned long nr_slabs;

	struct list_head list;      /* slab_caches (slab_mutex) */
} __attribute__((aligned(64)));

#define SLAB_MAX_CACHES 4096

/* ---- what the fast paths inline (defined in slab.c) ---- */

static always_inline void *get_freepointer(const struct kmm_cache *s, void *obj)
{
	return *(void **)((char *)obj + s->offset);
}
static always_inline void set_freepointer(const struct kmm_cache *s, void *obj, void *next)
{
	*(void **)((char *)obj + s->offset) = next;
}

/*
 * Double-free detection.  A free object of a cache without constructor
 * (whose free pointer is at offset 0) and of at least 16 bytes carries, in
 * its second word, a canary: a per-process secret xor the object's address.
 * Allocation clears it; a free that finds it set is a double free (an
 * object freed while it sits on a free list), caught at the cost of one load
 * and one store.  A false alarm needs user data equal to a secret 64-bit
 * value, and a use-after-free write that clobbers the canary only hides the
 * next double free, it never causes a false one.  Objects at the head of a
 * freelist are also caught in every cache (obj == freelist head).
 */

extern KMM_HIDDEN uintptr_t free_magic;

static always_inline uintptr_t *canary_word(void *obj) { return (uintptr_t *)obj + 1; }
static always_inline uintptr_t canary_of(const void *obj) { return free_magic ^ (uintptr_t)obj; }

static always_inline void canary_on_free(const struct kmm_cache *s, void *obj, const char *fn)
{
	if (s->canary) {
		KMM_CHECK(*canary_word(obj) != canary_of(obj), fn, "double free %p", obj);
		*canary_word(obj) = canary_of(obj);
	}
}

#define SLOTS_PER_CHUNK 64
#define SLAB_CHUNKS (SLAB_MAX_CACHES / SLOTS_PER_CHUNK)

/*
 * A thread's slab state: kmem_cache_cpu slots indexed by cache id, in chunks
 * of SLOTS_PER_CHUNK made on first use.  Chunk 0, the static caches' (ids
 * below FIRST_USER_CACHE_ID), is inline and one slot short: its last slot's
 * room holds the rest of the state, so that the whole is one page, one
 * page of RSS per thread (with the chunk pointers inline it took two, both
 * zeroed).  No cache has id FIRST_SLOTS.  The pointers to the other chunks
 * (user caches) are in a page of their own, made when the thread first uses
 * such a cache; it and the chunk pointers are published with release
 * stores because kmm_cache_destroy() reads them from other threads.
 */
#define FIRST_SLOTS (SLOTS_PER_CHUNK - 1)
struct slab_thread {
	struct kmem_cache_cpu first[FIRST_SLOTS];
	struct kmem_cache_cpu **chunks; /* [SLAB_CHUNKS]: chunks 1.. (NULL until needed) */
	struct list_head registry;      /* slab_threads (slab_threads_lock) */
	int in_update;                  /* changing its lists (see update_begin() in slab.c) */
	uint32_t tag;                   /* its slab tag (slab_tag_of()), or SLAB_TAG_NONE */
	unsigned gc_refills;            /* refills since mag_gc() last looked at a slot */
	unsigned gc_next;               /* the slot of the first chunk it looks at next */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct slab_thread) == KMM_PAGE_SIZE, "slab_thread is one page");
_Static_assert(SLAB_CHUNKS * sizeof(struct kmem_cache_cpu *) <= KMM_PAGE_SIZE, "chunk pointers");
_Static_assert(sizeof(struct kmem_cache_cpu) * SLOTS_PER_CHUNK <= KMM_PAGE_SIZE, "chunk");
_Static_assert(sizeof(struct kmem_cache_cpu) == 64, "a slot is one cache line");

/*
 * Slab tags (mem_section.slab_tag): a thread that holds a slab of kmalloc
 * class k writes (its id << 16) | (k << 6) into the tag of each of the
 * slab's frames, and 0 before it lets the slab go; the class comes shifted
 * so that free() turns "tag xor the thread's tag" into the byte offset of
 * the class's slot (64 bytes each) without another shift.  Ids are
 * 1..SLAB_TAG_IDS-2, unique among live threads; a thread without one (more
 * threads than ids) has SLAB_TAG_NONE, which no frame ever carries, and
 * writes 0.  Only a holder writes its own id and clears it before it
 * unfreezes, so a thread that reads its own id in a tag (relaxed) holds that
 * slab, as with page.owner.
 */
#define SLAB_TAG_IDS 65536u
#define SLAB_TAG_SHIFT 16
#define SLAB_TAG_NONE ((SLAB_TAG_IDS - 1) << SLAB_TAG_SHIFT)
#define SLAB_TAG_CLASS_MASK ((1u << SLAB_TAG_SHIFT) - 1) /* the class part: its slot offset */
_Static_assert(SLOTS_PER_CHUNK * sizeof(struct kmem_cache_cpu) <= (1u << SLAB_TAG_SHIFT), "tag");
static always_inline uint32_t slab_tag_of(const struct slab_thread *t, unsigned cls)
{
	return t->tag | (uint32_t)(cls * sizeof(struct kmem_cache_cpu));
}

/* The calling thread's slab state (NULL until its first slab allocation). */
extern KMM_HIDDEN __thread struct slab_thread *slab_tls
	__attribute__((tls_model("initial-exec")));

/*
 * The calling thread's slab state as the malloc fast paths see it: its
 * slab_thread once the malloc layer has let it (slab_fast_enable()), else
 * slab_thread_none, whose slots are all empty, which holds no slab and whose
 * tag (SLAB_TAG_NONE) no frame carries.  So the fast paths need no NULL
 * test: a pop from it fails, a free never matches its tag, and both go to
 * their slow paths.
 */
extern KMM_HIDDEN __thread char *malloc_owner __attribute__((tls_model("initial-exec")));
extern KMM_HIDDEN struct slab_thread slab_thread_none;
#define MALLOC_OWNER_NONE ((char *)&slab_thread_none)
static always_inline struct slab_thread *malloc_owner_thread(char *owner)
{
	return (struct slab_thread *)owner;
}
/* Point malloc_owner at the calling thread's slab_thread, if it has one. */
void slab_fast_enable(void);

/* Chunk @i of thread @t (0: the inline one, FIRST_SLOTS slots), or NULL if not made. */
static always_inline struct kmem_cache_cpu *thread_chunk(struct slab_thread *t, unsigned i)
{
	if (i == 0)
		return t->first;
	struct kmem_cache_cpu **chunks = __atomic_load_n(&t->chunks, __ATOMIC_ACQUIRE);
	return chunks ? __atomic_load_n(&chunks[i], __ATOMIC_ACQUIRE) : NULL;
}

static always_inline struct kmem_cache_cpu *cpu_slot(struct slab_thread *t, unsigned id)
{
	if (likely(id < FIRST_SLOTS))
		return &t->first[id];
	if (id < SLOTS_PER_CHUNK)
		return NULL; /* FIRST_SLOTS: no cache has it */
	struct kmem_cache_cpu *chunk = thread_chunk(t, id / SLOTS_PER_CHUNK);
	return chunk ? &chunk[id % SLOTS_PER_CHUNK] : NULL;
}

/*
 * Abort unless @obj is the start of a slot of @slab.  Slabs are buddy blocks,
 * aligned to their size, so the offset is a mask.  With m = ceil(2^64 /
 * size) and e = size * m - 2^64 (0 <= e < size), an offset below 2^32 is a
 * multiple k * size iff off * m mod 2^64 < m (Lemire's divisibility test),
 * and then the product is k * e.  One compare against objects * e (e > 0)
 * therefore asks "a slot start, and not past the last slot?"; a power-of-two
 * size (e = 0) fills its slab exactly and compares against 1
 * (slab_cache_setup).  One multiplication, no divide.
 */
static always_inline bool slot_start(const struct kmm_cache *s, const void *obj)
{
	uint64_t off = (uintptr_t)obj & s->slab_mask;
	return off * s->div_magic < s->check_limit;
}

static always_inline void check_object(const struct kmm_cache *s, struct page *slab,
				       const void *obj, const char *fn)
{
	(void)slab;
	KMM_CHECK(slot_start(s, obj), fn, "invalid pointer %p (not the start of an object of cache %s)",
		  obj, s->name);
}

/*
 * The allocation fast path on a known slot: pop the thread's private
 * freelist.  NULL when it is empty (the caller takes the slow path).
 */
static always_inline void *slab_cpu_pop(const struct kmm_cache *s, struct kmem_cache_cpu *c)
{
	void *obj = c->freelist;
	if (likely(obj != NULL)) {
		c->freelist = get_freepointer(s, obj);
		c->room++;
		if (s->canary)
			*canary_word(obj) = 0;
	}
	return obj;
}

/*
 * A magazine's bound grows to MAG_SOLO_MAX objects (at most
 * MAG_SOLO_MULT * KMM_MAG_BYTES of them) while the process has at most
 * MAG_SOLO_THREADS slab threads: a program, perhaps with one worker.  A
 * magazine pins the slabs of its objects in every thread that keeps one,
 * so its bound is what RSS pays per thread (tcmalloc shares one budget
 * among its thread caches for the same reason); with one or two threads
 * that is little.  sh6bench's batches of 1000 small objects, freed past a
 * magazine of 256, emptied their slabs, and each turn of a class built
 * them again: 1 thread 1.30x mimalloc's time -> 1.14x, peak RSS 2.0 -> 2.3
 * MiB; python, sqlite, redis and gcc unchanged.  At three threads
 * (sh6bench's two workers and main) the same bound bought 10% of the time
 * for 20% more RSS, so past two it is mag_limit again.
 */
#define MAG_SOLO_THREADS 2
#define MAG_SOLO_MAX 1024
#define MAG_SOLO_MULT 2

/* Live slab threads <= MAG_SOLO_THREADS.  Written under slab_threads_lock, read relaxed. */
extern KMM_HIDDEN bool slab_threads_few;

/* The most objects a magazine of @s holds now. */
static always_inline unsigned mag_cap(const struct kmm_cache *s)
{
	return __atomic_load_n(&slab_threads_few, __ATOMIC_RELAXED) ? s->mag_solo : s->mag_limit;
}

/*
 * The room of a magazine whose slot's freelist now holds @n objects: the
 * list may grow by free()'s pushes to mag_cap() objects (none when a refill
 * brought more).
 */
static always_inline int mag_room(const struct kmm_cache *s, unsigned n)
{
	return (int)mag_cap(s) - (int)n;
}

/*
 * The refill that moves one pointer: the active slab's owner-local list (what
 * the thread freed to it) becomes the slot's private freelist; its first
 * object is returned and the rest left on c->freelist.  NULL if there is
 * none (the caller takes slab_alloc_refill()).  The slab lets the list go
 * before the slot takes it, so a fork in between (update_begin() in slab.c)
 * loses those objects in the child instead of handing them out twice.
 */
static always_inline void *slab_take_local(const struct kmm_cache *s, struct kmem_cache_cpu *c)
{
	struct page *slab = c->slab;
	if (!slab)
		return NULL;
	void *obj = slab->local_free;
	if (obj) {
		unsigned n = slab->nr_local;
		slab->local_free = NULL;
		slab->nr_local = 0;
		__atomic_thread_fence(__ATOMIC_RELEASE);
		c->freelist = get_freepointer(s, obj);
		c->room = mag_room(s, n - 1);
		if (s->canary)
			*canary_word(obj) = 0;
	}
	return obj;
}

/* ---- the slab word (page.counters, see slab.c) ---- */

#define SW_FREELIST_MASK ((1ull << 48) - 1)
#define SW_INUSE_SHIFT 48
#define SW_INUSE_MAX 0x7fffu
#define SW_FROZEN (1ull << 63)

static always_inline uint64_t sw_pack(void *freelist, unsigned inuse, bool frozen)
{
	return (uint64_t)(uintptr_t)freelist | ((uint64_t)inuse << SW_INUSE_SHIFT) |
	       (frozen ? SW_FROZEN : 0);
}
static always_inline void *sw_freelist(uint64_t w) { return (void *)(uintptr_t)(w & SW_FREELIST_MASK); }
static always_inline unsigned sw_inuse(uint64_t w) { return (unsigned)(w >> SW_INUSE_SHIFT) & SW_INUSE_MAX; }
static always_inline bool sw_frozen(uint64_t w) { return (w & SW_FROZEN) != 0; }

static always_inline uint64_t slab_word(const struct page *slab)
{
	return __atomic_load_n(&slab->counters, __ATOMIC_ACQUIRE);
}

/*
 * @t freed an object to @slab, a slab it holds, and the slab is full (held
 * FULL), has just become empty (held PARTIAL, held_used 0), or is its
 * active slab whose held_used countdown reached 0.
 */
void slab_free_held(const struct kmm_cache *s, struct slab_thread *t, struct page *slab);

static always_inline uintptr_t slab_owner_word(const struct page *slab)
{
	return __atomic_load_n(&slab->owner, __ATOMIC_RELAXED);
}
static always_inline struct slab_thread *slab_owner(const struct page *slab)
{
	return (struct slab_thread *)(slab_owner_word(slab) & ~OWNER_BITS);
}
/* Where the holder keeps @slab (holder-only; HELD_ACTIVE when unfrozen). */
static always_inline unsigned slab_held(const struct page *slab)
{
	return (unsigned)(slab_owner_word(slab) & HELD_MASK);
}

/* Push @obj, checked, on @slab's owner-local list (its holder only). */
static always_inline void local_push(const struct kmm_cache *s, struct page *slab, void *obj,
				     const char *fn)
{
	void *head = slab->local_free;
	KMM_CHECK(obj != head, fn, "double free %p", obj);
	canary_on_free(s, obj, fn);
	set_freepointer(s, obj, head);
	slab->local_free = obj;
}

/*
 * Thread @t, @slab's holder, pushed one object on its owner-local list:
 * count it, and count held_used down to slab_free_held() (a full slab's
 * first free, an emptied partial one).
 */
static always_inline void local_pushed(const struct kmm_cache *s, struct slab_thread *t,
				       struct page *slab)
{
	slab->nr_local++;
	if (unlikely(--slab->held_used == 0))
		slab_free_held(s, t, slab);
}

/*
 * free()'s push of an object of a kmalloc class (free pointer at 0, a
 * canary) on @list: the top of its magazine (the slot's freelist), or its
 * slab's owner-local list.  In two halves, so that free() can report a
 * failed check with a tail call: may @obj go on the list (not its head, no
 * canary), and push it.
 */
static always_inline bool fast_free_ok(void **list, void *obj)
{
	return obj != *list && *canary_word(obj) != canary_of(obj);
}
static always_inline void fast_free_push(void **list, void *obj)
{
	*canary_word(obj) = canary_of(obj);
	*(void **)obj = *list;
	*list = obj;
}

/*
 * The local free of kmm_cache_free() and kfree(), and of free() for what
 * its own fast path does not take: an object of a slab that thread @t
 * (non-NULL) holds frozen - its active slab, one on its cpu partial list or
 * one on its full list - goes on that slab's owner-local list, with no
 * atomic, and held_used counts down to slab_free_held() as in free() (a
 * full slab's first free, an emptied partial one).  Returns false (nothing
 * done) for any other slab.  The caller has checked that @obj starts a slot
 * of @slab.
 *
 * The owner compare is exact without ordering: only t stores t there, and t
 * clears it before it lets the slab go, so t never reads its own id stale.
 */
static always_inline bool slab_local_push(const struct kmm_cache *s, struct slab_thread *t,
					  struct page *slab, void *obj, const char *fn)
{
	if (unlikely(slab_owner(slab) != t))
		return false;
	local_push(s, slab, obj, fn);
	local_pushed(s, t, slab);
	return true;
}

/* Allocate/free through a cache; used by kmalloc with the checks done. */
void *slab_alloc(struct kmm_cache *s, unsigned flags);
/* The allocation slow path of a thread whose slot @c of @s is known and empty. */
void *slab_alloc_refill(struct kmm_cache *s, struct kmem_cache_cpu *c, unsigned flags);
/* Free an object whose pointer the caller has checked (slab_check_object). */
void slab_free_object(struct kmm_cache *s, struct page *slab, void *obj, const char *fn);
/* Abort with a report naming @fn unless @obj is the start of a slot of @slab. */
void slab_check_object(const struct kmm_cache *s, struct page *slab, const void *obj,
		       const char *fn);

/* Every free to a slab the thread does not hold (the kernel's __slab_free). */
void slab_free_slow(struct kmm_cache *s, struct page *slab, void *obj, const char *fn);

/* Set up a statically allocated cache (kmalloc caches, the cache of caches). */
int slab_cache_setup(struct kmm_cache *s, const char *name, size_t size, size_t align,
		     unsigned long flags, void (*ctor)(void *), unsigned id);

/*
 * Make @s, a cache without slabs yet, a malloc size class: slab tags and
 * magazines.  False (nothing changed) unless its layout allows it.
 */
bool slab_cache_set_tagged(struct kmm_cache *s);

void slab_init(void);
/* Flush the calling thread's slabs of every cache. */
void slab_flush_local(void);
/* Give every cache's empty slabs back; returns slabs freed. */
unsigned long slab_shrink_all(void);
void slab_thread_exit(void);
/* Bytes of slots in use over all caches (SLUB's active_objs * size). */
unsigned long long slab_bytes_in_use(void);
/* For fork: take every slab lock (prepare), release them (parent), reset (child). */
void slab_fork_prepare(void);
void slab_fork_parent(void);
void slab_fork_child(void);
void slab_fork_child_reclaim(void);

#endif /* KMM_SLAB_INTERNAL_H */
