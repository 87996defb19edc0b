/* SPDX-License-Identifier: MIT */
/*
 * page_alloc.c - the buddy page allocator.
 *
 * Algorithm (Knowlton's buddy system, as the kernel's mm/page_alloc.c):
 * free memory is kept as blocks of 2^order frames, order 0..KMM_MAX_ORDER-1,
 * each aligned to its size in frame numbers.  free_area[order] lists the free
 * blocks of that order.  Allocation takes the smallest order with a free
 * block and splits it, putting the upper halves back one order lower each
 * ("expand").  Freeing merges the block with its buddy - the block whose
 * frame index differs in bit `order` (idx ^ (1 << order)) - while the buddy
 * is free and of the same order, then files the result.
 *
 * Sections are one max-order block each, so a buddy never lies outside its
 * section: merging is a walk inside one mem_map and needs no lookup.
 *
 * Each pageblock (PAGEBLOCK_ORDER frames) is of one kind (migratetype,
 * page_alloc.h): small blocks (order <= PCP_MAX_ORDER) or large ones; free
 * blocks smaller than a pageblock are on their pageblock's kind's lists,
 * larger ones on kindless lists.  A request takes its own kind, then a
 * kindless block (whose pageblocks it takes change kind), then grows the
 * zone, and steals a block of the other kind only when the zone cannot grow.
 *
 * Invariants (checked by kmm_buddy_validate()):
 *   I1 a page has PG_buddy iff it heads a block on free_area[page->order],
 *      on the list block_mt() names; nr_free equals the lists' length;
 *      free_mask[kind] bit k iff that list of order k is non-empty.
 *   I2 a free block of order k starts at a frame index that is a multiple
 *      of 2^k; its other frames have flags 0.
 *   I3 no two free blocks of order k are buddies (they would have merged).
 *   I4 free_pages is the sum of the free blocks' sizes; every frame is free,
 *      on a pcp list, isolated, allocated, or deferred (the growing
 *      section's frames from grow_next on: flags 0, in no block, and not in
 *      managed_pages, which counts every other frame of every section);
 *      nothing is two of these.  grow_next is a multiple of a pageblock.
 *   I5 PG_decay blocks are exactly those on decay_list; each has order >=
 *      DECAY_MIN_ORDER and at least one resident frame.
 *   I6 resident_pages equals the number of resident bits set.
 *   I7 decay_pages is the resident frames of the blocks on decay_list (a
 *      free block's resident bits do not change while it is listed);
 *      isolated_pages is the frames of the PG_isolated blocks; the frames
 *      busy now (neither free nor isolated) are at most peak_busy_pages.
 *   I8 on every free list the blocks with resident frames come before those
 *      without (add_to_free_area()), so a take finds resident ones first.
 *
 * Per-thread page lists (pcp): each thread caches free blocks of order <=
 * PCP_MAX_ORDER on lists of its own, refilled from and drained to the zone in
 * batches, so the zone lock is taken once per batch (a new thread's first
 * refills take 1, 2, 4, ... blocks: most threads need few).  A pcp block is free
 * but not mergeable (PG_pcp, not PG_buddy) until drained.  A list holds at
 * most `high` pages' worth (KMM_TUNE_PCP_HIGH).
 *
 * Giving memory back: a free block of order >= DECAY_MIN_ORDER that holds
 * resident frames joins the zone's decay list, oldest first.  Once it has
 * stayed free for KMM_TUNE_DECAY_MS it is decommitted (MADV_DONTNEED) or,
 * if it is a whole section, the section goes back to the OS.  Sooner when
 * the zone's resident frames pass the resident cap (took_frames()): the
 * oldest go then, due or not.  The system
 * calls are made outside the zone lock: the blocks are first isolated.
 * The resident bitmap of each section records which frames may be resident,
 * so RSS accounting is exact up to frames the user never touched, and a
 * KMM_GFP_ZERO request for a never-touched block needs no memset.
 *
 * Locking: zone->lock guards the zone and the flags of its free pages.
 * Lock order: cache locks -> zone lock -> pcp_registry_lock -> desc_lock
 * -> pagemap lock / brk lock.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "os.h"
#include "page_alloc.h"
#include "thread.h"

struct zone zone_normal = {
	.decay_lock = KMM_LOCK_INIT,
	.lock = KMM_LOCK_INIT,
	.name = "Normal",
	.node = 0,
	.free_slots = zone_normal.free_slots_first,
	.section = zone_normal.section_first,
};

/* ---- resident bitmap ---- */

enum bits_op { BITS_COUNT, BITS_SET, BITS_CLEAR };

/* Apply @op to bits [start, start+n) of @bm; returns how many were set before. */
static unsigned long bits_range(uint64_t *bm, size_t start, size_t n, enum bits_op op)
{
	unsigned long was = 0;
	while (n > 0) {
		size_t w = start / 64, b = start % 64;
		size_t take = MIN(n, 64 - b);
		uint64_t mask = take == 64 ? ~0ull : (((1ull << take) - 1) << b);
		was += (unsigned long)__builtin_popcountll(bm[w] & mask);
		if (op == BITS_SET)
			bm[w] |= mask;
		else if (op == BITS_CLEAR)
			bm[w] &= ~mask;
		start += take;
		n -= take;
	}
	return was;
}

/* ---- free_area lists ---- */

/* Frames of the block of @order at @page whose resident bit is set. */
static unsigned long block_resident_pages(const struct page *page, unsigned order)
{
	return bits_range(page_section(page)->resident, page_index(page), 1ul << order, BITS_COUNT);
}

static void queue_decay(struct zone *z, struct page *page, unsigned long resident)
{
	set_page_flags(page, page_flags(page) | PG_decay);
	page->freed_ms = kmm_now_ms();
	z->decay_pages += resident;
	if (unlikely(z->decay_thread_waits) && list_empty(&z->decay_list))
		pthread_cond_signal(&z->decay_wait);
	list_add_tail(&page->decay, &z->decay_list);
}

/*
 * Which list a free block of @order at @page is on: MT_FREE from a whole
 * pageblock up, else its pageblock's kind.  A block below PAGEBLOCK_ORDER
 * lies inside one pageblock, and a pageblock changes kind only while it is
 * wholly free (claim_pageblocks()), so a block's list never changes under it.
 */
static unsigned block_mt(const struct page *page, unsigned order)
{
	if (order >= PAGEBLOCK_ORDER)
		return MT_FREE;
	return page_section(page)->pageblock_mt[page_index(page) >> PAGEBLOCK_ORDER];
}

/* The pageblocks that frames [idx, idx + n) of @ms touch, all wholly free, become of kind @mt. */
static void claim_pageblocks(struct mem_section *ms, size_t idx, size_t n, unsigned mt)
{
	for (size_t pb = idx >> PAGEBLOCK_ORDER; pb << PAGEBLOCK_ORDER < idx + n; pb++)
		ms->pageblock_mt[pb] = (uint8_t)mt;
}

/*
 * A block with resident frames goes to the head of its list, one with none
 * (decommitted, or never handed out) to the tail: a take (the head) reuses
 * frames that are resident already before it faults in fresh ones.  With
 * every free block at the head, the blocks the resident cap had just
 * decommitted were the next ones taken - faulted back in, which put the zone
 * over the cap again, which decommitted the next oldest: mstress at 1
 * thread ran 1.56x as long with the cap at 1/16 of the peak as at 1/8
 * (1.31x with this order).
 */
static void add_to_free_area(struct zone *z, struct page *page, unsigned order)
{
	set_page_flags(page, PG_buddy);
	page->order = (uint8_t)order;
	unsigned mt = block_mt(page, order);
	unsigned long resident = block_resident_pages(page, order);
	if (resident)
		list_add(&page->lru, &z->free_area[order].free_list[mt]);
	else
		list_add_tail(&page->lru, &z->free_area[order].free_list[mt]);
	z->free_area[order].nr_free++;
	z->free_mask[mt] |= 1u << order;
	z->free_pages += 1ul << order;
	if (order >= DECAY_MIN_ORDER && resident)
		queue_decay(z, page, resident);
}

static void del_from_free_area(struct zone *z, struct page *page, unsigned order)
{
	KMM_ASSERT((page->flags & PG_buddy) && page->order == order);
	unsigned mt = block_mt(page, order);
	list_del(&page->lru);
	z->free_area[order].nr_free--;
	if (list_empty(&z->free_area[order].free_list[mt]))
		z->free_mask[mt] &= ~(1u << order);
	z->free_pages -= 1ul << order;
	if (page->flags & PG_decay) {
		list_del(&page->decay);
		z->decay_pages -= block_resident_pages(page, order);
	}
	set_page_flags(page, 0);
}

/*
 * Free a block into the zone, merging with its buddies (the kernel's
 * __free_one_page).  Lock held.  The buddy of the block at index idx and
 * order k is at idx ^ 2^k; it can merge only if it heads a free block of the
 * same order (PG_buddy and ->order == k): a PG_buddy page of another order
 * is a smaller block inside the buddy, which is therefore not wholly free.
 */
static void free_one_block(struct zone *z, struct page *page, unsigned order)
{
	struct mem_section *ms = page_section(page);
	size_t idx = page_index(page);
	set_page_flags(page, 0);
	while (order < KMM_MAX_ORDER - 1) {
		struct page *buddy = &ms->mem_map[idx ^ (1ul << order)];
		if (!(page_flags(buddy) & PG_buddy) || buddy->order != order)
			break;
		del_from_free_area(z, buddy, order);
		idx &= ~(1ul << order);
		order++;
	}
	add_to_free_area(z, &ms->mem_map[idx], order);
}

/* Free the frames [idx, idx+n) of @ms as the largest aligned blocks that fit. Lock held. */
static void free_range(struct zone *z, struct mem_section *ms, size_t idx, size_t n)
{
	size_t end = idx + n;
	while (idx < end) {
		unsigned order = idx ? (unsigned)__builtin_ctzl(idx) : KMM_MAX_ORDER - 1;
		if (order > KMM_MAX_ORDER - 1)
			order = KMM_MAX_ORDER - 1;
		while (idx + (1ul << order) > end)
			order--;
		free_one_block(z, &ms->mem_map[idx], order);
		idx += 1ul << order;
	}
}

