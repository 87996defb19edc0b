/* SPDX-License-Identifier: MIT */
/*
 * slab.c - object caches, SLUB-style.
 *
 * A slab is a buddy block carved into equal slots; the free slots are linked
 * through a free pointer stored in each free object (at ->offset: 0, or after
 * the object when a constructor or poisoning needs the object intact).  The
 * slab's state lives in its head page's descriptor, like the kernel's
 * struct slab overlaying struct page:
 *
 *   counters  one 64-bit word changed only by compare-and-swap:
 *             bits 0..47  freelist  the slab's shared free list
 *             bits 48..62 inuse     objects not on that free list
 *             bit  63     frozen    a thread holds the slab (active or on its
 *                                   cpu partial list)
 *             SLUB updates freelist and counters with a double-word CAS; user
 *             addresses fit in 47 bits, so one word holds both here.
 *
 * A slab is in exactly one of these states:
 *   frozen    held by one thread (page.owner): its active slab
 *             (kmem_cache_cpu.slab), one on its cpu partial list, or one on
 *             its full list.  Only the holder allocates from it.
 *   partial   unfrozen, on the cache's node partial list (list_lock), with
 *             free objects (or empty, kept as one of min_partial: caches
 *             with a constructor only).
 *   full      unfrozen, freelist empty, on no list (it may have slots never
 *             used: they are linked by its next holder).
 *
 * A frozen slab's free objects are on three lists: the holder's private
 * freelist (kmem_cache_cpu.freelist, active slab only), the slab's
 * owner-local list (page.local_free: what the holder freed to it since it
 * froze it), and the shared freelist in the slab word (what other threads
 * freed).  Objects on the first two count as in use in the word.
 *
 * Unlike the kernel's SLUB, a thread keeps the slabs it ran dry: they stay
 * frozen on its full list instead of going unfrozen, so that its own frees to
 * them stay local and cheap (mimalloc's pages work the same way); this is
 * what makes random replacement (larson) fast.  Other threads' frees to them
 * go on their shared freelists as to any frozen slab, and a refill that finds
 * no partial slab looks at a few full ones, oldest first, for such objects
 * before it goes to the node list.
 *
 * Allocation fast path (no lock, no atomic): pop the thread's private
 * freelist.  When that runs dry, take the active slab's owner-local list (no
 * atomic), else its shared freelist with one CAS; if both are empty the slab
 * goes on the thread's full list, and the thread moves on to its cpu partial
 * slabs, then its full slabs that others freed to, then the node partial
 * list (its oldest slab, under the node lock), then a new slab from the page
 * allocator, whose objects are constructed then and only then.
 *
 * Free fast path: an object of any slab the thread holds goes on that slab's
 * owner-local list (the mimalloc shape: a thread's frees to its own slabs
 * never need an atomic, whichever slab is active; page.held_used counts
 * down to the rare transitions, see set_place()).  malloc's free() puts an
 * object of a kmalloc class on top of the thread's magazine for the class
 * instead - the slot's private freelist, whichever slab the object is from,
 * up to the class's mag_cap() - where the next malloc finds it warm; it
 * learns that the slab is the thread's from the frame's slab tag (slab.h),
 * not from the descriptor.  Objects in a magazine count as in use in their
 * slabs.  Any other free is one CAS pushing the object on the slab's shared
 * freelist (lock-free; never waits for the slab's holder).
 * Two transitions of unfrozen slabs need more (the kernel's __slab_free):
 *   full -> partial   the freeing thread freezes the slab in the same CAS and
 *                     keeps it on its own cpu partial list: still no lock.
 *   partial -> empty  the slab sits on the node list: list_lock is taken
 *                     before the CAS, and the slab is freed if the node
 *                     already keeps min_partial slabs.
 * A thread's cpu partial list is bounded (cpu_partial_slabs, 8 MiB of slabs
 * per cache); past the bound half of it is unfrozen onto the node list in
 * one locked pass.  Slabs that other threads' objects a thread frees make
 * partial join it only while it holds less than a batch
 * (cpu_partial_batch, at most 1 MiB); past that they go to the node list.  A
 * thread's full slabs are unbounded (they hold no free object it could
 * use), and are unfrozen when the thread exits or flushes.
 *
 * Memory ordering: a freer writes the object's free pointer, then publishes
 * it with a release CAS; whoever takes the freelist does so with an acquire
 * CAS, so the free pointers it walks are visible.  A thread's
 * kmem_cache_cpu is touched only by that thread, and by kmm_cache_destroy()
 * and thread exit under slab_threads_lock (destroy requires that no thread
 * uses the cache).
 *
 * Lock order: slab_mutex -> slab_threads_lock -> cache list_lock -> zone.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "slab.h"
#include "thread.h"

static always_inline bool slab_cas(struct page *slab, uint64_t *old, uint64_t new)
{
	return __atomic_compare_exchange_n(&slab->counters, old, new, false, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE);
}



/*
 * @slab's holder becomes @owner (0: nobody) and keeps it at @held.  So does
 * held_used, a countdown of the holder's local frees (slab_local_push():
 * kfree(), kmm_cache_free(), and free() past its magazine) to the next
 * slab_free_held(): from UINT16_MAX for the active slab (restarted when it
 * runs out), 1 for a full one (its first free moves it to the partial
 * list); cpu_partial_add() sets it for a partial one.
 */
static always_inline void set_place(struct page *slab, uintptr_t owner, unsigned held)
{
	__atomic_store_n(&slab->owner, owner | held, __ATOMIC_RELAXED);
	if (held == HELD_ACTIVE)
		slab->held_used = UINT16_MAX;
	else if (held == HELD_FULL)
		slab->held_used = 1;
}

/*
 * Write @tag into the slab tag of every frame of @slab (a kmalloc slab; the
 * tags of every other frame stay 0).
 */
static void set_slab_tags(struct page *slab, uint32_t tag)
{
	const struct kmm_cache *s = slab->slab_cache;
	if (!s->tagged)
		return;
	uint32_t *tags = &page_section(slab)->slab_tag[page_index(slab)];
	for (size_t i = 0; i < (1ul << s->order); i++)
		__atomic_store_n(&tags[i], tag, __ATOMIC_RELAXED);
}

/* @t holds @slab (NULL: nobody), as its active slab; the slab's tags follow. */
static always_inline void set_owner(struct page *slab, struct slab_thread *t)
{
	/* Cleared before the slab is let go, written once it is ours (slab.h). */
	set_slab_tags(slab, t && t->tag != SLAB_TAG_NONE ? slab_tag_of(t, slab->slab_cache->id) : 0);
	set_place(slab, (uintptr_t)t, HELD_ACTIVE);
}

/* The holder of @slab moves it to @held. */
static always_inline void set_held(struct page *slab, unsigned held)
{
	set_place(slab, slab_owner_word(slab) & ~OWNER_BITS, held);
}

/* Definitions of what slab.h declares for the inline fast paths. */
uintptr_t free_magic;
__thread struct slab_thread *slab_tls __attribute__((tls_model("initial-exec")));
struct slab_thread slab_thread_none __attribute__((aligned(64))) = {.tag = SLAB_TAG_NONE};
__thread char *malloc_owner __attribute__((tls_model("initial-exec"))) = MALLOC_OWNER_NONE;

void slab_fast_enable(void)
{
	if (slab_tls)
		malloc_owner = (char *)slab_tls;
}

/* ---- caches and threads ---- */

static kmm_lock_t slab_mutex = KMM_LOCK_INIT;  /* slab_caches, cache ids */
static struct list_head slab_caches = {&slab_caches, &slab_caches};
static uint64_t cache_ids[SLAB_MAX_CACHES / 64];
#define FIRST_USER_CACHE_ID 64 /* ids below are the static caches' */
#define KMEM_CACHE_ID (FIRST_SLOTS - 1)

/* The cache that struct kmm_cache objects come from (bootstrapped statically). */
static struct kmm_cache kmem_cache_cache;

/*
 * Set when the thread's exit hook has run.  Code that runs later in the
 * thread (other TLS destructors, glibc's final frees) must not build a new
 * slab_thread: no exit hook would ever flush it.  Such calls go through the
 * shared lists instead (see slab_alloc_slow and slab_free_slow).
 */
static __thread bool slab_exited __attribute__((tls_model("initial-exec")));
static kmm_lock_t slab_threads_lock = KMM_LOCK_INIT;
static struct list_head slab_threads = {&slab_threads, &slab_threads};
/*
 * Slab tag ids in use by live threads (slab_threads_lock).  Id 0 is never
 * used (tag_get() counts it taken), so that the bitmap starts zero: in .bss,
 * its 8 KiB are not part of every process's RSS.
 */
static uint64_t tag_ids[SLAB_TAG_IDS / 64] KMM_SPARSE_BSS;

bool slab_threads_few = true;
static unsigned nr_slab_threads; /* slab_threads_lock */

/* @delta threads joined (1) or left (-1) slab_threads.  slab_threads_lock held. */
static void threads_count(int delta)
{
	nr_slab_threads = (unsigned)((int)nr_slab_threads + delta);
	__atomic_store_n(&slab_threads_few, nr_slab_threads <= MAG_SOLO_THREADS, __ATOMIC_RELAXED);
}

