/* SPDX-License-Identifier: MIT */
/*
 * init.c - start-up, the per-thread exit hook, and the calls that span
 * layers (drain, trim).
 *
 * Start-up is lazy: the first call into kmm runs kmm_init(), which sets up
 * every layer without allocating (the kmalloc caches and the cache of
 * caches are static), so no layer can recurse into an unfinished one.
 */
#include <pthread.h>

#include "midheap.h"
#include "os.h"
#include "page_alloc.h"
#include "slab.h"
#include "stats.h"
#include "thread.h"

void mempool_fork_prepare(void);
void mempool_fork_parent(void);
void mempool_fork_child(void);

int kmm_initialized;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t thread_key;
static __thread bool thread_registered __attribute__((tls_model("initial-exec")));

void kmalloc_init(void);

/* Runs when a registered thread exits: slabs first, their pages drain last. */
static void thread_exit(void *arg)
{
	(void)arg;
	slab_thread_exit();
	pcp_thread_exit();
	thread_registered = false;
}

void thread_register(void)
{
	if (thread_registered)
		return;
	thread_registered = true;
	pthread_setspecific(thread_key, (void *)1);
}

/*
 * fork: every kmm lock is taken before the fork, in the one lock order
 * (docs/ARCHITECTURE.md), so that no lock is held by a thread that will not
 * exist in the child.  The parent releases them; the child re-creates them
 * (it has one thread) and then takes back the page and slab caches of the
 * threads that did not come along.
 */
static rare void fork_prepare(void)
{
	pthread_mutex_lock(&init_lock);
	mempool_fork_prepare();
	slab_fork_prepare();
	mid_fork_prepare();
	page_fork_prepare();
	pagemap_fork_prepare();
	os_fork_prepare();
}

static rare void fork_parent(void)
{
	os_fork_parent();
	pagemap_fork_parent();
	page_fork_parent();
	mid_fork_parent();
	slab_fork_parent();
	mempool_fork_parent();
	pthread_mutex_unlock(&init_lock);
}

static rare void fork_child(void)
{
	os_fork_child();
	pagemap_fork_child();
	page_fork_child();
	mid_fork_child();
	slab_fork_child();
	mempool_fork_child();
	pthread_mutex_init(&init_lock, NULL);
	slab_fork_child_reclaim();
	page_fork_child_reclaim();
}

void kmm_init(void)
{
	pthread_mutex_lock(&init_lock);
	if (!kmm_initialized) {
		options_init();
		stats_init();
		page_alloc_init();
		slab_init();
		kmalloc_init();
		mid_init();
		/* The key must exist before any thread registers (no allocation here). */
		if (pthread_key_create(&thread_key, thread_exit) != 0)
			kmm_fatal("kmm_init", "pthread_key_create failed");
		__atomic_store_n(&kmm_initialized, 1, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&init_lock);
		/* May call malloc (glibc grows its handler list): kmm is ready now. */
		if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
			kmm_fatal("kmm_init", "pthread_atfork failed");
		return;
	}
	pthread_mutex_unlock(&init_lock);
}

KMM_EXPORT void kmm_drain_local(void)
{
	kmm_ensure_init();
	slab_flush_local();
	pcp_drain_local();
}

KMM_EXPORT rare unsigned long kmm_trim(void)
{
	kmm_ensure_init();
	slab_flush_local();
	slab_shrink_all();
	unsigned long pages = mid_trim() >> KMM_PAGE_SHIFT;
	pcp_drain_local();
	return pages + zone_decay(&zone_normal, true);
}