static unsigned order_migratetype(unsigned order)
{
	return order <= PCP_MAX_ORDER ? MT_SMALL : MT_LARGE;
}

/*
 * Take a block of exactly @order off the free lists (the kernel's
 * __rmqueue_smallest + expand): the smallest of the order's kind; else the
 * smallest kindless one (MT_FREE), whose pageblocks the request takes become
 * of its kind; else, only if @steal, the smallest of the other kind.  Lock
 * held.  NULL if none.  The list's first block is one with resident frames
 * if the list has one (add_to_free_area()).
 *
 * Only within the order: splitting a resident block of a larger order
 * instead of a decommitted one of the right order left the next large
 * request without one, to fault in afresh (`large` moved -11%..+6% in peak
 * RSS, sqlite -1%, within this benchmark's noise).
 */
static struct page *rmqueue_smallest(struct zone *z, unsigned order, bool steal)
{
	unsigned mt = order_migratetype(order), list;
	if (z->free_mask[mt] >> order)
		list = mt;
	else if (z->free_mask[MT_FREE] >> order)
		list = MT_FREE;
	else if (steal && z->free_mask[mt ^ 1] >> order)
		list = mt ^ 1;
	else
		return NULL;
	unsigned cur = order + (unsigned)__builtin_ctz(z->free_mask[list] >> order);
	struct page *page = list_first_entry(&z->free_area[cur].free_list[list], struct page, lru);
	del_from_free_area(z, page, cur);
	/*
	 * A kindless block starts a pageblock: the halves split off below
	 * PAGEBLOCK_ORDER lie in the request's first pageblock and join its
	 * kind's lists, the larger ones stay kindless.
	 */
	if (list == MT_FREE)
		claim_pageblocks(page_section(page), page_index(page), 1ul << order, mt);
	while (cur > order) {
		cur--;
		add_to_free_area(z, page + (1ul << cur), cur);
	}
	return page;
}

/*
 * Mark a block as leaving the zone (to a user or a pcp list): its frames may
 * now become resident.  Returns true if none was resident before, i.e. the
 * block reads as zeroes.  Lock held.
 */
static bool block_leaves_zone(struct zone *z, struct page *page, size_t n)
{
	unsigned long was = bits_range(page_section(page)->resident, page_index(page), n, BITS_SET);
	z->resident_pages += n - was;
	return was == 0;
}

/*
 * The resident cap.  A peak of RSS is the frames in use plus the dirty ones
 * (free, still resident).  Left to the decay delay alone, the holes that
 * freed page runs leave - too small, or of the wrong kind, for the next
 * request - stay dirty while the zone grows past them.  So the zone's
 * resident frames may exceed the most frames ever busy (allocated or on pcp
 * lists) by 1/2^KMM_DIRTY_SHIFT of them, at least DIRTY_MIN_PAGES; past
 * that, a take decommits the oldest blocks of the decay list at once, due
 * or not (jemalloc 3's lg_dirty_mult, against the peak).  Against the peak,
 * not the frames busy now: a heap that shrinks between phases stays under
 * its peak and keeps its dirty frames for the next phase; only growth that
 * leaves holes behind pays.
 */
static unsigned long zone_resident_excess(const struct zone *z);

/*
 * After a take, lock held: the busy frames are noted; true if the caller,
 * once it has dropped the lock, is to decay the zone down to the cap.
 */
static bool took_frames(struct zone *z, unsigned flags)
{
	/* Blocks a decay pass set aside (lock dropped) are neither free nor busy. */
	unsigned long busy = z->managed_pages - z->free_pages - z->isolated_pages;
	if (busy > z->peak_busy_pages)
		z->peak_busy_pages = busy;
	return (flags & KMM_GFP_DIRECT_OS) && zone_resident_excess(z);
}

/*
 * Resident frames over the cap, 0 if none - or if the decay list's resident
 * frames cannot bring the zone under it (the dirt is in blocks too small to
 * decay): a cap out of reach would decommit every block as it is freed and
 * fault it back, for nothing.
 */
static unsigned long zone_resident_excess(const struct zone *z)
{
	long shift = kmm_tunable(KMM_TUNE_DIRTY_SHIFT);
	if (shift == 0)
		return 0;
	unsigned long cap = z->peak_busy_pages + MAX(DIRTY_MIN_PAGES, z->peak_busy_pages >> shift);
	if (z->resident_pages <= cap)
		return 0;
	unsigned long excess = z->resident_pages - cap;
	return excess <= z->decay_pages ? excess : 0;
}

/* Frames of the growing section not on the lists yet. */
static unsigned long zone_deferred_pages(const struct zone *z)
{
	return z->growing ? KMM_SECTION_PAGES - z->grow_next : 0;
}

/* The growing section's frames count: they are free without a system call. */
static bool zone_watermark_ok(const struct zone *z, unsigned order, unsigned flags)
{
	unsigned long avail = z->free_pages + zone_deferred_pages(z);
	if (flags & KMM_GFP_HIGH)
		return avail >= (1ul << order);
	return avail >= (1ul << order) + z->min_free_pages;
}

/*
 * Hand the growing section's frames up to @end (rounded up to a pageblock,
 * at most the section's end) to the free lists, merging with what is free
 * below them.  Whole pageblocks only, so every pageblock on the lists is
 * whole and kinds work as before.  Lock held.
 */
static void populate_to(struct zone *z, size_t end)
{
	struct mem_section *ms = z->growing;
	size_t start = z->grow_next;
	end = MIN(ALIGN_UP(end, 1ul << PAGEBLOCK_ORDER), (size_t)KMM_SECTION_PAGES);
	if (!ms || end <= start)
		return;
	z->grow_next = (unsigned)end;
	if (end == KMM_SECTION_PAGES)
		z->growing = NULL;
	z->managed_pages += end - start;
	z->peak_managed_pages = MAX(z->peak_managed_pages, z->managed_pages);
	free_range(z, ms, start, end - start);
}

/*
 * Enough of the growing section on the lists for a block of @order (or all
 * of it if the block does not fit).  False if there was none left.  Lock held.
 */
static bool zone_populate(struct zone *z, unsigned order)
{
	if (!z->growing)
		return false;
	populate_to(z, ALIGN_UP((size_t)z->grow_next, 1ul << order) + (1ul << order));
	return true;
}

/* ---- sections ---- */

static kmm_lock_t desc_lock = KMM_LOCK_INIT;
static struct mem_section *desc_free_list; /* recycled descriptors (desc_lock) */

static struct mem_section *section_desc_alloc(void)
{
	kmm_lock(&desc_lock);
	struct mem_section *ms = desc_free_list;
	if (ms)
		desc_free_list = ms->next_free;
	kmm_unlock(&desc_lock);
	if (ms) {
		memset(ms, 0, sizeof(*ms));
		return ms;
	}
	return os_map_aligned(ALIGN_UP(sizeof(struct mem_section), KMM_PAGE_SIZE), SECTION_DESC_ALIGN);
}

/* Recycle a descriptor.  Makes a system call: never under the zone lock. */
static void section_desc_free(struct mem_section *ms)
{
	ms->zone = NULL;
	/* The mem_map is dead weight until reuse: drop its whole pages. */
	uintptr_t lo = ALIGN_UP((uintptr_t)ms->mem_map, KMM_PAGE_SIZE);
	uintptr_t hi = ALIGN_DOWN((uintptr_t)(ms->mem_map + KMM_SECTION_PAGES), KMM_PAGE_SIZE);
	if (hi > lo)
		os_decommit((void *)lo, hi - lo);
	kmm_lock(&desc_lock);
	ms->next_free = desc_free_list;
	desc_free_list = ms;
	kmm_unlock(&desc_lock);
}

static struct huge_cached huge_cache_take_fit(struct zone *z, size_t want, size_t align);
static size_t huge_fill(struct zone *z, char *dst, size_t len);

/*
 * The memory of a new section.  The pages of freed huge blocks, which the
 * pool keeps resident for reuse, come first: a section-aligned piece of the
 * pool, or a fresh mapping with pooled pages moved in.  Otherwise the zone
 * grew with fresh memory while the pool held as much idle, until the decay
 * delay: sqlite3 freed a 4 MiB + 4 KiB buffer (a 6 MiB mapping) and then
 * grew the zone by two sections, its peak RSS 6 MiB above glibc's.
 * *@old gets how many bytes from the start may hold old pages (brk sections
 * never do: they must come from the break).  Nothing is taken from the pool
 * when the zone has no slot for another section.  Lock not held.
 */
static void *section_memory(struct zone *z, size_t *old)
{
	*old = 0;
	if (kmm_tunable(KMM_TUNE_USE_BRK) ||
	    __atomic_load_n(&z->huge_cached_bytes, __ATOMIC_RELAXED) < HUGE_CHUNK)
		return os_section_alloc(KMM_SECTION_SIZE);
	struct huge_cached got = {NULL, 0, 0};
	kmm_lock(&z->lock);
	if (z->free_slot_top > 0 || z->section_hwm < ZONE_MAX_SECTIONS)
		got = huge_cache_take_fit(z, KMM_SECTION_SIZE, KMM_SECTION_SIZE);
	kmm_unlock(&z->lock);
	if (got.addr) {
		*old = KMM_SECTION_SIZE;
		return got.addr;
	}
	void *mem = os_section_alloc(KMM_SECTION_SIZE);
	if (mem)
		*old = huge_fill(z, mem, KMM_SECTION_SIZE);
	return mem;
}

/* The slots section[] and free_slots[] hold: the zone's own, or the mapped table's. */
static unsigned zone_slot_cap(const struct zone *z)
{
	return z->section == z->section_first ? ZONE_FIRST_SECTIONS : ZONE_MAX_SECTIONS;
}

