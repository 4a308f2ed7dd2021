set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
common=(--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 --set schedule.warmup_steps=5)
t ln_timing 30 $b/layers_gpu_test -tc='timing: layernorm*'
s=$SECONDS; OUT=$R/b1k timeout 120 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k rc=$? $((SECONDS-s))s" >> $R/summary.txt
s=$SECONDS; DILATRON_PROFILE=1 timeout 50 mpirun -np 1 --bind-to none $b/dilatron train --config configs/gpt2-124m-1k.yaml "${common[@]}" --set schedule.max_steps=6 --set logging.run_dir=/tmp/prof > $R/profile-1k.log 2>&1; echo "profile rc=$? $((SECONDS-s))s" >> $R/summary.txt
t norms 210 $b/layers_gpu_test -tc='layernorm*,rmsnorm*'
tail -4 $R/b1k.txt
grep -A26 "^op " $R/profile-1k.log | head -28
grep -a "TIMING" $R/ln_timing.log
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