/* A tag for a new thread, SLAB_TAG_NONE when every id is taken.  slab_threads_lock held. */
static uint32_t tag_get(void)
{
	for (unsigned i = 0; i < SLAB_TAG_IDS / 64; i++)
		if (~(tag_ids[i] | (i == 0))) {
			unsigned b = (unsigned)__builtin_ctzll(~(tag_ids[i] | (i == 0))), id = i * 64 + b;
			if (id >= SLAB_TAG_IDS - 1)
				break; /* the last id is SLAB_TAG_NONE's */
			tag_ids[i] |= 1ull << b;
			return id << SLAB_TAG_SHIFT;
		}
	return SLAB_TAG_NONE;
}

/* Give back the tag of a thread whose slabs are all let go (no frame carries it).  Lock held. */
static void tag_put(uint32_t tag)
{
	if (tag != SLAB_TAG_NONE)
		tag_ids[(tag >> SLAB_TAG_SHIFT) / 64] &= ~(1ull << ((tag >> SLAB_TAG_SHIFT) % 64));
}


/*
 * How many of its full slabs a refill looks at for other threads' frees
 * before it goes to the node: FULL_SCAN at first, twice as many after a
 * look that found some (up to FULL_SCAN_MAX), half as many after one that
 * found none (down to FULL_SCAN), and never a slab twice in one look.  A
 * thread whose objects others free (xmalloc's producers) finds them spread
 * over its full slabs, not only in the oldest; looking at 4 it made new
 * slabs while freed objects waited in the fifth (8 threads: peak RSS 8.3
 * -> 8.1 MiB).  A thread nobody frees to (alloc-test) looks at 4 as
 * before: a fixed 16 cost it 3% more instructions.
 */
#define FULL_SCAN 4
#define FULL_SCAN_MAX 32

static void slots_init(struct kmem_cache_cpu *c, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		list_init(&c[i].partial);
		list_init(&c[i].full);
		c[i].full_scan = FULL_SCAN;
	}
}

/*
 * The calling thread's slot for cache @id, made on demand with @flags; NULL
 * with errno ENOMEM, or NULL after the thread's exit hook ran.
 */
static noinline struct kmem_cache_cpu *cpu_slot_get(unsigned id, unsigned flags)
{
	struct slab_thread *t = slab_tls;
	if (unlikely(slab_exited))
		return NULL;
	flags = (flags & ~KMM_GFP_ZERO) | KMM_GFP_ZERO;
	if (!t) {
		struct page *pg = alloc_pages(flags, 0);
		if (!pg)
			return NULL;
		t = page_to_virt(pg);
		slots_init(t->first, FIRST_SLOTS);
		kmm_lock(&slab_threads_lock);
		list_add(&t->registry, &slab_threads);
		t->tag = tag_get();
		threads_count(1);
		kmm_unlock(&slab_threads_lock);
		slab_tls = t;
		thread_register();
	}
	struct kmem_cache_cpu *c = cpu_slot(t, id);
	if (c || id < SLOTS_PER_CHUNK)
		return c;
	if (!t->chunks) {
		struct page *pg = alloc_pages(flags, 0);
		if (!pg)
			return NULL;
		__atomic_store_n(&t->chunks, (struct kmem_cache_cpu **)page_to_virt(pg), __ATOMIC_RELEASE);
	}
	struct page *pg = alloc_pages(flags, 0);
	if (!pg)
		return NULL;
	slots_init(page_to_virt(pg), SLOTS_PER_CHUNK);
	__atomic_store_n(&t->chunks[id / SLOTS_PER_CHUNK], (struct kmem_cache_cpu *)page_to_virt(pg),
			 __ATOMIC_RELEASE);
	return cpu_slot(t, id);
}

/* Give back the pages of a thread's slab state (its slabs are flushed). */
static void slab_thread_free(struct slab_thread *t)
{
	if (t->chunks) {
		for (unsigned i = 1; i < SLAB_CHUNKS; i++)
			if (t->chunks[i])
				free_pages(virt_to_page(t->chunks[i]), 0);
		free_pages(virt_to_page(t->chunks), 0);
	}
	free_pages(virt_to_page(t), 0);
}

/*
 * Append @slab, just frozen by this thread or moved from its full list, to
 * its cpu partial list; @nlocal objects are on its owner-local list.
 */
static void cpu_partial_add(struct kmem_cache_cpu *c, struct page *slab, unsigned nlocal)
{
	set_held(slab, HELD_PARTIAL);
	slab->held_used = (uint16_t)(sw_inuse(slab_word(slab)) - nlocal);
	list_add_tail(&slab->slab_list, &c->partial);
	c->nr_partial++;
}

/* Take @slab off the thread's cpu partial list. */
static void cpu_partial_del(struct kmem_cache_cpu *c, struct page *slab)
{
	list_del(&slab->slab_list);
	c->nr_partial--;
}

/* ---- the node partial list (list_lock held) ---- */

static void partial_add(struct kmm_cache *s, struct page *slab)
{
	list_add_tail(&slab->slab_list, &s->partial);
	__atomic_store_n(&s->nr_partial, s->nr_partial + 1, __ATOMIC_RELAXED);
}

static void partial_del(struct kmm_cache *s, struct page *slab)
{
	list_del(&slab->slab_list);
	__atomic_store_n(&s->nr_partial, s->nr_partial - 1, __ATOMIC_RELAXED);
}

/* ---- slabs ---- */

/*
 * Link slots [nr_init, nr_init + n) of @slab into a list (constructing and
 * marking them free) and return its head; *@tailp gets its tail.  A slab is
 * linked a batch at a time, as its holder needs objects (mimalloc's lazy
 * free-list extension), so that a slab's pages are touched only when used.
 */
static void *init_objects(struct kmm_cache *s, struct page *slab, unsigned n, void **tailp)
{
	char *base = (char *)page_to_virt(slab) + (size_t)slab->nr_init * s->size;
	size_t size = s->size;
	if (s->canary && !s->ctor) {
		/* The common case (every malloc class), as a tight loop: next, canary. */
		uintptr_t magic = free_magic;
		char *obj = base, *last = base + (size_t)(n - 1) * size;
		for (; obj < last; obj += size) {
			((uintptr_t *)obj)[0] = (uintptr_t)(obj + size);
			((uintptr_t *)obj)[1] = magic ^ (uintptr_t)obj;
		}
		((uintptr_t *)last)[0] = 0;
		((uintptr_t *)last)[1] = magic ^ (uintptr_t)last;
	} else {
		for (unsigned i = 0; i < n; i++) {
			char *obj = base + (size_t)i * size;
			if (s->ctor)
				s->ctor(obj);
			set_freepointer(s, obj, i + 1 < n ? obj + size : NULL);
			if (s->canary)
				*canary_word(obj) = canary_of(obj);
		}
	}
	slab->nr_init = (uint16_t)(slab->nr_init + n);
	if (tailp)
		*tailp = base + (size_t)(n - 1) * s->size;
	return base;
}

static struct page *new_slab(struct kmm_cache *s, unsigned flags, void **freelist, unsigned *np)
{
	struct page *slab = alloc_pages(flags & ~KMM_GFP_ZERO, s->order);
	if (!slab)
		return NULL;
	/*
	 * Counted first: a locked add waits for every store before it to
	 * leave the store buffer, and after init_objects() that was a slab's
	 * worth of free pointers (refill_cpu() held 6.0% of sh6bench's samples
	 * at 1 thread, 2.8% now; its time -1%).
	 */
	__atomic_fetch_add(&s->nr_slabs, 1, __ATOMIC_RELAXED);
	set_page_flags(slab, PG_head | PG_slab);
	prep_compound(slab, s->order);
	slab->slab_cache = s;
	slab->local_free = NULL;
	slab->nr_local = 0;
	set_owner(slab, slab_tls);
	slab->nr_init = 0;
	unsigned n = MIN(s->objects, s->init_batch);
	*np = n;
	/* The first batch goes to the new holder's private freelist. */
	*freelist = init_objects(s, slab, n, NULL);
	__atomic_store_n(&slab->counters, sw_pack(NULL, n, true), __ATOMIC_RELAXED);
	return slab;
}

static void discard_slab(struct kmm_cache *s, struct page *slab)
{
	__atomic_fetch_sub(&s->nr_slabs, 1, __ATOMIC_RELAXED);
	clear_compound(slab, s->order);
	set_page_flags(slab, PG_head);
	free_pages(slab, s->order);
}

/* Discard a chain of slabs linked through slab_list.next. */
static void discard_chain(struct kmm_cache *s, struct page *chain)
{
	while (chain) {
		struct page *next = (struct page *)chain->slab_list.next;
		discard_slab(s, chain);
		chain = next;
	}
}

/*
 * Next objects for the holder of @slab: its owner-local list if it has one
 * (no atomic), else its shared freelist, taken with one CAS.  NULL if both
 * are empty; the slab stays frozen either way.
 */
