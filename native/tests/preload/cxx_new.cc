// SPDX-License-Identifier: GPL-2.0-only
/*
 * C++'s operator new and delete under LD_PRELOAD (tests/test_routes.py):
 * every form pyfrag exports, with the standard's failure behaviour
 * (std::bad_alloc, NULL from the nothrow forms, the new-handler called
 * first), alignment of the aligned forms, and sites: node-based containers
 * kept for good beside temporary strings of the same size class, so the
 * adaptive route can only tell them apart by the caller of new. Prints
 * "ok" and the checksum, or what went wrong. "no-oom" skips the failures:
 * under a sanitizer runtime the next operator new after pyfrag's is the
 * runtime's, which aborts on no memory instead of throwing.
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

static int handler_calls;
static void handler()
{
	handler_calls++;
	std::set_new_handler(nullptr); // the next failure throws
}

static bool aligned(const void *p, size_t a)
{
	return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0;
}

struct alignas(256) Wide {
	char bytes[256];
};

static int failures_behave()
{
	volatile size_t huge = (size_t)1 << 62;
	bool threw = false;
	try {
		char *p = new char[huge];
		std::printf("new[] of 2^62 bytes returned %p\n", (void *)p);
		return 1;
	} catch (const std::bad_alloc &) {
		threw = true;
	}
	std::set_new_handler(handler);
	try {
		char *p = new char[huge];
		(void)p;
	} catch (const std::bad_alloc &) {
		threw = threw && handler_calls == 1;
	}
	if (!threw)
		return std::puts("no bad_alloc, or the new-handler was not called"), 1;
	if (new (std::nothrow) char[huge] != nullptr || ::operator new(huge, std::nothrow) != nullptr)
		return std::puts("nothrow new of 2^62 bytes did not return NULL"), 1;
	return 0;
}

int main(int argc, char **argv)
{
	if (!(argc > 1 && std::string(argv[1]) == "no-oom") && failures_behave() != 0)
		return 1;

	Wide *w = new Wide;
	Wide *ws = new Wide[3];
	void *raw = ::operator new(100, std::align_val_t(128));
	void *raw_nt = ::operator new[](100, std::align_val_t(4096), std::nothrow);
	if (!aligned(w, 256) || !aligned(ws, 256) || !aligned(raw, 128) || !aligned(raw_nt, 4096))
		return std::puts("an aligned new is misaligned"), 1;
	delete w;
	delete[] ws;
	::operator delete(raw, std::align_val_t(128));
	::operator delete[](raw_nt, 100, std::align_val_t(4096));
	int *one = new int(5);
	::operator delete(one, sizeof(int));
	int *zero = new int[0];
	delete[] zero;

	std::map<int, std::string> kept;
	std::unordered_map<int, int> index;
	unsigned long sum = 0;
	for (int i = 0; i < 100000; i++) {
		for (int j = 0; j < 8; j++) {
			std::string temp(40 + j, char('a' + j)); // same class as the map's nodes
			sum += temp.size();
		}
		kept.emplace(i, std::string(40, char('a' + i % 26)));
		index[i] = i;
	}
	for (auto &kv : kept)
		sum += kv.second.size() + (size_t)index[kv.first];
	std::vector<int> grow;
	for (int i = 0; i < 100000; i++)
		grow.push_back(i);
	sum += grow.size();
	std::printf("ok %lu\n", sum);
	return 0;
}