/* No free slot in section[], and the slots are still the zone's own.  Lock held. */
static bool zone_slots_full(const struct zone *z)
{
	return z->free_slot_top == 0 && z->section_hwm == ZONE_FIRST_SECTIONS &&
	       z->section == z->section_first;
}

/*
 * Move @z's slots from the zone to a table of ZONE_MAX_SECTIONS, mapped
 * without the lock (another thread may have moved them meanwhile).  0, or
 * -1 with errno ENOMEM.
 */
static int zone_table_grow(struct zone *z)
{
	size_t bytes = ALIGN_UP(ZONE_MAX_SECTIONS * (sizeof(void *) + sizeof(unsigned)), KMM_PAGE_SIZE);
	char *tab = os_map_aligned(bytes, KMM_PAGE_SIZE);
	if (!tab)
		return -1;
	kmm_lock(&z->lock);
	if (z->section == z->section_first) {
		struct mem_section **section = (struct mem_section **)tab;
		unsigned *free_slots = (unsigned *)(tab + ZONE_MAX_SECTIONS * sizeof(void *));
		memcpy(section, z->section, z->section_hwm * sizeof(*section));
		memcpy(free_slots, z->free_slots, z->free_slot_top * sizeof(*free_slots));
		z->section = section;
		z->free_slots = free_slots;
		tab = NULL;
	}
	kmm_unlock(&z->lock);
	if (tab)
		os_unmap(tab, bytes);
	return 0;
}

/*
 * Add one section to @z.  Called without the zone lock; the system calls
 * happen before the section is published.  0, or -1 with errno ENOMEM.
 */
static int zone_grow(struct zone *z)
{
	size_t old;
	void *mem = section_memory(z, &old);
	if (!mem)
		return -1;
	struct mem_section *ms = section_desc_alloc();
	if (!ms)
		goto fail_mem;
	ms->vaddr = (uintptr_t)mem;
	if (pagemap_set(mem, KMM_SECTION_SIZE, ms, PAGEMAP_SECTION) != 0)
		goto fail_desc;

	kmm_lock(&z->lock);
	while (zone_slots_full(z)) {
		kmm_unlock(&z->lock);
		if (zone_table_grow(z) != 0) {
			pagemap_set(mem, KMM_SECTION_SIZE, NULL, PAGEMAP_NONE);
			goto fail_desc;
		}
		kmm_lock(&z->lock);
	}
	unsigned slot;
	if (z->free_slot_top > 0) {
		slot = z->free_slots[--z->free_slot_top];
	} else if (z->section_hwm < zone_slot_cap(z)) {
		slot = z->section_hwm++;
	} else {
		kmm_unlock(&z->lock);
		pagemap_set(mem, KMM_SECTION_SIZE, NULL, PAGEMAP_NONE);
		goto fail_desc;
	}
	ms->zone = z;
	ms->start_pfn = (unsigned long)slot * KMM_SECTION_PAGES;
	z->section[slot] = ms;
	z->nr_sections++;
	z->sections_added++;
	if (old) /* old pages: KMM_GFP_ZERO must clear them, and decay must give them back */
		z->resident_pages += (old >> KMM_PAGE_SHIFT) -
				     bits_range(ms->resident, 0, old >> KMM_PAGE_SHIFT, BITS_SET);
	/* Another thread's section may still be growing (both grew at once): it goes whole. */
	populate_to(z, KMM_SECTION_PAGES);
	z->growing = ms;
	z->grow_next = 0;
	/* Resident frames go on the lists at once, where decay can give them back. */
	if (old)
		populate_to(z, KMM_SECTION_PAGES);
	kmm_unlock(&z->lock);
	return 0;

fail_desc:
	section_desc_free(ms);
fail_mem:
	os_section_free(mem, KMM_SECTION_SIZE);
	errno = ENOMEM;
	return -1;
}

static void decay_thread_maybe_start(struct zone *z);

/*
 * Take one block of @order off the free lists, growing the zone by a section
 * when @may_grow and the flags allow it (the lock is dropped for the mmap).
 * Lock held on entry and on return.  NULL if no block can be had.
 */
static struct page *zone_take_locked(struct zone *z, unsigned flags, unsigned order, bool may_grow)
{
	bool grow = may_grow && (flags & KMM_GFP_DIRECT_OS);
	for (;;) {
		struct page *page = NULL;
		if (zone_watermark_ok(z, order, flags)) {
			/* A block of the other kind only when the zone cannot grow. */
			page = rmqueue_smallest(z, order, !grow);
			while (!page && zone_populate(z, order))
				page = rmqueue_smallest(z, order, !grow);
		}
		if (page || !grow)
			return page;
		kmm_unlock(&z->lock);
		int rc = zone_grow(z);
		if (rc == 0)
			decay_thread_maybe_start(z);
		kmm_lock(&z->lock);
		if (rc != 0)
			grow = false; /* last try: any block of either kind */
	}
}

/*
 * Take one block for a caller: its first @leave frames (all when 0) leave
 * the zone and the rest go straight back (a page run's tail); *zeroed tells
 * whether the frames taken read as zeroes.
 */
static struct page *zone_take(struct zone *z, unsigned flags, unsigned order, size_t leave,
			      bool *zeroed)
{
	kmm_lock(&z->lock);
	struct page *page = zone_take_locked(z, flags, order, true);
	bool over = false;
	if (page) {
		bool zero = block_leaves_zone(z, page, leave ? leave : 1ul << order);
		if (zeroed)
			*zeroed = zero;
		set_page_flags(page, PG_head);
		page->order = (uint8_t)order;
		if (leave && leave < (1ul << order))
			free_range(z, page_section(page), page_index(page) + leave, (1ul << order) - leave);
		over = took_frames(z, flags);
	}
	kmm_unlock(&z->lock);
	if (!page)
		errno = ENOMEM;
	else if (unlikely(over))
		zone_decay(z, false);
	return page;
}

static void zone_maybe_decay(struct zone *z)
{
	uint64_t last = __atomic_load_n(&z->last_decay_ms, __ATOMIC_RELAXED);
	uint64_t now = kmm_now_ms();
	uint64_t period = (uint64_t)kmm_tunable(KMM_TUNE_DECAY_MS) / 4;
	if (now - last >= period) {
		__atomic_store_n(&z->last_decay_ms, now, __ATOMIC_RELAXED);
		zone_decay(z, false);
	}
}

/* Return blocks to the zone.  Each page has ->order set. */
static void zone_give(struct zone *z, struct page **pages, unsigned n)
{
	kmm_lock(&z->lock);
	for (unsigned i = 0; i < n; i++)
		free_one_block(z, pages[i], pages[i]->order);
	kmm_unlock(&z->lock);
	zone_maybe_decay(z);
}

/* ---- per-thread page lists ---- */

/*
 * A thread's pcp lists, in its TLS (initial-exec: no allocation on first
 * touch).  lists[o] is a stack linked through page->lru.next.  count[] is
 * written only by the owner, read by statistics with relaxed loads.
 * high == 0 means "not set up yet" (and, after exit, "cache nothing").
 */
struct per_cpu_pages {
	struct page *lists[PCP_MAX_ORDER + 1];
	unsigned count[PCP_MAX_ORDER + 1]; /* blocks on each list */
	unsigned high[PCP_MAX_ORDER + 1];  /* most blocks a list keeps */
	uint8_t ramp[PCP_MAX_ORDER + 1];   /* refills so far, up to PCP_RAMP (see pcp_refill_batch) */
	bool registered;                   /* on pcp_registry, thread exit hook armed */
	bool exited;
	struct list_head registry;         /* pcp_registry (pcp_registry_lock) */
};

static __thread struct per_cpu_pages pcp_tls __attribute__((tls_model("initial-exec")));
static kmm_lock_t pcp_registry_lock = KMM_LOCK_INIT;
static struct list_head pcp_registry = {&pcp_registry, &pcp_registry};

static void pcp_setup(struct per_cpu_pages *pcp)
{
	long high = kmm_tunable(KMM_TUNE_PCP_HIGH);
	for (unsigned o = 0; o <= PCP_MAX_ORDER; o++)
		pcp->high[o] = high ? (unsigned)MAX(2, high >> o) : 0;
	kmm_lock(&pcp_registry_lock);
	list_add(&pcp->registry, &pcp_registry);
	kmm_unlock(&pcp_registry_lock);
	pcp->registered = true;
	thread_register();
}

static unsigned pcp_batch(const struct per_cpu_pages *pcp, unsigned order)
{
	return MAX(1u, pcp->high[order] / 4);
}

/*
 * How many blocks a refill takes: 1, 2, 4, ... up to pcp_batch() over a
 * list's first refills.  A full batch at once (64 pages over the four
 * orders) set each new thread's descriptors and address space aside for
 * pages it mostly never used: 33 threads with a block in 8 classes grew
 * the zone by two sections whose page descriptors were all written.
 */
#define PCP_RAMP 5
static unsigned pcp_refill_batch(struct per_cpu_pages *pcp, unsigned order)
{
	unsigned full = pcp_batch(pcp, order);
	if (pcp->ramp[order] >= PCP_RAMP)
		return full;
	return MIN(full, 1u << pcp->ramp[order]++);
}

/*
 * Refill an empty pcp list with a batch and return one block for the caller.
 * The list is linked under the zone lock, which fork's prepare handler
 * holds, so a fork never catches blocks in flight between zone and list.
 */
