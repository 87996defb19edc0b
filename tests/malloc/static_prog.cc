// SPDX-License-Identifier: MIT
//
// static_prog.cc - a C++ program linked with -static against libkmm.a
// (test_static.sh): operator new/delete and malloc must all be kmm's.
// Prints "static_prog_cxx: ok" and exits 0; any failure exits 1.
#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <kmm.h>

#define FAIL_IF(cond, what)                                                                      \
	do {                                                                                     \
		if (cond) {                                                                      \
			std::fprintf(stderr, "static_prog_cxx: %s\n", what);                     \
			std::exit(1);                                                            \
		}                                                                                \
	} while (0)

namespace {

volatile size_t v_huge = SIZE_MAX / 2;

// Make @p escape: compilers may elide a new/delete pair whose block is unused.
void use(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

unsigned long long in_use()
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	return h.in_use_bytes;
}

struct alignas(256) Aligned {
	char b[300];
};

} // namespace

int main()
{
	char *c = new char[100];
	use(c);
	FAIL_IF(malloc_usable_size(c) < 100, "new char[100] is not kmm's");
	delete[] c;

	unsigned long long before = in_use();
	char *big = new char[1 << 20];
	use(big);
	FAIL_IF(in_use() < before + (1 << 20), "new char[1 MiB] did not come from kmm");
	delete[] big;

	Aligned *a = new Aligned[5];
	use(a);
	FAIL_IF(reinterpret_cast<uintptr_t>(a) % 256, "new Aligned[5] misaligned");
	delete[] a;

	FAIL_IF(::operator new(v_huge, std::nothrow) != nullptr, "nothrow new did not fail");
	bool threw = false;
	try {
		void *p = ::operator new(v_huge);
		std::fprintf(stderr, "operator new(SIZE_MAX/2) returned %p\n", p);
	} catch (const std::bad_alloc &) {
		threw = true;
	}
	FAIL_IF(!threw, "operator new(SIZE_MAX/2) did not throw std::bad_alloc");

	std::map<int, std::string> m;
	std::vector<std::thread> threads;
	for (int t = 0; t < 4; t++)
		threads.emplace_back([t] {
			std::vector<std::string> v;
			for (int i = 0; i < 20000; i++)
				v.push_back(std::string(static_cast<size_t>(i % 50), 'a') + std::to_string(t));
			if (v[19999].size() != 49 + 1)
				std::abort();
		});
	for (int i = 0; i < 10000; i++)
		m[i] = std::to_string(i * i);
	for (auto &t : threads)
		t.join();
	FAIL_IF(m.size() != 10000 || m[99] != "9801", "std::map");
	std::printf("static_prog_cxx: ok\n");
	return 0;
}
