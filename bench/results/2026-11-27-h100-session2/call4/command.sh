#!/usr/bin/env bash
# Device call 4: the 1k bench on the committed code (c763855), and device ZeRO-3 at 1 rank on the same config.
set -uo pipefail
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
OUT=$R/b1k timeout 170 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 30 > $R/b1k.txt 2>&1
OUT=$R/b1k-zero3 DILATRON_LAUNCH="mpirun -np 1 --bind-to none" TORCH_BENCH_ARGS="" timeout 170 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 30 --set zero.stage=3 > $R/b1k-zero3.txt 2>&1
cd $OUT && tar czf results.tgz r && rm -rf r