static void *take_objects(struct kmm_cache *s, struct page *slab, unsigned *np)
{
	void *fl = slab->local_free;
	if (fl) {
		*np = slab->nr_local;
		slab->local_free = NULL;
		slab->nr_local = 0;
		return fl;
	}
	uint64_t old = slab_word(slab);
	while (sw_freelist(old)) {
		if (slab_cas(slab, &old, sw_pack(NULL, slab->nr_init, true))) {
			*np = slab->nr_init - sw_inuse(old);
			return sw_freelist(old);
		}
	}
	if (slab->nr_init == s->objects)
		return NULL;
	/* Never-used slots left: link the next batch; they join the in-use count. */
	unsigned n = MIN(s->objects - slab->nr_init, s->init_batch);
	fl = init_objects(s, slab, n, NULL);
	while (!slab_cas(slab, &old, old + ((uint64_t)n << SW_INUSE_SHIFT)))
		;
	*np = n;
	return fl;
}

static void freeze(struct page *slab, struct slab_thread *t)
{
	uint64_t old = slab_word(slab);
	while (!slab_cas(slab, &old, old | SW_FROZEN))
		;
	set_owner(slab, t);
}

/*
 * Chain the holder's free objects of @slab - @freelist, then the slab's
 * owner-local list - into one list; its tail in *@tailp, its length in *@np.
 * A cycle (a double free the canary could not see) aborts.
 */
static void *join_private(struct kmm_cache *s, struct page *slab, void *freelist, void **tailp,
			  unsigned *np)
{
	void *lists[2] = {freelist, slab->local_free}, *head = NULL, *tail = NULL;
	unsigned k = 0;
	slab->local_free = NULL;
	slab->nr_local = 0;
	for (unsigned i = 0; i < 2; i++) {
		if (!lists[i])
			continue;
		if (tail)
			set_freepointer(s, tail, lists[i]);
		else
			head = lists[i];
		for (void *p = lists[i]; p; p = get_freepointer(s, p)) {
			tail = p;
			KMM_CHECK(++k <= s->objects, "kmm_cache_free",
				  "cache %s: freelist of slab %p is corrupted (a cycle: double free?)",
				  s->name, page_to_virt(slab));
		}
	}
	*tailp = tail;
	*np = k;
	return head;
}

/*
 * Unfreeze @slab, which the caller holds, with its private objects @freelist
 * (the kernel's deactivate_slab, under list_lock): everything the holder had
 * goes back to the shared freelist, and the slab onto the node list if it
 * has free objects.  Returns true when the slab is empty and the node keeps
 * enough: the caller discards it after dropping the lock.
 */
static bool unfreeze_slab(struct kmm_cache *s, struct page *slab, void *freelist)
{
	void *tail;
	unsigned k;
	void *head = join_private(s, slab, freelist, &tail, &k);
	/*
	 * Slots never used stay unlinked (they count neither free nor in use):
	 * the next holder links them as it needs them (take_objects()).  A
	 * thread that exited linked every slot of every slab it let go, and a
	 * larson generation's exit added 0.5 MiB a thread.  A slab whose
	 * freelist is empty goes on no list, as a full one; the remote free
	 * that gives it a free object brings it back (full -> partial).
	 */
	set_owner(slab, NULL);
	uint64_t old = slab_word(slab), new;
	do {
		void *shared = sw_freelist(old);
		if (tail)
			set_freepointer(s, tail, shared);
		new = sw_pack(head ? head : shared, sw_inuse(old) - k, false);
	} while (!slab_cas(slab, &old, new));
	if (sw_inuse(new) == 0 && s->nr_partial >= s->min_partial)
		return true;
	if (sw_freelist(new))
		partial_add(s, slab);
	return false;
}

/*
 * Unfreeze the oldest @n of the thread's cpu partial slabs (all of them if
 * @n >= nr_partial) onto the node list (the kernel's unfreeze_partials).
 */
static void unfreeze_partials(struct kmm_cache *s, struct kmem_cache_cpu *c, unsigned n)
{
	struct page *discard = NULL;
	kmm_lock(&s->list_lock);
	while (n-- && !list_empty(&c->partial)) {
		struct page *slab = list_first_entry(&c->partial, struct page, slab_list);
		cpu_partial_del(c, slab);
		if (unfreeze_slab(s, slab, NULL)) {
			slab->slab_list.next = (struct list_head *)discard;
			discard = slab;
		}
	}
	kmm_unlock(&s->list_lock);
	discard_chain(s, discard);
}

/* Give back a slab the thread holds, with its private freelist (NULL unless active). */
static void deactivate_slab(struct kmm_cache *s, struct page *slab, void *freelist)
{
	kmm_lock(&s->list_lock);
	bool discard = unfreeze_slab(s, slab, freelist);
	kmm_unlock(&s->list_lock);
	if (discard)
		discard_slab(s, slab);
}

/* Unfreeze the thread's full slabs (at exit, flush, destroy). */
static void unfreeze_full(struct kmm_cache *s, struct kmem_cache_cpu *c)
{
	struct list_head *full = &c->full;
	struct page *discard = NULL;
	kmm_lock(&s->list_lock);
	while (!list_empty(full)) {
		struct page *slab = list_first_entry(full, struct page, slab_list);
		list_del(&slab->slab_list);
		if (unfreeze_slab(s, slab, NULL)) {
			slab->slab_list.next = (struct list_head *)discard;
			discard = slab;
		}
	}
	kmm_unlock(&s->list_lock);
	discard_chain(s, discard);
}

/* The slab of @obj, an object kmm handed out from a slab (one in a magazine, say). */
static struct page *object_slab(const void *obj)
{
	return compound_head(virt_to_page(obj));
}

/*
 * Give @obj, an object in the magazine of thread @t (free, its canary set,
 * counted in use by its slab), back to its slab: the holder's local free
 * if @t still holds the slab, else the shared freelist (the slab was
 * unfrozen, or changed hands, while the object waited).
 */
static void mag_return(struct kmm_cache *s, struct slab_thread *t, void *obj)
{
	struct page *slab = object_slab(obj);
	*canary_word(obj) = 0; /* the slab's free path checks and sets it again */
	if (!t || !slab_local_push(s, t, slab, obj, "free"))
		slab_free_slow(s, slab, obj, "free");
}

/*
 * Empty the magazine of slot @c (thread @t's) before its slabs are let go:
 * objects of the active slab stay on c->freelist (unfreezing takes them
 * with the slab), the others go back to their slabs.
 */
static void mag_drain(struct kmm_cache *s, struct kmem_cache_cpu *c, struct slab_thread *t)
{
	void *own = NULL, *obj;
	unsigned nown = 0;
	if (!s->tagged)
		return; /* only the active slab's objects are here */
	while ((obj = c->freelist) != NULL) {
		c->freelist = get_freepointer(s, obj);
		if (c->slab && object_slab(obj) == c->slab) {
			set_freepointer(s, obj, own);
			own = obj;
			nown++;
		} else {
			mag_return(s, t, obj);
		}
	}
	c->freelist = own;
	c->room = mag_room(s, nown);
}

static void flush_cpu(struct kmm_cache *s, struct kmem_cache_cpu *c, struct slab_thread *t)
{
	mag_drain(s, c, t);
	if (c->slab) {
		deactivate_slab(s, c->slab, c->freelist);
		c->slab = NULL;
		c->freelist = NULL;
	}
	if (!list_empty(&c->partial))
		unfreeze_partials(s, c, c->nr_partial);
	if (!list_empty(&c->full))
		unfreeze_full(s, c);
}

/* The cache a non-empty slot belongs to. */
static struct kmm_cache *slot_cache(struct kmem_cache_cpu *c)
{
	if (c->slab)
		return c->slab->slab_cache;
	if (!list_empty(&c->partial))
		return list_first_entry(&c->partial, struct page, slab_list)->slab_cache;
	if (!list_empty(&c->full))
		return list_first_entry(&c->full, struct page, slab_list)->slab_cache;
	if (c->freelist) /* a magazine whose slabs all went to the node (it keeps them alive) */
		return object_slab(c->freelist)->slab_cache;
	return NULL;
}

/* Flush every slot of thread @t.  slab_threads_lock held. */
static void flush_thread(struct slab_thread *t)
{
	for (unsigned i = 0; i < SLAB_CHUNKS; i++) {
		struct kmem_cache_cpu *chunk = thread_chunk(t, i);
		if (!chunk)
			continue;
		for (unsigned j = 0; j < (i ? SLOTS_PER_CHUNK : FIRST_SLOTS); j++) {
			struct kmm_cache *s = slot_cache(&chunk[j]);
			if (s)
				flush_cpu(s, &chunk[j], t);
		}
	}
}

/*
 * Make the oldest slab of the node partial list the thread's active slab.
 * Returns false if the list is empty.  One slab at a time, not SLUB's batch
 * to the cpu partial list: a thread that took half a batch (5-33 slabs,
 * by class) held their free objects while the other threads made new slabs,
 * and larson's generations, each taking what the last left on the node,
 * peaked 13-20% higher (4 threads: 9.4 -> 11.5 MiB) for no fewer
 * instructions.
 */
static bool get_partial_node(struct kmm_cache *s, struct kmem_cache_cpu *c)
{
	if (!__atomic_load_n(&s->nr_partial, __ATOMIC_RELAXED))
		return false;
	struct page *slab = NULL;
	kmm_lock(&s->list_lock);
	if (!list_empty(&s->partial)) {
		slab = list_first_entry(&s->partial, struct page, slab_list);
		partial_del(s, slab);
		freeze(slab, slab_tls);
		c->slab = slab;
	}
	kmm_unlock(&s->list_lock);
	return slab != NULL;
}

