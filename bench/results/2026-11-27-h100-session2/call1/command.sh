#!/usr/bin/env bash
# Device call 1 of 2026-11-27 (second session): tests, profile, bench, ZeRO-3 on GPU, offload overlap.
set -uo pipefail
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
OUT=$R/tests timeout 200 bench/gpu_tests.sh > $R/tests.txt 2>&1
shard=runs/data/tinyshakespeare-bytes.bin
python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt $shard > /dev/null
common=(--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 --set schedule.warmup_steps=5)
DILATRON_PROFILE=1 timeout 60 mpirun -np 1 --bind-to none .devkit/bin/dilatron train --config configs/gpt2-124m-1k.yaml "${common[@]}" --set schedule.max_steps=6 --set logging.run_dir=/tmp/prof > $R/profile-1k.log 2>&1
timeout 50 mpirun -np 1 --bind-to none .devkit/bin/dilatron train --config configs/gpt2-124m-1k.yaml "${common[@]}" --set schedule.max_steps=15 --set zero.stage=3 --set logging.run_dir=/tmp/z3 > $R/zero3-gpu-1k.log 2>&1; cp /tmp/z3/metrics.jsonl $R/zero3-gpu-1k.metrics.jsonl
OUT=$R/b1k timeout 140 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 30 > $R/b1k.txt 2>&1
OUT=$R/overlap timeout 110 bench/offload_overlap.sh cpu "24 2048 16" 8 5 > $R/overlap.txt 2>&1
cd $OUT && tar czf results.tgz r && rm -rf r
