set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
free -g > $R/free.txt; df -h /tmp >> $R/free.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
keep_metrics() { mkdir -p $R/$1; for d in /tmp/gpu-train-sp2-*; do cp $d/metrics.jsonl $R/$1/$(basename $d).jsonl 2>/dev/null; done; rm -rf /tmp/gpu-train-*; }
t norms 260 $b/layers_gpu_test -tc='*layernorm*,*rmsnorm*,*embedding*' -tce='timing*' &
( t train_np2 200 mpirun -np 2 --bind-to none $b/train_gpu_test_bin; keep_metrics metrics_new
  t train_np2_sp_main 120 mpirun -np 2 --bind-to none $b/train_gpu_test_bin_main -tc='2 sequence*'; keep_metrics metrics_main ) &
t kernels 120 $b/kernels_gpu_test -tce='timing*'
t gpt_cuda 60 $b/gpt_cuda_gpu_test
t ring_np1 40 mpirun -np 1 --bind-to none $b/ring_attention_gpu_test_bin
t ring_np4 90 mpirun -np 4 --bind-to none $b/ring_attention_gpu_test_bin
wait
t timing_norm 60 $b/layers_gpu_test -tc='timing: layernorm*'
t timing_norm_main 60 $b/layers_gpu_test_main -tc='timing: layernorm*'
t timing_linear 60 $b/kernels_gpu_test -tc='timing: the GPT-2*'
s=$SECONDS; OUT=$R/b1k timeout 100 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k rc=$? $((SECONDS-s))s" >> $R/summary.txt
s=$SECONDS; DILATRON=$b/dilatron_main OUT=$R/b1k_main timeout 100 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k_main.txt 2>&1; echo "b1k_main rc=$? $((SECONDS-s))s" >> $R/summary.txt
P="--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 --set schedule.warmup_steps=5 --set schedule.max_steps=6"
s=$SECONDS; DILATRON_PROFILE=1 timeout 60 mpirun -np 1 --bind-to none $b/dilatron train --config configs/gpt2-124m-1k.yaml $P --set logging.run_dir=/tmp/prof > $R/profile.log 2>&1; echo "profile rc=$? $((SECONDS-s))s" >> $R/summary.txt
s=$SECONDS; OUT=$R/cpu timeout 200 bench/largest_gpu_model.sh cpu "44 3456 27" > $R/cpu.txt 2>&1; echo "cpu rc=$? $((SECONDS-s))s" >> $R/summary.txt
grep -a "TIMING" $R/timing_*.log
tail -4 $R/b1k.txt | head -2; tail -4 $R/b1k_main.txt | head -2; cat $R/cpu.txt
grep -a "FAIL\|ERROR" $R/*.log | head
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
