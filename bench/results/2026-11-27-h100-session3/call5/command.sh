set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
OUT=$R/b1k timeout 170 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 30 > $R/b1k.txt 2>&1; echo "b1k rc=$?" >> $R/summary.txt
OUT=$R/b32k timeout 130 bench/gpu_bench.sh configs/gpt2-124m-dilated-32k.yaml 15 --set attention.mode=head_groups > $R/b32k.txt 2>&1; echo "b32k rc=$?" >> $R/summary.txt
common=(--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 --set schedule.warmup_steps=5)
DILATRON_PROFILE=1 timeout 45 mpirun -np 1 --bind-to none $b/dilatron train --config configs/gpt2-124m-1k.yaml "${common[@]}" --set schedule.max_steps=6 --set logging.run_dir=/tmp/prof > $R/profile-1k.log 2>&1; echo "profile rc=$?" >> $R/summary.txt
t attention_timing 40 $b/attention_gpu_test -tc='*timing*'
(cd bench/reference && timeout 30 python3 attention_torch_bench.py) > $R/torch_attention.log 2>&1
t layers 90 $b/layers_gpu_test -tce='*timing*'
grep -ah "TIMING.*bf16 B=16\|TIMING.*head_groups\|TORCH" $R/attention_timing.log $R/torch_attention.log
tail -4 $R/b1k.txt; tail -4 $R/b32k.txt; grep -A20 "^op " $R/profile-1k.log | head -20
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
