/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The entry points of pyfrag_shared.h that can be a process's first call
 * into pyfrag: they initialise the library once (api.c), then hand over to
 * the shared layer. Every other shared call takes an arena handle only these
 * two make, so it runs initialised.
 */
#include "api/api.h"

pf_shared_t *pf_shared_create(const char *name, size_t size, unsigned mode, int backing,
			      const char *directory)
{
	return pf__init_ok() ? pf__shared_create(name, size, mode, backing, directory) : NULL;
}

pf_shared_t *pf_shared_attach(const char *name, const char *directory)
{
	return pf__init_ok() ? pf__shared_attach(name, directory) : NULL;
}
