set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
t norms 260 $b/layers_gpu_test -tc='*layernorm*,*rmsnorm*,*embedding*' -tce='timing*' &
t train_np2 200 mpirun -np 2 --bind-to none $b/train_gpu_test_bin &
t kernels 120 $b/kernels_gpu_test -tce='timing*'
t gpt_cuda 60 $b/gpt_cuda_gpu_test
wait
t timing_linear 60 $b/kernels_gpu_test -tc='timing: the GPT-2*'
t timing_linear_main 60 $b/kernels_gpu_test_main -tc='timing: the bias*'
t timing_norm 60 $b/layers_gpu_test -tc='timing: layernorm*'
s=$SECONDS; OUT=$R/b1k timeout 100 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k rc=$? $((SECONDS-s))s" >> $R/summary.txt
P="--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 --set schedule.warmup_steps=5 --set schedule.max_steps=6"
for v in dilatron dilatron_main; do
  s=$SECONDS; DILATRON_PROFILE=1 timeout 60 mpirun -np 1 --bind-to none $b/$v train --config configs/gpt2-124m-1k.yaml $P --set logging.run_dir=/tmp/prof_$v > $R/profile_$v.log 2>&1; echo "profile_$v rc=$? $((SECONDS-s))s" >> $R/summary.txt
done
s=$SECONDS; OUT=$R/b32k timeout 140 bench/gpu_bench.sh configs/gpt2-124m-dilated-32k.yaml 12 --set attention.mode=head_groups > $R/b32k.txt 2>&1; echo "b32k rc=$? $((SECONDS-s))s" >> $R/summary.txt
grep -a "TIMING" $R/timing_*.log
tail -4 $R/b1k.txt | head -2; tail -4 $R/b32k.txt | head -2
grep -a "FAIL\|ERROR" $R/*.log | head
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
