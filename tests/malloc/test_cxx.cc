// SPDX-License-Identifier: MIT
//
// test_cxx.cc - C++ operator new and delete on kmm (src/new.cc), linked
// from libkmm.a so that every form is kmm's.
//
//   1. Every form: plain, nothrow, array, sized delete, aligned new (types
//      with alignas(64/256/4096) and explicit std::align_val_t 1 .. 1 MiB),
//      aligned nothrow, aligned (sized) delete: results aligned (16 bytes
//      at least above 8 bytes), unique, every byte usable.
//   2. They are kmm's: malloc_usable_size() accepts a new char[100] (kmm
//      aborts on a pointer it did not hand out) and kmm's heap figures move
//      with new and delete.
//   3. Failure: a new that cannot be satisfied throws std::bad_alloc (plain,
//      array, aligned); the nothrow forms return nullptr; a new_handler is
//      called before bad_alloc, may uninstall itself, may throw, and may
//      free a reserve so that the retry succeeds (under RLIMIT_AS, in a
//      child process).
//   4. std::vector, std::string, std::map, std::unordered_map, std::list
//      and std::shared_ptr workloads compute the right results.
//   5. operator delete of a stack address aborts with
//      "kmm: operator delete(): invalid pointer".
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace {

constexpr size_t MiB = 1024 * 1024;

// Sizes and pointers the compiler cannot see through.
volatile size_t v_huge = SIZE_MAX / 2;
volatile size_t v_zero = 0;

template <typename T> T *launder_ptr(T *p)
{
	__asm__ volatile("" : "+r"(p) : : "memory");
	return p;
}

void use(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

bool aligned_to(const void *p, size_t a)
{
	__asm__("" : "+r"(p));
	return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0;
}

size_t min_align(size_t size) { return size <= 8 ? 8 : 16; }

unsigned long long heap_in_use()
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	return h.in_use_bytes;
}

const size_t kSizes[] = {0, 1, 7, 8, 9, 16, 24, 100, 1000, 4096, 10000, 40000, 100000,
			 1 * MiB, 5 * MiB};

void check_block(void *p, size_t n, size_t align, const char *what)
{
	CHECK(p != nullptr, "%s(%zu) returned nullptr", what, n);
	CHECK(aligned_to(p, min_align(n)), "%s(%zu) = %p misaligned", what, n, p);
	CHECK(aligned_to(p, align), "%s(%zu) = %p not aligned to %zu", what, n, p, align);
	CHECK(malloc_usable_size(p) >= n, "%s(%zu): usable size %zu", what, n, malloc_usable_size(p));
	fill_pattern(p, n, n * 31 + align);
	CHECK(check_pattern(p, n, n * 31 + align) < 0, "%s(%zu): memory not usable", what, n);
}

// ---- 1. every form ----

// Allocate three blocks with @alloc (so that they are not all the same
// recycled slot), check them, free them with @release.
template <typename A, typename R>
void exercise(A alloc, R release, size_t n, size_t align, const char *what)
{
	void *p[3];
	for (int k = 0; k < 3; k++) {
		p[k] = alloc(n);
		check_block(p[k], n, align, what);
	}
	for (int k = 0; k < 3; k++)
		release(p[k], n);
}

void test_plain_forms()
{
	for (size_t n : kSizes) {
		exercise([](size_t s) { return ::operator new(s); },
			 [](void *p, size_t) { ::operator delete(p); }, n, 1, "operator new");
		exercise([](size_t s) { return ::operator new(s); },
			 [](void *p, size_t s) { ::operator delete(p, s); }, n, 1,
			 "operator new/sized delete");
		exercise([](size_t s) { return ::operator new[](s); },
			 [](void *p, size_t) { ::operator delete[](p); }, n, 1, "operator new[]");
		exercise([](size_t s) { return ::operator new[](s); },
			 [](void *p, size_t s) { ::operator delete[](p, s); }, n, 1,
			 "operator new[]/sized delete[]");
		exercise([](size_t s) { return ::operator new(s, std::nothrow); },
			 [](void *p, size_t) { ::operator delete(p, std::nothrow); }, n, 1,
			 "operator new(nothrow)");
		exercise([](size_t s) { return ::operator new[](s, std::nothrow); },
			 [](void *p, size_t) { ::operator delete[](p, std::nothrow); }, n, 1,
			 "operator new[](nothrow)");
	}

	// new of 0 bytes: unique, non-null.
	std::vector<void *> zero;
	for (int i = 0; i < 1000; i++) {
		void *p = ::operator new(v_zero);
		CHECK(p != nullptr, "operator new(0) returned nullptr");
		zero.push_back(p);
	}
	std::sort(zero.begin(), zero.end());
	CHECK(std::adjacent_find(zero.begin(), zero.end()) == zero.end(),
	      "operator new(0) returned a pointer twice");
	for (void *p : zero)
		::operator delete(p);

	// New-expressions, with constructors and destructors.
	static int alive;
	struct Counted {
		uint64_t v[3];
		Counted() : v{1, 2, 3} { alive++; }
		~Counted() { alive--; }
	};
	Counted *one = new Counted;
	CHECK(alive == 1 && one->v[2] == 3 && aligned_to(one, 16), "new Counted");
	delete one;
	Counted *many = new Counted[1000];
	CHECK(alive == 1000 && many[999].v[1] == 2, "new Counted[1000]");
	delete[] many;
	CHECK(alive == 0, "delete[] ran %d destructors too few", alive);
	Counted *nt = new (std::nothrow) Counted[10];
	CHECK(nt != nullptr && alive == 10, "new (nothrow) Counted[10]");
	delete[] nt;
	int *i = new int(42);
	CHECK(*i == 42, "new int(42)");
	delete i;
}

struct alignas(64) A64 {
	unsigned char b[64];
};
struct alignas(256) A256 {
	unsigned char b[100];
};
struct alignas(4096) A4096 {
	unsigned char b[5000];
};

template <typename T> void check_aligned_type(const char *name)
{
	constexpr size_t a = alignof(T);
	static_assert(a > __STDCPP_DEFAULT_NEW_ALIGNMENT__, "needs aligned new");
	std::vector<T *> keep;
	for (int k = 0; k < 20; k++) {
		T *p = new T; // operator new(size_t, align_val_t)
		CHECK(aligned_to(p, a), "new %s = %p not aligned to %zu", name, static_cast<void *>(p),
		      a);
		memset(p->b, k, sizeof(p->b));
		keep.push_back(p);
	}
	for (size_t k = 0; k < keep.size(); k++) {
		CHECK(keep[k]->b[sizeof(keep[k]->b) - 1] == static_cast<unsigned char>(k),
		      "new %s: block %zu overwritten", name, k);
		delete keep[k]; // operator delete(void *, size_t, align_val_t)
	}
	for (size_t n : {1ul, 2ul, 3ul, 17ul, 100ul}) {
		T *arr = new T[n];
		CHECK(aligned_to(arr, a), "new %s[%zu] = %p not aligned", name, n,
		      static_cast<void *>(arr));
		for (size_t j = 0; j < n; j++) {
			CHECK(aligned_to(&arr[j], a), "element %zu of new %s[%zu] misaligned", j, name, n);
			memset(arr[j].b, 0x6c, sizeof(arr[j].b));
		}
		delete[] arr;
	}
	T *nt = new (std::nothrow) T;
	CHECK(nt != nullptr && aligned_to(nt, a), "new (nothrow) %s", name);
	delete nt;
	auto up = std::make_unique<T[]>(7);
	CHECK(aligned_to(up.get(), a), "make_unique<%s[]>", name);
	std::vector<T> vec(33);
	CHECK(aligned_to(vec.data(), a), "std::vector<%s>::data() misaligned", name);
}

void test_aligned_forms()
{
	check_aligned_type<A64>("A64");
	check_aligned_type<A256>("A256");
	check_aligned_type<A4096>("A4096");

	for (size_t a = 1; a <= 1 * MiB; a *= 2) {
		static std::align_val_t al;
		al = std::align_val_t{a};
		for (size_t n : kSizes) {
			exercise([](size_t s) { return ::operator new(s, al); },
				 [](void *p, size_t) { ::operator delete(p, al); }, n, a,
				 "operator new(align_val_t)");
			exercise([](size_t s) { return ::operator new(s, al); },
				 [](void *p, size_t s) { ::operator delete(p, s, al); }, n, a,
				 "operator new(align_val_t)/sized aligned delete");
			exercise([](size_t s) { return ::operator new[](s, al); },
				 [](void *p, size_t) { ::operator delete[](p, al); }, n, a,
				 "operator new[](align_val_t)");
			exercise([](size_t s) { return ::operator new[](s, al); },
				 [](void *p, size_t s) { ::operator delete[](p, s, al); }, n, a,
				 "operator new[](align_val_t)/sized aligned delete[]");
			exercise([](size_t s) { return ::operator new(s, al, std::nothrow); },
				 [](void *p, size_t) { ::operator delete(p, al, std::nothrow); }, n, a,
				 "operator new(align_val_t, nothrow)");
			exercise([](size_t s) { return ::operator new[](s, al, std::nothrow); },
				 [](void *p, size_t) { ::operator delete[](p, al, std::nothrow); }, n, a,
				 "operator new[](align_val_t, nothrow)");
		}
	}
}

// ---- 2. served by kmm ----

void test_served_by_kmm()
{
	char *c = new char[100];
	use(c);
	size_t u = malloc_usable_size(c); // aborts unless kmm handed c out
	CHECK(u >= 100, "malloc_usable_size(new char[100]) = %zu", u);
	delete[] c;

	unsigned long long before = heap_in_use();
	char *big = new char[1 * MiB];
	use(big);
	memset(big, 1, 1 * MiB);
	CHECK(heap_in_use() >= before + 1 * MiB, "new char[1 MiB]: kmm's bytes in use %llu -> %llu",
	      before, heap_in_use());
	delete[] big;
	CHECK(heap_in_use() <= before, "delete[] of 1 MiB: kmm's bytes in use %llu (was %llu)",
	      heap_in_use(), before);

	A4096 *a = new A4096;
	CHECK(malloc_usable_size(a) >= sizeof(A4096), "aligned new not served by kmm");
	delete a;

	struct kmm_heap_stats h0, h1;
	kmm_heap_stats(&h0);
	void *huge = ::operator new(12 * MiB);
	use(huge);
	kmm_heap_stats(&h1);
	CHECK(h1.huge_blocks == h0.huge_blocks + 1 && h1.huge_bytes >= h0.huge_bytes + 12 * MiB,
	      "operator new(12 MiB) did not make a kmm huge block");
	::operator delete(huge, 12 * MiB);
}

// ---- 3. failure ----

template <typename F> bool throws_bad_alloc(F f)
{
	try {
		f();
	} catch (const std::bad_alloc &) {
		return true;
	}
	return false;
}

int handler_calls;

void counting_handler()
{
	if (++handler_calls == 3)
		std::set_new_handler(nullptr);
}

struct handler_gave_up : std::bad_alloc {
	const char *what() const noexcept override { return "handler_gave_up"; }
};

void throwing_handler()
{
	handler_calls++;
	throw handler_gave_up();
}

void test_failure()
{
	CHECK(throws_bad_alloc([] { use(::operator new(v_huge)); }),
	      "operator new(SIZE_MAX/2) did not throw std::bad_alloc");
	CHECK(throws_bad_alloc([] { use(::operator new[](v_huge)); }),
	      "operator new[](SIZE_MAX/2) did not throw std::bad_alloc");
	CHECK(throws_bad_alloc([] { use(::operator new(v_huge, std::align_val_t{64})); }),
	      "operator new(SIZE_MAX/2, align 64) did not throw std::bad_alloc");
	CHECK(throws_bad_alloc([] { use(::operator new[](v_huge, std::align_val_t{4096})); }),
	      "operator new[](SIZE_MAX/2, align 4096) did not throw std::bad_alloc");
	CHECK(throws_bad_alloc([] { use(new char[v_huge]); }),
	      "new char[SIZE_MAX/2] did not throw std::bad_alloc");
	CHECK(throws_bad_alloc([] { use(new A256[v_huge / 512]); }),
	      "new A256[SIZE_MAX/1024] did not throw std::bad_alloc");
	CHECK(throws_bad_alloc([] {
		      std::vector<char> v;
		      v.reserve(v_huge / 4);
		      use(v.data());
	      }),
	      "std::vector::reserve(SIZE_MAX/8) did not throw std::bad_alloc");
	try {
		use(::operator new(v_huge));
		CHECK(false, "operator new(SIZE_MAX/2) returned");
	} catch (const std::bad_alloc &e) {
		CHECK(e.what() != nullptr, "bad_alloc::what() is null");
	}

	CHECK(::operator new(v_huge, std::nothrow) == nullptr, "operator new(nothrow) did not fail");
	CHECK(::operator new[](v_huge, std::nothrow) == nullptr, "operator new[](nothrow) did not fail");
	CHECK(::operator new(v_huge, std::align_val_t{256}, std::nothrow) == nullptr,
	      "aligned operator new(nothrow) did not fail");
	CHECK(::operator new[](v_huge, std::align_val_t{256}, std::nothrow) == nullptr,
	      "aligned operator new[](nothrow) did not fail");
	// (Through launder_ptr: a compiler may elide a new-expression whose result is unused.)
	CHECK(launder_ptr(new (std::nothrow) char[v_huge]) == nullptr, "new (nothrow) char[SIZE_MAX/2]");
	CHECK(launder_ptr(new (std::nothrow) A64[v_huge / 128]) == nullptr, "new (nothrow) A64[...]");

	// A handler is called on each failure until it uninstalls itself.
	handler_calls = 0;
	std::set_new_handler(counting_handler);
	CHECK(throws_bad_alloc([] { use(::operator new(v_huge)); }),
	      "operator new did not throw after the handler uninstalled itself");
	CHECK(handler_calls == 3, "the new_handler was called %d times, want 3", handler_calls);
	CHECK(std::get_new_handler() == nullptr, "the handler is still installed");

	handler_calls = 0;
	std::set_new_handler(counting_handler);
	CHECK(throws_bad_alloc([] { use(::operator new[](v_huge, std::align_val_t{128})); }),
	      "aligned operator new[] did not throw after the handler uninstalled itself");
	CHECK(handler_calls == 3, "aligned new: the new_handler was called %d times, want 3",
	      handler_calls);

	// A handler that throws: its exception reaches the caller through kmm.
	handler_calls = 0;
	std::set_new_handler(throwing_handler);
	bool caught = false;
	try {
		use(::operator new(v_huge));
	} catch (const handler_gave_up &e) {
		caught = strcmp(e.what(), "handler_gave_up") == 0;
	}
	std::set_new_handler(nullptr);
	CHECK(caught && handler_calls == 1, "the handler's exception did not reach the caller "
	      "(caught %d, calls %d)", caught, handler_calls);
	// A handler does not run when the allocation succeeds.
	handler_calls = 0;
	std::set_new_handler(throwing_handler);
	void *ok = ::operator new(100);
	std::set_new_handler(nullptr);
	CHECK(ok != nullptr && handler_calls == 0, "the handler ran for a successful new");
	::operator delete(ok);
}

// The reserve: a handler that frees memory kept for the purpose.
void *reserve;
size_t reserve_size;

void release_reserve()
{
	handler_calls++;
	free(reserve);
	reserve = nullptr;
	std::set_new_handler(nullptr);
}

// Bytes of address space this process has mapped (/proc/self/statm).
size_t address_space()
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long pages = 0;
	CHECK(f != nullptr, "fopen(/proc/self/statm): %s", strerror(errno));
	CHECK(fscanf(f, "%lu", &pages) == 1, "cannot read /proc/self/statm");
	fclose(f);
	return pages * (size_t)sysconf(_SC_PAGESIZE);
}

