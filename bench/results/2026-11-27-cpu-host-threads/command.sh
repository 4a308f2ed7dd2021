#!/usr/bin/env bash
# Host time of Zero3Engine's step work, cpu tier, world of 1, GPT-2 124M shape (124,439,808
# parameters), on this project's 2-core machine (shared; 2 X 2600 MHz, -c opt, -march=x86-64-v2).
# Run from the repository root.
set -euo pipefail
out=bench/results/2026-11-27-cpu-host-threads
bazel build //bench:zero3_host_threads
bazel-bin/bench/zero3_host_threads --benchmark_repetitions=5 > $out/zero3_host_threads.txt 2>&1

# baseline-serial-5a84f28.txt: the same benchmark against the engine before the host pool
# (main at 5a84f28: serial loops, MPI collectives on the one-rank world, one-chain sum of
# squares), built from bench/zero3_host_threads.cc without the `o.host_threads = threads;` line
# and with Arg(1) only, run as:
#   bazel-bin/bench/zero3_host_threads --benchmark_repetitions=3 --benchmark_report_aggregates_only=false

# zero3_host_threads-vectorised-adamw.txt: the same benchmark after //optim gained -fno-math-errno
# and -fvect-cost-model=dynamic (the CPU AdamW loop vectorised; bits unchanged: a standalone
# program ran adamw_update_cpu 3 steps over 10,000,003 random elements built with and without
# the flags and the outputs compared equal with cmp):
#   bazel-bin/bench/zero3_host_threads --benchmark_repetitions=5 > $out/zero3_host_threads-vectorised-adamw.txt 2>&1
