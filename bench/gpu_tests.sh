#!/usr/bin/env bash
# Runs every GPU test on the device machine, from the repository root, after the kit is unpacked
# (bench/README or docs/performance.md: "How the GPU figures are made"). Each log lands in
# $OUT (or bench/results/tmp) and a summary line per test is printed last.
#   bench/gpu_tests.sh [sanitize]
set -uo pipefail
source .devkit/env.sh
out=${OUT:-bench/results/tmp}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
summary=()
run() {  # name command...; skipped when the kit lacks the program
  local name=$1; shift
  local program=$1; [ "$program" = mpirun ] && program=$4
  if [ "$program" != compute-sanitizer ] && [ ! -x "$program" ]; then summary+=("$(printf '%-28s not in the kit' "$name")"); return; fi
  local start=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-28s rc=%d  %4ds  %s' "$name" "$rc" $((SECONDS - start)) "$(grep -E 'test cases:' "$out/$name.log" | tail -1)")")
}
bin=.devkit/bin
run layers $bin/layers_gpu_test
run kernels $bin/kernels_gpu_test
run optim $bin/optim_gpu_test
run attention $bin/attention_gpu_test
run gpt_cuda $bin/gpt_cuda_gpu_test
run collectives_np1 mpirun -np 1 $bin/collectives_gpu_test_bin
run collectives_np2 mpirun -np 2 $bin/collectives_gpu_test_bin
for np in 1 2 4; do run ring_np$np mpirun -np $np $bin/ring_attention_gpu_test_bin; done
run train_np2 mpirun -np 2 $bin/train_gpu_test_bin
if [ "${1:-}" = sanitize ]; then
  run memcheck_attention compute-sanitizer --tool memcheck --error-exitcode 9 $bin/attention_gpu_test -tce='*timing*'
  run racecheck_attention compute-sanitizer --tool racecheck --error-exitcode 9 $bin/attention_gpu_test -tce='*timing*,*4096*'
  run memcheck_gpt compute-sanitizer --tool memcheck --error-exitcode 9 $bin/gpt_cuda_gpu_test
  run memcheck_layers compute-sanitizer --tool memcheck --error-exitcode 9 $bin/layers_gpu_test -tce='*timing*'
  run memcheck_kernels compute-sanitizer --tool memcheck --error-exitcode 9 $bin/kernels_gpu_test -tce='*timing*'
  run memcheck_optim compute-sanitizer --tool memcheck --error-exitcode 9 $bin/optim_gpu_test -tce='*timing*'
  run racecheck_layers compute-sanitizer --tool racecheck --error-exitcode 9 $bin/layers_gpu_test -tce='*timing*'
fi
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