void reserve_child(void *)
{
	const size_t want = 200 * MiB;
	reserve_size = 256 * MiB;
	reserve = malloc(reserve_size);
	CHECK(reserve != nullptr, "cannot allocate the reserve");
	memset(reserve, 1, 4096);
	// Warm up what a huge allocation needs besides its mapping.
	void *warm = malloc(8 * MiB);
	free(warm);
	size_t limit = address_space() + 64 * MiB;
	struct rlimit rl = {limit, limit};
	CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit(RLIMIT_AS): %s", strerror(errno));

	// Without a handler the request fails: the limit is real.
	void *p = ::operator new(want, std::nothrow);
	CHECK(p == nullptr, "operator new(200 MiB) succeeded under RLIMIT_AS");
	CHECK(throws_bad_alloc([&] { use(::operator new(want)); }),
	      "operator new(200 MiB) under RLIMIT_AS did not throw");

	handler_calls = 0;
	std::set_new_handler(release_reserve);
	char *q = static_cast<char *>(::operator new(want));
	CHECK(q != nullptr, "operator new returned nullptr");
	CHECK(handler_calls == 1, "the handler ran %d times, want 1", handler_calls);
	CHECK(reserve == nullptr, "the reserve was not released");
	q[0] = 1;
	q[want - 1] = 2;
	CHECK(malloc_usable_size(q) >= want, "usable size %zu", malloc_usable_size(q));
	::operator delete(q);

	// The aligned form retries the same way.
	reserve = malloc(reserve_size);
	if (reserve) { // room again after the delete
		handler_calls = 0;
		std::set_new_handler(release_reserve);
		void *r = ::operator new[](want, std::align_val_t{1 << 16});
		CHECK(r != nullptr && aligned_to(r, 1 << 16) && handler_calls == 1,
		      "aligned new with a reserve: %p, %d handler calls", r, handler_calls);
		::operator delete[](r, std::align_val_t{1 << 16});
	}
}

