/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Options: one table (PF_OPTIONS in internal.h) of environment name,
 * default, kind and meaning. Values are read once from environ by hand:
 * no getenv, no allocation, no stdio, so this is safe however early it runs.
 * Sizes take K/M/G/T suffixes (powers of 1024, an optional trailing B or iB);
 * switches take 1/yes/on/true and 0/no/off/false.
 * Options marked fixed are frozen once the arena exists (EBUSY afterwards).
 * A size the arena cannot use (PYFRAG_ARENA outside 4 MiB..16 TiB) is
 * clamped to the nearest it can, not refused: the option then reads back
 * what pyfrag will use.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

extern char **environ;

struct pf_options pf__options;

struct option_row {
	const char *env;
	const char *def;
	enum pf_option_kind kind;
	bool fixed;
	const char *doc;
	_Atomic long long *value;
};

static const struct option_row rows[] = {
#define PF_OPTION_ROW_(field, env, def, kind, fixed, doc) { env, def, kind, fixed, doc, &pf__options.field },
	PF_OPTIONS(PF_OPTION_ROW_)
#undef PF_OPTION_ROW_
};
#define ROW_COUNT (sizeof(rows) / sizeof(rows[0]))

static const char *const hugepage_modes[] = { "auto", "hugetlb", "thp", "off" };

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool same_word(const char *a, const char *b)
{
	while (*a && lower(*a) == lower(*b))
		a++, b++;
	return *a == 0 && *b == 0;
}

static bool parse_number(const char *text, enum pf_option_kind kind, long long *out)
{
	if (*text < '0' || *text > '9')
		return false;
	unsigned long long value = 0;
	for (; *text >= '0' && *text <= '9'; text++) {
		if (value > (unsigned long long)(LLONG_MAX - 9) / 10)
			return false;
		value = value * 10 + (unsigned long long)(*text - '0');
	}
	unsigned shift = 0;
	if (kind == PF_OPT_SIZE && *text) {
		const char *units = "kmgt";
		const char *unit = strchr(units, lower(*text));
		if (!unit)
			return false;
		shift = 10u * (unsigned)(unit - units + 1);
		text++;
		if (lower(*text) == 'i')
			text++;
		if (lower(*text) == 'b')
			text++;
	}
	if (*text || value > ((unsigned long long)LLONG_MAX >> shift))
		return false;
	*out = (long long)(value << shift);
	return true;
}

static const char *const true_words[] = { "1", "yes", "on", "true" };
static const char *const false_words[] = { "0", "no", "off", "false" };

static bool parse_bool(const char *text, long long *out)
{
	for (size_t i = 0; i < sizeof(true_words) / sizeof(true_words[0]); i++) {
		if (same_word(true_words[i], text) || same_word(false_words[i], text)) {
			*out = same_word(true_words[i], text);
			return true;
		}
	}
	return false;
}

static bool parse_value(const struct option_row *row, const char *text, long long *out)
{
	if (row->kind == PF_OPT_BOOL)
		return parse_bool(text, out);
	if (row->kind != PF_OPT_HUGEPAGES)
		return parse_number(text, row->kind, out);
	for (size_t i = 0; i < sizeof(hugepage_modes) / sizeof(hugepage_modes[0]); i++) {
		if (same_word(hugepage_modes[i], text)) {
			*out = (long long)i;
			return true;
		}
	}
	return false;
}

/* The value the option will use: PYFRAG_ARENA is clamped to what the arena can reserve. */
static long long usable(const struct option_row *row, long long value)
{
	if (row->value != &pf__options.arena)
		return value;
	if (value < (long long)PF_ARENA_MIN_BYTES)
		return (long long)PF_ARENA_MIN_BYTES;
	return value > (long long)PF_ARENA_MAX_BYTES ? (long long)PF_ARENA_MAX_BYTES : value;
}

/* The value of NAME in environ, or NULL. */
const char *pf__env_value(const char *name)
{
	size_t len = strlen(name);
	for (char **entry = environ; entry && *entry; entry++)
		if (strncmp(*entry, name, len) == 0 && (*entry)[len] == '=')
			return *entry + len + 1;
	return NULL;
}

static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void)
{
	for (size_t i = 0; i < ROW_COUNT; i++) {
		long long value = 0;
		const char *text = pf__env_value(rows[i].env);
		/* a bad value in the environment falls back to the default, never aborts */
		if (!text || !parse_value(&rows[i], text, &value))
			parse_value(&rows[i], rows[i].def, &value);
		atomic_store_explicit(rows[i].value, usable(&rows[i], value), memory_order_relaxed);
	}
	pf__malloc_options_changed();
}

void pf__options_load(void)
{
	pthread_once(&load_once, load);
}

static const struct option_row *find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < ROW_COUNT; i++)
		if (strcmp(rows[i].env, name) == 0)
			return &rows[i];
	return NULL;
}

int pf_option_set(const char *name, const char *value)
{
	pf__options_load();
	const struct option_row *row = find(name);
	if (!row) {
		pf__fail(EINVAL, "unknown option name");
		return -1;
	}
	long long parsed;
	if (!value || !parse_value(row, value, &parsed)) {
		pf__fail(EINVAL, "option value does not parse (sizes take K/M/G; hugepages: auto|hugetlb|thp|off)");
		return -1;
	}
	if (row->fixed && atomic_load(&pf__ready) != 0) {
		pf__fail(EBUSY, "this option is fixed once the arena exists; set it in the environment");
		return -1;
	}
	atomic_store_explicit(row->value, usable(row, parsed), memory_order_relaxed);
	pf__malloc_options_changed();
	if (row->value == &pf__options.retain && atomic_load(&pf__ready) == 1)
		pf__release_empty_chunks();
	return 0;
}

long long pf_option_get(const char *name)
{
	pf__options_load();
	const struct option_row *row = find(name);
	if (!row) {
		pf__fail(EINVAL, "unknown option name");
		return -1;
	}
	return atomic_load_explicit(row->value, memory_order_relaxed);
}

const char *pf_option_name(size_t index)
{
	return index < ROW_COUNT ? rows[index].env : NULL;
}

const char *pf_option_default(size_t index)
{
	return index < ROW_COUNT ? rows[index].def : NULL;
}

const char *pf_option_doc(size_t index)
{
	return index < ROW_COUNT ? rows[index].doc : NULL;
}
