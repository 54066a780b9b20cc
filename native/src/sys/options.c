/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Options and the environment: one table (PF_OPTIONS in sys.h) of
 * environment name, default, kind and meaning, and the values every layer
 * reads (PF_OPT). Values are read once from environ by hand: no getenv, no
 * allocation, no stdio, so this is safe however early it runs. A layer that
 * caches what it derives from options registers a hook
 * (pf__options_on_change), run after the load and after every store.
 * Sizes take K/M/G/T suffixes (powers of 1024, an optional trailing B or iB);
 * switches take 1/yes/on/true and 0/no/off/false.
 * A size the arena cannot use (PYFRAG_ARENA outside 4 MiB..16 TiB) is
 * clamped to the nearest it can, not refused: the option then reads back
 * what pyfrag will use.
 */
#include "sys/sys.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

extern char **environ;

struct pf_options pf__options;

const struct pf_option_row pf__option_rows[] = {
#define PF_OPTION_ROW_(field, env, def, kind, fixed, doc) { env, def, kind, fixed, doc, &pf__options.field },
	PF_OPTIONS(PF_OPTION_ROW_)
#undef PF_OPTION_ROW_
};
_Static_assert(sizeof(pf__option_rows) / sizeof(pf__option_rows[0]) == PF_OPTION_COUNT, "option count");

/* The words of the options whose values are words, in enum order (0, 1, ...). */
static const char *const hugepage_modes[] = { "auto", "hugetlb", "thp", "off", NULL };
static const char *const route_modes[] = { "adaptive", "frag", "compact", NULL };

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

bool pf__option_parse(const struct pf_option_row *row, const char *text, long long *out)
{
	if (row->kind == PF_OPT_BOOL)
		return parse_bool(text, out);
	if (row->kind != PF_OPT_HUGEPAGES && row->kind != PF_OPT_ROUTE)
		return parse_number(text, row->kind, out);
	const char *const *words = row->kind == PF_OPT_ROUTE ? route_modes : hugepage_modes;
	for (size_t i = 0; words[i]; i++) {
		if (same_word(words[i], text)) {
			*out = (long long)i;
			return true;
		}
	}
	return false;
}

/* The value the option will use: PYFRAG_ARENA is clamped to what the arena can reserve. */
static long long usable(const struct pf_option_row *row, long long value)
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

/* Who follows option changes (the malloc front's cached limits). */
static struct pf_hooks hooks = PF_HOOKS_INIT;

static void load(void);

void pf__options_load(void)
{
	pthread_once(&load_once, load);
}

int pf__options_on_change(void (*hook)(void *arg))
{
	if (pf__hooks_add(&hooks, hook) != 0)
		return -1;
	pf__options_load();
	hook(NULL); /* the values may have been loaded before it was known: it sees them now */
	return 0;
}

void pf__option_store(const struct pf_option_row *row, long long value)
{
	atomic_store_explicit(row->value, usable(row, value), memory_order_relaxed);
	pf__hooks_run(&hooks, NULL);
}

static void load(void)
{
	for (size_t i = 0; i < PF_OPTION_COUNT; i++) {
		long long value = 0;
		const char *text = pf__env_value(pf__option_rows[i].env);
		/* a bad value in the environment falls back to the default, never aborts */
		if (!text || !pf__option_parse(&pf__option_rows[i], text, &value))
			pf__option_parse(&pf__option_rows[i], pf__option_rows[i].def, &value);
		atomic_store_explicit(pf__option_rows[i].value, usable(&pf__option_rows[i], value), memory_order_relaxed);
	}
	pf__hooks_run(&hooks, NULL);
}