/*
 * Make the oldest of the thread's full slabs that other threads freed to
 * since the active one; look at c->full_scan at most, rotating the others
 * to the tail.  Returns its objects, or NULL.
 */
static void *scan_full(struct kmm_cache *s, struct kmem_cache_cpu *c, unsigned *np)
{
	struct list_head *full = &c->full;
	unsigned budget = c->full_scan;
	if (list_empty(full))
		return NULL;
	/* A miss goes back to the tail, so the list never empties here. */
	struct page *first = list_first_entry(full, struct page, slab_list);
	for (unsigned i = 0; i < budget; i++) {
		struct page *slab = list_first_entry(full, struct page, slab_list);
		if (i > 0 && slab == first)
			break; /* round the whole list: each looked at once */
		list_del(&slab->slab_list);
		void *fl = take_objects(s, slab, np);
		if (fl) {
			set_held(slab, HELD_ACTIVE);
			c->slab = slab;
			c->full_scan = (uint16_t)MIN(2 * budget, (unsigned)FULL_SCAN_MAX);
			return fl;
		}
		list_add_tail(&slab->slab_list, full);
	}
	c->full_scan = (uint16_t)MAX(budget / 2, (unsigned)FULL_SCAN);
	return NULL;
}

/* Find the next free object for the thread (the kernel's ___slab_alloc). */
static void *refill_cpu(struct kmm_cache *s, struct kmem_cache_cpu *c, unsigned flags,
			unsigned *np)
{
	for (;;) {
		struct page *slab = c->slab;
		if (slab) {
			void *fl = take_objects(s, slab, np);
			if (fl)
				return fl;
			/* Ran dry: keep it, frozen, where our frees and the scan find it. */
			set_held(slab, HELD_FULL);
			list_add_tail(&slab->slab_list, &c->full);
			c->slab = NULL;
		}
		if (!list_empty(&c->partial)) {
			slab = list_first_entry(&c->partial, struct page, slab_list);
			cpu_partial_del(c, slab);
			set_held(slab, HELD_ACTIVE);
			c->slab = slab;
			continue;
		}
		void *fl = scan_full(s, c, np);
		if (fl)
			return fl;
		if (get_partial_node(s, c))
			continue;
		slab = new_slab(s, flags, &fl, np);
		if (!slab)
			return NULL;
		c->slab = slab;
		return fl;
	}
}

/* After the thread's exit hook: take one object through a slot that lives only for this call. */
/*
 * Hand out @obj, the head of a freshly taken freelist: the rest becomes the
 * slot's private freelist.  NULL (ENOMEM) passes through.
 */
static void *take_first(struct kmm_cache *s, struct kmem_cache_cpu *c, void *obj, unsigned n,
			unsigned flags)
{
	if (!obj) {
		errno = ENOMEM;
		return NULL;
	}
	c->freelist = get_freepointer(s, obj);
	c->room = mag_room(s, n - 1);
	if (s->canary)
		*canary_word(obj) = 0;
	if (flags & KMM_GFP_ZERO)
		memset(obj, 0, s->object_size);
	return obj;
}

static noinline void *slab_alloc_exited(struct kmm_cache *s, unsigned flags)
{
	struct kmem_cache_cpu tmp = {0};
	slots_init(&tmp, 1);
	unsigned n = 0;
	void *obj = refill_cpu(s, &tmp, flags, &n);
	obj = take_first(s, &tmp, obj, n, flags);
	flush_cpu(s, &tmp, NULL);
	return obj;
}

/*
 * A thread's slab lists are its own and change without a lock, so a fork
 * could copy them half-changed into a child that then takes them over
 * (slab_fork_child_reclaim).  Every change of more than one pointer runs
 * between update_begin() and update_end(); fork's prepare handler raises
 * slab_fork_pending, waits until no thread is inside, and keeps them out
 * until the fork is done (the two sides order their flags as Dekker's
 * algorithm does).  A section takes no lock that the prepare handler holds
 * while it waits.  Single-pointer changes (the fast paths) need none: the
 * child sees each either done or not, and at worst loses an object.
 */
static int slab_fork_pending;
static struct slab_thread *slab_fork_thread; /* the forking thread passes (atfork handlers may allocate) */

static always_inline void update_begin(struct slab_thread *t)
{
	for (;;) {
		__atomic_store_n(&t->in_update, 1, __ATOMIC_SEQ_CST);
		if (likely(!__atomic_load_n(&slab_fork_pending, __ATOMIC_SEQ_CST)) ||
		    t == __atomic_load_n(&slab_fork_thread, __ATOMIC_RELAXED))
			return;
		__atomic_store_n(&t->in_update, 0, __ATOMIC_SEQ_CST);
		while (__atomic_load_n(&slab_fork_pending, __ATOMIC_ACQUIRE))
			sched_yield();
	}
}

static always_inline void update_end(struct slab_thread *t)
{
	__atomic_store_n(&t->in_update, 0, __ATOMIC_RELEASE);
}

/*
 * Magazine GC (jemalloc's tcache GC in spirit): every MAG_GC_REFILLS refills
 * the thread looks at the next slot of its first chunk (the kmalloc
 * classes); a magazine whose top has not moved since the last look, a whole
 * round of refills ago, belongs to a class the thread no longer uses, and
 * its objects go back to their slabs, which may then empty.  Only on the
 * refill path, so the fast paths pay nothing; a thread that stops
 * allocating altogether keeps its magazines, as it keeps its slabs, until
 * it exits or flushes.
 */
#define MAG_GC_REFILLS 4

static void mag_gc(struct slab_thread *t)
{
	if (++t->gc_refills < MAG_GC_REFILLS)
		return;
	t->gc_refills = 0;
	struct kmem_cache_cpu *c = &t->first[t->gc_next];
	t->gc_next = (t->gc_next + 1) % FIRST_SLOTS;
	uint32_t mark = (uint32_t)(uintptr_t)c->freelist;
	if (c->freelist && mark == c->gc_mark)
		mag_drain(slot_cache(c), c, t); /* a cache without tags: nothing to drain */
	c->gc_mark = (uint32_t)(uintptr_t)c->freelist;
}

noinline void *slab_alloc_refill(struct kmm_cache *s, struct kmem_cache_cpu *c, unsigned flags)
{
	struct slab_thread *t = slab_tls;
	update_begin(t);
	unsigned n = 0;
	void *obj = refill_cpu(s, c, flags, &n);
	obj = take_first(s, c, obj, n, flags);
	update_end(t);
	mag_gc(t); /* after update_end(): giving objects back runs sections of its own */
	return obj;
}

static noinline void *slab_alloc_slow(struct kmm_cache *s, unsigned flags)
{
	if (unlikely(slab_exited))
		return slab_alloc_exited(s, flags);
	struct slab_thread *t = slab_tls;
	struct kmem_cache_cpu *c = t ? cpu_slot(t, s->id) : NULL;
	if (unlikely(!c) && !(c = cpu_slot_get(s->id, flags)))
		return NULL;
	return slab_alloc_refill(s, c, flags);
}

void *slab_alloc(struct kmm_cache *s, unsigned flags)
{
	struct slab_thread *t = slab_tls;
	if (likely(t)) {
		struct kmem_cache_cpu *c = cpu_slot(t, s->id);
		if (likely(c)) {
			void *obj = slab_cpu_pop(s, c);
			if (likely(obj)) {
				if (unlikely(flags & KMM_GFP_ZERO))
					memset(obj, 0, s->object_size);
				return obj;
			}
		}
	}
	return slab_alloc_slow(s, flags);
}

/* Past its bound, the thread's cpu partial list gives its oldest half to the node. */
static void cpu_partial_trim(struct kmm_cache *s, struct kmem_cache_cpu *c)
{
	if (c->nr_partial > s->cpu_partial_slabs)
		unfreeze_partials(s, c, c->nr_partial / 2);
}

static void put_cpu_partial(struct kmm_cache *s, struct kmem_cache_cpu *c, struct page *slab)
{
	cpu_partial_add(c, slab, 0);
	cpu_partial_trim(s, c);
}

/*
 * @slab, one of the thread's partial slabs, is empty: give it back at once,
 * to the node if that keeps it (min_partial: caches with a constructor),
 * else to the page allocator - this thread's pcp lists, where its next slab
 * of any class finds the pages still in this core's cache.  Keeping a few
 * per class (8 KiB; 32 before session 9) for the class's next turn kept
 * them idle while the thread's other classes made new slabs: without them
 * sh6bench's peak RSS is 4-7% lower at 2-8 threads (8 threads: 7.0 -> 6.5
 * MiB), and it is no slower (1 thread: 158 -> 156 ms of CPU, for 2% more
 * instructions: its slabs are linked anew, from pages warmer than an idle
 * slab's).
 */
