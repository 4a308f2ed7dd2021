#!/usr/bin/env bash
# longest_context.sh: trains the 124M dilated model on one GPU at growing sequence lengths and
# reports, per length, whether a step fits, its time and the GPU memory it peaked at.
#
#   source .devkit/env.sh && bench/longest_context.sh [T ...]     (default 131072 262144 524288 1048576)
#
# The model is configs/gpt2-124m-dilated-32k.yaml with rotary positions (a learned table would
# grow with T: 805M parameters at 1M tokens) and LongNet's geometric pattern grown to the
# length: segments 2048 * 2^i with dilation 2^i up to T, so every token reaches the whole
# sequence (sparsely) and each branch attends to 2048 keys per query. Batch 1, recomputation on,
# 2 steps (the second is timed), on enough copies of the corpus for the longest T (at least 16). Output: one line per T, raw logs in $OUT.
set -uo pipefail
out=${OUT:-/tmp/longest_context}
mkdir -p "$out"
lengths=("$@")
[ ${#lengths[@]} -gt 0 ] || lengths=(131072 262144 524288 1048576)
# A sequence of 1M tokens needs more than the 1.1 MB corpus: enough copies of it, as bytes (one
# token each), that the 10 % validation split (data.val_fraction) still holds one sequence of the
# longest T: ceil(10 (T + 1) / corpus bytes) copies, at least 16.
corpus=data/tinyshakespeare.txt
corpus_bytes=$(stat -c %s "$corpus")
longest=$(printf '%s\n' "${lengths[@]}" | sort -n | tail -1)
copies=$(( (10 * (longest + 1) + corpus_bytes - 1) / corpus_bytes ))
[ $copies -ge 16 ] || copies=16
shard=runs/data/tinyshakespeare-x$copies-bytes.bin
if [ ! -f "$shard" ]; then
  mkdir -p runs/data
  for _ in $(seq $copies); do cat "$corpus"; done > runs/data/tinyshakespeare-x$copies.txt
  python3 bench/reference/text_to_byte_shard.py runs/data/tinyshakespeare-x$copies.txt "$shard"
fi
for T in "${lengths[@]}"; do
  segments=() rates=()
  w=2048 r=1
  while [ $w -le "$T" ]; do segments+=($w); rates+=($r); w=$((w * 2)); r=$((r * 2)); done
  seg=$(IFS=,; echo "${segments[*]}") rat=$(IFS=,; echo "${rates[*]}")
  run=/tmp/longest-$T
  rm -rf "$run"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/mem-$T.txt" &
  watcher=$!
  start=$SECONDS
  .devkit/bin/dilatron train --config configs/gpt2-124m-dilated-32k.yaml --set model.seq_len=$T \
    --set model.position=rotary --set "attention.segment_lengths=[$seg]" --set "attention.dilation_rates=[$rat]" \
    --set data.path=$shard --set logging.run_dir=$run --set schedule.max_steps=2 --set schedule.warmup_steps=1 --set logging.every=1 \
    --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 > "$out/train-$T.log" 2>&1
  rc=$?
  kill $watcher 2>/dev/null; wait $watcher 2>/dev/null
  peak=$(sort -n "$out/mem-$T.txt" | tail -1)
  step=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$run/metrics.jsonl')]; print('%.2f s/step, %.0f tokens/s, loss %.3f' % (r[-1]['step_time_s'], r[-1]['tokens_per_s'], r[-1]['loss']))" 2>/dev/null || echo "no step: $(grep -m1 -iE 'error|memory' "$out/train-$T.log")")
  printf 'T=%-8d rc=%d  %4ds  peak GPU memory %s MiB  %s\n' "$T" $rc $((SECONDS - start)) "${peak:-?}" "$step" | tee -a "$out/summary.txt"
  rm -rf "$run"
done