static noinline struct page *pcp_refill(struct per_cpu_pages *pcp, unsigned flags, unsigned order)
{
	struct zone *z = &zone_normal;
	if (unlikely(!pcp->registered && !pcp->exited))
		pcp_setup(pcp);
	unsigned want = pcp->exited || pcp->high[order] == 0 ? 1 : pcp_refill_batch(pcp, order);
	kmm_lock(&z->lock);
	struct page *first = zone_take_locked(z, flags, order, true);
	if (!first) {
		kmm_unlock(&z->lock);
		errno = ENOMEM;
		return NULL;
	}
	block_leaves_zone(z, first, 1ul << order);
	set_page_flags(first, PG_head);
	first->order = (uint8_t)order;
	unsigned got = 0;
	while (got + 1 < want) {
		struct page *page = zone_take_locked(z, flags, order, false);
		if (!page)
			break;
		block_leaves_zone(z, page, 1ul << order);
		set_page_flags(page, PG_pcp);
		page->order = (uint8_t)order;
		page->lru.next = (struct list_head *)pcp->lists[order];
		pcp->lists[order] = page;
		got++;
	}
	__atomic_store_n(&pcp->count[order], pcp->count[order] + got, __ATOMIC_RELAXED);
	bool over = took_frames(z, flags);
	kmm_unlock(&z->lock);
	if (unlikely(over))
		zone_decay(z, false);
	return first;
}

/* Give @n blocks of @order from the pcp list back to the zone (unlinked under its lock). */
static noinline void pcp_drain(struct per_cpu_pages *pcp, unsigned order, unsigned n)
{
	struct zone *z = &zone_normal;
	if (!pcp->lists[order])
		return;
	unsigned k = 0;
	kmm_lock(&z->lock);
	while (k < n && pcp->lists[order]) {
		struct page *page = pcp->lists[order];
		pcp->lists[order] = (struct page *)page->lru.next;
		free_one_block(z, page, order);
		k++;
	}
	__atomic_store_n(&pcp->count[order], pcp->count[order] - k, __ATOMIC_RELAXED);
	kmm_unlock(&z->lock);
	zone_maybe_decay(z);
}

void pcp_drain_local(void)
{
	struct per_cpu_pages *pcp = &pcp_tls;
	for (unsigned o = 0; o <= PCP_MAX_ORDER; o++)
		pcp_drain(pcp, o, ~0u);
}

void pcp_thread_exit(void)
{
	struct per_cpu_pages *pcp = &pcp_tls;
	pcp_drain_local();
	if (pcp->registered) {
		kmm_lock(&pcp_registry_lock);
		list_del(&pcp->registry);
		kmm_unlock(&pcp_registry_lock);
		pcp->registered = false;
	}
	/* Anything this thread frees from now on goes straight to the zone. */
	memset(pcp->high, 0, sizeof(pcp->high));
	pcp->exited = true;
}

static unsigned long pcp_pages_total(void)
{
	unsigned long n = 0;
	struct list_head *pos;
	kmm_lock(&pcp_registry_lock);
	list_for_each(pos, &pcp_registry)
	{
		struct per_cpu_pages *pcp = list_entry(pos, struct per_cpu_pages, registry);
		for (unsigned o = 0; o <= PCP_MAX_ORDER; o++)
			n += (unsigned long)__atomic_load_n(&pcp->count[o], __ATOMIC_RELAXED) << o;
	}
	kmm_unlock(&pcp_registry_lock);
	return n;
}

/* ---- allocation and free ---- */

/*
 * The pcp fast paths run without a lock.  Their stores are ordered so that
 * a fork, which may snapshot another thread at any instruction, always
 * finds a block either on the list or marked allocated (PG_head), never
 * flagged PG_pcp and on no list: the child drains the dead thread's lists.
 */
struct page *alloc_pages(unsigned flags, unsigned order)
{
	struct page *page;
	bool zeroed = false;
	if (order <= PCP_MAX_ORDER) {
		struct per_cpu_pages *pcp = &pcp_tls;
		page = pcp->lists[order];
		if (likely(page)) {
			set_page_flags(page, PG_head); /* before the unlink (fork) */
			__atomic_store_n(&pcp->lists[order], (struct page *)page->lru.next,
					 __ATOMIC_RELEASE);
			__atomic_store_n(&pcp->count[order], pcp->count[order] - 1, __ATOMIC_RELAXED);
		} else if (!(page = pcp_refill(pcp, flags, order))) {
			return NULL;
		}
	} else if (!(page = zone_take(&zone_normal, flags, order, 0, &zeroed))) {
		return NULL;
	}
	if ((flags & KMM_GFP_ZERO) && !zeroed)
		memset(page_to_virt(page), 0, KMM_PAGE_SIZE << order);
	return page;
}

void free_pages(struct page *page, unsigned order)
{
	page->order = (uint8_t)order;
	if (order <= PCP_MAX_ORDER) {
		struct per_cpu_pages *pcp = &pcp_tls;
		page->lru.next = (struct list_head *)pcp->lists[order];
		pcp->lists[order] = page;
		/* Flagged only once linked (fork); release orders the link first. */
		__atomic_store_n(&page->flags, (uint16_t)PG_pcp, __ATOMIC_RELEASE);
		unsigned c = pcp->count[order] + 1;
		__atomic_store_n(&pcp->count[order], c, __ATOMIC_RELAXED);
		if (unlikely(c > pcp->high[order]))
			pcp_drain(pcp, order, pcp->high[order] ? pcp_batch(pcp, order) : c);
		return;
	}
	zone_give(&zone_normal, &page, 1);
}

void prep_compound(struct page *head, unsigned order)
{
	uint8_t *delta = &page_section(head)->head_delta[page_index(head)];
	for (size_t i = 1; i < (1ul << order); i++) {
		set_page_flags(&head[i], PG_tail);
		head[i].head = head;
		delta[i] = i <= UINT8_MAX ? (uint8_t)i : 0;
	}
}

void clear_compound(struct page *head, unsigned order)
{
	uint8_t *delta = &page_section(head)->head_delta[page_index(head)];
	for (size_t i = 1; i < (1ul << order); i++) {
		set_page_flags(&head[i], 0);
		delta[i] = 0;
	}
}

big_text struct page *alloc_pages_exact(unsigned flags, unsigned long nr, unsigned min_order)
{
	KMM_ASSERT(nr >= 1 && nr <= KMM_SECTION_PAGES && min_order < KMM_MAX_ORDER);
	unsigned order = MAX(order_for_bytes(nr << KMM_PAGE_SHIFT), min_order);
	struct page *page;
	bool zeroed = false;
	struct zone *z = &zone_normal;
	/* Only the first nr frames leave the zone; the tail comes straight back. */
	if (!(page = zone_take(z, flags, order, nr, &zeroed)))
		return NULL;
	set_page_flags(page, PG_head | PG_large);
	page->order = (uint8_t)order;
	page->nr_pages = (uint32_t)nr;
	if ((flags & KMM_GFP_ZERO) && !zeroed)
		memset(page_to_virt(page), 0, nr << KMM_PAGE_SHIFT);
	return page;
}

big_text void free_pages_exact(struct page *page, unsigned long nr)
{
	struct zone *z = &zone_normal;
	kmm_lock(&z->lock);
	free_range(z, page_section(page), page_index(page), nr);
	kmm_unlock(&z->lock);
	zone_maybe_decay(z);
}

big_text void shrink_pages_exact(struct page *page, unsigned long new_nr)
{
	struct zone *z = &zone_normal;
	KMM_ASSERT(new_nr >= 1 && new_nr < page->nr_pages);
	kmm_lock(&z->lock);
	free_range(z, page_section(page), page_index(page) + new_nr, page->nr_pages - new_nr);
	page->nr_pages = (uint32_t)new_nr;
	kmm_unlock(&z->lock);
	zone_maybe_decay(z);
}

/*
 * Head of the block that contains frame @idx of @ms and whose head has one
 * of @flags (PG_buddy: a free block on the lists), or NULL.  Lock held, or
 * a stale answer will do (page_is_free()).
 */
static struct page *block_containing(struct mem_section *ms, size_t idx, unsigned flags)
{
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++) {
		struct page *p = &ms->mem_map[idx & ~((1ul << o) - 1)];
		/* p is aligned to 2^o and p <= idx < p + 2^o, so a block of
		 * order >= o headed at p covers idx (one headed at a smaller order
		 * would have been found by an earlier o). */
		if ((page_flags(p) & flags) && p->order >= o)
			return p;
	}
	return NULL;
}

static struct page *free_block_containing(struct mem_section *ms, size_t idx)
{
	return block_containing(ms, idx, PG_buddy);
}

bool page_is_free(struct page *page)
{
	return block_containing(page_section(page), page_index(page),
				PG_buddy | PG_pcp | PG_isolated) != NULL;
}

big_text bool grow_pages_exact(struct page *page, unsigned long new_nr, unsigned flags)
{
	struct zone *z = &zone_normal;
	struct mem_section *ms = page_section(page);
	size_t idx = page_index(page), end = idx + new_nr;
	if (end > KMM_SECTION_PAGES)
		return false;
	kmm_lock(&z->lock);
	if (ms == z->growing && end > z->grow_next)
		populate_to(z, end);
	/* First check that every frame of the extension is free. */
	for (size_t i = idx + page->nr_pages; i < end;) {
		struct page *b = free_block_containing(ms, i);
		if (!b) {
			kmm_unlock(&z->lock);
			return false;
		}
		i = page_index(b) + (1ul << b->order);
	}
	/* Then take the blocks and give back what lies beyond the new end. */
	for (size_t i = idx + page->nr_pages; i < end;) {
		struct page *b = free_block_containing(ms, i);
		size_t bstart = page_index(b), bend = bstart + (1ul << b->order);
		del_from_free_area(z, b, b->order);
		/* Blocks are aligned, so a free block met at i starts at i. */
		KMM_ASSERT(bstart == i);
		if (bend - bstart >= (1ul << PAGEBLOCK_ORDER)) /* kindless: the run's kind takes it */
			claim_pageblocks(ms, bstart, MIN(bend, end) - bstart, MT_LARGE);
		block_leaves_zone(z, b, MIN(bend, end) - bstart);
		if (bend > end)
			free_range(z, ms, end, bend - end);
		i = bend;
	}
	page->nr_pages = (uint32_t)new_nr;
	bool over = took_frames(z, flags);
	kmm_unlock(&z->lock);
	if (unlikely(over))
		zone_decay(z, false);
	return true;
}

