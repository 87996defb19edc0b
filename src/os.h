/* SPDX-License-Identifier: MIT */
/*
 * os.h - the OS layer's contract.  os_linux.c is the only file in kmm that
 * makes system calls; every other layer reaches the kernel through these
 * functions, so a port or a fault-injecting test needs to touch one file.
 *
 * Terms:
 *   map        obtain fresh address space backed by zero-filled memory that
 *              the kernel commits on first touch (MAP_NORESERVE: no swap
 *              reservation, so reserving is cheap).
 *   decommit   give the physical pages back (MADV_DONTNEED); the range stays
 *              mapped and reads back as zeroes.  Never fails in a way the
 *              caller must handle.
 *   unmap      give the address space back.
 *
 * Fault injection: every call that obtains memory (map, brk growth) goes
 * through os_may_fail(); a test can make those fail with ENOMEM
 * (kmm_os_fail_after()).  Calls that release memory never fail on purpose.
 */
#ifndef KMM_OS_H
#define KMM_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

/*
 * Map @size bytes aligned to @align (a power of two, >= page size).
 * Returns NULL with errno ENOMEM on failure.  The memory reads as zero.
 */
void *os_map_aligned(size_t size, size_t align);

/*
 * Reserve @size bytes (a page multiple) that read as zero and cannot be
 * written: no memory and no commit charge until os_make_writable() opens a
 * part of it.  NULL with errno ENOMEM.
 */
void *os_reserve_readonly(size_t size);

/* Let a page-aligned part of an os_reserve_readonly() range be written.  0, or -1 with errno ENOMEM. */
int os_make_writable(void *addr, size_t size);

/* Unmap a range from os_map_aligned() (or part of one). */
void os_unmap(void *addr, size_t size);

/* Decommit a page-aligned range: contents become zero, RSS drops. */
void os_decommit(void *addr, size_t size);

/*
 * Resize an OS mapping of @old_size to @new_size in place (mremap without
 * moving).  Returns 0, or -1 with errno ENOMEM if the pages after it are
 * taken (the mapping is then unchanged).
 */
int os_remap_inplace(void *addr, size_t old_size, size_t new_size);

/*
 * Move the pages of [@src, @src + @len) to @dst, replacing what was mapped
 * there, without copying or faulting (mremap), @chunk bytes at a time: the
 * range may span several mappings, but each chunk must lie in one.
 * 0, or -1 with errno ENOMEM (the chunks moved so far stay moved).
 */
int os_move_pages(void *src, size_t len, void *dst, size_t chunk);

/* The CLOCK_MONOTONIC time @ms from now, for timed waits. */
void os_deadline_ms(struct timespec *ts, long ms);

/* Peak resident set of the process in KiB (getrusage). */
long os_peak_rss_kb(void);
/* CPUs online (at least 1 where the system cannot tell). */
long os_nr_cpus(void);
/* Sleep while *@addr == @val (or until woken; spurious returns allowed). */
void os_futex_wait(int *addr, int val);
/* Wake up to @n threads sleeping in os_futex_wait(@addr). */
void os_futex_wake(int *addr, int n);
/* Register for os_membarrier(); false where the kernel (or a seccomp filter) refuses. */
bool os_membarrier_register(void);
/* A full memory barrier in every running thread of the process (after a registration). */
void os_membarrier(void);

/*
 * Sections for a zone: @size bytes naturally aligned to @size.  Taken from
 * the brk heap when KMM_TUNE_USE_BRK is set and brk can grow, else mapped.
 * NULL with errno ENOMEM on failure.
 */
void *os_section_alloc(size_t size);

/*
 * Give a section back.  Returns true if the address space went back to the
 * OS; false if it had to stay (a brk section below the top of the heap),
 * in which case it has been decommitted and the caller keeps it.
 */
bool os_section_free(void *addr, size_t size);

/* fork: the brk lock (innermost of kmm's locks). */
void os_fork_prepare(void);
void os_fork_parent(void);
void os_fork_child(void);

/* A duplicate of fd 2 (close-on-exec), or -1. */
int os_dup_stderr(void);
/* A stdio stream writing to @fd (takes it over), or NULL. */
FILE *os_fdopen_write(int fd);

/* Write a whole message to stderr (no stdio, no allocation). */
void os_write_stderr(const char *buf, size_t len);

/* Abort the process (after a fatal report). */
__attribute__((noreturn)) void os_abort(void);

#endif /* KMM_OS_H */