static void cpu_partial_emptied(struct kmm_cache *s, struct kmem_cache_cpu *c, struct page *slab)
{
	cpu_partial_del(c, slab);
	if (__atomic_load_n(&s->nr_partial, __ATOMIC_RELAXED) >= s->min_partial) {
		/*
		 * The node keeps enough: give it back as it is.  No object is out,
		 * so no other thread can be freeing to it, and unfreezing would
		 * only walk its free lists and link its never-used slots.
		 */
		set_owner(slab, NULL);
		discard_slab(s, slab);
		return;
	}
	deactivate_slab(s, slab, NULL);
}

noinline void slab_free_held(const struct kmm_cache *cs, struct slab_thread *t, struct page *slab)
{
	struct kmm_cache *s = (struct kmm_cache *)cs;
	struct kmem_cache_cpu *c = cpu_slot(t, s->id);
	bool emptied = true; /* a partial slab comes here only when emptied */
	if (slab_held(slab) == HELD_ACTIVE) {
		slab->held_used = UINT16_MAX; /* the countdown ran out (see set_place) */
		return;
	}
	update_begin(t);
	if (slab_held(slab) == HELD_FULL) {
		/* Its owner-local list holds the object just freed, and nothing else. */
		list_del(&slab->slab_list);
		cpu_partial_add(c, slab, 1);
		emptied = slab->held_used == 0;
	}
	if (emptied)
		cpu_partial_emptied(s, c, slab);
	else
		cpu_partial_trim(s, c);
	update_end(t);
}

/*
 * A free to a slab the thread does not hold (the kernel's __slab_free).  The
 * common case first, in a function small enough to need no saved
 * registers: another thread holds the slab frozen, so the object only goes
 * on its shared freelist, with one CAS.  An unfrozen slab (its state may
 * change with this free) goes to slab_free_unfrozen() before anything is
 * written.
 */
static noinline void slab_free_unfrozen(struct kmm_cache *s, struct page *slab, void *obj,
					const char *fn);

noinline void slab_free_slow(struct kmm_cache *s, struct page *slab, void *obj, const char *fn)
{
	/* The canary first, so that the unfrozen path is a tail call with nothing to undo. */
	canary_on_free(s, obj, fn);
	uint64_t old = slab_word(slab);
	do {
		if (unlikely(!sw_frozen(old)))
			return slab_free_unfrozen(s, slab, obj, fn); /* (unfrozen meanwhile: nothing published) */
		void *prior = sw_freelist(old);
		KMM_CHECK(obj != prior, fn, "double free %p", obj);
		KMM_CHECK(sw_inuse(old) > 0, fn, "double free %p (no object of its slab is in use)", obj);
		set_freepointer(s, obj, prior);
	} while (!slab_cas(slab, &old, sw_pack(obj, sw_inuse(old) - 1, true)));
}

static noinline void slab_free_unfrozen(struct kmm_cache *s, struct page *slab, void *obj,
					const char *fn)
{
	struct slab_thread *t = slab_tls;
	struct kmem_cache_cpu *c = t ? cpu_slot(t, s->id) : NULL;
	bool locked = false, was_frozen, frozen;
	void *prior;
	unsigned inuse;
	uint64_t old = slab_word(slab); /* @obj's canary is set (slab_free_slow()) */
	for (;;) {
		prior = sw_freelist(old);
		inuse = sw_inuse(old);
		KMM_CHECK(obj != prior, fn, "double free %p", obj);
		KMM_CHECK(inuse > 0, fn, "double free %p (no object of its slab is in use)", obj);
		was_frozen = frozen = sw_frozen(old);
		if (!was_frozen) {
			if (!prior) {
				/*
				 * full -> partial: keep it on our cpu partial list, unless
				 * that holds a batch already (a thread that only frees, as a
				 * consumer does, must not hoard what the producer needs).
				 * Never allocate a slot with list_lock held (lock order).
				 */
				if (!c && !locked)
					c = cpu_slot_get(s->id, KMM_GFP_KERNEL);
				if (c && c->nr_partial < s->cpu_partial_batch)
					frozen = true;
				else if (!locked) {
					kmm_lock(&s->list_lock);
					locked = true;
				}
			} else if (inuse == 1 && !locked) {
				/* partial -> empty: the node list must not change under us. */
				kmm_lock(&s->list_lock);
				locked = true;
			}
		}
		set_freepointer(s, obj, prior);
		if (slab_cas(slab, &old, sw_pack(obj, inuse - 1, frozen)))
			break;
	}
	if (was_frozen || frozen) {
		if (locked)
			kmm_unlock(&s->list_lock);
		if (!was_frozen) {
			struct slab_thread *me = slab_tls;
			update_begin(me);
			set_owner(slab, me);
			put_cpu_partial(s, c, slab);
			update_end(me);
		}
		return;
	}
	if (!locked)
		return; /* partial stays partial */
	if (inuse == 1 && s->nr_partial >= s->min_partial) {
		if (prior)
			partial_del(s, slab);
		kmm_unlock(&s->list_lock);
		discard_slab(s, slab);
		return;
	}
	if (!prior)
		partial_add(s, slab);
	kmm_unlock(&s->list_lock);
}

static always_inline void slab_free(struct kmm_cache *s, struct page *slab, void *obj,
				    const char *fn)
{
	struct slab_thread *t = slab_tls;
	if (likely(t) && slab_local_push(s, t, slab, obj, fn))
		return;
	slab_free_slow(s, slab, obj, fn);
}

void slab_check_object(const struct kmm_cache *s, struct page *slab, const void *obj,
		       const char *fn)
{
	check_object(s, slab, obj, fn);
}

void slab_free_object(struct kmm_cache *s, struct page *slab, void *obj, const char *fn)
{
	slab_free(s, slab, obj, fn);
}

/* ---- cache creation ---- */

/*
 * Slab order.  Larger slabs mean fewer slab changes per object (a thread
 * that frees at random visits a slab for one or two objects at a time), so:
 * >= 32 objects in at most 8 pages (the pcp orders) if possible, then
 * >= 2 objects in at most SLAB_BIG_ORDER, then whatever fits; tail waste
 * <= 1/8 throughout.  Big classes stop at 2: a slab of 4-6 blocks of
 * 20-64 KiB stays pinned while any one of them lives, and alloc-test's
 * random churn kept 3-7% more (peak RSS 81.3 -> 76.7 MiB at 4 threads,
 * 92.4 -> 85.7 at 8, time unchanged).
 */
#define SLAB_BIG_ORDER 6 /* 256 KiB */
/*
 * The most objects a magazine holds (and KMM_MAG_BYTES of them): each may
 * keep its slab from emptying, and a thread keeps a magazine per class.
 * 512 let sh6bench's batches of 8..128 B objects pin 4..64 KiB of slabs per
 * class and thread; 256 cut its peak RSS by 10-14% at 2-8 threads (with
 * 8 KiB of empty slabs kept then), python's by 3%, and left larson's and
 * alloc-test's instruction counts within 1%.
 */
#define MAG_MAX 256
#define CPU_PARTIAL_BATCH_BYTES (1ul << 20)
#define CPU_PARTIAL_BYTES (8ul << 20)

static unsigned calculate_order(size_t size)
{
	for (unsigned min_objects = 32; min_objects >= 1; min_objects /= 2)
		for (unsigned order = 0; order <= PCP_MAX_ORDER; order++) {
			size_t bytes = KMM_PAGE_SIZE << order, n = bytes / size;
			if (n >= min_objects && (bytes - n * size) * 8 <= bytes)
				return order;
		}
	for (unsigned min_objects = 2; min_objects >= 1; min_objects /= 2)
		for (unsigned order = PCP_MAX_ORDER + 1; order <= SLAB_BIG_ORDER; order++) {
			size_t bytes = KMM_PAGE_SIZE << order, n = bytes / size;
			if (n >= min_objects && (bytes - n * size) * 8 <= bytes)
				return order;
		}
	for (unsigned order = SLAB_BIG_ORDER + 1; order < KMM_MAX_ORDER; order++) {
		size_t bytes = KMM_PAGE_SIZE << order, n = bytes / size;
		if (n >= 1 && (bytes - n * size) * 8 <= bytes)
			return order;
	}
	return order_for_bytes(size);
}

