#!/usr/bin/env bash
# Device call 3: train_gpu_test after the staged-ZeRO-3 fix; the largest cpu-tier model with its step time.
set -uo pipefail
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
timeout 120 mpirun -np 2 .devkit/bin/train_gpu_test_bin > $R/train_np2.log 2>&1; echo "train_np2 rc=$?" > $R/summary.txt
OUT=$R/largest timeout 420 bench/largest_gpu_model.sh cpu "36 3072 24" >> $R/summary.txt 2>&1
cd $OUT && tar czf results.tgz r && rm -rf r
