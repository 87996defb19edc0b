// SPDX-License-Identifier: MIT
//
// new.cc - C++ operator new and delete, every standard form, on kmm.
//
// libkmm must not depend on libstdc++ (C programs load it too), so this
// file includes no C++ header and reaches the two pieces of the C++ runtime
// it needs - std::get_new_handler() and std::__throw_bad_alloc() - through
// weak references.  Every C++ program has them; a C program never calls
// operator new.  It is compiled with -fno-exceptions -fno-rtti: it throws
// only by calling __throw_bad_alloc, and exceptions thrown by a new_handler
// unwind through it normally (it has no cleanups).
//
// Semantics:
//   new / new[] (and the aligned forms): on failure call the new_handler and
//     retry; with no handler, throw std::bad_alloc.  (Statically linked
//     programs that never pull in libstdc++'s __throw_bad_alloc abort with a
//     message instead.)
//   nothrow forms: return nullptr on failure without calling the handler.
//   delete forms (sized, aligned, nothrow): all free the block; kmm checks
//     the pointer like free().
#include <stddef.h>

namespace std {
struct nothrow_t;
enum class align_val_t : size_t;
typedef void (*new_handler)();
new_handler get_new_handler() noexcept __attribute__((weak));
[[noreturn]] void __throw_bad_alloc() __attribute__((weak));
} // namespace std

extern "C" {
void *kmm_new_alloc(size_t size, size_t align); // malloc.c: NULL on failure
void kmm_new_free(void *p);                      // malloc.c: free() with "delete" in reports
[[noreturn]] void kmm_new_failed(size_t size);   // malloc.c: report and abort
}

#define KMM_EXPORT __attribute__((visibility("default")))

static void *new_throwing(size_t size, size_t align)
{
	for (;;) {
		void *p = kmm_new_alloc(size, align);
		if (__builtin_expect(p != nullptr, 1))
			return p;
		std::new_handler handler = std::get_new_handler ? std::get_new_handler() : nullptr;
		if (!handler) {
			if (std::__throw_bad_alloc)
				std::__throw_bad_alloc();
			kmm_new_failed(size);
		}
		handler();
	}
}

KMM_EXPORT void *operator new(size_t n) { return new_throwing(n, 0); }
KMM_EXPORT void *operator new[](size_t n) { return new_throwing(n, 0); }
KMM_EXPORT void *operator new(size_t n, const std::nothrow_t &) noexcept { return kmm_new_alloc(n, 0); }
KMM_EXPORT void *operator new[](size_t n, const std::nothrow_t &) noexcept { return kmm_new_alloc(n, 0); }
KMM_EXPORT void *operator new(size_t n, std::align_val_t a) { return new_throwing(n, (size_t)a); }
KMM_EXPORT void *operator new[](size_t n, std::align_val_t a) { return new_throwing(n, (size_t)a); }
KMM_EXPORT void *operator new(size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
	return kmm_new_alloc(n, (size_t)a);
}
KMM_EXPORT void *operator new[](size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
	return kmm_new_alloc(n, (size_t)a);
}

KMM_EXPORT void operator delete(void *p) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete[](void *p) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete(void *p, size_t) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete[](void *p, size_t) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete(void *p, const std::nothrow_t &) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete[](void *p, const std::nothrow_t &) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete(void *p, std::align_val_t) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete[](void *p, std::align_val_t) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete(void *p, size_t, std::align_val_t) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete[](void *p, size_t, std::align_val_t) noexcept { kmm_new_free(p); }
KMM_EXPORT void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept
{
	kmm_new_free(p);
}
KMM_EXPORT void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept
{
	kmm_new_free(p);
}
