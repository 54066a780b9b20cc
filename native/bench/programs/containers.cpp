// SPDX-License-Identifier: GPL-2.0-only
/*
 * containers: a C++ program of `pyfrag bench --workload programs`: std::map
 * of std::string keys, std::unordered_map, std::vector<std::string>
 * temporaries, all through operator new/delete.
 *
 * ROUNDS times: insert N keys "key<i>" into a long-lived std::map (value i),
 * erase the odd ones; fill an unordered_map<uint64_t, std::string> with N
 * entries (a string of 1 + i % 50 'x's at a scrambled key), and build and sort
 * a vector of N temporary strings; the map keeps growing across rounds, the
 * others die each round.
 * Prints "containers map <size> <sum of values> unordered <size> <sum of
 * lengths> sorted <1 when the vector came out sorted>".
 * Usage: containers [N] [ROUNDS].
 */
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

int main(int argc, char **argv)
{
	long n = argc > 1 ? std::atol(argv[1]) : 200000;
	long rounds = argc > 2 ? std::atol(argv[2]) : 6;

	if (n < 1 || rounds < 1) {
		std::fprintf(stderr, "usage: containers [N] [ROUNDS] (each >= 1)\n");
		return 2;
	}
	std::map<std::string, long> kept;
	unsigned long long unordered_size = 0, unordered_length = 0;
	bool sorted = true;

	for (long r = 0; r < rounds; r++) {
		for (long i = 0; i < n; i++)
			kept["key" + std::to_string(r * n + i)] = r * n + i;
		for (long i = 1; i < n; i += 2)
			kept.erase("key" + std::to_string(r * n + i));

		std::unordered_map<std::uint64_t, std::string> table;
		for (long i = 0; i < n; i++)
			table[(std::uint64_t)i * 2654435761u % 4294967296u] = std::string(1 + i % 50, 'x');
		unordered_size = table.size();
		unordered_length = 0;
		for (const auto &entry : table)
			unordered_length += entry.second.size();

		std::vector<std::string> words;
		for (long i = n; i > 0; i--)
			words.push_back("w" + std::to_string(i * 7919 % (n + 1)));
		std::sort(words.begin(), words.end());
		sorted = sorted && std::is_sorted(words.begin(), words.end());
	}
	unsigned long long sum = 0;
	for (const auto &entry : kept)
		sum += (unsigned long long)entry.second;
	std::printf("containers map %zu %llu unordered %llu %llu sorted %d\n", kept.size(), sum,
		    unordered_size, unordered_length, sorted ? 1 : 0);
	return 0;
}
