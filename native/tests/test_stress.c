/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The stress loops (pyfrag_stress.h) on their own: each workload by op count
 * and by time, with the invariants `pyfrag stress` checks (every fragment
 * back, no page in use, chunks back to PYFRAG_RETAIN, no corruption), the
 * leak fault, and parameter checks. Built with mode=asan and mode=tsan too.
 */
#include "check.h"
#include "probe.h"
#include "pyfrag.h"
#include "pyfrag_stress.h"

#include <errno.h>
#include <string.h>

static const uint32_t imix[12] = { 64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1500 };

static pf_stress_params_t params(unsigned workload)
{
	pf_stress_params_t p;
	pf_stress_params_init(&p);
	p.workload = workload;
	p.sizes = imix;
	p.nsizes = 12;
	return p;
}

/* After a run without faults: everything back, chunks down to the retained count. */
static void check_clean(const pf_stress_result_t *r, pf_stats_t before)
{
	pf_trim();
	pf_stats_t after = stats();
	CHECK_EQ(r->size, sizeof(*r));
	CHECK_EQ(r->allocs, r->frees);
	CHECK_EQ(r->leaked + r->corrupt + r->alloc_failures + r->free_failures, 0);
	CHECK_EQ(after.allocs - before.allocs, r->allocs);
	CHECK_EQ(after.frees - before.frees, r->frees);
	CHECK_EQ(after.pages_in_use, 0);
	CHECK_EQ(after.caches, before.caches);
	CHECK_EQ(after.threads, before.threads);
	CHECK(after.committed_bytes <= (uint64_t)pf_option_get("PYFRAG_RETAIN") * PF_CHUNK_SIZE);
}

static void run_by_ops(unsigned workload)
{
	pf_stress_params_t p = params(workload);
	uint64_t progress = 0;
	p.ops = 200000;
	p.pairs = 2;
	p.progress = &progress;
	pf_stats_t before = stats();
	pf_stress_result_t r;
	CHECK_EQ(pf_stress_run(&p, &r), 0);
	CHECK_EQ(r.threads, 4);
	CHECK_EQ(r.ops, 200000);
	CHECK_EQ(progress, r.ops);
	check_clean(&r, before);
}

static void test_ring_by_ops(void) { run_by_ops(PF_STRESS_RING); }
static void test_burst_by_ops(void) { run_by_ops(PF_STRESS_BURST); }
static void test_churn_by_ops(void) { run_by_ops(PF_STRESS_CHURN); }
static void test_mixed_by_ops(void) { run_by_ops(PF_STRESS_MIXED); }

static void test_by_time_with_a_range(void)
{
	pf_stress_params_t p = params(PF_STRESS_MIXED);
	p.sizes = NULL;
	p.nsizes = 0;
	p.size_min = 1;
	p.size_max = PF_FRAG_PAGE_SIZE;
	p.duration_ns = 200000000ull;
	pf_stats_t before = stats();
	pf_stress_result_t r;
	CHECK_EQ(pf_stress_run(&p, &r), 0);
	CHECK(r.ops > 0);
	CHECK(r.elapsed_ns >= p.duration_ns);
	check_clean(&r, before);
}

static void test_leak_fault_is_visible(void)
{
	pf_stress_params_t p = params(PF_STRESS_RING);
	p.ops = 100000;
	p.leak_every = 1000;
	p.leak_max = 50;
	pf_stats_t before = stats();
	pf_stress_result_t r;
	CHECK_EQ(pf_stress_run(&p, &r), 0);
	CHECK_EQ(r.leaked, 50);
	CHECK_EQ(r.allocs, r.frees + r.leaked);
	pf_trim();
	pf_stats_t after = stats();
	CHECK_EQ((after.allocs - before.allocs) - (after.frees - before.frees), 50);
	CHECK(after.pages_in_use > 0); /* each leaked fragment pins its frag page */
}

static void test_bad_params_are_refused(void)
{
	pf_stress_result_t r;
	pf_stress_params_t p = params(PF_STRESS_WORKLOADS);
	CHECK_EQ(pf_stress_run(&p, &r), -1);
	CHECK_EQ(errno, EINVAL);
	p = params(PF_STRESS_RING);
	p.ring_slots = 1000;
	CHECK_EQ(pf_stress_run(&p, &r), -1);
	CHECK(strstr(pf_stress_error_message(), "power of two") != NULL);
	p = params(PF_STRESS_RING);
	p.size = 8;
	CHECK_EQ(pf_stress_run(&p, &r), -1);
	p = params(PF_STRESS_RING);
	uint32_t too_big = PF_FRAG_PAGE_SIZE + 1;
	p.sizes = &too_big;
	p.nsizes = 1;
	CHECK_EQ(pf_stress_run(&p, &r), -1);
	CHECK_EQ(pf_stress_run(NULL, &r), -1);
	CHECK(strcmp(pf_stress_workload_name(PF_STRESS_CHURN), "churn") == 0);
	CHECK(pf_stress_workload_name(PF_STRESS_WORKLOADS) == NULL);
}

int main(void)
{
	RUN(test_ring_by_ops);
	RUN(test_burst_by_ops);
	RUN(test_churn_by_ops);
	RUN(test_mixed_by_ops);
	RUN(test_by_time_with_a_range);
	RUN(test_bad_params_are_refused);
	RUN(test_leak_fault_is_visible); /* last: it leaves pages pinned on purpose */
	return check_summary();
}
