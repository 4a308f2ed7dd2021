#!/usr/bin/env bash
# Step time, peak RSS per rank and final loss of one 2-rank training run per ZeRO tier
# combination (replicated, then ZeRO-3 params/optimizer in device/cpu/nvme). Run from the repo
# root after `bazel build //trainer:dilatron`; results in bench/results/, table in docs/zero.md.
# Usage: bench/offload_tiers.sh [steps] [work dir on a real disk, not tmpfs]
set -euo pipefail
steps=${1:-20}
work=${2:-/var/tmp/dilatron-offload-tiers}
bin=bazel-bin/trainer/dilatron
# Big enough that parameter and optimizer state outweigh activations (19.3M parameters,
# 2 sequences per rank), small enough for ~2 s/step on 2 cores.
model=(--set model.d_model=512 --set model.n_layers=6 --set model.n_heads=8 --set data.batch_size=4)
quiet=(--set logging.every=1 --set logging.progress_bar=false --set sample.tokens=0 --set data.eval_every=0
       --set checkpoint.every=0 --set schedule.max_steps="$steps" --set schedule.warmup_steps=5)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
rm -rf "$work" && mkdir -p "$work"

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); steps $steps, median over steps 5..$steps"
printf '%-14s %10s %12s %12s %-22s\n' tiers median_s rss0_MiB rss1_MiB final_loss
for tiers in replicated device/device device/cpu cpu/cpu device/nvme nvme/nvme; do
  run="$work/${tiers//\//-}"
  if [[ $tiers == replicated ]]; then
    zero=(--set zero.stage=0)
  else
    zero=(--set zero.stage=3 --set zero.offload_params="${tiers%/*}" --set zero.offload_optimizer="${tiers#*/}"
          --set zero.nvme_path="$run/nvme")
  fi
  # Each rank's own /usr/bin/time, written to a file named by its MPI rank.
  mpirun -np 2 --oversubscribe --bind-to none sh -c \
    'exec /usr/bin/time -f %M -o "$0.maxrss_kb.$OMPI_COMM_WORLD_RANK" "$@"' "$run" \
    "$bin" train --config configs/shakespeare-tiny.yaml "${model[@]}" "${quiet[@]}" "${zero[@]}" \
    --set logging.run_dir="$run" >"$run.log" 2>&1 || { echo "$tiers failed, see $run.log"; tail "$run.log"; exit 1; }
  python3 - "$run" "$tiers" <<'PY'
import json, statistics, sys
run, tiers = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if '"step_time_s"' in l]
median = statistics.median(r["step_time_s"] for r in rows if r["step"] >= 5)
rss = [int(open(f"{run}.maxrss_kb.{r}").read().split()[-1]) / 1024 for r in (0, 1)]
print(f"{tiers:<14} {median:10.3f} {rss[0]:12.1f} {rss[1]:12.1f} {rows[-1]['loss']!r:<22}")
PY
done
echo "# trainer memory lines (rank 0's log):"
for log in "$work"/*.log; do
  echo "$(basename "$log" .log): $(grep -m1 -o 'memory: .*' "$log")"
done
