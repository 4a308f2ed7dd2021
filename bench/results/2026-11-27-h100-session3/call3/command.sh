set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
t attention 90 $b/attention_gpu_test
(cd bench/reference && timeout 40 python3 attention_torch_bench.py) > $R/torch_attention.log 2>&1
OUT=$R/b1k timeout 170 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 30 > $R/b1k.txt 2>&1; echo "b1k rc=$?" >> $R/summary.txt
shard=runs/data/tinyshakespeare-bytes.bin
[ -f $shard ] || python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt $shard > /dev/null
common=(--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 --set schedule.warmup_steps=5)
DILATRON_PROFILE=1 timeout 50 mpirun -np 1 --bind-to none $b/dilatron train --config configs/gpt2-124m-1k.yaml "${common[@]}" --set schedule.max_steps=6 --set logging.run_dir=/tmp/prof > $R/profile-1k.log 2>&1; echo "profile rc=$?" >> $R/summary.txt
t gpt_cuda 60 $b/gpt_cuda_gpu_test
t kernels 80 $b/kernels_gpu_test
t train_np2 100 mpirun -np 2 $b/train_gpu_test_bin
grep -ah "TIMING.*bf16 B=16\|TIMING.*head_groups\|TIMING.*longnet.*bf16\|TORCH" $R/attention.log $R/torch_attention.log
tail -4 $R/b1k.txt; grep -A22 "^op " $R/profile-1k.log | head -24
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
