#!/usr/bin/env bash
# offload_overlap.sh: how much of the staged ZeRO-3 copy traffic (groups up to the GPU,
# gradients down to host memory, on the copy stream) the compute hides, on one GPU.
#
#   source .devkit/env.sh && bench/offload_overlap.sh TIER "L C H" BATCH [STEPS]
#
# Trains the GPT shape (seq_len 1024, rotary, recomputation) with ZeRO-3 shards on TIER (cpu or
# nvme) twice: zero.prefetch_depth 0 (every copy waited for at once: the serial baseline) and 1
# (uploads of the next group and downloads of the last one's gradients under compute). With
#   T0, T1   the median step times (steps after the first) of the two runs, and
#   X        the median per-step copy-stream time of the overlapped run (offload_transfer_ms),
# the fraction hidden is (T0 - T1) / X: the share of the copy time the overlap took off the step.
# Logs and metrics in $OUT.
set -euo pipefail
tier=$1 shape=$2 batch=$3 steps=${4:-6}
read -r L C H <<< "$shape"
out=${OUT:-/tmp/offload_overlap}
mkdir -p "$out"
shard=runs/data/tinyshakespeare-bytes.bin
[ -f "$shard" ] || python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt "$shard"
for depth in 0 1; do
  run=/tmp/offload-overlap-$depth
  rm -rf "$run" /tmp/offload-swap
  .devkit/bin/dilatron train --config configs/gpt2-124m-1k.yaml \
    --set model.n_layers=$L --set model.d_model=$C --set model.n_heads=$H --set model.position=rotary \
    --set model.recompute=true --set data.path=$shard --set data.batch_size=$batch --set data.micro_batch_size=$batch \
    --set zero.stage=3 --set zero.offload_params=$tier --set zero.offload_optimizer=$tier \
    --set zero.nvme_path=/tmp/offload-swap --set zero.prefetch_depth=$depth \
    --set logging.run_dir=$run --set schedule.max_steps=$steps --set schedule.warmup_steps=1 \
    --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 > "$out/train-$tier-depth$depth.log" 2>&1
  cp "$run/metrics.jsonl" "$out/metrics-$tier-depth$depth.jsonl"
  rm -rf "$run" /tmp/offload-swap
done
python3 - "$out/metrics-$tier-depth0.jsonl" "$out/metrics-$tier-depth1.jsonl" <<'PY' | tee "$out/summary-$tier.txt"
import json, statistics, sys
def rows(path): return [json.loads(l) for l in open(path)][1:]
serial, overlap = rows(sys.argv[1]), rows(sys.argv[2])
t0 = statistics.median(r["step_time_s"] for r in serial)
t1 = statistics.median(r["step_time_s"] for r in overlap)
x = statistics.median(r["offload_transfer_ms"] for r in overlap) / 1000
x0 = statistics.median(r["offload_transfer_ms"] for r in serial) / 1000
print(f"serial step {t0:.3f} s (copies {x0:.3f} s), overlapped step {t1:.3f} s (copies {x:.3f} s): "
      f"saved {t0 - t1:.3f} s, hidden fraction (T0 - T1) / X = {(t0 - t1) / x:.2f}")
PY