/* ---- mappings beyond the largest block ----
 * A block above 4 MiB is a mapping of its own (kmalloc's huge blocks).
 * Faulting in 4..32 MiB each time costs far more than the work a program
 * does with it, so freed mappings are kept as a pool of resident pages:
 * at most HUGE_CACHE_SLOTS pieces, within HUGE_CACHE_LIVE times the bytes
 * of the huge mappings in use (at least HUGE_CACHE_MIN, at most
 * HUGE_CACHE_MAX), each until KMM_DECAY_MS after its free (zone_decay()
 * and the background thread unmap them then; kmm_trim() at once).
 *
 * A request takes the smallest aligned piece that holds it and leaves the
 * rest in the pool; if none does, a fresh mapping is made and the pieces'
 * pages are moved into it with mremap (page tables move, nothing is
 * copied or faulted), so freed pages are reused whatever the sizes, as
 * tcmalloc's page heap reuses coalesced spans.  Growth in realloc fills
 * its new part the same way.  Keeping whole mappings, with no splitting or
 * gathering, faulted twice the pages tcmalloc does on `large`.
 *
 * Invariant: every mapping and piece starts at a HUGE_CHUNK boundary and is
 * a whole number of chunks long, and pages move only in whole chunks.  So
 * the kernel's VMA boundaries inside one mapping (where moved pieces meet)
 * lie on chunk boundaries, and a chunk is always inside one VMA: mremap,
 * which cannot span VMAs, can always move one (os_move_pages()).
 *
 * The zone lock guards the pool; the system calls are made without it.
 */

/*
 * nr_huge_cached and huge_cached_bytes change under the zone lock; huge_map()
 * and the statistics read them without it.
 */
static void set_nr_huge_cached(struct zone *z, unsigned n)
{
	__atomic_store_n(&z->nr_huge_cached, n, __ATOMIC_RELAXED);
}
static void add_huge_cached_bytes(struct zone *z, size_t delta)
{
	__atomic_store_n(&z->huge_cached_bytes, z->huge_cached_bytes + delta, __ATOMIC_RELAXED);
}

/* Take piece @i off the pool (zone lock held). */
static big_text struct huge_cached huge_cache_take(struct zone *z, unsigned i)
{
	struct huge_cached e = z->huge_cache[i];
	add_huge_cached_bytes(z, -e.len);
	set_nr_huge_cached(z, z->nr_huge_cached - 1);
	z->huge_cache[i] = z->huge_cache[z->nr_huge_cached];
	return e;
}

/* Take pieces freed before @cutoff (all: UINT64_MAX) off the pool into @out. */
static unsigned huge_cache_expire(struct zone *z, uint64_t cutoff, struct huge_cached *out)
{
	unsigned n = 0;
	for (unsigned i = 0; i < z->nr_huge_cached;) {
		if (z->huge_cache[i].freed_ms < cutoff)
			out[n++] = huge_cache_take(z, i);
		else
			i++;
	}
	return n;
}

static big_text void huge_unmap_all(const struct huge_cached *e, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		os_unmap(e[i].addr, e[i].len);
}

/*
 * Pieces freed before the cutoff are due: those freed at least the delay
 * ago, so a piece is due at freed_ms + delay, the moment huge_cache_due()
 * wakes the background thread for (and the decay list's rule).  Due one
 * millisecond later, a piece woke the thread at its due time and stayed,
 * and the thread called again and again until the coarse clock ticked.
 */
static uint64_t huge_cutoff(uint64_t now)
{
	uint64_t delay = (uint64_t)kmm_tunable(KMM_TUNE_DECAY_MS);
	return now >= delay ? now - delay + 1 : 0;
}

/* Most bytes the pool may keep now: a multiple of what is in use, within bounds. */
static big_text size_t huge_cache_cap(struct zone *z)
{
	size_t live = __atomic_load_n(&z->huge_live_bytes, __ATOMIC_RELAXED);
	return MIN(HUGE_CACHE_MAX, MAX(HUGE_CACHE_MIN, HUGE_CACHE_LIVE * live));
}

/*
 * Put piece @e into the pool; if it does not fit (slots, cap) the oldest
 * go, or it does.  Makes system calls: no locks held.
 */
static big_text void huge_cache_put(struct zone *z, struct huge_cached e)
{
	struct huge_cached old[HUGE_CACHE_SLOTS + 1];
	size_t cap = huge_cache_cap(z);
	kmm_lock(&z->lock);
	uint64_t now = kmm_now_ms();
	unsigned nold = huge_cache_expire(z, huge_cutoff(now), old);
	/*
	 * The background thread sleeps until the oldest piece is due: wake it
	 * if that changes (an empty pool, or a leftover of an older piece).
	 */
	bool wake = z->nr_huge_cached == 0 || e.freed_ms < now;
	if (e.len > cap) {
		old[nold++] = e;
	} else {
		/* Make room: the oldest go (pieces are kept in no order; find it). */
		while (z->nr_huge_cached == HUGE_CACHE_SLOTS || z->huge_cached_bytes + e.len > cap) {
			unsigned oldest = 0;
			for (unsigned i = 1; i < z->nr_huge_cached; i++)
				if (z->huge_cache[i].freed_ms < z->huge_cache[oldest].freed_ms)
					oldest = i;
			old[nold++] = huge_cache_take(z, oldest);
		}
		z->huge_cache[z->nr_huge_cached] = e;
		set_nr_huge_cached(z, z->nr_huge_cached + 1);
		add_huge_cached_bytes(z, e.len);
	}
	if (unlikely(z->decay_thread_waits) && wake)
		pthread_cond_signal(&z->decay_wait);
	kmm_unlock(&z->lock);
	huge_unmap_all(old, nold);
	decay_thread_maybe_start(z);
}

/*
 * The first @want bytes of the smallest piece aligned to @align that holds
 * them, taken off the pool, or none; the rest of the piece stays pooled
 * where it is (never out of the pool, where a fork could orphan it).  Lock
 * held.
 */
static big_text struct huge_cached huge_cache_take_fit(struct zone *z, size_t want, size_t align)
{
	unsigned best = HUGE_CACHE_SLOTS;
	for (unsigned i = 0; i < z->nr_huge_cached; i++) {
		const struct huge_cached *e = &z->huge_cache[i];
		if (e->len >= want && ((uintptr_t)e->addr & (align - 1)) == 0 &&
		    (best == HUGE_CACHE_SLOTS || e->len < z->huge_cache[best].len))
			best = i;
	}
	if (best == HUGE_CACHE_SLOTS)
		return (struct huge_cached){NULL, 0, 0};
	struct huge_cached *e = &z->huge_cache[best];
	if (e->len == want)
		return huge_cache_take(z, best);
	struct huge_cached head = {e->addr, want, e->freed_ms};
	e->addr = (char *)e->addr + want;
	e->len -= want;
	add_huge_cached_bytes(z, -want);
	return head;
}

/*
 * Move pooled pages into the fresh range [@dst, @dst + @len) (chunk
 * multiples, from a fresh mapping or growth), the largest pieces first,
 * so they need not be faulted in.  What a piece has left over stays pooled.
 * Returns the bytes moved: [dst, dst + that) holds old pages, the rest is fresh.
 */
static big_text size_t huge_fill(struct zone *z, char *dst, size_t len)
{
	struct huge_cached got[HUGE_CACHE_SLOTS];
	unsigned n = 0;
	size_t have = 0;
	if (!__atomic_load_n(&z->nr_huge_cached, __ATOMIC_RELAXED))
		return 0;
	kmm_lock(&z->lock);
	while (have < len && z->nr_huge_cached) {
		unsigned big = 0;
		for (unsigned i = 1; i < z->nr_huge_cached; i++)
			if (z->huge_cache[i].len > z->huge_cache[big].len)
				big = i;
		got[n] = huge_cache_take(z, big);
		have += got[n++].len;
	}
	kmm_unlock(&z->lock);
	size_t off = 0;
	struct huge_cached rest = {NULL, 0, 0};
	for (unsigned i = 0; i < n; i++) {
		size_t k = MIN(got[i].len, len - off);
		if (os_move_pages(got[i].addr, k, dst + off, HUGE_CHUNK) != 0) {
			/* Left fresh (it still reads right); the piece is given up. */
			os_unmap(got[i].addr, got[i].len);
			continue;
		}
		off += k;
		if (k < got[i].len) /* only the last one: its head went */
			rest = (struct huge_cached){(char *)got[i].addr + k, got[i].len - k, got[i].freed_ms};
	}
	if (rest.len)
		huge_cache_put(z, rest);
	return off;
}

big_text void *huge_map(size_t bytes, size_t align, bool zero, size_t *len)
{
	struct zone *z = &zone_normal;
	struct huge_cached old[HUGE_CACHE_SLOTS], got = {NULL, 0, 0};
	unsigned nold = 0;
	size_t want = ALIGN_UP(bytes, HUGE_CHUNK);
	align = MAX(align, (size_t)KMM_SECTION_SIZE);
	if (!zero && __atomic_load_n(&z->nr_huge_cached, __ATOMIC_RELAXED)) {
		kmm_lock(&z->lock);
		nold = huge_cache_expire(z, huge_cutoff(kmm_now_ms()), old);
		got = huge_cache_take_fit(z, want, align);
		kmm_unlock(&z->lock);
		huge_unmap_all(old, nold);
	}
	char *p = got.addr;
	if (!p) {
		p = os_map_aligned(want, align);
		if (!p) {
			errno = ENOMEM;
			return NULL;
		}
		if (!zero)
			huge_fill(z, p, want);
	}
	__atomic_fetch_add(&z->huge_live_bytes, want, __ATOMIC_RELAXED);
	*len = want;
	return p;
}

