# SPDX-License-Identifier: GPL-2.0-only
"""The stress harness behind `pyfrag stress`, one concern a module.

Contract (each module states its own):
- params: what a run is (Params, Sizes, the shared job's sizing);
- native: the pf_stress_* functions of libpyfrag_stress.so and their structs;
- sampling: resident memory (psutil + hugetlb pages) and the one hugepage
  sampling loop and coverage formula of every job;
- harness: the worker processes, the parent's RSS sampling and progress,
  Ctrl-C; `harness.run(params, job, view)`;
- report: the results (Violation, WorkerReport, Report, SharedReport);
- judge: the rules that turn results into violations;
- private_job, shared_job, command_job: the jobs (the native workloads,
  `--shared`, `--cmd`).
Importing any of them loads neither libpyfrag.so nor psutil.
"""
