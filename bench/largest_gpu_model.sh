#!/usr/bin/env bash
# largest_gpu_model.sh: GPT shapes trained for 2 steps on one GPU per storage tier, to find the
# largest that trains. Tiers: device (zero.stage 0: fp32 parameters, gradients and AdamW state in
# GPU memory), cpu (ZeRO-3 shards and the AdamW step in host memory, groups staged to the GPU),
# nvme (ZeRO-3 parameters and AdamW state in swap files on local disk).
#
#   source .devkit/env.sh && bench/largest_gpu_model.sh TIER "L C H" ["L C H" ...]
#
# Shapes are tried in order; one line per shape (rc, peak GPU memory, peak host RSS, step time).
# seq_len 1024, batch 1, recomputation on, vocabulary 50304, rotary positions. Logs in $OUT.
set -uo pipefail
tier=$1; shift
out=${OUT:-/tmp/largest}
mkdir -p "$out"
shard=runs/data/tinyshakespeare-bytes.bin
[ -f "$shard" ] || python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt "$shard"
case $tier in
  device) zero=(--set zero.stage=0) ;;
  cpu) zero=(--set zero.stage=3 --set zero.offload_params=cpu --set zero.offload_optimizer=cpu) ;;
  nvme) zero=(--set zero.stage=3 --set zero.offload_params=nvme --set zero.offload_optimizer=nvme
              --set zero.nvme_path=/tmp/largest-swap) ;;
  *) echo "largest_gpu_model: tier must be device, cpu or nvme" >&2; exit 2 ;;
esac
for shape in "$@"; do
  read -r L C H <<< "$shape"
  run=/tmp/largest-run
  rm -rf "$run" /tmp/largest-swap
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$out/mem.txt" &
  watcher=$!
  start=$SECONDS
  rm -f "$out/rss.txt"
  timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "%M" -o "$out/rss.txt")
  ${timer[@]+"${timer[@]}"} .devkit/bin/dilatron train --config configs/gpt2-124m-1k.yaml \
    --set model.n_layers=$L --set model.d_model=$C --set model.n_heads=$H --set model.position=rotary \
    --set model.recompute=true --set data.path=$shard --set data.batch_size=1 --set data.micro_batch_size=1 \
    "${zero[@]}" --set logging.run_dir=$run --set schedule.max_steps=2 --set schedule.warmup_steps=1 \
    --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 > "$out/train-$tier-$L-$C.log" 2>&1
  rc=$?
  kill $watcher 2>/dev/null; wait $watcher 2>/dev/null
  params=$(grep -m1 -o "model: [0-9]* parameters" "$out/train-$tier-$L-$C.log" | grep -o "[0-9]*")
  step=$(python3 -c "import json; r=[json.loads(l) for l in open('$run/metrics.jsonl')]; print('step %.2f s' % r[-1]['step_time_s'])" 2>/dev/null || echo "no step: $(grep -m1 -iE 'error' "$out/train-$tier-$L-$C.log")")
  printf '%-6s L=%-3d C=%-5d %14s params  rc=%d %4ds  peak GPU %s MiB  peak RSS %s MiB  %s\n' "$tier" "$L" "$C" \
    "${params:-?}" $rc $((SECONDS - start)) "$(sort -n "$out/mem.txt" | tail -1)" \
    "$( [ -s "$out/rss.txt" ] && echo $(( $(tail -1 "$out/rss.txt") / 1024 )) || echo '?')" "$step" | tee -a "$out/summary.txt"
  rm -rf "$run" /tmp/largest-swap
done