big_text void huge_unmap(void *addr, size_t len)
{
	struct zone *z = &zone_normal;
	KMM_ASSERT(((uintptr_t)addr | len) % HUGE_CHUNK == 0);
	__atomic_fetch_sub(&z->huge_live_bytes, len, __ATOMIC_RELAXED);
	if (kmm_tunable(KMM_TUNE_DECAY_MS) == 0) {
		os_unmap(addr, len);
		return;
	}
	huge_cache_put(z, (struct huge_cached){addr, len, kmm_now_ms()});
}

big_text int huge_grow_inplace(void *addr, size_t old_len, size_t new_len)
{
	/* The last chunk is inside the last VMA, which ends where the mapping does. */
	char *last = (char *)addr + old_len - HUGE_CHUNK;
	if (os_remap_inplace(last, HUGE_CHUNK, new_len - old_len + HUGE_CHUNK) != 0)
		return -1;
	__atomic_fetch_add(&zone_normal.huge_live_bytes, new_len - old_len, __ATOMIC_RELAXED);
	huge_fill(&zone_normal, (char *)addr + old_len, new_len - old_len);
	return 0;
}

big_text void *huge_move(void *addr, size_t old_len, size_t new_len)
{
	char *p = os_map_aligned(new_len, KMM_SECTION_SIZE);
	if (!p)
		return NULL;
	/* Open the pagemap for the new place now: the caller's publish then cannot fail. */
	if (pagemap_set(p, ALIGN_UP(new_len, KMM_SECTION_SIZE), NULL, PAGEMAP_NONE) != 0) {
		os_unmap(p, new_len);
		return NULL;
	}
	if (os_move_pages(addr, old_len, p, HUGE_CHUNK) != 0) {
		/* Chunks already moved go back; they were inside one VMA each. */
		if (os_move_pages(p, old_len, addr, HUGE_CHUNK) != 0)
			kmm_fatal("krealloc", "cannot move the pages of %p back", addr);
		os_unmap(p, new_len);
		errno = ENOMEM;
		return NULL;
	}
	__atomic_fetch_add(&zone_normal.huge_live_bytes, new_len - old_len, __ATOMIC_RELAXED);
	huge_fill(&zone_normal, p + old_len, new_len - old_len);
	return p;
}

size_t huge_cached_bytes(void)
{
	return __atomic_load_n(&zone_normal.huge_cached_bytes, __ATOMIC_RELAXED);
}

/* When the oldest cached mapping is due (UINT64_MAX: none).  Zone lock held. */
static big_text uint64_t huge_cache_due(struct zone *z)
{
	uint64_t oldest = UINT64_MAX;
	for (unsigned i = 0; i < z->nr_huge_cached; i++)
		oldest = MIN(oldest, z->huge_cache[i].freed_ms);
	return oldest == UINT64_MAX ? oldest : oldest + (uint64_t)kmm_tunable(KMM_TUNE_DECAY_MS);
}

/* ---- giving memory back ---- */

#define DECAY_BATCH 16

/*
 * For kmm_trim(): a growing section whose frames on the lists are all free
 * goes on them whole, so that it merges into one block and goes back to the
 * OS like any wholly free section.  Lock held.
 */
static void trim_growing(struct zone *z)
{
	struct mem_section *ms = z->growing;
	if (!ms)
		return;
	for (size_t i = 0; i < z->grow_next;) {
		struct page *b = free_block_containing(ms, i);
		if (!b)
			return;
		i = page_index(b) + (1ul << b->order);
	}
	populate_to(z, KMM_SECTION_PAGES);
}

/* zone_decay() with decay_lock held. */
static unsigned long decay_locked(struct zone *z, bool force)
{
	unsigned long given = 0;
	struct page *batch[DECAY_BATCH];
	struct mem_section *dead[DECAY_BATCH];
	unsigned ndead = 0;
	kmm_lock(&z->lock);
	uint64_t now = kmm_now_ms();
	uint64_t delay = (uint64_t)kmm_tunable(KMM_TUNE_DECAY_MS);
	__atomic_store_n(&z->last_decay_ms, now, __ATOMIC_RELAXED);
	struct huge_cached huge[HUGE_CACHE_SLOTS];
	unsigned nhuge = huge_cache_expire(z, force ? UINT64_MAX : huge_cutoff(now), huge);
	if (nhuge) {
		kmm_unlock(&z->lock);
		for (unsigned i = 0; i < nhuge; i++)
			given += huge[i].len >> KMM_PAGE_SHIFT;
		huge_unmap_all(huge, nhuge);
		kmm_lock(&z->lock);
	}
	/* Over the resident cap: the oldest blocks go too, due or not, to 1 MiB below it. */
	long purge = (long)zone_resident_excess(z);
	if (purge)
		purge += (long)(DIRTY_MIN_PAGES / 4);
	/*
	 * kmm_trim(): the wholly free sections that hold no resident frame (never
	 * used, or decommitted) go back too - they are not on the decay list.
	 * Bounded by the count at the start: a brk section that cannot go back
	 * returns to the list and must not be taken again and again.
	 */
	if (force)
		trim_growing(z);
	unsigned long cold_sections = force ? z->free_area[KMM_MAX_ORDER - 1].nr_free : 0;
	for (;;) {
		unsigned n = 0;
		while (n < DECAY_BATCH) {
			struct page *p;
			if (!list_empty(&z->decay_list)) {
				p = list_first_entry(&z->decay_list, struct page, decay);
				if (!force && now - p->freed_ms < delay && purge <= 0)
					break;
			} else if (cold_sections > 0 &&
				   !list_empty(&z->free_area[KMM_MAX_ORDER - 1].free_list[MT_FREE])) {
				p = list_first_entry(&z->free_area[KMM_MAX_ORDER - 1].free_list[MT_FREE],
						     struct page, lru);
				cold_sections--;
			} else {
				break;
			}
			unsigned order = p->order;
			unsigned long listed = z->decay_pages;
			del_from_free_area(z, p, order); /* takes its resident frames off decay_pages */
			purge -= (long)(listed - z->decay_pages);
			set_page_flags(p, PG_isolated);
			p->order = (uint8_t)order;
			z->isolated_pages += 1ul << order;
			batch[n++] = p;
		}
		if (n == 0)
			break;
		kmm_unlock(&z->lock);
		/* Highest first: a brk section goes back only from the top of the break. */
		for (unsigned i = 1; i < n; i++)
			for (unsigned j = i; j > 0 && (uintptr_t)page_to_virt(batch[j - 1]) <
							 (uintptr_t)page_to_virt(batch[j]);
			     j--) {
				struct page *t = batch[j - 1];
				batch[j - 1] = batch[j];
				batch[j] = t;
			}
		bool released[DECAY_BATCH];
		for (unsigned i = 0; i < n; i++) {
			struct page *p = batch[i];
			void *va = page_to_virt(p);
			released[i] = false;
			if (p->order == KMM_MAX_ORDER - 1) {
				pagemap_set(va, KMM_SECTION_SIZE, NULL, PAGEMAP_NONE);
				released[i] = os_section_free(va, KMM_SECTION_SIZE);
				if (!released[i]) /* a brk section that must stay */
					pagemap_set(va, KMM_SECTION_SIZE, page_section(p), PAGEMAP_SECTION);
			} else {
				os_decommit(va, KMM_PAGE_SIZE << p->order);
			}
		}
		kmm_lock(&z->lock);
		for (unsigned i = 0; i < n; i++) {
			struct page *p = batch[i];
			struct mem_section *ms = page_section(p);
			unsigned long was = bits_range(ms->resident, page_index(p), 1ul << p->order, BITS_CLEAR);
			z->resident_pages -= was;
			z->isolated_pages -= 1ul << p->order;
			given += was;
			if (released[i]) {
				unsigned slot = (unsigned)(ms->start_pfn / KMM_SECTION_PAGES);
				z->section[slot] = NULL;
				z->free_slots[z->free_slot_top++] = slot;
				z->nr_sections--;
				z->sections_released++;
				z->managed_pages -= KMM_SECTION_PAGES;
				set_page_flags(p, 0);
				dead[ndead++] = ms;
			} else {
				free_one_block(z, p, p->order);
			}
		}
		if (ndead > 0) {
			kmm_unlock(&z->lock);
			while (ndead > 0)
				section_desc_free(dead[--ndead]);
			kmm_lock(&z->lock);
		}
	}
	kmm_unlock(&z->lock);
	return given;
}

unsigned long zone_decay(struct zone *z, bool force)
{
	if (force)
		kmm_lock(&z->decay_lock);
	else if (pthread_mutex_trylock(&z->decay_lock) != 0)
		return 0; /* someone is decaying already (or a fork is under way) */
	unsigned long given = decay_locked(z, force);
	kmm_unlock(&z->decay_lock);
	return given;
}


/* ---- the background decay thread ----
 * Decay otherwise runs only on the allocator's slow paths, so a program
 * that frees its heap and then idles would keep its RSS.  Once the zone has
 * grown past BACKGROUND_MIN_BYTES (small programs never get a thread), a
 * detached thread sleeps on zone->decay_wait (with the zone lock) until the
 * oldest block on the decay list is due, decays what is due, and sleeps
 * again; an empty list means sleeping until queue_decay() signals.  So a
 * free block goes back to the OS about KMM_DECAY_MS after it was freed,
 * whether or not the program calls kmm again, and an idle process costs no
 * wake-ups.  The thread blocks every signal.  After fork the child starts
 * its own when it needs one.
 */
#define BACKGROUND_MIN_BYTES (64ul << 20)

static int decay_thread_started; /* 0, 1 (atomic) */