int slab_cache_setup(struct kmm_cache *s, const char *name, size_t size, size_t align,
		     unsigned long flags, void (*ctor)(void *), unsigned id)
{
	KMM_ASSERT(id != FIRST_SLOTS); /* that slot's room holds the slab_thread's state */
	if (!align)
		align = sizeof(void *);
	if (flags & KMM_SLAB_HWCACHE_ALIGN) {
		size_t ralign = KMM_CACHELINE;
		while (size <= ralign / 2)
			ralign /= 2;
		align = MAX(align, ralign);
	}
	align = MAX(align, sizeof(void *));
	size_t sz = ALIGN_UP(size, sizeof(void *)), offset = 0;
	if (ctor || (flags & KMM_SLAB_POISON)) {
		/* The object must stay intact while free: the pointer goes after it. */
		offset = sz;
		sz += sizeof(void *);
	}
	sz = ALIGN_UP(sz, align);
	unsigned order = calculate_order(sz);
	size_t objects = (KMM_PAGE_SIZE << order) / sz;
	if (objects == 0 || objects > SW_INUSE_MAX) {
		errno = EINVAL;
		return -1;
	}
	s->id = id;
	s->size = (unsigned)sz;
	s->object_size = (unsigned)size;
	s->offset = (unsigned)offset;
	s->align = (unsigned)align;
	s->order = order;
	s->objects = (unsigned)objects;
	/*
	 * A page's worth of slots at a time (at least one): linking writes
	 * into each slot, and for slots of 1 KiB and up a batch of 8 faulted
	 * in pages no one asked for (32 KiB for a stdio buffer).
	 */
	s->init_batch = (unsigned)MIN(objects, MAX((size_t)1, KMM_PAGE_SIZE / sz));
	s->div_magic = UINT64_MAX / sz + 1;
	uint64_t e = (uint64_t)sz * s->div_magic; /* size * m - 2^64 (check_object) */
	/* A power-of-two size leaves no tail: its slots fill the slab. */
	KMM_ASSERT(e != 0 || objects * sz == (KMM_PAGE_SIZE << order));
	s->check_limit = e ? objects * e : 1;
	s->slab_mask = (KMM_PAGE_SIZE << order) - 1;
	unsigned nr_objects = sz >= KMM_PAGE_SIZE ? 6 : sz >= 1024 ? 24 : sz >= 256 ? 52 : 120;
	/*
	 * The batch: eight times the kernel's cpu partial bound, at most
	 * CPU_PARTIAL_BATCH_BYTES: a slab that one of the thread's frees of
	 * another thread's object makes partial joins its cpu partial list
	 * only while that holds fewer slabs than this.
	 */
	s->cpu_partial_batch = 8 * MAX(1u, (unsigned)((nr_objects * 2 + objects - 1) / objects));
	s->cpu_partial_batch = MAX(2u, MIN(s->cpu_partial_batch,
					   (unsigned)(CPU_PARTIAL_BATCH_BYTES >> (KMM_PAGE_SHIFT + order))));
	/*
	 * The bound: slabs the thread's own frees made partial stay with it, as
	 * mimalloc's pages stay with their heap, up to CPU_PARTIAL_BYTES per
	 * cache.  With random replacement (larson) every slab of a class is
	 * partial; a tight bound unfroze half the list to the node and froze it
	 * back a moment later, over and over.
	 */
	s->cpu_partial_slabs = MAX(s->cpu_partial_batch,
				   (unsigned)(CPU_PARTIAL_BYTES >> (KMM_PAGE_SHIFT + order)));
	/*
	 * The node keeps empty slabs (SLUB's min_partial) only of a cache
	 * whose objects are constructed: those are worth keeping built.  Of
	 * any other cache an emptied slab goes to the page allocator, the
	 * emptying thread's pcp lists, where its next slab of any class
	 * finds the pages.  Kept on the node, it went to whichever thread
	 * refilled next, cache-hot on the core that emptied it: sh6bench's
	 * threads each emptied slabs onto the node and took the other's, and
	 * every object they touched came from the other core's cache (2
	 * threads: 0.29 -> 0.24 s of CPU; without its rounds of cross-thread
	 * frees 0.28 -> 0.17, where 1 thread takes 0.15).
	 */
	s->min_partial = ctor ? (unsigned long)kmm_tunable(KMM_TUNE_MIN_PARTIAL) : 0;
	s->flags = flags;
	s->canary = offset == 0 && sz >= 2 * sizeof(void *);
	s->tagged = false;
	s->mag_limit = 0;
	s->mag_solo = 0;
	s->ctor = ctor;
	s->name = name;
	kmm_lock_init(&s->list_lock);
	list_init(&s->partial);
	s->nr_partial = 0;
	s->nr_slabs = 0;
	kmm_lock(&slab_mutex);
	cache_ids[id / 64] |= 1ull << (id % 64);
	list_add(&s->list, &slab_caches);
	kmm_unlock(&slab_mutex);
	return 0;
}

bool slab_cache_set_tagged(struct kmm_cache *s)
{
	if (!s->canary || s->offset != 0 || s->id >= FIRST_SLOTS || s->nr_slabs)
		return false;
	s->tagged = true;
	/*
	 * The magazine: room for KMM_MAG_BYTES of objects, at most MAG_MAX
	 * (each may keep a slab from emptying), at least 2 unless it is 0.
	 * Random replacement (larson) keeps a class's frees and allocations
	 * level, so its magazine serves both while its level wanders within
	 * the room; past the room (a batch freed) frees go to their slabs as
	 * they would without one.
	 */
	unsigned long mag_bytes = (unsigned long)kmm_tunable(KMM_TUNE_MAG_BYTES);
	s->mag_limit = mag_bytes ? (unsigned)MAX(2ul, MIN((unsigned long)MAG_MAX, mag_bytes / s->size)) : 0;
	s->mag_solo = MAX(s->mag_limit,
			  (unsigned)MIN((unsigned long)MAG_SOLO_MAX, MAG_SOLO_MULT * mag_bytes / s->size));
	return true;
}

void slab_init(void)
{
	/* Not a cryptographic secret: it only has to be unlikely in user data. */
	uintptr_t seed = (uintptr_t)&seed ^ ((uintptr_t)&free_magic << 17) ^ (uintptr_t)kmm_now_ms();
	seed *= 0x9e3779b97f4a7c15ull;
	free_magic = seed ^ (seed >> 29) ^ 0x6b6d6d0000000001ull;
	slab_cache_setup(&kmem_cache_cache, "kmem_cache", sizeof(struct kmm_cache), 0,
			 KMM_SLAB_HWCACHE_ALIGN, NULL, KMEM_CACHE_ID);
}

static int alloc_cache_id(void)
{
	for (unsigned w = FIRST_USER_CACHE_ID / 64; w < ARRAY_SIZE(cache_ids); w++)
		if (~cache_ids[w])
			return (int)(w * 64 + (unsigned)__builtin_ctzll(~cache_ids[w]));
	return -1;
}

static rare struct kmm_cache *create_failed(const char *name, unsigned long flags, int err)
{
	if (flags & KMM_SLAB_PANIC)
		kmm_fatal("kmm_cache_create", "cannot create cache %s: %s", name ? name : "(null)",
			  err == EINVAL ? "invalid argument" : "out of memory");
	errno = err;
	return NULL;
}

KMM_EXPORT rare struct kmm_cache *kmm_cache_create(const char *name, size_t size, size_t align,
					      unsigned long flags, void (*ctor)(void *))
{
	if (!name || size == 0 || size > KMM_CACHE_MAX_SIZE ||
	    (align && (!IS_POW2(align) || align > KMM_PAGE_SIZE)) || (flags & ~KMM_SLAB_VALID_FLAGS))
		return create_failed(name, flags, EINVAL);
	kmm_ensure_init();
	struct kmm_cache *s = slab_alloc(&kmem_cache_cache, KMM_GFP_KERNEL | KMM_GFP_ZERO);
	if (!s)
		return create_failed(name, flags, ENOMEM);
	size_t len = strlen(name);
	char *copy = kmm_kmalloc(len + 1, KMM_GFP_KERNEL);
	if (!copy) {
		kmm_cache_free(&kmem_cache_cache, s);
		return create_failed(name, flags, ENOMEM);
	}
	memcpy(copy, name, len + 1);
	kmm_lock(&slab_mutex);
	int id = alloc_cache_id();
	if (id >= 0)
		cache_ids[id / 64] |= 1ull << (id % 64); /* reserve before dropping the lock */
	kmm_unlock(&slab_mutex);
	if (id < 0 || slab_cache_setup(s, copy, size, align, flags, ctor, (unsigned)id) != 0) {
		if (id >= 0) {
			kmm_lock(&slab_mutex);
			cache_ids[id / 64] &= ~(1ull << (id % 64));
			kmm_unlock(&slab_mutex);
		}
		kmm_kfree(copy);
		kmm_cache_free(&kmem_cache_cache, s);
		return create_failed(name, flags, id < 0 ? ENOMEM : EINVAL);
	}
	s->name_allocated = true;
	return s;
}

KMM_EXPORT void *kmm_cache_alloc(struct kmm_cache *s, unsigned flags)
{
	if (unlikely(!s || (flags & ~KMM_GFP_VALID_MASK))) {
		errno = EINVAL;
		return NULL;
	}
	void *obj = slab_alloc(s, flags);
	if (unlikely(!obj) && (s->flags & KMM_SLAB_PANIC))
		kmm_fatal("kmm_cache_alloc", "cache %s: out of memory", s->name);
	return obj;
}

/* The slab head holding @obj (in frame @page), checked: aborts naming @fn otherwise. */
static struct page *slab_of_object(const void *obj, struct page *page, const char *fn)
{
	KMM_CHECK(page, fn, "invalid pointer %p", obj);
	struct page *slab = compound_head(page);
	KMM_CHECK(slab->flags & PG_slab, fn, "invalid pointer %p (not a slab object)", obj);
	return slab;
}

KMM_EXPORT void kmm_cache_free(struct kmm_cache *s, void *obj)
{
	static const char fn[] = "kmm_cache_free";
	if (!obj)
		return;
	struct page *slab = slab_of_object(obj, virt_to_page(obj), fn);
	KMM_CHECK(slab->slab_cache == s, fn, "object %p belongs to cache %s, not %s", obj,
		  slab->slab_cache->name, s ? s->name : "(null)");
	check_object(s, slab, obj, fn);
	slab_free(s, slab, obj, fn);
}

