/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * How every layer reports: a failure sets errno and the thread's last-error
 * sentence (pf_last_error, pf_last_error_message in pyfrag.h), and a slow,
 * rare event adds to one of the global counters that pf_stats_get reads.
 * Nothing here calls anything: any layer may report from any state.
 */
#include "sys/sys.h"

#include <errno.h>

_Atomic uint64_t pf__counters[PF_CTR_COUNT];

static PF_TLS const char *last_message;
static PF_TLS int last_errno;

void *pf__fail(int err, const char *message)
{
	last_errno = err;
	last_message = message;
	errno = err;
	return NULL;
}

int pf_last_error(void)
{
	return last_errno;
}

const char *pf_last_error_message(void)
{
	return last_message ? last_message : "no error";
}
