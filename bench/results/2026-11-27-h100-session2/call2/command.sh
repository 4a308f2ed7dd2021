#!/usr/bin/env bash
# Device call 2: the rest of the GPU tests, memcheck on the whole model, profile without warm-up,
# the 32k dilated bench, the staged ZeRO-3 overlap.
set -uo pipefail
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
OUT=$R/tests timeout 230 bench/gpu_tests.sh > $R/tests.txt 2>&1
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 .devkit/bin/gpt_cuda_gpu_test > $R/memcheck_gpt.log 2>&1; echo "memcheck_gpt rc=$?" >> $R/tests.txt
shard=runs/data/tinyshakespeare-bytes.bin
python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt $shard > /dev/null
common=(--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 --set schedule.warmup_steps=5)
DILATRON_PROFILE=1 timeout 50 mpirun -np 1 --bind-to none .devkit/bin/dilatron train --config configs/gpt2-124m-1k.yaml "${common[@]}" --set schedule.max_steps=6 --set logging.run_dir=/tmp/prof > $R/profile-1k.log 2>&1
OUT=$R/overlap timeout 130 bench/offload_overlap.sh cpu "12 1536 12" 8 5 > $R/overlap.txt 2>&1
OUT=$R/b32k timeout 110 bench/gpu_bench.sh configs/gpt2-124m-dilated-32k.yaml 15 --set attention.mode=head_groups > $R/b32k.txt 2>&1
cd $OUT && tar czf results.tgz r && rm -rf r