/* Discard the empty slabs on the node list (all of them: shrinking ignores min_partial). */
static unsigned long discard_empty_partials(struct kmm_cache *s)
{
	struct page *discard = NULL;
	unsigned long n = 0;
	struct list_head *pos, *tmp;
	kmm_lock(&s->list_lock);
	list_for_each_safe(pos, tmp, &s->partial)
	{
		struct page *slab = list_entry(pos, struct page, slab_list);
		if (sw_inuse(slab_word(slab)) == 0) {
			partial_del(s, slab);
			slab->slab_list.next = (struct list_head *)discard;
			discard = slab;
			n++;
		}
	}
	kmm_unlock(&s->list_lock);
	discard_chain(s, discard);
	return n;
}

static void flush_local_slot(struct kmm_cache *s)
{
	kmm_lock(&slab_threads_lock);
	struct slab_thread *t = slab_tls;
	struct kmem_cache_cpu *c = t ? cpu_slot(t, s->id) : NULL;
	if (c)
		flush_cpu(s, c, t);
	kmm_unlock(&slab_threads_lock);
}

KMM_EXPORT rare int kmm_cache_shrink(struct kmm_cache *s)
{
	if (!s) {
		errno = EINVAL;
		return -1;
	}
	flush_local_slot(s);
	discard_empty_partials(s);
	return __atomic_load_n(&s->nr_slabs, __ATOMIC_RELAXED) ? 1 : 0;
}

/* Free objects on the node list, and how many of its slabs are empty. list_lock held. */
static unsigned long node_free_objects(struct kmm_cache *s, unsigned long *empty)
{
	unsigned long free_objs = 0, n_empty = 0;
	struct list_head *pos;
	list_for_each(pos, &s->partial)
	{
		struct page *slab = list_entry(pos, struct page, slab_list);
		unsigned inuse = sw_inuse(slab_word(slab));
		free_objs += s->objects - inuse;
		n_empty += inuse == 0;
	}
	if (empty)
		*empty = n_empty;
	return free_objs;
}

KMM_EXPORT rare void kmm_cache_destroy(struct kmm_cache *s)
{
	if (!s)
		return;
	KMM_CHECK(s != &kmem_cache_cache && !s->is_kmalloc, "kmm_cache_destroy",
		  "cache %s is kmm's own and cannot be destroyed", s->name);
	kmm_lock(&slab_mutex);
	kmm_lock(&slab_threads_lock);
	struct list_head *pos;
	list_for_each(pos, &slab_threads)
	{
		struct slab_thread *t = list_entry(pos, struct slab_thread, registry);
		struct kmem_cache_cpu *c = cpu_slot(t, s->id);
		if (c)
			flush_cpu(s, c, t);
	}
	kmm_unlock(&slab_threads_lock);
	discard_empty_partials(s);
	kmm_lock(&s->list_lock);
	unsigned long in_use = __atomic_load_n(&s->nr_slabs, __ATOMIC_RELAXED) * s->objects -
			       node_free_objects(s, NULL);
	kmm_unlock(&s->list_lock);
	if (in_use) {
		/* As the kernel does: report, and keep the cache and its slabs. */
		kmm_warn("kmm_cache_destroy(): cache %s still has %lu objects in use", s->name, in_use);
		kmm_unlock(&slab_mutex);
		return;
	}
	list_del(&s->list);
	cache_ids[s->id / 64] &= ~(1ull << (s->id % 64));
	kmm_unlock(&slab_mutex);
	if (s->name_allocated)
		kmm_kfree(s->name);
	kmm_cache_free(&kmem_cache_cache, s);
}

KMM_EXPORT size_t kmm_cache_size(const struct kmm_cache *s) { return s ? s->object_size : 0; }

KMM_EXPORT rare void kmm_cache_stats(const struct kmm_cache *cs, struct kmm_cache_stats *out)
{
	struct kmm_cache *s = (struct kmm_cache *)cs;
	unsigned long empty;
	memset(out, 0, sizeof(*out));
	if (!s)
		return;
	kmm_lock(&s->list_lock);
	unsigned long node_free = node_free_objects(s, &empty);
	out->num_slabs = __atomic_load_n(&s->nr_slabs, __ATOMIC_RELAXED);
	out->num_objs = out->num_slabs * s->objects;
	kmm_unlock(&s->list_lock);
	out->name = s->name;
	out->object_size = s->object_size;
	out->size = s->size;
	out->align = s->align;
	out->objects_per_slab = s->objects;
	out->pages_per_slab = 1u << s->order;
	/* As SLUB: objects held by threads' slabs count as active. */
	out->active_objs = out->num_objs - node_free;
	out->active_slabs = out->num_slabs - empty;
}

/* Call @fn for every cache with its figures, under slab_mutex. */
static void for_each_cache_stats(void (*fn)(struct kmm_cache *, const struct kmm_cache_stats *,
					  void *),
				 void *arg)
{
	kmm_lock(&slab_mutex);
	struct list_head *pos;
	list_for_each(pos, &slab_caches)
	{
		struct kmm_cache *s = list_entry(pos, struct kmm_cache, list);
		struct kmm_cache_stats st;
		kmm_cache_stats(s, &st);
		fn(s, &st, arg);
	}
	kmm_unlock(&slab_mutex);
}

static void slabinfo_line(struct kmm_cache *s, const struct kmm_cache_stats *st, void *out)
{
	fprintf(out, "%-17s %6lu %6lu %6u %4u %4d : tunables %4u %4u %4u : slabdata %6lu %6lu %6lu\n",
		s->name, st->active_objs, st->num_objs, s->size, s->objects, 1 << s->order, 0u, 0u,
		0u, st->active_slabs, st->num_slabs, 0ul);
}

KMM_EXPORT rare void kmm_slabinfo(FILE *out)
{
	kmm_ensure_init();
	fprintf(out, "slabinfo - version: 2.1\n");
	fprintf(out, "# name            <active_objs> <num_objs> <objsize> <objperslab> "
		     "<pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata "
		     "<active_slabs> <num_slabs> <sharedavail>\n");
	for_each_cache_stats(slabinfo_line, out);
}

/* ---- thread life cycle, trimming ---- */

void slab_flush_local(void)
{
	kmm_lock(&slab_threads_lock);
	if (slab_tls)
		flush_thread(slab_tls);
	kmm_unlock(&slab_threads_lock);
}

rare unsigned long slab_shrink_all(void)
{
	unsigned long n = 0;
	kmm_lock(&slab_mutex);
	struct list_head *pos;
	list_for_each(pos, &slab_caches)
		n += discard_empty_partials(list_entry(pos, struct kmm_cache, list));
	kmm_unlock(&slab_mutex);
	return n;
}

void slab_thread_exit(void)
{
	struct slab_thread *t = slab_tls;
	if (!t) {
		slab_exited = true;
		return;
	}
	kmm_lock(&slab_threads_lock);
	flush_thread(t);
	list_del(&t->registry);
	tag_put(t->tag);
	threads_count(-1);
	kmm_unlock(&slab_threads_lock);
	slab_tls = NULL;
	malloc_owner = MALLOC_OWNER_NONE;
	slab_exited = true;
	slab_thread_free(t);
}

static void add_bytes_in_use(struct kmm_cache *s, const struct kmm_cache_stats *st, void *sum)
{
	*(unsigned long long *)sum += (unsigned long long)st->active_objs * s->size;
}

rare unsigned long long slab_bytes_in_use(void)
{
	unsigned long long n = 0;
	for_each_cache_stats(add_bytes_in_use, &n);
	return n;
}

/* ---- fork ----
 * prepare takes, in the documented order, slab_mutex, slab_threads_lock and
 * every cache's list_lock; the parent releases them; the child re-creates
 * them (it is single-threaded) and hands back the slabs of the threads that
 * did not survive the fork, which can never run again.
 */
rare void slab_fork_prepare(void)
{
	kmm_lock(&slab_mutex);
	kmm_lock(&slab_threads_lock);
	/* No thread is halfway through changing its lists once this loop is done. */
	__atomic_store_n(&slab_fork_thread, slab_tls, __ATOMIC_RELAXED);
	__atomic_store_n(&slab_fork_pending, 1, __ATOMIC_SEQ_CST);
	struct list_head *pos;
	list_for_each(pos, &slab_threads)
	{
		struct slab_thread *t = list_entry(pos, struct slab_thread, registry);
		while (t != slab_tls && __atomic_load_n(&t->in_update, __ATOMIC_SEQ_CST))
			sched_yield();
	}
	list_for_each(pos, &slab_caches)
		kmm_lock(&list_entry(pos, struct kmm_cache, list)->list_lock);
}

rare void slab_fork_parent(void)
{
	__atomic_store_n(&slab_fork_pending, 0, __ATOMIC_RELEASE);
	struct list_head *pos;
	list_for_each(pos, &slab_caches)
		kmm_unlock(&list_entry(pos, struct kmm_cache, list)->list_lock);
	kmm_unlock(&slab_threads_lock);
	kmm_unlock(&slab_mutex);
}

