/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The public option calls (pf_option_* in pyfrag.h) over the table in
 * sys/options.c: lookup by name, parse, store. Options marked fixed are
 * frozen once the arena exists (EBUSY afterwards); a lower PYFRAG_RETAIN
 * gives the extra empty chunks back at once.
 */
#include "api/api.h"

#include <errno.h>
#include <string.h>

static const struct pf_option_row *find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < PF_OPTION_COUNT; i++)
		if (strcmp(pf__option_rows[i].env, name) == 0)
			return &pf__option_rows[i];
	return NULL;
}

int pf_option_set(const char *name, const char *value)
{
	pf__options_load();
	const struct pf_option_row *row = find(name);
	if (!row) {
		pf__fail(EINVAL, "unknown option name");
		return -1;
	}
	long long parsed;
	if (!value || !pf__option_parse(row, value, &parsed)) {
		pf__fail(EINVAL, "option value does not parse (sizes take K/M/G; hugepages: auto|hugetlb|thp|off; route: adaptive|frag|compact)");
		return -1;
	}
	if (row->fixed && atomic_load(&pf__ready) != 0) {
		pf__fail(EBUSY, "this option is fixed once the arena exists; set it in the environment");
		return -1;
	}
	pf__option_store(row, parsed);
	if (row->value == &pf__options.retain && atomic_load(&pf__ready) == 1)
		pf__release_empty_chunks();
	return 0;
}

long long pf_option_get(const char *name)
{
	pf__options_load();
	const struct pf_option_row *row = find(name);
	if (!row) {
		pf__fail(EINVAL, "unknown option name");
		return -1;
	}
	return atomic_load_explicit(row->value, memory_order_relaxed);
}

const char *pf_option_name(size_t index)
{
	return index < PF_OPTION_COUNT ? pf__option_rows[index].env : NULL;
}

const char *pf_option_default(size_t index)
{
	return index < PF_OPTION_COUNT ? pf__option_rows[index].def : NULL;
}

const char *pf_option_doc(size_t index)
{
	return index < PF_OPTION_COUNT ? pf__option_rows[index].doc : NULL;
}