static big_text void *decay_thread_main(void *arg)
{
	struct zone *z = arg;
	kmm_lock(&z->lock);
	for (;;) {
		z->decay_thread_waits = true;
		uint64_t due = huge_cache_due(z);
		if (!list_empty(&z->decay_list)) {
			struct page *oldest = list_first_entry(&z->decay_list, struct page, decay);
			due = MIN(due, oldest->freed_ms + (uint64_t)kmm_tunable(KMM_TUNE_DECAY_MS));
		}
		if (due == UINT64_MAX || !kmm_tunable(KMM_TUNE_BACKGROUND)) {
			pthread_cond_wait(&z->decay_wait, &z->lock);
			continue;
		}
		uint64_t now = kmm_now_ms();
		if (now < due) {
			struct timespec ts;
			os_deadline_ms(&ts, (long)(due - now) + 5); /* +5: the coarse clock's tick */
			pthread_cond_timedwait(&z->decay_wait, &z->lock, &ts);
			continue;
		}
		z->decay_thread_waits = false;
		kmm_unlock(&z->lock);
		/*
		 * Wait for the decay lock rather than try it: an allocating
		 * thread's pass (or a fork) that holds it would otherwise send
		 * this thread round the loop, calling again and again, until it
		 * was done.
		 */
		kmm_lock(&z->decay_lock);
		decay_locked(z, false);
		kmm_unlock(&z->decay_lock);
		kmm_lock(&z->lock);
	}
	return NULL;
}

static void decay_thread_maybe_start(struct zone *z)
{
	if (__atomic_load_n(&decay_thread_started, __ATOMIC_RELAXED) ||
	    !kmm_tunable(KMM_TUNE_BACKGROUND))
		return;
	kmm_lock(&z->lock);
	bool big = z->managed_pages * KMM_PAGE_SIZE >= BACKGROUND_MIN_BYTES ||
		   __atomic_load_n(&z->nr_huge_cached, __ATOMIC_RELAXED);
	kmm_unlock(&z->lock);
	if (!big)
		return;
	int expected = 0;
	if (!__atomic_compare_exchange_n(&decay_thread_started, &expected, 1, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_RELAXED))
		return;
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t tid;
	sigfillset(&all);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread inherits this mask */
	if (pthread_create(&tid, &attr, decay_thread_main, z) != 0)
		__atomic_store_n(&decay_thread_started, 0, __ATOMIC_RELAXED); /* try again later */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
}

/* ---- public interface ---- */

KMM_EXPORT void *kmm_alloc_pages(unsigned flags, unsigned order)
{
	if (unlikely(order >= KMM_MAX_ORDER || (flags & ~KMM_GFP_VALID_MASK))) {
		errno = EINVAL;
		return NULL;
	}
	kmm_ensure_init();
	struct page *page = alloc_pages(flags, order);
	return page ? page_to_virt(page) : NULL;
}

KMM_EXPORT void kmm_free_pages(void *addr, unsigned order)
{
	static const char fn[] = "kmm_free_pages";
	if (!addr)
		return;
	struct page *page = virt_to_page(addr);
	KMM_CHECK(page && ((uintptr_t)addr & (KMM_PAGE_SIZE - 1)) == 0, fn, "invalid pointer %p", addr);
	KMM_CHECK(!(page->flags & (PG_buddy | PG_pcp)), fn, "double free %p (order %u)", addr, order);
	KMM_CHECK(page->flags == PG_head, fn, "invalid pointer %p (not a block from kmm_alloc_pages)",
		  addr);
	KMM_CHECK(page->order == order, fn, "invalid order %u for %p (allocated with order %u)", order,
		  addr, page->order);
	free_pages(page, order);
}

KMM_EXPORT rare void kmm_zone_stats(struct kmm_zone_stats *out)
{
	kmm_ensure_init();
	struct zone *z = &zone_normal;
	memset(out, 0, sizeof(*out));
	out->pcp_pages = pcp_pages_total();
	kmm_lock(&z->lock);
	out->managed_pages = z->managed_pages;
	out->free_pages = z->free_pages;
	out->deferred_pages = zone_deferred_pages(z);
	out->resident_pages = z->resident_pages;
	out->peak_busy_pages = z->peak_busy_pages;
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++)
		out->nr_free[o] = z->free_area[o].nr_free;
	out->nr_sections = z->nr_sections;
	out->sections_added = z->sections_added;
	out->sections_released = z->sections_released;
	kmm_unlock(&z->lock);
}

KMM_EXPORT rare void kmm_buddyinfo(FILE *out)
{
	kmm_ensure_init();
	struct zone *z = &zone_normal;
	unsigned long nr[KMM_MAX_ORDER];
	kmm_lock(&z->lock);
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++)
		nr[o] = z->free_area[o].nr_free;
	kmm_unlock(&z->lock);
	fprintf(out, "Node %d, zone %8s ", z->node, z->name);
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++)
		fprintf(out, "%6lu ", nr[o]);
	fputc('\n', out);
}

/* The kinds' names in kmm_pagetypeinfo(), as the kernel names its migratetypes. */
static const char *const mt_names[MT_TYPES] = {
	[MT_SMALL] = "Small", [MT_LARGE] = "Large", [MT_FREE] = "Kindless"};

/* A header "%-43s " @title and the orders, then a line per kind: the kernel's free-pages table. */
static rare void print_type_table(FILE *out, const struct zone *z, const char *title,
			     unsigned long counts[MT_TYPES][KMM_MAX_ORDER])
{
	fprintf(out, "%-43s ", title);
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++)
		fprintf(out, "%6u ", o);
	fputc('\n', out);
	for (unsigned mt = 0; mt < MT_TYPES; mt++) {
		fprintf(out, "Node %4d, zone %8s, type %12s ", z->node, z->name, mt_names[mt]);
		for (unsigned o = 0; o < KMM_MAX_ORDER; o++)
			fprintf(out, "%6lu ", counts[mt][o]);
		fputc('\n', out);
	}
}

/*
 * /proc/pagetypeinfo's report for kmm's kinds (see MT_SMALL), with one table
 * of kmm's own after the kernel's two: of the free pages, those still
 * resident (not decommitted since last handed out) - where a heap's RSS goes
 * that is neither in use nor given back.  Counted under the zone lock in one
 * pass over the free lists and the sections, as the kernel counts it.
 */
KMM_EXPORT rare void kmm_pagetypeinfo(FILE *out)
{
	kmm_ensure_init();
	struct zone *z = &zone_normal;
	unsigned long nr_pages[MT_TYPES][KMM_MAX_ORDER] = {{0}};
	unsigned long resident[MT_TYPES][KMM_MAX_ORDER] = {{0}};
	unsigned long blocks[MT_TYPES] = {0};
	kmm_lock(&z->lock);
	/* Every pageblock on the lists or in use by the kind its byte names ... */
	for (unsigned s = 0; s < z->section_hwm; s++) {
		struct mem_section *ms = z->section[s];
		size_t populated = ms && ms == z->growing ? z->grow_next : KMM_SECTION_PAGES;
		for (size_t pb = 0; ms && pb < (populated >> PAGEBLOCK_ORDER); pb++)
			blocks[ms->pageblock_mt[pb]]++;
	}
	for (unsigned mt = 0; mt < MT_TYPES; mt++) {
		for (unsigned o = 0; o < KMM_MAX_ORDER; o++) {
			struct list_head *pos;
			list_for_each(pos, &z->free_area[o].free_list[mt]) {
				struct page *page = list_entry(pos, struct page, lru);
				nr_pages[mt][o]++;
				resident[mt][o] += block_resident_pages(page, o);
				if (mt != MT_FREE)
					continue;
				/* ... but a wholly free one has no kind, whatever its byte says. */
				const uint8_t *kind = &page_section(page)->pageblock_mt[page_index(page) >>
										       PAGEBLOCK_ORDER];
				for (size_t pb = 0; pb < (1ul << (o - PAGEBLOCK_ORDER)); pb++) {
					blocks[kind[pb]]--;
					blocks[MT_FREE]++;
				}
			}
		}
	}
	kmm_unlock(&z->lock);

	fprintf(out, "Page block order: %d\n", PAGEBLOCK_ORDER);
	fprintf(out, "Pages per block:  %lu\n\n", 1ul << PAGEBLOCK_ORDER);
	print_type_table(out, z, "Free pages count per migrate type at order", nr_pages);
	fprintf(out, "\n%-23s", "Number of blocks type ");
	for (unsigned mt = 0; mt < MT_TYPES; mt++)
		fprintf(out, "%12s ", mt_names[mt]);
	fputc('\n', out);
	fprintf(out, "Node %d, zone %8s ", z->node, z->name);
	for (unsigned mt = 0; mt < MT_TYPES; mt++)
		fprintf(out, "%12lu ", blocks[mt]);
	fputc('\n', out);
	fputc('\n', out);
	print_type_table(out, z, "Resident free pages per migrate type at order", resident);
}

unsigned long zone_peak_pages(void)
{
	kmm_lock(&zone_normal.lock);
	unsigned long n = zone_normal.peak_managed_pages;
	kmm_unlock(&zone_normal.lock);
	return n;
}

unsigned long long zone_metadata_bytes(void)
{
	struct zone *z = &zone_normal;
	kmm_lock(&z->lock);
	/* Descriptors in use, and the slots of the section table touched so far (none in the zone). */
	unsigned long long n = (unsigned long long)z->nr_sections *
			       ALIGN_UP(sizeof(struct mem_section), KMM_PAGE_SIZE);
	if (z->section != z->section_first)
		n += ALIGN_UP((unsigned long long)z->section_hwm * (sizeof(void *) + sizeof(unsigned)),
			      KMM_PAGE_SIZE);
	kmm_unlock(&z->lock);
	return n;
}

static void decay_cond_init(struct zone *z)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&z->decay_wait, &ca);
	pthread_condattr_destroy(&ca);
}

/* ---- fork ---- */

rare void page_fork_prepare(void)
{
	kmm_lock(&zone_normal.decay_lock);
	kmm_lock(&zone_normal.lock);
	kmm_lock(&pcp_registry_lock);
	kmm_lock(&desc_lock);
}