void test_new_handler_reserve()
{
	int st = 0;
	char how[96];
	char *out = run_in_child(reserve_child, nullptr, &st);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the RLIMIT_AS child %s; its stderr:\n%s",
	      describe_status(st, how, sizeof(how)), out);
	free(out);
}

// ---- 4. the standard library on kmm ----

void test_containers(uint64_t seed)
{
	struct rng r;
	rng_seed(&r, seed);

	std::vector<uint64_t> v;
	uint64_t sum = 0;
	for (uint64_t i = 0; i < 1000000; i++) {
		v.push_back(i * 3);
		sum += i * 3;
	}
	uint64_t got = 0;
	for (uint64_t x : v)
		got += x;
	CHECK(got == sum && v.size() == 1000000, "vector: sum %" PRIu64 " != %" PRIu64, got, sum);
	v.resize(10);
	v.shrink_to_fit();
	CHECK(v.capacity() == 10 && v[9] == 27, "vector::shrink_to_fit");

	std::string s;
	for (int i = 0; i < 100000; i++)
		s += static_cast<char>('a' + i % 26);
	CHECK(s.size() == 100000 && s[99999] == 'a' + 99999 % 26, "string append");
	std::string t = s.substr(1000, 5000) + std::to_string(1234567);
	CHECK(t.size() == 5007 && t.compare(5000, 7, "1234567") == 0, "string concat");

	std::vector<std::string> words;
	for (int i = 0; i < 20000; i++)
		words.push_back(std::string(static_cast<size_t>(rng_range(&r, 0, 100)), 'x') +
				std::to_string(i));
	for (int i = 0; i < 20000; i++) {
		const std::string &w = words[static_cast<size_t>(i)];
		CHECK(w.substr(w.find_first_not_of('x')) == std::to_string(i), "word %d: %s", i,
		      w.c_str());
	}

	std::map<int, std::string> m;
	for (int i = 0; i < 100000; i++)
		m[i * 7 % 100003] = std::to_string(i);
	for (int i = 0; i < 100000; i += 2)
		m.erase(i * 7 % 100003);
	CHECK(m.size() == 50000, "map size %zu", m.size());
	for (int i = 1; i < 100000; i += 2) {
		auto it = m.find(i * 7 % 100003);
		CHECK(it != m.end() && it->second == std::to_string(i), "map entry %d", i);
	}

	std::unordered_map<std::string, int> um;
	for (int i = 0; i < 50000; i++)
		um["key" + std::to_string(i)] = i;
	for (int i = 0; i < 50000; i += 3)
		CHECK(um.at("key" + std::to_string(i)) == i, "unordered_map entry %d", i);

	std::list<std::vector<int>> lst;
	for (int i = 0; i < 5000; i++)
		lst.emplace_back(static_cast<size_t>(i % 200), i);
	lst.remove_if([](const std::vector<int> &x) { return x.size() % 2 == 0; });
	size_t count = 0;
	for (const auto &x : lst) {
		CHECK(x.size() % 2 == 1, "list element of even size survived");
		count++;
	}
	CHECK(count == 2500, "list has %zu elements", count);

	std::vector<std::shared_ptr<A256>> sp;
	for (int i = 0; i < 1000; i++) {
		sp.push_back(std::make_shared<A256>());
		CHECK(aligned_to(sp.back().get(), 256), "make_shared<A256> misaligned");
	}
	auto copy = sp;
	sp.clear();
	CHECK(copy[999].use_count() == 1, "shared_ptr use count");
}

// ---- 5. operator delete of a pointer kmm never returned ----

void delete_stack(void *)
{
	long local[4] = {1, 2, 3, 4};
	::operator delete(launder_ptr(static_cast<void *>(&local[0])));
}

void delete_array_stack(void *)
{
	char local[64];
	memset(local, 0, sizeof(local));
	::operator delete[](launder_ptr(static_cast<void *>(local + 16)), 48);
}

void delete_aligned_interior(void *)
{
	char *p = static_cast<char *>(::operator new(1000, std::align_val_t{256}));
	::operator delete(launder_ptr(p + 256), std::align_val_t{256});
}

void test_bad_delete()
{
	expect_abort(delete_stack, nullptr, "kmm: operator delete(): invalid pointer");
	expect_abort(delete_array_stack, nullptr, "kmm: operator delete(): invalid pointer");
	expect_abort(delete_aligned_interior, nullptr, "kmm: operator delete(): invalid pointer");
}

} // namespace

int main()
{
	uint64_t seed = test_init("test_cxx", 0x6b6d6d2d63787831ull);

	test_plain_forms();
	test_aligned_forms();
	test_served_by_kmm();
	test_failure();
	test_new_handler_reserve();
	test_containers(seed);
	test_bad_delete();
	return test_finish();
}