rare void slab_fork_child(void)
{
	__atomic_store_n(&slab_fork_pending, 0, __ATOMIC_RELAXED);
	struct list_head *pos;
	list_for_each(pos, &slab_caches)
		kmm_lock_init(&list_entry(pos, struct kmm_cache, list)->list_lock);
	kmm_lock_init(&slab_threads_lock);
	kmm_lock_init(&slab_mutex);
}

/* Child after fork, locks usable again: flush the slabs of threads that are gone. */
rare void slab_fork_child_reclaim(void)
{
	struct list_head *pos, *tmp;
	kmm_lock(&slab_threads_lock);
	list_for_each_safe(pos, tmp, &slab_threads)
	{
		struct slab_thread *t = list_entry(pos, struct slab_thread, registry);
		if (t == slab_tls)
			continue;
		flush_thread(t);
		list_del(&t->registry);
		tag_put(t->tag);
		threads_count(-1);
		slab_thread_free(t);
	}
	kmm_unlock(&slab_threads_lock);
}

/* ---- validation ---- */

#define SFAIL(...)                                                                               \
	do {                                                                                     \
		kmm_warn("slab_validate: " __VA_ARGS__);                                         \
		ok = false;                                                                      \
	} while (0)

/* Walk a freelist of @slab: every entry a slot start, no cycle; returns its length. */
static rare unsigned walk_freelist(struct kmm_cache *s, struct page *slab, void *fl, bool *okp)
{
	bool ok = true;
	unsigned n = 0;
	char *base = page_to_virt(slab);
	for (void *p = fl; p; p = get_freepointer(s, p)) {
		size_t off = (size_t)((char *)p - base);
		if ((char *)p < base || off % s->size || off / s->size >= s->objects) {
			SFAIL("cache %s: free pointer %p outside slab %p", s->name, p, (void *)base);
			break;
		}
		if (++n > s->objects) {
			SFAIL("cache %s: freelist of slab %p has a cycle", s->name, (void *)base);
			break;
		}
	}
	if (!ok)
		*okp = false;
	return n;
}

/* Whether every frame of @slab carries @tag (always, for a cache without tags). */
static bool tags_are(const struct kmm_cache *s, const struct page *slab, uint32_t tag)
{
	if (!s->tagged)
		return true;
	const uint32_t *tags = &page_section(slab)->slab_tag[page_index(slab)];
	for (size_t i = 0; i < (1ul << s->order); i++)
		if (__atomic_load_n(&tags[i], __ATOMIC_RELAXED) != tag)
			return false;
	return true;
}

static rare bool cache_validate(struct kmm_cache *s)
{
	bool ok = true;
	unsigned long n = 0, empty = 0;
	kmm_lock(&s->list_lock);
	struct list_head *pos;
	list_for_each(pos, &s->partial)
	{
		struct page *slab = list_entry(pos, struct page, slab_list);
		uint64_t w = slab_word(slab);
		if (slab->flags != (PG_head | PG_slab) || slab->slab_cache != s ||
		    slab->order != s->order || page_section(slab)->head_delta[page_index(slab)] != 0)
			SFAIL("cache %s: partial slab %p has a bad descriptor", s->name, page_to_virt(slab));
		if (sw_frozen(w) || slab_owner(slab) || slab->local_free || !tags_are(s, slab, 0))
			SFAIL("cache %s: frozen, owned or tagged slab %p on the node list", s->name,
			      page_to_virt(slab));
		unsigned nfree = walk_freelist(s, slab, sw_freelist(w), &ok);
		if (nfree + sw_inuse(w) != slab->nr_init || nfree == 0 || slab->nr_init > s->objects)
			SFAIL("cache %s: slab %p: %u free + %u in use != %u objects linked (of %u)",
			      s->name, page_to_virt(slab), nfree, sw_inuse(w), slab->nr_init, s->objects);
		empty += sw_inuse(w) == 0;
		for (unsigned i = 1; i < (1u << s->order); i++)
			if (slab[i].flags != PG_tail || slab[i].head != slab ||
			    page_section(slab)->head_delta[page_index(slab) + i] != (i <= UINT8_MAX ? i : 0))
				SFAIL("cache %s: slab %p tail %u not linked", s->name, page_to_virt(slab), i);
		n++;
	}
	if (n != s->nr_partial)
		SFAIL("cache %s: nr_partial %lu but %lu slabs listed", s->name, s->nr_partial, n);
	/* An emptied slab stays on the node only while it keeps fewer than min_partial. */
	if (empty > s->min_partial)
		SFAIL("cache %s: %lu empty slabs on the node list, min_partial %lu", s->name, empty,
		      s->min_partial);
	kmm_unlock(&s->list_lock);

	/* The calling thread's slabs of this cache. */
	struct slab_thread *t = slab_tls;
	struct kmem_cache_cpu *c = t ? cpu_slot(t, s->id) : NULL;
	if (!c)
		return ok;
	uint32_t tag = t->tag == SLAB_TAG_NONE ? 0 : slab_tag_of(t, s->id);
	if (c->slab) {
		if (!tags_are(s, c->slab, tag) ||
		    walk_freelist(s, c->slab, c->slab->local_free, &ok) != c->slab->nr_local)
			SFAIL("cache %s: active slab %p: a frame without the thread's tag, or nr_local "
			      "not the length of its local list", s->name, page_to_virt(c->slab));
		if (!sw_frozen(slab_word(c->slab)) || c->slab->slab_cache != s ||
		    slab_owner(c->slab) != t || slab_held(c->slab) != HELD_ACTIVE)
			SFAIL("cache %s: active slab not frozen, not ours, not marked active or of "
			      "another cache", s->name);
	}
	/*
	 * The private freelist: the active slab's objects and, for tagged
	 * caches, the magazine's, each a slot of a live slab of this cache;
	 * no longer than a slab's worth plus the magazine's bound.
	 */
	unsigned nfl = 0, nown = 0;
	for (void *p = c->freelist; p; p = get_freepointer(s, p)) {
		struct page *pg = virt_to_page(p), *slab = pg ? compound_head(pg) : NULL;
		if (!slab || !(page_flags(slab) & PG_slab) || slab->slab_cache != s ||
		    !slot_start(s, p) || sw_inuse(slab_word(slab)) == 0 ||
		    (!s->tagged && slab != c->slab)) {
			SFAIL("cache %s: private free object %p is not a slot of a live slab of the "
			      "cache%s", s->name, p, s->tagged ? "" : " (nor of the active slab)");
			break;
		}
		nown += slab == c->slab;
		if (++nfl > s->objects + s->mag_solo) {
			SFAIL("cache %s: private freelist longer than a slab and a magazine (a cycle?)",
			      s->name);
			break;
		}
	}
	if (c->slab) {
		unsigned n = nown + walk_freelist(s, c->slab, c->slab->local_free, &ok);
		if (n > sw_inuse(slab_word(c->slab)))
			SFAIL("cache %s: active slab holds %u free objects, %u counted in use", s->name,
			      n, sw_inuse(slab_word(c->slab)));
	}
	unsigned long np = 0;
	list_for_each(pos, &c->partial)
	{
		struct page *p = list_entry(pos, struct page, slab_list);
		np++;
		if (!sw_frozen(slab_word(p)) || p->slab_cache != s || slab_owner(p) != t)
			SFAIL("cache %s: cpu partial slab not frozen, not ours or of another cache",
			      s->name);
		unsigned nlocal = walk_freelist(s, p, p->local_free, &ok);
		unsigned inuse = sw_inuse(slab_word(p));
		if (nlocal != p->nr_local || !tags_are(s, p, tag))
			SFAIL("cache %s: cpu partial slab %p: nr_local %u for %u local objects, or a "
			      "frame without the thread's tag", s->name, page_to_virt(p), p->nr_local,
			      nlocal);
		if (nlocal > inuse || p->held_used + nlocal < inuse || slab_held(p) != HELD_PARTIAL)
			SFAIL("cache %s: cpu partial slab %p: not marked partial, its local list longer "
			      "than its in-use count, or held_used below the objects out", s->name,
			      page_to_virt(p));
	}
	if (np != c->nr_partial)
		SFAIL("cache %s: cpu partial list has %lu slabs, nr_partial %u", s->name, np,
		      c->nr_partial);
	list_for_each(pos, &c->full)
	{
		struct page *p = list_entry(pos, struct page, slab_list);
		if (!sw_frozen(slab_word(p)) || p->slab_cache != s || slab_owner(p) != t ||
		    slab_held(p) != HELD_FULL || p->local_free || p->nr_local || !tags_are(s, p, tag))
			SFAIL("cache %s: full slab %p not frozen, not ours, not marked full or with "
			      "local objects", s->name, page_to_virt(p));
	}
	return ok;
}

KMM_EXPORT rare int kmm_slab_validate(struct kmm_cache *s)
{
	kmm_ensure_init();
	if (s)
		return cache_validate(s) ? 0 : -1;
	bool ok = true;
	kmm_lock(&slab_mutex);
	struct list_head *pos;
	list_for_each(pos, &slab_caches)
		ok &= cache_validate(list_entry(pos, struct kmm_cache, list));
	kmm_unlock(&slab_mutex);
	return ok ? 0 : -1;
}