rare void page_fork_parent(void)
{
	kmm_unlock(&desc_lock);
	kmm_unlock(&pcp_registry_lock);
	kmm_unlock(&zone_normal.lock);
	kmm_unlock(&zone_normal.decay_lock);
}

rare void page_fork_child(void)
{
	__atomic_store_n(&decay_thread_started, 0, __ATOMIC_RELAXED); /* it did not come along */
	zone_normal.decay_thread_waits = false;
	decay_cond_init(&zone_normal);
	kmm_lock_init(&desc_lock);
	kmm_lock_init(&pcp_registry_lock);
	kmm_lock_init(&zone_normal.lock);
	kmm_lock_init(&zone_normal.decay_lock);
}

/* The child's other threads are gone; their pcp lists (in their TLS, still mapped) come back. */
rare void page_fork_child_reclaim(void)
{
	struct list_head *pos, *tmp;
	kmm_lock(&pcp_registry_lock);
	list_for_each_safe(pos, tmp, &pcp_registry)
	{
		struct per_cpu_pages *pcp = list_entry(pos, struct per_cpu_pages, registry);
		if (pcp == &pcp_tls)
			continue;
		list_del(&pcp->registry);
		kmm_unlock(&pcp_registry_lock);
		for (unsigned o = 0; o <= PCP_MAX_ORDER; o++)
			pcp_drain(pcp, o, ~0u);
		kmm_lock(&pcp_registry_lock);
	}
	kmm_unlock(&pcp_registry_lock);
}

/* ---- validation ---- */

#define VFAIL(...)                                                                               \
	do {                                                                                     \
		kmm_warn("buddy_validate: " __VA_ARGS__);                                        \
		ok = false;                                                                      \
	} while (0)

static bool zone_validate(struct zone *z, unsigned long pcp_expected)
{
	bool ok = true;
	unsigned long free_pages = 0, pcp_pages = 0, resident = 0, on_decay = 0, decay_pages = 0;
	kmm_lock(&z->lock);
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++) {
		unsigned long n = 0;
		for (unsigned mt = 0; mt < MT_TYPES; mt++) {
			unsigned long n_mt = 0;
			bool cold_seen = false;
			struct list_head *pos;
			list_for_each (pos, &z->free_area[o].free_list[mt]) {
				struct page *p = list_entry(pos, struct page, lru);
				size_t idx = page_index(p);
				if (block_mt(p, o) != mt)
					VFAIL("block %p of kind %u on the kind-%u list of order %u",
					      (void *)p, block_mt(p, o), mt, o);
				bool warm = block_resident_pages(p, o) != 0;
				if (warm && cold_seen)
					VFAIL("resident block pfn %lu after a decommitted one on the "
					      "kind-%u list of order %u",
					      page_to_pfn(p), mt, o);
				cold_seen |= !warm;
				n_mt++;
				if (!(p->flags & PG_buddy) || p->order != o)
					VFAIL("block %p on free_area[%u] has flags %#x order %u",
					      (void *)p, o, p->flags, p->order);
				if (idx & ((1ul << o) - 1))
					VFAIL("free block pfn %lu misaligned for order %u",
					      page_to_pfn(p), o);
				if (o < KMM_MAX_ORDER - 1) {
					struct page *b =
						&page_section(p)->mem_map[idx ^ (1ul << o)];
					if ((b->flags & PG_buddy) && b->order == o)
						VFAIL("free buddies pfn %lu and %lu of order %u "
						      "not merged",
						      page_to_pfn(p), page_to_pfn(b), o);
				}
				for (size_t i = 1; i < (1ul << o); i++)
					if (p[i].flags)
						VFAIL("frame pfn %lu inside free block has flags "
						      "%#x",
						      page_to_pfn(p) + i, p[i].flags);
				n++;
			}
			if (!!(z->free_mask[mt] & (1u << o)) != (n_mt > 0))
				VFAIL("free_mask[%u] bit %u wrong", mt, o);
		}
		if (n != z->free_area[o].nr_free)
			VFAIL("free_area[%u].nr_free %lu but the lists hold %lu", o,
			      z->free_area[o].nr_free, n);
		free_pages += n << o;
	}
	if (free_pages != z->free_pages)
		VFAIL("free_pages %lu but lists hold %lu", z->free_pages, free_pages);
	struct list_head *pos;
	list_for_each (pos, &z->decay_list) {
		struct page *p = list_entry(pos, struct page, decay);
		if (!(p->flags & PG_buddy) || !(p->flags & PG_decay) || p->order < DECAY_MIN_ORDER)
			VFAIL("decay list entry pfn %lu flags %#x order %u", page_to_pfn(p),
			      p->flags, p->order);
		on_decay++;
		decay_pages += bits_range(page_section(p)->resident, page_index(p), 1ul << p->order,
					  BITS_COUNT);
	}
	if (decay_pages != z->decay_pages)
		VFAIL("decay_pages %lu but the decay list holds %lu resident frames", z->decay_pages,
		      decay_pages);
	unsigned long buddy_heads = 0, decay_flags = 0, isolated = 0, managed = 0;
	bool growing_seen = false;
	if (z->section_hwm > zone_slot_cap(z) || z->free_slot_top > z->section_hwm)
		VFAIL("section slots: %u used, %u free, %u in all", z->section_hwm, z->free_slot_top,
		      zone_slot_cap(z));
	if (z->growing && (z->grow_next % (1u << PAGEBLOCK_ORDER) || z->grow_next >= KMM_SECTION_PAGES))
		VFAIL("growing section populated to frame %u", z->grow_next);
	for (unsigned s = 0; s < z->section_hwm; s++) {
		struct mem_section *ms = z->section[s];
		/* A whole section isolated for release is unpublished until it goes. */
		if (!ms)
			continue;
		if ((page_flags(&ms->mem_map[0]) & PG_isolated) &&
		    ms->mem_map[0].order == KMM_MAX_ORDER - 1) {
			isolated += KMM_SECTION_PAGES;
			managed += KMM_SECTION_PAGES;
			continue;
		}
		size_t populated = KMM_SECTION_PAGES;
		if (ms == z->growing) {
			populated = z->grow_next;
			growing_seen = true;
		}
		managed += populated;
		for (size_t i = populated; i < KMM_SECTION_PAGES; i++)
			if (ms->mem_map[i].flags)
				VFAIL("frame pfn %lu of the growing section, not populated yet, has "
				      "flags %#x",
				      page_to_pfn(&ms->mem_map[i]), ms->mem_map[i].flags);
		if (ms->zone != z || ms->start_pfn != (unsigned long)s * KMM_SECTION_PAGES ||
		    pagemap_ptr(pagemap_lookup((void *)ms->vaddr)) != ms)
			VFAIL("section %u descriptor inconsistent", s);
		resident += bits_range(ms->resident, 0, KMM_SECTION_PAGES, BITS_COUNT);
		for (size_t i = 0; i < KMM_SECTION_PAGES; i++) {
			struct page *p = &ms->mem_map[i];
			unsigned state = p->flags & (PG_buddy | PG_pcp | PG_head | PG_tail | PG_isolated);
			if (state & (state - 1))
				VFAIL("frame pfn %lu in two states (flags %#x)", page_to_pfn(p), p->flags);
			if (p->flags & PG_buddy)
				buddy_heads++;
			if (p->flags & PG_decay)
				decay_flags++;
			if (p->flags & PG_pcp)
				pcp_pages += 1ul << p->order;
			if (p->flags & PG_isolated)
				isolated += 1ul << p->order;
			if ((p->flags & PG_buddy) && p->order >= DECAY_MIN_ORDER &&
			    !(p->flags & PG_decay) &&
			    bits_range(ms->resident, i, 1ul << p->order, BITS_COUNT))
				VFAIL("free block pfn %lu has resident frames but is not on the decay list",
				      page_to_pfn(p));
			if ((p->flags & PG_tail) && page_section(p->head) != ms)
				VFAIL("tail pfn %lu points outside its section", page_to_pfn(p));
		}
	}
	unsigned long listed = 0;
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++)
		listed += z->free_area[o].nr_free;
	if (buddy_heads != listed)
		VFAIL("%lu PG_buddy frames but %lu blocks on the lists", buddy_heads, listed);
	if (decay_flags != on_decay)
		VFAIL("%lu PG_decay frames but %lu on the decay list", decay_flags, on_decay);
	if (resident != z->resident_pages)
		VFAIL("resident_pages %lu but %lu resident bits", z->resident_pages, resident);
	if (pcp_pages != pcp_expected)
		VFAIL("%lu frames flagged PG_pcp but pcp lists count %lu", pcp_pages, pcp_expected);
	if (z->free_pages > z->managed_pages)
		VFAIL("free_pages %lu > managed_pages %lu", z->free_pages, z->managed_pages);
	else if (z->managed_pages - z->free_pages - isolated > z->peak_busy_pages)
		VFAIL("%lu frames busy, above peak_busy_pages %lu",
		      z->managed_pages - z->free_pages - isolated, z->peak_busy_pages);
	if (isolated != z->isolated_pages)
		VFAIL("%lu frames isolated but isolated_pages %lu", isolated, z->isolated_pages);
	if (z->growing && !growing_seen)
		VFAIL("growing section %p is not in the section table", (void *)z->growing);
	if (managed != z->managed_pages)
		VFAIL("managed_pages %lu but the sections hold %lu populated frames", z->managed_pages,
		      managed);
	kmm_unlock(&z->lock);
	return ok;
}

KMM_EXPORT rare int kmm_buddy_validate(void)
{
	kmm_ensure_init();
	return zone_validate(&zone_normal, pcp_pages_total()) ? 0 : -1;
}

void page_alloc_init(void)
{
	struct zone *z = &zone_normal;
	decay_cond_init(z);
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++)
		for (unsigned mt = 0; mt < MT_TYPES; mt++)
			list_init(&z->free_area[o].free_list[mt]);
	list_init(&z->decay_list);
	z->min_free_pages = 64;
	z->last_decay_ms = kmm_now_ms();
}
